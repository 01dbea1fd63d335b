"""Shared state across replicas (SPEC §13) against a real ``redis-server``: openings seen by the
other replicas within 100 ms, late joiners, the budget under concurrency, a Redis killed or
slowed mid-run, and a TTL on every key the layer writes."""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.breaker import Breaker
from gateway.hedging import HedgeStats
from gateway.refs import parse_ref
from gateway.shared import BreakerMirror, Listener, UsageDelta, UsageRow
from gateway.shared.redis_state import RedisState
from tests.gateway_harness import eventually
from tests.redis_harness import (
    REDIS_SERVER,
    SKIP_REASON,
    RedisServer,
    delay_proxy,
    make_tls_files,
    redis_server,
)

__all__ = ["redis_server"]  # the fixture, used by name

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)

PRIMARY = "huggingface/org/model-a"
FALLBACK = "huggingface/org/model-b"
PERIODS = {"daily": "2026-12-01", "monthly": "2026-12"}


class Recorder:
    """A ``Listener`` that keeps what it was told, with the arrival time of each opening."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, float, str, int]] = []
        self.closed: list[str] = []
        self.ttft: dict[str, list[float]] = {}
        self.arrivals: asyncio.Queue[float] = asyncio.Queue()

    def on_open(self, ref: str, until_wall: float, reason: str, openings: int) -> None:
        self.opened.append((ref, until_wall, reason, openings))
        self.arrivals.put_nowait(time.perf_counter())

    def on_close(self, ref: str) -> None:
        self.closed.append(ref)
        self.arrivals.put_nowait(time.perf_counter())

    def on_ttft(self, ref: str, samples: Sequence[float]) -> None:
        self.ttft.setdefault(ref, []).extend(samples)


def state(url: str, name: str, **kwargs: Any) -> RedisState:
    kwargs.setdefault("retry_first", 0.1)
    kwargs.setdefault("retry_max", 0.3)
    kwargs.setdefault("sync_seconds", 3600.0)  # the tests call sync() themselves
    # Generous on a loaded test machine; the tests of the timeout itself pass 0.05.
    kwargs.setdefault("timeout", 0.5)
    return RedisState(url, "test:", replica=name, **kwargs)


@asynccontextmanager
async def started(
    url: str, name: str, listener: Listener, **kwargs: Any
) -> AsyncIterator[RedisState]:
    replica = state(url, name, **kwargs)
    await replica.start(listener)
    try:
        yield replica
    finally:
        await replica.close()


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[RedisState, RedisState]]:
    """Two started replicas on one Redis, each with a ``Recorder`` (``RECORDED[name]``)."""
    RECORDED.clear()
    async with (
        started(redis_server.url, "a", RECORDED.setdefault("a", Recorder())) as a,
        started(redis_server.url, "b", RECORDED.setdefault("b", Recorder())) as b,
    ):
        yield a, b


RECORDED: dict[str, Recorder] = {}


def recorder(s: RedisState) -> Recorder:
    return RECORDED[s.replica]


def keys_without_ttl(server: RedisServer) -> dict[str, int]:
    """Every key in the server with its TTL, for those that have none (or vanished)."""
    reply = server.command("KEYS", "*").decode()
    names = [line for line in reply.split("\r\n")[1:] if line and not line.startswith("$")]
    ttls = {name: int(server.command("TTL", name).decode().strip(":\r\n")) for name in names}
    return {name: ttl for name, ttl in ttls.items() if ttl < 0}


def key_count(server: RedisServer) -> int:
    return int(server.command("DBSIZE").decode().strip(":\r\n"))


# -- breaker transitions ----------------------------------------------------------------------


async def test_an_opening_reaches_the_other_replica_within_100_ms(
    pair: tuple[RedisState, RedisState],
) -> None:
    """A publishes 20 openings one after the other; B's listener receives each within 100 ms
    (the figure is printed), with its end, reason and count; A never hears its own."""
    a, b = pair
    delays = []
    for i in range(20):
        until = time.time() + 10
        t0 = time.perf_counter()
        await a.publish_open(f"{PRIMARY}{i}", until, "503 x2", openings=2)
        arrived = await asyncio.wait_for(recorder(b).arrivals.get(), 1.0)
        delays.append(arrived - t0)
        assert recorder(b).opened[-1] == (f"{PRIMARY}{i}", until, "503 x2", 2)
    print(
        f"\nopening propagation A→B over 20: median {statistics.median(delays) * 1000:.2f} ms, "
        f"max {max(delays) * 1000:.2f} ms"
    )
    assert max(delays) < 0.1
    assert recorder(a).opened == []


async def test_a_closing_reaches_the_other_replicas_breaker(
    redis_server: RedisServer, pair: tuple[RedisState, RedisState]
) -> None:
    """Through ``BreakerMirror``: once A opens the primary, B's real ``Breaker`` plans the
    fallback only (no attempt on the primary); once A's probe closes it, B plans the primary
    again."""
    a, _ = pair
    breaker = Breaker(configured=[parse_ref(PRIMARY), parse_ref(FALLBACK)])
    async with started(redis_server.url, "mirror", BreakerMirror(breaker)):
        await _open_then_close(a, breaker)


async def _open_then_close(a: RedisState, breaker: Breaker) -> None:
    chain = [parse_ref(PRIMARY), parse_ref(FALLBACK)]
    assert [p.ref for p in breaker.plan(chain, time.monotonic())] == chain

    await a.publish_open(PRIMARY, time.time() + 5, "503 x2")
    await eventually(lambda: breaker.cooling(time.monotonic()) != [], 0.1)
    assert [p.ref for p in breaker.plan(chain, time.monotonic())] == [parse_ref(FALLBACK)]
    assert breaker.describe(parse_ref(PRIMARY), time.monotonic()).reason == "503 x2"

    await a.publish_close(PRIMARY)
    await eventually(lambda: breaker.cooling(time.monotonic()) == [], 0.1)
    assert [p.ref for p in breaker.plan(chain, time.monotonic())] == chain


async def test_a_replica_that_joins_late_knows_the_current_openings(
    redis_server: RedisServer, pair: tuple[RedisState, RedisState]
) -> None:
    """A replica started after an opening (and after another one closed) is told of the one
    still open when it connects: the key is read once at (re)connection."""
    a, _ = pair
    until = time.time() + 30
    await a.publish_open(PRIMARY, until, "timeout")
    await a.publish_open(FALLBACK, time.time() + 30, "503")
    await a.publish_close(FALLBACK)
    seen = Recorder()
    async with started(redis_server.url, "late", seen):
        assert seen.opened == [(PRIMARY, until, "timeout", 1)]


# -- hedging statistics -------------------------------------------------------------------------


async def test_times_to_first_chunk_are_shared_at_each_sync(
    redis_server: RedisServer, pair: tuple[RedisState, RedisState]
) -> None:
    """A's observations reach B's ``HedgeStats`` at the next sync (one round trip each, none per
    request); A is not handed its own back, and a second sync brings nothing twice."""
    a, _ = pair
    stats = HedgeStats()
    async with started(redis_server.url, "b2", BreakerMirror(Breaker(), stats)) as b:
        b.track_refs([PRIMARY])
        samples = [0.2 + i / 100 for i in range(25)]
        for seconds in samples:
            a.observe_ttft(PRIMARY, seconds)
        await a.sync()
        await b.sync()
        assert stats.count(parse_ref(PRIMARY)) == 25
        assert stats.p90(parse_ref(PRIMARY)) == pytest.approx(sorted(samples)[22])
        await b.sync()
        assert stats.count(parse_ref(PRIMARY)) == 25
    await a.sync()
    assert recorder(a).ttft == {}


# -- budgets ------------------------------------------------------------------------------------


async def _budget_race(
    a: RedisState, b: RedisState, *, budget_usd: float, cost_usd: float, requests: int
) -> dict[str, Any]:
    """``requests`` requests from 10 concurrent clients alternating between the two replicas:
    admission, a short upstream call, then the cost added. Returns the figures."""
    served = 0
    in_flight = 0  # asked for admission and not finished
    in_flight_when_reached: int | None = None
    next_request = iter(range(requests))
    rng = random.Random(15)

    async def client() -> None:
        nonlocal served, in_flight, in_flight_when_reached
        for n in next_request:
            replica = a if n % 2 == 0 else b
            in_flight += 1
            admission = await replica.try_spend(PERIODS, {"daily": budget_usd, "monthly": None})
            assert admission.source == "redis"
            if not admission.admitted:
                assert admission.exceeded == "daily"
                in_flight -= 1
                continue
            served += 1
            await asyncio.sleep(rng.uniform(0.001, 0.004))
            usage = UsageDelta(PRIMARY, "novita", 10, 20, cost_usd)
            after = await replica.add_spend(PERIODS, usage)
            in_flight -= 1
            assert after is not None
            if in_flight_when_reached is None and after["daily"] >= budget_usd - 1e-12:
                # this request is done: the others still in flight were admitted before
                in_flight_when_reached = in_flight

    await asyncio.gather(*(client() for _ in range(10)))
    return {"served": served, "in_flight_when_reached": in_flight_when_reached}


async def test_a_shared_budget_serves_at_most_the_budget_plus_the_requests_in_flight(
    redis_server: RedisServer, pair: tuple[RedisState, RedisState]
) -> None:
    """A daily budget worth 30 requests across two replicas, 100 requests from 10 concurrent
    clients: at most 30 + those in flight when the spend reached it are served, the shared
    spend is exactly served x cost (integer nano-USD), both replicas then refuse, and the
    same run with a budget per replica (two prefixes) serves about twice as many."""
    a, b = pair
    figures = await _budget_race(a, b, budget_usd=0.30, cost_usd=0.01, requests=100)
    served, in_flight = figures["served"], figures["in_flight_when_reached"]
    trips = {n: a.round_trips[n] + b.round_trips[n] for n in ("try_spend", "flush_spend")}
    print(f"\nshared budget of 30: served {served}, in flight when reached {in_flight}, "
          f"Redis round trips {trips} for 100 requests")  # fmt: skip
    # A budget worth 30 requests is too small for a lease: every admission is one round trip,
    # and the answered requests' spends are written at once, coalesced when they coincide.
    assert trips["try_spend"] == 100
    assert 1 <= trips["flush_spend"] <= served
    assert in_flight is not None
    assert 30 <= served <= 30 + in_flight
    assert in_flight <= 9  # 10 clients, the one that reached it is done
    for replica in (a, b):
        refusal = await replica.try_spend(PERIODS, {"daily": 0.30, "monthly": None})
        assert refusal.exceeded == "daily"
        assert refusal.spent_usd["daily"] == pytest.approx(served * 0.01, abs=1e-12)
    assert redis_server.command("GET", f"test:spend:daily:{PERIODS['daily']}").endswith(
        f"\r\n{served * 10_000_000}\r\n".encode()
    )
    totals = await a.usage_totals([PERIODS["daily"]])
    assert totals == [UsageRow(PERIODS["daily"], PRIMARY, "novita", served, served * 10,
                               served * 20, pytest.approx(served * 0.01))]  # fmt: skip

    alone_a = RedisState(redis_server.url, "alone-a:", replica="a2", sync_seconds=3600)
    alone_b = RedisState(redis_server.url, "alone-b:", replica="b2", sync_seconds=3600)
    await alone_a.start()
    await alone_b.start()
    try:
        per_replica = await _budget_race(
            alone_a, alone_b, budget_usd=0.30, cost_usd=0.01, requests=100
        )
    finally:
        await alone_a.close()
        await alone_b.close()
    print(f"the same with a budget per replica: served {per_replica['served']}")
    assert per_replica["served"] >= 60
    assert keys_without_ttl(redis_server) == {}


async def test_a_budget_far_from_its_limit_is_admitted_from_leases_and_still_holds(
    redis_server: RedisServer, pair: tuple[RedisState, RedisState]
) -> None:
    """A daily budget worth 2,000 requests, 3,000 requests from 20 concurrent clients
    alternating between two replicas, spends recorded as the gateway does (no wait): most
    admissions come from a lease (no round trip), at most 2,000 + the 20 in flight are served
    and nearly all the budget is; both replicas then refuse; once they close (their leases
    handed back) the shared spend is exactly served x cost."""
    a, b = pair
    budget, cost = 20.0, 0.01
    served, sources = 0, {"redis": 0, "lease": 0, "refused": 0}
    next_request = iter(range(3000))

    async def client() -> None:
        nonlocal served
        for n in next_request:
            replica = a if n % 2 == 0 else b
            admission = await replica.try_spend(PERIODS, {"daily": budget, "monthly": None})
            if not admission.admitted:
                assert (admission.source, admission.exceeded) == ("redis", "daily")
                sources["refused"] += 1
                continue
            sources[admission.source] += 1
            served += 1
            await asyncio.sleep(0)
            replica.record_spend(PERIODS, UsageDelta(PRIMARY, "novita", 10, 20, cost))

    await asyncio.gather(*(client() for _ in range(20)))
    trips = {n: a.round_trips[n] + b.round_trips[n] for n in ("try_spend", "flush_spend")}
    print(f"\nleased budget of 2000: served {served}, admissions {sources}, "
          f"Redis round trips {trips} for 3000 requests")  # fmt: skip
    assert 1990 <= served <= 2000 + 20
    # Nine in ten admitted from a lease: a round trip only for the first requests (no cost
    # known yet), each new lease, the last ~2 % of the budget (too little left to lease), and
    # each refusal.
    assert sources["lease"] >= 0.9 * served
    assert trips["try_spend"] == sources["redis"] + sources["refused"]
    for replica in (a, b):
        refusal = await replica.try_spend(PERIODS, {"daily": budget, "monthly": None})
        assert refusal.exceeded == "daily"
    await a.close()
    await b.close()
    assert redis_server.command("GET", f"test:spend:daily:{PERIODS['daily']}").endswith(
        f"\r\n{served * 10_000_000}\r\n".encode()
    )
    totals = await _read_totals(redis_server)
    assert totals == (served, served * 10, served * 20)


async def _read_totals(server: RedisServer) -> tuple[int, int, int]:
    """(requests, input tokens, output tokens) of PRIMARY/novita in the day's usage hash."""
    async with started(server.url, "reader", Recorder()) as reader:
        [row] = await reader.usage_totals([PERIODS["daily"]])
    return row.requests, row.input_tokens, row.output_tokens


