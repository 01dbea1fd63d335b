"""Who else may change the gateway's files (SPEC §12): a state dir, config or ``.env`` that group
or others can write, or that another user owns, stops the start with exit 78 naming the file and
the command that fixes it, and fails a reload (the old config stays); a ``.env`` that others can
read is a warning; ``coderclaw doctor`` reports each problem with its fix.

Real ``coderclaw`` processes against the fake router. The tests run as root here, so "owned by
another user" is made with ``os.chown`` to another uid (skipped when not root).
"""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.file_safety import Kind, mode_problems
from tests.cli_helpers import child_env, run_cli
from tests.conftest import clean_env
from tests.daemon_harness import chat, free_port, gateway_argv, run_process
from tests.fake_router import FakeRouter
from tests.gateway_harness import TOKEN, write_config

ME, ROOT, OTHER = 1000, 0, 4242
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can chown to another uid")

# ---------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("kind", "mode", "uid", "expected"),
    [
        ("config file", 0o600, ME, []),
        ("config file", 0o644, ME, []),
        ("config file", 0o400, ME, []),
        ("config file", 0o644, ROOT, []),
        ("config file", 0o620, ME, [("error", "writable by group or others (mode 0620)")]),
        ("config file", 0o602, ME, [("error", "writable by group or others (mode 0602)")]),
        ("config file", 0o666, ME, [("error", "writable by group or others (mode 0666)")]),
        ("config file", 0o600, OTHER, [("error", "owned by another user (uid 4242)")]),
        (
            "config file",
            0o666,
            OTHER,
            [("error", "owned by another user"), ("error", "writable by group")],
        ),
        ("env file", 0o600, ME, []),
        ("env file", 0o640, ME, [("warning", "readable by group or others (mode 0640)")]),
        ("env file", 0o644, ME, [("warning", "readable by group or others (mode 0644)")]),
        ("env file", 0o604, ME, [("warning", "readable by group or others (mode 0604)")]),
        ("env file", 0o666, ME, [("error", "writable by group or others (mode 0666)")]),
        ("state dir", 0o700, ME, []),
        ("state dir", 0o755, ME, []),
        ("state dir", 0o1777, ME, [("error", "writable by group or others (mode 1777)")]),
        ("state dir", 0o777, ME, [("error", "writable by group or others (mode 0777)")]),
        ("state dir", 0o770, ME, [("error", "writable by group or others (mode 0770)")]),
    ],
)
def test_mode_problems(
    kind: Kind, mode: int, uid: int, expected: list[tuple[str, str]]
) -> None:
    """Writable by group/others or owned by another user (root allowed) is an error; an env file
    readable by group/others is a warning; everything else is fine."""
    problems = mode_problems("/p", kind, stat.S_IFREG | mode, uid, ME, "me")
    assert [p.severity for p in problems] == [severity for severity, _ in expected]
    for problem, (_, text) in zip(problems, expected, strict=True):
        assert text in problem.detail


@pytest.mark.parametrize(
    ("kind", "mode", "uid", "fix"),
    [
        ("config file", 0o666, ME, "chmod 600 /p"),
        ("env file", 0o644, ME, "chmod 600 /p"),
        ("state dir", 0o777, ME, "chmod 700 /p"),
        ("config file", 0o600, OTHER, "sudo chown me /p"),
    ],
)
def test_each_problem_names_the_command_that_fixes_it(
    kind: Kind, mode: int, uid: int, fix: str
) -> None:
    """The fix is a chmod (600 for files, 700 for the state dir) or a chown to the user."""
    (problem,) = mode_problems("/p", kind, mode, uid, ME, "me")
    assert problem.fix.startswith(fix)


# ------------------------------------------------------------------------- a real start


def _chmod(mode: int) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        path.chmod(mode)

    return change


def _chown_other(path: Path) -> None:
    os.chown(path, OTHER, OTHER)


def _setup(home: Path, router: FakeRouter) -> tuple[Path, Path, Path]:
    """(state dir 0700, config 0600, .env 0600 with the token) — all fine to start with."""
    config = write_config(home, router, chain=["huggingface/org/model-a"])
    config.chmod(0o600)
    env_file = config.parent / ".env"
    env_file.write_text(f"HF_TOKEN={TOKEN}\n")
    env_file.chmod(0o600)
    return config.parent, config, env_file


HOSTILE = [
    pytest.param("config", _chmod(0o666), "chmod 600", id="config-0666"),
    pytest.param("config", _chmod(0o620), "chmod 600", id="config-0620"),
    pytest.param("state", _chmod(0o777), "chmod 700", id="state-dir-0777"),
    pytest.param("env", _chmod(0o646), "chmod 600", id="env-0646"),
    pytest.param("config", _chown_other, "chown", id="config-other-uid", marks=as_root),
    pytest.param("env", _chown_other, "chown", id="env-other-uid", marks=as_root),
    pytest.param("state", _chown_other, "chown", id="state-dir-other-uid", marks=as_root),
]


def _target(which: str, state: Path, config: Path, env_file: Path) -> Path:
    return {"state": state, "config": config, "env": env_file}[which]


