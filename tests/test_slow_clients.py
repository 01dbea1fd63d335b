"""Slow clients hold neither the gateway nor other clients back.

A client that sends its body a byte at a time waits alone, and gets a 408 once it stops
sending (``gateway.timeouts.idleSeconds``) or takes longer than ``totalSeconds``. A client that
opens a stream and never reads it fills its socket buffers and no more: the gateway stops
reading the upstream (backpressure all the way), other clients are served at full speed, and
the stream ends when the client goes away or the idle timeout passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fake_router import FakeRouter
from tests.gateway_harness import eventually, run_gateway, serve_app

GW_TOKEN = "gw-slow-Tn4Wq8Zk2Lp6Xv"
AUTH = {"Authorization": f"Bearer {GW_TOKEN}"}
ENV = {"CODERCLAW_GATEWAY_TOKEN": GW_TOKEN}
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


def timeouts(idle: float = 1.5, total: float = 30) -> dict[str, float]:
    return {"connectSeconds": 2, "firstTokenSeconds": 2, "idleSeconds": idle, "totalSeconds": total}


async def open_raw(base: str, **sockopts: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the gateway (``SO_*`` options set before connecting)."""
    host, port = base.removeprefix("http://").split("/")[0].split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for name, value in sockopts.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, name), value)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return await asyncio.open_connection(sock=sock)


def head(length: int, extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {GW_TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a Content-Length answer."""
    status_line = await reader.readline()
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def timed_chats(v1: str, count: int, **body: Any) -> list[float]:
    """Seconds each of ``count`` concurrent chat completions took (all must succeed)."""
    payload = {"messages": [{"role": "user", "content": "hi"}], **body}

    async def one(http: aiohttp.ClientSession) -> float:
        started = time.monotonic()
        async with http.post(f"{v1}/chat/completions", json=payload, headers=AUTH) as resp:
            await resp.read()
            assert resp.status == 200
        return time.monotonic() - started

    async with aiohttp.ClientSession() as http:
        return list(await asyncio.gather(*(one(http) for _ in range(count))))


# -- a body sent a byte at a time --------------------------------------------------------------


async def test_a_body_sent_a_byte_a_second_holds_back_nobody_and_gets_a_408_once_it_stops(
    isolated_home: Path, router: FakeRouter
) -> None:
    """Content-Length 200, 5 bytes over 5 s: meanwhile 20 rounds of 10 concurrent requests
    complete fast; 1.5 s (idleSeconds) after the last byte the trickler gets a 408 in the
    OpenAI shape with ``Connection: close``; nothing reached the upstream for it."""
    async with run_gateway(isolated_home, router, env=ENV, timeouts=timeouts(idle=1.5)) as (
        v1,
        _,
    ):
        reader, writer = await open_raw(v1)
        writer.write(head(200))
        await writer.drain()

        async def trickle() -> float:
            for byte in b'{"mes':
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)
            return time.monotonic() - 1.0  # when the last byte went out

        trickling = asyncio.create_task(trickle())
        durations: list[float] = []
        while not trickling.done():
            durations += await timed_chats(v1, 10)
            await asyncio.sleep(0.2)
        last_byte = await trickling
        status, headers, body = await asyncio.wait_for(read_answer(reader), 5)
        answered = time.monotonic()
        writer.close()

    assert len(durations) >= 200
    assert max(durations) < 0.5, max(durations)
    assert status == 408
    assert 1.4 < answered - last_byte < 2.5, answered - last_byte
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout"
    assert error["type"] == "invalid_request_error"
    assert "gateway.timeouts.idleSeconds" in error["message"]
    assert headers["connection"] == "close"
    assert len(router.chat_requests()) == len(durations)


async def test_a_body_that_keeps_trickling_is_cut_at_the_total_time_budget(
    isolated_home: Path, router: FakeRouter
) -> None:
    """A byte every 0.3 s never trips the idle timeout; totalSeconds (1.5 s) still ends it."""
    async with run_gateway(
        isolated_home, router, env=ENV, timeouts=timeouts(idle=1.0, total=1.5)
    ) as (v1, _):
        reader, writer = await open_raw(v1)
        started = time.monotonic()
        writer.write(head(len(BODY)))

        async def trickle() -> None:
            for byte in BODY:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.3)

        trickling = asyncio.create_task(trickle())
        status, _, body = await asyncio.wait_for(read_answer(reader), 5)
        elapsed = time.monotonic() - started
        trickling.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await trickling
        writer.close()
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert 1.4 < elapsed < 2.5, elapsed
    assert router.chat_requests() == []


async def test_a_body_that_arrives_in_pieces_within_the_idle_timeout_is_served(
    isolated_home: Path, router: FakeRouter
) -> None:
    """Slow but steady (a piece every 0.4 s, idleSeconds 1) is not a timeout."""
    async with run_gateway(isolated_home, router, env=ENV, timeouts=timeouts(idle=1.0)) as (v1, _):
        reader, writer = await open_raw(v1)
        writer.write(head(len(BODY)))
        for start in range(0, len(BODY), 12):
            writer.write(BODY[start : start + 12])
            await writer.drain()
            await asyncio.sleep(0.4)
        status, _, body = await asyncio.wait_for(read_answer(reader), 5)
        writer.close()
    assert status == 200
    assert json.loads(body)["choices"][0]["message"]["content"] == "Hello from org/model-a"


# -- a stream nobody reads ---------------------------------------------------------------------


@dataclass
class EndlessUpstream:
    """A router whose every stream goes on forever, counting the bytes it managed to send.

    ``sent`` grows only as fast as the gateway reads: once the gateway stops reading, the
    upstream's writes block (TCP backpressure) and ``sent`` stops growing.
    """

    url: str = ""
    base_url: str = ""
    sent: int = 0
    streams_ended: int = 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.json_response(
                {
                    "id": "plain",
                    "object": "chat.completion",
                    "model": "org/model-a",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "plain"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        piece = "x" * 8000
        n = 0
        try:
            while True:
                chunk = {
                    "id": "endless",
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": f"{n}:{piece}"}}],
                }
                data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
                await resp.write(data)
                self.sent += len(data)
                n += 1
        finally:
            self.streams_ended += 1

    @asynccontextmanager
    async def running(self) -> AsyncIterator[EndlessUpstream]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        async with serve_app(app, handler_cancellation=True, shutdown_timeout=0.2) as port:
            self.url = f"http://127.0.0.1:{port}"
            self.base_url = f"{self.url}/v1"
            yield self


async def wait_until_still(upstream: EndlessUpstream, quiet: float = 0.5) -> int:
    """Wait until ``sent`` stops growing for ``quiet`` seconds; return it."""
    last = -1
    async with asyncio.timeout(8):
        while upstream.sent != last:
            last = upstream.sent
            await asyncio.sleep(quiet)
    return last


async def open_unread_stream(v1: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection with a 4 KiB receive buffer that asks for a stream (then reads nothing)."""
    reader, writer = await open_raw(v1, SO_RCVBUF=4096)
    stream_body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True})
    writer.write(head(len(stream_body)) + stream_body.encode())
    await writer.drain()
    return reader, writer


