"""The state dir's database: 0600 from birth, WAL, versioned migrations, and a writer that
survives a locked database and a full disk without an exception reaching the caller."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC
from pathlib import Path

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from gateway.ledger.breaker import load_breaker, save_breaker
from gateway.ledger.config import BudgetConfig, ResponsesConfig, UsageConfig
from gateway.ledger.db import Database
from gateway.ledger.responses import ResponseStore
from gateway.ledger.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    DatabaseError,
    connect,
    db_path,
    migrate,
    open_migrated,
    schema_version,
)
from gateway.ledger.usage import LedgerWriter, UsageRow, insert_rows, recent
from gateway.settings import Paths
from tests.test_ledger_usage import make_rows

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.fixture
def zero_umask() -> Iterator[None]:
    """umask 0: a file created without an explicit mode would be world-readable."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_the_database_lives_in_the_state_dir(tmp_path: Path) -> None:
    paths = Paths.from_env({"HOME": str(tmp_path), "CODERCLAW_STATE_DIR": str(tmp_path / "s")})
    assert db_path(paths) == tmp_path / "s" / "coderclaw.db"


def test_database_and_its_wal_files_are_0600_even_with_umask_0(
    tmp_path: Path, zero_umask: None
) -> None:
    """The file is created 0600 before SQLite opens it; the -wal and -shm files follow it;
    the state dir is created 0700."""
    path = tmp_path / "state" / "coderclaw.db"
    conn = open_migrated(path)
    insert_rows(conn, make_rows(3, time.time()))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for name in ("coderclaw.db", "coderclaw.db-wal", "coderclaw.db-shm"):
        assert mode(path.parent / name) == 0o600, name
    assert mode(path.parent) == 0o700
    conn.close()


def test_an_existing_world_readable_database_is_narrowed_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "coderclaw.db"
    sqlite3.connect(path).close()
    path.chmod(0o644)
    connect(path).close()
    assert mode(path) == 0o600


@pytest.mark.parametrize("start", range(LATEST_VERSION))
def test_a_database_at_any_older_version_is_migrated_to_the_latest_keeping_its_rows(
    tmp_path: Path, start: int
) -> None:
    conn = connect(tmp_path / "coderclaw.db")
    migrate(conn, target=start)
    assert schema_version(conn) == start
    if start >= 1:
        insert_rows(conn, make_rows(5, 1_700_000_000.0))
    assert migrate(conn) == LATEST_VERSION
    assert schema_version(conn) == LATEST_VERSION == len(MIGRATIONS)
    assert {"usage", "responses", "response_items", "breaker_snapshot"} <= tables(conn)
    if start >= 1:
        assert len(recent(conn, 100)) == 5
    assert migrate(conn) == LATEST_VERSION  # nothing left to do
    conn.close()


def test_a_database_from_a_newer_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "coderclaw.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    with pytest.raises(DatabaseError, match="newer") as caught:
        open_migrated(path)
    assert caught.value.hint is not None and "upgrade" in caught.value.hint
    db = Database(path)
    with pytest.raises(DatabaseError, match=f"schema version {LATEST_VERSION + 1}"):
        db.open()
    db.close()


def test_a_file_that_is_not_a_database_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "coderclaw.db"
    path.write_bytes(b"this is not SQLite, just text that is long enough " * 40)
    with pytest.raises(DatabaseError, match="not a SQLite database"):
        open_migrated(path)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "coderclaw.db", busy_timeout_s=0.5, retry_max_s=0.5)
    await database.start()
    yield database
    await database.stop()


async def test_breaker_snapshot_is_replaced_whole_and_read_back_in_order(db: Database) -> None:
    assert await load_breaker(db) == []
    save_breaker(db, [{"ref": "a", "state": "open", "until": 12.5}, {"ref": "b"}])
    save_breaker(db, [{"ref": "c", "state": "half_open"}, {"ref": "a", "opens": 3}])
    await db.drain()
    assert await load_breaker(db) == [{"ref": "c", "state": "half_open"}, {"ref": "a", "opens": 3}]


def hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the database's write lock (BEGIN EXCLUSIVE) for ``seconds``."""
    script = textwrap.dedent(
        f"""
        import sqlite3, sys, time
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        print("locked", flush=True)
        time.sleep({seconds})
        conn.execute("COMMIT")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    proc.stdout.close()
    return proc


async def test_a_database_locked_by_another_process_for_5s_is_logged_once_and_caught_up(
    db: Database,
) -> None:
    """While another process holds the lock: ``add`` and ``store`` return at once, stored
    responses can still be read (WAL), one ``database_write_failed`` line is logged; after the
    lock clears every row is there, exactly as added."""
    ledger = LedgerWriter(db, tz=UTC, batch_seconds=0.1)
    store = ResponseStore(db)
    store.store("resp_old", time.time(), [{"role": "user", "content": "hi"}], [], {"id": "o"}, None)
    before = make_rows(5, time.time() - 600)
    for r in before:
        ledger.add(r)
    await ledger.drain()
    with capture_logs() as logs:
        locker = await asyncio.to_thread(hold_lock, db.path, 5)
        try:
            during = make_rows(40, time.time() - 300)
            for n, r in enumerate(during):
                started = time.perf_counter()
                ledger.add(r)
                assert time.perf_counter() - started < 0.01
                if n % 10 == 0:
                    await asyncio.sleep(0.3)  # batches go to the writer, which hits the lock
            assert await store.get("resp_old") == {"id": "o"}  # reads go on under WAL
            assert locker.poll() is None, "the lock was released before the rows were added"
        finally:
            await asyncio.to_thread(locker.wait, 20)
        assert await ledger.drain(within_s=15)
    failures = [e for e in logs if e["event"] == "database_write_failed"]
    assert len(failures) == 1, logs
    assert "locked" in failures[0]["error"]
    assert not [e for e in logs if e["event"] == "database_rows_dropped"]
    assert await db.read(lambda c: recent(c, 100)) == (before + during)[::-1]


def rows_seen_by_another_process(path: Path) -> int:
    """The ledger's row count as a new process sees it (not through this process's files)."""
    script = textwrap.dedent(
        f"""
        import sqlite3
        conn = sqlite3.connect({str(path)!r})
        print(conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(out.stdout)


async def test_rows_written_after_another_process_let_go_of_the_database_are_in_the_file(
    db: Database,
) -> None:
    """The writer's locks hold while the reader thread opens its connection, so another
    process that locks and closes the database does not take it for the last one (which
    checkpoints and deletes the WAL under the writer): the rows written afterwards are in the
    file that every other process reads, not in a deleted WAL."""
    ledger = LedgerWriter(db, tz=UTC, batch_seconds=0.1)
    before = make_rows(5, time.time() - 600)
    for r in before:
        ledger.add(r)
    assert await ledger.drain()
    assert len(await db.read(lambda c: recent(c, 100))) == 5  # the reader thread connects
    await asyncio.to_thread(hold_lock(db.path, 0.2).wait, 20)
    after = make_rows(7, time.time() - 300)
    for r in after:
        ledger.add(r)
    assert await ledger.drain()
    assert await asyncio.to_thread(rows_seen_by_another_process, db.path) == 12


async def test_rows_past_the_pending_bound_are_dropped_oldest_first_and_counted(
    tmp_path: Path,
) -> None:
    """With the lock held and more rows waiting than ``max_pending_rows``, the oldest batches
    go; the count is logged; the newest rows are written once the lock clears."""
    db = Database(
        tmp_path / "coderclaw.db", busy_timeout_s=0.2, retry_max_s=0.3, max_pending_rows=50
    )
    await db.start()
    ledger = LedgerWriter(db, tz=UTC, batch_rows=10, batch_seconds=3600)
    rows = make_rows(120, time.time() - 600)
    try:
        with capture_logs() as logs:
            locker = await asyncio.to_thread(hold_lock, db.path, 2)
            for n in range(0, 120, 10):
                for r in rows[n : n + 10]:
                    ledger.add(r)  # the 10th row hands the batch over
                await asyncio.sleep(0.05)
            await asyncio.to_thread(locker.wait, 20)
            assert await ledger.drain(within_s=15)
        written = await db.read(lambda c: recent(c, 200))
    finally:
        await db.stop()
    assert written[::-1] == rows[70:]
    dropped = [e for e in logs if e["event"] == "database_rows_dropped"]
    assert [e.get("dropped") for e in dropped][-1] == 70
    assert len([e for e in logs if e["event"] == "database_write_failed"]) == 1


# The child's file-size limit stands in for a full disk: writes past it fail with EFBIG
# (SIGXFSZ ignored), as they would with ENOSPC; raising the soft limit again frees the disk.
_FULL_DISK = """
import asyncio, json, resource, signal, sys, time
from datetime import UTC
from pathlib import Path
from gateway.ledger.db import Database
from gateway.ledger.usage import LedgerWriter, recent
from gateway.observe import setup_logging
from tests.test_ledger_usage import make_rows

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
setup_logging("info", "json", stream=sys.stderr)
path = Path(sys.argv[1])

async def main():
    db = Database(path, busy_timeout_s=0.2, retry_min_s=0.05, retry_max_s=0.2)
    await db.start()
    ledger = LedgerWriter(db, tz=UTC, batch_seconds=0.05)
    first = make_rows(5, time.time() - 900)
    for r in first:
        ledger.add(r)
    assert await ledger.drain()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))  # "the disk is full"
    during = make_rows(30, time.time() - 600)
    slowest = 0.0
    for r in during:
        started = time.perf_counter()
        ledger.add(r)
        slowest = max(slowest, time.perf_counter() - started)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    full = await db.read(lambda c: len(recent(c, 100)))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    assert await ledger.drain(within_s=10)
    rows = await db.read(lambda c: recent(c, 100))
    await db.stop()
    same = [r.request_id for r in rows[::-1]] == [r.request_id for r in first + during]
    exact = rows[::-1] == first + during
    print(json.dumps({"while_full": full, "after": len(rows), "exact": exact and same,
                      "slowest_add_s": slowest}))

asyncio.run(main())
"""


async def test_a_full_disk_is_logged_once_and_the_rows_are_written_when_space_returns(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FULL_DISK,
        str(tmp_path / "coderclaw.db"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["while_full"] == 5  # nothing of the 30 could be written meanwhile
    assert result["after"] == 35 and result["exact"]
    assert result["slowest_add_s"] < 0.01
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    failures = [e for e in lines if e["event"] == "database_write_failed"]
    assert len(failures) == 1, lines
    assert failures[0]["level"] == "error"
    assert "Traceback" not in err.decode()


def test_config_sections_take_camel_case_keys_defaults_and_refuse_bad_values() -> None:
    assert UsageConfig().retention_days == 90
    assert ResponsesConfig().retention_hours == 168
    assert BudgetConfig() == BudgetConfig(daily_usd=None, monthly_usd=None, time_zone=None)
    budget = BudgetConfig.model_validate(
        {"dailyUsd": 0.01, "monthlyUsd": 20, "timeZone": "Europe/Berlin"}
    )
    assert (budget.daily_usd, budget.monthly_usd, budget.time_zone) == (0.01, 20, "Europe/Berlin")
    assert UsageConfig.model_validate({"retentionDays": 7}).retention_days == 7
    assert ResponsesConfig.model_validate({"retentionHours": 1}).retention_hours == 1
    for bad in ({"timeZone": "Mars/Olympus"}, {"dailyUsd": 0}, {"dailyUsd": "5"}, {"daily": 1}):
        with pytest.raises(ValidationError):
            BudgetConfig.model_validate(bad)
    with pytest.raises(ValidationError, match="Mars/Olympus"):
        BudgetConfig.model_validate({"timeZone": "Mars/Olympus"})
    with pytest.raises(ValidationError):
        UsageConfig.model_validate({"retentionDays": 0})


def test_usage_row_time_is_iso_utc_with_milliseconds() -> None:
    row = UsageRow(1_796_133_600.25, "r", "chat", None, None, None, "", "failed")
    assert row.time == "2026-12-01T14:00:00.250Z"


async def test_close_while_locked_gives_up_within_its_timeout_and_counts_what_it_dropped(
    tmp_path: Path,
) -> None:
    """Shutdown never hangs on a locked database: after ``close_timeout_s`` the rows still
    waiting are dropped and their count logged."""
    db = Database(tmp_path / "coderclaw.db", busy_timeout_s=0.2, close_timeout_s=1.0)
    await db.start()
    ledger = LedgerWriter(db, tz=UTC)
    locker = await asyncio.to_thread(hold_lock, db.path, 5)
    try:
        with capture_logs() as logs:
            for r in make_rows(7, time.time()):
                ledger.add(r)
            ledger.flush()
            started = time.monotonic()
            await db.stop()
            took = time.monotonic() - started
    finally:
        await asyncio.to_thread(locker.wait, 20)
    assert took < 3
    assert [
        e["dropped"] for e in logs if e["event"] == "database_rows_dropped" and "dropped" in e
    ] == [7]


async def test_a_database_locked_before_the_first_migration_is_opened_when_the_lock_clears(
    tmp_path: Path,
) -> None:
    """Opening does not wait for another process's lock: ``start`` returns, rows queue up,
    and the schema and rows are written once the lock is gone."""
    path = tmp_path / "coderclaw.db"
    locker = await asyncio.to_thread(hold_lock, path, 3)
    db = Database(path, busy_timeout_s=0.3, retry_max_s=0.5)
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            await db.start()
            assert time.monotonic() - started < 2
            ledger = LedgerWriter(db, tz=UTC)
            rows = make_rows(12, time.time())
            for r in rows:
                ledger.add(r)
            assert locker.poll() is None
            await asyncio.to_thread(locker.wait, 20)
            assert await ledger.drain(within_s=10)
        assert await db.read(lambda c: recent(c, 50)) == rows[::-1]
        assert [e["event"] for e in logs].count("database_write_failed") == 1
    finally:
        await db.stop()


async def test_maintenance_that_keeps_failing_on_a_lock_is_retried_without_spinning(
    tmp_path: Path,
) -> None:
    """The daily maintenance comes due with no rows waiting and hits a lock: the writer waits for
    its retry (it used to loop with a zero timeout, a whole core busy until the lock cleared)."""
    wall = [1_000_000.0]
    calls: list[float] = []

    def daily(conn: sqlite3.Connection, now: float) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            wall[0] += 2 * 86400  # the next run is due as soon as this one is done
            return
        raise sqlite3.OperationalError("database is locked")

    database = Database(
        tmp_path / "coderclaw.db", clock=lambda: wall[0], retry_min_s=0.1, retry_max_s=0.2
    )
    await database.start()
    try:
        with capture_logs():
            database.add_maintenance(daily)
            cpu = time.process_time()
            await asyncio.sleep(1.0)
            used = time.process_time() - cpu
    finally:
        await database.stop()
    assert len(calls) >= 3, "the failed maintenance was not retried"
    assert used < 0.3, f"the writer used {used:.2f} s of CPU in 1 s while waiting to retry"


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_the_writer_thread_runs_at_the_lowest_cpu_priority_and_the_loop_does_not(
    tmp_path: Path,
) -> None:
    """The writer's batches must not take the CPU from the event loop: its thread runs at nice
    19, the thread that opened the database keeps its own priority."""
    db = Database(tmp_path / "coderclaw.db")
    db.open()
    try:
        [writer] = [t for t in threading.enumerate() if t.name == "coderclaw-db-write"]
        assert writer.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, writer.native_id) == 19
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19
    finally:
        db.close()
