"""Soak under faults: the real gateway process, a fault-injecting FakeRouter, an aiohttp client.

The gateway runs as ``python -m gateway gateway run`` (clean environment, config from
``write_config``) against a ``FakeRouter`` in the test's event loop; the client is raw aiohttp so
the SSE bytes themselves are checked.

How an outcome is checkable whatever fault hit it: each of the chain's three models has a long
queue of random replies (ok, or one of the faults below), consumed in arrival order, and its
content is always ``Hello from <model>``. Which reply reaches which request depends on timing and
cooldowns, but the verdict does not: every request must end as

* a complete answer: a 200 JSON body whose content is the full text of the model named in
  ``x-coderclaw-model``, or a stream with a ``finish_reason``, that full text, and a final
  ``data: [DONE]``; or
* an honest error: a non-200 OpenAI-shaped JSON error, or a stream whose last event is
  ``data: {"error": …}`` with no ``[DONE]``.

Anything else (a stream cut without an error event, a ``[DONE]`` after partial content, a 500,
a hang) is a failure, and there must be none. ``CODERCLAW_SOAK_FULL=1`` runs the full count
(20,000 requests after a 1,000-request warm-up); CI runs a reduced one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import clean_env
from tests.daemon_harness import GatewayProcess, free_port, gateway_argv, run_process
from tests.fake_router import FakeRouter, Reply, default_models, make_model_entry
from tests.gateway_harness import TOKEN, run_gateway, write_config

FULL = os.environ.get("CODERCLAW_SOAK_FULL") == "1"
TOTAL = 20_000 if FULL else 2_000
WARMUP = 1_000 if FULL else 300
CONCURRENCY = 100
STREAM_SHARE = 0.7
DISCONNECT_SHARE = 0.05

MODELS = ("org/soak-a", "org/soak-b", "org/soak-c")
CHAIN = [f"huggingface/{m}" for m in MODELS]
# Small timeouts so every fault resolves quickly; a slow first byte is past firstTokenSeconds.
FAULT_TIMEOUTS = {
    "connectSeconds": 2,
    "firstTokenSeconds": 0.3,
    "idleSeconds": 0.5,
    "totalSeconds": 10,
}
FAULT_GATEWAY = {"retries": 1, "maxRetryWaitSeconds": 0.5}
SLOW_FIRST_BYTE = 0.6
CALM_TIMEOUTS = {
    "connectSeconds": 10,
    "firstTokenSeconds": 15,
    "idleSeconds": 15,
    "totalSeconds": 60,
}


@pytest.fixture(autouse=True)
def _fd_limit() -> None:
    """As many descriptors as the hard limit allows (the gateway child inherits them)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# -- faults ------------------------------------------------------------------------------------

# Weighted: half of the replies are a fault. Each stream counter (``at``) is 0 (before the first
# chunk: the gateway must fail over invisibly) up to ``chunks`` (just before the finish chunk).
FAULTS: dict[str, tuple[int, Callable[[int, int], Reply]]] = {
    "ok": (50, lambda chunks, at: Reply(chunks=chunks)),
    "503": (5, lambda chunks, at: Reply(status=503)),
    "429": (4, lambda chunks, at: Reply(status=429)),
    "429 Retry-After 0": (4, lambda chunks, at: Reply(status=429, retry_after="0")),
    "429 Retry-After 1": (4, lambda chunks, at: Reply(status=429, retry_after="1")),
    "reset": (5, lambda chunks, at: Reply(chunks=chunks, drop_after=at)),
    "stall": (5, lambda chunks, at: Reply(chunks=chunks, stall_after=at)),
    "non-JSON event": (5, lambda chunks, at: Reply(chunks=chunks, non_json_event_after=at)),
    "slow first byte": (
        4,
        lambda chunks, at: Reply(chunks=chunks, delay_first_byte=SLOW_FIRST_BYTE),
    ),
    "error event": (5, lambda chunks, at: Reply(chunks=chunks, error_event_after=at)),
    "no finish_reason": (5, lambda chunks, at: Reply(chunks=chunks, finish_reason=None)),
}


def random_replies(rng: random.Random, count: int) -> list[tuple[str, Reply]]:
    kinds = list(FAULTS)
    weights = [FAULTS[k][0] for k in kinds]
    out = []
    for kind in rng.choices(kinds, weights, k=count):
        chunks = rng.randint(1, 6)
        out.append((kind, FAULTS[kind][1](chunks, rng.randint(0, chunks))))
    return out


