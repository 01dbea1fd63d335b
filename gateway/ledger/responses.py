"""The Responses API store: stored responses, their input and output items, and their chains.

``ResponseStore.store(...)`` never blocks: the response is written by the database's writer
thread, and until that transaction commits it is served from memory, so a client that sends
the next turn at once (``previous_response_id``) finds it. ``get``, ``input_items`` and
``history`` are one read each on the reader thread. A response older than
``retention_hours`` counts as missing (and is pruned once a day); so does a deleted one.

Items are stored as given (JSON text). ``GET /v1/responses/{id}/input_items`` lists items
with an ``id``; an input item stored without one is listed with ``"{response_id}_in_{n}"``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from gateway.ledger.db import Database, Job
from gateway.wire import dumps, loads

MAX_CHAIN = 1000  # responses followed through previous_response_id links
_INPUT, _OUTPUT = 0, 1


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response_id: str
    created_at: float
    previous_id: str | None
    response: Mapping[str, Any]
    input_items: tuple[Mapping[str, Any], ...]
    output_items: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ItemPage:
    """One page of ``input_items``, shaped like OpenAI's ``ResponseItemList``."""

    data: list[dict[str, Any]]
    has_more: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": self.data,
            "first_id": self.data[0]["id"] if self.data else None,
            "last_id": self.data[-1]["id"] if self.data else None,
            "has_more": self.has_more,
        }


def _item_id(response_id: str, seq: int, item: Mapping[str, Any]) -> str:
    found = item.get("id")
    return found if isinstance(found, str) and found else f"{response_id}_in_{seq}"


def _text(value: Any) -> str:
    return dumps(value).decode()


# ------------------------------------------------------------------ SQL (connection in, values out)


def insert_response(conn: sqlite3.Connection, stored: StoredResponse) -> None:
    rid = stored.response_id
    conn.execute("DELETE FROM response_items WHERE response_id = ?", (rid,))
    conn.execute(
        "INSERT OR REPLACE INTO responses (id, created_at, previous_id, response) VALUES (?,?,?,?)",
        (rid, stored.created_at, stored.previous_id, _text(stored.response)),
    )
    rows = [
        (rid, _INPUT, n, _item_id(rid, n, item), _text(item))
        for n, item in enumerate(stored.input_items)
    ]
    rows += [
        (rid, _OUTPUT, n, _item_id(rid, n, item), _text(item))
        for n, item in enumerate(stored.output_items)
    ]
    conn.executemany(
        "INSERT INTO response_items (response_id, kind, seq, item_id, item) VALUES (?,?,?,?,?)",
        rows,
    )


def delete_response(conn: sqlite3.Connection, response_id: str) -> None:
    conn.execute("DELETE FROM response_items WHERE response_id = ?", (response_id,))
    conn.execute("DELETE FROM responses WHERE id = ?", (response_id,))


def prune_responses(conn: sqlite3.Connection, before: float) -> int:
    conn.execute(
        "DELETE FROM response_items WHERE response_id IN "
        "(SELECT id FROM responses WHERE created_at < ?)",
        (before,),
    )
    return conn.execute("DELETE FROM responses WHERE created_at < ?", (before,)).rowcount


def select_response(conn: sqlite3.Connection, response_id: str, since: float) -> Any:
    row = conn.execute(
        "SELECT response FROM responses WHERE id = ? AND created_at >= ?", (response_id, since)
    ).fetchone()
    return None if row is None else loads(row[0])


