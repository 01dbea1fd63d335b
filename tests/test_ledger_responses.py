"""The Responses store: store / get / input_items / delete / history, retention, and
read-your-writes before the write has reached the file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.ledger.db import Database
from gateway.ledger.responses import MAX_CHAIN, ResponseStore


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def answer(text: str, item_id: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "coderclaw.db")
    await database.start()
    yield database
    await database.stop()


@pytest.fixture
def store(db: Database, clock: Clock) -> ResponseStore:
    return ResponseStore(db, retention_hours=168, clock=clock)


def turn(store: ResponseStore, n: int, previous: str | None, now: float) -> dict[str, Any]:
    """Store response ``resp_n``: one user message in, one assistant message out."""
    obj = {"id": f"resp_{n}", "object": "response", "status": "completed"}
    store.store(f"resp_{n}", now, [user(f"q{n}")], [answer(f"a{n}", f"msg_{n}")], obj, previous)
    return obj


def stored_rows(db: Database) -> int:
    with sqlite3.connect(db.path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


@pytest.mark.parametrize("committed", [False, True])
async def test_a_stored_response_is_served_at_once_and_after_it_reached_the_file(
    store: ResponseStore, db: Database, clock: Clock, committed: bool
) -> None:
    """A client may send the next turn before the write committed: ``get`` and ``history``
    answer from memory until then, from the file after."""
    obj = turn(store, 1, None, clock.now)
    turn(store, 2, "resp_1", clock.now)
    if committed:
        assert await db.drain()
        assert stored_rows(db) == 2
    assert await store.get("resp_1") == obj
    assert await store.history("resp_2") == [
        user("q1"),
        answer("a1", "msg_1"),
        user("q2"),
        answer("a2", "msg_2"),
    ]


async def test_history_mixes_written_and_pending_responses_in_order(
    store: ResponseStore, db: Database, clock: Clock
) -> None:
    turn(store, 1, None, clock.now)
    turn(store, 2, "resp_1", clock.now)
    assert await db.drain()
    turn(store, 3, "resp_2", clock.now)  # still in memory
    history = await store.history("resp_3")
    assert history is not None
    assert [i["content"][0]["text"] for i in history] == ["q1", "a1", "q2", "a2", "q3", "a3"]


async def test_unknown_expired_and_deleted_responses_are_missing(
    store: ResponseStore, db: Database, clock: Clock
) -> None:
    assert await store.get("resp_nope") is None
    assert await store.history("resp_nope") is None
    assert await store.input_items("resp_nope") is None
    turn(store, 1, None, clock.now - 169 * 3600)  # older than 168 h
    turn(store, 2, None, clock.now)
    assert await store.get("resp_1") is None
    assert await db.drain()
    assert await store.get("resp_1") is None
    assert await store.input_items("resp_1") is None
    assert await store.delete("resp_2") is True
    assert await store.get("resp_2") is None  # at once, before the delete is written
    assert await store.delete("resp_2") is False
    assert await db.drain()
    assert await store.get("resp_2") is None
    assert stored_rows(db) == 1  # resp_1 waits for the daily prune


async def test_a_chain_with_a_missing_link_has_no_history(
    store: ResponseStore, db: Database, clock: Clock
) -> None:
    """Deleting or expiring an earlier turn breaks the conversation: None, never a silently
    shortened history."""
    turn(store, 1, None, clock.now - 100 * 3600)
    turn(store, 2, "resp_1", clock.now)
    turn(store, 3, "resp_2", clock.now)
    assert await db.drain()
    assert await store.history("resp_3") is not None
    clock.now += 69 * 3600  # resp_1 is now 169 h old
    assert await store.history("resp_3") is None
    assert await store.history("resp_2") is None
    clock.now -= 69 * 3600
    assert await store.delete("resp_2")
    assert await store.history("resp_3") is None


async def test_history_follows_at_most_max_chain_links(db: Database, clock: Clock) -> None:
    short = ResponseStore(db, clock=clock, max_chain=3)
    turn(short, 1, None, clock.now)
    turn(short, 2, "resp_1", clock.now)
    turn(short, 3, "resp_2", clock.now)
    assert await db.drain()
    found = await short.history("resp_3")
    assert found is not None and len(found) == 6
    turn(short, 4, "resp_3", clock.now)
    assert await short.history("resp_4") is None  # pending + file: 4 links > 3
    assert await db.drain()
    assert await short.history("resp_4") is None  # all in the file
    assert MAX_CHAIN >= 100


@pytest.mark.parametrize("committed", [False, True])
async def test_input_items_pages_like_openai(
    store: ResponseStore, db: Database, clock: Clock, committed: bool
) -> None:
    """Own input items only; newest first by default; ``after`` an item id; ``has_more``;
    items without an id get ``{response_id}_in_{n}``."""
    turn(store, 0, None, clock.now)
    items = [user(f"m{n}") for n in range(5)]
    items[2] = {**items[2], "id": "msg_given"}
    store.store("resp_1", clock.now, items, [answer("x", "msg_out")], {"id": "resp_1"}, "resp_0")
    if committed:
        assert await db.drain()
    page = await store.input_items("resp_1", limit=2)
    assert page is not None
    assert page.as_json() == {
        "object": "list",
        "data": [{**items[4], "id": "resp_1_in_4"}, {**items[3], "id": "resp_1_in_3"}],
        "first_id": "resp_1_in_4",
        "last_id": "resp_1_in_3",
        "has_more": True,
    }
    page = await store.input_items("resp_1", after="resp_1_in_3", limit=2)
    assert page is not None and [i["id"] for i in page.data] == ["msg_given", "resp_1_in_1"]
    assert page.has_more
    page = await store.input_items("resp_1", after="resp_1_in_1")
    assert page is not None and [i["id"] for i in page.data] == ["resp_1_in_0"]
    assert not page.has_more
    page = await store.input_items("resp_1", order="asc")
    assert page is not None
    assert [i["id"] for i in page.data] == [
        "resp_1_in_0",
        "resp_1_in_1",
        "msg_given",
        "resp_1_in_3",
        "resp_1_in_4",
    ]
    assert [i["content"] for i in page.data] == [i["content"] for i in items]
    with pytest.raises(ValueError, match="msg_out"):
        await store.input_items("resp_1", after="msg_out")  # an output item, not an input


async def test_storing_the_same_id_again_replaces_it(
    store: ResponseStore, db: Database, clock: Clock
) -> None:
    turn(store, 1, None, clock.now)
    assert await db.drain()
    store.store("resp_1", clock.now, [user("again")], [], {"id": "resp_1", "v": 2}, None)
    assert await db.drain()
    assert await store.get("resp_1") == {"id": "resp_1", "v": 2}
    assert await store.history("resp_1") == [user("again")]


async def test_expired_responses_are_pruned_daily(tmp_path: Path, clock: Clock) -> None:
    db = Database(tmp_path / "coderclaw.db", clock=clock)
    store = ResponseStore(db, retention_hours=1, clock=clock)
    await db.start()
    try:
        turn(store, 1, None, clock.now)
        turn(store, 2, None, clock.now + 3600)
        assert await db.drain()
        clock.now += 25 * 3600
        assert await db.drain()
        with sqlite3.connect(db.path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0
            assert conn.execute("SELECT COUNT(*) FROM response_items").fetchone()[0] == 0
    finally:
        await db.stop()


async def test_a_response_that_cannot_be_serialised_is_dropped_alone_and_logged(
    store: ResponseStore, db: Database, clock: Clock
) -> None:
    """One bad job (a value JSON cannot hold) neither stops the writer nor takes the other
    jobs of its transaction with it."""
    with capture_logs() as logs:
        turn(store, 1, None, clock.now)
        store.store("resp_bad", clock.now, [], [], {"id": "x", "oops": object()}, None)
        turn(store, 2, None, clock.now)
        assert await db.drain()
    assert [e["event"] for e in logs] == ["database_job_failed"]
    assert await store.get("resp_bad") is None
    assert await store.get("resp_1") is not None and await store.get("resp_2") is not None
    assert stored_rows(db) == 2
