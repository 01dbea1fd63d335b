"""What one request did (attempts, served model, timings, usage, outcome), and the batched
writer of its log line, its counters and its ledger row.

Cost: ``RequestLog.price`` puts ``cost`` (USD, or None when no price is known) into an
upstream ``usage`` dict as soon as the engine sees it (the usage chunk of a stream, the body
of an answer), so every dialect's sink finds ``usage["cost"]``. The ledger row, the spend
counter and the status page's recent requests are written with the log line, after the
answer, in the same batch."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.catalog import Catalog
from gateway.ledger.cost import request_cost
from gateway.ledger.usage import UsageRow
from gateway.metrics import Metrics
from gateway.observe import batched_writes, get_logger, hold_writes, info_line, release_writes
from gateway.refs import ModelRef
from gateway.routing import Failure

if TYPE_CHECKING:
    from gateway.engine.events import Clock
    from gateway.ledger.usage import LedgerWriter

log = get_logger("gateway.proxy")
RECENT = 50  # the finished requests the status page shows
# Upstream replies arrive in bursts, and every microsecond spent between a reply and its answer
# delays the rest of the burst: a finished request's log line and counters wait this long, then
# go out with the others finished meanwhile. /metrics and shutdown flush them first.
LOG_DELAY = 0.02
# A round logs the requests finished before it began, a slice per turn of the loop: a request
# in flight meanwhile waits for one slice at each of its turns, not for all of them (8 at a
# time made one request in thirty wait ~0.6 ms over its four turns). A slice is LOG_SLICE
# requests, or more when the round would take more than ROUND_TURNS turns (under load, so the
# requests finished meanwhile never outrun it). A round's lines reach the stream in one write.
LOG_SLICE = 2
ROUND_TURNS = 16


@dataclass(slots=True)
class AttemptLog:
    ref: ModelRef
    status: int | None
    failure: Failure | None
    ms: float
    # Instead of the status: "hedged" (cancelled, the other attempt of a hedge answered first),
    # "cut" (a committed stream that broke), "rescue" (the model that finished it) — SPEC §9.
    mark: str | None = None

    @property
    def outcome(self) -> str:
        if self.mark:
            return self.mark
        return self.failure.value if self.failure else str(self.status)

    @property
    def label(self) -> str:
        return f"{self.ref}={self.outcome}"


@dataclass(slots=True)
class RequestRecord:
    """Everything the log line and the metrics need, filled in by the engine as it goes."""

    request_id: str
    dialect: str
    requested: Any  # the client's ``model``, as sent
    stream: bool
    chain: list[ModelRef]
    started: float
    attempts: list[AttemptLog] = field(default_factory=list)
    served: ModelRef | None = None
    provider: str | None = None
    ttfb: float | None = None
    usage: Any = None
    finish_reason: str | None = None
    outcome: str = "error"
    finished: float = 0.0
    cost: float | None = None  # USD, once ``RequestLog.price`` saw the usage; None: unknown
    ts: float = 0.0  # wall-clock time of ``started`` (set when the request is added to the log)

    def attempts_header(self) -> str:
        return ",".join(a.label for a in self.attempts)

    def headers(self) -> dict[str, str]:
        """The engine's headers of every answer: id, attempts, served model, provider."""
        headers = {"x-request-id": self.request_id}
        if self.attempts:
            headers["x-coderclaw-attempts"] = self.attempts_header()
        if self.served is not None:
            headers["x-coderclaw-model"] = str(self.served)
        if self.provider:
            headers["x-inference-provider"] = self.provider
        if self.cost is not None and not self.stream:
            headers["x-coderclaw-cost-usd"] = format_usd(self.cost)
        return headers


def format_usd(cost: float) -> str:
    """A cost for a header or a table: fixed-point, ten decimals (``0.0000123000``)."""
    return f"{cost:.10f}"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_tokens(usage: Any) -> tuple[int | None, int | None, int | None, int | None]:
    """(input, output, cached, reasoning) tokens of an upstream ``usage`` object; None where
    it says nothing. Cached and reasoning counts come nested (OpenAI: ``prompt_tokens_details``
    / ``completion_tokens_details``) or flat (Together: ``cached_tokens``)."""
    if not isinstance(usage, dict):
        return None, None, None, None
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _int(usage.get("cached_tokens"))
    if cached is None and isinstance(prompt_details, dict):
        cached = _int(prompt_details.get("cached_tokens"))
    reasoning = _int(usage.get("reasoning_tokens"))
    if reasoning is None and isinstance(completion_details, dict):
        reasoning = _int(completion_details.get("reasoning_tokens"))
    return (
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
        cached,
        reasoning,
    )


def tenths(value: float) -> float:
    """``value`` to one decimal, halves up: ``round(value, 1)`` for the log's and the ledger's
    milliseconds at a fifth of its cost (``round`` with digits goes through decimal text)."""
    return math.floor(value * 10 + 0.5) / 10


def _ms(seconds: float | None) -> float | None:
    return tenths(seconds * 1e3) if seconds is not None else None


