"""The gateway as a real process: sd_notify, drain on SIGTERM, reload on SIGHUP, exit statuses.

Each test starts ``python -m gateway gateway run`` (or the ExecStart of the rendered systemd unit)
with a clean environment, a config that points at a ``FakeRouter`` in the test's event loop, and,
where it matters, a real ``NOTIFY_SOCKET`` datagram socket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from gateway.service.notify import Notifier, watchdog_interval
from gateway.service.units import ServiceSpec, unit_text
from gateway.store import set_env_var
from tests.conftest import clean_env
from tests.daemon_harness import (
    GatewayProcess,
    NotifySocket,
    StreamResult,
    chat,
    free_port,
    gateway_argv,
    open_stream,
    port_open,
    read_event,
    read_rest,
    run_process,
    unit_command,
)
from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import TOKEN, write_config

GW_TOKEN = "gw-secret-Zq8Xv2Lm4Np6Rt"
MODEL_A = "huggingface/org/model-a"
MODEL_B = "huggingface/org/model-b"


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as exits:
        yield exits


def slow_stream(seconds: float, chunks: int = 5) -> Reply:
    """A stream of ``chunks`` content events (+ finish, [DONE]) lasting about ``seconds``."""
    return Reply(chunks=chunks, chunk_delay=seconds / (chunks + 1), content="x" * chunks * 2)


# -- sd_notify ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "400000"}, 0.2),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "4242"}, 0.2),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None),  # inherited, not ours
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_when_the_watchdog_is_ours(
    env: dict[str, str], interval: float | None
) -> None:
    assert watchdog_interval(env, pid=4242) == interval


def test_notifier_sends_to_an_abstract_socket_and_is_silent_when_nobody_listens() -> None:
    """``@name`` is the abstract namespace; a socket that is gone must not break the gateway."""
    name = f"coderclaw-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready("serving")
        assert sock.recv(1024) == b"READY=1\nSTATUS=serving"
    Notifier({"NOTIFY_SOCKET": "@" + name}).stopping()  # nobody bound: no error
    Notifier({}).ready("nowhere")


async def test_unit_execstart_sends_ready_only_once_healthz_answers_then_stopping_and_exit_0(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """The rendered unit's ExecStart, run as systemd would (HOME, its Environment=, a real
    NOTIFY_SOCKET): no READY=1 while the port is closed, /healthz answers 200 when READY=1
    arrives, a STATUS= comes with it; SIGTERM → STOPPING=1, then exit 0."""
    home = isolated_home
    port = free_port()
    config = write_config(home, router)
    state = config.parent
    spec = ServiceSpec(sys.executable, state, config, state / "logs", port=port)
    argv, environment = unit_command(unit_text(spec))
    assert argv == [sys.executable, "-m", "gateway", "gateway", "run", "--port", str(port)]
    assert environment["CODERCLAW_STATE_DIR"] == str(state)

    async with NotifySocket() as notify:
        env = clean_env(home, HF_TOKEN=TOKEN, NOTIFY_SOCKET=notify.path, **environment)
        async with run_process(argv, env, port=port, cwd=home) as gw, asyncio.timeout(8):
            while True:
                ready_seen = bool(notify.with_key("READY"))
                is_open = await port_open(port)
                if ready_seen:
                    assert is_open, "READY=1 arrived while the port was still closed"
                    break
                assert gw.proc.returncode is None, gw.log_text()
                await asyncio.sleep(0.01)
            async with http.get(f"{gw.base}/healthz") as resp:
                assert resp.status == 200
            ready = notify.with_key("READY")
            assert [n.fields["READY"] for n in ready] == ["1"]
            assert ready[0].fields["STATUS"].startswith("serving http://127.0.0.1:")
            assert notify.with_key("STOPPING") == []

            gw.send(signal.SIGTERM)
            stopping = await notify.wait_for("STOPPING", "1")
            assert await gw.wait_exit(timeout=2) == 0  # nothing in flight: no grace to wait
            assert stopping.at >= ready[0].at
            assert notify.with_key("WATCHDOG") == []  # no WATCHDOG_USEC, no pings


async def test_watchdog_pings_at_half_of_watchdog_usec(
    isolated_home: Path, router: FakeRouter
) -> None:
    """WATCHDOG_USEC=400000 (systemd's WatchdogSec=0.4) → WATCHDOG=1 about every 0.2 s."""
    port = free_port()
    write_config(isolated_home, router)
    async with NotifySocket() as notify:
        env = clean_env(
            isolated_home, HF_TOKEN=TOKEN, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="400000"
        )
        async with run_process(gateway_argv(port), env, port=port) as gw:
            await notify.wait_for("READY", "1", timeout=8)
            await asyncio.sleep(1.1)
            pings = [n.at for n in notify.with_key("WATCHDOG")]
            assert len(pings) >= 4, pings
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert all(0.1 < gap < 0.35 for gap in gaps), gaps
            gw.send(signal.SIGTERM)
            assert await gw.wait_exit() == 0


@pytest.mark.parametrize("run", [["run"], []], ids=["gateway run", "gateway"])
async def test_without_notify_socket_it_serves_and_stops_normally(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession, run: list[str]
) -> None:
    """No NOTIFY_SOCKET (a plain terminal run, `coderclaw gateway` or `gateway run`): notifying
    is a no-op, nothing else changes."""
    port = free_port()
    write_config(isolated_home, router)
    env = clean_env(isolated_home, HF_TOKEN=TOKEN, WATCHDOG_USEC="200000")
    argv = [sys.executable, "-m", "gateway", "gateway", *run, "--port", str(port)]
    async with run_process(argv, env, port=port) as gw:
        await gw.wait_healthy()
        resp = await chat(http, gw.v1)
        assert resp.status == 200
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0
    assert [e["level"] for e in gw.events() if e["level"] in ("error", "critical")] == []


async def test_the_log_line_of_a_request_answered_just_before_sigterm_is_written(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Request log lines wait a moment (LOG_DELAY) to go out together; stopping the gateway
    writes those still waiting before it exits."""
    port = free_port()
    write_config(isolated_home, router)
    async with run_process(
        gateway_argv(port), clean_env(isolated_home, HF_TOKEN=TOKEN), port=port
    ) as gw:
        await gw.wait_healthy()
        resp = await chat(http, gw.v1)
        assert resp.status == 200
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0
    events = [e["event"] for e in gw.events()]
    assert events.index("chat_completion") < events.index("gateway_stopped"), events


# -- drain -------------------------------------------------------------------------------------


@asynccontextmanager
async def streaming_gateway(
    home: Path, router: FakeRouter, http: aiohttp.ClientSession, *, drain: float
) -> AsyncIterator[tuple[GatewayProcess, aiohttp.ClientResponse, StreamResult]]:
    """``gateway run`` with ``drainSeconds`` = ``drain``, and one client stream (of what the
    test scripted for org/model-a) open, 200, its first event read: the moment to signal."""
    port = free_port()
    write_config(home, router, drainSeconds=drain)
    async with run_process(gateway_argv(port), clean_env(home, HF_TOKEN=TOKEN), port=port) as gw:
        await gw.wait_healthy()
        resp, result = await open_stream(http, gw.v1)
        assert resp.status == 200
        assert await read_event(resp, result) is not None
        yield gw, resp, result


async def test_sigterm_lets_a_stream_in_flight_finish_refuses_new_connections_and_exits_0(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """SIGTERM mid-stream (stream ~1.5 s, drainSeconds 5): the listener closes at once, the
    stream still ends with [DONE], and the process exits 0 right after it."""
    router.script("org/model-a", slow_stream(1.5))
    async with streaming_gateway(isolated_home, router, http, drain=5) as (gw, resp, result):
        gw.send(signal.SIGTERM)
        await gw.wait_event("gateway_draining")  # logged once the listener is closed
        assert not await port_open(gw.port), "a new connection was accepted while draining"
        await read_rest(resp, result)
        assert result.done and result.complete, result.events
        assert result.errors() == []
        assert await gw.wait_exit(timeout=3) == 0


async def test_a_stream_longer_than_the_grace_period_is_cut_with_an_sse_error_event(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """drainSeconds 1, a ~5 s stream: about 1 s after SIGTERM the client gets
    ``data: {"error": …}`` and a cleanly ended body without [DONE]; the process exits 0."""
    router.script("org/model-a", slow_stream(5, chunks=10))
    async with streaming_gateway(isolated_home, router, http, drain=1) as (gw, resp, result):
        gw.send(signal.SIGTERM)
        signalled = time.monotonic()
        await read_rest(resp, result)
        cut_after = time.monotonic() - signalled
        assert not result.done, result.events
        [error] = result.errors()
        assert "shutting down" in error["error"]["message"]
        assert json.loads(result.events[-1]) == error  # the error is the last event
        assert result.complete, "the cut stream should still end its body cleanly"
        assert 0.8 < cut_after < 1.9, cut_after  # at the end of the grace, not twice it
        assert await gw.wait_exit(timeout=3) == 0


async def test_a_second_sigint_exits_at_once(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """The first SIGINT drains (a long stream would keep it 10 s); the second exits now (130)."""
    router.script("org/model-a", slow_stream(8, chunks=16))
    async with streaming_gateway(isolated_home, router, http, drain=10) as (gw, resp, _):
        gw.send(signal.SIGINT)
        await gw.wait_event("gateway_draining")
        gw.send(signal.SIGINT)
        started = time.monotonic()
        assert await gw.wait_exit(timeout=3) == 130
        assert time.monotonic() - started < 1.0
        resp.close()


# -- reload ------------------------------------------------------------------------------------


async def test_sighup_and_config_edits_reload_a_valid_config_and_keep_the_old_on_a_broken_one(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession, stack: AsyncExitStack
) -> None:
    """SIGHUP with a new primary → the next request goes to it; SIGHUP with a broken config →
    an error is logged (naming the file) and requests keep working on the previous config; an
    edit of the file without any signal is picked up within ~2 s."""
    port = free_port()
    config = write_config(isolated_home, router, chain=[MODEL_A])
    notify = await stack.enter_async_context(NotifySocket())
    env = clean_env(isolated_home, HF_TOKEN=TOKEN, NOTIFY_SOCKET=notify.path)
    async with run_process(gateway_argv(port), env, port=port) as gw:
        await gw.wait_healthy()
        resp = await chat(http, gw.v1)
        assert resp.headers["x-coderclaw-model"] == MODEL_A

        write_config(isolated_home, router, chain=[MODEL_B])
        mark = len(gw.stderr)
        gw.send(signal.SIGHUP)
        reloaded = await gw.wait_event("config_reloaded", after=mark)
        assert reloaded["primary"] == MODEL_B
        resp = await chat(http, gw.v1)
        assert resp.status == 200
        assert resp.headers["x-coderclaw-model"] == MODEL_B
        assert router.chat_requests()[-1].model == "org/model-b"

        config.write_text('{ gateway: { port: "not a port" } }')
        mark = len(gw.stderr)
        gw.send(signal.SIGHUP)
        failed = await gw.wait_event("config_reload_failed", after=mark)
        assert failed["level"] == "error"
        assert str(config) in failed["error"] and "gateway.port" in failed["error"]
        resp = await chat(http, gw.v1)
        assert resp.status == 200
        assert resp.headers["x-coderclaw-model"] == MODEL_B

        await asyncio.sleep(1.2)  # the poller must not reload what SIGHUP already did
        assert [e["event"] for e in gw.events()[mark:] if e["event"].startswith("config_")] == [
            "config_reload_failed"
        ]
        mark = len(gw.stderr)
        write_config(isolated_home, router, chain=[MODEL_A])
        started = time.monotonic()
        edited = await gw.wait_event("config_reloaded", timeout=3, after=mark)
        assert time.monotonic() - started < 2.2
        assert edited["reason"] == "config file changed"
        resp = await chat(http, gw.v1)
        assert resp.headers["x-coderclaw-model"] == MODEL_A
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0
    # systemd waits for READY=1 after each RELOADING=1, whether the reload worked or not.
    states = [
        k for n in notify.notices for k in ("READY", "RELOADING", "STOPPING") if k in n.fields
    ]
    assert states == ["READY", *["RELOADING", "READY"] * 3, "STOPPING"]
    failed_ready = [n.fields["STATUS"] for n in notify.with_key("READY")][2]
    assert "previous config" in failed_ready


async def test_a_reload_that_moves_the_listener_says_a_restart_is_needed(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Port and bind are taken at start: a reload changing the address applies the rest, logs
    that the address needs a restart, and keeps serving where it listens."""
    port = free_port()
    write_config(isolated_home, router, chain=[MODEL_A])
    env = clean_env(isolated_home, HF_TOKEN=TOKEN)
    async with run_process(gateway_argv(port), env, port=port) as gw:
        await gw.wait_healthy()
        write_config(isolated_home, router, chain=[MODEL_B], bind="custom", host="127.0.0.2")
        gw.send(signal.SIGHUP)
        warning = await gw.wait_event("config_needs_restart")
        assert warning["listening"] == f"127.0.0.1:{port}"
        assert warning["configured"] == f"127.0.0.2:{port}"
        resp = await chat(http, gw.v1)
        assert resp.headers["x-coderclaw-model"] == MODEL_B
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0


# -- refusing to start -------------------------------------------------------------------------


async def test_a_broken_config_at_start_exits_78_naming_the_file_and_the_setting(
    isolated_home: Path, router: FakeRouter
) -> None:
    """EX_CONFIG (78) makes systemd stop restarting (RestartPreventExitStatus=78); the message
    names the file and the setting to fix."""
    port = free_port()
    config = write_config(isolated_home, router)
    config.write_text('{ gateway: { port: "not a port" } }')
    async with run_process(gateway_argv(port), clean_env(isolated_home), port=port) as gw:
        assert await gw.wait_exit(timeout=8) == 78
    assert str(config) in gw.log_text()
    assert "gateway.port" in gw.log_text()


async def test_bind_lan_without_a_gateway_token_exits_78_saying_how_to_set_one(
    isolated_home: Path, router: FakeRouter
) -> None:
    """Listening beyond loopback needs a gateway token; the message names both ways to set one."""
    port = free_port()
    write_config(isolated_home, router)
    env = clean_env(isolated_home, HF_TOKEN=TOKEN)
    async with run_process(gateway_argv(port, "--bind", "lan"), env, port=port) as gw:
        assert await gw.wait_exit(timeout=8) == 78
    text = gw.log_text()
    assert "gateway token" in text
    assert "gateway.auth.token" in text and "CODERCLAW_GATEWAY_TOKEN" in text
    assert not await port_open(port)


async def test_a_port_in_use_is_a_clear_error_naming_the_port(
    isolated_home: Path, router: FakeRouter
) -> None:
    """Another process holds the port: exit ≠ 0 with a message naming it; no READY=1 is sent."""
    write_config(isolated_home, router)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        async with NotifySocket() as notify:
            env = clean_env(isolated_home, HF_TOKEN=TOKEN, NOTIFY_SOCKET=notify.path)
            async with run_process(gateway_argv(port), env, port=port) as gw:
                status = await gw.wait_exit(timeout=8)
            assert notify.with_key("READY") == []
    assert status not in (0, 78)
    assert f"port {port}" in gw.log_text() and "already in use" in gw.log_text()


# -- the token ---------------------------------------------------------------------------------


async def test_a_token_added_to_the_env_file_is_used_after_a_restart(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Nothing secret lives in the unit: the gateway reads $STATE/.env at every start, so a
    token written there after the first start works after a plain restart."""
    port = free_port()
    config = write_config(isolated_home, router)
    env = clean_env(isolated_home)
    async with run_process(gateway_argv(port), env, port=port) as gw:
        await gw.wait_healthy()
        async with http.get(f"{gw.base}/readyz") as resp:
            assert resp.status == 503
            assert any("token" in r for r in (await resp.json())["reasons"])
        set_env_var(config.parent / ".env", "HF_TOKEN", TOKEN)
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0

    async with run_process(gateway_argv(port), env, port=port) as gw:
        await gw.wait_healthy()
        async with http.get(f"{gw.base}/readyz") as resp:
            assert resp.status == 200
        resp = await chat(http, gw.v1)
        assert resp.status == 200
        assert router.chat_requests()[-1].token == TOKEN
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0


# -- logs --------------------------------------------------------------------------------------


async def test_logs_are_json_lines_without_any_secret(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Not a TTY → every stderr line is a JSON event; neither the HF token nor the gateway token
    appears anywhere, through requests, an upstream auth failure, a failed reload of a config
    holding the token, and shutdown."""
    port = free_port()
    config = write_config(isolated_home, router, auth={"token": GW_TOKEN})
    router.script("org/model-a", Reply(status=401))
    env = clean_env(isolated_home, HF_TOKEN=TOKEN)
    async with run_process(gateway_argv(port), env, port=port) as gw:
        await gw.wait_healthy()
        resp = await chat(http, gw.v1)
        assert resp.status == 401  # no gateway token sent
        headers = {"Authorization": f"Bearer {GW_TOKEN}"}
        async with http.post(
            f"{gw.v1}/chat/completions",
            json={"messages": [{"role": "user", "content": f"my key is {TOKEN}"}]},
            headers=headers,
        ) as resp:
            assert resp.status in (401, 502)  # the router rejected the HF token
        config.write_text(config.read_text().replace(f'"{GW_TOKEN}"', f'"{GW_TOKEN}" oops'))
        mark = len(gw.stderr)
        gw.send(signal.SIGHUP)
        await gw.wait_event("config_reload_failed", after=mark)
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0

    events = gw.events()
    assert {"gateway_listening", "config_reload_failed", "gateway_stopped"} <= {
        e["event"] for e in events
    }
    assert all({"event", "level", "timestamp"} <= e.keys() for e in events)
    text = gw.log_text()
    assert TOKEN not in text
    assert GW_TOKEN not in text
