"""Onboarding: the pure parts (pasted tokens, dropdown choices, the config edit, the summary) and
the non-interactive command run as a real child process against the fake router and Hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import json5
import pytest

from gateway.catalog import Catalog, CatalogEntry, builtin_catalog
from gateway.hub import TokenCheck, TokenStatus
from gateway.onboard import (
    OnboardResult,
    alias_for,
    apply_choice,
    clean_pasted_token,
    model_choices,
    summary_lines,
    token_problem,
)
from gateway.refs import parse_ref
from gateway.store import plan_config_update
from tests.cli_helpers import (
    BAD_TOKEN,
    CODERCLAW,
    GOOD_TOKEN,
    ONBOARD_WITH_KEY,
    OTHER_TOKEN,
    assert_secret_absent,
    child_env,
    mode,
    read_json,
    router_config,
    run_cli,
    run_shell,
)
from tests.fake_router import FakeRouter

# ------------------------------------------------------------------------------ pure

T = "hf_AbCdEf0123456789"


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        (T, T),
        (f"  {T}  \n", T),
        (f"{T}\r\n", T),
        (f'"{T}"', T),
        (f"'{T}'", T),
        (f"export HF_TOKEN={T}", T),
        (f'export HF_TOKEN="{T}"', T),
        (f"HF_TOKEN={T}", T),
        (f"HF_TOKEN='{T}';", T),
        (f'HUGGINGFACE_HUB_TOKEN = "{T}"  ', T),
        (f"set HF_TOKEN={T}", T),
        (f'$env:HF_TOKEN="{T}"', T),
        (f"Bearer {T}", T),
        (f'"{T}', T),
        ("", None),
        ("   \n", None),
        ('""', None),
        ("export HF_TOKEN=", None),
        ("HF_TOKEN=''", None),
        (None, None),
    ],
)
def test_clean_pasted_token(pasted: str | None, expected: str | None) -> None:
    """Shell assignments, quotes, 'Bearer', white space and line breaks are peeled off."""
    assert clean_pasted_token(pasted) == expected


def test_token_problem_flags_characters_a_header_cannot_carry() -> None:
    """A token with a space or a non-ASCII character is refused with the reason."""
    assert token_problem(T) is None
    assert token_problem("hf_abc def") is not None
    assert token_problem("hf_abc…def") is not None


def _catalog(*ids: str) -> Catalog:
    return Catalog(tuple(CatalogEntry(i, name=f"Name {i.split('/')[1]}") for i in ids))


def test_every_model_is_offered_plain_cheapest_and_fastest_in_order() -> None:
    """Each catalog model gives three choices: the model, :cheapest, :fastest."""
    choices = model_choices(_catalog("a/one", "b/two"))
    assert [c.value for c in choices] == [
        "huggingface/a/one",
        "huggingface/a/one:cheapest",
        "huggingface/a/one:fastest",
        "huggingface/b/two",
        "huggingface/b/two:cheapest",
        "huggingface/b/two:fastest",
    ]
    assert choices[1].title == "huggingface/a/one:cheapest  (Name one, cheapest provider)"


def test_the_current_default_is_marked_or_added_first() -> None:
    """The current model is marked; one the catalog lacks (a provider pin) is put first."""
    marked = model_choices(_catalog("a/one"), parse_ref("a/one:fastest"))
    assert [c.title.endswith(", current)") for c in marked] == [False, False, True]
    pinned = model_choices(_catalog("a/one"), parse_ref("a/one:together"))
    assert pinned[0].value == "huggingface/a/one:together"
    assert "current" in pinned[0].title
    assert len(pinned) == 4


def test_builtin_choices_cover_the_provider_page_models() -> None:
    """The built-in list offers the ten page models, thirty choices."""
    values = [c.value for c in model_choices(builtin_catalog())]
    assert len(values) == 30
    assert "huggingface/deepseek-ai/DeepSeek-R1" in values
    assert "huggingface/moonshotai/Kimi-K2.5:cheapest" in values


@pytest.mark.parametrize(
    ("ref", "alias"),
    [
        ("Qwen/Qwen3-8B", "Qwen3 8B"),
        ("Qwen/Qwen3-8B:cheapest", "Qwen3 8B (cheapest)"),
        ("deepseek-ai/DeepSeek-R1:together", "DeepSeek R1 (together)"),
        ("zai-org/GLM-5.3-Flash", "GLM-5.3-Flash"),
    ],
)
def test_alias_for(ref: str, alias: str) -> None:
    """Aliases follow the page's style: the display name, then the suffix in parentheses."""
    assert alias_for(parse_ref(ref), builtin_catalog()) == alias


