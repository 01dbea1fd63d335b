"""Logging: structlog configured once, with a processor that masks every secret it knows."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import orjson
import structlog

from gateway.isotime import iso_utc
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


class _Sink:
    """Where log lines go. ``setup_logging`` swaps its stream, so loggers cached by structlog
    follow a reconfiguration instead of writing to the stream of the first one."""

    def __init__(self) -> None:
        self.stream: TextIO = sys.stderr
        self.held: list[str] | None = None  # lines kept for one write (``batched_writes``)

    def write(self, text: str) -> int:
        if self.held is not None:
            self.held.append(text)
            return len(text)
        return self.stream.write(text)

    def flush(self) -> None:
        if self.held is None:
            self.stream.flush()


class _LevelFilter:
    """The level as a processor with a mutable threshold, for the same reason."""

    def __init__(self) -> None:
        self.threshold = logging.INFO

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if _LEVELS.get(method, logging.INFO) < self.threshold:
            raise structlog.DropEvent
        return event_dict


def _timestamp(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """``timestamp``: now in ISO 8601 UTC with microseconds (structlog's ``TimeStamper``
    formats the whole date every line)."""
    event_dict["timestamp"] = iso_utc(time.time(), 6)
    return event_dict


_LEVELS = {**logging.getLevelNamesMapping(), "warn": logging.WARNING, "exception": logging.ERROR}
_LEVELS.update({name.lower(): value for name, value in logging.getLevelNamesMapping().items()})
_SINK = _Sink()
_LEVEL = _LevelFilter()
# One list object for the life of the process: cached loggers hold it, and
# structlog.testing.capture_logs edits the configured list in place.
_PROCESSORS: list[Any] = []


def info_line(logger: Any, event: str, fields: dict[str, Any]) -> None:
    """``logger.info(event, **fields)`` for the line every request logs: the same processors
    and sink, without structlog's bound-logger steps (a copy of the context, the keywords
    packed again, a lock per line: 5 of its 7.5 µs). ``fields`` becomes the line's dict. When
    structlog runs other processors than ``setup_logging``'s (a test reset it), ``logger``
    logs the line itself."""
    if structlog.get_config()["processors"] is not _PROCESSORS:
        logger.info(event, **fields)
        return
    fields["event"] = event
    line: Any = fields
    try:
        for processor in _PROCESSORS:  # capture_logs edits this list in place: still served
            line = processor(_SINK, "info", line)
    except structlog.DropEvent:
        return
    _SINK.write(line + "\n")
    _SINK.flush()


def hold_writes() -> bool:
    """Keep the lines logged from now on for one write at ``release_writes``. False (and
    nothing changes) when they are already held: the holder that got True releases them."""
    if _SINK.held is not None:
        return False
    _SINK.held = []
    return True


def release_writes() -> None:
    """Write the held lines in one write, and write each line at once again."""
    held, _SINK.held = _SINK.held, None
    if held:
        _SINK.stream.write("".join(held))
        _SINK.stream.flush()


@contextmanager
def batched_writes() -> Iterator[None]:
    """Lines logged inside the block reach the stream in one write at its end."""
    mine = hold_writes()
    try:
        yield
    finally:
        if mine:
            release_writes()


def setup_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    *,
    cache: bool = False,
) -> None:
    """Configure structlog: console on a TTY, JSON lines otherwise.

    Calling it again (a reload) changes the level, format, secrets and stream of every logger.
    ``cache=True`` (the daemon) lets structlog keep each logger after its first use, which
    takes the proxying off every log call; tests leave it off, since they reset structlog.
    """
    out = stream or sys.stderr
    REDACTOR.set(secrets)
    _SINK.stream = out
    _LEVEL.threshold = logging.getLevelNamesMapping()[level.upper()]
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    _PROCESSORS[:] = [
        _LEVEL,
        structlog.processors.add_log_level,
        _timestamp,
        structlog.processors.format_exc_info,
        REDACTOR.wrap(renderer),
    ]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.WriteLoggerFactory(_SINK),  # type: ignore[arg-type]
        cache_logger_on_first_use=cache,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
