"""The foundation commands as a user runs them: real `coderclaw` child processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from tests.cli_helpers import DATA, run_module, run_module_sync
from tests.conftest import clean_env
from tests.fake_router import FakeRouter, ModelsReply

TOKEN = "hf_CliTokenNeverPrinted777"
NEW_MODEL = "zai-org/GLM-5.3-Flash"  # served by the fake, not in the built-in catalog


def _router_config(path: Path, base_url: str) -> Path:
    path.write_text(
        "{\n"
        "  // the fake router stands in for router.huggingface.co\n"
        f'  models: {{ providers: {{ huggingface: {{ baseUrl: "{base_url}" }} }} }},\n'
        '  agents: { defaults: { model: { primary: "huggingface/zai-org/GLM-5.3-Flash" } } },\n'
        "}\n"
    )
    return path


def test_help_lists_the_commands(isolated_home: Path) -> None:
    """`coderclaw --help` exits 0 and names the command groups and where to start."""
    run = run_module_sync("--help", env=clean_env(isolated_home))
    assert run.code == 0, run.err
    assert "Usage: python -m gateway" in run.out or "Usage: coderclaw" in run.out
    for word in ("models", "config", "coderclaw onboard --auth-choice huggingface-api-key"):
        assert word in run.out
    sub = run_module_sync("models", "list", "--help", env=clean_env(isolated_home))
    assert sub.code == 0
    assert "--json" in sub.out and "--refresh" in sub.out


def test_version_from_the_console_script_and_python_m(isolated_home: Path) -> None:
    """`coderclaw --version` (the installed script) and `python -m gateway --version` agree."""
    run = run_module_sync("--version", env=clean_env(isolated_home))
    assert run.code == 0
    assert run.out.strip() == f"coderclaw, version {__version__}"
    script = Path(sys.executable).parent / "coderclaw"
    proc = subprocess.run(
        [str(script), "--version"],
        env=clean_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout == run.out


def test_models_list_table(isolated_home: Path) -> None:
    """The table: ref, alias, context, $/M in/out, providers, source; * marks the chain."""
    env = clean_env(isolated_home, CODERCLAW_CONFIG_PATH=str(DATA / "example5.json5"))
    run = run_module_sync("models", "list", env=env)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["REF", "ALIAS", "CONTEXT", "$/M", "IN/OUT", "PROVIDERS", "SOURCE"]
    assert set(lines[1]) <= {"-", " "}
    rows = {line.split()[0]: line for line in lines[2:] if line.strip() and line[0] != "\n"}
    v32 = rows["*huggingface/deepseek-ai/DeepSeek-V3.2"]
    assert "DeepSeek V3.2" in v32
    assert "160k" in v32
    assert "0.27/0.4" in v32
    assert v32.rstrip().endswith("builtin")
    assert "*huggingface/openai/gpt-oss-120b" in rows
    assert "huggingface/Qwen/Qwen3-8B" in rows, "models outside the chain have no star"
    assert lines[-1] == "10 models (builtin catalog); * = in the default chain"


def test_models_list_json(isolated_home: Path) -> None:
    """--json is machine-readable, with configured suffixed refs and aliases as written."""
    env = clean_env(isolated_home, CODERCLAW_CONFIG_PATH=str(DATA / "example7.json5"))
    run = run_module_sync("models", "list", "--json", env=env)
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["origin"] == "builtin"
    by_ref = {m["ref"]: m for m in data["models"]}
    cheap = by_ref["huggingface/Qwen/Qwen2.5-7B-Instruct:cheapest"]
    assert cheap == {
        "ref": "huggingface/Qwen/Qwen2.5-7B-Instruct:cheapest",
        "id": "Qwen/Qwen2.5-7B-Instruct:cheapest",
        "aliases": ["Qwen2.5 7B (cheap)"],
        "in_chain": True,
        "source": "config",
        "context_window": 32768,
        "max_output": 8192,
        "cost_per_million": {"input": 0.3, "output": 0.3},
        "reasoning": False,
        "providers": [],
    }
    assert by_ref["huggingface/deepseek-ai/DeepSeek-R1:fastest"]["aliases"] == [
        "DeepSeek R1 (fast)"
    ]
    assert by_ref["huggingface/deepseek-ai/DeepSeek-R1"]["in_chain"] is False
    assert len(data["models"]) == 12


def test_bare_models_is_models_list(isolated_home: Path) -> None:
    """`coderclaw models` alone lists the models."""
    env = clean_env(isolated_home)
    assert run_module_sync("models", env=env).out == run_module_sync("models", "list", env=env).out


async def test_models_list_refresh_asks_the_router_and_caches(
    isolated_home: Path, tmp_path: Path
) -> None:
    """--refresh calls {baseUrl}/models with the token, shows the result and writes the cache;
    a later plain `models list` uses the cache even with the router down."""
    state = tmp_path / "state"
    async with FakeRouter() as router:
        config = _router_config(tmp_path / "c.json5", router.base_url)
        env = clean_env(
            isolated_home,
            CODERCLAW_CONFIG_PATH=str(config),
            CODERCLAW_STATE_DIR=str(state),
            HF_TOKEN=TOKEN,
        )
        run = await run_module("models", "list", "--refresh", "--json", env=env)
        assert run.code == 0, run.err
        [call] = router.models_calls
        assert call.token == TOKEN
        data = json.loads(run.out)
        assert data["origin"] == "discovery"
        by_ref = {m["ref"]: m for m in data["models"]}
        flash = by_ref[f"huggingface/{NEW_MODEL}"]
        assert flash["source"] == "discovered"
        assert flash["in_chain"] is True
        assert flash["providers"] == ["novita", "zai-org"]
        assert by_ref["huggingface/deepseek-ai/DeepSeek-R1"]["source"] == "builtin+discovered"
        assert TOKEN not in run.out + run.err

        table = await run_module("models", "list", "--refresh", env=env)
        assert table.code == 0
        assert "(discovery catalog)" in table.out
        assert f"*huggingface/{NEW_MODEL}" in table.out

    cache = state / "cache" / "huggingface-models.json"
    assert cache.exists()
    assert cache.stat().st_mode & 0o777 == 0o600
    later = await run_module("models", "list", "--json", env=env)
    assert later.code == 0, later.err
    cached = json.loads(later.out)
    assert cached["origin"] == "cache"
    assert f"huggingface/{NEW_MODEL}" in {m["ref"] for m in cached["models"]}


async def test_models_list_refresh_failure_is_a_clear_error(
    isolated_home: Path, tmp_path: Path
) -> None:
    """A router error on --refresh is one message with a hint, exit 1, and no token printed."""
    async with FakeRouter() as router:
        router.models_reply = ModelsReply(status=500)
        config = _router_config(tmp_path / "c.json5", router.base_url)
        env = clean_env(isolated_home, CODERCLAW_CONFIG_PATH=str(config), HF_TOKEN=TOKEN)
        run = await run_module("models", "list", "--refresh", env=env)
    assert run.code == 1
    assert run.out == ""
    assert run.err.startswith(f"error: the router answered 500 to GET {router.base_url}/models")
    assert "→ check models.providers.huggingface.baseUrl" in run.err
    assert TOKEN not in run.err
    assert "Traceback" not in run.err


def test_config_validate_ok(isolated_home: Path) -> None:
    """A valid config: exit 0 with the chain; --json gives the same summary, no token value."""
    path = DATA / "example5.json5"
    env = clean_env(isolated_home, CODERCLAW_CONFIG_PATH=str(path), HF_TOKEN=TOKEN)
    run = run_module_sync("config", "validate", env=env)
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        f"ok: {path}",
        "  primary:   huggingface/deepseek-ai/DeepSeek-V3.2",
        "  fallbacks: huggingface/meta-llama/Llama-3.3-70B-Instruct, "
        "huggingface/openai/gpt-oss-120b",
        "  aliases:   3",
    ]
    data = json.loads(run_module_sync("config", "validate", "--json", env=env).out)
    assert data == {
        "path": str(path),
        "exists": True,
        "primary": "huggingface/deepseek-ai/DeepSeek-V3.2",
        "fallbacks": [
            "huggingface/meta-llama/Llama-3.3-70B-Instruct",
            "huggingface/openai/gpt-oss-120b",
        ],
        "aliases": {
            "DeepSeek V3.2": "huggingface/deepseek-ai/DeepSeek-V3.2",
            "Llama 3.3 70B": "huggingface/meta-llama/Llama-3.3-70B-Instruct",
            "GPT-OSS 120B": "huggingface/openai/gpt-oss-120b",
        },
        "token": True,
    }


def test_config_validate_without_a_file_uses_the_defaults(isolated_home: Path) -> None:
    """No config file is fine: the message says the defaults apply."""
    run = run_module_sync("config", "validate", env=clean_env(isolated_home))
    assert run.code == 0, run.err
    assert run.out.splitlines()[0] == (
        f"no config file at {isolated_home}/.coderclaw/coderclaw.json: the defaults apply"
    )
    assert "  primary:   huggingface/deepseek-ai/DeepSeek-R1" in run.out


def test_models_list_with_a_broken_config_exits_78(isolated_home: Path, tmp_path: Path) -> None:
    """Every command that needs the config refuses a broken one with 78."""
    path = tmp_path / "c.json5"
    path.write_text("{ gateway: { port: 0 } }")
    run = run_module_sync(
        "models", "list", env=clean_env(isolated_home, CODERCLAW_CONFIG_PATH=str(path))
    )
    assert run.code == 78
    assert run.err.startswith(f"error: {path}:1: gateway.port: expected a value greater than")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "{home}/.coderclaw/coderclaw.json"),
        ({"CODERCLAW_CONFIG_PATH": "{tmp}/custom.json5"}, "{tmp}/custom.json5"),
        ({"CODERCLAW_STATE_DIR": "{tmp}/state"}, "{tmp}/state/coderclaw.json"),
        ({"CODERCLAW_HOME": "{tmp}/chome"}, "{tmp}/chome/.coderclaw/coderclaw.json"),
        (
            {"CODERCLAW_STATE_DIR": "{tmp}/state", "CODERCLAW_CONFIG_PATH": "{tmp}/c.json5"},
            "{tmp}/c.json5",
        ),
    ],
)
def test_config_path(
    extra: dict[str, str], expected: str, isolated_home: Path, tmp_path: Path
) -> None:
    """`coderclaw config path` prints where the config is read from (file need not exist)."""
    fill = {"home": str(isolated_home), "tmp": str(tmp_path)}
    env = clean_env(isolated_home, **{k: v.format(**fill) for k, v in extra.items()})
    run = run_module_sync("config", "path", env=env)
    assert run.code == 0, run.err
    assert run.out == expected.format(**fill) + "\n"
