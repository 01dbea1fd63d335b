#!/usr/bin/env python3
"""The peer benchmark's S4 for the gateway and AIOHTTP_MIN only: idle and peak RSS, and the ratio.

    .venv/bin/python bench/rss.py [--shared DIR] [--base TREE] [--rounds 1] [--runs 1]

Starts the shared ``fake_upstream.py``, the gateway (``bench/start_gateway.sh``, from
``bench/.venv``) and ``aiohttp_min_proxy.py`` on 127.0.0.1, the peers pinned to CPU 1 and the
upstream, the load and the samplers to CPU 0 (``NOPIN=1`` turns it off), as ``run_peers.sh``
does. Then, as the harness does before its S4, a short warm-up through both peers (non-stream
at 1, 32 and 64 connections, 64 streams of 100 chunks at 1 ms, the fallback requests: the
gateway's RSS before S4 in a full run is after S0-S3, not fresh; ``--no-warm`` skips it), and
per round and peer S4 itself: ``loadgen.py -c STREAMS -n 1`` with the upstream sending 30
chunks at 100 ms, the peer's RSS (its process tree, from /proc) sampled every 100 ms by the
harness's own ``benchutil.py sample-rss``. Prints the RSS of each peer at start, before S4 and
at its peak (MiB), and gateway ÷ AIOHTTP_MIN; with ``--runs N`` all that N times over with fresh
processes, and the median first-round figures (the peak varies by a few MiB from run to run with
the machine's load). Everything started is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchkit import add_env_option, free_port, pinned, wait_http

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-rss"
AUTH = {"Authorization": f"Bearer {KEY}"}  # the gateway token the gateway gets here


class Bench:
    def __init__(self, args: argparse.Namespace, logs: Path) -> None:
        self.args = args
        self.shared = Path(args.shared)
        self.logs = logs
        self.py = args.python
        self.procs: list[subprocess.Popen[bytes]] = []
        self.upstream = ""

    def start(
        self, name: str, cpu: int, argv: list[str], env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                pinned(cpu, argv), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
        self.procs.append(proc)
        return proc

    def util(self, *argv: str) -> str:
        cmd = pinned(0, [self.py, str(self.shared / "benchutil.py"), *argv])
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()

    def rss_mib(self, pid: int) -> float:
        return int(self.util("rss", str(pid))) / 1024

    def upcfg(self, latency_ms: float, chunks: int, delay_ms: float) -> None:
        body = json.dumps({"latency_ms": latency_ms, "chunks": chunks, "chunk_delay_ms": delay_ms})
        req = urllib.request.Request(
            f"{self.upstream}/_config",
            data=body.encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def loadgen(self, port: int, *argv: str, limit: float = 120) -> dict[str, object]:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        cmd = pinned(0, [self.py, str(self.shared / "loadgen.py"), "--url", url, *argv])
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
            env={**os.environ, "BENCH_KEY": KEY},
        ).stdout.strip()
        return json.loads(out.splitlines()[-1]) if out else {}

    def warm(self, port: int, gateway: bool) -> None:
        """S0-S3 (shortened) and, for the gateway, the harness's fallback requests."""
        self.upcfg(0, 20, 0)
        self.loadgen(port, "-c", "1", "-d", "1", "--no-stream")
        self.loadgen(port, "-c", "32", "-d", "2", "--no-stream")
        self.upcfg(50, 20, 0)
        self.loadgen(port, "-c", "64", "-d", "2", "--no-stream")
        self.upcfg(0, 100, 1)
        self.loadgen(port, "-c", "64", "-d", "2", "--timeout", "30")
        if gateway:
            self.upcfg(0, 20, 0)
            for model, n, mode in (
                ("org/model-a", 20, "--no-stream"),
                ("fail503/x", 3, "--no-stream"),
                ("fail503/noretry", 10, "--no-stream"),
                ("org/model-a", 10, "--stream"),
                ("fail503/noretry", 5, "--stream"),
            ):
                self.loadgen(port, "-c", "1", "-n", str(n), mode, "--model", model)

    def s4(self, pid: int, port: int) -> tuple[float, dict[str, object]]:
        peak_file = self.logs / f"peak-{pid}"
        peak_file.write_text("0")
        sampler = subprocess.Popen(
            pinned(
                0,
                [
                    self.py,
                    str(self.shared / "benchutil.py"),
                    "sample-rss",
                    str(pid),
                    str(peak_file),
                ],
            )
        )
        try:
            out = self.loadgen(
                port, "-c", str(self.args.streams), "-n", "1", "--timeout", "90", limit=120
            )
            time.sleep(0.2)
        finally:
            sampler.send_signal(signal.SIGTERM)
            sampler.wait(10)
        return int(peak_file.read_text()) / 1024, out

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def run(args: argparse.Namespace, logs: Path, turn: int = 0) -> dict[str, dict[str, object]]:
    bench = Bench(args, logs)
    up_port, gw_port, min_port = free_port(), free_port(), free_port()
    bench.upstream = f"http://127.0.0.1:{up_port}"
    try:
        up = bench.start(
            "upstream",
            0,
            [args.python, str(bench.shared / "fake_upstream.py"), "--port", str(up_port)],
            {},
        )
        wait_http(f"{bench.upstream}/v1/models", up, headers=AUTH)
        peers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        if "gateway" in args.only:
            env = {"BENCH_KEY": KEY, **dict(args.env)}
            argv = [str(ROOT / "bench" / "start_gateway.sh"), str(gw_port), bench.upstream]
            peers["gateway"] = (bench.start("gateway", 1, argv, env), gw_port)
        if args.base:  # another source tree of the gateway, from this tree's bench/.venv
            base_port = free_port()
            env = {
                "BENCH_KEY": KEY,
                "BENCH_VENV": str(ROOT / "bench" / ".venv"),
                "PYTHONPATH": args.base,
                **dict(args.env),
            }
            argv = [str(ROOT / "bench" / "start_gateway.sh"), str(base_port), bench.upstream]
            peers["base"] = (bench.start("base", 1, argv, env), base_port)
        if "min" in args.only:
            argv = [
                args.python,
                str(bench.shared / "aiohttp_min_proxy.py"),
                "--port",
                str(min_port),
                "--upstream",
                bench.upstream,
            ]
            peers["AIOHTTP_MIN"] = (bench.start("aiohttp_min", 1, argv, {}), min_port)
        for proc, port in peers.values():
            wait_http(f"http://127.0.0.1:{port}/v1/models", proc, headers=AUTH)
        time.sleep(1)
        rss: dict[str, dict[str, object]] = {}
        for name, (proc, _) in peers.items():
            rss[name] = {"start": bench.rss_mib(proc.pid)}
        if not args.no_warm:
            for name, (_, port) in peers.items():
                bench.warm(port, name == "gateway")
            time.sleep(2)
        bench.upcfg(0, args.chunks, 100)
        names = list(peers)
        order = names[turn % len(names) :] + names[: turn % len(names)]  # rotated run by run
        for r in range(args.rounds):
            for name in order:
                proc, port = peers[name]
                before = bench.rss_mib(proc.pid)
                peak, out = bench.s4(proc.pid, port)
                rss[name].setdefault("before", []).append(before)  # type: ignore[union-attr]
                rss[name].setdefault("peak", []).append(peak)  # type: ignore[union-attr]
                print(
                    f"round {r + 1} {name}: before {before:.1f} MiB, peak {peak:.1f} MiB, "
                    f"ok {out.get('ok')}, peak_open {out.get('peak_open')}, "
                    f"errors {out.get('errors')}",
                    file=sys.stderr,
                )
                time.sleep(2)
        report(rss)
        return rss
    finally:
        bench.stop()


