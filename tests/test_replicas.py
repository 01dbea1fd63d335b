"""Several replicas, one view of the world (issue 15, SPEC §13): two real gateway processes on
one real ``redis-server``, the fake router behind both.

Each test names the situation; the figures the issue asks for (propagation time, requests
served past a shared budget, the outage, the slow Redis) are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.cli_helpers import run_cli
from tests.conftest import clean_env
from tests.daemon_harness import GatewayProcess, free_port, gateway_argv, run_process
from tests.fake_router import FakeRouter, Reply, make_model_entry
from tests.gateway_harness import TOKEN, run_gateway, write_config
from tests.redis_harness import DelayProxy, RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, used by name

A, B = "org/model-a", "org/model-b"
REF_A, REF_B = (f"huggingface/{m}" for m in (A, B))
CHAT = {"model": "coderclaw", "messages": [{"role": "user", "content": "hi"}]}
PREFIX = "cctest:"
# "hi" is 1 prompt token and "Hello from org/model-a" 3 completion tokens at the fake router:
# at $250,000 per million tokens each way one request costs exactly $1.
DOLLAR = {"provider": "together", "pricing": {"input": 250000.0, "output": 250000.0}}
NO_HEDGE = {"afterSeconds": False}


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    async with FakeRouter(models=[make_model_entry(A, [DOLLAR]), make_model_entry(B)]) as fake:
        yield fake


def replica_home(
    tmp_path: Path, name: str, router: FakeRouter, redis_url: str, **gateway: Any
) -> Path:
    """A home of its own for one replica (its own state dir and ledger), on ``redis_url``."""
    home = tmp_path / name
    home.mkdir()
    path = write_config(home, router, hedge=NO_HEDGE, **gateway)
    config = json.loads(path.read_text())
    config["state"] = {"redis": {"url": redis_url, "keyPrefix": PREFIX, "timeoutMs": 200}}
    path.write_text(json.dumps(config))
    return home


@asynccontextmanager
async def replicas(
    tmp_path: Path, router: FakeRouter, redis_url: str, **gateway: Any
) -> AsyncIterator[list[GatewayProcess]]:
    """Replicas "a" and "b", both ready (catalog loaded, shared state joined)."""
    async with AsyncExitStack() as stack:
        gateways = []
        for name in ("a", "b"):
            home = replica_home(tmp_path, name, router, redis_url, **gateway)
            port = free_port()
            env = clean_env(home, HF_TOKEN=TOKEN)
            gateways.append(
                await stack.enter_async_context(run_process(gateway_argv(port), env, port=port))
            )
        for gw in gateways:
            await gw.wait_healthy()
            await gw.wait_event("shared_state_started", timeout=8)
            await wait_ready(gw)
        yield gateways


async def wait_ready(gw: GatewayProcess, timeout: float = 8.0) -> None:  # noqa: ASYNC109
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            async with http.get(f"{gw.base}/readyz") as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.05)


async def status(http: aiohttp.ClientSession, gw: GatewayProcess) -> dict[str, Any]:
    async with http.get(f"{gw.base}/status.json") as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def primary_state(http: aiohttp.ClientSession, gw: GatewayProcess) -> str:
    return str((await status(http, gw))["chain"][0]["state"])


async def until_state(
    http: aiohttp.ClientSession,
    gw: GatewayProcess,
    wanted: str,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> float:
    """Poll the replica's status until its primary is ``wanted``; the seconds it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while await primary_state(http, gw) != wanted:  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.005)
    return time.monotonic() - started


async def post(http: aiohttp.ClientSession, gw: GatewayProcess) -> tuple[int, dict[str, str], Any]:
    async with http.post(f"{gw.v1}/chat/completions", json=CHAT) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def post_stream(http: aiohttp.ClientSession, gw: GatewayProcess) -> str:
    """A streamed chat request's whole body (it must end with ``[DONE]``)."""
    async with http.post(f"{gw.v1}/chat/completions", json={**CHAT, "stream": True}) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "data: [DONE]" in text
    return text


def events_named(gw: GatewayProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in gw.events() if e.get("event") == event]


async def redis_keys(url: str) -> dict[str, int]:
    """Every key under the test prefix with its TTL in seconds (-1: none)."""
    async with Redis.from_url(url) as client:
        names = [n async for n in client.scan_iter(match=f"{PREFIX}*")]
        return {n.decode(): int(await client.ttl(n)) for n in names}


