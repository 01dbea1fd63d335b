"""Logging: structlog configured once, with a processor that masks every secret it knows."""

from __future__ import annotations

import json
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
    """Masks every known secret (and anything shaped like an HF token) in rendered log text.

    It wraps the final renderer, so it sees each line once, whole: values, free text and
    formatted tracebacks alike, at the cost of a few substring checks per line. The known
    secrets can be replaced at run time (config reload) with ``set``.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.set(secrets)

    def set(self, secrets: Iterable[str]) -> None:
        forms = set()
        for secret in secrets:
            if secret:
                forms.add((secret, mask(secret)))
                escaped = json.dumps(secret)[1:-1]  # how the JSON renderer writes it
                if escaped != secret:
                    forms.add((escaped, mask(secret)))
        self._secrets = tuple(sorted(forms, key=lambda f: len(f[0]), reverse=True))

    def redact(self, text: str) -> str:
        for secret, masked in self._secrets:
            if secret in text:
                text = text.replace(secret, masked)
        if "hf_" in text:
            text = _HF_TOKEN.sub(lambda m: mask(m.group(0)), text)
        return text

    def wrap(self, renderer: Any) -> Any:
        """A renderer that renders with ``renderer`` and then redacts the line."""

        def render(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
            return self.redact(renderer(logger, method, event_dict))

        return render


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
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            REDACTOR.wrap(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(out),
        # Not cached: a reload calls this again and its new level must reach every logger.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
