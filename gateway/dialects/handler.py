"""What every dialect's handler ends with: the request through the app's chain engine."""

from __future__ import annotations

from aiohttp import web

from gateway.app_state import ENGINE, METRICS, TRAFFIC
from gateway.engine import ChatRequest, Sink


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
