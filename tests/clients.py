"""Drive the real Codex CLI and Claude Code, offline, against a server on 127.0.0.1.

The CLIs are the npm packages pinned in ``tests/clients/package.json`` (installed by
``scripts/bootstrap --test``). Each run gets its own HOME, ``CODEX_HOME`` / ``CLAUDE_CONFIG_DIR``,
an environment with nothing of the developer's (no real keys), a fake key, a timeout, and every
feature that would reach a host other than the server given turned off:

- Codex: ``features.plugins=false`` (else it clones the curated plugin marketplace from GitHub and
  lists remote plugins), ``analytics.enabled=false`` (else it posts analytics events),
  ``check_for_update_on_startup=false``; OpenTelemetry export is off by default.
- Claude Code: ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` (else it resolves its vendor's API
  host for telemetry and feature flags and probes ``HEAD /api/hello``), plus the narrower
  ``DISABLE_AUTOUPDATER`` / ``DISABLE_TELEMETRY`` / ``DISABLE_ERROR_REPORTING``.

``RecordingServer`` is the investigation helper: it records every request and answers from a
per-path script of hand-written replies (``responses_*`` / ``messages_*`` build the minimal
streams each CLI accepts). The gateway's own tests use the gateway and the fake router instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.gateway_harness import serve_app

CLIENTS_DIR = Path(__file__).with_name("clients")
_MODULES = CLIENTS_DIR / "node_modules"
CODEX_BIN = _MODULES / "@openai" / "codex" / "bin" / "codex.js"
CLAUDE_BIN = _MODULES / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"

FAKE_KEY = "sk-fake-test-key"
CODEX_OFFLINE = (
    "features.plugins=false",
    "analytics.enabled=false",
    "check_for_update_on_startup=false",
)
# Codex retries a failed stream 5 times and a failed request 4 times, with backoff (~7 s).
CODEX_NO_RETRIES = (
    "model_providers.coderclaw.stream_max_retries=0",
    "model_providers.coderclaw.request_max_retries=0",
)
CLAUDE_OFFLINE = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
}
# Claude Code retries errors up to 10 times with backoff, and re-sends a stream that failed
# (``event: error``, or cut before ``message_stop``) once as a non-streaming request.
CLAUDE_NO_RETRIES = {
    "CLAUDE_CODE_MAX_RETRIES": "0",
    "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
}


def require_clients() -> None:
    """Skip when node/npm are missing; fail, saying how to fix it, when the CLIs are absent."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the real CLI tests need {' and '.join(missing)} on PATH")
    absent = [str(p.relative_to(CLIENTS_DIR)) for p in (CODEX_BIN, CLAUDE_BIN) if not p.exists()]
    if absent:
        pytest.fail(f"not installed: {', '.join(absent)}; run scripts/bootstrap --test")


def _base_env(home: Path, extra: dict[str, str] | None) -> dict[str, str]:
    """PATH (for node) and the isolated HOME; none of the developer's keys or settings."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "dumb"}
    env.update(extra or {})
    return env


def codex_home(home: Path) -> Path:
    """The ``CODEX_HOME`` the helpers use for ``home`` (created)."""
    path = home / ".codex"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_codex_config(home: Path, *, base_url: str, env_key_name: str | None) -> Path:
    """A ``config.toml`` whose only provider is ``base_url`` (a Responses endpoint)."""
    lines = [
        'model = "coderclaw"',
        'model_provider = "coderclaw"',
        "",
        "[model_providers.coderclaw]",
        'name = "CoderClaw test server"',
        f"base_url = {json.dumps(base_url)}",
        'wire_api = "responses"',
    ]
    if env_key_name is not None:
        lines.append(f"env_key = {json.dumps(env_key_name)}")
    path = codex_home(home) / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _run(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,  # noqa: ASYNC109 - the child is killed by PID, not just abandoned
) -> subprocess.CompletedProcess[str]:
    """Run a child with no stdin; on timeout kill it (by its PID) and fail the test."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        os.killpg(proc.pid, 9)
        await proc.wait()
        pytest.fail(f"{' '.join(argv[:3])} ... did not finish within {timeout} s")
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(argv), proc.returncode, out.decode(), err.decode())


