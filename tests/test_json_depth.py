"""JSON nesting depth (SPEC §12): a body nested deeper than ``wire.MAX_DEPTH`` (512) is a 400
``invalid_request_error`` at every depth, never a 500. Before, a body nested 1,000 to 1,023 deep
parsed (orjson reads 1,024 levels) and then failed to serialise for the upstream (orjson writes
254, the stdlib fallback recursed): a 500. Depths up to the cap still reach the router intact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway import wire
from tests.threaded_gateway import ThreadedGateway, gateway_in_thread

CHAT = "/v1/chat/completions"
HI = b'{"messages": [{"role": "user", "content": "hi"}]'


def nested_list(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_object(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


# ------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (0, 0),
        ("x", 0),
        ([], 1),
        ({}, 1),
        ([1, [2, [3]]], 3),
        ({"a": [{"b": {}}], "c": 1}, 4),
        ([[], [[[]]], []], 4),
        (json.loads(nested_list(600)), 600),
    ],
)
def test_nesting_depth(value: Any, depth: int) -> None:
    """Lists and objects count a level each; scalars none; no recursion at any depth."""
    assert wire.nesting_depth(value) == depth


@pytest.mark.parametrize("make", [nested_list, nested_object], ids=["lists", "objects"])
@pytest.mark.parametrize("depth", [1, 254, 255, 511, 512])
def test_loads_accepts_up_to_the_cap_and_dumps_writes_it_back(make: Any, depth: int) -> None:
    """Up to 512 levels parse, and dumps writes the same value back (past orjson's 254 through
    the stdlib)."""
    value = wire.loads(make(depth))
    assert wire.nesting_depth(value) == depth
    assert json.loads(wire.dumps(value)) == value


@pytest.mark.parametrize("make", [nested_list, nested_object], ids=["lists", "objects"])
@pytest.mark.parametrize("depth", [513, 900, 1000, 1023, 1024, 1025, 1100, 5000, 100_000])
def test_loads_refuses_past_the_cap_with_a_clear_message(make: Any, depth: int) -> None:
    """Deeper than 512: a ValueError that says so, from orjson's and the stdlib's paths alike
    (a run of 19 digits sends a body to the stdlib)."""
    for body in (make(depth), b'{"seed": 1234567890123456789012, "x": ' + make(depth) + b"}"):
        with pytest.raises(ValueError, match="nested deeper than 512 levels"):
            wire.loads(body)


def test_dumps_of_a_value_too_deep_for_the_stdlib_is_a_value_error() -> None:
    """Never a RecursionError out of dumps (the 500 of before)."""
    value: list[Any] = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(ValueError, match="nested deeper"):
        wire.dumps(value)


def test_a_body_with_many_brackets_in_strings_is_not_deep() -> None:
    """Brackets inside strings (code in a prompt) do not count as nesting."""
    body = json.dumps({"messages": [{"role": "user", "content": "[{" * 5000}]}).encode()
    assert wire.loads(body)["messages"][0]["content"] == "[{" * 5000


# ------------------------------------------------------------------------ a running gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    home = tmp_path_factory.mktemp("home")
    with gateway_in_thread(home, retries=0) as running:
        yield running


def post(gw: ThreadedGateway, body: bytes) -> tuple[int, dict[str, Any]]:
    conn = gw.connection()
    try:
        conn.request("POST", CHAT, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


SHAPES = {
    "whole-body-lists": nested_list,
    "whole-body-objects": nested_object,
    "in-a-field-lists": lambda d: HI + b', "metadata": ' + nested_list(d - 1) + b"}",
    "in-a-field-objects": lambda d: HI + b', "metadata": ' + nested_object(d - 1) + b"}",
    "in-messages": lambda d: b'{"messages": ' + nested_list(d - 1) + b"}",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_depth_from_1000_to_1100_is_a_400_never_a_500(
    gw: ThreadedGateway, shape: str
) -> None:
    """Each of the 101 depths, as a whole body, inside an extra field and inside messages:
    400 invalid_request_error saying the body is nested too deep; nothing reaches the router;
    the gateway still serves afterwards."""
    make = SHAPES[shape]
    before = len(gw.router.chat_requests())
    for depth in range(1000, 1101):
        body = make(depth)
        status, data = post(gw, body)
        assert status == 400, (depth, data)
        assert data["error"]["type"] == "invalid_request_error", (depth, data)
        assert "nested deeper than 512 levels" in data["error"]["message"], (depth, data)
    assert len(gw.router.chat_requests()) == before
    status, data = post(gw, HI + b"}")
    assert status == 200, data


@pytest.mark.parametrize("depth", [253, 254, 255, 300, 511])
def test_a_deep_field_within_the_cap_reaches_the_router_intact(
    gw: ThreadedGateway, depth: int
) -> None:
    """A field nested up to the cap (past orjson's 254 for writing) is forwarded as it was."""
    body = HI + b', "metadata": ' + nested_list(depth) + b"}"
    status, data = post(gw, body)
    assert status == 200, data
    sent = gw.router.chat_requests()[-1].body
    assert json.loads(sent)["metadata"] == json.loads(nested_list(depth))

