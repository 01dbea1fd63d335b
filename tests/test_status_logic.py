"""The pure parts of usage, budgets and the status page, as tables of cases."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cli.status_cmd import render
from gateway.dialects.handler import client_wants_usage, with_usage_asked
from gateway.engine.record import format_usd, usage_tokens
from gateway.ledger.budget import Budgets
from gateway.ledger.usage import UsageRow
from gateway.refs import parse_ref
from gateway.status import ChainState, breaker_state, build_status, last_failure

A = parse_ref("huggingface/org/model-a")
B = parse_ref("huggingface/org/model-b")


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, (None, None, None, None)),
        ("nonsense", (None, None, None, None)),
        ({"prompt_tokens": 5, "completion_tokens": 7}, (5, 7, None, None)),
        # Together: cached flat
        ({"prompt_tokens": 5, "completion_tokens": 7, "cached_tokens": 2}, (5, 7, 2, None)),
        # OpenAI: nested details
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 15},
            },
            (10, 20, 4, 15),
        ),
        ({"prompt_tokens": 5, "completion_tokens": True}, (5, None, None, None)),  # not a count
        ({"prompt_tokens": "5"}, (None, None, None, None)),
    ],
)
def test_usage_tokens_reads_both_shapes_of_the_routers_usage(
    usage: Any, expected: tuple[int | None, ...]
) -> None:
    assert usage_tokens(usage) == expected


@pytest.mark.parametrize(
    ("body", "asked", "sent_options"),
    [
        ({}, False, {"include_usage": True}),
        ({"stream_options": None}, False, {"include_usage": True}),
        ({"stream_options": {"include_usage": True}}, True, {"include_usage": True}),
        ({"stream_options": {"include_usage": False}}, False, {"include_usage": True}),
        ({"stream_options": {"x": 1}}, False, {"x": 1, "include_usage": True}),
        ({"stream_options": "bad"}, False, "bad"),  # left for the router to refuse
    ],
)
def test_every_stream_asks_for_usage_and_only_an_explicit_true_is_the_clients_wish(
    body: dict[str, Any], asked: bool, sent_options: Any
) -> None:
    before = repr(body)
    assert client_wants_usage(body) is asked
    sent = with_usage_asked(body)
    assert sent["stream_options"] == sent_options
    assert repr(body) == before  # the client's body is not changed


def _row(attempts: str, outcome: str = "ok") -> UsageRow:
    return UsageRow(0.0, "id", "chat", None, None, None, attempts, outcome)


@pytest.mark.parametrize(
    ("attempts", "ref", "expected"),
    [
        ([], A, None),
        ([f"{A}=200"], A, None),
        ([f"{A}=503,{B}=200"], A, "503 on the last attempt"),
        ([f"{A}=503,{B}=200"], B, None),
        ([f"{A}=timeout", f"{A}=429,{B}=200"], A, "429 on the last attempt"),  # the newest
        ([f"{A}=429,{A}=reset"], A, "reset on the last attempt"),
    ],
)
def test_the_reason_of_an_open_model_is_its_newest_failed_attempt(
    attempts: list[str], ref: Any, expected: str | None
) -> None:
    assert last_failure([_row(a) for a in attempts], ref) == expected


@pytest.mark.parametrize(
    ("state", "reason", "until", "recent", "expected"),
    [
        ("closed", "", None, None, ChainState(A, "closed")),
        ("closed", "", None, "503 on the last attempt", ChainState(A, "closed")),
        ("open", "503 x2", 130.0, None, ChainState(A, "open", "503 x2", 30.0)),
        (
            "open",
            "",
            110.0,
            "timeout on the last attempt",
            ChainState(A, "open", "timeout on the last attempt", 10.0),
        ),
        ("half_open", "503 x2", 90.0, None, ChainState(A, "half_open", "503 x2", None)),
    ],
)
def test_a_model_shows_its_breaker_state_reason_and_time_left(
    state: str, reason: str, until: float | None, recent: str | None, expected: ChainState
) -> None:
    """Open: why and for how long (the breaker's reason, else the newest failure seen);
    half-open: waiting for its probe, no time left to show."""
    assert breaker_state(A, state, reason, until, 100.0, recent) == expected


def test_the_status_document_has_spec_11s_shape_newest_request_first() -> None:
    rows = [_row(f"{A}=200"), _row(f"{A}=503,{B}=200")]
    doc = build_status(
        version="1.2.3",
        uptime_s=12.34,
        listen="127.0.0.1:18789",
        now=1000.0,
        chain=[ChainState(A, "open", "503 on the last attempt", 9.5), ChainState(B, "closed")],
        catalog_models=13,
        catalog_age_s=None,
        catalog_error="timed out",
        recent=rows,
        spent=(0.5, 2.25),
        budgets=Budgets(daily_usd=1.0),
    )
    assert doc["chain"] == [
        {
            "ref": str(A),
            "state": "open",
            "reason": "503 on the last attempt",
            "until": 1009.5,
            "left_s": 9.5,
        },
        {"ref": str(B), "state": "closed", "reason": None, "until": None, "left_s": None},
    ]
    assert doc["catalog"] == {"models": 13, "age_s": None, "last_error": "timed out"}
    assert [r["attempts"] for r in doc["recent"]] == [f"{A}=503,{B}=200", f"{A}=200"]
    assert set(doc["recent"][0]) >= {
        "time",
        "dialect",
        "requested",
        "served",
        "provider",
        "attempts",
        "ttft_ms",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "outcome",
    }
    assert doc["spend"] == {
        "today_usd": 0.5,
        "month_usd": 2.25,
        "daily_budget_usd": 1.0,
        "monthly_budget_usd": None,
    }
    assert (doc["version"], doc["uptime_s"], doc["listen"]) == ("1.2.3", 12.3, "127.0.0.1:18789")


@pytest.mark.parametrize(
    ("spend", "line"),
    [
        ({"today_usd": 0.004, "daily_budget_usd": 1}, "spend today: $0.00400 of $1.00 budget"),
        ({"today_usd": 3.5}, "spend today: $3.50"),
        ({}, "spend today: -"),
    ],
)
def test_coderclaw_status_shows_spend_against_the_budget(spend: dict[str, Any], line: str) -> None:
    text = render({"version": "1", "listen": "x", "uptime_s": 5, "spend": spend})
    assert line in text.splitlines()
    assert "no requests yet" in text


@pytest.mark.parametrize(
    ("shared", "line"),
    [
        ("redis", "replica host-1-ab, shared state joined"),
        (
            "degraded",
            "replica host-1-ab, shared state degraded: on its own state until Redis answers",
        ),
        ("local", None),  # one gateway alone: nothing to say
    ],
)
def test_coderclaw_status_names_the_replica_and_its_shared_state(
    shared: str, line: str | None
) -> None:
    doc = {
        "version": "1",
        "listen": "x",
        "uptime_s": 5,
        "shared_state": shared,
        "replica": "host-1-ab",
    }
    lines = render(doc).splitlines()
    if line is None:
        assert not [x for x in lines if x.startswith("replica")]
    else:
        assert lines[1] == line


@pytest.mark.parametrize(
    ("cost", "text"), [(0.0, "0.0000000000"), (1.5e-05, "0.0000150000"), (2.25, "2.2500000000")]
)
def test_the_cost_header_is_fixed_point(cost: float, text: str) -> None:
    assert format_usd(cost) == text
