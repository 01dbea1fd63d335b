"""``coderclaw doctor``: the pure verdicts, and the real command against the fake router/Hub."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.catalog import Catalog, CatalogEntry
from gateway.discovery import save_cached_catalog
from gateway.doctor import Check, catalog_age_check, exit_code, format_check, service_check_from
from tests.cli_helpers import BAD_TOKEN, GOOD_TOKEN, assert_secret_absent, child_env, run_cli
from tests.daemon_harness import free_port
from tests.fake_router import FakeRouter, ModelsReply
from tests.gateway_harness import serve_app

# --------------------------------------------------------------------------- pure

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("fetched_at", "status", "words"),
    [
        (None, "warn", "no cached model list yet"),
        (NOW - 30, "ok", "30s old"),
        (NOW - 59 * 60, "ok", "59 min old"),
        (NOW - 3 * 3600, "warn", "3 h old"),
        (NOW - 9 * 86400, "warn", "9 days old"),
        (NOW + 60, "ok", "0s old"),
    ],
)
def test_catalog_age(fetched_at: float | None, status: str, words: str) -> None:
    """The cache is fine within two refresh intervals (+5 min), a warning past that or absent."""
    check = catalog_age_check(fetched_at, 60, NOW)
    assert check.status == status
    assert words in check.detail
    assert (check.fix is None) is (status == "ok")


@pytest.mark.parametrize(
    ("status", "verdict", "words"),
    [
        ({"manager": "systemd", "installed": False}, "warn", "not installed (systemd)"),
        (
            {"installed": True, "running": True, "detail": "active (running)"},
            "ok",
            "installed and running: active (running)",
        ),
        ({"installed": True, "running": False, "detail": "failed"}, "fail", "not running"),
        ({"installed": True, "running": None, "detail": "no bus"}, "warn", "state unknown"),
        ("weird", "warn", "unknown (weird)"),
    ],
)
def test_service_verdicts(status: Any, verdict: str, words: str) -> None:
    """Not installed is only a warning (the gateway can run in the foreground); installed but
    stopped fails with how to start it."""
    check = service_check_from(status)
    assert check.status == verdict
    assert words in check.detail


def test_format_and_exit_code() -> None:
    """One line per check, the fix on the next line; exit 1 only when something failed."""
    ok = Check("config", "ok", "fine")
    bad = Check("token", "fail", "missing", "run coderclaw onboard")
    assert format_check(ok) == "[ok  ] config   fine"
    assert format_check(bad) == "[FAIL] token    missing\n                → run coderclaw onboard"
    assert exit_code([ok, Check("catalog", "warn", "old", "refresh")]) == 0
    assert exit_code([ok, bad]) == 1


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    async with FakeRouter(tokens={GOOD_TOKEN}) as fake:
        yield fake


def _setup(state_dir: Path, router: FakeRouter, port: int, token: str | None) -> None:
    (state_dir / "coderclaw.json").write_text(
        json.dumps(
            {
                "models": {
                    "providers": {"huggingface": {"baseUrl": router.base_url, "hubUrl": router.url}}
                },
                "gateway": {"port": port},
            }
        )
    )
    if token is not None:
        (state_dir / ".env").write_text(f"HF_TOKEN={token}\n")
        (state_dir / ".env").chmod(0o600)  # as onboarding writes it


def _fresh_cache(state_dir: Path) -> None:
    catalog = Catalog(
        (CatalogEntry("org/model-a", source="discovered"),), "discovery", time.time() - 60
    )
    save_cached_catalog(state_dir / "cache" / "huggingface-models.json", catalog)


def _lines(out: str) -> dict[str, str]:
    """Check name → its line (and fix line), from the text output."""
    found: dict[str, str] = {}
    name = ""
    for line in out.splitlines():
        if line.startswith("["):
            name = line[7:].split()[0]
            found[name] = line
        elif name:
            found[name] += "\n" + line
    return found


async def test_everything_ok(router: FakeRouter, state_dir: Path, isolated_home: Path) -> None:
    """A valid config, an accepted token, a reachable router, a fresh cache and a free port:
    exit 0, one line each, the token only masked."""
    port = free_port()
    _setup(state_dir, router, port, GOOD_TOKEN)
    _fresh_cache(state_dir)
    run = await run_cli("doctor", env=child_env(isolated_home))
    assert run.code == 0, run.text
    lines = _lines(run.out)
    assert list(lines) == ["files", "config", "token", "router", "catalog", "port", "service"]
    assert lines["files"].startswith("[ok  ] files")
    assert lines["config"].startswith("[ok  ] config")
    assert lines["token"] == (
        "[ok  ] token    hf_G…fXYZ from HF_TOKEN, accepted by Hugging Face (user coderclaw-tester)"
    )
    assert lines["router"].startswith(f"[ok  ] router   {router.base_url} answers (")
    assert lines["catalog"].startswith("[ok  ] catalog  cached model list is")
    assert lines["port"] == f"[ok  ] port     127.0.0.1:{port} is free for the gateway"
    assert_secret_absent(GOOD_TOKEN, run.out, run.err)
    (models_call,) = router.models_calls
    assert models_call.token == GOOD_TOKEN


async def test_problems_each_say_what_to_do(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """A rejected token, a router answering 500 and a port held by something that is not the
    gateway each fail with a fix; exit 1; the token is never printed in full."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    squatter = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = squatter.sockets[0].getsockname()[1]
    router.models_reply = ModelsReply(status=500)
    _setup(state_dir, router, port, BAD_TOKEN)
    try:
        run = await run_cli("doctor", env=child_env(isolated_home))
    finally:
        squatter.close()
        await squatter.wait_closed()
    assert run.code == 1, run.text
    lines = _lines(run.out)
    assert lines["token"].startswith("[FAIL] token    hf_B…aaBB from HF_TOKEN, rejected")
    assert "→ run `coderclaw onboard` with a valid token" in lines["token"]
    assert lines["router"].startswith("[FAIL] router   the router answered 500")
    assert "baseUrl" in lines["router"]
    assert lines["port"].startswith(f"[FAIL] port     127.0.0.1:{port} is in use")
    assert "coderclaw config set gateway.port" in lines["port"]
    assert lines["catalog"].startswith("[WARN] catalog  no cached model list yet")
    assert_secret_absent(BAD_TOKEN, run.out, run.err)


