"""Logging: structlog configured once, with a processor that masks every secret it knows."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from gateway.secret import mask

_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{6,}")


class SecretRedactor:
    """A structlog processor: every known secret (and anything shaped like an HF token) is masked.

    The known secrets can be replaced at run time (config reload) with ``set``.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.set(secrets)

    def set(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, mask(secret))
        return _HF_TOKEN.sub(lambda m: mask(m.group(0)), text)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(str(value))

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self._clean(value)
        return event_dict


REDACTOR = SecretRedactor()


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def setup_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog once per process: console on a TTY, JSON lines otherwise."""
    out = stream or sys.stderr
    REDACTOR.set(secrets)
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            REDACTOR,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        # Not cached: a reload calls this again and its new level must reach every logger.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