async def commands_run(url: str) -> dict[str, int]:
    """The calls of each command the Redis has run (``INFO commandstats``; the commands a
    script runs count too), ``info`` itself left out."""
    async with Redis.from_url(url) as client:
        stats = await client.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): int(v["calls"])
        for k, v in stats.items()
        if k not in ("cmdstat_info", "cmdstat_hello")
    }


# -- the breaker ---------------------------------------------------------------------------------


async def test_an_opening_on_one_replica_is_skipped_by_the_other_and_its_closing_too(
    tmp_path: Path, router: FakeRouter, redis_server: RedisServer
) -> None:
    """The primary fails at the router: replica A fails over and opens it; B's next request,
    sent 100 ms after A's answer, is served by the fallback without asking the primary. When the
    primary recovers, A's probe closes it and B closes it too (before its own open time would
    have let it probe) and serves from the primary again."""
    router.script(A, Reply(status=503))
    breaker = {"baseSeconds": 1.5, "maxSeconds": 1.5}
    async with (
        replicas(tmp_path, router, redis_server.url, retries=0, breaker=breaker) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        code, headers, _ = await post(http, a)
        answered = time.monotonic()
        assert code == 200
        assert headers["x-coderclaw-attempts"] == f"{REF_A}=503,{REF_B}=200"
        seen = await until_state(http, b, "open", timeout=1.0)
        print(f"\nopening propagated to replica B within {seen * 1e3:.1f} ms of A's answer")
        await asyncio.sleep(max(0.0, answered + 0.1 - time.monotonic()))
        code, headers, body = await post(http, b)
        assert code == 200
        assert headers["x-coderclaw-attempts"] == f"{REF_B}=200", "B asked the open primary"
        assert body["model"] == REF_B
        assert router.count(A) == 1

        # The open time ends: A's next request probes the (recovered) primary and closes it.
        await until_state(http, a, "half_open", timeout=3.0)
        code, headers, _ = await post(http, a)
        assert headers["x-coderclaw-attempts"] == f"{REF_A}=200"
        closed = await until_state(http, b, "closed", timeout=1.0)
        print(f"closing propagated to replica B within {closed * 1e3:.1f} ms")
        code, headers, _ = await post(http, b)
        assert code == 200
        assert headers["x-coderclaw-attempts"] == f"{REF_A}=200", "B did not use the primary"
        assert router.count(A) == 3
        shared = await status(http, b)
        assert shared["shared_state"] == "redis"
        assert shared["replica"] and shared["replica"] != (await status(http, a))["replica"]


# -- budgets -------------------------------------------------------------------------------------


async def test_a_daily_budget_is_shared_by_two_replicas_under_ten_concurrent_clients(
    tmp_path: Path, router: FakeRouter, redis_server: RedisServer
) -> None:
    """A $30 daily budget ($1 a request) on two replicas, 100 requests from 10 concurrent
    clients alternating between them: at most 30 plus the 10 in flight are served (a budget per
    replica would serve about 60), the rest refused with 429 ``budget_exceeded``; then both
    replicas refuse."""
    budget = {"dailyUsd": 30, "timeZone": "UTC"}
    async with (
        replicas(tmp_path, router, redis_server.url, discovery=True, budget=budget) as gws,
        aiohttp.ClientSession() as http,
    ):
        code, headers, _ = await post(http, gws[0])  # one request: is its price $1?
        assert code == 200 and float(headers["x-coderclaw-cost-usd"]) == 1.0
        outcomes: list[int] = [code]
        codes: list[str | None] = []
        queue = iter(range(1, 100))

        async def client() -> None:
            for i in queue:
                status_code, _, body = await post(http, gws[i % 2])
                outcomes.append(status_code)
                if status_code != 200:
                    codes.append(body["error"].get("code"))

        await asyncio.gather(*(client() for _ in range(10)))
        served = outcomes.count(200)
        print(f"\nbudget worth 30 requests, two replicas, 10 clients: {served} served of 100")
        assert len(outcomes) == 100
        assert set(outcomes) <= {200, 429}
        assert set(codes) == {"budget_exceeded"}
        assert 30 <= served <= 40
        for gw in gws:
            code, _, body = await post(http, gw)
            assert code == 429 and body["error"]["code"] == "budget_exceeded"
        spend = await redis_keys(redis_server.url)
        assert any(k.startswith(f"{PREFIX}spend:daily:") for k in spend), spend
        await asyncio.sleep(0.2)  # the last spend written
    # `coderclaw usage --shared` on either replica: both replicas' requests, $1 each.
    for name in ("a", "b"):
        run = await run_cli(
            "usage", "--shared", "--json", env=clean_env(tmp_path / name, HF_TOKEN=TOKEN)
        )
        assert run.code == 0, run.err
        total = json.loads(run.out)["total"]
        assert (total["requests"], total["cost_usd"]) == (served, float(served)), total


# -- Redis down, Redis slow ----------------------------------------------------------------------


async def test_redis_killed_mid_run_and_restarted_fails_no_request_and_sharing_resumes(
    tmp_path: Path, router: FakeRouter, redis_server: RedisServer
) -> None:
    """Requests flow through both replicas (a budget set, so admission asks Redis) while
    redis-server is SIGKILLed and, 1.5 s later, restarted on its port: every request is
    served; each replica logs one ``shared_state_degraded`` and one ``shared_state_recovered``
    line, its status said ``degraded`` meanwhile, ``/readyz`` stayed ready; afterwards an opening
    on A reaches B again."""
    budget = {"dailyUsd": 1000, "timeZone": "UTC"}
    async with (
        replicas(tmp_path, router, redis_server.url, retries=0, budget=budget) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        outcomes: list[int] = []
        latencies: list[float] = []
        running = True

        async def traffic(gw: GatewayProcess) -> None:
            while running:
                started = time.monotonic()
                code, _, _ = await post(http, gw)
                latencies.append(time.monotonic() - started)
                outcomes.append(code)
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(traffic(gw)) for gw in (a, b)]
        await asyncio.sleep(0.5)
        redis_server.kill()
        killed = time.monotonic()
        for gw in (a, b):
            await gw.wait_event("shared_state_degraded", timeout=3)
            assert (await status(http, gw))["shared_state"] == "degraded"
            async with http.get(f"{gw.base}/readyz") as resp:
                assert resp.status == 200
        await asyncio.sleep(max(0.0, killed + 1.5 - time.monotonic()))
        redis_server.start()
        for gw in (a, b):
            await gw.wait_event("shared_state_recovered", timeout=8)
        recovered = time.monotonic() - killed
        await asyncio.sleep(0.3)
        running = False
        await asyncio.gather(*tasks)
        print(
            f"\nRedis down {recovered:.1f} s: {len(outcomes)} requests, "
            f"{sum(c != 200 for c in outcomes)} failed, slowest {max(latencies) * 1e3:.0f} ms"
        )
        assert outcomes and set(outcomes) == {200}
        for gw in (a, b):
            assert len(events_named(gw, "shared_state_degraded")) == 1, gw.log_text()
            assert len(events_named(gw, "shared_state_recovered")) == 1, gw.log_text()
            assert (await status(http, gw))["shared_state"] == "redis"

        router.script(A, Reply(status=503))
        _, headers, _ = await post(http, a)
        assert headers["x-coderclaw-attempts"] == f"{REF_A}=503,{REF_B}=200"
        seen = await until_state(http, b, "open", timeout=1.0)
        print(f"after the recovery an opening reached B within {seen * 1e3:.1f} ms")


async def test_a_slow_redis_delays_one_request_by_at_most_its_timeout_then_the_replica_degrades(
    tmp_path: Path, router: FakeRouter, redis_server: RedisServer
) -> None:
    """Redis behind a proxy that starts holding every reply for 2 s: a request that meets it
    waits no more than the configured Redis timeout (200 ms) longer than usual, at most once
    (admitted on the replica's lease, most meet no Redis call at all); within a flush or two
    the replica says ``degraded`` (one log line) and its requests are as fast as before."""
    budget = {"dailyUsd": 1000, "timeZone": "UTC"}
    async with (
        DelayProxy(redis_server.port) as proxy,
        replicas(tmp_path, router, proxy.url, budget=budget) as (a, _b),
        aiohttp.ClientSession() as http,
    ):

        async def timed(n: int) -> list[float]:
            out = []
            for _ in range(n):
                started = time.monotonic()
                code, _, _ = await post(http, a)
                out.append(time.monotonic() - started)
                assert code == 200
            return out

        before = await timed(20)
        proxy.delay = 2.0
        during = await timed(20)
        for _ in range(40):  # the flush task meets the slow Redis within its timeout
            if (await status(http, a))["shared_state"] == "degraded":
                break
            await asyncio.sleep(0.05)
        assert (await status(http, a))["shared_state"] == "degraded"
        after = await timed(20)
        usual = statistics.median(before)
        slow = [t for t in during if t > usual + 0.1]
        print(
            f"\nslow Redis: usual {usual * 1e3:.1f} ms, slowest {max(during) * 1e3:.0f} ms, "
            f"{len(slow)} slow request(s), afterwards {statistics.median(after) * 1e3:.1f} ms"
        )
        assert max(during) <= max(before) + 0.2 + 0.1
        assert len(slow) <= 1
        assert statistics.median(after) <= usual + 0.02
        assert len(events_named(a, "shared_state_degraded")) == 1


# -- keys ----------------------------------------------------------------------------------------


async def test_every_key_the_replicas_write_carries_a_ttl(
    tmp_path: Path, router: FakeRouter, redis_server: RedisServer
) -> None:
    """After openings, spend, usage and hedging times went through Redis (and a sync round
    passed), every key under the prefix has a TTL; also reports Redis commands per request."""
    router.script(A, Reply(status=503))
    budget = {"dailyUsd": 1000, "timeZone": "UTC"}
    async with (
        replicas(
            tmp_path, router, redis_server.url, retries=0, discovery=True, budget=budget
        ) as gws,
        aiohttp.ClientSession() as http,
    ):
        code, _, _ = await post(http, gws[0])  # opens the primary (breaker key)
        assert code == 200
        await asyncio.sleep(0.2)  # its spend written
        before = await commands_run(redis_server.url)
        started = time.monotonic()
        for i in range(100):
            code, _, _ = await post(http, gws[i % 2])
            assert code == 200
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.2)  # the last spend written
        after = await commands_run(redis_server.url)
        per_request = {k: (n - before.get(k, 0)) / 100 for k, n in after.items()}
        print(
            f"\nRedis commands per request (a budget set; a script's own commands included), "
            f"100 requests in {elapsed:.2f} s: {sum(per_request.values()):.2f}: {per_request}"
        )
        # Admission from each replica's lease: a script only for the first request of each
        # (no cost known yet) and for the lease that follows it; the spend written once per
        # flush tick (0.1 s) per replica, plus the first request's at once.
        assert per_request["evalsha"] * 100 <= 4
        assert per_request["multi"] * 100 <= 2 * (elapsed / 0.1 + 3)
        for gw in gws:  # streams: times to first chunk for the hedging statistics
            await post_stream(http, gw)
        await asyncio.sleep(2.5)  # a sync round sends them
        keys = await redis_keys(redis_server.url)
        kinds = _kinds(keys)
    print(f"keys: {sorted(keys)}")
    assert {"breaker", "spend", "usage", "ttft"} <= kinds, keys
    assert all(ttl > 0 for ttl in keys.values()), keys


