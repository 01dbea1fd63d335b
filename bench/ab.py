#!/usr/bin/env python3
"""What a change costs on the request path: one gateway source tree against another.

    .venv/bin/python bench/ab.py --base DIR [--tree DIR2] [--shared ../shared/bench] [--rounds 4]

``DIR`` is a source tree of the gateway before the change (for example ``git archive
<commit> | tar -x -C DIR``), ``DIR2`` one with it (default: this tree); each runs from
``bench/.venv`` (see ``start_gateway.sh``) with ``PYTHONPATH`` set to it. Used for the ledger
(issue 14: the tree before the ledger rows) and for the breaker and hedging (issue 13: the tree
before the breaker). Both gateways run side by side against one shared ``fake_upstream.py``
(pinned to CPU 1, the upstream and this driver to CPU 0, as ``bench/dialects.py`` does), in
interleaved rounds with the order rotated. Per round and gateway:

* S1-like: 16 concurrent non-stream chat requests for ``--seconds``: the gateway's CPU
  microseconds per request (answers counted by the upstream's ``/_stats``);
* S3-like: 64 concurrent chat streams of 100 chunks: CPU ms per 1,000 upstream chunks;
* S0-like: 200 sequential non-stream requests: p50 latency through the gateway minus p50 of
  the same requests sent to the upstream directly (the added latency).

Prints a markdown table of medians ("after" = ``DIR2``, "before" = ``DIR``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dialects import (
    DIALECTS,
    EVENTS_PER_ANSWER,
    ROOT,
    answers,
    cpu_seconds,
    free_port,
    pinned,
    run_load,
    stop,
    wait_http,
)

CHAT = DIALECTS[0]
PLAIN = replace(CHAT, name="plain", body={**CHAT.body, "stream": False}, end=b'"choices"')
SEQUENTIAL = 200


async def plain_load(url: str, seconds: float, concurrency: int) -> int:
    """Non-stream chat requests for ``seconds``; how many got a 200."""
    ok = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal ok
            while time.monotonic() < deadline:
                async with http.post(url + PLAIN.path, json=PLAIN.body) as resp:
                    await resp.read()
                    ok += resp.status == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def p50_ms(url: str, headers: dict[str, str]) -> float:
    """The median time of SEQUENTIAL non-stream requests, one at a time on one connection."""
    times = []
    async with aiohttp.ClientSession() as http:
        for _ in range(SEQUENTIAL):
            started = time.perf_counter()
            async with http.post(url + PLAIN.path, json=PLAIN.body, headers=headers) as resp:
                await resp.read()
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


async def one_round(
    name: str,
    gw: str,
    pid: int,
    upstream: str,
    args: argparse.Namespace,
    out: dict[str, dict[str, list[float]]],
) -> None:
    await answers(upstream)
    await asyncio.sleep(0.5)
    c0 = cpu_seconds(pid)
    await plain_load(gw, args.seconds, 16)
    c1 = cpu_seconds(pid)
    served = await answers(upstream)
    out[name]["s1_cpu_us_per_request"].append((c1 - c0) / served * 1e6)
    await asyncio.sleep(0.5)
    c0 = cpu_seconds(pid)
    await run_load(gw, CHAT, args.seconds, 64)
    c1 = cpu_seconds(pid)
    served = await answers(upstream)
    out[name]["s3_cpu_ms_per_1000_chunks"].append((c1 - c0) / (served * EVENTS_PER_ANSWER) * 1e6)
    direct = await p50_ms(upstream, {"Authorization": "Bearer x"})
    through = await p50_ms(gw, {})
    out[name]["s0_added_p50_ms"].append(through - direct)


async def measure(
    args: argparse.Namespace, upstream: str, gateways: dict[str, tuple[str, int]]
) -> dict[str, dict[str, list[float]]]:
    keys = ("s1_cpu_us_per_request", "s3_cpu_ms_per_1000_chunks", "s0_added_p50_ms")
    out = {name: {k: [] for k in keys} for name in gateways}
    for gw, _ in gateways.values():  # warm-up
        await plain_load(gw, 1.0, 16)
        await run_load(gw, CHAT, 1.0, 64)
    names = list(gateways)
    for r in range(args.rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            gw, pid = gateways[name]
            await one_round(name, gw, pid, upstream, args, out)
    return out


def report(out: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    on, off = out["after"], out["before"]
    print(f"\n{args.rounds} interleaved rounds of {args.seconds:g} s per load\n")
    print("| measure | before (median) | after (median) | after / before (median of rounds) |")
    print("|---|---|---|---|")
    for key, label in (
        ("s1_cpu_us_per_request", "S1-like CPU µs per non-stream request (16 concurrent)"),
        ("s3_cpu_ms_per_1000_chunks", "S3-like CPU ms per 1,000 stream chunks (64 streams)"),
        ("s0_added_p50_ms", "S0-like added p50 latency, ms (sequential)"),
    ):
        a, b = statistics.median(off[key]), statistics.median(on[key])
        # Rounds are paired (the two gateways back to back): their ratio cancels the load
        # other processes put on the machine during the round.
        ratio = statistics.median(y / x for x, y in zip(off[key], on[key], strict=True))
        print(f"| {label} | {a:.3f} | {b:.3f} | {ratio:.2f}x |")
    print()
    print({name: {k: [round(v, 3) for v in vs] for k, vs in m.items()} for name, m in out.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the gateway source tree before the change")
    ap.add_argument("--tree", default=str(ROOT), help="the tree with the change (this one)")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    if not os.environ.get("NOPIN"):
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, {0})
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    fake = Path(args.shared) / "fake_upstream.py"
    start = str(ROOT / "bench" / "start_gateway.sh")
    with tempfile.TemporaryDirectory(prefix="coderclaw-ab-bench-") as logs:
        up = subprocess.Popen(
            pinned(
                0,
                [
                    sys.executable,
                    str(fake),
                    "--port",
                    str(up_port),
                    "--chunks",
                    "100",
                    "--chunk-delay-ms",
                    "1",
                ],
            ),
            stdout=open(Path(logs) / "upstream.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        procs = [up]
        gateways: dict[str, tuple[str, int]] = {}
        try:
            for name, tree in (("after", args.tree), ("before", args.base)):
                extra = {"PYTHONPATH": tree}
                port = free_port()
                gw = subprocess.Popen(
                    pinned(1, [start, str(port), upstream]),
                    stdout=open(Path(logs) / f"{port}.log", "wb"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **extra},
                )
                procs.append(gw)
                gateways[name] = (f"http://127.0.0.1:{port}", gw.pid)

            async def go() -> dict[str, dict[str, list[float]]]:
                await wait_http(f"{upstream}/v1/models", up)
                for (url, _), proc in zip(gateways.values(), procs[1:], strict=True):
                    await wait_http(f"{url}/healthz", proc)
                return await measure(args, upstream, gateways)

            out = asyncio.run(go())
        finally:
            stop(*procs[::-1])
    report(out, args)


if __name__ == "__main__":
    main()
