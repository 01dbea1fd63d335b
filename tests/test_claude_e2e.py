"""Claude Code end to end (issue 12): the real ``claude -p`` (``tests/clients.py``) → the real
gateway app → the fake router, which only ever receives chat completions.

Claude Code sends its own ``claude-…`` model names; the default ``gateway.anthropic.modelMap``
(``{"*": "coderclaw"}``) sends them to the configured chain. It runs offline (no telemetry, no
update check, no probe); no Anthropic account is involved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clients import CLAUDE_NO_RETRIES, claude_print, require_clients
from tests.fake_router import FakeRouter, Reply, ToolCall
from tests.gateway_harness import run_gateway

A, B = "org/model-a", "org/model-b"
REF_A, REF_B = (f"huggingface/{m}" for m in (A, B))
FAST = {"connectSeconds": 2, "firstTokenSeconds": 5, "idleSeconds": 5, "totalSeconds": 30}
BASH = Reply(tool_calls=[ToolCall("Bash", {"command": "echo hi > out.txt"}, chunks=3)])
DONE = Reply(content="done")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    require_clients()
    path = tmp_path / "work"
    path.mkdir()
    return path


async def test_claude_code_runs_its_bash_tool_through_the_gateway_and_prints_the_answer(
    work: Path, isolated_home: Path, router: FakeRouter
) -> None:
    """The model asks for Bash (a streamed tool call, arguments in pieces); Claude Code runs it
    in its cwd, sends the result back as a tool message, prints the final text, exits 0."""
    router.script(A, BASH, DONE)
    async with run_gateway(isolated_home, router, timeouts=FAST) as (base, _):
        done = await claude_print(
            "make out.txt", base_url=base.removesuffix("/v1"), cwd=work, home=isolated_home
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "done"
    assert (work / "out.txt").read_text() == "hi\n"
    first, second = router.chat_requests()
    assert first.model == second.model == A  # the claude-… name went to the chain's primary
    assert first.json["stream"] is True
    assert "Bash" in [t["function"]["name"] for t in first.json["tools"]]
    assert first.json["messages"][0]["role"] == "system"
    *_, turn, result = second.json["messages"]
    (call,) = turn["tool_calls"]
    assert call["function"]["name"] == "Bash"
    assert json.loads(call["function"]["arguments"]) == {"command": "echo hi > out.txt"}
    assert result["role"] == "tool" and result["tool_call_id"] == call["id"]
    assert not result["content"].startswith("Error")  # is_error false: the command worked


async def test_claude_code_is_served_by_the_fallback_when_the_primary_fails(
    work: Path, isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=503, repeat=True))
    router.script(B, BASH, DONE)
    async with run_gateway(isolated_home, router, timeouts=FAST, retries=0) as (base, _):
        done = await claude_print(
            "make out.txt", base_url=base.removesuffix("/v1"), cwd=work, home=isolated_home
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "done"
    assert (work / "out.txt").read_text() == "hi\n"
    assert router.count(B) == 2
    assert router.count(A) >= 1  # tried first; cooling after its first failure


async def test_claude_code_reports_a_stream_cut_after_commit_as_an_api_error(
    work: Path, isolated_home: Path, router: FakeRouter
) -> None:
    """The router drops the connection after two chunks: the gateway ends the committed stream
    with ``event: error`` (no ``message_stop``), and Claude Code prints ``API Error`` and exits
    non-zero instead of taking the half answer as success. Claude Code's retries are off
    (``CLAUDE_NO_RETRIES``): by default it re-sends the failed stream once without streaming,
    which the gateway would serve as a new request. Mid-stream rescue is off: it would go on
    with the fallback instead (``tests/test_rescue_e2e.py`` shows that)."""
    router.script(A, Reply(content="half of an answer that breaks", chunks=4, drop_after=2))
    async with run_gateway(isolated_home, router, timeouts=FAST, rescue="off") as (base, _):
        done = await claude_print(
            "hi",
            base_url=base.removesuffix("/v1"),
            cwd=work,
            home=isolated_home,
            env=CLAUDE_NO_RETRIES,
        )
    assert done.returncode != 0
    assert "API Error" in done.stdout + done.stderr
    assert "the upstream connection dropped mid-stream" in done.stdout + done.stderr
    assert "half of an answer that breaks" not in done.stdout
    assert len(router.chat_requests()) == 1


async def test_claude_code_resends_a_cut_stream_without_streaming_and_gets_the_whole_answer(
    work: Path, isolated_home: Path, router: FakeRouter
) -> None:
    """With its default retries, Claude Code answers the gateway's ``event: error`` by sending
    the same request with ``stream: false``: a new request the chain serves whole."""
    router.script(
        A, Reply(content="half of an answer that breaks", chunks=4, drop_after=2), DONE
    )
    async with run_gateway(isolated_home, router, timeouts=FAST, rescue="off") as (base, _):
        done = await claude_print(
            "hi", base_url=base.removesuffix("/v1"), cwd=work, home=isolated_home
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "done"
    streamed, resent = router.chat_requests()
    assert (streamed.json["stream"], resent.json.get("stream", False)) == (True, False)
    assert resent.json["messages"] == streamed.json["messages"]
