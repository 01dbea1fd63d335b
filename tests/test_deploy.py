"""deploy/install.sh on a fresh, throwaway HOME: venv under $STATE, the project installed from
this checkout, onboarding with HF_TOKEN (against the fake Hub), the service step (against the
recording systemctl), and the token nowhere but $STATE/.env."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from gateway.service.units import UNIT_NAME
from tests.conftest import clean_env
from tests.fake_router import FakeRouter
from tests.fake_service_manager import make_fake_managers

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "install.sh"
TOKEN = "hf_DeployTestTokenDoNotLeak0123456789"


async def run_install(env: dict[str, str], *args: str) -> tuple[int, str]:
    return await run_command(env, "bash", str(INSTALL), *args)


async def run_command(env: dict[str, str], *argv: str) -> tuple[int, str]:
    """Run without blocking the loop (the fake Hub answers onboarding meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=280)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            found.append(str(path.relative_to(root)))
    return found


@pytest.mark.timeout(300)
async def test_install_sh_on_a_fresh_home(tmp_path: Path, isolated_home: Path) -> None:
    """First run (--no-service): venv in $STATE/venv with a working `coderclaw --version`, a
    ~/.local/bin link, onboarding that checked HF_TOKEN with the Hub and saved it (0600) to
    $STATE/.env only. Second run (with the service): reuses the venv and installs the unit whose
    ExecStart is the venv's python. The token is in no output and no other file."""
    state = isolated_home / ".coderclaw"
    venv = state / "venv"
    fakes = make_fake_managers(tmp_path / "fakebin")
    async with FakeRouter() as router:
        state.mkdir(mode=0o700)
        hf = {"baseUrl": router.base_url, "hubUrl": router.url}
        (state / "coderclaw.json").write_text(
            json.dumps({"models": {"providers": {"huggingface": hf}}})
        )
        env = clean_env(
            isolated_home,
            HF_TOKEN=TOKEN,
            PYTHON=sys.executable,
            PATH=f"{fakes.bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            USER="tester",
            CODERCLAW_SERVICE_MANAGER="systemd",
        )
        for leaky in ("XDG_CONFIG_HOME", "VIRTUAL_ENV", "PYTHONPATH"):
            env.pop(leaky, None)

        rc, out = await run_install(env, "--no-service")
        assert rc == 0, out
        assert fakes.calls() == []
        assert "service not installed (--no-service)" in out
        whoami = [r for r in router.requests if r.path == "/api/whoami-v2"]
        assert [r.token for r in whoami] == [TOKEN]

        rc2, out2 = await run_install(env, "--port", "18811")
        assert rc2 == 0, out2
        assert "creating" not in out2

    version = await run_command(env, str(venv / "bin" / "coderclaw"), "--version")
    assert version == (0, f"coderclaw, version {__version__}\n")
    assert os.readlink(isolated_home / ".local/bin/coderclaw") == str(venv / "bin/coderclaw")

    dotenv = state / ".env"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    assert TOKEN in dotenv.read_text()
    assert files_containing(isolated_home, TOKEN.encode()) == [".coderclaw/.env"]
    assert TOKEN not in out + out2

    unit = (isolated_home / ".config/systemd/user" / UNIT_NAME).read_text()
    assert f"ExecStart={venv}/bin/python -m gateway gateway run --port 18811\n" in unit
    assert [c for c in fakes.calls() if c[0] == "systemctl"] == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", UNIT_NAME],
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option --bogus"),
        (["--port", "70000"], "is not a port number"),
        (["a", "b"], "one SOURCE only"),
    ],
)
def test_install_sh_rejects_bad_arguments_before_touching_anything(
    isolated_home: Path, args: list[str], message: str
) -> None:
    """A bad argument exits 2 with the reason and creates nothing under HOME."""
    proc = subprocess.run(
        ["bash", str(INSTALL), *args],
        env=clean_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert list(isolated_home.iterdir()) == []


def test_install_sh_refuses_an_old_python(isolated_home: Path, tmp_path: Path) -> None:
    """A Python older than 3.11 is refused with how to choose another, before any venv."""
    old = tmp_path / "python3.9"
    old.write_text('#!/bin/sh\ncase "$2" in *print*) echo 3.9 ;; *) exit 1 ;; esac\n')
    old.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(INSTALL), "--no-service"],
        env=clean_env(isolated_home, PYTHON=str(old)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert "is Python 3.9; CoderClaw needs 3.11+" in proc.stderr
    assert "PYTHON=" in proc.stderr
    assert not (isolated_home / ".coderclaw").exists()
