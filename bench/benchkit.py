"""What the benchmark scripts share (standard library only): free ports on 127.0.0.1, CPU
pinning as the peer harness does it, and the ``--env`` option."""

from __future__ import annotations

import argparse
import os
import shutil
import socket


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