class RequestLog:
    """Writes the finished requests' log lines and counters, ``LOG_DELAY`` after the first."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._finished: list[RequestRecord] = []
        self._flush_at: asyncio.Handle | None = None
        self._round: list[RequestRecord] = []  # the round under way: still to be logged
        self._per_turn = LOG_SLICE
        self._holding = False  # the round's lines written so far are held (one write)
        self.ledger: LedgerWriter | None = None
        self._catalog: Callable[[], Catalog] | None = None
        self._clock: Clock | None = None
        self.recent: deque[UsageRow] = deque(maxlen=RECENT)  # newest last
        # Told of each finished request at once, before its batched log line (the spend shared
        # between replicas must not wait for the batch, SPEC §13).
        self.on_finished: Callable[[RequestRecord], None] | None = None

    def attach(
        self, ledger: LedgerWriter | None, catalog: Callable[[], Catalog], clock: Clock
    ) -> None:
        """Write a ledger row per request to ``ledger``, priced with ``catalog()`` (the
        refresher's current catalog); ``clock`` gives the rows' wall-clock times."""
        self.ledger = ledger
        self._catalog = catalog
        self._clock = clock

    def price(
        self, served: ModelRef, provider: str | None, usage: Any, record: RequestRecord
    ) -> None:
        """Put the cost of ``usage`` (served by ``served`` at ``provider``) into it as
        ``usage["cost"]`` and on ``record``; None when no price is known, never 0."""
        if not isinstance(usage, dict) or self._catalog is None:
            return
        tokens_in, tokens_out, _, _ = usage_tokens(usage)
        cost = request_cost(self._catalog(), served.model_id, provider, tokens_in, tokens_out)
        usage["cost"] = cost
        record.cost = cost

    def add(self, record: RequestRecord) -> None:
        if self._clock is not None:
            record.ts = self._clock.time() - (self._clock.monotonic() - record.started)
        if self.on_finished is not None:
            self.on_finished(record)
        self._finished.append(record)
        if self._flush_at is None:
            loop = asyncio.get_running_loop()
            self._flush_at = loop.call_later(LOG_DELAY, self._flush_slice)

    def _flush_slice(self) -> None:
        """One slice of the round (starting it if none is under way), and the next slice next
        turn; at the round's end its lines go out in one write, and the requests finished
        during it wait ``LOG_DELAY`` for the next round."""
        loop = asyncio.get_running_loop()
        self._flush_at = None
        if not self._round:
            self._round, self._finished = self._finished, []
            self._per_turn = max(LOG_SLICE, -(-len(self._round) // ROUND_TURNS))
            self._holding = hold_writes()
        batch = self._round[: self._per_turn]
        del self._round[: self._per_turn]
        for record in batch:
            self._write(record)
        if self._round:
            self._flush_at = loop.call_soon(self._flush_slice)
            return
        self._release()
        if self._finished:
            self._flush_at = loop.call_later(LOG_DELAY, self._flush_slice)

    def flush(self) -> None:
        """Write the log lines and counters of the requests finished so far."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        finished, self._round, self._finished = [*self._round, *self._finished], [], []
        with batched_writes():
            for record in finished:
                self._write(record)
        self._release()

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            release_writes()

    def _row(self, r: RequestRecord) -> None:
        """The finished request's ledger row and spend; the status page's recent requests."""
        tokens_in, tokens_out, cached, reasoning = usage_tokens(r.usage)
        row = UsageRow(
            ts=r.ts,
            request_id=r.request_id,
            dialect=r.dialect,
            requested=r.requested if isinstance(r.requested, str) else None,
            served=str(r.served) if r.served else None,
            provider=r.provider,
            attempts=r.attempts_header(),
            outcome=r.outcome,
            ttft_ms=_ms(r.ttfb),
            total_ms=_ms(r.finished - r.started),
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
            cost_usd=r.cost,
        )
        self.recent.append(row)
        if r.cost and row.served:
            self.metrics.count_spend(row.served, r.provider, r.cost)
        if self.ledger is not None:
            self.ledger.add(row)

    def _write(self, r: RequestRecord) -> None:
        """The request's one log line, all its counters and its ledger row, after the answer."""
        if self._clock is not None:
            self._row(r)
        total = r.finished - r.started
        served = str(r.served) if r.served else None
        metrics = self.metrics
        metrics.count_request(served or "none", r.outcome)
        metrics.count_dialect(r.dialect, r.outcome)
        for a in r.attempts:
            metrics.count_attempt(str(a.ref), a.outcome)
            metrics.upstream_latency.observe(a.ms / 1e3)
        if r.ttfb is not None:
            metrics.ttfb.observe(r.ttfb)
        if r.served is not None and r.served != r.chain[0]:
            metrics.fallbacks.inc()  # failed over, or skipped a cooling model
        usage = r.usage if isinstance(r.usage, dict) else {}
        info_line(
            log,
            "chat_completion",
            {
                "request_id": r.request_id,
                "dialect": r.dialect,
                "requested": r.requested,
                "served": served,
                "stream": r.stream,
                "outcome": r.outcome,
                "attempts": [
                    {
                        "model": str(a.ref),
                        "status": a.mark or (a.failure.value if a.failure else a.status),
                        "ms": tenths(a.ms),
                    }
                    for a in r.attempts
                ],
                "ttfb_ms": _ms(r.ttfb),
                "total_ms": tenths(total * 1e3),
                "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens"),
                "cost_usd": r.cost,
                "finish_reason": r.finish_reason,
            },
        )