async def test_a_lease_no_admission_uses_is_handed_back(
    redis_server: RedisServer,
) -> None:
    """A replica granted a lease that then sees no request hands it back after the idle time:
    the shared spend is what was spent, and another replica can use all that is left."""
    async with (
        started(redis_server.url, "idle", Recorder(), flush_seconds=0.02, lease_idle_s=0.1) as idle,
        started(redis_server.url, "busy", Recorder(), flush_seconds=0.02) as busy,
    ):
        limits = {"daily": 10.0, "monthly": None}
        usage = UsageDelta(PRIMARY, "novita", 1, 1, 0.001)
        await idle.add_spend(PERIODS, usage)  # a cost known: the next admission takes a lease
        first = await idle.try_spend(PERIODS, limits)
        assert first.source == "redis"
        leased = await busy.try_spend(PERIODS, limits)
        held = _spend(redis_server)
        assert (leased.source, held > 1_000_000) == ("redis", True)  # the lease is counted
        second = await idle.try_spend(PERIODS, limits)
        assert second.source == "lease"
        await eventually(lambda: _spend(redis_server) == 1_000_000, 2.0)


def _spend(server: RedisServer) -> int:
    reply = server.command("GET", f"test:spend:daily:{PERIODS['daily']}").decode()
    return int(reply.split("\r\n")[1]) if reply.startswith("$") and "$-1" not in reply else 0


