"""Helpers for the foundation tests: run the real ``coderclaw`` command as a child process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"
CLI_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Run:
    """What a child ``coderclaw`` did."""

    code: int
    out: str
    err: str


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> Run:
    """``python -m gateway ARGS`` as a real subprocess (blocking; no event loop needed)."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


async def arun_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> Run:
    """The same from async code, so an in-process fake server keeps serving meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())
