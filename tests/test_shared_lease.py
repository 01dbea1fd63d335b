"""Budget leases (pure, ``gateway.shared.lease``): what a replica asks for, when a lease admits
on its own, how an answered request's cost comes out of it, and when it is handed back."""

from __future__ import annotations

import pytest

from gateway.shared.lease import IDLE_S, MIN_REQUESTS, SLICES, Leases, want

NANO = 1_000_000_000


@pytest.mark.parametrize(
    ("limit", "average", "expected"),
    [
        (-1, 1000.0, (0, 0)),  # no limit: no lease
        (10 * NANO, None, (0, 0)),  # no cost seen yet: the admission is exact
        (10 * NANO, 1_000_000.0, (10 * NANO // SLICES, 1_000_000 * MIN_REQUESTS)),
        (10 * NANO, 0.0, (10 * NANO // SLICES, 1)),  # unpriced requests: any grant will do
        (10, 0.0, (1, 1)),  # a limit smaller than the slices: one nano-dollar
    ],
)
def test_the_lease_asked_for_is_a_slice_and_worth_a_few_requests(
    limit: int, average: float | None, expected: tuple[int, int]
) -> None:
    assert want(limit, average) == expected


@pytest.mark.parametrize(
    ("granted", "limits", "covered"),
    [
        ({}, [100, -1], False),  # nothing granted
        ({"d": 5}, [100, -1], True),  # the only limited key has lease left
        ({"d": 5}, [100, 100], False),  # the monthly key has none
        ({"d": 5, "m": 5}, [100, 100], True),
        ({"d": 5}, [-1, -1], False),  # no limit at all: nothing to lease
    ],
)
def test_a_lease_admits_when_every_limited_key_has_some_left(
    granted: dict[str, int], limits: list[int], covered: bool
) -> None:
    leases = Leases()
    for name, amount in granted.items():
        leases.granted(name, amount, 60, now=0.0)
    assert leases.covers(["d", "m"], limits, now=1.0) is covered


@pytest.mark.parametrize(
    ("held", "cost", "beyond", "left"),
    [
        (100, 30, [0, 30], 70),  # "m" holds no lease: all of it goes to Redis there
        (100, 100, [0, 100], 0),
        (20, 30, [10, 30], 0),  # the last of a lease: the rest goes to Redis
        (0, 30, [30, 30], 0),
        (100, 0, [0, 0], 100),  # an unpriced request takes nothing
    ],
)
def test_a_cost_comes_out_of_the_lease_first(
    held: int, cost: int, beyond: list[int], left: int
) -> None:
    leases = Leases()
    leases.granted("d", held, 60, now=0.0)
    assert leases.spend(["d", "m"], cost) == beyond
    assert leases.held().get("d", 0) == left


def test_the_average_cost_follows_the_recent_requests() -> None:
    leases = Leases()
    assert leases.average_cost is None
    leases.spend(["d"], 100)
    assert leases.average_cost == 100.0
    for _ in range(50):
        leases.spend(["d"], 0)
    assert leases.average_cost is not None and leases.average_cost < 1.0


def test_a_lease_no_admission_used_for_the_idle_time_is_handed_back_with_its_rest() -> None:
    leases = Leases()
    leases.granted("d", 100, 172800, now=0.0)
    leases.granted("m", 50, 3000000, now=0.0)
    leases.spend(["d"], 30)
    assert leases.covers(["m"], [10], now=IDLE_S - 0.5)  # "m" used; "d" not since 0
    assert leases.release_idle(now=IDLE_S) == {"d": (70, 172800)}
    assert leases.held() == {"m": 50}
    assert leases.release_all() == {"m": (50, 3000000)}
    assert leases.held() == {}


def test_a_used_up_lease_is_dropped_without_handing_anything_back() -> None:
    leases = Leases()
    leases.granted("d", 10, 60, now=0.0)
    leases.spend(["d"], 10)
    assert leases.release_all() == {}