@pytest.mark.parametrize(("which", "breaks", "fix"), HOSTILE)
async def test_a_start_with_a_file_others_can_change_exits_78_naming_it_and_the_fix(
    isolated_home: Path,
    router: FakeRouter,
    which: str,
    breaks: Callable[[Path], None],
    fix: str,
) -> None:
    """`gateway run` refuses to start (exit 78, no port opened, no request upstream); the
    message names the file and the chmod/chown that fixes it, never the token."""
    state, config, env_file = _setup(isolated_home, router)
    target = _target(which, state, config, env_file)
    breaks(target)
    port = free_port()
    async with run_process(gateway_argv(port), clean_env(isolated_home), port=port) as gw:
        assert await gw.wait_exit(timeout=8) == 78
    text = gw.log_text()
    assert str(target) in text
    assert f"{fix}" in text and str(target) in text.split(fix, 1)[1]
    assert TOKEN not in text
    assert router.requests == []


async def test_a_start_with_a_world_readable_env_file_warns_with_the_fix_and_serves(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """A 0644 .env is only readable by others: the gateway starts, logs one warning naming the
    file and `chmod 600`, and serves."""
    _, _, env_file = _setup(isolated_home, router)
    env_file.chmod(0o644)
    port = free_port()
    async with run_process(gateway_argv(port), clean_env(isolated_home), port=port) as gw:
        await gw.wait_healthy()
        warning = await gw.wait_event("settings_warning")
        assert str(env_file) in warning["detail"] and f"chmod 600 {env_file}" in warning["detail"]
        assert "readable by group or others" in warning["detail"]
        assert (await chat(http, gw.v1)).status == 200
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0
    assert TOKEN not in gw.log_text()


async def test_a_default_umask_config_0644_is_accepted(
    isolated_home: Path, router: FakeRouter
) -> None:
    """A config written with the default umask (0644) is not writable by others: it starts."""
    _, config, _ = _setup(isolated_home, router)
    config.chmod(0o644)
    port = free_port()
    async with run_process(gateway_argv(port), clean_env(isolated_home), port=port) as gw:
        await gw.wait_healthy()
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0


async def test_a_reload_with_a_newly_world_writable_config_keeps_the_old_one(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Another user made the config world-writable and pointed baseUrl at their listener:
    SIGHUP fails the reload naming the file and the chmod, the old config keeps serving, the
    listener gets nothing; after `chmod 600` the next reload applies."""
    state, config, _ = _setup(isolated_home, router)
    port = free_port()
    async with FakeRouter() as thief:
        async with run_process(gateway_argv(port), clean_env(isolated_home), port=port) as gw:
            await gw.wait_healthy()
            assert (await chat(http, gw.v1)).status == 200
            data = json.loads(config.read_text())
            data["models"]["providers"]["huggingface"]["baseUrl"] = thief.base_url
            config.write_text(json.dumps(data))
            config.chmod(0o666)
            mark = len(gw.stderr)
            gw.send(signal.SIGHUP)
            failed = await gw.wait_event("config_reload_failed", after=mark)
            assert str(config) in failed["error"] and f"chmod 600 {config}" in failed["error"]
            assert failed["kept"] == "previous"
            resp = await chat(http, gw.v1)
            assert resp.status == 200
            assert router.chat_requests()[-1].token == TOKEN
            assert thief.requests == []

            config.chmod(0o600)
            mark = len(gw.stderr)
            gw.send(signal.SIGHUP)
            await gw.wait_event("config_reloaded", after=mark)
            gw.send(signal.SIGTERM)
            assert await gw.wait_exit() == 0
        assert TOKEN not in gw.log_text()
    assert state.exists()


# --------------------------------------------------------------------------------- doctor


async def test_doctor_reports_each_file_problem_with_its_fix(
    isolated_home: Path, router: FakeRouter
) -> None:
    """A 0777 state dir, a 0666 config and a 0644 .env: doctor lists each as its own `files`
    line with the chmod that fixes it (two FAIL, one WARN), exits 1, and still checks the rest."""
    state, config, env_file = _setup(isolated_home, router)
    state.chmod(0o777)
    config.chmod(0o666)
    env_file.chmod(0o644)
    run = await run_cli("doctor", "--json", env=child_env(isolated_home))
    assert run.code == 1, run.text
    checks = json.loads(run.out)["checks"]
    files = [c for c in checks if c["name"] == "files"]
    assert [(c["status"], c["fix"]) for c in files] == [
        ("fail", f"chmod 700 {state}"),
        ("fail", f"chmod 600 {config}"),
        ("warn", f"chmod 600 {env_file}"),
    ]
    assert all(str(p) in c["detail"] for c, p in zip(files, (state, config, env_file), strict=True))
    assert {c["name"]: c["status"] for c in checks}["config"] == "ok"
    assert TOKEN not in run.text


async def test_doctor_reports_file_problems_even_when_the_config_does_not_load(
    isolated_home: Path, router: FakeRouter
) -> None:
    """A broken and world-writable config: the file line and the config failure both show."""
    _, config, _ = _setup(isolated_home, router)
    config.write_text("{ gateway: { port: 'x' } }")
    config.chmod(0o666)
    run = await run_cli("doctor", env=child_env(isolated_home))
    assert run.code == 1
    assert f"[FAIL] files    {config}: the config file is writable" in run.out
    assert f"→ chmod 600 {config}" in run.out
    assert "[FAIL] config" in run.out and "gateway.port" in run.out
