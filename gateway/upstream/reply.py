"""The gateway's own view of one upstream answer, read within bounds; aiohttp errors mapped here.

``UpstreamReply`` wraps an ``aiohttp.ClientResponse`` so nothing above this package sees one:
its ``status``, ``headers`` and ``provider``, a capped ``read``, a truncating ``read_prefix``
(error bodies) and ``events()`` — the SSE payloads of each network read, one event capped.
Bodies are asked for uncompressed (``Accept-Encoding: identity``); a router that compresses
anyway is inflated here, never past the cap in force. ``mapped_errors`` is the one place an
aiohttp or OS error becomes a ``gateway.errors.UpstreamError``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Literal

import aiohttp
from yarl import URL

from gateway.errors import (
    UpstreamBroken,
    UpstreamError,
    UpstreamRedirect,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnreachable,
)
from gateway.wire import SSEEventTooLarge, SSEParser

MiB = 1024 * 1024
MAX_BODY_BYTES = 32 * MiB  # a non-stream chat completion
MAX_EVENT_BYTES = 4 * MiB  # one SSE event of a stream
MAX_MODELS_BYTES = 16 * MiB  # GET {baseUrl}/models
MAX_WHOAMI_BYTES = 1 * MiB  # the Hub's whoami-v2
# A compressed stream is inflated in slices of this size, yielding to the loop between them.
_INFLATE_SLICE = 256 * 1024


def map_error(exc: Exception) -> Exception:
    """The gateway's ``UpstreamError`` for what aiohttp (or the OS below it) raised; any other
    exception is returned as it is."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, SSEEventTooLarge):
        return UpstreamTooLarge(
            f"the router sent an SSE event larger than {_size(exc.limit)}", limit=exc.limit
        )
    if isinstance(exc, TimeoutError):  # aiohttp's own (connect or total); asyncio's ends outside
        return UpstreamTimeout(f"timed out ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamBroken(f"the body broke off: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        name = type(exc).__name__
        return UpstreamUnreachable(f"connection failed: {name}", reason=name)
    return exc


class _MappedErrors:
    """A block that raises ``map_error`` of what it raises. A class, not a ``contextmanager``
    generator: every request enters three (1.3 µs each as a generator, 0.1 as a class)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if not isinstance(exc, Exception):
            return False  # no exception, or a BaseException (a cancel): as it is
        mapped = map_error(exc)
        if mapped is exc:
            return False
        raise mapped from None


_MAPPED_ERRORS = _MappedErrors()


def mapped_errors() -> _MappedErrors:
    """Raise ``map_error`` of what the block raises (the hot read loops inline the same)."""
    return _MAPPED_ERRORS


def redirect_error(status: int, location: str | None, requested: URL) -> UpstreamRedirect:
    """The error for a 3xx answer to ``requested``: it names the target host, never follows."""
    try:
        target = requested.join(URL(location)) if location else requested
    except ValueError:
        target = requested
    host = target.host or requested.host or "?"
    return UpstreamRedirect(
        f"{requested.host} answered {status}, a redirect to {host}; redirects are not followed",
        status=status,
        location_host=host,
    )


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB and limit % MiB == 0 else f"{limit} bytes"


class _Inflater:
    """Bounded inflation of a gzip or deflate body (the router was asked not to send one)."""

    __slots__ = ("_encoding", "_z")

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._z: zlib._Decompress | None = None
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def inflate(self, data: bytes, most: int) -> tuple[bytes, bytes]:
        """(at most ``most`` inflated bytes, the input still to feed back)."""
        if self._encoding not in ("gzip", "x-gzip", "deflate"):
            raise UpstreamBroken(
                f"the router sent a body encoded as {self._encoding!r}, which the gateway did "
                "not ask for (it asks for identity)"
            )
        z = self._z
        if z is None:  # deflate: zlib-wrapped as the standard says, or raw as some send it
            wrapped = bool(data) and data[0] & 0x0F == 8
            z = self._z = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        try:
            out = z.decompress(data, most)
        except zlib.error:
            raise UpstreamBroken("the router's compressed body is damaged") from None
        return out, z.unconsumed_tail


class UpstreamReply:
    """One answer of the router (or Hub): status and headers at once, the body on demand."""

    __slots__ = ("_inflater", "_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        self._inflater = None if encoding in ("", "identity") else _Inflater(encoding)

    @property
    def provider(self) -> str | None:
        return self.headers.get("x-inference-provider") or None

    async def read(self, limit: int, *, progress: Callable[[], None] | None = None) -> bytes:
        """The whole body; ``UpstreamTooLarge`` once it passes ``limit`` bytes (decoded).

        ``progress`` is called each time the read has to wait for more of the body (an idle
        timer's start); a body that has already arrived is read without waiting, or a call."""
        length = self._resp.content_length
        if self._inflater is None and length is not None and length > limit:
            raise UpstreamTooLarge(
                f"the router's answer is larger than {_size(limit)}", limit=limit
            )
        parts: list[bytes] = []
        size = 0
        content = self._resp.content
        with mapped_errors():
            while True:
                data = content.read_nowait()  # what has arrived so far
                if not data:
                    if content.at_eof():
                        return b"".join(parts)
                    if progress is not None:
                        progress()
                    data = await content.readany()
                    if not data:
                        return b"".join(parts)
                while data:
                    if self._inflater is not None:
                        most = min(_INFLATE_SLICE, limit - size + 1)
                        piece, data = self._inflater.inflate(data, most)
                        if data:  # a compressed burst must not hold the loop
                            await asyncio.sleep(0)
                    else:
                        piece, data = data, b""
                    size += len(piece)
                    if size > limit:
                        raise UpstreamTooLarge(
                            f"the router's answer is larger than {_size(limit)}", limit=limit
                        )
                    parts.append(piece)

    async def read_prefix(self, limit: int) -> bytes:
        """The body up to ``limit`` bytes, the rest left unread (an error body: its start is
        what says why)."""
        parts: list[bytes] = []
        size = 0
        content = self._resp.content
        with mapped_errors():
            while size < limit:
                data = await content.read(limit - size)
                if not data:
                    break
                if self._inflater is not None:
                    data, _ = self._inflater.inflate(data, limit - size)
                parts.append(data)
                size += len(data)
        return b"".join(parts)

    def events(self, max_event: int = MAX_EVENT_BYTES) -> SSEEvents:
        """The SSE payloads of the body, one list per network read (maybe empty)."""
        return SSEEvents(self._resp.content, self._inflater, max_event)

    def close(self) -> None:
        """Release the connection: back to the pool when the body was read to its end,
        closed otherwise (which is how the router learns to stop)."""
        self._resp.release()

    async def __aenter__(self) -> UpstreamReply:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with mapped_errors():
            await self._resp.__aexit__(exc_type, exc, tb)


class SSEEvents:
    """Async iterator over the event payloads of an SSE body: one list per read, in order.

    Linear in the bytes read (``wire.SSEParser``); an event past ``max_event`` bytes raises
    ``UpstreamTooLarge``; the end of the body ends the iteration (after any event a trailing
    CR completes)."""

    __slots__ = ("_content", "_ended", "_inflater", "_parser", "_tail")

    def __init__(
        self, content: aiohttp.StreamReader, inflater: _Inflater | None, max_event: int
    ) -> None:
        self._content = content
        self._inflater = inflater
        self._parser = SSEParser(max_event)
        self._tail = b""  # compressed input not inflated yet (a slice was full)
        self._ended = False

    def __aiter__(self) -> SSEEvents:
        return self

    async def __anext__(self) -> list[bytes]:
        if self._ended:
            raise StopAsyncIteration
        try:  # mapped_errors, inlined: this runs once per network read
            if self._tail:
                await asyncio.sleep(0)  # a compressed burst must not hold the loop
                data, self._tail = self._tail, b""
            else:
                data = await self._content.readany()
            if not data:
                self._ended = True
                return self._parser.close()
            if self._inflater is not None:
                data, self._tail = self._inflater.inflate(data, _INFLATE_SLICE)
            return self._parser.feed(data)
        except Exception as exc:
            mapped = map_error(exc)
            if mapped is exc:
                raise
            raise mapped from None
