"""The breaker snapshot table: the routing state saved at shutdown and read back at start.

The rows are opaque JSON objects (their shape belongs to the routing code); a save replaces
the whole snapshot in one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from gateway.ledger.db import Database, Job
from gateway.wire import dumps, loads


def replace_snapshot(
    conn: sqlite3.Connection, rows: Sequence[Mapping[str, Any]], saved_at: float
) -> None:
    conn.execute("DELETE FROM breaker_snapshot")
    conn.executemany(
        "INSERT INTO breaker_snapshot (seq, saved_at, row) VALUES (?, ?, ?)",
        [(n, saved_at, dumps(row).decode()) for n, row in enumerate(rows)],
    )


def select_snapshot(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        loads(text) for (text,) in conn.execute("SELECT row FROM breaker_snapshot ORDER BY seq")
    ]


def save_breaker(
    db: Database, rows: Sequence[Mapping[str, Any]], *, clock: Callable[[], float] = time.time
) -> None:
    """Replace the snapshot with ``rows`` (non-blocking; written on the DB thread)."""
    copied = [dict(row) for row in rows]
    db.submit(
        Job(
            partial(replace_snapshot, rows=copied, saved_at=clock()),
            rows=len(copied) or 1,
            kind="breaker",
        )
    )


async def load_breaker(db: Database) -> list[dict[str, Any]]:
    """The last saved snapshot's rows, in the order saved ([] when none was saved)."""
    return await db.read(select_snapshot)