async def test_a_stream_nobody_reads_stops_the_upstream_and_holds_back_no_one(
    isolated_home: Path,
) -> None:
    """A client with a 4 KiB receive buffer opens an endless stream and reads nothing: the
    gateway relays until the buffers are full, then stops reading the upstream (whose sent
    bytes stop growing while it could send gigabytes), while 30 other requests are answered
    fast; closing the socket ends the upstream stream."""
    upstream = EndlessUpstream()
    async with (
        upstream.running(),
        run_gateway(isolated_home, upstream, env=ENV, timeouts=timeouts(idle=30)) as (v1, _),
    ):
        _, writer = await open_unread_stream(v1)
        stalled_at = await wait_until_still(upstream)
        # What was sent sits in kernel socket buffers (a few MB on loopback), not in the gateway:
        # an endless stream has stopped, far below what the upstream could produce in 1 s.
        assert 0 < stalled_at < 64 * 1024 * 1024, stalled_at

        # The gateway's other clients, through the same upstream, do not notice.
        durations = await timed_chats(v1, 30)
        assert max(durations) < 0.5, max(durations)
        await asyncio.sleep(0.5)
        assert upstream.sent == stalled_at  # still held back, not buffered in the gateway
        assert upstream.streams_ended == 0

        writer.transport.abort()  # the client goes away without reading
        await eventually(lambda: upstream.streams_ended == 1)


async def test_a_stream_nobody_reads_is_ended_by_the_idle_timeout(isolated_home: Path) -> None:
    """With the client's buffers full, no write completes for idleSeconds (1 s): the gateway
    gives up on the stream, closes the client's connection and the upstream's stream."""
    upstream = EndlessUpstream()
    async with (
        upstream.running(),
        run_gateway(isolated_home, upstream, env=ENV, timeouts=timeouts(idle=1.0)) as (v1, state),
    ):
        reader, writer = await open_unread_stream(v1)
        await wait_until_still(upstream, quiet=0.3)
        started = time.monotonic()
        await eventually(lambda: upstream.streams_ended == 1 and state.open_streams == 0)
        ended_after = time.monotonic() - started
        # Whatever the client reads now ends; the connection is closed, not left hanging.
        async with asyncio.timeout(5):
            while await reader.read(65536):
                pass
        writer.close()
    assert ended_after < 2.0, ended_after
