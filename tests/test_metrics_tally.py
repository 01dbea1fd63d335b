"""The request path's counters and histograms (``Tally``, ``TallyHistogram``) are scraped with
exactly the samples ``prometheus_client``'s own ``Counter`` and ``Histogram`` give for the
same observations (bar the ``_created`` timestamps, which the tallies do not keep)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metrics import Tally, TallyHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


@pytest.mark.parametrize(
    "incs",
    [
        [],
        [(("a", "ok"), 1.0)],
        [(("a", "ok"), 1.0), (("a", "ok"), 1.0), (("b", "error"), 1.0)],
        [(("m|x", 'quote"d'), 0.25), (("m|x", 'quote"d'), 1e-7)],  # label escaping, fractions
    ],
)
def test_a_tally_scrapes_like_a_labelled_counter(incs: list[tuple[tuple[str, str], float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = Tally(ours, "demo_requests", "Requests by model and outcome", "model", "outcome")
    counter = Counter("demo_requests", "Requests by model and outcome", ["model", "outcome"],
                      registry=theirs)  # fmt: skip
    for labels, amount in incs:
        tally.inc(*labels, amount=amount)
        counter.labels(*labels).inc(amount)
    assert exposition(ours) == exposition(theirs)


def test_a_tally_without_labels_starts_at_zero_like_a_counter() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = Tally(ours, "demo_fallbacks", "Fallbacks")
    counter = Counter("demo_fallbacks", "Fallbacks", registry=theirs)
    assert exposition(ours) == exposition(theirs)
    tally.inc()
    counter.inc()
    assert exposition(ours) == exposition(theirs)


@pytest.mark.parametrize(
    "values",
    [
        [],
        [0.005],  # on a bound: counted in that bucket (le is "<=")
        [0.0, 0.004, 0.006, 1.0, 1.5, 119.0, 120.0, 121.0, 1e9],
        [0.3] * 5,
    ],
)
def test_a_tally_histogram_scrapes_like_a_histogram(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = TallyHistogram(ours, "demo_latency_seconds", "Latency", BUCKETS)
    real = Histogram("demo_latency_seconds", "Latency", buckets=BUCKETS, registry=theirs)
    for value in values:
        mine.observe(value)
        real.observe(value)
    assert exposition(ours) == exposition(theirs)