async def codex_exec(
    prompt: str,
    *,
    base_url: str | None,
    env_key_name: str | None,
    cwd: Path,
    home: Path,
    env: dict[str, str] | None = None,
    config: Sequence[str] = (),
    wrapper: Sequence[str] = (),
    timeout: float = 45.0,  # noqa: ASYNC109
) -> subprocess.CompletedProcess[str]:
    """``codex exec PROMPT`` in ``cwd`` with ``$HOME/.codex`` as ``CODEX_HOME``.

    With ``base_url`` the config is (re)written to point at it, the key read from
    ``env_key_name`` (set to ``FAKE_KEY`` unless ``env`` gives it); with ``base_url=None`` the
    config already in ``CODEX_HOME`` is used as it is. The sandbox is off (``danger-full-access``)
    so the shell tool runs the same on every machine; the final message is on stdout.
    ``config`` adds ``-c key=value`` overrides, e.g. ``CODEX_NO_RETRIES`` for a quick failure;
    ``wrapper`` is a command prefix (``strace ...``).
    """
    require_clients()
    if base_url is not None:
        write_codex_config(home, base_url=base_url, env_key_name=env_key_name)
    extra = {"CODEX_HOME": str(codex_home(home))}
    if env_key_name is not None:
        extra[env_key_name] = FAKE_KEY
    extra.update(env or {})
    overrides = [arg for setting in (*CODEX_OFFLINE, *config) for arg in ("-c", setting)]
    argv = [
        *wrapper,
        str(CODEX_BIN),
        "exec",
        "--skip-git-repo-check",
        "--sandbox",
        "danger-full-access",
        *overrides,
        "-C",
        str(cwd),
        prompt,
    ]
    return await _run(argv, cwd=cwd, env=_base_env(home, extra), timeout=timeout)


def claude_config_dir(home: Path) -> Path:
    """The ``CLAUDE_CONFIG_DIR`` the helpers use for ``home`` (created)."""
    path = home / ".claude"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def claude_print(
    prompt: str,
    *,
    base_url: str | None,
    cwd: Path,
    home: Path,
    auth_token: str | None = FAKE_KEY,
    allowed_tools: Sequence[str] = ("Bash",),
    env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
    timeout: float = 45.0,  # noqa: ASYNC109
) -> subprocess.CompletedProcess[str]:
    """``claude -p PROMPT --allowedTools Bash`` in ``cwd`` with ``$HOME/.claude`` as config dir.

    ``base_url`` becomes ``ANTHROPIC_BASE_URL`` and ``auth_token`` ``ANTHROPIC_AUTH_TOKEN``
    (sent as ``Authorization: Bearer``); ``None`` leaves either to the settings file already in
    the config dir. ``--dangerously-skip-permissions`` is refused as root, so the tools the test
    needs are allowed by name instead. ``wrapper`` is a command prefix (``strace ...``).
    """
    require_clients()
    extra = {"CLAUDE_CONFIG_DIR": str(claude_config_dir(home)), **CLAUDE_OFFLINE}
    if base_url is not None:
        extra["ANTHROPIC_BASE_URL"] = base_url
    if auth_token is not None:
        extra["ANTHROPIC_AUTH_TOKEN"] = auth_token
    extra.update(env or {})
    argv = [*wrapper, str(CLAUDE_BIN), "-p", prompt, "--allowedTools", *allowed_tools]
    return await _run(argv, cwd=cwd, env=_base_env(home, extra), timeout=timeout)