def expected_text(served: str | None) -> str | None:
    """The fake's full answer for the model named in ``x-coderclaw-model``."""
    if served not in CHAIN:
        return None
    return f"Hello from {served.removeprefix('huggingface/')}"


# -- one request, judged ---------------------------------------------------------------------

COMPLETE = "complete"
HONEST_ERROR = "honest error"
CLIENT_CLOSED = "client closed"
FAILURE = "FAILURE"


@dataclass(frozen=True)
class Plan:
    stream: bool
    disconnect: bool  # close the stream after its first event


@dataclass(frozen=True)
class Verdict:
    kind: str
    detail: str


def _is_openai_error(obj: Any) -> bool:
    error = obj.get("error") if isinstance(obj, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and isinstance(error.get("type"), str)
    )


def judge_json(status: int, headers: Any, body: bytes) -> Verdict:
    try:
        data = json.loads(body)
    except ValueError:
        return Verdict(FAILURE, f"{status} body is not JSON: {body[:200]!r}")
    if status == 200:
        expected = expected_text(headers.get("x-coderclaw-model"))
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return Verdict(FAILURE, f"200 without choices: {body[:200]!r}")
        if expected is None or content != expected:
            return Verdict(FAILURE, f"200 with content {content!r}, expected {expected!r}")
        return Verdict(COMPLETE, "json")
    if status >= 500 and status not in (502, 503, 504):
        return Verdict(FAILURE, f"{status}: {body[:300]!r}")
    if not _is_openai_error(data):
        return Verdict(FAILURE, f"{status} error not OpenAI-shaped: {body[:200]!r}")
    return Verdict(HONEST_ERROR, str(status))


def judge_stream(headers: Any, body: bytes, clean_end: bool) -> Verdict:
    events = [line[5:].strip() for line in body.split(b"\n") if line.startswith(b"data:")]
    if not events:
        return Verdict(FAILURE, f"a 200 stream with no event: {body[:200]!r}")
    parsed: list[Any] = []
    for event in events:
        if event == b"[DONE]":
            continue
        try:
            parsed.append(json.loads(event))
        except ValueError:
            return Verdict(FAILURE, f"a non-JSON event reached the client: {event[:100]!r}")
    errors = [p for p in parsed if isinstance(p, dict) and "error" in p]
    if not clean_end:
        return Verdict(FAILURE, "the stream's body was cut (no chunked terminator)")
    if events[-1] == b"[DONE]":
        if events.count(b"[DONE]") != 1 or errors:
            return Verdict(FAILURE, f"[DONE] with {len(errors)} error events")
        choices = [c for p in parsed for c in p.get("choices") or ()]
        text = "".join((c.get("delta") or {}).get("content") or "" for c in choices)
        finished = any(c.get("finish_reason") for c in choices)
        # The model that finished it: the served one, or from a mid-stream rescue on (SPEC §9)
        # the one that continued it; the fake answers anew, so the whole text is that model's.
        named = [p["model"] for p in parsed if isinstance(p, dict) and p.get("model")]
        expected = expected_text(named[-1] if named else headers.get("x-coderclaw-model"))
        if not finished:
            return Verdict(FAILURE, "[DONE] without a finish_reason")
        if text != expected:
            return Verdict(FAILURE, f"[DONE] after {text!r}, expected {expected!r}")
        return Verdict(COMPLETE, "stream")
    if errors and parsed[-1] is errors[-1] and len(errors) == 1 and _is_openai_error(errors[0]):
        return Verdict(HONEST_ERROR, "stream error event")
    return Verdict(FAILURE, f"stream ended without [DONE] or an error event: {events[-1]!r}")


async def one_request(http: aiohttp.ClientSession, v1: str, plan: Plan) -> Verdict:
    payload = {"messages": [{"role": "user", "content": "hi"}], "stream": plan.stream}
    try:
        async with http.post(f"{v1}/chat/completions", json=payload) as resp:
            is_sse = resp.content_type == "text/event-stream"
            if not plan.stream or not is_sse:
                if plan.stream and resp.status == 200:
                    return Verdict(FAILURE, f"a stream answered as {resp.content_type}")
                return judge_json(resp.status, resp.headers, await resp.read())
            if plan.disconnect:
                await resp.content.readline()
                resp.close()
                return Verdict(CLIENT_CLOSED, "after the first event")
            body = bytearray()
            clean_end = True
            try:
                async for piece in resp.content.iter_any():
                    body += piece
            except aiohttp.ClientPayloadError:
                clean_end = False
            return judge_stream(resp.headers, bytes(body), clean_end)
    except TimeoutError:
        return Verdict(FAILURE, "no answer within the client's 30 s")
    except aiohttp.ClientError as exc:
        return Verdict(FAILURE, f"{type(exc).__name__}: {exc}")


