"""``coderclaw connect codex|claude``: the rendered settings, the merge into existing files, and
that the real CLIs run on what was written, with no secret in any file or output."""

from __future__ import annotations

import json
import stat
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.connect import (
    CLAUDE_KEY_HELPER,
    NO_TOKEN_PLACEHOLDER,
    Target,
    claude_settings,
    claude_settings_path,
    client_host,
    codex_config_path,
    codex_provider,
    merge_claude,
    merge_codex,
    write_with_backup,
)
from gateway.errors import ConfigError
from tests.cli_helpers import GOOD_TOKEN, child_env, run_cli
from tests.clients import (
    claude_print,
    codex_exec,
    messages_text,
    recording_server,
    responses_message,
    responses_stream,
)

LOCAL = Target("127.0.0.1", 18789, token_required=False)
GUARDED = Target("127.0.0.1", 18789, token_required=True)
GATEWAY_TOKEN = "gw-Secret-Token-0123456789"
NOW = datetime(2026, 12, 1, 19, 45, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("bind", "client"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("", "127.0.0.1"),
        ("::", "[::1]"),
        ("::1", "[::1]"),
        ("192.0.2.7", "192.0.2.7"),
        ("gateway.local", "gateway.local"),
    ],
)
def test_client_host_reaches_a_wildcard_bind_on_loopback(bind: str, client: str) -> None:
    """A wildcard bind is reached on loopback; an IPv6 literal is bracketed for a URL."""
    assert client_host(bind) == client


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            LOCAL,
            {
                "name": "CoderClaw gateway",
                "base_url": "http://127.0.0.1:18789/v1",
                "wire_api": "responses",
            },
        ),
        (
            Target("0.0.0.0", 9000, token_required=True),
            {
                "name": "CoderClaw gateway",
                "base_url": "http://127.0.0.1:9000/v1",
                "wire_api": "responses",
                "env_key": "CODERCLAW_GATEWAY_TOKEN",
            },
        ),
    ],
)
def test_codex_provider_names_the_token_variable_only_when_a_token_is_set(
    target: Target, expected: dict[str, str]
) -> None:
    """Without a gateway token no ``env_key`` (Codex then sends no Authorization)."""
    provider = codex_provider(target)
    instructions = provider.pop("env_key_instructions", None)
    assert provider == expected
    assert (instructions is not None) == target.token_required


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            LOCAL,
            {
                "env": {
                    "ANTHROPIC_BASE_URL": "http://127.0.0.1:18789",
                    "ANTHROPIC_AUTH_TOKEN": NO_TOKEN_PLACEHOLDER,
                }
            },
        ),
        (
            Target("127.0.0.1", 4000, token_required=True),
            {
                "env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:4000"},
                "apiKeyHelper": CLAUDE_KEY_HELPER,
            },
        ),
    ],
)
def test_claude_settings_read_the_token_at_run_time_or_use_a_placeholder(
    target: Target, expected: dict[str, Any]
) -> None:
    """With a token: an ``apiKeyHelper`` that prints ``$CODERCLAW_GATEWAY_TOKEN``; without:
    a placeholder key (Claude Code will not start with none). The models are left alone."""
    assert claude_settings(target) == expected


USER_CODEX = """\
# my Codex setup
model = "o3"  # the old favourite
approval_policy = "on-request"

[model_providers.my-proxy]
name = "My proxy"
base_url = "http://localhost:11434/v1"

[model_providers.coderclaw]
name = "stale"
base_url = "http://127.0.0.1:1/v1"
env_key = "OLD"
stream_idle_timeout_ms = 300000

# trusted folders
[projects."/src/app"]
trust_level = "trusted"
"""


@pytest.mark.parametrize("existing", [None, "", "# only a comment\n", USER_CODEX])
def test_merge_codex_selects_the_gateway_and_keeps_everything_else(existing: str | None) -> None:
    """``model`` / ``model_provider`` / ``[model_providers.coderclaw]`` are set; the user's other
    keys, providers, tables and comments stay; the result is valid TOML."""
    merged = merge_codex(existing, GUARDED)
    data = tomllib.loads(merged)
    assert data["model"] == "coderclaw"
    assert data["model_provider"] == "coderclaw"
    assert data["model_providers"]["coderclaw"]["base_url"] == "http://127.0.0.1:18789/v1"
    assert data["model_providers"]["coderclaw"]["env_key"] == "CODERCLAW_GATEWAY_TOKEN"
    assert data["model_providers"]["coderclaw"]["name"] == "CoderClaw gateway"
    if existing == USER_CODEX:
        assert data["approval_policy"] == "on-request"
        assert data["model_providers"]["my-proxy"]["base_url"] == "http://localhost:11434/v1"
        assert data["projects"] == {"/src/app": {"trust_level": "trusted"}}
        assert data["model_providers"]["coderclaw"]["stream_idle_timeout_ms"] == 300000
        for comment in ("# my Codex setup", "# the old favourite", "# trusted folders"):
            assert comment in merged
    assert merge_codex(merged, GUARDED) == merged


