"""The state dir's SQLite database at run time: its writer thread and its reader thread.

SQLite runs on threads of its own so the event loop never waits for it:

- one **writer thread** owns the only writing connection. ``Database.submit(job)`` hands it a
  ``Job`` (non-blocking, from any thread); it runs every job queued so far in one transaction.
  When the database is locked by another process or the disk is full, the jobs are kept and
  retried with backoff; the first failure of a streak is logged once (``database_write_failed``)
  and no exception leaves the thread. Past ``max_pending_rows`` the oldest jobs are dropped and
  counted (``database_rows_dropped``, logged when the streak ends or at close).
- one **reader thread** with its own connection serves ``await Database.read(fn)``; under WAL a
  read never waits for the writer. A failed read raises ``DatabaseUnavailable``.

Maintenance jobs (retention pruning) run on the writer thread at open and once a day.

The file, its schema and its migrations are ``gateway.ledger.schema``'s.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gateway.ledger.schema import (
    DatabaseError,
    DatabaseUnavailable,
    connect,
    is_retryable,
    migrate,
    rollback,
)
from gateway.observe import get_logger

MAINTENANCE_SECONDS = 24 * 3600

log = get_logger("gateway.ledger")
T = TypeVar("T")


# ----------------------------------------------------------------------------------- writer


@dataclass(slots=True)
class Job:
    """Work for the writer thread: ``run`` inside a transaction it shares with other jobs.

    ``rows`` weighs it for the pending bound; ``on_commit`` / ``on_drop`` run on the writer
    thread after its transaction committed / after it was given up.
    """

    run: Callable[[sqlite3.Connection], object]
    rows: int = 1
    kind: str = "rows"
    on_commit: Callable[[], None] | None = None
    on_drop: Callable[[], None] | None = None


Maintenance = Callable[[sqlite3.Connection, float], object]


class Database:
    """The database of one gateway process: a writer thread, a reader thread.

    ``open()`` blocks until the file is opened and migrated (call it through
    ``asyncio.to_thread`` or ``await start()`` from the event loop); a fatal problem raises
    ``DatabaseError`` there. A locked or full database at open is not fatal: writes queue up
    and are retried. ``close()`` writes what it can within ``close_timeout_s``.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 1.0,
        max_pending_rows: int = 20_000,
        retry_min_s: float = 0.25,
        retry_max_s: float = 4.0,
        close_timeout_s: float = 3.0,
    ) -> None:
        self.path = path
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._max_pending_rows = max_pending_rows
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._close_timeout_s = close_timeout_s
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._maintenance: list[Maintenance] = []
        self._maintenance_at = 0.0  # wall clock of the next run; 0 = at once
        self._ready = threading.Event()
        self._fatal: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="coderclaw-db-read")
        self._read_conn: sqlite3.Connection | None = None  # used on the reader thread only
        self._read_failing = False
        self._write_failing = False
        self._dropped = 0
        self._stop_at: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Start the writer thread and wait for its first open/migrate attempt."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="coderclaw-db-write", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._fatal is not None:
            self._thread.join()
            raise self._fatal

    async def start(self) -> None:
        await asyncio.to_thread(self.open)

    def close(self) -> None:
        """Write what is queued (within ``close_timeout_s``), then stop both threads."""
        if self._thread is not None:
            self._stop_at = time.monotonic() + self._close_timeout_s
            self._jobs.put(None)
            self._thread.join(self._close_timeout_s + self._busy_timeout_s + 1)
        self._reader.submit(self._close_reader).result()
        self._reader.shutdown(wait=True)

    async def stop(self) -> None:
        await asyncio.to_thread(self.close)

    # ------------------------------------------------------------------ writing

    def submit(self, job: Job) -> None:
        """Queue ``job`` for the writer thread; never blocks, never raises."""
        self._jobs.put(job)

    def add_maintenance(self, task: Maintenance) -> None:
        """Run ``task(conn, now)`` on the writer thread now and then once a day."""
        self._maintenance.append(task)
        self._maintenance_at = 0.0
        self._jobs.put(Job(run=_nothing, rows=0, kind="wake"))

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every job submitted before the call is committed or dropped."""
        done = threading.Event()
        self._jobs.put(Job(_nothing, rows=0, kind="barrier", on_commit=done.set, on_drop=done.set))
        return done.wait(timeout)

    async def drain(self, within_s: float = 10.0) -> bool:
        return await asyncio.to_thread(self.flush, within_s)

    def _run(self) -> None:
        lower_this_threads_priority()
        conn = self._open_writer(first=True)
        self._ready.set()
        if self._fatal is not None:
            return
        pending: deque[Job] = deque()
        retry_at = 0.0
        delay = self._retry_min_s
        stopping = False
        while True:
            stopping = self._collect(pending, retry_at, stopping) or stopping
            now = time.monotonic()
            if now >= retry_at:
                if conn is None:
                    conn = self._open_writer(first=False)
                # Maintenance first: a barrier job (``flush``) then also waits for it.
                ok = conn is not None and self._maintain(conn) and self._write(conn, pending)
                if ok:
                    delay = self._retry_min_s
                    retry_at = 0.0
                else:
                    retry_at = now + delay
                    delay = min(delay * 2, self._retry_max_s)
            self._bound(pending)
            if stopping and (not pending or time.monotonic() >= (self._stop_at or 0.0)):
                break
        if pending:
            self._drop(pending, len(pending))
        self._report_dropped()
        if conn is not None:
            conn.close()

    def _collect(self, pending: deque[Job], retry_at: float, stopping: bool) -> bool:
        """Wait for work (or the next retry / maintenance), then take all that is queued."""
        if stopping:
            timeout: float | None = max(0.0, min(retry_at, self._stop_at or 0.0) - time.monotonic())
        elif pending:
            timeout = max(0.0, retry_at - time.monotonic())
        elif self._maintenance:
            # Due maintenance that failed waits for its retry too (else this loop spins).
            timeout = max(0.0, self._maintenance_at - self._clock(), retry_at - time.monotonic())
        else:
            timeout = None
        stop = False
        try:
            item = self._jobs.get(timeout=timeout)
        except queue.Empty:
            return False
        while True:
            if item is None:
                stop = True
            else:
                pending.append(item)
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return stop

    def _open_writer(self, *, first: bool) -> sqlite3.Connection | None:
        try:
            conn = connect(self.path, busy_timeout_s=self._busy_timeout_s)
        except DatabaseError as exc:
            if first:
                self._fatal = exc
            else:
                self._write_failed(exc)
            return None
        except (sqlite3.Error, OSError) as exc:
            self._write_failed(exc)
            return None
        try:
            migrate(conn)
        except DatabaseError as exc:
            conn.close()
            if first:
                self._fatal = exc
            else:
                self._write_failed(exc)
            return None
        except sqlite3.Error as exc:
            conn.close()
            self._write_failed(exc)
            return None
        return conn

    def _write(self, conn: sqlite3.Connection, pending: deque[Job]) -> bool:
        """Run all pending jobs in one transaction; True when they are committed (or none)."""
        if not pending:
            return True
        try:
            self._transaction(conn, list(pending))
        except Exception as exc:  # a job's own error (bad JSON) must not end the thread
            if isinstance(exc, sqlite3.Error) and is_retryable(exc):
                self._write_failed(exc)
                return False
            self._one_by_one(conn, pending)
            return not pending
        jobs = list(pending)
        pending.clear()
        self._committed(jobs)
        return True

    def _transaction(self, conn: sqlite3.Connection, jobs: list[Job]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                job.run(conn)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise

    def _one_by_one(self, conn: sqlite3.Connection, pending: deque[Job]) -> None:
        """A job failed for a reason retrying will not cure: find it, drop it, keep the rest."""
        kept: deque[Job] = deque()
        for job in pending:
            try:
                self._transaction(conn, [job])
            except Exception as exc:
                if isinstance(exc, sqlite3.Error) and is_retryable(exc):
                    kept.append(job)
                    continue
                log.error("database_job_failed", kind=job.kind, rows=job.rows, error=str(exc))
                self._drop_one(job)
            else:
                self._committed([job])
        pending.clear()
        pending.extend(kept)

    def _committed(self, jobs: list[Job]) -> None:
        if self._write_failing:
            self._write_failing = False
            self._report_dropped()
        for job in jobs:
            if job.on_commit is not None:
                job.on_commit()

    def _maintain(self, conn: sqlite3.Connection) -> bool:
        now = self._clock()
        if not self._maintenance or now < self._maintenance_at:
            return True
        tasks = tuple(self._maintenance)
        try:
            self._transaction(conn, [Job(lambda c: [t(c, now) for t in tasks])])
        except Exception as exc:
            if isinstance(exc, sqlite3.Error) and is_retryable(exc):
                self._write_failed(exc)
                return False
            log.error("database_maintenance_failed", error=str(exc))
        self._maintenance_at = now + MAINTENANCE_SECONDS
        return True

    def _bound(self, pending: deque[Job]) -> None:
        """Drop the oldest jobs while more than ``max_pending_rows`` rows wait."""
        rows = sum(job.rows for job in pending)
        while pending and rows > self._max_pending_rows:
            job = pending.popleft()
            rows -= job.rows
            if self._dropped == 0 and job.rows:  # the first of this streak
                log.error(
                    "database_rows_dropped",
                    path=str(self.path),
                    reason="too many rows waiting for the database; the oldest go",
                    limit=self._max_pending_rows,
                )
            self._dropped += job.rows
            self._drop_one(job)

    def _drop(self, pending: deque[Job], count: int) -> None:
        for _ in range(count):
            job = pending.popleft()
            self._dropped += job.rows
            self._drop_one(job)

    def _drop_one(self, job: Job) -> None:
        if job.on_drop is not None:
            job.on_drop()

    def _report_dropped(self) -> None:
        if self._dropped:
            log.error("database_rows_dropped", path=str(self.path), dropped=self._dropped)
            self._dropped = 0

    def _write_failed(self, exc: BaseException) -> None:
        if self._write_failing:
            return
        self._write_failing = True
        log.error(
            "database_write_failed",
            path=str(self.path),
            error=str(exc),
            code=getattr(exc, "sqlite_errorname", None),
            hint="rows are kept and written when the database is free again "
            "(another process holds it, or the disk is full)",
        )

    # ------------------------------------------------------------------ reading

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` on the reader thread; ``DatabaseUnavailable`` when SQLite fails."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._read_call, fn)

    def _read_call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._read_conn is None:
                self._read_conn = connect(
                    self.path, busy_timeout_s=self._busy_timeout_s, readonly=True
                )
            result = fn(self._read_conn)
        except (sqlite3.Error, OSError) as exc:
            if not self._read_failing:
                self._read_failing = True
                log.error("database_read_failed", path=str(self.path), error=str(exc))
            raise DatabaseUnavailable(
                f"the gateway's database could not be read ({exc})",
                hint="try again in a moment; `coderclaw doctor` checks the state dir",
            ) from None
        self._read_failing = False
        return result

    def _close_reader(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None


def _nothing(conn: sqlite3.Connection) -> None:
    return None


WRITER_NICE = 19


def lower_this_threads_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: nice 19 for this thread only).

    The writer's batches then take the CPU the event loop leaves: on a core shared with the
    loop, a 200-row batch ran between two requests' steps and showed in their latency (one
    connection, p99 2.2-2.6 ms -> 1.4-1.9 ms). Elsewhere (macOS, Windows) it does nothing: a
    thread id there is not a ``setpriority`` target."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
    except OSError:
        return  # a sandbox that forbids it: the writer runs at the process's priority