def _apply(data: dict[str, Any], ref: str, alias: str, port: int | None = None) -> list[str]:
    notes: list[str] = []
    apply_choice(data, parse_ref(ref), alias, port, notes)
    return notes


def test_apply_choice_on_an_empty_config() -> None:
    """No config yet: the primary and its alias entry are all that is written."""
    data: dict[str, Any] = {}
    assert _apply(data, "Qwen/Qwen3-8B:cheapest", "Qwen3 8B (cheapest)") == []
    assert data == {
        "agents": {
            "defaults": {
                "model": {"primary": "huggingface/Qwen/Qwen3-8B:cheapest"},
                "models": {"huggingface/Qwen/Qwen3-8B:cheapest": {"alias": "Qwen3 8B (cheapest)"}},
            }
        }
    }


def test_apply_choice_keeps_everything_else() -> None:
    """Fallbacks, other aliases, an existing alias for the chosen model and other sections stay."""
    data: dict[str, Any] = {
        "agents": {
            "defaults": {
                "model": {"primary": "huggingface/a/b", "fallbacks": ["huggingface/c/d"]},
                "models": {"Qwen/Qwen3-8B": {"alias": "mine"}, "huggingface/c/d": {"alias": "cd"}},
            }
        },
        "logging": {"level": "debug"},
        "models": {"providers": {"huggingface": {"apiKey": "${HF_TOKEN}", "hubUrl": "http://h"}}},
    }
    assert _apply(data, "huggingface/Qwen/Qwen3-8B", "Qwen3 8B", port=18800) == []
    assert data["agents"]["defaults"]["model"] == {
        "primary": "huggingface/Qwen/Qwen3-8B",
        "fallbacks": ["huggingface/c/d"],
    }
    assert data["agents"]["defaults"]["models"] == {
        "Qwen/Qwen3-8B": {"alias": "mine"},
        "huggingface/c/d": {"alias": "cd"},
    }
    assert data["gateway"] == {"port": 18800}
    assert data["logging"] == {"level": "debug"}
    assert data["models"]["providers"]["huggingface"]["apiKey"] == "${HF_TOKEN}"


def test_apply_choice_does_not_reuse_an_alias_taken_by_another_model() -> None:
    """An alias already naming another model is not given twice (the entry has none)."""
    data: dict[str, Any] = {
        "agents": {"defaults": {"models": {"huggingface/x/y": {"alias": "Qwen3 8B"}}}}
    }
    _apply(data, "Qwen/Qwen3-8B", "qwen3 8b")
    assert data["agents"]["defaults"]["models"]["huggingface/Qwen/Qwen3-8B"] == {}


def test_apply_choice_moves_a_literal_token_out_of_the_config() -> None:
    """A token written into apiKey is removed (it goes to .env), with a note saying so."""
    data: dict[str, Any] = {"models": {"providers": {"huggingface": {"apiKey": T}}}}
    notes = _apply(data, "a/b", "B")
    assert data["models"]["providers"]["huggingface"] == {}
    assert len(notes) == 1 and ".env" in notes[0]
    assert T not in notes[0]


def test_config_edit_when_there_is_no_config_file(tmp_path: Path) -> None:
    """Planning the edit of a missing file validates, and committing creates it (0600)."""
    path = tmp_path / "fresh" / "coderclaw.json"
    edit = plan_config_update(path, lambda d: _apply(d, "a/b", "B"))
    assert edit.before is None and edit.changed
    edit.commit()
    assert read_json(path)["agents"]["defaults"]["model"]["primary"] == "huggingface/a/b"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def _result(**overrides: Any) -> OnboardResult:
    values: dict[str, Any] = {
        "config_path": Path("/s/coderclaw.json"),
        "env_file": Path("/s/.env"),
        "token": "hf_A…6789",
        "check": TokenCheck(TokenStatus.OK, user="alice"),
        "primary": "huggingface/deepseek-ai/DeepSeek-R1",
        "alias": "DeepSeek R1",
        "fallbacks": (),
        "models_source": "router",
        "host": "127.0.0.1",
        "port": 18789,
    } | overrides
    return OnboardResult(**values)


