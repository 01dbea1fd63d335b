"""Hedging of SPEC §9 as tables: the adaptive delay, the settings, and the per-minute budget."""

from __future__ import annotations

import random
import timeit
from typing import Literal

import pytest

from gateway.breaker import Breaker, ProbeTicket
from gateway.hedging import HedgeBudget, HedgeStats, hedge_delay
from gateway.refs import parse_ref

A = parse_ref("huggingface/org/model-a")
B = parse_ref("huggingface/org/model-b")


# -- the adaptive delay ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observations", "first_token", "delay"),
    [
        ([], 15.0, 5.0),  # no history: 5 s
        ([0.3] * 19, 15.0, 5.0),  # still fewer than 20
        ([0.3] * 19, 3.0, 3.0),  # ... never past the first-token timeout
        ([0.3] * 20, 15.0, 1.0),  # 1.5 * 0.3 = 0.45, clamped up to 1 s
        ([2.0] * 20, 15.0, 3.0),  # 1.5 * p90
        ([20.0] * 20, 15.0, 15.0),  # clamped down to firstTokenSeconds
        ([2.0] * 20, 0.5, 0.5),  # a first-token timeout under 1 s wins over the floor
        # p90 by nearest rank: 18 fast, 2 slow → the 18th value is fast
        ([0.5] * 18 + [10.0] * 2, 15.0, 1.0),
        # 17 fast, 3 slow → the 18th value is slow: the model is slow one time in seven
        ([0.5] * 17 + [4.0] * 3, 15.0, 6.0),
        ([float(i) for i in range(1, 101)], 200.0, 135.0),  # p90 of 1..100 is 90
    ],
)
def test_adaptive_delay(observations: list[float], first_token: float, delay: float) -> None:
    stats = HedgeStats()
    for seconds in observations:
        stats.observe(A, seconds)
    assert stats.delay(A, first_token) == pytest.approx(delay)
    assert stats.delay(B, first_token) == min(5.0, first_token)  # per model


def test_the_window_keeps_the_last_observations() -> None:
    """A model that was slow and got fast: the old slow times leave the window."""
    stats = HedgeStats(window=50)
    for _ in range(50):
        stats.observe(A, 8.0)
    assert stats.delay(A, 15.0) == 12.0
    for _ in range(50):
        stats.observe(A, 0.8)
    assert stats.count(A) == 50
    assert stats.p90(A) == 0.8
    assert stats.delay(A, 15.0) == pytest.approx(1.2)