# --------------------------------------------------------------------- recording server
@dataclass(frozen=True)
class Seen:
    """One request as the recording server received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    """A scripted reply: SSE ``events`` (each ``event: <type>`` + JSON) or a JSON ``body``."""

    status: int = 200
    events: Sequence[dict[str, Any]] = ()
    body: Any = None


@dataclass
class RecordingServer:
    """Records every request; answers each path from its queue, else 404 (HEAD: 200)."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    _scripts: dict[str, list[Answer]] = field(default_factory=dict)

    def script(self, path: str, *answers: Answer) -> None:
        self._scripts.setdefault(path, []).extend(answers)

    def posts(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and s.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.query_string,
                dict(request.headers),
                await request.read(),
            )
        )
        queue = self._scripts.get(request.path) if request.method == "POST" else None
        if not queue:
            status = 200 if request.method == "HEAD" else 404
            return web.json_response({"error": f"unscripted {request.path}"}, status=status)
        answer = queue.pop(0)
        if answer.body is not None or not answer.events:
            return web.json_response(answer.body, status=answer.status)
        text = "".join(
            f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in answer.events
        )
        return web.Response(
            status=answer.status, text=text, content_type="text/event-stream", charset="utf-8"
        )


@asynccontextmanager
async def recording_server() -> AsyncIterator[RecordingServer]:
    """A ``RecordingServer`` on 127.0.0.1 at a free port, for the block."""
    server = RecordingServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    async with serve_app(app, access_log=None) as port:
        server.url = f"http://127.0.0.1:{port}"
        yield server


# ---------------------------------------------- minimal streams each CLI accepts (by hand)
def responses_stream(item: dict[str, Any], *, response_id: str = "resp_1") -> Answer:
    """The fewest Responses events that make Codex take ``item`` as the whole turn."""
    return Answer(
        events=[
            {"type": "response.created", "response": {"id": response_id}},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {
                "type": "response.completed",
                "response": {
                    "id": response_id,
                    "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
                },
            },
        ]
    )


def responses_message(text: str) -> dict[str, Any]:
    """A finished assistant ``message`` output item."""
    return {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def responses_shell_call(command: str, *, call_id: str = "call_1") -> dict[str, Any]:
    """A ``function_call`` of Codex's shell tool (``exec_command`` with ``cmd``)."""
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": "exec_command",
        "arguments": json.dumps({"cmd": command}),
        "status": "completed",
    }


def responses_failed(message: str, *, code: str = "server_error") -> Answer:
    """A stream that commits (``response.created``) and then ends with ``response.failed``."""
    return Answer(
        events=[
            {"type": "response.created", "response": {"id": "resp_f"}},
            {
                "type": "response.failed",
                "response": {
                    "id": "resp_f",
                    "status": "failed",
                    "error": {"code": code, "message": message},
                },
            },
        ]
    )


def _message_start(model: str) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    }


def _message_end(stop_reason: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": 1},
        },
        {"type": "message_stop"},
    ]


def messages_text(text: str, *, model: str = "claude-test") -> Answer:
    """A Messages stream of one text block, ``end_turn``."""
    return Answer(
        events=[
            _message_start(model),
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
            {"type": "content_block_stop", "index": 0},
            *_message_end("end_turn"),
        ]
    )


def messages_bash_call(command: str, *, model: str = "claude-test") -> Answer:
    """A Messages stream of one ``tool_use`` of Claude Code's ``Bash`` tool, ``tool_use``."""
    block = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}
    arguments = json.dumps({"command": command, "description": "Run the test command"})
    return Answer(
        events=[
            _message_start(model),
            {"type": "content_block_start", "index": 0, "content_block": block},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": arguments},
            },
            {"type": "content_block_stop", "index": 0},
            *_message_end("tool_use"),
        ]
    )


def messages_error_after_text(text: str, message: str, *, model: str = "claude-test") -> Answer:
    """A Messages stream that commits some text and then ends with ``event: error``."""
    return Answer(
        events=[
            _message_start(model),
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
            {"type": "error", "error": {"type": "api_error", "message": message}},
        ]
    )


def sanitize(value: Any, replacements: dict[str, str]) -> Any:
    """``value`` with every occurrence of each key (a path of this machine, an id) replaced."""
    text = json.dumps(value)
    for old, new in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(json.dumps(old)[1:-1], new)
    return json.loads(text)
