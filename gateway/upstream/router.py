"""The router client: one ``aiohttp.ClientSession`` per app, with a pooled keep-alive connector.

Only the configured router (and Hub) ever see the Hugging Face token; a client's own
``Authorization`` header is never forwarded. Redirects are never followed: a 3xx raises
``UpstreamRedirect`` naming the target host (a 307 would re-post the prompt and the token).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping

import aiohttp
from yarl import URL

from gateway import __version__
from gateway.observe import get_logger
from gateway.settings import Settings
from gateway.upstream.pool import idle_connections, open_connection
from gateway.upstream.reply import UpstreamReply, mapped_errors, redirect_error

log = get_logger("gateway.upstream")

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
        # Bodies are asked for as identity and inflated, if at all, within a cap (reply.py).
        auto_decompress=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


# A client that goes away mid-request makes the gateway close that request's upstream
# connection (HTTP/1.1 has no other way to tell the router to stop). The pool would shrink by
# one each time and the next requests pay new TCP (and TLS) handshakes in their latency, so
# the connection is replaced in the background. Disconnects close together (a client closing
# many connections, an editor cancelling as the user types) are refilled in one go.
REFILL_DELAY = 0.05
MAX_REFILL = 256


class Upstream:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._lost = 0
        self._refill_at: asyncio.TimerHandle | None = None
        self._refills: set[asyncio.Task[None]] = set()

    def replace_closed_connection(self, settings: Settings) -> None:
        """Count one pooled connection closed because its request was abandoned; a
        replacement is opened shortly (together with any other closed by then)."""
        self._lost = min(self._lost + 1, MAX_REFILL)
        if self._refill_at is None and not self.session.closed:
            loop = asyncio.get_running_loop()
            self._refill_at = loop.call_later(REFILL_DELAY, self._start_refill, settings)

    def _start_refill(self, settings: Settings) -> None:
        self._refill_at = None
        count, self._lost = self._lost, 0
        task = asyncio.get_running_loop().create_task(self._refill(settings, count))
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _refill(self, settings: Settings, count: int) -> None:
        connector = self.session.connector
        if connector is None or connector.closed:
            return
        loop = asyncio.get_running_loop()
        req = aiohttp.ClientRequest(
            "POST", URL(settings.config.hf.base_url), loop=loop, session=self.session
        )
        limits = aiohttp.ClientTimeout(
            total=None, connect=settings.config.gateway.timeouts.connect_seconds
        )
        # connect() hands out idle connections first: hold those while `count` new ones are
        # started, then give them straight back (one turn of the loop).
        held: list[aiohttp.connector.Connection] = []
        opening: list[asyncio.Task[bool]] = []
        try:
            for _ in range(idle_connections(connector, req.connection_key)):
                held.append(await connector.connect(req, [], limits))
            opening = [
                loop.create_task(open_connection(connector, req, limits)) for _ in range(count)
            ]
            await asyncio.sleep(0)  # each connect() has found the pool empty and is dialling
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass  # an idle connection gone stale and its replacement failed: the router is down
        finally:
            for conn in held:
                conn.release()
        opened = sum(await asyncio.gather(*opening))
        log.debug("upstream_pool_refilled", closed=count, opened=opened)

    async def close(self) -> None:
        """Stop refilling (before the session closes)."""
        if self._refill_at is not None:
            self._refill_at.cancel()
            self._refill_at = None
        for task in self._refills:
            task.cancel()
        await asyncio.gather(*self._refills, return_exceptions=True)

    async def post_chat(
        self,
        settings: Settings,
        payload: bytes,
        *,
        stream: bool,
        client_headers: Mapping[str, str],
    ) -> UpstreamReply:
        """Send one chat completion; returns once the status line and headers have arrived
        (the caller bounds that wait and closes the reply). A 3xx raises ``UpstreamRedirect``;
        a failure to connect, ``UpstreamUnreachable`` or ``UpstreamTimeout``."""
        token = settings.hf_token
        # The handler answers 503 before any attempt when no token is configured.
        assert token is not None
        headers = {
            "Authorization": f"Bearer {token.reveal()}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "Accept-Encoding": "identity",
        }
        for name in FORWARDED_HEADERS:
            value = client_headers.get(name)
            if value:
                headers[name] = value
        url, limits = _chat_target(
            settings.config.hf.base_url, settings.config.gateway.timeouts.connect_seconds
        )
        with mapped_errors():
            resp = await self.session.post(
                url,
                data=payload,
                headers=headers,
                timeout=limits,
                allow_redirects=False,
                auto_decompress=False,
            )
        reply = UpstreamReply(resp)
        if 300 <= reply.status < 400:
            reply.close()
            raise redirect_error(reply.status, reply.headers.get("Location"), url)
        return reply


@functools.lru_cache(maxsize=8)
def _chat_target(base_url: str, connect_seconds: float) -> tuple[URL, aiohttp.ClientTimeout]:
    """The chat completions URL, parsed once, and the connect timeout of every attempt."""
    url = URL(base_url.rstrip("/") + "/chat/completions")
    return url, aiohttp.ClientTimeout(total=None, sock_connect=connect_seconds)
