"""Wire formats (pure): JSON in and out, OpenAI-shaped error bodies, and SSE event splitting."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import orjson

MAX_ERROR_TEXT = 500


# Digits map to "0", every other byte to a space: a run of 19 digits is then one substring.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_NUMBER = b"0" * 19


# Deeper JSON is refused on input: orjson serialises 254 levels at most, the stdlib about 900
# before a RecursionError, and no chat request needs more than a few dozen.
MAX_DEPTH = 512
TOO_DEEP = f"it is nested deeper than {MAX_DEPTH} levels"


def loads(data: bytes | str) -> Any:
    """Parse JSON; orjson first, the stdlib for what orjson gets wrong or refuses.

    orjson turns an integer past 64 bits into a float silently (a 30-digit ``seed`` would
    change in transit), so a body with a run of 19 or more digits goes to the stdlib, which
    keeps every integer exact. A value nested deeper than ``MAX_DEPTH`` is a ``ValueError``, so
    that whatever ``loads`` returns, ``dumps`` can write back.
    """
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_NUMBER in raw.translate(_DIGITS_ONLY):
        obj = _stdlib_loads(raw)
    else:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = _stdlib_loads(raw)
    # The depth is at most the number of brackets: most bodies need no walk at all (and a
    # short one not even the count).
    if (
        len(raw) > MAX_DEPTH
        and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
        and nesting_depth(obj) > MAX_DEPTH
    ):
        raise ValueError(TOO_DEEP)
    return obj


def nesting_depth(obj: Any) -> int:
    """How many lists/objects deep ``obj`` goes (a scalar is 0, ``[]`` is 1), without
    recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _stdlib_loads(raw: bytes) -> Any:
    """The stdlib parser held to what orjson accepts: no NaN/Infinity, no unbounded depth."""
    try:
        # Invalid UTF-8 raises UnicodeDecodeError, a ValueError, as it should.
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def dumps(obj: Any) -> bytes:
    """Serialise JSON; orjson first, the stdlib for what orjson refuses (integers past 64 bits,
    more than 254 levels). A value too deep even for the stdlib is a ``ValueError``; ``loads``
    never returns one."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        pass
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode()
        except UnicodeEncodeError:  # a lone surrogate, sent as a \ud800 escape: pass it on as one
            return json.dumps(obj, separators=(",", ":")).encode()
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


def error_payload(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error body: ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _text_of(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    if "<" in text and ">" in text:
        text = html.unescape(_TAG.sub(" ", text))
    text = _SPACE.sub(" ", text).strip()
    return text[:MAX_ERROR_TEXT] + ("…" if len(text) > MAX_ERROR_TEXT else "")


def parse_upstream_error(status: int, body: bytes) -> tuple[str, str | None, str | None]:
    """(message, type, code) of a router error body in any of its shapes.

    Shapes: ``{"error": {...}}``, ``{"error": "text"}``, ``{"message": …}``/``{"detail": …}``,
    HTML or plain text.
    """
    try:
        data = loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            message = err.get("message")
            code = err.get("code")
            type_ = err.get("type")
            return (
                str(message) if message else f"upstream error {status}",
                str(type_) if isinstance(type_, str) else None,
                str(code) if isinstance(code, str) else None,
            )
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:MAX_ERROR_TEXT], None, None
    text = _text_of(body) if body else ""
    return (text or f"upstream error {status}"), None, None


class SSEEventTooLarge(ValueError):
    """One SSE event grew past the parser's cap before its blank line arrived."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an SSE event is larger than {limit} bytes")
        self.limit = limit


class SSEParser:
    """Incremental splitter of a ``text/event-stream`` body into event ``data`` payloads.

    Accepts LF, CRLF and CR line ends; ignores comments and fields other than ``data``; joins
    several ``data:`` lines with a newline, as the SSE standard and the openai SDK do.

    Linear in the bytes fed: each ``feed`` normalizes and scans only what is new (one byte back,
    for a blank line split across reads), so one huge event costs what its bytes cost. An event
    still open past ``max_event`` bytes raises ``SSEEventTooLarge`` (None: no cap).
    """

    __slots__ = ("_buf", "_cr", "_scan", "max_event")

    def __init__(self, max_event: int | None = None) -> None:
        self._buf = bytearray()
        self._cr = False  # a CR ended the last feed: maybe half of a CRLF, held back
        self._scan = 0  # where the search for the next blank line resumes
        self.max_event = max_event

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf: bytes | bytearray
        if self._buf:
            buf = self._buf
            buf += chunk
        else:  # the common case, an event starting with this read: no copy to scan it
            buf = chunk
        events: list[bytes] = []
        start = 0
        pos = self._scan
        while True:
            end = buf.find(b"\n\n", pos)
            if end < 0:
                break
            data = _event_data(bytes(buf[start:end]))
            if data is not None:
                events.append(data)
            start = pos = end + 2
        if buf is self._buf:
            if start:
                del buf[:start]
        else:
            self._buf = bytearray(buf[start:])
        self._scan = max(len(self._buf) - 1, 0)
        if self.max_event is not None and len(self._buf) > self.max_event:
            raise SSEEventTooLarge(self.max_event)
        return events

    def close(self) -> list[bytes]:
        """The events still held when the body has ended.

        A CR at the end of what arrived was kept as maybe half of a CRLF; with nothing more to
        come it is a line end, and may complete the last event (a CR-only stream).
        """
        if not self._cr:
            return []
        return self.feed(b"\n")

    def pending(self) -> bytes:
        """What is left without a terminating blank line (an event cut off at body end)."""
        return bytes(self._buf) + (b"\r" if self._cr else b"")


def _event_data(block: bytes) -> bytes | None:
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]  # the common case: one data line
    parts: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None
