"""What every dialect's handler shares: the chain of a request, and the run through the app's
chain engine it ends with (after the budget check at admission)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.app_state import CLOCK, ENGINE, LEDGER, METRICS, SHARED, TRAFFIC
from gateway.engine import ChainFailure, ChatRequest, FailureKind, RequestRecord, Sink
from gateway.ledger.budget import Refusal
from gateway.refs import ModelRef
from gateway.routing import request_chain
from gateway.settings import Settings


def chain_for(settings: Settings, requested: ModelRef | None) -> list[ModelRef]:
    """The chain of one request: the configured one for a chain name (``requested`` None),
    else the requested model first, then the configured fallbacks."""
    if requested is None:
        return list(settings.chain)
    return request_chain(requested, (settings.chain[0], *settings.fallbacks))


def client_wants_usage(body: dict[str, Any]) -> bool:
    """Whether a chat client asked for the usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage_asked(body: dict[str, Any]) -> dict[str, Any]:
    """The upstream body of a stream, asking the router for usage (the ledger needs it).

    A ``stream_options`` that is not an object is left for the router to refuse."""
    options = body.get("stream_options")
    if options is None:
        return {**body, "stream_options": {"include_usage": True}}
    if isinstance(options, dict) and options.get("include_usage") is not True:
        return {**body, "stream_options": {**options, "include_usage": True}}
    return body


def budget_failure(refusal: Refusal, now: float) -> ChainFailure:
    """The 429 ``budget_exceeded`` of a spent budget: its message names the budget and the
    reset time; ``retry_after`` is the seconds until the reset."""
    return ChainFailure(
        FailureKind.BUDGET,
        429,
        refusal.message,
        "rate_limit_error",
        "budget_exceeded",
        retry_after=refusal.retry_after_seconds(now),
    )


async def run_engine(request: web.Request, chat: ChatRequest, sink: Sink) -> web.StreamResponse:
    """Run ``chat`` through the app's engine with ``sink`` rendering it, counted among the
    open streams meanwhile (the drain reports them). A spent budget refuses it first: nothing
    goes upstream. The budget is this replica's ledger's spend and, with ``state.redis``, the
    spend all replicas share (one bounded Redis round trip, SPEC §13)."""
    app = request.app
    ledger = app.get(LEDGER)
    if ledger is not None:
        now = app[CLOCK].time()
        budgets = chat.settings.budgets
        refusal = ledger.check_budget(budgets, now)
        shared = app.get(SHARED)
        if refusal is None and shared is not None and budgets.any:
            refusal = await shared.admit(budgets, now)
        if refusal is not None:
            return _refuse(request, chat, sink, budget_failure(refusal, now))
    if chat.stream:
        chat.body = with_usage_asked(chat.body)
    traffic = app[TRAFFIC]
    metrics = app[METRICS]
    if chat.stream:
        traffic.open_streams += 1
        metrics.active_streams.inc()
    try:
        return await app[ENGINE].run(chat, sink)
    finally:
        if chat.stream:
            traffic.open_streams -= 1
            metrics.active_streams.dec()


def _refuse(
    request: web.Request, chat: ChatRequest, sink: Sink, failure: ChainFailure
) -> web.StreamResponse:
    """The budget refusal, logged and written to the ledger like any finished request."""
    engine = request.app[ENGINE]
    now = engine.clock.monotonic()
    record = RequestRecord(
        request_id=chat.request_id,
        dialect=chat.dialect,
        requested=chat.requested,
        stream=chat.stream,
        chain=chat.chain,
        started=now,
        outcome="budget_exceeded",
        finished=now,
    )
    engine.log.add(record)
    headers = record.headers()
    headers["Retry-After"] = str(failure.retry_after)
    return sink.error(failure, headers)
