"""Reading a request body within limits, so a client that stops sending is not waited for.

aiohttp bounds the size of a body (``client_max_size``) but not the time it takes: a client
that sends a Content-Length and then a byte a minute would hold its request open forever.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


async def read_body(request: web.Request, *, idle_s: float, total_s: float) -> bytes:
    """The whole body of ``request``.

    Raises ``TimeoutError`` when no byte arrives for ``idle_s`` or the body takes longer than
    ``total_s``, ``HTTPRequestEntityTooLarge`` past the app's ``client_max_size`` (counted after
    decompression), and ``HTTPBadRequest`` for a body aiohttp cannot decode (bad gzip data,
    broken chunks).
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + total_s
    limit = request.client_max_size
    parts: list[bytes] = []
    size = 0
    try:
        if request.content.is_eof():  # the usual case: the body came with the headers
            body = request.content.read_nowait()
            if limit and len(body) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
            return body
        async with asyncio.timeout(min(idle_s, total_s)) as timer:
            while chunk := await request.content.readany():
                size += len(chunk)
                if limit and size > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
                parts.append(chunk)
                timer.reschedule(min(loop.time() + idle_s, end))
    except web.RequestPayloadError:
        raise web.HTTPBadRequest(
            reason="the request body could not be read: its Content-Encoding data or its "
            "chunked framing is broken"
        ) from None
    return b"".join(parts)
