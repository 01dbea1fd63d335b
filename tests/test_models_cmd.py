"""``coderclaw models set|fallbacks|aliases``: every edit keeps the other keys, and bad input
leaves the file byte-for-byte unchanged with the reason (exit 78 for an edit the config cannot
take, 1 for removing what is not there, 2 for a click usage error)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import json5
import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from tests.cli_helpers import EDIT_BASE, GOOD_TOKEN, assert_secret_absent, mode, read_json

Change = Callable[[dict[str, Any]], None]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def config(state_dir: Path) -> Path:
    path = state_dir / "coderclaw.json"
    path.write_text(EDIT_BASE, encoding="utf-8")
    return path


def _defaults(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = data["agents"]["defaults"]
    return result


def _set_primary(ref: str) -> Change:
    return lambda d: _defaults(d)["model"].__setitem__("primary", ref)


def _fallbacks(refs: list[str]) -> Change:
    return lambda d: _defaults(d)["model"].__setitem__("fallbacks", refs)


def _entries(change: Callable[[dict[str, Any]], None]) -> Change:
    return lambda d: change(_defaults(d)["models"])


GOOD: list[tuple[list[str], Change, str]] = [
    (
        ["set", "Qwen/Qwen3-32B:cheapest"],
        _set_primary("huggingface/Qwen/Qwen3-32B:cheapest"),
        "default model: huggingface/Qwen/Qwen3-32B:cheapest (was huggingface/deepseek-ai/",
    ),
    (
        ["set", "qwen3 8b"],
        _set_primary("huggingface/Qwen/Qwen3-8B"),
        "default model: huggingface/Qwen/Qwen3-8B",
    ),
    (
        ["set", "huggingface/huggingface/zai-org/GLM-4.7:together"],
        _set_primary("huggingface/zai-org/GLM-4.7:together"),
        "default model: huggingface/zai-org/GLM-4.7:together",
    ),
    (
        ["fallbacks", "add", "openai/gpt-oss-120b"],
        _fallbacks(["huggingface/Qwen/Qwen3-8B", "huggingface/openai/gpt-oss-120b"]),
        "added fallback: huggingface/openai/gpt-oss-120b",
    ),
    (
        ["fallbacks", "add", "GPT-OSS"],
        _fallbacks(["huggingface/Qwen/Qwen3-8B", "huggingface/openai/gpt-oss-120b"]),
        "added fallback: huggingface/openai/gpt-oss-120b",
    ),
    (
        ["fallbacks", "remove", "Qwen/Qwen3-8B"],
        _fallbacks([]),
        "removed fallback: huggingface/Qwen/Qwen3-8B",
    ),
    (
        ["fallbacks", "clear"],
        lambda d: _defaults(d)["model"].pop("fallbacks"),
        "removed 1 fallback(s)",
    ),
    (
        ["aliases", "add", "R1", "deepseek-ai/DeepSeek-R1"],
        _entries(lambda m: m.__setitem__("huggingface/deepseek-ai/DeepSeek-R1", {"alias": "R1"})),
        "alias 'R1' → huggingface/deepseek-ai/DeepSeek-R1",
    ),
    (
        ["aliases", "add", " Qwen 8 ", "huggingface/Qwen/Qwen3-8B"],
        _entries(lambda m: m.__setitem__("huggingface/Qwen/Qwen3-8B", {"alias": "Qwen 8"})),
        "(was 'Qwen3 8B')",
    ),
    (
        ["aliases", "remove", "gpt-oss"],
        _entries(lambda m: m.pop("huggingface/openai/gpt-oss-120b")),
        "removed alias 'gpt-oss' (it named huggingface/openai/gpt-oss-120b)",
    ),
]


@pytest.mark.parametrize(("args", "change", "said"), GOOD, ids=[" ".join(g[0]) for g in GOOD])
def test_edit_changes_only_its_key(
    config: Path, args: list[str], change: Change, said: str
) -> None:
    """The edit lands, every other key and value stays, the file stays 0600, a note says the
    comments were not kept. HF_TOKEN is unset: ${HF_TOKEN} in the file does not block edits."""
    expected = json5.loads(EDIT_BASE)
    change(expected)
    result = invoke("models", *args)
    assert result.exit_code == 0, result.output
    assert said in result.stdout
    assert read_json(config) == expected
    assert mode(config) == 0o600
    assert "comments were not kept" in result.stderr


BAD: list[tuple[list[str], int, str]] = [
    (["set", "not a ref"], 78, "white space"),
    (["set", "a/b/c/d"], 78, "invalid model reference"),
    (["set", "Qwen/Qwen3-8B:Bad!"], 78, "is not a policy"),
    (["set", "unknown-alias"], 78, "has no organisation part"),
    (["fallbacks", "add", "deepseek-ai/DeepSeek-R1"], 78, "is the primary model"),
    (["fallbacks", "add", "bad ref"], 78, "white space"),
    (["fallbacks", "remove", "Qwen/Qwen3-32B"], 1, "is not a fallback"),
    (["aliases", "add", "default", "Qwen/Qwen3-8B"], 78, "already means the configured chain"),
    (["aliases", "add", "gpt-oss", "Qwen/Qwen3-8B"], 78, "already names"),
    (["aliases", "add", "x", "bad ref"], 78, "white space"),
    (["aliases", "add", "  ", "Qwen/Qwen3-8B"], 78, "cannot be empty"),
    (["aliases", "remove", "nope"], 1, "no alias 'nope'"),
    (["fallbacks", "add"], 2, "Missing argument"),
]


@pytest.mark.parametrize(("args", "code", "why"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_changes_nothing(config: Path, args: list[str], code: int, why: str) -> None:
    """A bad ref, a clash or a missing entry: the file is byte-for-byte unchanged, and the
    message says why."""
    before = config.read_bytes()
    result = invoke("models", *args)
    assert result.exit_code == code, result.output
    assert why in result.stderr
    assert config.read_bytes() == before


def test_adding_an_existing_fallback_is_a_no_op(config: Path) -> None:
    """Adding a fallback already there says so and does not rewrite the file."""
    before = config.read_bytes()
    result = invoke("models", "fallbacks", "add", "Qwen3 8B")
    assert result.exit_code == 0
    assert "already a fallback; nothing changed" in result.stdout
    assert config.read_bytes() == before


def test_a_broken_config_is_not_overwritten(config: Path) -> None:
    """A config with a syntax error is reported (exit 78, with the line) and left alone."""
    config.write_text("{ agents: { defaults: { model: { primary: } } }\n")
    before = config.read_bytes()
    result = invoke("models", "set", "Qwen/Qwen3-8B")
    assert result.exit_code == 78
    assert "JSON5 syntax error" in result.stderr and ":1" in result.stderr
    assert config.read_bytes() == before


def test_set_creates_the_config_when_there_is_none(state_dir: Path) -> None:
    """With no config yet, `models set` writes one holding only the primary."""
    result = invoke("models", "set", "Qwen/Qwen3-8B:fastest")
    assert result.exit_code == 0, result.output
    path = state_dir / "coderclaw.json"
    assert read_json(path) == {
        "agents": {"defaults": {"model": {"primary": "huggingface/Qwen/Qwen3-8B:fastest"}}}
    }
    assert mode(path) == 0o600
    assert "comments" not in result.stderr


def test_set_notes_a_model_the_catalog_does_not_know(config: Path) -> None:
    """A valid ref outside the catalog is accepted, with a note that it is tried anyway."""
    result = invoke("models", "set", "someorg/brand-new-model")
    assert result.exit_code == 0
    assert "is not in the known catalog; it is tried anyway" in result.stderr
    assert _defaults(read_json(config))["model"]["primary"] == "huggingface/someorg/brand-new-model"


def test_lists_show_the_chain_and_aliases_without_the_token(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fallbacks list` and `aliases list` (text and JSON) show the configuration; the token the
    config refers to is never printed."""
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    text = invoke("models", "fallbacks")
    assert text.exit_code == 0
    assert text.stdout.splitlines() == [
        "primary: huggingface/deepseek-ai/DeepSeek-R1",
        "1. huggingface/Qwen/Qwen3-8B",
    ]
    as_json = invoke("models", "fallbacks", "list", "--json")
    assert json.loads(as_json.stdout) == {
        "primary": "huggingface/deepseek-ai/DeepSeek-R1",
        "fallbacks": ["huggingface/Qwen/Qwen3-8B"],
    }
    aliases = invoke("models", "aliases", "list", "--json")
    assert json.loads(aliases.stdout) == {
        "Qwen3 8B": "huggingface/Qwen/Qwen3-8B",
        "GPT-OSS": "huggingface/openai/gpt-oss-120b",
    }
    table = invoke("models", "aliases")
    assert "GPT-OSS   huggingface/openai/gpt-oss-120b" in table.stdout
    for result in (text, as_json, aliases, table):
        assert_secret_absent(GOOD_TOKEN, result.output)


def test_a_sequence_of_edits_keeps_unrelated_keys(config: Path) -> None:
    """Several edits in a row: sections the commands never touch come out identical."""
    base = json5.loads(EDIT_BASE)
    for args in (
        ["set", "Qwen/Qwen3-32B"],
        ["fallbacks", "add", "openai/gpt-oss-120b"],
        ["aliases", "add", "Big", "Qwen/Qwen3-32B"],
        ["fallbacks", "clear"],
        ["aliases", "remove", "Qwen3 8B"],
    ):
        assert invoke("models", *args).exit_code == 0
    after = read_json(config)
    for key in ("models", "gateway", "env", "logging"):
        assert after[key] == base[key]
    expected_defaults = copy.deepcopy(base["agents"]["defaults"])
    expected_defaults["model"] = {"primary": "huggingface/Qwen/Qwen3-32B"}
    expected_defaults["models"] = {
        "huggingface/openai/gpt-oss-120b": {"alias": "GPT-OSS"},
        "huggingface/Qwen/Qwen3-32B": {"alias": "Big"},
    }
    assert after["agents"]["defaults"] == expected_defaults
