"""Record what the pinned Codex CLI and Claude Code send, into ``tests/data/``.

``python -m tests.record_clients`` runs each CLI once against a ``RecordingServer`` (a shell
command, then a final message) and saves the first request body of each, with this machine's
paths, ids and kernel version replaced by placeholders. Rerun it after bumping a CLI's version
in ``tests/clients/package.json``; ``test_clients_smoke`` checks the saved shape still holds.
"""

from __future__ import annotations

import asyncio
import json
import platform
import re
import tempfile
from pathlib import Path
from typing import Any

from tests.clients import (
    Seen,
    claude_print,
    codex_exec,
    messages_bash_call,
    messages_text,
    recording_server,
    responses_message,
    responses_shell_call,
    responses_stream,
    sanitize,
)

DATA = Path(__file__).with_name("data")
CODEX_REQUEST = DATA / "codex_responses_request.json"
CLAUDE_REQUEST = DATA / "claude_code_messages_request.json"
PROMPT = "Write hi into out.txt, then say DONE."

# Random per run: UUIDs (Codex's session/turn ids), long hex (Claude Code's device id).
_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{64}")


def scrub(body: Any, *, home: Path, cwd: Path) -> Any:
    """``body`` with the run's directories, ids and this machine's kernel release replaced."""
    replacements = {
        str(cwd): "<cwd>",
        str(home): "<home>",
        re.sub(r"[^A-Za-z0-9]", "-", str(cwd)): "<cwd-slug>",  # Claude Code's project dir
        platform.release(): "<os-release>",
    }
    cleaned = sanitize(body, replacements)
    return json.loads(_IDS.sub("<id>", json.dumps(cleaned)))


async def record_codex(root: Path) -> tuple[Seen, Any]:
    """Run ``codex exec`` once; the first ``/v1/responses`` request and its scrubbed body."""
    home, cwd = root / "codex-home", root / "codex-work"
    cwd.mkdir(parents=True)
    async with recording_server() as server:
        server.script(
            "/v1/responses",
            responses_stream(responses_shell_call("echo hi > out.txt")),
            responses_stream(responses_message("DONE")),
        )
        done = await codex_exec(
            PROMPT,
            base_url=f"{server.url}/v1",
            env_key_name="CODERCLAW_GATEWAY_TOKEN",
            cwd=cwd,
            home=home,
        )
        assert done.returncode == 0, done.stderr
        first = server.posts("/v1/responses")[0]
    return first, scrub(first.json(), home=home, cwd=cwd)


async def record_claude(root: Path) -> tuple[Seen, Any]:
    """Run ``claude -p`` once; the first ``/v1/messages`` request and its scrubbed body."""
    home, cwd = root / "claude-home", root / "claude-work"
    cwd.mkdir(parents=True)
    async with recording_server() as server:
        server.script(
            "/v1/messages", messages_bash_call("echo hi > out.txt"), messages_text("DONE")
        )
        done = await claude_print(PROMPT, base_url=server.url, cwd=cwd, home=home)
        assert done.returncode == 0, done.stdout
        first = server.posts("/v1/messages")[0]
    return first, scrub(first.json(), home=home, cwd=cwd)


async def record_all(root: Path) -> None:
    for path, record in ((CODEX_REQUEST, record_codex), (CLAUDE_REQUEST, record_claude)):
        _, body = await record(root)
        path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {path.relative_to(DATA.parent.parent)}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(record_all(Path(tmp).resolve()))