def test_merge_codex_without_a_token_drops_a_stale_env_key() -> None:
    """Re-pointing at a gateway with no token removes the old ``env_key`` (Codex would fail on
    the missing variable)."""
    data = tomllib.loads(merge_codex(USER_CODEX, LOCAL))
    assert "env_key" not in data["model_providers"]["coderclaw"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("model = [", "not valid TOML"),
        ('model_providers = "x"\n', "model_providers is not a table"),
    ],
)
def test_merge_codex_refuses_a_file_it_cannot_edit(text: str, reason: str) -> None:
    """A broken file is reported with its name and what to do; nothing is rendered."""
    with pytest.raises(ConfigError) as caught:
        merge_codex(text, LOCAL, file="/x/config.toml")
    assert "/x/config.toml" in str(caught.value)
    assert reason in str(caught.value)
    assert caught.value.hint


USER_CLAUDE = {
    "permissions": {"allow": ["Bash(git status)"]},
    "env": {"EDITOR": "vim", "ANTHROPIC_API_KEY": "sk-ant-user-key", "ANTHROPIC_BASE_URL": "x"},
    "model": "opus",
}


@pytest.mark.parametrize(
    ("existing", "target", "expected"),
    [
        (
            None,
            GUARDED,
            {
                "env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:18789"},
                "apiKeyHelper": CLAUDE_KEY_HELPER,
            },
        ),
        (
            USER_CLAUDE,
            GUARDED,
            {
                "permissions": {"allow": ["Bash(git status)"]},
                "env": {"EDITOR": "vim", "ANTHROPIC_BASE_URL": "http://127.0.0.1:18789"},
                "model": "opus",
                "apiKeyHelper": CLAUDE_KEY_HELPER,
            },
        ),
        (
            {"apiKeyHelper": CLAUDE_KEY_HELPER, "env": {"ANTHROPIC_BASE_URL": "x"}},
            LOCAL,
            {
                "env": {
                    "ANTHROPIC_BASE_URL": "http://127.0.0.1:18789",
                    "ANTHROPIC_AUTH_TOKEN": NO_TOKEN_PLACEHOLDER,
                }
            },
        ),
        (
            {"apiKeyHelper": "my-own-helper"},
            LOCAL,
            {
                "apiKeyHelper": "my-own-helper",
                "env": {
                    "ANTHROPIC_BASE_URL": "http://127.0.0.1:18789",
                    "ANTHROPIC_AUTH_TOKEN": NO_TOKEN_PLACEHOLDER,
                },
            },
        ),
    ],
)
def test_merge_claude_points_at_the_gateway_and_keeps_other_settings(
    existing: dict[str, Any] | None, target: Target, expected: dict[str, Any]
) -> None:
    """Other keys stay; a key in ``env`` that Claude Code would send beside the helper's is
    dropped; our helper goes when the gateway has no token, a user's own helper stays."""
    text = None if existing is None else json.dumps(existing)
    merged = merge_claude(text, target)
    assert json.loads(merged) == expected
    assert merge_claude(merged, target) == merged


@pytest.mark.parametrize(
    ("text", "reason"),
    [("{", "not valid JSON"), ("[]", "expected a JSON object"), ('{"env": 1}', "env is an object")],
)
def test_merge_claude_refuses_a_file_it_cannot_edit(text: str, reason: str) -> None:
    """A broken settings file is reported with its name; nothing is rendered."""
    with pytest.raises(ConfigError, match=reason) as caught:
        merge_claude(text, LOCAL, file="/x/settings.json")
    assert "/x/settings.json" in str(caught.value)