def test_the_window_percentile_matches_a_sorted_copy() -> None:
    rng = random.Random(7)
    stats = HedgeStats(window=200)
    seen: list[float] = []
    for _ in range(1000):
        value = rng.lognormvariate(0, 1)
        stats.observe(A, value)
        seen.append(value)
        last = sorted(seen[-200:])
        assert stats.p90(A) == last[-(-9 * len(last) // 10) - 1]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_nonsense_observations_are_ignored(bad: float) -> None:
    stats = HedgeStats()
    stats.observe(A, bad)
    assert stats.count(A) == 0


def test_models_tracked_are_bounded_and_configured_ones_kept() -> None:
    stats = HedgeStats(max_models=2, configured=[A])
    stats.observe(A, 1.0)
    for i in range(5):
        stats.observe(parse_ref(f"huggingface/org/x-{i}"), 1.0)
    assert stats.count(A) == 1
    kept = [i for i in range(5) if stats.count(parse_ref(f"huggingface/org/x-{i}"))]
    assert kept == [3, 4]


def test_the_delay_is_cheap_enough_to_compute_per_request() -> None:
    """observe + delay on a full window stay well under 50 µs (measured ~3 µs)."""
    stats = HedgeStats()
    for i in range(200):
        stats.observe(A, 0.1 + i % 17 / 10)

    def once() -> None:
        stats.observe(A, 0.42)
        stats.delay(A, 15.0)

    per_call = min(timeit.repeat(once, number=2000, repeat=3)) / 2000
    assert per_call < 50e-6


# -- settings --------------------------------------------------------------------------------

AfterSeconds = float | Literal[False] | None


@pytest.mark.parametrize(
    ("after", "non_stream", "stream", "probe", "first_token", "delay"),
    [
        (None, False, True, False, 15.0, 5.0),  # streams are hedged by default, adaptive
        (None, False, False, False, 15.0, None),  # non-stream not by default
        (None, True, False, False, 15.0, 5.0),  # ... with nonStream: true
        (None, False, False, True, 15.0, 5.0),  # a half-open probe always
        (2.0, False, True, False, 15.0, 2.0),  # afterSeconds overrides the adaptive delay
        (2.0, False, False, True, 15.0, 2.0),
        (30.0, False, True, False, 15.0, 15.0),  # ... up to the first-token timeout
        (False, False, True, False, 15.0, None),  # false: off
        (False, True, True, True, 15.0, None),  # off for probes too
    ],
)
def test_hedge_delay_from_the_settings(
    after: AfterSeconds,
    non_stream: bool,
    stream: bool,
    probe: bool,
    first_token: float,
    delay: float | None,
) -> None:
    got = hedge_delay(
        HedgeStats(),
        A,
        first_token_seconds=first_token,
        after_seconds=after,
        non_stream=non_stream,
        stream=stream,
        probe=probe,
    )
    assert got == delay


# -- the budget ------------------------------------------------------------------------------


def test_a_fresh_gateway_may_hedge_its_first_request() -> None:
    """The slow-first-token test on a fresh gateway: one request so far, and it hedges."""
    budget = HedgeBudget(0.1)
    budget.record_request(0.0)
    assert budget.allow(5.0)
    budget.record_request(6.0)
    assert not budget.allow(11.0)  # 1 hedge of 2 requests: the floor of 1 is used


@pytest.mark.parametrize(
    ("fraction", "requests", "hedges_allowed"),
    [
        (0.1, 1, 1),
        (0.1, 10, 1),
        (0.1, 100, 10),
        (0.1, 500, 50),
        (0.25, 100, 25),
        (1.0, 30, 30),
        (0.0, 100, 0),  # 0 is off, no floor
    ],
)
def test_budget_bounds_the_share_of_requests_hedged_in_a_minute(
    fraction: float, requests: int, hedges_allowed: int
) -> None:
    """Every request of one minute wants a hedge (after all have started): the allowed count is
    max(1, fraction * requests)."""
    budget = HedgeBudget(fraction)
    for i in range(requests):
        budget.record_request(i * 50.0 / requests)
    granted = sum(budget.allow(55.0) for _ in range(requests))
    assert granted == hedges_allowed
    assert budget.counts(55.0) == (requests, hedges_allowed)


def test_budget_interleaved_requests_and_hedges_stay_under_the_fraction() -> None:
    """Each request asks for a hedge as it starts: in steady traffic a tenth get one, every
    sliding minute."""
    budget = HedgeBudget(0.1)
    granted_at: list[float] = []
    for i in range(600):  # 10 requests a second for a minute
        now = i / 10
        budget.record_request(now)
        if budget.allow(now):
            granted_at.append(now)
    assert 59 <= len(granted_at) <= 61
    requests, hedges = budget.counts(59.9)
    assert hedges <= max(1, 0.1 * requests) + 1e-9


@pytest.mark.parametrize(
    ("later", "requests_left", "hedges_left"),
    [(59.5, 10, 1), (60.5, 9, 1), (61.5, 0, 0), (3600.0, 0, 0)],
)
def test_budget_forgets_what_is_more_than_a_minute_old(
    later: float, requests_left: int, hedges_left: int
) -> None:
    budget = HedgeBudget(0.1)
    for i in range(10):
        budget.record_request(i * 0.1 + (1.0 if i else 0.0))  # one at 0 s, nine at 1.1-1.9 s
    assert budget.allow(1.95)
    assert budget.counts(later) == (requests_left, hedges_left)


def test_after_a_quiet_minute_the_floor_allows_a_hedge_again() -> None:
    budget = HedgeBudget(0.1)
    for i in range(5):
        budget.record_request(float(i))
    assert budget.allow(5.0)
    assert not budget.allow(6.0)
    budget.record_request(70.0)
    assert budget.allow(70.5)


# -- the silent-primary flap, with hedged probes, as a pure simulation -----------------------


def test_silent_primary_probes_cost_at_most_the_hedge_delay() -> None:
    """The primary is silent until t=60, then answers at once; the fallback answers in 0.1 s;
    a request every 4 s, streamed, default settings, events applied in time order. A probe is
    hedged after the (cold) 5 s delay and, outrun, counts as a failure; a closed primary is
    hedged when the budget allows, else it meets the 15 s first-token timeout (the requests in
    flight meanwhile meet the same outage and do not double the open time). Every request is
    served, the median added time is at most the hedge delay, and the primary serves again
    within 15 s of its recovery."""
    first_token, fallback_s, recovers_at = 15.0, 0.1, 60.0
    breaker, stats, budget = Breaker(), HedgeStats(), HedgeBudget(0.1)
    pending: list[tuple[float, float, ProbeTicket | None]] = []  # (fails at, started, probe)
    added: list[float] = []
    served: list[tuple[float, str]] = []

    def settle(until: float) -> None:
        for event in sorted(e for e in pending if e[0] <= until):
            pending.remove(event)
            at, started, ticket = event
            breaker.fail(A, at, started=started, reason="timeout")
            if ticket is not None:
                breaker.release_probe(ticket)

    for i in range(25):
        t = i * 4.0
        settle(t)
        budget.record_request(t)
        first = breaker.plan([A, B], t)[0]
        ticket = breaker.acquire_probe(first.ref, t) if first.probe else None
        if first.ref == B:
            served.append((t, "B"))
            added.append(0.0)
            continue
        if t >= recovers_at:
            stats.observe(A, 0.0)
            breaker.succeed(A)
            if ticket is not None:
                breaker.release_probe(ticket)
            served.append((t, "A"))
            added.append(0.0)
            continue
        delay = hedge_delay(
            stats,
            A,
            first_token_seconds=first_token,
            after_seconds=None,
            non_stream=False,
            stream=True,
            probe=first.probe,
        )
        assert delay is not None
        if first.probe or budget.allow(t + delay):
            stats.observe(A, delay)  # the loser's wait, a lower bound
            if ticket is not None:
                pending.append((t + delay + fallback_s, t, ticket))  # an outrun probe fails
            added.append(delay)
        else:
            pending.append((t + first_token, t, None))
            added.append(first_token)
        served.append((t, "B"))
    settle(200.0)
    assert len(served) == 25
    back = min(at for at, who in served if who == "A")
    assert recovers_at <= back <= recovers_at + 15.0
    assert all(who == "A" for at, who in served if at >= back)
    assert sorted(added)[len(added) // 2] <= 5.0  # the median added time: at most the delay
    assert max(added) <= first_token