@dataclass
class Tally:
    kinds: Counter[str] = field(default_factory=Counter)
    details: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, verdict: Verdict) -> None:
        self.kinds[verdict.kind] += 1
        if verdict.kind == FAILURE:
            self.failures.append(verdict.detail)
        else:
            self.details[f"{verdict.kind}: {verdict.detail}"] += 1

    @property
    def total(self) -> int:
        return sum(self.kinds.values())


def make_plans(rng: random.Random, count: int) -> list[Plan]:
    plans = []
    for _ in range(count):
        stream = rng.random() < STREAM_SHARE
        plans.append(Plan(stream, stream and rng.random() < DISCONNECT_SHARE))
    return plans


def client_session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def run_load(v1: str, plans: list[Plan], concurrency: int) -> Tally:
    """Send every plan with at most ``concurrency`` in flight; the session is closed after."""
    tally = Tally()
    todo = iter(plans)
    started = time.monotonic()
    async with client_session(concurrency) as http:

        async def worker() -> None:
            for plan in todo:
                tally.add(await one_request(http, v1, plan))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.seconds = time.monotonic() - started
    return tally


# -- the gateway process, measured -------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What the gateway process holds at one moment."""

    fds: int
    tasks: int
    active: int  # upstream connections serving a request
    pooled: int  # idle keep-alive upstream connections
    rss_kb: int

    @property
    def other_fds(self) -> int:
        """Descriptors that are not a pooled upstream connection (one socket each)."""
        return self.fds - self.pooled


_SAMPLE = re.compile(r'^(coderclaw_[a-z_]+)(?:\{state="(\w+)"\})? (\S+)$', re.M)


def metric_samples(text: str) -> dict[str, float]:
    return {
        name + (f":{state}" if state else ""): float(value)
        for name, state, value in _SAMPLE.findall(text)
    }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/<pid>/status")


async def measure(gw: GatewayProcess) -> Figures:
    """One /metrics scrape (its own connection, counted alike every time) and /proc figures."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.base}/metrics") as resp:
            assert resp.status == 200
            samples = metric_samples(await resp.text())
        fds = len(os.listdir(f"/proc/{gw.proc.pid}/fd"))
    return Figures(
        fds=fds,
        tasks=int(samples["coderclaw_asyncio_tasks"]),
        active=int(samples["coderclaw_upstream_connections:active"]),
        pooled=int(samples["coderclaw_upstream_connections:idle"]),
        rss_kb=rss_kb(gw.proc.pid),
    )


async def settled(gw: GatewayProcess, idle: Figures, seconds: float = 5.0) -> Figures:
    """The figures once they are back to ``idle`` (or the last ones after ``seconds``)."""
    deadline = time.monotonic() + seconds
    await asyncio.sleep(2.0)  # let closing connections and cancelled handlers finish
    while True:
        now = await measure(gw)
        back = (now.tasks, now.active, now.other_fds) == (idle.tasks, 0, idle.other_fds)
        if back or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.25)


async def ledger_rows(db: Path, expected: int, within_s: float = 30.0) -> int:
    """The ledger's row count once it reaches ``expected`` (rows go out every 0.5 s), or
    whatever it is after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        with contextlib.closing(sqlite3.connect(db, timeout=1)) as conn:
            count = int(conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
        if count >= expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.25)


@asynccontextmanager
async def gateway_process(
    home: Path, router: FakeRouter, **gateway: Any
) -> AsyncIterator[GatewayProcess]:
    write_config(home, router, chain=CHAIN, **gateway)
    port = free_port()
    async with run_process(gateway_argv(port), clean_env(home, HF_TOKEN=TOKEN), port=port) as gw:
        await gw.wait_healthy()
        yield gw


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    """The fake router, serving the chain's models too."""
    models = [*default_models(), *(make_model_entry(m) for m in MODELS)]
    async with FakeRouter(models=models) as fake:
        yield fake


