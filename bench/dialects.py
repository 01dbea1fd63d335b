#!/usr/bin/env python3
"""CPU per 1,000 upstream chunks of each dialect, side by side in one run.

    .venv/bin/python bench/dialects.py [--shared ../shared/bench] [--rounds 4] [--seconds 2]

The peer benchmark's S3 shape (64 concurrent streams of 100 chunks at 1 ms from the shared
``fake_upstream.py``) sent through one gateway (``bench/start_gateway.sh``) as chat completions,
Responses and Messages streams, in interleaved rounds with the order rotated. The gateway is
pinned to CPU 1, the upstream and this driver to CPU 0 (as the harness does; ``NOPIN=1`` turns
it off). Per round: the gateway's CPU seconds (from /proc) over the upstream chunks it relayed
(answers counted by the upstream's ``/_stats``, times the 102 events of an answer). Prints a
markdown table of medians, and each dialect's ratio to the chat path (median of per-round
ratios). Everything runs on 127.0.0.1 and is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from benchkit import add_env_option, free_port, pinned

ROOT = Path(__file__).resolve().parent.parent
CHUNKS = 100
EVENTS_PER_ANSWER = CHUNKS + 2  # content chunks, the finish chunk, the usage chunk
PROMPT = [{"role": "user", "content": "Say hello."}]


@dataclass(frozen=True)
class Dialect:
    name: str
    path: str
    body: dict[str, object]
    headers: dict[str, str]
    end: bytes  # the bytes that end a complete stream


DIALECTS = (
    Dialect(
        "chat",
        "/v1/chat/completions",
        {
            "model": "org/model-a",
            "stream": True,
            "max_tokens": 200,
            "messages": PROMPT,
            "stream_options": {"include_usage": True},
        },
        {},
        b"data: [DONE]",
    ),
    Dialect(
        "responses",
        "/v1/responses",
        {"model": "org/model-a", "stream": True, "max_output_tokens": 200, "input": "Say hello."},
        {},
        b"event: response.completed",
    ),
    Dialect(
        "messages",
        "/v1/messages",
        {"model": "org/model-a", "stream": True, "max_tokens": 200, "messages": PROMPT},
        {"anthropic-version": "2023-06-01"},
        b"event: message_stop",
    ),
)


@dataclass
class Load:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (the gateway execs, so it is one)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args} exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not answer in {seconds} s")


async def stream_once(http: aiohttp.ClientSession, url: str, d: Dialect, load: Load) -> None:
    try:
        async with http.post(url + d.path, json=d.body, headers=d.headers) as resp:
            if resp.status != 200:
                await resp.read()
                load.errors[f"http_{resp.status}"] += 1
                return
            # The end marker is looked for in the whole stream, not in its last bytes: a
            # Responses stream's last event carries the whole response after its marker.
            tail, ended = b"", False
            async for piece in resp.content.iter_any():
                seen = tail + piece
                ended = ended or d.end in seen
                tail = seen[-len(d.end) :]
            if ended:
                load.ok += 1
            else:
                load.errors["truncated"] += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        load.errors[type(exc).__name__] += 1


async def run_load(url: str, d: Dialect, seconds: float, concurrency: int) -> Load:
    load = Load()
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker() -> None:
            while time.monotonic() < deadline:
                await stream_once(http, url, d, load)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return load


async def answers(upstream: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{upstream}/_stats?reset=1") as r:
        stats = await r.json()
    return sum(v for k, v in stats.items() if k.endswith(" 200"))


async def measure(args: argparse.Namespace, upstream: str, gateway: str, gw_pid: int) -> None:
    chosen = tuple(d for d in DIALECTS if d.name in args.only.split(","))
    for d in chosen:  # warm-up, and a check that each dialect answers at all
        load = await run_load(gateway, d, args.warm, args.concurrency)
        if not load.ok:
            raise SystemExit(f"{d.name}: no complete stream in the warm-up: {dict(load.errors)}")
    cpu: dict[str, list[float]] = {d.name: [] for d in chosen}
    errors: Counter[str] = Counter()
    for r in range(args.rounds):
        order = chosen[r % len(chosen) :] + chosen[: r % len(chosen)]
        for d in order:
            await answers(upstream)
            await asyncio.sleep(0.5)  # let the last round's log lines go out
            c0 = cpu_seconds(gw_pid)
            load = await run_load(gateway, d, args.seconds, args.concurrency)
            c1 = cpu_seconds(gw_pid)
            served = await answers(upstream)
            errors.update({f"{d.name} {k}": v for k, v in load.errors.items()})
            cpu[d.name].append((c1 - c0) / (served * EVENTS_PER_ANSWER) * 1e6)
    report(cpu, errors, args)


def run(args: argparse.Namespace) -> None:
    """Start the upstream and the gateway, measure, stop both by PID."""
    if not os.environ.get("NOPIN"):
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, {0})
    up_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    gateway = f"http://127.0.0.1:{gw_port}"
    fake = Path(args.shared) / "fake_upstream.py"
    up_argv = [sys.executable, str(fake), "--port", str(up_port), "--chunks", str(CHUNKS)]
    gw_argv = [str(ROOT / "bench" / "start_gateway.sh"), str(gw_port), upstream]
    with (
        tempfile.TemporaryDirectory(prefix="coderclaw-dialects-") as logs,
        open(Path(logs) / "upstream.log", "wb") as up_log,
        open(Path(logs) / "gateway.log", "wb") as gw_log,
    ):
        up = subprocess.Popen(
            pinned(0, [*up_argv, "--chunk-delay-ms", "1"]), stdout=up_log, stderr=subprocess.STDOUT
        )
        gw = subprocess.Popen(
            pinned(1, gw_argv),
            stdout=gw_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **dict(args.env)},
        )
        try:
            asyncio.run(start_and_measure(args, upstream, gateway, up, gw))
        finally:
            stop(gw, up)


async def start_and_measure(
    args: argparse.Namespace,
    upstream: str,
    gateway: str,
    up: subprocess.Popen[bytes],
    gw: subprocess.Popen[bytes],
) -> None:
    await wait_http(f"{upstream}/v1/models", up)
    await wait_http(f"{gateway}/healthz", gw)
    await measure(args, upstream, gateway, gw.pid)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def report(cpu: dict[str, list[float]], errors: Counter[str], args: argparse.Namespace) -> None:
    chat = cpu["chat"]
    print(
        f"\n{args.rounds} rounds of {args.seconds:g} s, {args.concurrency} streams of "
        f"{CHUNKS} chunks at 1 ms; extra env: {dict(args.env) or 'none'}\n"
    )
    print("| dialect | CPU ms per 1,000 upstream chunks (median) | spread | / chat (median) |")
    print("|---|---|---|---|")
    for name, values in cpu.items():
        med = statistics.median(values)
        spread = (max(values) - min(values)) / med if med else 0.0
        ratio = statistics.median(v / c for v, c in zip(values, chat, strict=True))
        print(f"| {name} | {med:.1f} | {spread:.0%} | {ratio:.2f}x |")
    print(f"\nerrors: {dict(errors) or 'none'}")
    print(json.dumps({"cpu_ms_per_1000_chunks": cpu}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--shared",
        default=str(ROOT.parent / "shared" / "bench"),
        help="the peer benchmark's folder (for fake_upstream.py)",
    )
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--warm", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--only", default="chat,responses,messages", help="dialects, comma-separated")
    add_env_option(ap, "an environment variable for the gateway (e.g. a config switch)")
    args = ap.parse_args()
    run(args)


if __name__ == "__main__":
    main()
