"""The database file: its path, its mode, its schema and the migrations between versions.

``$STATE/coderclaw.db`` (``db_path``), WAL, mode 0600 from the moment it exists. The schema is
versioned with ``PRAGMA user_version``: ``MIGRATIONS[n]`` takes a database from version ``n``
to ``n + 1``; ``migrate`` applies the missing ones in one transaction and refuses a database
written by a newer version (``DatabaseError``). Append a migration for every change; never
edit one that has shipped.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

from gateway.errors import GatewayError
from gateway.settings import Paths

DB_NAME = "coderclaw.db"


class DatabaseError(GatewayError):
    """The database file cannot be used at all (newer schema, not a database)."""


class DatabaseUnavailable(GatewayError):
    """A read failed for now (locked, I/O error); the caller answers 503 and carries on."""


def db_path(paths: Paths) -> Path:
    """``$STATE/coderclaw.db``."""
    return paths.state_dir / DB_NAME


# ----------------------------------------------------------------------------------- schema


def _v1_usage(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            time TEXT NOT NULL,
            request_id TEXT NOT NULL,
            dialect TEXT NOT NULL,
            requested TEXT,
            served TEXT,
            provider TEXT,
            attempts TEXT NOT NULL,
            outcome TEXT NOT NULL,
            ttft_ms REAL,
            total_ms REAL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cached_tokens INTEGER,
            reasoning_tokens INTEGER,
            cost_usd REAL
        )"""
    )
    conn.execute("CREATE INDEX usage_ts ON usage (ts)")


def _v2_responses(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            previous_id TEXT,
            response TEXT NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX responses_created_at ON responses (created_at)")
    # kind 0 = input item, 1 = output item; seq is the item's place in its list.
    conn.execute(
        """CREATE TABLE response_items (
            response_id TEXT NOT NULL,
            kind INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            item TEXT NOT NULL,
            PRIMARY KEY (response_id, kind, seq)
        ) WITHOUT ROWID"""
    )


def _v3_breaker(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE breaker_snapshot (seq INTEGER PRIMARY KEY, saved_at REAL, row TEXT NOT NULL)"
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _v1_usage,
    _v2_responses,
    _v3_breaker,
)
LATEST_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, *, target: int = LATEST_VERSION) -> int:
    """Bring the schema to ``target`` (default: the latest) in one transaction; the version.

    The version is read again under the write lock, so two processes migrating at once apply
    each step once. A newer database than this code knows → ``DatabaseError``.
    """
    if schema_version(conn) >= target:
        _refuse_newer(conn)
        return schema_version(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)
        _refuse_newer(conn, version)
        for step in MIGRATIONS[version:target]:
            step(conn)
        if version < target:
            conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return max(version, target)


def _refuse_newer(conn: sqlite3.Connection, version: int | None = None) -> None:
    version = schema_version(conn) if version is None else version
    if version > LATEST_VERSION:
        file = conn.execute("PRAGMA database_list").fetchone()[2]
        raise DatabaseError(
            f"{file} has schema version {version}, newer than this coderclaw knows "
            f"({LATEST_VERSION})",
            hint="upgrade coderclaw (pip install -U coderclaw), or move the file away to start "
            "a new ledger",
        )


WRITER_CACHE_KIB = 256  # the page cache of a connection that writes (SQLite's default: 2 MiB)


def rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _null(value: None) -> None:
    return value


# sqlite3 binds int, float and str as they are, but takes any other parameter, None too, for
# an object to adapt: two attribute lookups that fail, each with an AttributeError and its
# formatted message. A usage row has a handful of NULLs: with an adapter for None (it binds
# NULL all the same) its insert costs half as much (4.0 -> 2.0 µs).
sqlite3.register_adapter(type(None), _null)


def connect(
    path: Path, *, busy_timeout_s: float = 1.0, readonly: bool = False
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) to a 0600 WAL database.

    The file is created with mode 0600 before SQLite opens it, so it is never readable by
    others, not even for an instant; SQLite gives its ``-wal`` and ``-shm`` files the mode of
    the database. An existing file with a wider mode is narrowed to 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # An existing file is never opened here, only narrowed by its path: closing *any*
        # descriptor of a file drops every POSIX lock this process holds on it, so opening a
        # second connection (the reader thread's) used to drop the writer's shared lock. The
        # next other process to close the database then took itself for the last one,
        # checkpointed and deleted the WAL, and the writer went on committing into the
        # deleted file: rows nobody else could see (the "no catch-up after a lock" of #14).
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
    else:
        os.close(fd)  # a file created just now: no lock of ours is on it yet
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=True
        )
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # Writes append (usage rows in time order); a response's random id touches one
            # path of its index. SQLite's default 2 MiB page cache would fill up and stay in
            # the writer thread's memory for the daemon's life; the file's pages are in the
            # OS cache anyway.
            conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        return conn
    except sqlite3.DatabaseError as exc:
        if _code(exc) == sqlite3.SQLITE_NOTADB:
            raise DatabaseError(
                f"{path} is not a SQLite database", hint="move the file away to start a new one"
            ) from None
        raise


def open_migrated(path: Path, *, busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """A connection to a database at the latest schema (the CLI's way in)."""
    conn = connect(path, busy_timeout_s=busy_timeout_s)
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


# Worth retrying later: another process holds the lock, or the disk / file size is at its limit.
_RETRYABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}


def is_retryable(exc: sqlite3.Error) -> bool:
    code = _code(exc)
    if code in _RETRYABLE:
        return True
    # Some paths raise without a code; these messages are SQLite's own.
    text = str(exc).lower()
    return code == 0 and ("locked" in text or "disk" in text or "full" in text)