def _kinds(keys: Sequence[str] | dict[str, int]) -> set[str]:
    """The kinds of keys present: the word after the prefix."""
    return {name[len(PREFIX) :].split(":", 1)[0] for name in keys}


# -- what a replica says about its shared state, and its password --------------------------------


async def metric_line(http: aiohttp.ClientSession, base: str, state: str) -> str:
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return next(
        line
        for line in text.splitlines()
        if line.startswith(f'coderclaw_shared_state{{state="{state}"}}')
    )


async def test_a_gateway_without_state_redis_says_its_state_is_local(
    isolated_home: Path, router: FakeRouter
) -> None:
    """No ``state`` in the config: nothing shared; ``/status.json`` says ``local`` (replica
    ``local``) and the ``/metrics`` gauge has ``local`` at 1."""
    async with run_gateway(isolated_home, router) as (v1, _view), aiohttp.ClientSession() as http:
        base = v1.removesuffix("/v1")
        async with http.get(f"{base}/status.json") as resp:
            doc = await resp.json()
        assert (doc["shared_state"], doc["replica"]) == ("local", "local")
        assert (await metric_line(http, base, "local")).endswith(" 1.0")
        assert (await metric_line(http, base, "redis")).endswith(" 0.0")


async def test_the_redis_password_from_an_env_variable_is_used_and_never_logged(
    tmp_path: Path, router: FakeRouter
) -> None:
    """A Redis with a password, the URL ``redis://:${REDIS_PASSWORD}@…``: the replica joins
    (``/metrics`` gauge ``redis`` at 1); Redis killed, it logs one degradation line with the URL
    as ``redis://:***@…`` and the gauge says ``degraded``; the password is in no log line."""
    password = "pw-for-the-replica-test-0123456789"
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, password=password)
    server.start()
    try:
        home = replica_home(
            tmp_path, "a", router, f"redis://:${{REDIS_PASSWORD}}@127.0.0.1:{server.port}/0"
        )
        port = free_port()
        env = clean_env(home, HF_TOKEN=TOKEN, REDIS_PASSWORD=password)
        async with (
            run_process(gateway_argv(port), env, port=port) as gw,
            aiohttp.ClientSession() as http,
        ):
            await gw.wait_healthy()
            started = await gw.wait_event("shared_state_started", timeout=8)
            assert started["state"] == "redis", gw.log_text()
            assert (await metric_line(http, gw.base, "redis")).endswith(" 1.0")
            server.kill()
            degraded = await gw.wait_event("shared_state_degraded", timeout=5)
            assert degraded["redis"] == f"redis://:***@127.0.0.1:{server.port}/0"
            assert (await metric_line(http, gw.base, "degraded")).endswith(" 1.0")
            code, _, _ = await post(http, gw)
            assert code == 200
            assert password not in gw.log_text()
    finally:
        server.kill()


