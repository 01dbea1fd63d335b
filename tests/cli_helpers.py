"""Helpers for tests that run the real ``coderclaw`` command as a child process."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import clean_env

DATA = Path(__file__).parent / "data"
# The provider page's non-interactive onboarding, up to the token that follows it.
ONBOARD_WITH_KEY = (
    "onboard",
    "--non-interactive",
    "--mode",
    "local",
    "--auth-choice",
    "huggingface-api-key",
    "--huggingface-api-key",
)
CODERCLAW = str(Path(sys.executable).parent / "coderclaw")
VENV_BIN = str(Path(sys.executable).parent)
GOOD_TOKEN = "hf_GoodToken0123456789abcdefXYZ"
OTHER_TOKEN = "hf_OtherToken9876543210zyxwvuQRS"
BAD_TOKEN = "hf_BadToken5555555555aaaaaaaaaaBB"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """``clean_env`` with the venv's bin on PATH (so a shell finds ``coderclaw``)."""
    env = clean_env(home, **extra)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    return env


async def _communicate(
    argv: list[str],
    env: dict[str, str],
    cwd: Path | None,
    timeout: float,  # noqa: ASYNC109
) -> Run:
    """Run ``argv`` with stdin closed; the event loop keeps serving fakes meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def run_cli(*args: str, env: dict[str, str], timeout: float = 30) -> Run:  # noqa: ASYNC109
    """Run the ``coderclaw`` console script."""
    return await _communicate([CODERCLAW, *args], env, None, timeout)


async def run_module(*args: str, env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run ``python -m gateway ARGS`` (the other documented entry point)."""
    return await _communicate([sys.executable, "-m", "gateway", *args], env, cwd, 30)


def run_module_sync(*args: str, env: dict[str, str], cwd: Path | None = None) -> Run:
    """``python -m gateway ARGS`` from a test without an event loop."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


async def run_shell(script: str, *, env: dict[str, str], timeout: float = 30) -> Run:  # noqa: ASYNC109
    """Run ``script`` with /bin/sh, exactly as a user would type it."""
    return await _communicate(["/bin/sh", "-c", script], env, None, timeout)


def router_config(router_url: str, base_url: str, body: str = "") -> str:
    """A JSON5 config pointing the router and the Hub at the fake, plus ``body`` keys."""
    return (
        "// written by the test\n{\n"
        f'  models: {{ providers: {{ huggingface: {{ baseUrl: "{base_url}", '
        f'hubUrl: "{router_url}" }} }} }},\n'
        f"{body}"
        "}\n"
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def assert_secret_absent(secret: str, *texts: str) -> None:
    """The full secret appears in none of the texts (its masked form may)."""
    for text in texts:
        assert secret not in text, "a secret was printed in full"


# A hand-written config with comments, every section and a ${VAR}: what editing must keep.
EDIT_BASE = """// hand-written, with comments
{
  agents: {
    defaults: {
      model: {
        primary: "huggingface/deepseek-ai/DeepSeek-R1",
        fallbacks: ["huggingface/Qwen/Qwen3-8B"],  // cheap backup
      },
      models: {
        "huggingface/Qwen/Qwen3-8B": { alias: "Qwen3 8B" },
        "huggingface/openai/gpt-oss-120b": { alias: "GPT-OSS" },
      },
    },
  },
  models: {
    providers: { huggingface: { apiKey: "${HF_TOKEN}", discovery: { refreshMinutes: 30 } } },
  },
  gateway: { port: 18790, timeouts: { idleSeconds: 45 } },
  env: { vars: { EXTRA: "x" } },
  logging: { level: "debug" },
}
"""