# -- degradation --------------------------------------------------------------------------------


async def test_redis_killed_mid_run_degrades_each_replica_once_and_both_rejoin(
    redis_server: RedisServer, pair: tuple[RedisState, RedisState]
) -> None:
    """Redis SIGKILLed while both replicas work: no call raises, each logs exactly one
    degradation line and, once Redis is restarted on the same port, one recovery line; then
    openings propagate again and the spend counted during the outage is in the shared spend."""
    a, b = pair
    stop = asyncio.Event()
    calls = {"n": 0, "slowest_degraded": 0.0}

    async def work(replica: RedisState) -> None:
        while not stop.is_set():
            degraded = replica.status() == "degraded"
            t0 = time.perf_counter()
            await replica.try_spend(PERIODS, {"daily": 100.0, "monthly": 1000.0})
            await replica.add_spend(PERIODS, UsageDelta(PRIMARY, "novita", 1, 1, 0.001))
            await replica.publish_open(FALLBACK, time.time() + 1, "503")
            if degraded:
                calls["slowest_degraded"] = max(calls["slowest_degraded"], time.perf_counter() - t0)
            calls["n"] += 1
            await asyncio.sleep(0.005)

    with structlog.testing.capture_logs() as logs:
        workers = [asyncio.create_task(work(r)) for r in (a, b)]
        await asyncio.sleep(0.2)
        redis_server.kill()
        await eventually(lambda: a.status() == b.status() == "degraded", 2.0)
        spent_during = {"n": calls["n"]}
        trips = {**a.round_trips}, {**b.round_trips}
        await asyncio.sleep(0.5)  # both replicas keep serving from local state
        spent_during["n"] = calls["n"] - spent_during["n"]
        # while degraded, no call touched Redis
        assert (a.round_trips, b.round_trips) == trips
        redis_server.restart()
        await eventually(lambda: a.status() == b.status() == "redis", 5.0)
        stop.set()
        await asyncio.gather(*workers)  # re-raises anything a call raised

    events = [(line["event"], line.get("replica")) for line in logs]
    for name in ("a", "b"):
        assert events.count(("shared_state_degraded", name)) == 1
        assert events.count(("shared_state_recovered", name)) == 1
    # at once: far below the timeout (the bound is loose only for a loaded test machine)
    assert calls["slowest_degraded"] < 0.05
    assert spent_during["n"] > 20

    # Shared state resumes: the outage's spend was written, and openings propagate again.
    spend = await a.try_spend(PERIODS, {"daily": None, "monthly": None})
    assert spend.source == "redis"
    assert spend.spent_usd["daily"] >= spent_during["n"] * 0.001 - 1e-9
    await a.publish_open(PRIMARY, time.time() + 5, "timeout")
    await eventually(lambda: any(o[0] == PRIMARY for o in recorder(b).opened), 0.1)
    assert keys_without_ttl(redis_server) == {}