async def test_a_running_gateway_on_the_port_is_ok(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """When the port is taken by something answering /healthz 200 (the gateway), it is ok."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    async with serve_app(app, shutdown_timeout=0.1) as port:
        _setup(state_dir, router, port, GOOD_TOKEN)
        run = await run_cli("doctor", "--json", env=child_env(isolated_home))
    report = json.loads(run.out)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["port"] == {
        "name": "port",
        "status": "ok",
        "detail": f"the gateway answers on 127.0.0.1:{port} (/healthz 200)",
        "fix": None,
    }
    assert report["ok"] is (run.code == 0)
    assert_secret_absent(GOOD_TOKEN, run.out, run.err)


async def test_no_token_points_at_onboarding(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """Without any token, the token check fails and says to run onboarding."""
    _setup(state_dir, router, free_port(), None)
    run = await run_cli("doctor", env=child_env(isolated_home))
    assert run.code == 1
    token = _lines(run.out)["token"]
    assert token.startswith("[FAIL] token    no Hugging Face token")
    assert "coderclaw onboard --auth-choice huggingface-api-key" in token


async def test_invalid_config_fails_and_skips_the_rest(
    state_dir: Path, isolated_home: Path
) -> None:
    """A broken config is the first line (file, path, reason); the other checks are skipped."""
    (state_dir / "coderclaw.json").write_text('{ gateway: { port: "high" } }')
    run = await run_cli("doctor", env=child_env(isolated_home))
    assert run.code == 1
    lines = _lines(run.out)
    assert lines["config"].startswith("[FAIL] config")
    assert "gateway.port" in lines["config"]
    assert all(lines[n].startswith(f"[skip] {n}") for n in ("token", "router", "port"))
