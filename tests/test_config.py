"""The config file (SPEC §2): the provider page's examples load; broken files fail clearly (78)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    DEFAULT_PRIMARY,
    Config,
    dotted_path,
    parse_json5,
    substitute_vars,
    upstream_url_problem,
    validate_config,
)
from gateway.errors import ConfigError
from gateway.settings import load_settings
from tests.cli_helpers import DATA, run_module_sync
from tests.conftest import clean_env
from tests.daemon_harness import free_port, gateway_argv, port_open, run_process

R1 = "huggingface/deepseek-ai/DeepSeek-R1"
QWEN8 = "huggingface/Qwen/Qwen3-8B"
QWEN25 = "huggingface/Qwen/Qwen2.5-7B-Instruct"

# example file -> (primary, fallbacks, aliases as written)
EXAMPLES: dict[str, tuple[str, list[str], dict[str, str]]] = {
    # quick start: only a primary
    "example1.json5": (R1, [], {}),
    # "Model names and editable options": aliases only, so the default primary applies
    "example2.json5": (
        "huggingface/deepseek-ai/DeepSeek-R1",
        [],
        {"DeepSeek R1 (fast)": R1, "DeepSeek R1 (cheap)": f"{R1}:cheapest"},
    ),
    "example3.json5": (R1, [QWEN8], {"DeepSeek R1": R1, "Qwen3 8B": QWEN8}),
    "example4.json5": (
        QWEN8,
        [],
        {
            "Qwen3 8B": QWEN8,
            "Qwen3 8B (cheapest)": f"{QWEN8}:cheapest",
            "Qwen3 8B (fastest)": f"{QWEN8}:fastest",
        },
    ),
    "example5.json5": (
        "huggingface/deepseek-ai/DeepSeek-V3.2",
        ["huggingface/meta-llama/Llama-3.3-70B-Instruct", "huggingface/openai/gpt-oss-120b"],
        {
            "DeepSeek V3.2": "huggingface/deepseek-ai/DeepSeek-V3.2",
            "Llama 3.3 70B": "huggingface/meta-llama/Llama-3.3-70B-Instruct",
            "GPT-OSS 120B": "huggingface/openai/gpt-oss-120b",
        },
    ),
    "example6.json5": (
        f"{R1}:together",
        [],
        {"DeepSeek R1 (Together)": f"{R1}:together"},
    ),
    "example7.json5": (
        f"{QWEN25}:cheapest",
        [],
        {
            "Qwen2.5 7B": QWEN25,
            "Qwen2.5 7B (cheap)": f"{QWEN25}:cheapest",
            "DeepSeek R1 (fast)": f"{R1}:fastest",
            "Llama 3.1 8B": "huggingface/meta-llama/Llama-3.1-8B-Instruct",
        },
    ),
}


def test_all_seven_provider_page_examples_are_in_tests_data() -> None:
    """The page has seven JSON5 blocks; each is copied into tests/data and in the table."""
    assert sorted(p.name for p in DATA.glob("example*.json5")) == sorted(EXAMPLES)
    assert len(EXAMPLES) == 7


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_provider_page_example_loads_unchanged(name: str, isolated_home: Path) -> None:
    """Each example, read in place through CODERCLAW_CONFIG_PATH, gives its chain and aliases."""
    primary, fallbacks, aliases = EXAMPLES[name]
    settings = load_settings(
        {"HOME": str(isolated_home), "CODERCLAW_CONFIG_PATH": str(DATA / name)}
    )
    assert settings.config_exists
    assert settings.paths.config == DATA / name
    assert [str(r) for r in settings.chain] == [primary, *fallbacks]
    assert {alias: str(ref) for alias, ref in settings.aliases.items()} == aliases
    for alias, ref in aliases.items():
        assert str(settings.aliases[alias.upper()]) == ref, "aliases match in any case"


def test_the_default_primary_is_deepseek_r1() -> None:
    """With no primary configured the chain is huggingface/deepseek-ai/DeepSeek-R1 (SPEC §7)."""
    assert DEFAULT_PRIMARY == "huggingface/deepseek-ai/DeepSeek-R1"


def test_a_missing_config_file_means_the_defaults(isolated_home: Path) -> None:
    """No file is not an error: the defaults apply and config_exists says so."""
    settings = load_settings({"HOME": str(isolated_home)})
    assert not settings.config_exists
    assert settings.paths.config == isolated_home / ".coderclaw" / "coderclaw.json"
    assert [str(r) for r in settings.chain] == [DEFAULT_PRIMARY]
    assert settings.port == 18789
    assert settings.host == "127.0.0.1"


def test_the_full_schema_of_the_spec_validates() -> None:
    """Every key of the SPEC §2 schema is accepted with the values it shows."""
    text = """{
      agents: { defaults: {
        model: { primary: "huggingface/deepseek-ai/DeepSeek-R1",
                 fallbacks: ["huggingface/Qwen/Qwen3-8B"] },
        models: { "huggingface/Qwen/Qwen3-8B:cheapest": { alias: "Qwen3 8B (cheapest)" } },
      } },
      models: { providers: { huggingface: {
        baseUrl: "https://router.huggingface.co/v1",
        hubUrl: "https://huggingface.co",
        apiKey: "hf_x",
        discovery: { enabled: true, refreshMinutes: 60, timeoutSeconds: 30 },
      } } },
      gateway: {
        port: 18789, bind: "loopback",
        auth: { token: "..." },
        timeouts: { connectSeconds: 5, firstTokenSeconds: 15, idleSeconds: 30, totalSeconds: 600 },
        retries: 1, maxRetryWaitSeconds: 10,
        limits: { maxBodyBytes: 20971520 },
      },
      env: { vars: { KEY: "value" }, shellEnv: { enabled: false, timeoutMs: 15000 } },
      logging: { level: "info", format: "auto" },
    }"""
    config = validate_config(parse_json5(text, "f"), "f", text)
    assert config.hf.discovery.refresh_minutes == 60
    assert config.gateway.timeouts.first_token_seconds == 15
    assert config.gateway.limits.max_body_bytes == 20971520
    assert config.env.vars == {"KEY": "value"}
    assert config.agents.defaults.model.fallbacks == ("huggingface/Qwen/Qwen3-8B",)
    assert config == Config.model_validate(parse_json5(text, "f"))


@dataclass(frozen=True)
class Broken:
    """A broken config and what its one error message must say."""

    id: str
    content: bytes | None  # None: a directory stands where the file should be
    path: str | None  # dotted path named in the message
    line: int | None
    says: str


BROKEN = [
    Broken(
        "json5-syntax",
        b'{\n  gateway: {\n    port: 80\n    bind: "lan",\n  },\n}\n',
        None,
        4,
        'JSON5 syntax error: Unexpected "b"',
    ),
    Broken(
        "unknown-key",
        b'{\n  agents: {\n    defaults: {\n      model: { primry: "a/b" },\n    },\n  },\n}\n',
        "agents.defaults.model.primry",
        4,
        "unknown key; expected one of: primary, fallbacks",
    ),
    Broken(
        "unknown-top-level-key",
        b"{\n  gateways: {},\n}\n",
        "gateways",
        2,
        "unknown key; expected one of: agents, models, gateway, env, logging",
    ),
    Broken(
        "wrong-type-port",
        b'{\n  gateway: {\n    port: "80",\n  },\n}\n',
        "gateway.port",
        3,
        "expected an integer, got a string",
    ),
    Broken(
        "wrong-type-fallbacks",
        b'{\n  agents: { defaults: { model: {\n    fallbacks: "huggingface/a/b",\n  } } },\n}\n',
        "agents.defaults.model.fallbacks",
        3,
        "expected a list, got a string",
    ),
    Broken(
        "wrong-literal",
        b'{\n  gateway: {\n    bind: "wan",\n  },\n}\n',
        "gateway.bind",
        3,
        "expected 'loopback', 'lan' or 'custom', got 'wan'",
    ),
    Broken(
        "bad-url",
        b'{\n  models: { providers: { huggingface: {\n    baseUrl: "ftp://x",\n  } } },\n}\n',
        "models.providers.huggingface.baseUrl",
        3,
        "expected an http:// or https:// URL",
    ),
    Broken(
        "userinfo-in-base-url",
        b'{\n  models: { providers: { huggingface: {\n'
        b'    baseUrl: "https://me:pa55word@router.example/v1",\n  } } },\n}\n',
        "models.providers.huggingface.baseUrl",
        3,
        "credentials in the URL (user:password@) are not allowed",
    ),
    Broken(
        "plain-http-hub-url",
        b'{\n  models: { providers: { huggingface: {\n    hubUrl: "http://hub.example",\n'
        b"  } } },\n}\n",
        "models.providers.huggingface.hubUrl",
        3,
        "plain http:// to hub.example would send the token unencrypted",
    ),
    Broken(
        "bad-ref-fallback",
        b'{\n  agents: { defaults: { model: {\n    primary: "huggingface/Qwen/Qwen3-8B",\n'
        b'    fallbacks: ["huggingface/Qwen/Qwen 3"],\n  } } },\n}\n',
        "agents.defaults.model.fallbacks[0]",
        4,
        "contains white space",
    ),
    Broken(
        "bad-ref-primary",
        b'{\n  agents: { defaults: { model: {\n    primary: "together/a/b",\n  } } },\n}\n',
        "agents.defaults.model.primary",
        3,
        "names provider 'together'",
    ),
    Broken(
        "bad-ref-models-key",
        b'{\n  agents: { defaults: { models: {\n    "DeepSeek-R1": { alias: "R1" },\n  } } },\n}\n',
        'agents.defaults.models["DeepSeek-R1"]',
        3,
        "no organisation part",
    ),
    Broken(
        "missing-var",
        b'{\n  models: { providers: { huggingface: {\n    apiKey: "${CODERCLAW_TEST_UNSET}",\n'
        b"  } } },\n}\n",
        "models.providers.huggingface.apiKey",
        3,
        "environment variable CODERCLAW_TEST_UNSET is not set",
    ),
    Broken(
        "bad-var-name",
        b'{\n  gateway: {\n    host: "${lower}",\n  },\n}\n',
        "gateway.host",
        3,
        "${lower} is not a valid variable name",
    ),
    Broken(
        "env-vars-not-strings",
        b"{\n  env: {\n    vars: { PORT: 80 },\n  },\n}\n",
        "env.vars.PORT",
        3,
        "expected a string, got an integer",
    ),
    Broken(
        "duplicate-alias",
        b'{\n  agents: { defaults: { models: {\n    "a/b": { alias: "Fast" },\n'
        b'    "c/d": { alias: "FAST" },\n  } } },\n}\n',
        'agents.defaults.models["c/d"].alias',
        4,
        "alias 'FAST' is already used for 'a/b'",
    ),
    Broken(
        "model-map-target-not-a-model",
        b'{\n  gateway: { anthropic: { modelMap: {\n    "claude-haiku-*": "Fast",\n'
        b'    "*": "coderclaw",\n  } } },\n}\n',
        'gateway.anthropic.modelMap["claude-haiku-*"]',
        3,
        "'Fast' is not a chain name, an alias or a model ref",
    ),
    Broken(
        "model-map-target-bad-ref",
        b'{\n  gateway: { anthropic: { modelMap: {\n    "*": "huggingface/Qwen/Qwen 3",\n'
        b"  } } },\n}\n",
        'gateway.anthropic.modelMap["*"]',
        3,
        "contains white space",
    ),
    Broken("top-level-list", b"[1, 2]\n", None, None, "expected an object at the top level"),
    Broken("directory", None, None, None, "is a directory, not a config file"),
    Broken("invalid-utf8", b'{\n  logging: { level: "\xff" },\n}\n', None, 2, "not UTF-8 text"),
]


def _write_broken(case: Broken, where: Path) -> Path:
    path = where / f"{case.id}.json5"
    if case.content is None:
        path.mkdir()
    else:
        path.write_bytes(case.content)
    return path


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.id)
def test_a_broken_config_is_one_clear_config_error(
    case: Broken, tmp_path: Path, isolated_home: Path
) -> None:
    """The error names the file, the dotted path, the line where known, and what was expected."""
    path = _write_broken(case, tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings({"HOME": str(isolated_home), "CODERCLAW_CONFIG_PATH": str(path)})
    err = info.value
    assert err.exit_code == 78
    assert err.file == str(path)
    assert err.path == case.path
    assert err.line == case.line
    assert case.says in err.reason
    where = f"{path}:{case.line}: " if case.line else f"{path}: "
    assert str(err).startswith(where + (f"{case.path}: " if case.path else ""))
    assert err.hint, "every config error says what to do next"


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.id)
def test_config_validate_exits_78_for_a_broken_config(
    case: Broken, tmp_path: Path, isolated_home: Path
) -> None:
    """`coderclaw config validate` prints the one message on stderr and exits 78 (EX_CONFIG)."""
    path = _write_broken(case, tmp_path)
    env = clean_env(isolated_home, CODERCLAW_CONFIG_PATH=str(path))
    run = run_module_sync("config", "validate", env=env)
    assert run.code == 78, run.err
    assert run.out == ""
    first = run.err.splitlines()[0]
    assert first.startswith(f"error: {path}")
    assert case.says in first
    if case.path:
        assert case.path in first
    if case.line:
        assert f"{path}:{case.line}:" in first
    assert "Traceback" not in run.err


def test_dollar_dollar_stays_literal(tmp_path: Path, isolated_home: Path) -> None:
    """`$${VAR}` is written out as `${VAR}` and needs no such variable; `${VAR}` is replaced."""
    path = tmp_path / "c.json5"
    path.write_text(
        "{ agents: { defaults: { models: {\n"
        '  "a/b": { alias: "costs $${PRICE} now" },\n'
        '  "c/d": { alias: "${WHO}-model" },\n'
        "} } } }\n"
    )
    settings = load_settings(
        {"HOME": str(isolated_home), "CODERCLAW_CONFIG_PATH": str(path), "WHO": "mine"}
    )
    assert dict(settings.aliases) == {
        "costs ${PRICE} now": settings.aliases["costs ${price} now"],
        "mine-model": settings.aliases["MINE-MODEL"],
    }
    assert str(settings.aliases["costs ${PRICE} now"]) == "huggingface/a/b"


@pytest.mark.parametrize(
    ("data", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("x${A}y${B}z", {"A": "1", "B": "2"}, "x1y2z"),
        ("$${A}", {}, "${A}"),
        ("$${A} and ${A}", {"A": "v"}, "${A} and v"),
        ("no vars $ {A} $A", {}, "no vars $ {A} $A"),
        ("${A}", {"A": ""}, ""),
        ({"k": ["${A}", 1, True, None]}, {"A": "v"}, {"k": ["v", 1, True, None]}),
    ],
)
def test_substitute_vars(data: Any, env: dict[str, str], expected: Any) -> None:
    """`${VAR}` comes from the environment, recursively; other values are left alone."""
    assert substitute_vars(data, env, "f") == expected


def test_substitute_vars_does_not_touch_its_input() -> None:
    """A pure function: the parsed data is not modified."""
    data = {"a": ["${A}"]}
    substitute_vars(data, {"A": "v"}, "f")
    assert data == {"a": ["${A}"]}


@pytest.mark.parametrize(
    ("loc", "dotted"),
    [
        (("gateway", "port"), "gateway.port"),
        (("agents", "defaults", "model", "fallbacks", 2), "agents.defaults.model.fallbacks[2]"),
        (("agents", "defaults", "models", "a/b:cheapest", "alias"),
         'agents.defaults.models["a/b:cheapest"].alias'),
        ((), ""),
    ],
)  # fmt: skip
def test_dotted_path(loc: tuple[Any, ...], dotted: str) -> None:
    """Paths read like the file: keys with dots, list indexes and odd keys in brackets."""
    assert dotted_path(loc) == dotted


def test_an_empty_file_is_the_defaults(tmp_path: Path, isolated_home: Path) -> None:
    """An empty (or comment-only) file is a valid, empty config."""
    path = tmp_path / "c.json5"
    path.write_text("// nothing yet\n")
    settings = load_settings({"HOME": str(isolated_home), "CODERCLAW_CONFIG_PATH": str(path)})
    assert settings.config_exists
    assert [str(r) for r in settings.chain] == [DEFAULT_PRIMARY]


def test_duplicate_refs_in_the_chain_are_dropped(tmp_path: Path, isolated_home: Path) -> None:
    """A fallback equal to the primary (in another spelling) is not tried twice."""
    path = tmp_path / "c.json5"
    path.write_text(
        '{ agents: { defaults: { model: { primary: "Qwen/Qwen3-8B",'
        ' fallbacks: ["huggingface/Qwen/Qwen3-8B", "huggingface/huggingface/a/b", "a/b"] } } } }'
    )
    settings = load_settings({"HOME": str(isolated_home), "CODERCLAW_CONFIG_PATH": str(path)})
    assert [str(r) for r in settings.chain] == [QWEN8, "huggingface/a/b"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode")
def test_a_config_without_read_permission_exits_78(tmp_path: Path, isolated_home: Path) -> None:
    """chmod 000 on the config: one message naming the file and the reason (non-root runs)."""
    path = tmp_path / "c.json5"
    path.write_text("{}")
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read the config file: Permission denied") as info:
        load_settings({"HOME": str(isolated_home), "CODERCLAW_CONFIG_PATH": str(path)})
    assert info.value.file == str(path)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://router.huggingface.co/v1", None),
        ("https://huggingface.co", None),
        ("http://127.0.0.1:8080/v1", None),
        ("http://127.9.8.7/v1", None),
        ("http://[::1]:9000", None),
        ("http://localhost:1234/v1", None),
        ("http://LOCALHOST/v1", None),
        ("https://10.0.0.5/v1", None),
        ("http://router.example/v1", "plain http:// to router.example"),
        ("http://10.0.0.5/v1", "plain http:// to 10.0.0.5"),
        ("http://[::2]/v1", "plain http:// to ::2"),
        ("http://128.0.0.1/v1", "plain http:// to 128.0.0.1"),
        ("http://localhost.evil.example/v1", "plain http:// to localhost.evil.example"),
        ("http://127.0.0.1.nip.io/v1", "plain http:// to 127.0.0.1.nip.io"),
        ("https://user:secret@router.example/v1", "credentials in the URL"),
        ("https://user@router.example/v1", "credentials in the URL"),
        ("http://user:pw@127.0.0.1/v1", "credentials in the URL"),
        ("https://:pw@router.example", "credentials in the URL"),
        ("https://router.example:notaport/v1", "valid host and port"),
        ("https:///v1", "with a host"),
    ],
)
def test_upstream_url_problem(url: str, problem: str | None) -> None:
    """Credentials in the URL are refused; plain http:// only to 127.0.0.0/8, ::1 or
    localhost; the message never repeats a password."""
    found = upstream_url_problem(url)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        assert "secret" not in found and "pw" not in found


@pytest.mark.parametrize(
    ("key", "url", "says"),
    [
        ("baseUrl", "https://me:pa55word@router.example/v1", "credentials in the URL"),
        ("hubUrl", "http://hub.example", "plain http:// to hub.example"),
    ],
)
async def test_the_gateway_refuses_to_start_with_an_unsafe_upstream_url(
    isolated_home: Path, key: str, url: str, says: str
) -> None:
    """`gateway run` exits 78 naming the setting; no password in the output."""
    state = isolated_home / ".coderclaw"
    state.mkdir(mode=0o700)
    config = state / "coderclaw.json"
    config.write_text(json.dumps({"models": {"providers": {"huggingface": {key: url}}}}))
    port = free_port()
    env = clean_env(isolated_home, HF_TOKEN="hf_unsafeUrlTokenABCDEFGHIJ")
    async with run_process(gateway_argv(port), env, port=port) as gw:
        assert await gw.wait_exit(timeout=8) == 78
    text = gw.log_text()
    assert f"models.providers.huggingface.{key}" in text and says in text
    assert "pa55word" not in text and "hf_unsafeUrlToken" not in text
    assert not await port_open(port)
