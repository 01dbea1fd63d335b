"""The only aiohttp client code of the gateway: the router, the Hub, a local health probe.

``Upstream.post_chat`` sends one chat completion and returns an ``UpstreamReply`` (the gateway's
own reply object: status, headers, provider, capped ``read``, capped SSE ``events``);
``fetch.get`` is the same for a GET (discovery's ``/models``, the Hub's whoami, doctor's probe).
Redirects are never followed, bodies are bounded and asked for uncompressed, and aiohttp's
errors become ``gateway.errors.UpstreamError`` subclasses in ``reply.mapped_errors`` alone.
"""

from gateway.upstream import fetch
from gateway.upstream.fetch import one_off_session
from gateway.upstream.pool import idle_connections, upstream_connection_counts
from gateway.upstream.reply import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    MAX_MODELS_BYTES,
    MAX_WHOAMI_BYTES,
    SSEEvents,
    UpstreamReply,
)
from gateway.upstream.router import Upstream, new_session

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_MODELS_BYTES",
    "MAX_WHOAMI_BYTES",
    "SSEEvents",
    "Upstream",
    "UpstreamReply",
    "fetch",
    "idle_connections",
    "new_session",
    "one_off_session",
    "upstream_connection_counts",
]