def test_summary_names_the_model_the_files_and_the_next_step() -> None:
    """The summary lists the choice, where things were saved, and what to run next."""
    text = "\n".join(summary_lines(_result(warnings=("careful",))))
    assert "huggingface/deepseek-ai/DeepSeek-R1  (alias 'DeepSeek R1')" in text
    assert "hf_A…6789 saved as HF_TOKEN in /s/.env (mode 0600)" in text
    assert "http://127.0.0.1:18789/v1" in text
    assert "warning: careful" in text
    assert "coderclaw gateway install" in text
    assert text.rstrip().endswith("(or install it as a background service)")


def test_summary_after_installing_the_service_points_at_status() -> None:
    """With the service installed, the next step is checking it, not starting by hand."""
    result = _result(service="installed coderclaw-gateway.service")
    assert result.as_dict()["next"] == "coderclaw gateway status"
    assert "coderclaw gateway status" in summary_lines(result)[-1]


# ------------------------------------------------------------------ non-interactive

PAGE_COMMAND = """coderclaw onboard --non-interactive \\
  --mode local \\
  --auth-choice huggingface-api-key \\
  --huggingface-api-key "$HF_TOKEN"
"""
EXISTING = """// my hand-written config
{
  agents: {
    defaults: {
      model: {
        primary: "huggingface/Qwen/Qwen3-8B",
        fallbacks: [
          "huggingface/meta-llama/Llama-3.3-70B-Instruct",
          "huggingface/openai/gpt-oss-120b",
        ],
      },
      models: {
        "huggingface/Qwen/Qwen3-8B": { alias: "Qwen3 8B" },  // my alias
        "huggingface/openai/gpt-oss-120b": { alias: "GPT-OSS 120B" },
      },
    },
  },
  gateway: { port: 18801, timeouts: { idleSeconds: 45 }, retries: 2 },
  logging: { level: "debug", format: "json" },
  env: { vars: { SOME_KEY: "some value" } },
}
"""


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    async with FakeRouter(tokens={GOOD_TOKEN, OTHER_TOKEN}) as fake:
        yield fake


def _config(state_dir: Path, router: FakeRouter, body: str = "") -> Path:
    path = state_dir / "coderclaw.json"
    path.write_text(router_config(router.url, router.base_url, body), encoding="utf-8")
    return path


def _with_existing(state_dir: Path, router: FakeRouter) -> Path:
    text = EXISTING.replace(
        "  gateway:",
        f'  models: {{ providers: {{ huggingface: {{ baseUrl: "{router.base_url}", '
        f'hubUrl: "{router.url}" }} }} }},\n  gateway:',
    )
    path = state_dir / "coderclaw.json"
    path.write_text(text, encoding="utf-8")
    return path