@pytest.mark.parametrize(
    ("env", "codex", "claude"),
    [
        ({}, "/h/.codex/config.toml", "/h/.claude/settings.json"),
        (
            {"CODEX_HOME": "/c", "CLAUDE_CONFIG_DIR": "/d"},
            "/c/config.toml",
            "/d/settings.json",
        ),
        (
            {"CODEX_HOME": "", "CLAUDE_CONFIG_DIR": ""},
            "/h/.codex/config.toml",
            "/h/.claude/settings.json",
        ),
    ],
)
def test_client_files_honour_codex_home_and_claude_config_dir(
    env: dict[str, str], codex: str, claude: str
) -> None:
    assert codex_config_path(env, Path("/h")) == Path(codex)
    assert claude_settings_path(env, Path("/h")) == Path(claude)


def test_write_with_backup_keeps_the_old_file_and_its_mode(tmp_path: Path) -> None:
    """The previous text goes to ``<name>.bak-<UTC stamp>``; the new file keeps the old mode;
    a second write in the same second gets its own backup name."""
    path = tmp_path / "config.toml"
    path.write_text("old\n")
    path.chmod(0o640)
    first = write_with_backup(path, "new\n", now=NOW)
    assert first.changed
    assert first.backup == tmp_path / "config.toml.bak-20261201T194512Z"
    assert first.backup.read_text() == "old\n"
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    second = write_with_backup(path, "newer\n", now=NOW)
    assert second.backup == tmp_path / "config.toml.bak-20261201T194512Z.1"
    assert second.backup.read_text() == "new\n"


def test_write_with_backup_makes_a_new_file_0600_and_skips_an_unchanged_one(
    tmp_path: Path,
) -> None:
    """A new file (and its directory) is private and has no backup; writing the same text
    again touches nothing."""
    path = tmp_path / "codex" / "config.toml"
    made = write_with_backup(path, "a = 1\n", now=NOW)
    assert (made.changed, made.backup) == (True, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = write_with_backup(path, "a = 1\n", now=NOW)
    assert (again.changed, again.backup) == (False, None)
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]


def test_write_with_backup_writes_through_a_symlink(tmp_path: Path) -> None:
    """A dotfiles-managed (symlinked) settings file stays a link; its target is updated."""
    real = tmp_path / "dotfiles" / "settings.json"
    real.parent.mkdir()
    real.write_text("{}\n")
    link = tmp_path / "settings.json"
    link.symlink_to(real)
    write_with_backup(link, '{"a": 1}\n', now=NOW)
    assert link.is_symlink()
    assert real.read_text() == '{"a": 1}\n'


# ------------------------------------------------------------------- the command, end to end
def _secrets_env(home: Path, **extra: str) -> dict[str, str]:
    """Both secrets set (the HF token, the gateway token), client dirs under ``home``."""
    return child_env(
        home,
        HF_TOKEN=GOOD_TOKEN,
        CODERCLAW_GATEWAY_TOKEN=GATEWAY_TOKEN,
        CODEX_HOME=str(home / ".codex"),
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        **extra,
    )


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert GOOD_TOKEN not in text
        assert GATEWAY_TOKEN not in text


