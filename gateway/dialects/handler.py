"""What every dialect's handler shares: the chain of a request, and the run through the app's
chain engine it ends with."""

from __future__ import annotations

from aiohttp import web

from gateway.app_state import ENGINE, METRICS, TRAFFIC
from gateway.engine import ChatRequest, Sink
from gateway.refs import ModelRef
from gateway.routing import request_chain
from gateway.settings import Settings


def chain_for(settings: Settings, requested: ModelRef | None) -> list[ModelRef]:
    """The chain of one request: the configured one for a chain name (``requested`` None),
    else the requested model first, then the configured fallbacks."""
    if requested is None:
        return list(settings.chain)
    return request_chain(requested, (settings.chain[0], *settings.fallbacks))


async def run_engine(request: web.Request, chat: ChatRequest, sink: Sink) -> web.StreamResponse:
    """Run ``chat`` through the app's engine with ``sink`` rendering it, counted among the
    open streams meanwhile (the drain reports them)."""
    traffic = request.app[TRAFFIC]
    metrics = request.app[METRICS]
    if chat.stream:
        traffic.open_streams += 1
        metrics.active_streams.inc()
    try:
        return await request.app[ENGINE].run(chat, sink)
    finally:
        if chat.stream:
            traffic.open_streams -= 1
            metrics.active_streams.dec()