async def test_a_slow_redis_costs_one_timeout_then_calls_answer_at_once(
    redis_server: RedisServer,
) -> None:
    """Replies delayed by 2 s: the first call returns after the 50 ms timeout (+ a few ms),
    with the local estimate; the state is degraded with one log line and every call after
    that returns at once. When Redis is fast again the replica re-joins by itself."""
    async with delay_proxy(redis_server.port) as proxy:
        replica = state(proxy.url, "slow", timeout=0.05)
        with structlog.testing.capture_logs() as logs:
            await replica.start(Recorder())
            assert replica.status() == "redis"
            await replica.add_spend(PERIODS, UsageDelta(PRIMARY, None, cost_usd=0.25))
            proxy.delay = 2.0
            t0 = time.perf_counter()
            first = await replica.try_spend(PERIODS, {"daily": 0.2, "monthly": None})
            first_s = time.perf_counter() - t0
            assert replica.status() == "degraded"
            # the estimate still knows the shared spend of 0.25 > 0.2
            assert (first.source, first.exceeded) == ("estimate", "daily")
            after = []
            trips = dict(replica.round_trips)
            for _ in range(50):
                t0 = time.perf_counter()
                await replica.try_spend(PERIODS, {"daily": 1.0, "monthly": None})
                await replica.publish_open(PRIMARY, time.time() + 5, "503")
                after.append(time.perf_counter() - t0)
            print(f"\nslow Redis: first call {first_s * 1000:.1f} ms, then at most "
                  f"{max(after) * 1000:.3f} ms")  # fmt: skip
            assert 0.05 <= first_s < 0.09
            assert replica.round_trips == trips  # the degraded calls never touched Redis
            assert max(after) < 0.02
            proxy.delay = 0.0
            await eventually(lambda: replica.status() == "redis", 5.0)
            await replica.close()
    events = [line["event"] for line in logs if line["event"].startswith("shared_state")]
    assert events == ["shared_state_degraded", "shared_state_recovered"]


