"""What one request did (attempts, served model, timings, usage, outcome), and the batched
writer of its log line and counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gateway.metrics import Metrics
from gateway.observe import batched_writes, get_logger
from gateway.refs import ModelRef
from gateway.routing import Failure

log = get_logger("gateway.proxy")
# Upstream replies arrive in bursts, and every microsecond spent between a reply and its answer
# delays the rest of the burst: a finished request's log line and counters wait this long, then
# go out with the others finished meanwhile. /metrics and shutdown flush them first.
LOG_DELAY = 0.02
# Written at most this many at a time, one slice per turn of the loop: a request that arrives
# while the lines of the last 20 ms go out waits for one slice, not for all of them.
LOG_SLICE = 8


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
        return headers


class RequestLog:
    """Writes the finished requests' log lines and counters, ``LOG_DELAY`` after the first."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._finished: list[RequestRecord] = []
        self._flush_at: asyncio.Handle | None = None

    def add(self, record: RequestRecord) -> None:
        self._finished.append(record)
        if self._flush_at is None:
            loop = asyncio.get_running_loop()
            self._flush_at = loop.call_later(LOG_DELAY, self._flush_slice)

    def _flush_slice(self) -> None:
        """Write up to ``LOG_SLICE`` lines (one write), and come back next turn for the rest."""
        self._flush_at = None
        batch, self._finished = self._finished[:LOG_SLICE], self._finished[LOG_SLICE:]
        with batched_writes():
            for record in batch:
                self._write(record)
        if self._finished:
            self._flush_at = asyncio.get_running_loop().call_soon(self._flush_slice)

    def flush(self) -> None:
        """Write the log lines and counters of the requests finished so far."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        finished, self._finished = self._finished, []
        with batched_writes():
            for record in finished:
                self._write(record)

    def _write(self, r: RequestRecord) -> None:
        """The request's one log line and all its counters, written after the answer."""
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
        log.info(
            "chat_completion",
            request_id=r.request_id,
            dialect=r.dialect,
            requested=r.requested,
            served=served,
            stream=r.stream,
            outcome=r.outcome,
            attempts=[
                {
                    "model": str(a.ref),
                    "status": a.mark or (a.failure.value if a.failure else a.status),
                    "ms": round(a.ms, 1),
                }
                for a in r.attempts
            ],
            ttfb_ms=round(r.ttfb * 1e3, 1) if r.ttfb is not None else None,
            total_ms=round(total * 1e3, 1),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=r.finish_reason,
        )
