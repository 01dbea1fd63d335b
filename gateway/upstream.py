"""The router client: one ``aiohttp.ClientSession`` per app, with a pooled keep-alive connector.

Only the configured router (and Hub) ever see the Hugging Face token; a client's own
``Authorization`` header is never forwarded.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from gateway import __version__
from gateway.settings import Settings

USER_AGENT = f"coderclaw-gateway/{__version__}"
# Client headers worth passing on: billing to an org is the user's explicit choice.
FORWARDED_HEADERS = ("X-HF-Bill-To",)


def new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # no pool cap: the gateway's own concurrency is the limit
        keepalive_timeout=30,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=True,
        headers={"User-Agent": USER_AGENT},
    )


class Upstream:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def post_chat(
        self,
        settings: Settings,
        payload: bytes,
        *,
        stream: bool,
        client_headers: Mapping[str, str],
    ) -> aiohttp.ClientResponse:
        """Send one chat completion; returns once the status line and headers have arrived
        (the caller bounds that wait and releases the response)."""
        token = settings.hf_token
        # The handler answers 503 before any attempt when no token is configured.
        assert token is not None
        headers = {
            "Authorization": f"Bearer {token.reveal()}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        for name in FORWARDED_HEADERS:
            value = client_headers.get(name)
            if value:
                headers[name] = value
        hf = settings.config.hf
        timeouts = settings.config.gateway.timeouts
        return await self.session.post(
            hf.base_url.rstrip("/") + "/chat/completions",
            data=payload,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_seconds),
        )