async def test_a_replica_started_without_redis_serves_locally_and_joins_later(
    tmp_path: Path,
) -> None:
    """No Redis at start: ``start`` returns at once, degraded with one line; calls give the
    local answer; when a Redis comes up on that port the replica connects by itself."""
    directory = tmp_path / "later"
    directory.mkdir()
    server = RedisServer(directory)
    replica = state(server.url, "early")
    with structlog.testing.capture_logs() as logs:
        t0 = time.perf_counter()
        await replica.start(Recorder())
        assert time.perf_counter() - t0 < 0.5
        assert replica.status() == "degraded"
        admission = await replica.try_spend(PERIODS, {"daily": 1.0, "monthly": None})
        assert (admission.admitted, admission.source) == (True, "estimate")
        assert await replica.usage_totals([PERIODS["daily"]]) is None
        await replica.add_spend(PERIODS, UsageDelta(PRIMARY, "novita", cost_usd=0.5))
        server.start()
        try:
            await eventually(lambda: replica.status() == "redis", 5.0)
            spend = await replica.try_spend(PERIODS, {"daily": 1.0, "monthly": None})
            assert (spend.source, spend.spent_usd["daily"]) == ("redis", 0.5)
        finally:
            await replica.close()
            server.kill()
    events = [line["event"] for line in logs if line["event"].startswith("shared_state")]
    assert events == ["shared_state_degraded", "shared_state_recovered"]


