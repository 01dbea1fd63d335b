"""Run the real gateway process and listen to what it tells systemd.

``GatewayProcess`` is ``python -m gateway gateway run`` (or any command line, such as the
``ExecStart`` of the rendered unit) as a real child process driven from the test's event loop, so
a ``FakeRouter`` in the same loop can serve it. ``NotifySocket`` is a real ``AF_UNIX`` datagram
socket standing in for systemd's ``NOTIFY_SOCKET``. Every child is killed by its PID on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gateway", "gateway", "run", "--port", str(port), *extra]


async def port_open(port: int) -> bool:
    """Whether a new TCP connection to 127.0.0.1:port is accepted."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# -- systemd unit ------------------------------------------------------------------------------


def unit_command(unit: str) -> tuple[list[str], dict[str, str]]:
    """The ``ExecStart`` argv and the ``Environment=`` values of a rendered unit.

    Quoting follows systemd for what the renderer emits: double quotes, backslash escapes,
    ``%%`` for ``%`` and ``$$`` for ``$``.
    """
    argv: list[str] = []
    environment: dict[str, str] = {}
    for line in unit.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "ExecStart":
            argv = [_unescape(word) for word in shlex.split(value)]
        elif key == "Environment":
            for word in shlex.split(value):
                name, _, val = _unescape(word).partition("=")
                environment[name] = val
    return argv, environment


def _unescape(word: str) -> str:
    return word.replace("%%", "%").replace("$$", "$")


# -- sd_notify ---------------------------------------------------------------------------------


@dataclass
class Notice:
    """One datagram received: when, and its ``KEY=value`` fields."""

    at: float
    fields: dict[str, str]


class NotifySocket:
    """A bound datagram socket read by a background task; ``path`` goes in ``NOTIFY_SOCKET``.

    Use ``async with NotifySocket() as notify:``; each datagram is stamped when it arrives.
    The socket lives in a short directory under /tmp: a unix socket path must fit in 108 bytes,
    which pytest's tmp paths do not always do.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="ccn-")
        self.path = str(Path(self._dir.name) / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.setblocking(False)
        self.notices: list[Notice] = []
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> NotifySocket:
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._sock.close()
        self._dir.cleanup()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 4096)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.notices.append(Notice(time.monotonic(), fields))
            self._arrived.set()

    async def wait_for(self, key: str, value: str | None = None, timeout: float = 5.0) -> Notice:  # noqa: ASYNC109
        """The first notice (already received or coming) with ``key`` (equal to ``value``)."""
        async with asyncio.timeout(timeout):
            while True:
                for notice in self.notices:
                    if key in notice.fields and value in (None, notice.fields[key]):
                        return notice
                self._arrived.clear()
                await self._arrived.wait()

    def with_key(self, key: str) -> list[Notice]:
        return [n for n in self.notices if key in n.fields]


# -- the process -------------------------------------------------------------------------------


@dataclass
class GatewayProcess:
    proc: asyncio.subprocess.Process
    port: int
    stderr: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.base}/v1"

    def send(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    async def wait_exit(self, timeout: float = 5.0) -> int:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in self.stderr]

    async def wait_event(self, event: str, timeout: float = 5.0, after: int = 0) -> dict[str, Any]:  # noqa: ASYNC109
        """The first log event named ``event`` among the lines from index ``after`` on."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.stderr[after:]:
                    if line.startswith("{") and json.loads(line).get("event") == event:
                        return dict(json.loads(line))
                if self.proc.returncode is not None:
                    raise AssertionError(f"gateway exited before {event!r}: {self.log_text()}")
                await asyncio.sleep(0.02)

    def log_text(self) -> str:
        return "\n".join(self.stderr)

    async def wait_healthy(self, timeout: float = 8.0) -> None:  # noqa: ASYNC109
        """Poll ``/healthz`` until it answers 200; fail at once if the process exits."""
        async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
            while True:
                if self.proc.returncode is not None:
                    status = self.proc.returncode
                    raise AssertionError(f"gateway exited {status}: {self.log_text()}")
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.get(f"{self.base}/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.03)


@asynccontextmanager
async def run_process(
    argv: Sequence[str], env: dict[str, str], *, port: int, cwd: Path | None = None
) -> AsyncIterator[GatewayProcess]:
    """Start ``argv``; collect its stderr lines; kill it by PID if it is still running at exit."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    gw = GatewayProcess(proc, port)
    reader = asyncio.create_task(_collect(proc, gw.stderr))
    try:
        yield gw
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
        await reader


async def _collect(proc: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert proc.stderr is not None
    async for raw in proc.stderr:
        lines.append(raw.decode(errors="replace").rstrip("\n"))


# -- HTTP --------------------------------------------------------------------------------------


@dataclass
class StreamResult:
    status: int
    headers: dict[str, str]
    events: list[str] = field(default_factory=list)
    complete: bool = True  # the body ended cleanly (chunked terminator received)

    @property
    def done(self) -> bool:
        return "[DONE]" in self.events

    def errors(self) -> list[dict[str, Any]]:
        """The ``data: {"error": …}`` events."""
        parsed = [json.loads(e) for e in self.events if e != "[DONE]"]
        return [p for p in parsed if isinstance(p, dict) and "error" in p]


_DATA = re.compile(r"^data: ?(.*)$")


async def open_stream(
    http: aiohttp.ClientSession, v1: str, **body: Any
) -> tuple[aiohttp.ClientResponse, StreamResult]:
    """Start a streaming chat completion; returns the live response and a result to fill."""
    payload = {"messages": [{"role": "user", "content": "hi"}], "stream": True, **body}
    resp = await http.post(f"{v1}/chat/completions", json=payload)
    return resp, StreamResult(resp.status, dict(resp.headers))


async def read_event(resp: aiohttp.ClientResponse, result: StreamResult) -> str | None:
    """The next ``data:`` payload, or None at the end of the body."""
    while True:
        try:
            line = await resp.content.readline()
        except aiohttp.ClientPayloadError:
            result.complete = False
            return None
        if not line:
            return None
        match = _DATA.match(line.decode().rstrip("\r\n"))
        if match:
            result.events.append(match.group(1))
            return match.group(1)


async def read_rest(resp: aiohttp.ClientResponse, result: StreamResult) -> StreamResult:
    while await read_event(resp, result) is not None:
        pass
    resp.release()
    return result


async def chat(http: aiohttp.ClientSession, v1: str, **body: Any) -> aiohttp.ClientResponse:
    """A non-streaming chat completion (the body is read before returning)."""
    payload = {"messages": [{"role": "user", "content": "hi"}], **body}
    async with http.post(f"{v1}/chat/completions", json=payload) as resp:
        await resp.read()
        return resp