def _tree_text(root: Path) -> str:
    return "".join(p.read_text() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("client", ["codex", "claude"])
async def test_connect_prints_and_writes_no_secret(client: str, isolated_home: Path) -> None:
    """With the HF token and the gateway token both set (env and config), neither appears in
    the printed settings, the messages, the written file or its backup."""
    state = isolated_home / ".coderclaw"
    state.mkdir(mode=0o700)
    config = {"gateway": {"port": 18790, "auth": {"token": "${CODERCLAW_GATEWAY_TOKEN}"}}}
    (state / "coderclaw.json").write_text(json.dumps(config))
    (state / "coderclaw.json").chmod(0o600)
    env = _secrets_env(isolated_home)
    name = {"codex": ".codex/config.toml", "claude": ".claude/settings.json"}[client]
    target = isolated_home / name
    target.parent.mkdir()
    target.write_text("# mine\n" if client == "codex" else '{"model": "opus"}\n')

    printed = await run_cli("connect", client, env=env)
    written = await run_cli("connect", client, "--write", env=env)

    assert printed.code == 0, printed.err
    assert written.code == 0, written.err
    assert "18790" in printed.out
    _assert_no_secret(printed.text, written.text, _tree_text(isolated_home / name.split("/")[0]))
    backups = list(target.parent.glob(f"{target.name}.bak-*"))
    assert len(backups) == 1
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(backups[0].stat().st_mode)


async def test_connect_codex_write_reports_a_broken_file_and_leaves_it(
    isolated_home: Path,
) -> None:
    """A ``config.toml`` that is not TOML: exit 78 naming the file; the file is untouched."""
    target = isolated_home / ".codex" / "config.toml"
    target.parent.mkdir()
    target.write_text("model = [\n")
    done = await run_cli("connect", "codex", "--write", env=_secrets_env(isolated_home))
    assert done.code == 78
    assert str(target) in done.err
    assert target.read_text() == "model = [\n"
    assert list(target.parent.iterdir()) == [target]


async def test_real_codex_runs_on_the_written_config_with_the_token_from_the_env(
    isolated_home: Path, tmp_path: Path
) -> None:
    """``connect codex --write`` into an existing config, then ``codex exec`` with only that file
    and ``$CODERCLAW_GATEWAY_TOKEN``: it reaches the gateway's port with the token as Bearer."""
    work = tmp_path / "work"
    work.mkdir()
    async with recording_server() as server:
        port = server.url.rsplit(":", 1)[1]
        env = _secrets_env(isolated_home, CODERCLAW_GATEWAY_PORT=port)
        (isolated_home / ".codex").mkdir()
        (isolated_home / ".codex" / "config.toml").write_text(USER_CODEX)
        wrote = await run_cli("connect", "codex", "--write", env=env)
        assert wrote.code == 0, wrote.err
        server.script("/v1/responses", responses_stream(responses_message("via the gateway")))
        done = await codex_exec(
            "hi",
            base_url=None,
            env_key_name=None,
            cwd=work,
            home=isolated_home,
            env={"CODERCLAW_GATEWAY_TOKEN": GATEWAY_TOKEN},
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "via the gateway"
    (seen,) = server.seen
    assert (seen.method, seen.path) == ("POST", "/v1/responses")
    assert seen.headers["Authorization"] == f"Bearer {GATEWAY_TOKEN}"
    assert seen.json()["model"] == "coderclaw"


async def test_real_claude_code_runs_on_the_written_settings_with_the_token_from_the_env(
    isolated_home: Path, tmp_path: Path
) -> None:
    """``connect claude --write``, then ``claude -p`` with only that file and
    ``$CODERCLAW_GATEWAY_TOKEN``: the helper hands it the token (as ``x-api-key`` and Bearer)."""
    work = tmp_path / "work"
    work.mkdir()
    async with recording_server() as server:
        port = server.url.rsplit(":", 1)[1]
        env = _secrets_env(isolated_home, CODERCLAW_GATEWAY_PORT=port)
        wrote = await run_cli("connect", "claude", "--write", env=env)
        assert wrote.code == 0, wrote.err
        server.script("/v1/messages", messages_text("via the gateway"))
        done = await claude_print(
            "hi",
            base_url=None,
            auth_token=None,
            cwd=work,
            home=isolated_home,
            env={"CODERCLAW_GATEWAY_TOKEN": GATEWAY_TOKEN},
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "via the gateway"
    (seen,) = server.posts("/v1/messages")
    assert seen.headers["x-api-key"] == GATEWAY_TOKEN
    assert seen.headers["Authorization"] == f"Bearer {GATEWAY_TOKEN}"
    assert seen.json()["model"].startswith("claude-")


async def test_real_codex_says_what_to_export_when_the_token_variable_is_missing(
    isolated_home: Path, tmp_path: Path
) -> None:
    """Run without ``$CODERCLAW_GATEWAY_TOKEN``, Codex stops before any request (exit 1) and
    prints the written ``env_key_instructions``."""
    work = tmp_path / "work"
    work.mkdir()
    async with recording_server() as server:
        port = server.url.rsplit(":", 1)[1]
        env = _secrets_env(isolated_home, CODERCLAW_GATEWAY_PORT=port)
        wrote = await run_cli("connect", "codex", "--write", env=env)
        assert wrote.code == 0, wrote.err
        done = await codex_exec(
            "hi", base_url=None, env_key_name=None, cwd=work, home=isolated_home
        )
    assert done.returncode == 1
    assert "Missing environment variable: `CODERCLAW_GATEWAY_TOKEN`" in done.stderr
    assert "export CODERCLAW_GATEWAY_TOKEN with the gateway token" in done.stderr
    assert server.seen == []
