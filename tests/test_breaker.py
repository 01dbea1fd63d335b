"""The breaker of SPEC §9 as tables, on an injected clock: open times, probes, plans, restarts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gateway.breaker import (
    Breaker,
    Description,
    Planned,
    State,
    failure_reason,
    open_seconds,
)
from gateway.refs import ModelRef, parse_ref

A = parse_ref("huggingface/org/model-a")
B = parse_ref("huggingface/org/model-b")
C = parse_ref("huggingface/org/model-c:cheapest")


# -- open times ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("openings", "retry_after", "base", "maximum", "seconds"),
    [
        (1, None, 5.0, 15.0, 5.0),
        (2, None, 5.0, 15.0, 10.0),
        (3, None, 5.0, 15.0, 15.0),  # 20 capped at maxSeconds
        (9, None, 5.0, 15.0, 15.0),
        (0, None, 5.0, 15.0, 5.0),
        (1, 30.0, 5.0, 15.0, 30.0),  # a longer Retry-After wins, past maxSeconds too
        (1, 2.0, 5.0, 15.0, 5.0),  # a shorter one does not shorten it
        (3, 12.0, 5.0, 15.0, 15.0),
        (2, None, 1.0, 60.0, 2.0),  # the settings count
        (7, None, 1.0, 60.0, 60.0),
        (10_000, None, 5.0, 15.0, 15.0),  # no overflow after a very long outage
    ],
)
def test_open_seconds(
    openings: int, retry_after: float | None, base: float, maximum: float, seconds: float
) -> None:
    assert open_seconds(openings, retry_after, base_seconds=base, max_seconds=maximum) == seconds


def test_consecutive_openings_double_up_to_max_seconds() -> None:
    br = Breaker()
    now, lengths = 1000.0, []
    for _ in range(5):
        until = br.fail(A, now)
        lengths.append(until - now)
        now = until + 0.5  # half-open: probed, and failed again
        assert br.acquire_probe(A, now) is not None
    assert lengths == [5.0, 10.0, 15.0, 15.0, 15.0]


def test_a_success_closes_and_resets_the_doubling() -> None:
    br = Breaker()
    assert br.fail(A, 0.0) == 5.0
    assert br.fail(A, 6.0) == 16.0  # second opening: 10 s
    br.succeed(A)
    assert br.state(A, 7.0) is State.CLOSED
    assert br.fail(A, 20.0) == 25.0  # back to 5 s


@pytest.mark.parametrize(
    ("now", "state"),
    [(0.0, State.OPEN), (4.99, State.OPEN), (5.0, State.HALF_OPEN), (500.0, State.HALF_OPEN)],
)
def test_open_then_half_open_by_itself(now: float, state: State) -> None:
    """Nobody has to clear an open model: at its end it is half-open."""
    br = Breaker()
    br.fail(A, 0.0)
    assert br.state(A, now) is state
    assert br.state(B, now) is State.CLOSED


def test_retry_after_30_keeps_a_model_open_30_s_regardless_of_max_seconds() -> None:
    br = Breaker(5.0, 15.0)
    assert br.fail(A, 100.0, 30.0, reason="429 Retry-After 30") == 130.0
    assert [p.ref for p in br.plan([A, B], 129.9)] == [B]
    assert br.plan([A, B], 130.0) == [Planned(A, probe=True), Planned(B)]
    assert br.describe(A, 110.0) == Description(State.OPEN, "429 Retry-After 30", 130.0)


@pytest.mark.parametrize(
    ("started", "now", "retry_after", "until"),
    [
        (99.0, 101.0, None, 105.0),  # set out before the opening began: the same outage
        (99.0, 101.0, 30.0, 131.0),  # ... though a longer Retry-After extends it
        (99.0, 101.0, 2.0, 105.0),
        (99.0, 106.0, None, 105.0),  # half-open meanwhile: an old failure does not re-open it
        (99.0, 106.0, 10.0, 116.0),  # ... unless it carries a Retry-After reaching past now
        (100.5, 101.0, None, 111.0),  # set out while open (every model was): doubles
        (None, 101.0, None, 111.0),  # no start given: counts
        (105.5, 106.0, None, 116.0),  # a probe that set out half-open and failed: doubles
    ],
)
def test_a_failure_already_in_flight_does_not_double_the_open_time(
    started: float | None, now: float, retry_after: float | None, until: float
) -> None:
    br = Breaker()
    assert br.fail(A, 100.0, started=95.0) == 105.0
    assert br.fail(A, now, retry_after, started=started) == until
    assert br.describe(A, now).until == until


def test_many_requests_in_flight_meet_one_outage() -> None:
    """Ten requests failing together open a model for 5 s; a real second failure, 10 s."""
    br = Breaker()
    for i in range(10):
        br.fail(A, 100.0 + i * 0.01, started=99.0)
    assert br.cooling_until(A, 101.0) == 105.0
    assert br.fail(A, 106.0, started=105.5) == 116.0


# -- plans and probes ------------------------------------------------------------------------


def test_plan_skips_open_models_in_chain_order() -> None:
    br = Breaker()
    br.fail(B, 0.0)
    assert br.plan([A, B, C], 1.0) == [Planned(A), Planned(C)]
    assert br.plan([A, B, C], 5.0) == [Planned(A), Planned(B, probe=True), Planned(C)]


def test_plan_every_model_open_tries_the_one_that_closes_first() -> None:
    br = Breaker()
    br.fail(A, 0.0, 50.0)
    br.fail(B, 0.0)  # until 5
    br.fail(C, 0.0, 30.0)
    assert br.plan([A, B, C], 1.0) == [Planned(B)]
    assert br.soonest_end([A, B, C], 1.0) == 5.0
    assert set(br.cooling(1.0)) == {A, B, C}


def test_plan_every_model_unavailable_prefers_a_half_open_one_being_probed() -> None:
    br = Breaker()
    br.fail(A, 0.0)
    br.fail(B, 0.0, 60.0)
    assert br.acquire_probe(A, 6.0) is not None
    assert br.plan([A, B], 7.0) == [Planned(A)]  # tried anyway, without the probe


def test_plan_empty_chain_and_repeated_refs() -> None:
    br = Breaker()
    assert br.plan([], 0.0) == []
    assert br.plan([A, B, A], 0.0) == [Planned(A), Planned(B)]


def test_one_probe_at_a_time_with_concurrent_planners() -> None:
    """Two requests plan at once and both see the probe; only one gets it, the other skips the
    model; while the probe is in flight later planners do not even list it."""
    br = Breaker()
    br.fail(A, 0.0)
    first, second = br.plan([A, B], 5.0), br.plan([A, B], 5.0)
    assert first == second == [Planned(A, probe=True), Planned(B)]
    ticket = br.acquire_probe(A, 5.0)
    assert ticket is not None
    assert br.acquire_probe(A, 5.01) is None
    assert br.plan([A, B], 6.0) == [Planned(B)]
    assert br.state(A, 6.0) is State.HALF_OPEN


@pytest.mark.parametrize(
    ("end", "state_after", "plan_after"),
    [
        ("succeed", State.CLOSED, [Planned(A), Planned(B)]),
        ("fail", State.OPEN, [Planned(B)]),
        ("release", State.HALF_OPEN, [Planned(A, probe=True), Planned(B)]),
    ],
)
def test_how_a_probe_ends(end: str, state_after: State, plan_after: list[Planned]) -> None:
    """Success closes, failure re-opens (doubled), an abandoned probe frees the slot."""
    br = Breaker()
    br.fail(A, 0.0)
    ticket = br.acquire_probe(A, 5.0)
    assert ticket is not None
    if end == "succeed":
        br.succeed(A)
    elif end == "fail":
        assert br.fail(A, 6.0, started=5.0) == 16.0
    br.release_probe(ticket)  # always, in a finally: a no-op after succeed / fail
    assert br.state(A, 7.0) is state_after
    assert br.plan([A, B], 7.0) == plan_after


def test_a_stale_ticket_does_not_release_a_newer_probe() -> None:
    br = Breaker(probe_timeout=30.0)
    br.fail(A, 0.0)
    old = br.acquire_probe(A, 5.0)
    assert old is not None
    new = br.acquire_probe(A, 36.0)  # the old holder never came back: its lease ran out
    assert new is not None
    br.release_probe(old)
    assert br.acquire_probe(A, 37.0) is None  # the new probe still holds the slot
    br.release_probe(new)
    assert br.acquire_probe(A, 38.0) is not None


@pytest.mark.parametrize(("state", "now"), [("closed", 1.0), ("open", 1.0)])
def test_acquire_probe_only_on_a_half_open_model(state: str, now: float) -> None:
    br = Breaker()
    if state == "open":
        br.fail(A, 0.0)
    assert br.acquire_probe(A, now) is None


# -- describe, reasons -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "retry_after", "text"),
    [
        ([503, 503], None, "503 x2"),
        (["timeout"], None, "timeout"),
        ([429], 30.0, "429 Retry-After 30"),
        ([503, 429], 1.5, "503, 429 Retry-After 1.5"),
        ([502, 502, "reset"], None, "502 x2, reset"),
        ([], None, ""),
        ([], 30.0, "Retry-After 30"),
    ],
)
def test_failure_reason(outcomes: list[int | str], retry_after: float | None, text: str) -> None:
    assert failure_reason(outcomes, retry_after) == text


def test_describe_for_the_status_page() -> None:
    br = Breaker()
    assert br.describe(A, 0.0) == Description(State.CLOSED, "", None)
    br.fail(A, 0.0, reason="503 x2")
    assert br.describe(A, 1.0) == Description(State.OPEN, "503 x2", 5.0)
    assert br.describe(A, 6.0) == Description(State.HALF_OPEN, "503 x2", 5.0)
    br.fail(B, 0.0)
    assert br.describe(B, 1.0).reason == "failed"


# -- bounded entries -------------------------------------------------------------------------


def _ref(i: int) -> ModelRef:
    return parse_ref(f"huggingface/org/extra-{i}")


def test_refs_not_configured_are_kept_in_an_lru() -> None:
    """A client naming many models cannot grow the state without bound; the configured models
    are never dropped."""
    br = Breaker(configured=[A, B], max_entries=3)
    br.fail(A, 0.0)
    br.fail(B, 0.0)
    for i in range(10):
        br.fail(_ref(i), 0.0)
    br.fail(_ref(7), 1.0, started=1.0)  # touched again: the most recent
    kept = {r for r in (_ref(i) for i in range(10)) if br.state(r, 2.0) is not State.CLOSED}
    assert kept == {_ref(8), _ref(9), _ref(7)}
    assert br.state(A, 2.0) is State.OPEN and br.state(B, 2.0) is State.OPEN


def test_configure_applies_new_durations_from_the_next_opening() -> None:
    br = Breaker(configured=[A])
    br.fail(A, 0.0)
    br.configure(1.0, 2.0, configured=[A])
    assert br.cooling_until(A, 1.0) == 5.0  # the current opening keeps its end
    assert br.fail(A, 6.0) == 8.0  # second opening: 2 s, capped at the new max


# -- persistence -----------------------------------------------------------------------------

WALL0 = 1_800_000_000.0  # wall-clock seconds before the restart
MONO0 = 5_000.0  # the old process's monotonic clock
MONO1 = 12.0  # the new process's monotonic clock starts anew


@pytest.mark.parametrize(
    ("down_for", "state", "remaining"),
    [
        (5.0, State.OPEN, 25.0),  # restarted inside the Retry-After window: still skipped
        (29.0, State.OPEN, 1.0),
        (31.0, State.HALF_OPEN, 0.0),  # ended a moment ago: probed by the first request
        (44.0, State.HALF_OPEN, 0.0),
        (46.0, State.CLOSED, None),  # ended more than maxSeconds ago: no longer current
        (3600.0, State.CLOSED, None),
    ],
)
def test_snapshot_and_restore_across_a_restart(
    down_for: float, state: State, remaining: float | None
) -> None:
    old = Breaker()
    old.fail(A, MONO0, 30.0, reason="429 Retry-After 30")
    rows = old.snapshot(WALL0, MONO0)
    assert rows == [
        {
            "ref": str(A),
            "openings": 1,
            "since": WALL0,
            "until": WALL0 + 30.0,
            "reason": "429 Retry-After 30",
        }
    ]
    new = Breaker()
    kept = new.restore(rows, WALL0 + down_for, MONO1)
    assert kept == (0 if state is State.CLOSED else 1)
    assert new.state(A, MONO1) is state
    view = new.describe(A, MONO1)
    assert (None if view.until is None else view.until - MONO1) == remaining
    if state is not State.CLOSED:
        assert view.reason == "429 Retry-After 30"


def test_restored_entry_keeps_its_opening_count() -> None:
    """A model still dead after a restart re-opens doubled, not from scratch."""
    old = Breaker()
    old.fail(A, MONO0)
    old.fail(A, MONO0 + 6.0)  # second opening, 10 s
    new = Breaker()
    new.restore(old.snapshot(WALL0, MONO0 + 6.0), WALL0 + 20.0, MONO1)
    ticket = new.acquire_probe(A, MONO1)
    assert ticket is not None
    assert new.fail(A, MONO1 + 1.0, started=MONO1) == MONO1 + 1.0 + 15.0


def test_restore_never_gives_more_than_the_opening_length() -> None:
    """The wall clock went back an hour: the entry is open for at most its own length."""
    old = Breaker()
    old.fail(A, MONO0)
    new = Breaker()
    new.restore(old.snapshot(WALL0, MONO0), WALL0 - 3600.0, MONO1)
    assert new.cooling_until(A, MONO1) == MONO1 + 5.0


def test_restore_skips_malformed_rows() -> None:
    good = {"ref": str(A), "openings": 1, "since": WALL0, "until": WALL0 + 10, "reason": "503"}
    rows: list[dict[str, object]] = [
        {"ref": "not a ref", "openings": 1, "since": WALL0, "until": WALL0 + 10},
        {"ref": str(B), "openings": "x", "since": WALL0, "until": WALL0 + 10},
        {"ref": str(B), "openings": 0, "since": WALL0, "until": WALL0 + 10},
        {"ref": str(B), "openings": 1, "since": WALL0, "until": float("nan")},
        {"ref": str(B), "openings": 1, "since": WALL0 + 10, "until": WALL0},
        {"ref": str(B)},
        {"ref": 5, "openings": 1, "since": WALL0, "until": WALL0 + 10},
        good,
    ]
    br = Breaker()
    assert br.restore(rows, WALL0 + 1.0, MONO1) == 1
    assert br.cooling_until(A, MONO1) == MONO1 + 9.0
    assert br.state(B, MONO1) is State.CLOSED


def test_probes_do_not_survive_a_restart() -> None:
    old = Breaker()
    old.fail(A, MONO0)
    assert old.acquire_probe(A, MONO0 + 5.0) is not None
    new = Breaker()
    new.restore(old.snapshot(WALL0, MONO0 + 5.0), WALL0 + 1.0, MONO1)
    assert new.acquire_probe(A, MONO1) is not None


# -- the flap scenario, as a pure simulation -------------------------------------------------


@dataclass
class _Sim:
    """One request every ``every`` s for ``duration`` s over chain [A, B]; A answers 503 (twice:
    1 + retries) until ``recovers_at``, B always answers. Attempts take no time."""

    every: float = 4.0
    duration: float = 100.0
    recovers_at: float = 60.0
    breaker: Breaker = field(default_factory=Breaker)
    served: list[tuple[float, ModelRef]] = field(default_factory=list)

    def run(self) -> None:
        t = 0.0
        while t < self.duration:
            self.served.append((t, self._request(t)))
            t += self.every

    def _request(self, now: float) -> ModelRef:
        for planned in self.breaker.plan([A, B], now):
            ticket = self.breaker.acquire_probe(planned.ref, now) if planned.probe else None
            if planned.probe and ticket is None:
                continue
            try:
                if planned.ref == B or now >= self.recovers_at:
                    self.breaker.succeed(planned.ref)
                    return planned.ref
                self.breaker.fail(planned.ref, now, started=now, reason="503 x2")
            finally:
                if ticket is not None:
                    self.breaker.release_probe(ticket)
        raise AssertionError(f"no model served the request at t={now}")


def test_flap_the_primary_serves_again_within_one_open_period_of_recovery() -> None:
    """503 from t=0 to 60 s, then healthy; a request every 4 s: every request is served, the
    primary is probed at most every maxSeconds while down and serves again within 15 s of its
    recovery (the old 10 → 20 → 40 s cooldown left it unused 16 s after it came back)."""
    sim = _Sim()
    sim.run()
    assert len(sim.served) == 25
    back = min(t for t, ref in sim.served if ref == A and t >= sim.recovers_at)
    assert back - sim.recovers_at <= 15.0
    assert back == 68.0  # probes at 0, 8, 20, 36, 52 failed; the one at 68 closed it
    assert all(ref == A for t, ref in sim.served if t >= back)
    assert [t for t, ref in sim.served if ref == A and t < sim.recovers_at] == []


# -- the listener (how the other replicas hear of this breaker's transitions) -------------------


class Heard:
    """A ``BreakerListener`` that keeps what it was told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, ...]] = []

    def opened(self, ref: ModelRef, until: float, since: float, openings: int, reason: str) -> None:
        self.told.append(("opened", str(ref), f"{until:g}", f"{since:g}", str(openings), reason))

    def closed(self, ref: ModelRef) -> None:
        self.told.append(("closed", str(ref)))


def test_the_listener_hears_openings_extensions_and_closings_made_here_only() -> None:
    """An opening and a longer Retry-After on it are told (with the open end, start, count and
    reason); a failure that changes nothing, a success of a closed model, a ``restore`` and a
    ``succeed(announce=False)`` (news from another replica) are not; a closing is told once."""
    breaker = Breaker(5, 15)
    heard = Heard()
    breaker.listener = heard
    breaker.fail(A, 100.0, reason="503")
    breaker.fail(A, 101.0, started=99.0)  # set out before the opening: nothing changes
    breaker.fail(A, 102.0, 30, started=99.0, reason="429 Retry-After 30")  # extended
    breaker.succeed(B)  # closed already
    breaker.restore(
        [{"ref": str(B), "openings": 1, "since": 0, "until": 50, "reason": "x"}], 10, 100
    )
    breaker.succeed(B, announce=False)
    breaker.succeed(A)
    breaker.succeed(A)
    assert heard.told == [
        ("opened", str(A), "105", "100", "1", "503"),
        ("opened", str(A), "132", "100", "1", "429 Retry-After 30"),
        ("closed", str(A)),
    ]
