"""Point Codex CLI and Claude Code at this gateway: their settings, merged into their files.

Pure functions render each client's settings for a ``Target`` (where the gateway listens, and
whether it wants a token) and merge them into the text of an existing file, keeping every other
key (and, for TOML, the comments). ``write_with_backup`` is the one I/O step.

The gateway token is never written into a client's file: Codex reads it from the environment
variable named by ``env_key``; Claude Code cannot expand ``${VAR}`` in its settings (it would send
the literal text), so it gets an ``apiKeyHelper`` command that prints the variable at run time.
The Hugging Face token is never read here at all.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError
from gateway.store import atomic_write

if TYPE_CHECKING:
    from tomlkit.items import Comment, Table, Whitespace

TOKEN_ENV = "CODERCLAW_GATEWAY_TOKEN"
PROVIDER_ID = "coderclaw"
CHAIN_MODEL = "coderclaw"
# Without a gateway token Claude Code still refuses to start with no key at all ("Not logged
# in"); this placeholder is no secret: a gateway without a token ignores it.
NO_TOKEN_PLACEHOLDER = "coderclaw-no-token"
CLAUDE_KEY_HELPER = (
    f"printenv {TOKEN_ENV} || "
    f"{{ echo 'coderclaw: export {TOKEN_ENV} (the gateway token) first' >&2; exit 1; }}"
)
# The provider keys this module sets; others in the table (timeouts, headers) are the user's.
_CODEX_OWNED = ("name", "base_url", "wire_api", "env_key", "env_key_instructions")
# Sent beside the helper's key (one as Bearer, one as x-api-key), so a stale one would win.
_CLAUDE_KEY_VARS = ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY")


@dataclass(frozen=True)
class Target:
    """Where the gateway listens and whether its ``/v1`` wants the gateway token."""

    host: str
    port: int
    token_required: bool

    @property
    def origin(self) -> str:
        """``http://host:port`` as a client on this machine reaches it."""
        return f"http://{client_host(self.host)}:{self.port}"


def client_host(bind_host: str) -> str:
    """The address a local client uses for a bind address (a wildcard means loopback)."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "[::1]"
    if ":" in bind_host and not bind_host.startswith("["):
        return f"[{bind_host}]"
    return bind_host


# --------------------------------------------------------------------------------- Codex
def codex_provider(target: Target) -> dict[str, str]:
    """The ``[model_providers.coderclaw]`` table: the Responses API at ``/v1``."""
    provider = {
        "name": "CoderClaw gateway",
        "base_url": f"{target.origin}/v1",
        "wire_api": "responses",
    }
    if target.token_required:
        provider["env_key"] = TOKEN_ENV
        provider["env_key_instructions"] = (
            f"export {TOKEN_ENV} with the gateway token (gateway.auth.token in the CoderClaw "
            "config, or CODERCLAW_GATEWAY_TOKEN in its .env)"
        )
    return provider


def merge_codex(existing: str | None, target: Target, *, file: str = "config.toml") -> str:
    """``existing`` TOML (or none) with the coderclaw provider selected; all else kept (in an
    existing coderclaw table too, but for the keys this module owns), comments included.

    Raises ``ConfigError`` when ``existing`` is not TOML or its ``model_providers`` is not a
    table.
    """
    text = existing or ""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"not valid TOML ({exc})", file=file, hint="fix the file, or move it away and rerun"
        ) from None
    # tomlkit (comment-keeping TOML) is loaded here, not at import: the gateway process
    # registers every command and would carry it for nothing.
    import tomlkit
    from tomlkit.items import Table

    doc = tomlkit.parse(text)
    doc["model"] = CHAIN_MODEL
    doc["model_provider"] = PROVIDER_ID
    providers = doc.get("model_providers")
    if providers is None:
        providers = tomlkit.table(is_super_table=True)
        doc["model_providers"] = providers
    elif not isinstance(providers, MutableMapping):
        raise ConfigError(
            "model_providers is not a table", file=file, hint="make it a [model_providers] table"
        )
    table = tomlkit.table()
    table.update(codex_provider(target))
    previous = providers.get(PROVIDER_ID)
    if isinstance(previous, Table):
        for key in previous:
            if key not in _CODEX_OWNED:
                table[key] = previous[key]
        for item in _trailing_trivia(previous):
            table.add(item)
    else:
        table.add(tomlkit.nl())
    providers[PROVIDER_ID] = table
    return tomlkit.dumps(doc)


def _trailing_trivia(table: Table) -> list[Comment | Whitespace]:
    """The comments and blank lines after a table's last key (they introduce what follows)."""
    from tomlkit.items import Comment, Whitespace

    trivia: list[Comment | Whitespace] = []
    for key, item in reversed(table.value.body):
        if key is not None or not isinstance(item, Comment | Whitespace):
            break
        trivia.insert(0, item)
    return trivia