# -- behind the load balancer of deploy/replicas -------------------------------------------------

DEPLOY_NGINX = Path(__file__).resolve().parent.parent / "deploy" / "replicas" / "nginx.conf"


@asynccontextmanager
async def nginx_in_front(tmp_path: Path, gws: Sequence[GatewayProcess]) -> AsyncIterator[str]:
    """A real nginx with ``deploy/replicas/nginx.conf``, the compose host names pointed at the
    two replicas' ports and its port a free one on 127.0.0.1; yields its base URL."""
    text = DEPLOY_NGINX.read_text()
    for name, gw in zip(("gateway-a", "gateway-b"), gws, strict=True):
        text = text.replace(f"server {name}:18789", f"server 127.0.0.1:{gw.port}")
    port = free_port()
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    text = text.replace("pid /tmp/nginx.pid", f"pid {tmp_path}/nginx.pid")
    text = text.replace("access_log /dev/stdout;", f"access_log {tmp_path}/access.log;")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = [nginx, "-g", "daemon off;", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)]
    proc = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(10):
            while True:
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                assert proc.returncode is None, "nginx exited"
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


def served_by(gw: GatewayProcess) -> int:
    return len(events_named(gw, "chat_completion"))


@pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx is not installed (Debian: nginx-light)",
)
async def test_two_replicas_behind_the_deploy_nginx_config_serve_as_one(
    tmp_path: Path, router: FakeRouter, redis_server: RedisServer
) -> None:
    """The openai SDK against nginx with ``deploy/replicas/nginx.conf`` in front of two replicas
    on one Redis: requests and a stream are spread over both; an opening on one is seen
    through the other; one replica SIGKILLed, every request still succeeds (served by the
    other)."""
    from openai import AsyncOpenAI

    async with (
        replicas(tmp_path, router, redis_server.url, retries=0) as (a, b),
        nginx_in_front(tmp_path, (a, b)) as lb,
        aiohttp.ClientSession() as http,
    ):
        client = AsyncOpenAI(base_url=f"{lb}/v1", api_key="unused", max_retries=0)
        messages: Any = [{"role": "user", "content": "hi"}]
        for _ in range(20):
            answer = await client.chat.completions.create(model="coderclaw", messages=messages)
            assert answer.choices[0].message.content == "Hello from org/model-a"
        stream = await client.chat.completions.create(
            model="coderclaw", messages=messages, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Hello from org/model-a"
        await asyncio.sleep(0.3)  # the request log lines are batched
        spread = served_by(a), served_by(b)
        print(f"\nbehind nginx: {spread[0]} + {spread[1]} of 21 requests on replicas a and b")
        assert sum(spread) == 21 and min(spread) >= 5

        router.script(A, Reply(status=503))
        answer = await client.chat.completions.create(model="coderclaw", messages=messages)
        assert answer.model == REF_B
        await until_state(http, a, "open", timeout=1.0)
        await until_state(http, b, "open", timeout=1.0)
        router.script(A, Reply())

        a.send(signal.SIGKILL)
        await a.wait_exit()
        for _ in range(10):
            answer = await client.chat.completions.create(model="coderclaw", messages=messages)
            assert answer.choices[0].message.content
        await client.close()