def no_crash_in(gw: GatewayProcess) -> list[str]:
    """Log lines that say the gateway hit an unhandled error."""
    return [
        line
        for line in gw.stderr
        if "unhandled_error" in line or "Traceback" in line or not line.startswith("{")
    ]


def consumed_faults(router: FakeRouter, queues: dict[str, list[tuple[str, Reply]]]) -> Counter[str]:
    """The scripted replies served, by kind (each queue is consumed in order)."""
    served: Counter[str] = Counter()
    for model, queue in queues.items():
        served.update(kind for kind, _ in queue[: router.count(model)])
    return served


# -- the soak --------------------------------------------------------------------------------


@pytest.mark.soak
@pytest.mark.timeout(1800 if FULL else 120)
async def test_soak_under_faults_every_request_ends_complete_or_honest_and_nothing_leaks(
    isolated_home: Path, router: FakeRouter
) -> None:
    """TOTAL requests (70 % streams, 5 % of them closed by the client after the first event)
    at concurrency 100 through a 3-model chain whose replies are random faults: no request
    ends truncated-as-complete, silently cut, with a 500 or hung; afterwards the gateway's
    tasks, active upstream connections and descriptors (apart from pooled keep-alive
    connections, one socket each, at most one per concurrent request) are back to their idle
    counts, and its RSS is within 20 % of its RSS after the warm-up; the ledger has one row
    per request (warm-up included)."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    # Every attempt, retry and fallback takes one reply; three times the requests is plenty.
    per_model = 3 * (TOTAL + WARMUP)
    queues = {model: random_replies(rng, per_model) for model in MODELS}
    for model, queue in queues.items():
        router.script(model, *(reply for _, reply in queue))

    async with gateway_process(
        isolated_home, router, timeouts=FAULT_TIMEOUTS, **FAULT_GATEWAY
    ) as gw:
        warm = await run_load(gw.v1, make_plans(rng, WARMUP), CONCURRENCY)
        assert warm.failures == [], warm.failures[:20]
        # Idle: after the warm-up, once its connections and handlers are gone.
        idle = await settled(gw, await measure(gw), seconds=0)
        cooled = time.monotonic()
        soak = await run_load(gw.v1, make_plans(rng, TOTAL), CONCURRENCY)
        after = await settled(gw, idle)
        crashes = no_crash_in(gw)
        lines = len(gw.stderr)
        rows = await ledger_rows(isolated_home / ".coderclaw" / "coderclaw.db", WARMUP + TOTAL)

    faults = consumed_faults(router, queues)
    report = {
        "seed": seed,
        "requests": soak.total,
        "seconds": round(soak.seconds, 2),
        "requests_per_s": round(soak.total / soak.seconds, 1),
        "outcomes": dict(soak.kinds),
        "detail": dict(soak.details),
        "failures": soak.failures[:20],
        "warmup": {"requests": warm.total, "seconds": round(warm.seconds, 2)},
        "replies_served_by_kind": dict(faults),
        "idle": idle.__dict__,
        "after": after.__dict__,
        "rss_growth": round(after.rss_kb / idle.rss_kb - 1, 4),
        "since_warmup_s": round(time.monotonic() - cooled, 1),
        "log_lines": lines,
        "ledger_rows": rows,
    }
    print("\nSOAK", json.dumps(report, indent=2))

    assert soak.total == TOTAL
    assert soak.failures == [], soak.failures[:20]
    assert soak.kinds[COMPLETE] > TOTAL // 4  # faults did not drown the answers
    assert soak.kinds[HONEST_ERROR] > 0  # and they were really injected
    assert soak.kinds[CLIENT_CLOSED] > 0
    assert set(faults) == set(FAULTS), faults  # every kind of fault was served
    assert crashes == [], crashes[:5]
    assert rows == WARMUP + TOTAL  # one ledger row per request, none lost under load

    assert after.tasks == idle.tasks, (idle, after)
    assert after.active == 0, after
    assert after.other_fds == idle.other_fds, (idle, after)
    # The pool holds a connection per request that ran at the same time at most.
    assert after.pooled <= CONCURRENCY, after
    assert after.rss_kb <= idle.rss_kb * 1.2, (idle.rss_kb, after.rss_kb)


@pytest.mark.soak
@pytest.mark.timeout(120)
async def test_a_thousand_concurrent_slow_streams_each_get_every_chunk_in_order(
    isolated_home: Path, router: FakeRouter
) -> None:
    """1,000 streams open at once, each 10 chunks 0.25 s apart: every stream ends with [DONE]
    and its content deltas are exactly the 10 pieces, in order."""
    pieces = [f"{i:03d}," for i in range(10)]
    # Each stream lasts ~3 s, longer than opening all 1,000 of them takes (~1-2 s here).
    router.set_default(Reply(chunks=10, chunk_delay=0.25, content="".join(pieces)))
    streams = 1_000

    finished: list[float] = []

    async def one(http: aiohttp.ClientSession, v1: str) -> list[str] | str:
        payload = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with http.post(f"{v1}/chat/completions", json=payload) as resp:
            body = await resp.read()
            finished.append(time.monotonic())
            if resp.status != 200:
                return f"{resp.status}: {body[:200]!r}"
        events = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
        if events[-1:] != [b"[DONE]"]:
            return f"no [DONE]: {events[-1:]!r}"
        deltas = [c["delta"].get("content") for e in events[:-1] for c in json.loads(e)["choices"]]
        return [d for d in deltas if d]

    async with gateway_process(isolated_home, router, timeouts=CALM_TIMEOUTS) as gw:
        started = time.monotonic()
        async with client_session(0) as http:
            results = await asyncio.gather(*(one(http, gw.v1) for _ in range(streams)))
        seconds = time.monotonic() - started
        crashes = no_crash_in(gw)

    last_open = max(r.time for r in router.chat_requests())
    print(
        f"\n{streams} slow streams in {seconds:.2f} s; all open "
        f"{min(finished) - last_open:.2f} s before the first one ended"
    )
    wrong = [r for r in results if r != pieces]
    assert wrong == [], wrong[:5]
    assert router.count(MODELS[0]) == streams
    # All open at once: the last stream reached the router before the first one ended.
    assert last_open < min(finished)
    assert crashes == []


def _config_variants(home: Path, router: FakeRouter) -> Iterator[Path]:
    """Two valid configs, the fallbacks swapped, written under throwaway homes."""
    for i, chain in enumerate((CHAIN, [CHAIN[0], CHAIN[2], CHAIN[1]])):
        variant = home / f"variant-{i}"
        variant.mkdir()
        yield write_config(variant, router, chain=chain, timeouts=CALM_TIMEOUTS)


@pytest.mark.soak
@pytest.mark.timeout(60)
async def test_sighup_reload_every_second_under_load_fails_no_request(
    isolated_home: Path, router: FakeRouter, tmp_path: Path
) -> None:
    """~5 s of load (70 % streams, concurrency 50) while the config swaps its fallbacks and the
    gateway gets SIGHUP every second: every reload is applied and every request completes."""
    variants = list(_config_variants(tmp_path, router))
    async with gateway_process(isolated_home, router, timeouts=CALM_TIMEOUTS) as gw:
        config = isolated_home / ".coderclaw" / "coderclaw.json"
        stop = asyncio.Event()
        reloads = 0

        async def reloader() -> None:
            nonlocal reloads
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if stop.is_set():
                    return
                staged = config.with_suffix(".staged")
                shutil.copyfile(variants[(reloads + 1) % 2], staged)
                os.replace(staged, config)  # whole file or nothing, as an editor saves
                gw.send(signal.SIGHUP)
                reloads += 1

        async def load() -> Tally:
            rng = random.Random(5)
            tally = Tally()
            async with client_session(50) as http:

                async def worker() -> None:
                    while not stop.is_set():
                        stream = rng.random() < STREAM_SHARE
                        tally.add(await one_request(http, gw.v1, Plan(stream, False)))

                await asyncio.gather(*(worker() for _ in range(50)))
            return tally

        task = asyncio.create_task(load())
        reload_task = asyncio.create_task(reloader())
        await asyncio.sleep(5.5)
        stop.set()
        tally = await task
        await reload_task
        await asyncio.sleep(0.5)  # the last reload's log line
        events = gw.events()

    applied = [e for e in events if e.get("event") == "config_reloaded"]
    failed = [e for e in events if e.get("event") == "config_reload_failed"]
    print(f"\n{tally.total} requests, {reloads} SIGHUPs, {len(applied)} reloads applied")
    assert reloads >= 5
    assert failed == []
    assert len(applied) >= reloads  # SIGHUP, plus the file watcher's own reloads
    assert {tuple(e["fallbacks"]) for e in applied} == {tuple(CHAIN[1:]), tuple(CHAIN[:0:-1])}
    assert tally.failures == [], tally.failures[:10]
    assert tally.kinds[COMPLETE] == tally.total > 500


# -- the gauges the soak reads -----------------------------------------------------------------


async def test_metrics_report_asyncio_tasks_and_upstream_connections_active_then_idle(
    isolated_home: Path, router: FakeRouter
) -> None:
    """While a stream is relayed, /metrics counts one active upstream connection; once it has
    ended, that connection is idle in the keep-alive pool; the task gauge counts live tasks."""
    router.script(MODELS[0], Reply(chunks=4, chunk_delay=0.2))
    async with (
        run_gateway(isolated_home, router, chain=CHAIN) as (v1, _),
        aiohttp.ClientSession() as http,
    ):
        base = v1.removesuffix("/v1")

        async def samples() -> dict[str, float]:
            async with http.get(f"{base}/metrics") as resp:
                return metric_samples(await resp.text())

        before = await samples()
        payload = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with http.post(f"{v1}/chat/completions", json=payload) as resp:
            await resp.content.readline()
            during = await samples()
            await resp.read()
        after = await samples()

    assert before["coderclaw_upstream_connections:active"] == 0
    assert before["coderclaw_upstream_connections:idle"] == 0
    assert during["coderclaw_upstream_connections:active"] == 1
    assert during["coderclaw_asyncio_tasks"] > before["coderclaw_asyncio_tasks"]
    assert after["coderclaw_upstream_connections:active"] == 0
    assert after["coderclaw_upstream_connections:idle"] == 1


# -- the judge, on known bodies ----------------------------------------------------------------

_SERVED = {"x-coderclaw-model": CHAIN[1]}


def _sse(*events: Any) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n"
        for e in events
    )


def _delta(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


_FULL = [_delta("Hello from "), _delta("org/soak-b"), _delta("", "stop")]
_ERROR = {"error": {"message": "the upstream connection dropped mid-stream", "type": "x"}}


@pytest.mark.parametrize(
    ("body", "clean_end", "kind"),
    [
        (_sse(*_FULL, b"[DONE]"), True, COMPLETE),
        (_sse(*_FULL[1:], b"[DONE]"), True, FAILURE),  # [DONE] after partial content
        (_sse(*_FULL[:2], b"[DONE]"), True, FAILURE),  # [DONE] without a finish_reason
        (_sse(*_FULL), True, FAILURE),  # no [DONE], no error event
        (_sse(_FULL[0]), True, FAILURE),  # cut after a chunk, silently
        (_sse(*_FULL, b"[DONE]"), False, FAILURE),  # body cut after [DONE]
        (_sse(_FULL[0], _ERROR), True, HONEST_ERROR),
        (_sse(_FULL[0], _ERROR), False, FAILURE),
        (_sse(_FULL[0], _ERROR, b"[DONE]"), True, FAILURE),
        (_sse(_FULL[0], b"this is not json", *_FULL[1:], b"[DONE]"), True, FAILURE),
        (b"", True, FAILURE),
    ],
)
def test_judge_stream_accepts_only_complete_answers_and_honest_errors(
    body: bytes, clean_end: bool, kind: str
) -> None:
    assert judge_stream(_SERVED, body, clean_end).kind == kind


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, {"choices": [{"message": {"content": "Hello from org/soak-b"}}]}, COMPLETE),
        (200, {"choices": [{"message": {"content": "Hello from org/soak-a"}}]}, FAILURE),
        (200, {"choices": []}, FAILURE),
        (503, {"error": {"message": "every model is unavailable", "type": "x"}}, HONEST_ERROR),
        (429, {"error": {"message": "every model is rate limited", "type": "x"}}, HONEST_ERROR),
        (502, {"error": "a bare string"}, FAILURE),
        (500, {"error": {"message": "internal gateway error", "type": "server_error"}}, FAILURE),
    ],
)
def test_judge_json_accepts_only_the_full_text_or_an_openai_error(
    status: int, body: Any, kind: str
) -> None:
    assert judge_json(status, _SERVED, json.dumps(body).encode()).kind == kind
