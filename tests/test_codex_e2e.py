"""Codex CLI end to end: the real ``codex exec`` → the gateway's ``/v1/responses`` → the fake
router, which only ever receives chat completions (SPEC §10.1, issue 11).

The gateway app runs on 127.0.0.1 port 0 with a gateway token, which Codex reads from
``CODERCLAW_GATEWAY_TOKEN`` (its provider's ``env_key``); Codex runs offline (``tests.clients``)
with its shell tool unsandboxed in a fresh work dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clients import FAKE_KEY, codex_exec
from tests.fake_router import FakeRouter, Reply, ToolCall
from tests.gateway_harness import run_gateway

A, B = "org/model-a", "org/model-b"
KEY_ENV = "CODERCLAW_GATEWAY_TOKEN"
FAST = {"connectSeconds": 1, "firstTokenSeconds": 2, "idleSeconds": 2, "totalSeconds": 20}
SHELL_CALL = Reply(tool_calls=[ToolCall("exec_command", {"cmd": "echo hi > out.txt"})])


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


async def _codex(
    home: Path, router: FakeRouter, work: Path, **gateway: object
) -> tuple[str, str, int]:
    """``codex exec`` once against a gateway on the fake router: (stdout, stderr, exit code)."""
    async with run_gateway(home, router, env={KEY_ENV: FAKE_KEY}, timeouts=FAST, **gateway) as (
        base,
        _,
    ):
        done = await codex_exec(
            "make out.txt", base_url=base, env_key_name=KEY_ENV, cwd=work, home=home
        )
    return done.stdout, done.stderr, done.returncode


async def test_codex_runs_the_shell_call_the_router_scripts_then_prints_the_answer(
    isolated_home: Path, router: FakeRouter, work: Path
) -> None:
    """The router's ``exec_command`` call reaches Codex as a function call it runs in its work
    dir; the command's output goes back upstream as a tool message; the final text is printed;
    exit 0. Codex's hosted ``web_search`` never reaches the router."""
    router.script(A, SHELL_CALL, Reply(content="done"))
    stdout, stderr, code = await _codex(isolated_home, router, work)
    assert code == 0, stderr
    assert stdout.strip() == "done"
    assert (work / "out.txt").read_text() == "hi\n"
    first, second = (r.json for r in router.chat_requests())
    names = [t["function"]["name"] for t in first["tools"]]
    assert "exec_command" in names
    assert "web_search" not in json.dumps(first["tools"])
    assert first["stream"] is True
    call = second["messages"][-2]
    assert call["role"] == "assistant"
    assert call["tool_calls"][0]["function"]["name"] == "exec_command"
    result = second["messages"][-1]
    assert result["role"] == "tool"
    assert result["tool_call_id"] == call["tool_calls"][0]["id"]
    assert "Process exited with code 0" in result["content"]


async def test_codex_is_served_by_the_fallback_when_the_primary_fails(
    isolated_home: Path, router: FakeRouter, work: Path
) -> None:
    """The primary answers 503 to everything: both turns are served by the fallback, before
    the first event, so Codex sees a clean run: the command runs, the answer is printed."""
    router.script(A, Reply(status=503, repeat=True))
    router.script(B, SHELL_CALL, Reply(content="done"))
    stdout, stderr, code = await _codex(isolated_home, router, work, retries=0)
    assert code == 0, stderr
    assert stdout.strip() == "done"
    assert (work / "out.txt").read_text() == "hi\n"
    assert router.count(A) >= 1
    assert router.count(B) == 2


async def test_a_stream_cut_after_commit_is_an_error_in_codex_never_an_answer(
    isolated_home: Path, router: FakeRouter, work: Path
) -> None:
    """Every answer (Codex's retries included) breaks off after two chunks: the gateway ends
    each stream with ``response.failed``, and Codex exits non-zero with the error on stderr,
    printing none of the partial text as an answer."""
    router.set_default(Reply(drop_after=2))
    stdout, stderr, code = await _codex(isolated_home, router, work)
    assert code != 0
    assert "stream disconnected before completion" in stderr
    assert "the upstream connection dropped mid-stream" in stderr  # the gateway's own words
    assert len(router.chat_requests()) > 1  # Codex re-sent the request; each was cut too
    assert "Hello from" not in stdout
    assert stdout == ""
    assert not (work / "out.txt").exists()
