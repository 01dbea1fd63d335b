"""The real Codex CLI and Claude Code install and run offline against a server on 127.0.0.1.

A ``RecordingServer`` answers with hand-written minimal streams (the gateway's dialects are
tested elsewhere); these tests pin what each CLI sends, what it accepts back, how it reports a
failed stream, and that it reaches no host but loopback.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.clients import (
    CLAUDE_NO_RETRIES,
    CODEX_NO_RETRIES,
    FAKE_KEY,
    Answer,
    claude_print,
    codex_exec,
    messages_bash_call,
    messages_error_after_text,
    messages_text,
    recording_server,
    require_clients,
    responses_failed,
    responses_message,
    responses_shell_call,
    responses_stream,
)
from tests.record_clients import CLAUDE_REQUEST, CODEX_REQUEST, PROMPT, record_claude, record_codex

KEY_ENV = "CODERCLAW_GATEWAY_TOKEN"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def _input_items(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [item for item in body["input"] if item.get("type") == kind]


async def test_codex_exec_runs_its_shell_tool_then_prints_the_final_message(
    work: Path, isolated_home: Path
) -> None:
    """``exec_command {"cmd": ...}`` runs in the workdir; its output goes back as the next
    turn's ``function_call_output``; the final message is printed; exit 0."""
    async with recording_server() as server:
        server.script(
            "/v1/responses",
            responses_stream(responses_shell_call("echo hi > out.txt", call_id="call_7")),
            responses_stream(responses_message("All done."), response_id="resp_2"),
        )
        done = await codex_exec(
            "make out.txt",
            base_url=f"{server.url}/v1",
            env_key_name=KEY_ENV,
            cwd=work,
            home=isolated_home,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "All done."
    assert (work / "out.txt").read_text() == "hi\n"
    assert [(s.method, s.path) for s in server.seen] == [("POST", "/v1/responses")] * 2
    first, second = server.seen
    assert first.headers["Authorization"] == f"Bearer {FAKE_KEY}"
    assert first.headers["Accept"] == "text/event-stream"
    assert first.headers["originator"] == "codex_exec"
    assert first.json()["stream"] is True
    (output,) = _input_items(second.json(), "function_call_output")
    assert output["call_id"] == "call_7"
    assert "Process exited with code 0" in output["output"]
    (call,) = _input_items(second.json(), "function_call")
    assert (call["name"], json.loads(call["arguments"])) == (
        "exec_command",
        {"cmd": "echo hi > out.txt"},
    )


async def test_codex_without_an_env_key_sends_no_authorization(
    work: Path, isolated_home: Path
) -> None:
    """A provider without ``env_key`` needs no login and sends no ``Authorization`` header."""
    async with recording_server() as server:
        server.script("/v1/responses", responses_stream(responses_message("hello")))
        done = await codex_exec(
            "hi", base_url=f"{server.url}/v1", env_key_name=None, cwd=work, home=isolated_home
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello"
    assert "Authorization" not in server.seen[0].headers


async def test_codex_reports_response_failed_with_exit_1_and_the_message(
    work: Path, isolated_home: Path
) -> None:
    """A stream ending in ``response.failed`` prints the error's message on stderr, nothing on
    stdout, and exits 1 (retries off; by default Codex re-sends 5 times first)."""
    async with recording_server() as server:
        server.script("/v1/responses", responses_failed("all models failed: upstream 502"))
        done = await codex_exec(
            "hi",
            base_url=f"{server.url}/v1",
            env_key_name=None,
            cwd=work,
            home=isolated_home,
            config=CODEX_NO_RETRIES,
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert "stream disconnected before completion: all models failed: upstream 502" in done.stderr
    assert len(server.posts("/v1/responses")) == 1


async def test_codex_reports_a_stream_cut_before_completed_as_an_error(
    work: Path, isolated_home: Path
) -> None:
    """An item arrives but the stream closes without ``response.completed``: exit 1, and the
    item's text is never printed as the answer."""
    cut = Answer(events=responses_stream(responses_message("half an answer")).events[:2])
    async with recording_server() as server:
        server.script("/v1/responses", cut)
        done = await codex_exec(
            "hi",
            base_url=f"{server.url}/v1",
            env_key_name=None,
            cwd=work,
            home=isolated_home,
            config=CODEX_NO_RETRIES,
        )
    assert done.returncode == 1
    assert "half an answer" not in done.stdout
    assert "stream closed before response.completed" in done.stderr


async def test_claude_print_runs_bash_then_prints_the_final_text(
    work: Path, isolated_home: Path
) -> None:
    """``tool_use`` of ``Bash`` with ``{"command": ...}`` runs in the cwd; its result goes back as
    a ``tool_result``; the final text is printed; exit 0. No ``HEAD`` probe, no other path."""
    async with recording_server() as server:
        server.script(
            "/v1/messages", messages_bash_call("echo hi > out.txt"), messages_text("All done.")
        )
        done = await claude_print("make out.txt", base_url=server.url, cwd=work, home=isolated_home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "All done."
    assert (work / "out.txt").read_text() == "hi\n"
    assert [(s.method, s.path, s.query) for s in server.seen] == [
        ("POST", "/v1/messages", "beta=true")
    ] * 2
    first, second = server.seen
    assert first.headers["Authorization"] == f"Bearer {FAKE_KEY}"
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert first.headers["anthropic-beta"].startswith("claude-code-")
    body = first.json()
    assert body["stream"] is True
    assert body["model"].startswith("claude-")
    last = second.json()["messages"][-1]
    (result,) = [b for b in last["content"] if b["type"] == "tool_result"]
    assert result["tool_use_id"] == "toolu_1"
    assert result["is_error"] is False


async def test_claude_reports_event_error_with_exit_1_and_the_message(
    work: Path, isolated_home: Path
) -> None:
    """Text then ``event: error``: Claude Code prints ``API Error: <message>`` (on stdout, as
    its ``-p`` mode does) and exits 1, not the partial text as an answer."""
    async with recording_server() as server:
        server.script("/v1/messages", messages_error_after_text("partial ", "all models failed"))
        done = await claude_print(
            "hi", base_url=server.url, cwd=work, home=isolated_home, env=CLAUDE_NO_RETRIES
        )
    assert done.returncode == 1
    assert done.stdout.strip() == "API Error: all models failed"
    assert len(server.posts("/v1/messages")) == 1


async def test_claude_resends_a_failed_stream_once_without_streaming(
    work: Path, isolated_home: Path
) -> None:
    """By default a stream ending in ``event: error`` is re-sent as the same request with
    ``stream: false``, and a good non-stream answer to it is printed with exit 0: a gateway
    sees the retry as a new request."""
    whole = {
        "id": "msg_2",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "the whole answer"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 3},
    }
    async with recording_server() as server:
        server.script(
            "/v1/messages", messages_error_after_text("partial ", "cut"), Answer(body=whole)
        )
        done = await claude_print("hi", base_url=server.url, cwd=work, home=isolated_home)
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip() == "the whole answer"
    streamed, retried = server.posts("/v1/messages")
    assert (streamed.json()["stream"], retried.json()["stream"]) == (True, False)
    assert retried.json()["messages"] == streamed.json()["messages"]


def _shape(body: dict[str, Any]) -> dict[str, Any]:
    """The parts of a request body that a dialect depends on: keys and tool names."""
    tools = body.get("tools", [])
    return {
        "keys": sorted(body),
        "tools": sorted(t.get("name") or t["type"] for t in tools),
        "shell": next(
            (
                t.get("parameters") or t.get("input_schema")
                for t in tools
                if t.get("name") in ("exec_command", "Bash")
            ),
            None,
        ),
    }


async def test_saved_codex_request_is_what_the_pinned_codex_sends(tmp_path: Path) -> None:
    """``tests/data/codex_responses_request.json`` has the keys, tools and shell-tool schema the
    installed Codex sends (rerun ``python -m tests.record_clients`` after a version bump)."""
    require_clients()
    _, live = await record_codex(tmp_path)
    saved = json.loads(CODEX_REQUEST.read_text())
    assert _shape(live) == _shape(saved)
    assert "web_search" in _shape(saved)["tools"]
    assert saved["input"][-1]["content"][0]["text"] == PROMPT


async def test_saved_claude_request_is_what_the_pinned_claude_code_sends(tmp_path: Path) -> None:
    """``tests/data/claude_code_messages_request.json`` has the keys, tools and Bash schema the
    installed Claude Code sends."""
    require_clients()
    _, live = await record_claude(tmp_path)
    saved = json.loads(CLAUDE_REQUEST.read_text())
    assert _shape(live) == _shape(saved)
    assert _shape(saved)["shell"]["required"] == ["command"]


# ------------------------------------------------------------------------- offline proof
_CONNECT = re.compile(r"connect\(\d+, \{sa_family=AF_INET6?, (?P<rest>[^}]*)\}")
_LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"')


def _remote_connects(trace: Path) -> list[str]:
    """Every IPv4/IPv6 ``connect`` in an strace log whose address is not loopback."""
    return [
        m.group(0)
        for m in _CONNECT.finditer(trace.read_text(errors="replace"))
        if not _LOOPBACK.search(m.group("rest"))
    ]


@pytest.mark.parametrize("cli", ["codex", "claude"])
async def test_the_clis_connect_to_nothing_but_loopback(
    cli: str, work: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """Under strace, a whole run (tool call and answer) opens no socket to any address but
    127.0.0.1 — no DNS lookup, telemetry, update check or plugin sync."""
    require_clients()
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    trace = tmp_path / "trace.txt"
    wrapper = [strace, "-f", "-qq", "-e", "trace=connect", "-o", str(trace)]
    async with recording_server() as server:
        if cli == "codex":
            server.script(
                "/v1/responses",
                responses_stream(responses_shell_call("echo hi > out.txt")),
                responses_stream(responses_message("done")),
            )
            done = await codex_exec(
                "hi",
                base_url=f"{server.url}/v1",
                env_key_name=KEY_ENV,
                cwd=work,
                home=isolated_home,
                wrapper=wrapper,
            )
        else:
            server.script(
                "/v1/messages", messages_bash_call("echo hi > out.txt"), messages_text("done")
            )
            done = await claude_print(
                "hi", base_url=server.url, cwd=work, home=isolated_home, wrapper=wrapper
            )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (work / "out.txt").read_text() == "hi\n"
    assert "127.0.0.1" in trace.read_text()
    assert _remote_connects(trace) == []
