"""State a client controls is bounded (SPEC §12): metric labels and cooldown entries exist by
name only for configured and catalog refs; every other ref a client sends is labelled
``other`` and cools down in a small LRU. Before, each distinct model name became a permanent
metric series and cooldown entry (100,000 names: +170 MiB and a 28 MB ``/metrics``).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.breaker import Breaker, State
from gateway.catalog import Catalog, CatalogEntry, ProviderOffer
from gateway.metrics import OTHER, Metrics
from gateway.refs import ModelRef, parse_ref
from gateway.routing import KnownRefs, known_refs
from tests.conftest import clean_env
from tests.daemon_harness import free_port, gateway_argv, run_process
from tests.fake_router import FakeRouter
from tests.gateway_harness import TOKEN, write_config

A = parse_ref("huggingface/org/model-a")
PINNED = parse_ref("huggingface/org/pinned:groq")
CATALOG = Catalog(
    (
        CatalogEntry("cat/one", providers=(ProviderOffer("together"), ProviderOffer("groq"))),
        CatalogEntry("cat/two"),
    )
)

# ---------------------------------------------------------------------------- the known set


@pytest.mark.parametrize(
    ("ref", "known"),
    [
        ("huggingface/org/model-a", True),
        ("huggingface/org/pinned:groq", True),
        ("huggingface/org/pinned", False),  # only the configured form
        ("huggingface/cat/one", True),
        ("huggingface/cat/one:cheapest", True),
        ("huggingface/cat/one:fastest", True),
        ("huggingface/cat/one:preferred", True),
        ("huggingface/cat/one:together", True),
        ("huggingface/cat/one:groq", True),
        ("huggingface/cat/one:sambanova", False),  # a provider the catalog does not list
        ("huggingface/cat/two", True),
        ("huggingface/cat/two:groq", False),
        ("huggingface/random/name-1", False),
        ("huggingface/org/model-a:cheapest", False),
    ],
)
def test_known_refs(ref: str, known: bool) -> None:
    """Configured refs as written; catalog models plain, with a policy, or with a provider the
    catalog lists for them."""
    refs = known_refs([A, PINNED], CATALOG)
    assert (parse_ref(ref) in refs) is known


class _CountedRefs(tuple[ModelRef, ...]):
    """A configured-refs tuple that counts how often it is read (each read is one rebuild)."""

    reads = 0

    def __iter__(self) -> Iterator[ModelRef]:
        type(self).reads += 1
        return super().__iter__()


def test_known_refs_follow_a_reload_and_a_catalog_refresh_without_rebuilding_each_time() -> None:
    """The set is rebuilt when the source gives a new configured tuple or a new catalog, and
    only then: many lookups, three rebuilds."""
    current: dict[str, object] = {"configured": _CountedRefs((A,)), "catalog": Catalog(())}

    def source() -> tuple[tuple[ModelRef, ...], Catalog]:
        return current["configured"], current["catalog"]  # type: ignore[return-value]

    known = KnownRefs(source)
    for _ in range(100):
        assert A in known and known.has_label(str(A))
        assert not known.has_label("huggingface/cat/one")
    assert _CountedRefs.reads == 1
    current["catalog"] = CATALOG  # a catalog refresh
    assert known.has_label("huggingface/cat/one:groq") and A in known
    assert _CountedRefs.reads == 2
    current["configured"] = _CountedRefs((PINNED,))  # a reload
    assert PINNED in known and A not in known and known.has_label("huggingface/cat/two")
    assert _CountedRefs.reads == 3


# ------------------------------------------------------------------------------ metrics


def _known() -> KnownRefs:
    return KnownRefs(lambda: ((A,), CATALOG))


@pytest.mark.parametrize(
    ("model", "label"),
    [
        ("huggingface/org/model-a", "huggingface/org/model-a"),
        ("huggingface/cat/one:groq", "huggingface/cat/one:groq"),
        ("none", "none"),
        ("huggingface/evil/x-1", OTHER),
        ("anything at all", OTHER),
    ],
)
def test_model_label(model: str, label: str) -> None:
    """Known refs keep their name; 'none' (nothing served) stays; the rest is 'other'."""
    metrics = Metrics()
    metrics.set_known_refs(_known())
    assert metrics.model_label(model) == label


def test_unknown_models_share_one_series() -> None:
    """A thousand distinct unknown names make one 'other' series per status, not a thousand."""
    metrics = Metrics()
    metrics.set_known_refs(_known())
    for i in range(1000):
        metrics.count_attempt(f"huggingface/evil/model-{i}", "400")
        metrics.count_request(f"huggingface/evil/model-{i}", "failed_400")
    text = metrics.render().decode()
    assert 'coderclaw_upstream_attempts_total{model="other",status="400"} 1000.0' in text
    assert 'coderclaw_requests_total{model="other",outcome="failed_400"} 1000.0' in text
    assert "evil" not in text


# ---------------------------------------------------------------------------- breaker


def test_breaker_entries_of_unknown_refs_live_in_a_small_lru_and_known_ones_are_never_evicted() -> (
    None
):
    """Past max_entries unknown refs, the least recently failed is forgotten; the opening of a
    configured ref stays through any number of them (SPEC §9: 5 s for a first failure)."""
    breaker = Breaker(configured=[A], max_entries=3)
    breaker.fail(A, 100.0)
    others = [parse_ref(f"huggingface/evil/m-{i}") for i in range(10)]
    for i, ref in enumerate(others):
        breaker.fail(ref, 100.0 + i)
    assert breaker.cooling_until(A, 101.0) == 105.0
    remembered = [breaker.state(r, 101.0) is not State.CLOSED for r in others]
    assert remembered == [False] * 7 + [True] * 3
    assert set(breaker.cooling(101.0)) == {A, *others[-3:]}


def test_an_unknown_ref_still_opens_and_doubles_while_remembered() -> None:
    """Inside the LRU an unknown ref behaves as a configured one: 5 s, then 10 s; a success
    forgets it."""
    breaker = Breaker(configured=[A], max_entries=3)
    ref = parse_ref("huggingface/evil/m")
    assert breaker.fail(ref, 0.0) == 5.0
    assert breaker.fail(ref, 20.0) == 30.0
    breaker.succeed(ref)
    assert breaker.state(ref, 21.0) is State.CLOSED and breaker.cooling(21.0) == []


# ------------------------------------------------------------ 20,000 refs, a real gateway


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _send_distinct(
    http: aiohttp.ClientSession, v1: str, router: FakeRouter, start: int, count: int
) -> None:
    """``count`` chat requests, each for a model name never sent before, 32 at a time."""
    todo = iter(range(start, start + count))
    payload = {"messages": [{"role": "user", "content": "hi"}]}

    async def worker() -> None:
        for i in todo:
            body = {**payload, "model": f"huggingface/client-{i % 97}/made-up-model-{i}"}
            async with http.post(f"{v1}/chat/completions", json=body) as resp:
                assert resp.status in (400, 404, 502), resp.status
                await resp.read()
            if len(router.requests) > 2000:
                router.requests.clear()  # the fake's own record would grow the test process

    await asyncio.gather(*(worker() for _ in range(32)))


async def _metrics_size(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        return len(await resp.read())


@pytest.mark.timeout(300)
async def test_20000_distinct_client_refs_leave_metrics_and_rss_flat(
    isolated_home: Path, router: FakeRouter
) -> None:
    """After a warm-up of 3,000 names, 20,000 more distinct model names (each refused by the
    router as not supported) leave the gateway's /metrics size and its RSS within 5 %."""
    write_config(isolated_home, router, chain=[str(A)], retries=0)
    port = free_port()
    env = clean_env(isolated_home, HF_TOKEN=TOKEN)
    connector = aiohttp.TCPConnector(limit=32)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        run_process(gateway_argv(port), env, port=port) as gw,
    ):
        await gw.wait_healthy()
        await _send_distinct(http, gw.v1, router, 0, 3000)
        await asyncio.sleep(0.2)  # the batched counters are written
        size_before = await _metrics_size(http, gw.base)
        rss_before = _rss_kib(gw.proc.pid)

        await _send_distinct(http, gw.v1, router, 3000, 20_000)
        await asyncio.sleep(0.2)
        size_after = await _metrics_size(http, gw.base)
        rss_after = _rss_kib(gw.proc.pid)
        text = await (await http.get(f"{gw.base}/metrics")).text()
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit(timeout=10) == 0
    assert size_after <= size_before * 1.05, (size_before, size_after)
    assert rss_after <= rss_before * 1.05, (rss_before, rss_after)
    assert "made-up-model" not in text
    assert 'model="other"' in text
