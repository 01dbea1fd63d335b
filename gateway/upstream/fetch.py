"""One GET to the router, the Hub or a local gateway: no redirects, identity encoding, errors
mapped. The caller reads the body with the cap that fits (``UpstreamReply.read``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
from yarl import URL

from gateway.upstream.reply import UpstreamReply, mapped_errors, redirect_error


@asynccontextmanager
async def get(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float,
) -> AsyncIterator[UpstreamReply]:
    """GET ``url`` within ``timeout_s`` in all; a 3xx raises ``UpstreamRedirect`` (not
    followed), a failure to connect ``UpstreamUnreachable`` or ``UpstreamTimeout``."""
    target = URL(url)
    with mapped_errors():
        async with session.get(
            target,
            headers={**(headers or {}), "Accept-Encoding": "identity"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
            auto_decompress=False,
        ) as resp:
            reply = UpstreamReply(resp)
            if 300 <= reply.status < 400:
                raise redirect_error(reply.status, reply.headers.get("Location"), target)
            yield reply


def one_off_session() -> aiohttp.ClientSession:
    """A session for one command's few requests (doctor, onboarding's token check)."""
    return aiohttp.ClientSession(auto_decompress=False)
