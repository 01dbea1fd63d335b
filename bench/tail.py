#!/usr/bin/env python3
"""Tail latency with a heavy-tailed primary (issue 13, SPEC §9): hedging on vs off.

    .venv/bin/python bench/tail.py [--clients 64] [--per-client 10]

Its own small aiohttp upstream on 127.0.0.1: the primary ``org/model-a`` answers 95 % of
requests after 0.3 s and every 20th after 10 s (the time to its status line and first chunk);
the fallback ``org/model-b`` after 0.05 s. One gateway process per scenario (stream or
non-stream, hedging on or off: ``gateway.hedge`` ``{}`` / ``{nonStream: true}`` vs
``{afterSeconds: false}``), 64 concurrent clients. Reports p50/p99 time to first byte (a
stream's first content chunk; a non-stream answer's body) and upstream requests per client
request, as a markdown table. Everything runs on 127.0.0.1 and is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
SLOW_EVERY = 20  # every 20th primary answer is slow: 5 %
FAST_S, SLOW_S, FALLBACK_S = 0.3, 10.0, 0.05
CHUNKS = 20
CONTENT = b'"content":"w'  # a stream's first content chunk (spaces removed)


class TailUpstream:
    """The heavy-tailed primary and a healthy fallback, counting requests per model."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._primary = itertools.count(1)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model"))
        self.counts[model] = self.counts.get(model, 0) + 1
        if model.endswith("model-a"):
            delay = SLOW_S if next(self._primary) % SLOW_EVERY == 0 else FAST_S
        else:
            delay = FALLBACK_S
        await asyncio.sleep(delay)
        words = [f"w{i} " for i in range(CHUNKS)]
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "".join(words)},
                        }
                    ],
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        with contextlib.suppress(ConnectionError):  # a hedge's loser: the gateway hung up
            await self._stream(request, resp, model, words)
        return resp

    async def _stream(
        self, request: web.Request, resp: web.StreamResponse, model: str, words: list[str]
    ) -> None:
        await resp.prepare(request)
        for i, word in enumerate([*words, ""]):
            chunk = {
                "id": "x",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": word},
                        "finish_reason": "stop" if i == len(words) else None,
                    }
                ],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_state(upstream: str, port: int, hedge: dict[str, Any]) -> Path:
    state = Path(tempfile.mkdtemp(prefix="coderclaw-tail."))
    config = {
        "agents": {
            "defaults": {
                "model": {
                    "primary": "huggingface/org/model-a",
                    "fallbacks": ["huggingface/org/model-b"],
                }
            }
        },
        "models": {
            "providers": {
                "huggingface": {"baseUrl": f"{upstream}/v1", "discovery": {"enabled": False}}
            }
        },
        "gateway": {"retries": 0, "bind": "loopback", "port": port, "hedge": hedge},
        "logging": {"level": "warning", "format": "json"},
    }
    (state / "coderclaw.json").write_text(json.dumps(config))
    env_file = state / ".env"
    env_file.write_text("HF_TOKEN=hf_benchmarkdummytoken000000\n")
    env_file.chmod(0o600)
    state.chmod(0o700)
    return state


async def wait_healthy(port: int, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        while True:
            if proc.returncode is not None:
                raise SystemExit(f"the gateway exited {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)


async def one_request(http: aiohttp.ClientSession, url: str, stream: bool) -> float:
    body = {
        "model": "coderclaw",
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    started = time.monotonic()
    async with http.post(url, json=body) as resp:
        if resp.status != 200:
            raise SystemExit(f"gateway answered {resp.status}: {await resp.text()}")
        first: float | None = None
        async for line in resp.content:
            if first is None and (not stream or CONTENT in line.replace(b" ", b"")):
                first = time.monotonic() - started
        assert first is not None
        return first


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(len(ordered) * q + 0.999999) - 1, 0)]


async def scenario(
    upstream: TailUpstream, upstream_url: str, stream: bool, hedging: bool, args: Any
) -> dict[str, Any]:
    port = free_port()
    hedge: dict[str, Any] = {}
    if not hedging:
        hedge = {"afterSeconds": False}
    elif not stream:
        hedge = {"nonStream": True}
    state = write_state(upstream_url, port, hedge)
    env = {**os.environ, "CODERCLAW_STATE_DIR": str(state), "HOME": str(state)}
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv/bin/coderclaw"),
        "gateway",
        "run",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_healthy(port, proc)
        upstream.counts.clear()
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def client() -> list[float]:
                return [await one_request(http, url, stream) for _ in range(args.per_client)]

            started = time.monotonic()
            results = await asyncio.gather(*(client() for _ in range(args.clients)))
            took = time.monotonic() - started
        firsts = [t for r in results for t in r]
        upstream_requests = sum(upstream.counts.values())
        return {
            "mode": "stream" if stream else "non-stream",
            "hedging": "on" if hedging else "off",
            "requests": len(firsts),
            "p50": percentile(firsts, 0.5),
            "p99": percentile(firsts, 0.99),
            "per_request": upstream_requests / len(firsts),
            "seconds": took,
        }
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        shutil.rmtree(state, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=10)
    args = parser.parse_args()
    upstream = TailUpstream()
    runner = web.AppRunner(upstream.app(), access_log=None)
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    rows = []
    try:
        for stream in (True, False):
            for hedging in (True, False):
                row = await scenario(
                    upstream, f"http://127.0.0.1:{upstream_port}", stream, hedging, args
                )
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    finally:
        await runner.cleanup()
    print(
        f"{args.clients} concurrent clients x {args.per_client} requests; primary 95 % at "
        f"{FAST_S} s, 5 % at {SLOW_S} s; fallback {FALLBACK_S} s\n"
    )
    print("| mode | hedging | requests | TTFB p50 | TTFB p99 | upstream requests / request |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['hedging']} | {r['requests']} | {r['p50']:.3f} s | "
            f"{r['p99']:.3f} s | {r['per_request']:.3f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
