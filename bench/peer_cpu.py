#!/usr/bin/env python3
"""Which peer used the shared core while another one was being measured.

The harness pins every peer to the same core and measures them one after another, so work a
peer still does after its own round (LITELLM keeps answering the requests wrk gave up on)
lands in the next peer's round. Run beside the harness:

    bench/peer_cpu.py record samples.txt 420 &      # every 50 ms: CPU ticks per peer, wrk's port
    ../shared/bench/run_peers.sh --extra CODERCLAW ...
    bench/peer_cpu.py windows samples.txt 18010     # per round of that port: CPU of the others

Only reads /proc; stdlib only.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

PEERS = {
    "litellm": "LITELLM",
    "coderclaw": "CODERCLAW",
    "aiohttp_min": "AIOHTTP_MIN",
    "nginx": "NGINX",
}
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def sample() -> tuple[str, dict[str, int]]:
    """wrk's target port (or '') and the CPU ticks of each peer's processes, summed."""
    port, ticks = "", {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            if argv[0] == "wrk":
                port = argv[-2].split(":")[-1].split("/")[0]
                continue
            name = next((v for k, v in PEERS.items() if any(k in a for a in argv)), None)
            if name is None or any("peer_cpu" in a or "run_peers" in a for a in argv):
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[name] = ticks.get(name, 0) + int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            continue
    return port, ticks


def record(path: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    with open(path, "w") as out:
        while time.monotonic() < end:
            port, ticks = sample()
            cpu = " ".join(f"{k}={v}" for k, v in ticks.items())
            out.write(f"{time.time():.3f} {port or '-'} {cpu}\n")
            out.flush()
            time.sleep(0.05)


def windows(path: str, port: str) -> None:
    rows = []
    with open(path) as f:
        for line in f:
            t, wrk, *rest = line.split()
            rows.append((float(t), wrk, {k: int(v) for k, v in (p.split("=") for p in rest)}))
    spans: list[list[Any]] = []  # [start, end, the port measured before]
    last, before = "-", "-"
    for t, wrk, _ in rows:
        if wrk != last and wrk != "-":
            if wrk == port:
                spans.append([t, t, before])
            before = wrk
        if wrk == port and spans:
            spans[-1][1] = t
        last = wrk
    for start, end, previous in spans:
        inside = [r[2] for r in rows if start <= r[0] <= end]
        first, final = inside[0], inside[-1]
        used = {k: round((final[k] - first.get(k, 0)) * TICK_MS) for k in final}
        print(f"{end - start:4.1f} s after port {previous}: CPU ms {used}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "record":
        record(sys.argv[2], float(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "windows":
        windows(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
