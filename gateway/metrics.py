"""Prometheus metrics, one registry per app (no module globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "coderclaw_requests",
            "Chat completions by served model and outcome",
            ["model", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "coderclaw_upstream_attempts",
            "Upstream attempts by model and status",
            ["model", "status"],
            registry=r,
        )
        self.fallbacks = Counter(
            "coderclaw_fallbacks",
            "Requests served by a model other than the first of their chain",
            registry=r,
        )
        self.upstream_latency = Histogram(
            "coderclaw_upstream_latency_seconds",
            "Upstream attempt duration",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "coderclaw_time_to_first_byte_seconds",
            "Request start to first byte sent",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge(
            "coderclaw_active_streams", "Streams being relayed now", registry=r
        )
        self.cooling_models = Gauge(
            "coderclaw_cooling_models", "Models in cooldown now", registry=r
        )
        self.catalog_models = Gauge(
            "coderclaw_catalog_models", "Models in the current catalog", registry=r
        )
        self.catalog_age = Gauge(
            "coderclaw_catalog_age_seconds", "Age of the last good discovery (-1: none)", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
