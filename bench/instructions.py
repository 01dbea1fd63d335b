#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: an A/B of the request path that the
machine's load does not move.

    .venv/bin/python bench/instructions.py [--shared DIR] [--base TREE] [--requests 1000]

CPU time per request on a shared 2-core machine moves by ±20 % from round to round; the number
of instructions a request costs moves by ±2 %. Each peer (this tree's gateway; ``--base``
TREE's, for example ``git archive <commit> | tar -x -C TREE``; AIOHTTP_MIN) runs under
``valgrind --tool=callgrind --cache-sim=no`` against one shared ``fake_upstream.py``; after 300
warm-up requests the counters are zeroed (``callgrind_control -z``), ``--requests``
non-stream chat completions are sent 32 at a time (as in S1), and the counters dumped
(``callgrind_control -d``): their total over all of the process's threads (the ledger's
writer too), ÷ the requests. The peers run one after the other, each about a minute.

Instructions are not time: they leave out the kernel (system calls) and cache misses, so
the gateway's ratio to AIOHTTP_MIN in CPU time is ~10 % above its ratio in instructions. The
targets are met in the peer benchmark; this finds and sizes what to change. Needs valgrind
(``apt-get install valgrind``). Everything started is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from benchkit import free_port, pinned, wait_http

ROOT = Path(__file__).resolve().parent.parent
BODY = {
    "model": "org/model-a",
    "stream": False,
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "Say hello."}],
}
HEADERS = {"Authorization": "Bearer sk-bench"}  # what the harness's clients send
VALGRIND = ["valgrind", "--tool=callgrind", "--cache-sim=no"]


async def send(url: str, count: int, concurrency: int = 32) -> int:
    """``count`` chat completions, ``concurrency`` at a time; how many got a 200."""
    left, ok = count, 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def worker() -> None:
            nonlocal left, ok
            while left > 0:
                left -= 1
                async with http.post(url, json=BODY, headers=HEADERS) as resp:
                    await resp.read()
                    ok += resp.status == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def instructions(out: Path) -> int:
    """The ``summary:`` total of callgrind's dump files ``out.*`` (the one ``-d`` wrote)."""
    total = 0
    for dump in out.parent.glob(out.name + ".*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("summary:"):
                total += int(line.split()[1])
    return total


def measure(
    name: str, argv: list[str], port: int, requests: int, logs: Path, tree: str | None
) -> float:
    """Instructions per request of the peer started by ``argv`` (listening on ``port``): a
    gateway of source ``tree`` started by ``start_gateway.sh`` (which runs it under
    ``BENCH_WRAP``), or with ``tree`` None a plain command run under valgrind."""
    out = logs / f"callgrind.{name}"
    wrap = [*VALGRIND, f"--callgrind-out-file={out}"]
    env = dict(os.environ)
    if tree is not None:
        env |= {"PYTHONPATH": tree, "BENCH_WRAP": " ".join(wrap)}
    else:
        argv = [*wrap, *argv]
    with open(logs / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(pinned(1, argv), stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        # Under valgrind a peer takes ~10 s to start.
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc, 300, HEADERS)
        asyncio.run(send(url, 300))
        time.sleep(1)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        ok = asyncio.run(send(url, requests))
        time.sleep(1.5)  # the ledger's writer commits its last batch
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        if ok != requests:
            sys.exit(f"{name}: {requests - ok} of {requests} requests failed")
        return instructions(out) / requests
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--base", help="a gateway source tree to compare with (before a change)")
    ap.add_argument("--requests", type=int, default=1000)
    args = ap.parse_args()
    if not os.environ.get("NOPIN"):
        os.sched_setaffinity(0, {0})
    shared = Path(args.shared)
    python = str(ROOT / "bench" / ".venv" / "bin" / "python")
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    with tempfile.TemporaryDirectory(prefix="coderclaw-instructions-") as tmp:
        logs = Path(tmp)
        up = subprocess.Popen(
            pinned(0, [python, str(shared / "fake_upstream.py"), "--port", str(up_port)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # The gateways as the peer benchmark starts them; a --base tree's from bench/.venv
            # with PYTHONPATH set to it.
            start = str(ROOT / "bench" / "start_gateway.sh")
            peers: list[tuple[str, list[str], int, str | None]] = []
            for name, tree in (("CODERCLAW", str(ROOT)), ("BASE", args.base)):
                if tree is not None:
                    port = free_port()
                    peers.append((name, [start, str(port), upstream], port, tree))
            port = free_port()
            minimal = [python, str(shared / "aiohttp_min_proxy.py"), "--port", str(port)]
            peers.append(("AIOHTTP_MIN", [*minimal, "--upstream", upstream], port, None))
            found = {
                name: measure(name, argv, p, args.requests, logs, tree)
                for name, argv, p, tree in peers
            }
        finally:
            up.terminate()
            up.wait(30)
    floor = found["AIOHTTP_MIN"]
    print(f"\n{args.requests} non-stream requests, 32 at a time\n")
    print("| peer | instructions per request | ÷ AIOHTTP_MIN |")
    print("|---|---|---|")
    for name, value in found.items():
        print(f"| {name} | {value:,.0f} | {value / floor:.2f} |")


if __name__ == "__main__":
    main()
