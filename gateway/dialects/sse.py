"""The server-sent event stream a streaming sink writes to: opened when the engine commits,
written and ended with a client that has gone away reported once, as ``ClientGone``."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from gateway.engine import ClientGone


async def open_stream(client: web.Request, headers: Mapping[str, str]) -> web.StreamResponse:
    """A prepared 200 ``text/event-stream`` answer to ``client`` with ``headers``."""
    out = web.StreamResponse(
        status=200,
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
    )
    try:
        await out.prepare(client)
    except ConnectionError as exc:
        raise ClientGone from exc
    return out


async def write(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except ConnectionError as exc:  # aiohttp's ClientConnectionResetError is one
        raise ClientGone from exc


async def end(out: web.StreamResponse) -> None:
    """The end of the stream; a client that left between the last write and this (the soak
    saw it) is gone like any other, not an unhandled error."""
    try:
        await out.write_eof()
    except ConnectionError as exc:
        raise ClientGone from exc
