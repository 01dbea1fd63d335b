"""A locked or full database never fails a request: the real gateway process, its ledger, and
another process (or a file-size limit) in the way.

The database is locked by a child process holding ``BEGIN EXCLUSIVE`` for 5 s; the full disk
is a file-size limit (``RLIMIT_FSIZE``, set on the running gateway with ``prlimit``; SIGXFSZ is
ignored, as a process on a full disk gets ENOSPC instead of a signal). Either way: every
request succeeds meanwhile, one ``database_write_failed`` line is logged, and once the way is
clear the rows written are exactly the requests made.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from gateway.ledger.usage import UsageRow, recent
from tests.conftest import clean_env
from tests.daemon_harness import GatewayProcess, free_port, gateway_argv, run_process
from tests.fake_router import FakeRouter
from tests.gateway_harness import TOKEN, eventually, write_config
from tests.test_ledger_db import hold_lock

REF_A = "huggingface/org/model-a"


@asynccontextmanager
async def gateway(home: Path, router: FakeRouter) -> AsyncIterator[GatewayProcess]:
    write_config(home, router)
    port = free_port()
    # Ignored signals survive exec: the gateway gets EFBIG from a write past RLIMIT_FSIZE.
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        process = run_process(gateway_argv(port), clean_env(home, HF_TOKEN=TOKEN), port=port)
        gw = await process.__aenter__()
    finally:
        signal.signal(signal.SIGXFSZ, previous)
    try:
        await gw.wait_healthy()
        yield gw
    finally:
        await process.__aexit__(None, None, None)


def rows_of(db: Path, *, live: bool = False) -> list[UsageRow]:
    """The ledger's rows, oldest first. ``live``: while the gateway runs, read-only and closed
    at once, so the test's reads cannot stand in the writer's way."""
    target, uri = (f"file:{db}?mode=ro", True) if live else (str(db), False)
    with contextlib.closing(sqlite3.connect(target, uri=uri, timeout=0.2)) as conn:
        return recent(conn, 1000)[::-1]


def row_count(db: Path) -> Callable[[], int]:
    def count() -> int:
        try:
            return len(rows_of(db, live=True))
        except sqlite3.OperationalError:  # locked for a moment
            return -1

    return count


async def rows_reach(db: Path, n: int, gw: GatewayProcess, within_s: float = 20.0) -> None:
    """Wait until the ledger has ``n`` rows (a batch is due every 0.5 s); fail with the
    gateway's log lines other than the per-request ones."""
    try:
        await eventually(lambda: row_count(db)() == n, timeout=within_s)
    except TimeoutError:
        others = [line for line in gw.stderr if '"chat_completion"' not in line]
        raise AssertionError(f"{row_count(db)()} rows, not {n}; gateway log: {others}") from None


async def requests(session: aiohttp.ClientSession, gw: GatewayProcess, n: int) -> list[str]:
    """``n`` chat requests (every other one streamed), each answered 200 within 2 s; their
    request ids."""
    ids = []
    for i in range(n):
        body = {
            "model": REF_A,
            "messages": [{"role": "user", "content": "one two three"}],
            "stream": i % 2 == 1,
        }
        started = time.monotonic()
        async with session.post(f"{gw.v1}/chat/completions", json=body) as resp:
            await resp.read()
            assert resp.status == 200
            ids.append(resp.headers["x-request-id"])
        assert time.monotonic() - started < 2.0
    return ids


def check_rows(rows: list[UsageRow], ids: list[str]) -> None:
    """The rows are the requests, in order, each with the fake's token counts."""
    assert [r.request_id for r in rows] == ids
    for r in rows:
        assert (r.outcome, r.served, r.provider) == ("ok", REF_A, "together")
        assert (r.input_tokens, r.output_tokens) == (3, 3)


async def stop(gw: GatewayProcess) -> None:
    gw.send(signal.SIGTERM)
    assert await gw.wait_exit(15) == 0


def write_failures(gw: GatewayProcess) -> int:
    return sum(1 for e in gw.events() if e.get("event") == "database_write_failed")


async def test_a_database_locked_for_5s_by_another_process_fails_no_request(
    isolated_home: Path, router: FakeRouter
) -> None:
    """While another process holds the lock for 5 s every request succeeds at its usual
    speed; one line is logged; after the lock clears the rows are all there, exact."""
    db = isolated_home / ".coderclaw" / "coderclaw.db"
    async with gateway(isolated_home, router) as gw, aiohttp.ClientSession() as session:
        ids = await requests(session, gw, 5)
        await rows_reach(db, 5, gw)
        locker = await asyncio.to_thread(hold_lock, db, 5.0)
        try:
            ids += await requests(session, gw, 20)
            await asyncio.sleep(1.0)  # a batch is due every 0.5 s: it meets the lock
            assert locker.poll() is None, "the lock was released before the test was done"
        finally:
            assert await asyncio.to_thread(locker.wait, 15) == 0
        await rows_reach(db, 25, gw)
        await stop(gw)
    assert write_failures(gw) == 1
    check_rows(rows_of(db), ids)


async def test_a_full_state_dir_fails_no_request_and_the_rows_follow_when_space_returns(
    isolated_home: Path, router: FakeRouter
) -> None:
    """With the gateway's file-size limit at 1 byte (no file may grow) every request still
    succeeds; one line is logged; with the limit lifted the waiting rows are written."""
    db = isolated_home / ".coderclaw" / "coderclaw.db"
    async with gateway(isolated_home, router) as gw, aiohttp.ClientSession() as session:
        ids = await requests(session, gw, 5)
        await rows_reach(db, 5, gw)
        pid = gw.proc.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
        try:
            ids += await requests(session, gw, 20)
            await eventually(lambda: write_failures(gw) >= 1, timeout=10)
            assert row_count(db)() == 5  # nothing could be written
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        await rows_reach(db, 25, gw)  # the writer retries at most 4 s apart
        await stop(gw)
    assert write_failures(gw) == 1
    check_rows(rows_of(db), ids)
