"""What the benchmark scripts share (standard library only): free ports on 127.0.0.1, CPU
pinning as the peer harness does it, waiting for a peer to answer, and the ``--env`` option."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """``argv`` run on CPU ``cpu`` (``taskset``), unless ``NOPIN`` is set or there is none."""
    if os.environ.get("NOPIN") or not shutil.which("taskset"):
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def add_env_option(ap: argparse.ArgumentParser, help_text: str) -> None:
    """``--env NAME VALUE`` (repeatable): an environment variable for the gateway."""
    ap.add_argument(
        "--env", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help=help_text
    )


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    seconds: float = 120,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Until ``url`` answers 200 (with ``headers``); exits when ``proc`` ends or time is up."""
    deadline = time.monotonic() + seconds
    req = urllib.request.Request(url, headers=dict(headers or {}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in {seconds} s")