async def test_the_provider_page_command_works_exactly_as_written(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """The page's multi-line command, run by a shell, sets DeepSeek-R1 and saves the token only
    in the 0600 .env; the token is never printed."""
    config = _config(state_dir, router)
    run = await run_shell(PAGE_COMMAND, env=child_env(isolated_home, HF_TOKEN=GOOD_TOKEN))
    assert run.code == 0, run.text
    data = read_json(config)
    assert data["agents"]["defaults"]["model"]["primary"] == "huggingface/deepseek-ai/DeepSeek-R1"
    assert data["agents"]["defaults"]["models"] == {
        "huggingface/deepseek-ai/DeepSeek-R1": {"alias": "DeepSeek R1"}
    }
    env_file = state_dir / ".env"
    assert env_file.read_text() == f"HF_TOKEN={GOOD_TOKEN}\n"
    assert mode(env_file) == 0o600 and mode(state_dir) == 0o700 and mode(config) == 0o600
    assert GOOD_TOKEN not in config.read_text()
    assert_secret_absent(GOOD_TOKEN, run.out, run.err)
    assert "hf_G…fXYZ" in run.out
    assert "coderclaw gateway" in run.out
    (whoami,) = [r for r in router.requests if r.path == "/api/whoami-v2"]
    assert whoami.token == GOOD_TOKEN


async def test_model_port_and_json_summary(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """--model picks another (canonical) ref, --gateway-port sets the port, --json is parseable."""
    config = _config(state_dir, router)
    run = await run_cli(
        "onboard",
        "--non-interactive",
        "--huggingface-api-key",
        GOOD_TOKEN,
        "--model",
        "Qwen/Qwen3-32B:cheapest",
        "--gateway-port",
        "18800",
        "--json",
        env=child_env(isolated_home),
    )
    assert run.code == 0, run.text
    summary = json.loads(run.out)
    assert summary["model"] == {
        "primary": "huggingface/Qwen/Qwen3-32B:cheapest",
        "alias": "Qwen3 32B (cheapest)",
        "fallbacks": [],
        "listSource": "not loaded",
    }
    assert summary["gateway"] == {"port": 18800, "url": "http://127.0.0.1:18800/v1"}
    assert summary["token"] == {"masked": "hf_G…fXYZ", "check": "ok", "user": "coderclaw-tester"}
    data = read_json(config)
    assert data["gateway"] == {"port": 18800}
    assert data["agents"]["defaults"]["model"]["primary"] == "huggingface/Qwen/Qwen3-32B:cheapest"
    assert_secret_absent(GOOD_TOKEN, run.out, run.err)


@pytest.mark.parametrize("flag", [[], ["--huggingface-api-key", ""]])
async def test_no_token_exits_2_naming_the_flag_and_variable(
    router: FakeRouter, state_dir: Path, isolated_home: Path, flag: list[str]
) -> None:
    """Without a token (no flag, or "$HF_TOKEN" empty) it exits 2, says what to set, writes
    nothing."""
    config = _config(state_dir, router)
    before = config.read_bytes()
    run = await run_cli("onboard", "--non-interactive", *flag, env=child_env(isolated_home))
    assert run.code == 2, run.text
    assert "--huggingface-api-key" in run.err and "HF_TOKEN" in run.err
    assert config.read_bytes() == before
    assert not (state_dir / ".env").exists()
    assert router.requests == []


async def test_rejected_token_writes_nothing(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """A token the Hub rejects: exit 2, masked in the message, config and .env byte-for-byte
    unchanged."""
    config = _with_existing(state_dir, router)
    env_file = state_dir / ".env"
    env_file.write_text(f"# mine\nHF_TOKEN={OTHER_TOKEN}\n")
    env_file.chmod(0o600)
    before = (config.read_bytes(), env_file.read_bytes())
    run = await run_cli(
        *ONBOARD_WITH_KEY,
        BAD_TOKEN,
        env=child_env(isolated_home),
    )
    assert run.code == 2, run.text
    assert "rejected" in run.err and "nothing was written" in run.err
    assert "hf_B…aaBB" in run.err
    assert (config.read_bytes(), env_file.read_bytes()) == before
    assert sorted(p.name for p in state_dir.iterdir()) == [".env", "coderclaw.json"]  # noqa: ASYNC240
    assert_secret_absent(BAD_TOKEN, run.out, run.err)
    assert_secret_absent(OTHER_TOKEN, run.out, run.err)


def _fresh_machine(
    router: FakeRouter, home: Path, tmp_path: Path, **extra: str
) -> tuple[Path, dict[str, str]]:
    """A state dir that does not exist yet and a config elsewhere: (state, the child's env)."""
    config = tmp_path / "elsewhere.json5"
    config.write_text(router_config(router.url, router.base_url))
    state = tmp_path / "fresh-state"
    env = child_env(
        home, CODERCLAW_STATE_DIR=str(state), CODERCLAW_CONFIG_PATH=str(config), **extra
    )
    return state, env


async def test_rejected_token_with_no_state_dir_creates_nothing(
    router: FakeRouter, isolated_home: Path, tmp_path: Path
) -> None:
    """A rejected token on a fresh machine leaves no state dir behind."""
    state, env = _fresh_machine(router, isolated_home, tmp_path)
    run = await run_cli("onboard", "--non-interactive", "--huggingface-api-key", BAD_TOKEN, env=env)
    assert run.code == 2
    assert not state.exists()


async def test_fresh_state_dir_is_created_0700(
    router: FakeRouter, isolated_home: Path, tmp_path: Path
) -> None:
    """With no state dir yet, onboarding creates it (0700) and the .env in it (0600)."""
    state, env = _fresh_machine(router, isolated_home, tmp_path, HF_TOKEN=GOOD_TOKEN)
    run = await run_cli("onboard", "--non-interactive", env=env)
    assert run.code == 0, run.text
    assert mode(state) == 0o700 and mode(state / ".env") == 0o600
    assert (state / ".env").read_text() == f"HF_TOKEN={GOOD_TOKEN}\n"


async def test_rerun_keeps_the_rest_of_an_existing_config(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """Re-running over a config with fallbacks, aliases, comments and other keys keeps every
    key and value; only the primary and its alias entry change (and a note says comments went)."""
    config = _with_existing(state_dir, router)
    before = json5.loads(config.read_text())
    run = await run_cli(
        "onboard", "--non-interactive", "--huggingface-api-key", GOOD_TOKEN,
        env=child_env(isolated_home),
    )  # fmt: skip
    assert run.code == 0, run.text
    after = read_json(config)
    expected = json.loads(json.dumps(before))
    expected["agents"]["defaults"]["model"]["primary"] = "huggingface/deepseek-ai/DeepSeek-R1"
    expected["agents"]["defaults"]["models"]["huggingface/deepseek-ai/DeepSeek-R1"] = {
        "alias": "DeepSeek R1"
    }
    assert after == expected
    assert "comments" in run.out
    assert "huggingface/meta-llama/Llama-3.3-70B-Instruct" in run.out  # fallbacks shown


async def test_existing_env_lines_are_kept_and_shadowing_names_dropped(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """The .env keeps its other lines; an older HUGGINGFACE_HUB_TOKEN (which would win) goes."""
    _config(state_dir, router)
    env_file = state_dir / ".env"
    env_file.write_text(f"# comment\nOTHER=1\nHUGGINGFACE_HUB_TOKEN={OTHER_TOKEN}\n")
    run = await run_cli(
        "onboard", "--non-interactive", "--huggingface-api-key", GOOD_TOKEN,
        env=child_env(isolated_home),
    )  # fmt: skip
    assert run.code == 0, run.text
    assert env_file.read_text() == f"# comment\nOTHER=1\nHF_TOKEN={GOOD_TOKEN}\n"
    assert mode(env_file) == 0o600


async def test_a_higher_precedence_token_in_the_environment_is_warned_about(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """If HUGGINGFACE_HUB_TOKEN in the environment would shadow the saved token, it says so
    (masked)."""
    _config(state_dir, router)
    env = child_env(isolated_home, HUGGINGFACE_HUB_TOKEN=OTHER_TOKEN)
    run = await run_cli(
        "onboard", "--non-interactive", "--huggingface-api-key", GOOD_TOKEN, env=env
    )
    assert run.code == 0, run.text
    assert "HUGGINGFACE_HUB_TOKEN also holds a token (hf_O…uQRS)" in run.out
    assert_secret_absent(OTHER_TOKEN, run.out, run.err)
    assert_secret_absent(GOOD_TOKEN, run.out, run.err)


async def test_token_without_inference_permission_is_saved_with_a_fix(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """A fine-grained token lacking the permission is saved, with a warning saying how to fix."""
    weak = "hf_WeakToken000000000000000000"
    router.no_inference_tokens.add(weak)
    config = _config(state_dir, router)
    run = await run_cli(
        "onboard", "--non-interactive", "--huggingface-api-key", weak, "--json",
        env=child_env(isolated_home),
    )  # fmt: skip
    assert run.code == 0, run.text
    assert 'create a fine-grained token with "Make calls to Inference Providers"' in run.err
    assert json.loads(run.out)["token"]["check"] == "no-inference-permission"
    assert read_json(config)["agents"]["defaults"]["model"]["primary"].endswith("DeepSeek-R1")
    assert_secret_absent(weak, run.out, run.err)


async def test_unreachable_hub_saves_with_a_warning(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """When the Hub cannot be reached, the token is saved unchecked and a warning says so."""
    closed = FakeRouter()
    await closed.start()
    dead_url = closed.url
    await closed.close()
    path = state_dir / "coderclaw.json"
    path.write_text(router_config(dead_url, router.base_url))
    run = await run_cli(
        "onboard", "--non-interactive", "--huggingface-api-key", GOOD_TOKEN,
        env=child_env(isolated_home),
    )  # fmt: skip
    assert run.code == 0, run.text
    assert "could not be checked" in run.out and "saved unchecked" in run.out
    assert (state_dir / ".env").read_text() == f"HF_TOKEN={GOOD_TOKEN}\n"


async def test_bad_model_ref_is_refused_before_anything_is_written(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """--model with an invalid ref: exit 78 with the reason; nothing written, no network."""
    config = _config(state_dir, router)
    before = config.read_bytes()
    run = await run_cli(
        "onboard", "--non-interactive", "--huggingface-api-key", GOOD_TOKEN,
        "--model", "not a ref", env=child_env(isolated_home),
    )  # fmt: skip
    assert run.code == 78, run.text
    assert "invalid model reference" in run.err or "white space" in run.err
    assert config.read_bytes() == before
    assert not (state_dir / ".env").exists()


async def test_literal_api_key_moves_from_the_config_to_env(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """A token written into the config's apiKey ends up only in .env."""
    path = state_dir / "coderclaw.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "providers": {
                        "huggingface": {
                            "baseUrl": router.base_url,
                            "hubUrl": router.url,
                            "apiKey": GOOD_TOKEN,
                        }
                    }
                }
            }
        )
    )
    run = await run_cli("onboard", "--non-interactive", env=child_env(isolated_home))
    assert run.code == 0, run.text
    assert GOOD_TOKEN not in path.read_text()
    assert (state_dir / ".env").read_text() == f"HF_TOKEN={GOOD_TOKEN}\n"
    assert "apiKey" in run.out
    assert_secret_absent(GOOD_TOKEN, run.out, run.err)


async def test_interactive_mode_without_a_terminal_says_how_to_script_it(
    state_dir: Path, isolated_home: Path
) -> None:
    """Interactive onboarding with no terminal is a usage error pointing at --non-interactive."""
    run = await run_cli(
        "onboard", "--auth-choice", "huggingface-api-key", env=child_env(isolated_home)
    )
    assert run.code == 2
    assert "--non-interactive" in run.err
    assert not (state_dir / "coderclaw.json").exists()


# --------------------------------------------------------------- the token off the argv


def _family_cmdlines(pid: int) -> list[bytes]:
    """The command lines of ``pid`` and of every process below it, as ``ps`` shows them to any
    local user."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    lines: list[bytes] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            lines.append(Path(f"/proc/{current}/cmdline").read_bytes())
        todo += children.get(current, [])
    return lines


async def _onboard_watching_argv(
    router: FakeRouter, args: list[str], env: dict[str, str], stdin: bytes | None
) -> tuple[int, list[bytes], str]:
    """Run ``coderclaw ARGS`` (stdin piped when given) with the Hub's whoami held for a second,
    read the command lines of the process and its children while it waits on the Hub;
    returns the exit status, those command lines and the output."""
    router.whoami_delay = 1.0
    proc = await asyncio.create_subprocess_exec(
        CODERCLAW,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            await proc.stdin.drain()
            proc.stdin.close()
        async with asyncio.timeout(20):
            while not any(r.path == "/api/whoami-v2" for r in router.requests):
                assert proc.returncode is None, "onboarding ended before asking the Hub"
                await asyncio.sleep(0.02)
        assert proc.returncode is None, "the command must still be running on the Hub"
        cmdlines = _family_cmdlines(proc.pid)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, cmdlines, out.decode()


ONBOARD_BASE = ["onboard", "--non-interactive", "--mode", "local", "--auth-choice",
                "huggingface-api-key"]  # fmt: skip


@pytest.mark.parametrize(
    ("how", "extra", "stdin"),
    [
        ("env", {"HF_TOKEN": GOOD_TOKEN}, None),
        ("stdin", {}, f"{GOOD_TOKEN}\n".encode()),
        ("stdin-pasted-assignment", {}, f'export HF_TOKEN="{GOOD_TOKEN}"\n'.encode()),
    ],
    ids=["env", "stdin", "stdin-pasted-assignment"],
)
async def test_onboarding_from_env_or_stdin_saves_the_token_and_keeps_it_off_argv(
    router: FakeRouter,
    state_dir: Path,
    isolated_home: Path,
    how: str,
    extra: dict[str, str],
    stdin: bytes | None,
) -> None:
    """`HF_TOKEN=… coderclaw onboard --non-interactive …` (no flag) and
    `--huggingface-api-key -` (the token on standard input) save the token in the 0600 .env;
    while the command waits on the Hub, no command line of it or its children holds the token,
    and the token is never printed."""
    _config(state_dir, router)
    args = [*ONBOARD_BASE, *(["--huggingface-api-key", "-"] if stdin is not None else [])]
    code, cmdlines, out = await _onboard_watching_argv(
        router, args, child_env(isolated_home, **extra), stdin
    )
    assert code == 0, out
    assert cmdlines, "the running command's /proc/<pid>/cmdline was read"
    assert any(b"onboard" in line for line in cmdlines)
    for line in cmdlines:
        assert GOOD_TOKEN.encode() not in line, f"{how}: the token is on a command line"
    env_file = state_dir / ".env"
    assert env_file.read_text() == f"HF_TOKEN={GOOD_TOKEN}\n"
    assert mode(env_file) == 0o600
    (whoami,) = [r for r in router.requests if r.path == "/api/whoami-v2"]
    assert whoami.token == GOOD_TOKEN
    assert_secret_absent(GOOD_TOKEN, out)


async def test_the_argv_form_shows_the_token_in_ps_which_is_why_it_comes_last(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """The provider page's argv form still works; its token is on the command line for the
    whole Hub round trip (what every local user's `ps` shows) — the reason the README and
    --help show the environment and stdin forms first."""
    _config(state_dir, router)
    args = [*ONBOARD_BASE, "--huggingface-api-key", GOOD_TOKEN]
    code, cmdlines, out = await _onboard_watching_argv(
        router, args, child_env(isolated_home), None
    )
    assert code == 0, out
    assert any(GOOD_TOKEN.encode() in line for line in cmdlines)
    assert (state_dir / ".env").read_text() == f"HF_TOKEN={GOOD_TOKEN}\n"


async def test_an_empty_stdin_is_a_clear_error_that_writes_nothing(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """`--huggingface-api-key -` with nothing on standard input: exit 2, says what to do, no
    .env, no request to the Hub."""
    config = _config(state_dir, router)
    before = config.read_bytes()
    run = await run_cli(*ONBOARD_BASE, "--huggingface-api-key", "-", env=child_env(isolated_home))
    assert run.code == 2, run.text
    assert "no token on standard input" in run.err and "HF_TOKEN" in run.err
    assert config.read_bytes() == before
    assert not (state_dir / ".env").exists()
    assert router.requests == []


async def test_help_shows_the_env_and_stdin_forms_before_the_argv_form() -> None:
    """`coderclaw onboard --help` lists HF_TOKEN=… (no flag), then `--huggingface-api-key -`,
    then the argv form."""
    run = await run_cli("onboard", "--help", env=child_env(Path("/nonexistent")))
    assert run.code == 0, run.text
    text = run.out
    env_form = text.index("HF_TOKEN=… coderclaw onboard --non-interactive")
    stdin_form = text.index("--huggingface-api-key - <")
    argv_form = text.index('--huggingface-api-key "$HF_TOKEN"')
    assert env_form < stdin_form < argv_form


def test_the_readme_shows_the_env_and_stdin_forms_before_the_argv_form() -> None:
    """The README's quick start: the environment form, then stdin, then the page's argv form."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    env_form = readme.index("HF_TOKEN=… coderclaw onboard --non-interactive")
    stdin_form = readme.index("--huggingface-api-key - <")
    argv_form = readme.index('--huggingface-api-key "$HF_TOKEN"')
    assert env_form < stdin_form < argv_form