# --------------------------------------------------------------------------- Claude Code
def claude_settings(target: Target) -> dict[str, Any]:
    """The Claude Code settings that send its Messages requests to the gateway.

    The models are left alone: the ``claude-*`` names Claude Code sends go through
    ``gateway.anthropic.modelMap`` (Claude Code warns on every run about a model name it does
    not know, such as ``coderclaw``).
    """
    if target.token_required:
        return {"env": {"ANTHROPIC_BASE_URL": target.origin}, "apiKeyHelper": CLAUDE_KEY_HELPER}
    return {
        "env": {"ANTHROPIC_BASE_URL": target.origin, "ANTHROPIC_AUTH_TOKEN": NO_TOKEN_PLACEHOLDER}
    }


def merge_claude(existing: str | None, target: Target, *, file: str = "settings.json") -> str:
    """``existing`` settings JSON (or none) pointed at the gateway; all other keys kept.

    With a token, any ``ANTHROPIC_AUTH_TOKEN`` / ``ANTHROPIC_API_KEY`` in ``env`` is dropped (it
    would be sent beside the helper's key); without one, a helper this module wrote is dropped.
    """
    data: Any = {}
    if existing and existing.strip():
        try:
            data = json.loads(existing)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"not valid JSON ({exc.msg}, line {exc.lineno})",
                file=file,
                hint="fix the file, or move it away and rerun",
            ) from None
    if not isinstance(data, dict) or not isinstance(data.get("env", {}), dict):
        raise ConfigError(
            "expected a JSON object whose env is an object", file=file, hint="fix the file"
        )
    wanted = claude_settings(target)
    env = {k: v for k, v in data.get("env", {}).items() if k not in _CLAUDE_KEY_VARS}
    env.update(wanted["env"])
    data["env"] = env
    if "apiKeyHelper" in wanted:
        data["apiKeyHelper"] = wanted["apiKeyHelper"]
    elif data.get("apiKeyHelper") == CLAUDE_KEY_HELPER:
        del data["apiKeyHelper"]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------- files
def codex_config_path(env: Mapping[str, str], home: Path) -> Path:
    """``$CODEX_HOME/config.toml``, default ``~/.codex/config.toml``."""
    root = env.get("CODEX_HOME")
    return (Path(root).expanduser() if root else home / ".codex") / "config.toml"


def claude_settings_path(env: Mapping[str, str], home: Path) -> Path:
    """``$CLAUDE_CONFIG_DIR/settings.json``, default ``~/.claude/settings.json``."""
    root = env.get("CLAUDE_CONFIG_DIR")
    return (Path(root).expanduser() if root else home / ".claude") / "settings.json"


@dataclass(frozen=True)
class Written:
    """What ``write_with_backup`` did: the file, its backup (if it existed), whether changed."""

    path: Path
    backup: Path | None
    changed: bool


def write_with_backup(path: Path, text: str, *, now: datetime) -> Written:
    """Replace ``path`` with ``text`` atomically, first copying it to ``<name>.bak-<stamp>``.

    Nothing is written when the text is unchanged. A new file is made 0600; an existing one
    keeps its mode. A symlinked file is written through the link.
    """
    target = path.resolve() if path.is_symlink() else path
    try:
        before = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = None
    if before == text:
        return Written(path, None, False)
    backup = None
    mode = 0o600
    if before is not None:
        mode = target.stat().st_mode & 0o777
        backup = _free_backup_name(target, now)
        shutil.copy2(target, backup)
    atomic_write(target, text, mode=mode)
    return Written(path, backup, True)


def _free_backup_name(path: Path, now: datetime) -> Path:
    stem = f"{path.name}.bak-{now.strftime('%Y%m%dT%H%M%SZ')}"
    candidate, n = path.with_name(stem), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{stem}.{n}"), n + 1
    return candidate
