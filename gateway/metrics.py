"""Prometheus metrics, one registry per app (no module globals).

Model labels are bounded: once the app calls ``set_known_refs``, a ref that is neither
configured nor in the catalog is counted as ``other`` (a client can send any model name; each
distinct label would be a permanent series).
"""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.breaker import Breaker, State
from gateway.refs import ModelRef
from gateway.routing import KnownRefs
from gateway.upstream import upstream_connection_counts

OTHER = "other"
MAX_PROVIDERS = 32  # distinct provider labels of the spend counter; later ones are ``other``

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


_BREAKER_VALUES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


def _counter(registry: CollectorRegistry, name: str, documentation: str, *labels: str) -> Counter:
    return Counter(name, documentation, labels, registry=registry)


def _gauge(registry: CollectorRegistry, name: str, documentation: str, *labels: str) -> Gauge:
    return Gauge(name, documentation, labels, registry=registry)


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[object, ...], Counter] = {}
        self._known: KnownRefs | None = None
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = _counter(
            r,
            "coderclaw_requests",
            "Chat completions by served model and outcome",
            "model",
            "outcome",
        )
        self.dialect_requests = _counter(
            r,
            "coderclaw_dialect_requests",
            "Requests by API dialect (chat, responses, messages) and outcome",
            "dialect",
            "outcome",
        )
        self.attempts = _counter(
            r,
            "coderclaw_upstream_attempts",
            "Upstream attempts by model and status",
            "model",
            "status",
        )
        self.fallbacks = _counter(
            r,
            "coderclaw_fallbacks",
            "Requests served by a model other than the first of their chain",
        )
        self.upstream_latency = Histogram(
            "coderclaw_upstream_latency_seconds",
            "Upstream attempt duration (a served attempt: until its first byte)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "coderclaw_time_to_first_byte_seconds",
            "Request start to first byte sent",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.active_streams = _gauge(r, "coderclaw_active_streams", "Streams being relayed now")
        self.cooling_models = _gauge(r, "coderclaw_cooling_models", "Models in cooldown now")
        # -- routing that recovers by itself (SPEC §9): breaker, hedging, rescue ----------------
        self.breaker_state = _gauge(
            r,
            "coderclaw_breaker_state",
            "Breaker state per configured model: 0 closed, 1 half-open, 2 open",
            "model",
        )
        self.hedges_started = _counter(
            r,
            "coderclaw_hedges_started",
            "Hedges started: a second model asked before the first sent its first chunk",
        )
        self.hedges_won = _counter(
            r, "coderclaw_hedges_won", "Hedges whose second model answered first"
        )
        self.rescues_tried = _counter(
            r, "coderclaw_rescues_tried", "Committed streams that broke and were rescued"
        )
        self.rescues_succeeded = _counter(
            r,
            "coderclaw_rescues_succeeded",
            "Rescued streams that ended normally on another model",
        )
        # ---------------------------------------------------------------------------------------
        self.catalog_models = _gauge(r, "coderclaw_catalog_models", "Models in the current catalog")
        self.catalog_age = _gauge(
            r, "coderclaw_catalog_age_seconds", "Age of the last good discovery (-1: none)"
        )

        # Spend: known costs only (a request without a price adds nothing). Providers are
        # named by the router's header, so they are bounded too: the first MAX_PROVIDERS seen.
        self.spend = _counter(
            r,
            "coderclaw_spend_usd",
            "Known cost in USD of finished requests, by served model and provider",
            "model",
            "provider",
        )
        self._providers: set[str] = set()
        self._spend_children: dict[tuple[str, str], Counter] = {}

        # -- several replicas (SPEC §13) ------------------------------------------------------
        self.shared_state = _gauge(
            r,
            "coderclaw_shared_state",
            "The shared state (1 for the one in force): redis, degraded (Redis is configured "
            "and not answering: local state) or local (no Redis configured)",
            "state",
        )

        self.asyncio_tasks = _gauge(
            r, "coderclaw_asyncio_tasks", "asyncio tasks alive in the gateway's loop"
        )
        self.upstream_connections = _gauge(
            r,
            "coderclaw_upstream_connections",
            "Upstream pool connections: active (serving a request) or idle (kept alive)",
            "state",
        )

    def observe_process(self, connector: aiohttp.BaseConnector | None) -> None:
        """Set the process gauges (tasks, upstream connections) as they are now."""
        self.asyncio_tasks.set(len(asyncio.all_tasks()))
        active, idle = upstream_connection_counts(connector)
        self.upstream_connections.labels("active").set(active)
        self.upstream_connections.labels("idle").set(idle)

    def observe_shared_state(self, status: str) -> None:
        for state in ("redis", "degraded", "local"):
            self.shared_state.labels(state).set(1 if state == status else 0)

    def observe_breaker(
        self, breaker: Breaker, configured: tuple[ModelRef, ...], now: float
    ) -> None:
        """Set the breaker gauges as they are now: the open models, and each configured
        model's state (0 closed, 1 half-open, 2 open)."""
        self.cooling_models.set(len(breaker.cooling(now)))
        for ref in configured:
            self.breaker_state.labels(str(ref)).set(_BREAKER_VALUES[breaker.state(ref, now)])

    def set_known_refs(self, known: KnownRefs) -> None:
        """Label only these refs by name from now on; every other one is ``other``."""
        self._known = known

    def model_label(self, model: str) -> str:
        """``model`` when it is known (or nothing is known yet), else ``other``; ``none`` (no
        model served) stays."""
        if self._known is None or model == "none" or self._known.has_label(model):
            return model
        return OTHER

    def count_attempt(self, model: str, status: str) -> None:
        self._inc(self.attempts, self.model_label(model), status)

    def count_request(self, model: str, outcome: str) -> None:
        self._inc(self.requests, self.model_label(model), outcome)

    def count_spend(self, model: str, provider: str | None, usd: float) -> None:
        name = provider or "none"
        if name not in self._providers:
            if len(self._providers) >= MAX_PROVIDERS:
                name = OTHER
            else:
                self._providers.add(name)
        key = (self.model_label(model), name)
        child = self._spend_children.get(key)
        if child is None:
            child = self._spend_children[key] = self.spend.labels(*key)
        child.inc(usd)

    def count_dialect(self, dialect: str, outcome: str) -> None:
        self._inc(self.dialect_requests, dialect, outcome)

    def _inc(self, counter: Counter, *labels: str) -> None:
        # labels() validates and locks on every call; the children are few, so keep them.
        key = (id(counter), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