async def test_the_password_in_the_url_is_used_and_never_logged(tmp_path: Path) -> None:
    """A Redis that requires a password: the URL's password authenticates; a wrong one
    degrades with a log line that shows the URL with the password as ``***``."""
    directory = tmp_path / "auth"
    directory.mkdir()
    server = RedisServer(directory, password="s3cret-redis-pass")
    server.start()
    try:
        good = state(server.url, "good")
        await good.start()
        assert good.status() == "redis"
        await good.close()
        wrong_url = f"redis://:not-the-pass-4711@127.0.0.1:{server.port}/0"
        with structlog.testing.capture_logs() as logs:
            wrong = state(wrong_url, "wrong")
            await wrong.start()
            assert wrong.status() == "degraded"
            await wrong.close()
    finally:
        server.kill()
    [line] = [x for x in logs if x["event"] == "shared_state_degraded"]
    assert line["redis"] == f"redis://:***@127.0.0.1:{server.port}/0"
    assert "not-the-pass-4711" not in repr(logs)


async def test_every_key_the_layer_writes_has_a_ttl(
    redis_server: RedisServer, pair: tuple[RedisState, RedisState]
) -> None:
    """After every kind of write (opening, closing, spend, usage, hedging times, a spend kept
    through an outage), each key in Redis has a TTL: nothing grows without bound."""
    a, b = pair
    await a.publish_open(PRIMARY, time.time() + 5, "503")
    await a.publish_open(FALLBACK, time.time() + 5, "503")
    await b.publish_close(FALLBACK)
    await a.add_spend(PERIODS, UsageDelta(PRIMARY, "novita", 5, 6, 0.01))
    await b.add_spend(PERIODS, UsageDelta(FALLBACK, None, 5, 6, None))
    a.observe_ttft(PRIMARY, 0.4)
    await a.sync()
    await b.try_spend(PERIODS, {"daily": 1.0, "monthly": 2.0})
    kinds = {
        name.split(":")[1]
        for name in redis_server.command("KEYS", "*").decode().split("\r\n")
        if name.startswith("test:")
    }
    assert kinds == {"breaker", "spend", "usage", "ttft"}
    assert key_count(redis_server) == 5  # one opening, two spends, one usage day, one stream
    assert keys_without_ttl(redis_server) == {}
    ttl = int(redis_server.command("TTL", "test:spend:daily:2026-12-01").decode().strip(":\r\n"))
    assert 2 * 86400 - 60 < ttl <= 2 * 86400


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_a_rediss_url_connects_over_tls_with_the_ca_given_in_the_url(tmp_path: Path) -> None:
    """``rediss://`` is TLS with the certificate checked: with ``?ssl_ca_certs=`` naming the
    CA the replica connects; without it the unknown CA is refused and the replica degrades."""
    directory = tmp_path / "tls"
    directory.mkdir()
    tls = make_tls_files(directory)
    server = RedisServer(directory, tls=tls)
    server.start()
    try:
        async with started(f"{server.url}?ssl_ca_certs={tls.ca}", "tls", Recorder()) as good:
            assert good.status() == "redis"
            admission = await good.try_spend(PERIODS, {"daily": 1.0, "monthly": None})
            assert admission.source == "redis"
        with structlog.testing.capture_logs() as logs:
            async with started(server.url, "untrusted", Recorder()) as untrusted:
                assert untrusted.status() == "degraded"
        [line] = [x for x in logs if x["event"] == "shared_state_degraded"]
        assert "certificate" in line["error"].lower()
    finally:
        server.kill()