def select_input_items(
    conn: sqlite3.Connection,
    response_id: str,
    since: float,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> ItemPage | None:
    """A page of the response's own input items; None when the response is missing.

    ``after`` is an item id of that response (``ValueError`` when it is not one).
    """
    found = conn.execute(
        "SELECT 1 FROM responses WHERE id = ? AND created_at >= ?", (response_id, since)
    ).fetchone()
    if found is None:
        return None
    where, args = "response_id = ? AND kind = 0", [response_id]
    if after is not None:
        seq = conn.execute(
            "SELECT seq FROM response_items WHERE response_id = ? AND kind = 0 AND item_id = ?",
            (response_id, after),
        ).fetchone()
        if seq is None:
            raise ValueError(f"{after!r} is not an input item of {response_id}")
        where += " AND seq < ?" if order == "desc" else " AND seq > ?"
        args.append(seq[0])
    direction = "DESC" if order == "desc" else "ASC"
    rows = conn.execute(
        f"SELECT item_id, item FROM response_items WHERE {where} ORDER BY seq {direction} LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    data = [{**loads(item), "id": item_id} for item_id, item in rows[:limit]]
    return ItemPage(data, has_more=len(rows) > limit)


_CHAIN = """
WITH RECURSIVE chain (id, previous_id, depth) AS (
    SELECT id, previous_id, 0 FROM responses WHERE id = ? AND created_at >= ?
    UNION ALL
    SELECT r.id, r.previous_id, chain.depth + 1 FROM responses r
    JOIN chain ON r.id = chain.previous_id
    WHERE chain.depth < ? AND r.created_at >= ?
)
SELECT id, previous_id FROM chain ORDER BY depth
"""


def select_chain(
    conn: sqlite3.Connection, response_id: str, since: float, max_depth: int
) -> list[tuple[str, list[Any], list[Any]]] | None:
    """``(id, input items, output items)`` from the oldest response to ``response_id``.

    None unless the whole chain is there: every link stored, unexpired, within ``max_depth``.
    """
    links = conn.execute(_CHAIN, (response_id, since, max_depth - 1, since)).fetchall()
    if not links or links[-1][1] is not None:
        return None
    ids = [rid for rid, _ in reversed(links)]
    items: dict[str, tuple[list[Any], list[Any]]] = {rid: ([], []) for rid in ids}
    marks = ",".join("?" * len(ids))
    cursor = conn.execute(
        f"SELECT response_id, kind, item FROM response_items WHERE response_id IN ({marks}) "
        "ORDER BY response_id, kind, seq",
        ids,
    )
    for rid, kind, item in cursor:
        items[rid][kind].append(loads(item))
    return [(rid, *items[rid]) for rid in ids]


# ------------------------------------------------------------------------------ the store


class ResponseStore:
    """Stored responses for ``store: true`` and ``previous_response_id`` (SPEC §10.1)."""

    def __init__(
        self,
        db: Database,
        *,
        retention_hours: float = 168,
        clock: Callable[[], float] = time.time,
        max_chain: int = MAX_CHAIN,
    ) -> None:
        self._db = db
        self._retention_s = retention_hours * 3600
        self._clock = clock
        self._max_chain = max_chain
        self._pending: dict[str, StoredResponse] = {}  # submitted, not yet committed
        # Deleted ids → when. Kept for the retention period, not just until the delete commits:
        # a read that began before the commit may still see the row.
        self._deleted: dict[str, float] = {}
        db.add_maintenance(self._prune)

    def _since(self) -> float:
        return self._clock() - self._retention_s

    def store(
        self,
        response_id: str,
        created_at: float,
        input_items: Sequence[Mapping[str, Any]],
        output_items: Sequence[Mapping[str, Any]],
        response_obj: Mapping[str, Any],
        previous_id: str | None,
    ) -> None:
        """Keep a finished response; returns at once (the write happens on the DB thread).

        ``input_items`` are this request's own input items (not the earlier turns'),
        ``created_at`` its UTC epoch seconds.
        """
        stored = StoredResponse(
            response_id,
            created_at,
            previous_id,
            response_obj,
            tuple(input_items),
            tuple(output_items),
        )
        self._pending[response_id] = stored
        self._deleted.pop(response_id, None)

        def settled() -> None:
            if self._pending.get(response_id) is stored:
                del self._pending[response_id]

        self._db.submit(
            Job(
                partial(insert_response, stored=stored),
                rows=1 + len(stored.input_items) + len(stored.output_items),
                kind="response",
                on_commit=settled,
                on_drop=settled,
            )
        )

    def _held(self, response_id: str) -> StoredResponse | None:
        stored = self._pending.get(response_id)
        if stored is None or stored.created_at < self._since():
            return None
        return stored

    async def get(self, response_id: str) -> Any:
        """The stored response object, or None (unknown, expired or deleted)."""
        if response_id in self._deleted:
            return None
        held = self._held(response_id)
        if held is not None:
            return dict(held.response)
        return await self._db.read(
            partial(select_response, response_id=response_id, since=self._since())
        )

    async def input_items(
        self,
        response_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
    ) -> ItemPage | None:
        """A page of the response's own input items (OpenAI's defaults: 20, newest first).

        None when the response is missing; ``ValueError`` when ``after`` is not one of its
        input item ids. ``limit`` is held to 1…100.
        """
        limit = max(1, min(limit, 100))
        if response_id in self._deleted:
            return None
        held = self._held(response_id)
        if held is not None:
            return _page_in_memory(held, after, limit, order)
        return await self._db.read(
            partial(
                select_input_items,
                response_id=response_id,
                since=self._since(),
                after=after,
                limit=limit,
                order=order,
            )
        )

    async def delete(self, response_id: str) -> bool:
        """Delete the response; False when there was none to delete."""
        if response_id in self._deleted:
            return False
        existed = self._held(response_id) is not None or (await self.get(response_id)) is not None
        if not existed:
            return False
        self._pending.pop(response_id, None)
        since = self._since()
        for old in [rid for rid, at in self._deleted.items() if at < since]:
            del self._deleted[old]  # expired by now anyway
        self._deleted[response_id] = self._clock()
        self._db.submit(
            Job(partial(delete_response, response_id=response_id), kind="response_delete")
        )
        return True

    async def history(self, previous_response_id: str) -> list[Any] | None:
        """The conversation up to and including ``previous_response_id``, for the next turn.

        Every response of the chain, oldest first: its input items, then its output items.
        None when any response of the chain is missing, expired or deleted, or the chain is
        longer than ``max_chain``.
        """
        held: list[StoredResponse] = []
        current: str | None = previous_response_id
        while current is not None and len(held) < self._max_chain:
            if current in self._deleted:
                return None
            stored = self._held(current)
            if stored is None:
                break
            held.append(stored)
            current = stored.previous_id
        older: list[tuple[str, list[Any], list[Any]]] = []
        if current is not None:
            left = self._max_chain - len(held)
            if left <= 0:
                return None
            found = await self._db.read(
                partial(select_chain, response_id=current, since=self._since(), max_depth=left)
            )
            if found is None or any(rid in self._deleted for rid, _, _ in found):
                return None
            older = found
        items: list[Any] = []
        for _, inputs, outputs in older:
            items += inputs
            items += outputs
        for stored in reversed(held):
            items += [dict(i) for i in stored.input_items]
            items += [dict(i) for i in stored.output_items]
        return items

    def _prune(self, conn: sqlite3.Connection, now: float) -> int:
        return prune_responses(conn, now - self._retention_s)


def _page_in_memory(
    stored: StoredResponse, after: str | None, limit: int, order: Literal["asc", "desc"]
) -> ItemPage:
    items: Iterable[tuple[int, Mapping[str, Any]]] = enumerate(stored.input_items)
    listed = [{**item, "id": _item_id(stored.response_id, n, item)} for n, item in items]
    if order == "desc":
        listed.reverse()
    if after is not None:
        ids = [i["id"] for i in listed]
        if after not in ids:
            raise ValueError(f"{after!r} is not an input item of {stored.response_id}")
        listed = listed[ids.index(after) + 1 :]
    return ItemPage(listed[:limit], has_more=len(listed) > limit)