def report(rss: dict[str, dict[str, object]]) -> None:
    print("| peer | RSS at start MiB | RSS before S4 MiB | RSS peak MiB (per round) |")
    print("|---|---|---|---|")
    for name, figures in rss.items():
        before = figures.get("before", [])
        peak = figures.get("peak", [])
        assert isinstance(before, list) and isinstance(peak, list)
        print(
            f"| {name} | {figures['start']:.1f} | {' / '.join(f'{v:.1f}' for v in before)} "
            f"| {' / '.join(f'{v:.1f}' for v in peak)} |"
        )
    if "gateway" in rss and "AIOHTTP_MIN" in rss:
        gw, mn = rss["gateway"], rss["AIOHTTP_MIN"]
        ratios = [g / m for g, m in zip(gw["peak"], mn["peak"], strict=True)]  # type: ignore[call-overload]
        print(f"\npeak RSS gateway / AIOHTTP_MIN: {' / '.join(f'{x:.3f}' for x in ratios)}")
    print(json.dumps(rss))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--shared",
        default=str(ROOT.parent / "shared" / "bench"),
        help="the peer benchmark's folder (fake_upstream.py, aiohttp_min_proxy.py, loadgen.py)",
    )
    ap.add_argument(
        "--python",
        default=str(ROOT / "bench" / ".venv" / "bin" / "python"),
        help="runs the upstream, AIOHTTP_MIN and the load (needs aiohttp and uvloop)",
    )
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1, help="fresh processes each time; medians")
    ap.add_argument("--no-warm", action="store_true", help="S4 on fresh processes")
    ap.add_argument("--only", default="gateway,min", help="peers: gateway, min")
    ap.add_argument(
        "--base",
        help="a gateway source tree to measure beside this one (e.g. main's, from git archive)",
    )
    add_env_option(ap, "an environment variable for the gateway")
    args = ap.parse_args()
    if not Path(args.python).exists():
        args.python = sys.executable
    runs = []
    for turn in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="coderclaw-rss-") as logs:
            runs.append(run(args, Path(logs), turn))
    if args.runs > 1:
        median_report(runs)


def median_report(runs: list[dict[str, dict[str, object]]]) -> None:
    """The median over the runs of each figure of the first round, and of the ratio."""
    print(f"\nmedians of {len(runs)} runs (first round):")
    print("| peer | RSS at start MiB | RSS before S4 MiB | RSS peak MiB | peaks |")
    print("|---|---|---|---|---|")
    for name in runs[0]:
        start = [float(r[name]["start"]) for r in runs]  # type: ignore[arg-type]
        before = [r[name]["before"][0] for r in runs]  # type: ignore[index]
        peak = [r[name]["peak"][0] for r in runs]  # type: ignore[index]
        print(
            f"| {name} | {statistics.median(start):.1f} | {statistics.median(before):.1f} "
            f"| {statistics.median(peak):.1f} | {' / '.join(f'{v:.1f}' for v in peak)} |"
        )
    if "AIOHTTP_MIN" in runs[0]:
        for name in (n for n in runs[0] if n != "AIOHTTP_MIN"):
            ratios = [
                r[name]["peak"][0] / r["AIOHTTP_MIN"]["peak"][0]  # type: ignore[index]
                for r in runs
            ]
            print(
                f"peak RSS {name} / AIOHTTP_MIN, median of runs: {statistics.median(ratios):.3f} "
                f"({' / '.join(f'{x:.3f}' for x in ratios)})"
            )


if __name__ == "__main__":
    main()