async def test_a_foreign_key_under_the_prefix_is_an_error_logged_once_not_an_outage(
    redis_server: RedisServer, pair: tuple[RedisState, RedisState]
) -> None:
    """Another program wrote a hash where a spend counter belongs: Redis answers with an error,
    the call gives the local estimate, one line is logged, and the state stays ``redis``."""
    a, _ = pair
    redis_server.command("HSET", f"test:spend:daily:{PERIODS['daily']}", "x", "1")
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            admission = await a.try_spend(PERIODS, {"daily": 1.0, "monthly": None})
            assert (admission.admitted, admission.source) == (True, "estimate")
    assert a.status() == "redis"
    assert [line["event"] for line in logs] == ["shared_state_error"]


async def test_more_calls_at_once_than_the_client_pool_holds_neither_fail_nor_degrade(
    pair: tuple[RedisState, RedisState],
) -> None:
    """1,000 admissions (before any cost is known: no lease, each one round trip) and 500
    spends at once on one replica (redis-py's pool holds 100 connections): every call answers,
    from Redis, and the state stays ``redis``. Before the replica bounded its calls in flight,
    the pool's MaxConnectionsError degraded it (and a call on a connection closed by that
    degradation raised into the request: a 500)."""
    a, _ = pair
    a.timeout = 5.0  # the calls queue for a slot: time enough on a loaded machine
    limits = {"daily": 1000.0, "monthly": None}
    usage = UsageDelta(PRIMARY, "novita", 10, 20, 0.001)
    with structlog.testing.capture_logs() as logs:
        admissions, spends = await asyncio.gather(
            asyncio.gather(*(a.try_spend(PERIODS, limits) for _ in range(1000))),
            asyncio.gather(*(a.add_spend(PERIODS, usage) for _ in range(500))),
        )
    assert all(x.source == "redis" and x.admitted for x in admissions)
    assert all(s is not None for s in spends)
    assert a.status() == "redis"
    assert not [e for e in logs if e["event"] == "shared_state_degraded"], logs
    assert a.round_trips["try_spend"] == 1000 and a.round_trips["flush_spend"] >= 1
