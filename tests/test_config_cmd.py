"""``coderclaw config get|set|unset``: dotted paths, JSON5 values, validation before writing,
secrets kept out of the file; plus the pure path and value helpers behind them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import json5
import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.config_edit import (
    find_secret,
    format_path,
    get_value,
    holds_token,
    is_secret_path,
    loses_formatting,
    mask_secrets,
    parse_path,
    parse_value,
    set_value,
    unset_value,
)
from gateway.errors import ConfigError
from tests.cli_helpers import EDIT_BASE, GOOD_TOKEN, assert_secret_absent, mode, read_json

Change = Callable[[dict[str, Any]], None]
QWEN = '["huggingface/Qwen/Qwen3-8B"]'

# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("gateway.port", ("gateway", "port")),
        ("  logging.level ", ("logging", "level")),
        ("agents.defaults.model.fallbacks[0]", ("agents", "defaults", "model", "fallbacks", 0)),
        (
            'agents.defaults.models["huggingface/Qwen/Qwen3-8B"].alias',
            ("agents", "defaults", "models", "huggingface/Qwen/Qwen3-8B", "alias"),
        ),
        ('a[\'x.y\'][2]["q\\"r"]', ("a", "x.y", 2, 'q"r')),
        ("max-body_1", ("max-body_1",)),
    ],
)
def test_parse_path(text: str, parts: tuple[Any, ...]) -> None:
    """Dotted keys, [N] indexes and quoted keys (with dots, slashes or escapes)."""
    assert parse_path(text) == parts


@pytest.mark.parametrize("text", ["", ".", "a.", ".a", "a..b", "a[", "a[x]", "a b", "a]b", "[0]x"])
def test_parse_path_rejects_malformed(text: str) -> None:
    """A malformed path is a ConfigError that shows the expected form."""
    with pytest.raises(ConfigError) as info:
        parse_path(text)
    assert info.value.hint is not None and "gateway.port" in info.value.hint


@pytest.mark.parametrize(
    "parts",
    [("gateway", "port"), ("a", 0, "b"), ("agents", "models", "huggingface/x/y", "alias")],
)
def test_format_path_round_trips(parts: tuple[Any, ...]) -> None:
    """format_path writes what parse_path reads back."""
    assert parse_path(format_path(parts)) == parts


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8080", 8080),
        ("1.5", 1.5),
        ("true", True),
        ("null", None),
        ('"8080"', "8080"),
        ("[1, 'a']", [1, "a"]),
        ("{alias: 'x',}", {"alias": "x"}),
        ("huggingface/Qwen/Qwen3-8B", "huggingface/Qwen/Qwen3-8B"),
        ("info", "info"),
        ("${HF_TOKEN}", "${HF_TOKEN}"),
        ("", ""),
    ],
)
def test_parse_value(text: str, value: Any) -> None:
    """JSON5 when it parses, else the text itself."""
    assert parse_value(text) == value


def test_set_get_unset_on_nested_data() -> None:
    """set_value creates objects on the way and may append to a list; unset removes."""
    data: dict[str, Any] = {"a": {"list": [1]}}
    set_value(data, ("a", "b", "c"), 5)
    set_value(data, ("a", "list", 1), 2)
    assert data == {"a": {"list": [1, 2], "b": {"c": 5}}}
    assert get_value(data, ("a", "b", "c")) == (True, 5)
    assert get_value(data, ("a", "x")) == (False, None)
    assert unset_value(data, ("a", "list", 0)) is True
    assert unset_value(data, ("a", "nope")) is False
    assert data == {"a": {"list": [2], "b": {"c": 5}}}
    with pytest.raises(ConfigError, match="out of range"):
        set_value(data, ("a", "list", 5), 1)
    with pytest.raises(ConfigError, match="not an object"):
        set_value(data, ("a", "b", "c", "d"), 1)


@pytest.mark.parametrize(
    ("text", "loses"),
    [(None, False), ("", False), ('{"a": 1}\n', False), ("{a: 1}", True), ("// c\n{}", True)],
)
def test_loses_formatting(text: str | None, loses: bool) -> None:
    """Only text that is not plain JSON loses something when rewritten as JSON."""
    assert loses_formatting(text) is loses


# ---------------------------------------------------------------------------- CLI


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["config", *args], catch_exceptions=False)


@pytest.fixture
def config(state_dir: Path) -> Path:
    path = state_dir / "coderclaw.json"
    path.write_text(EDIT_BASE, encoding="utf-8")
    return path


def _at(*keys: str, value: Any) -> Change:
    def change(data: dict[str, Any]) -> None:
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return change


def _drop(*keys: str) -> Change:
    def change(data: dict[str, Any]) -> None:
        node = data
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


GOOD: list[tuple[list[str], Change]] = [
    (["set", "gateway.port", "18800"], _at("gateway", "port", value=18800)),
    (["set", "logging.level", "warning"], _at("logging", "level", value="warning")),
    (["set", "logging.format", '"json"'], _at("logging", "format", value="json")),
    (
        ["set", "agents.defaults.model.fallbacks", QWEN.replace("Qwen3-8B", "Qwen3-32B")],
        _at("agents", "defaults", "model", "fallbacks", value=["huggingface/Qwen/Qwen3-32B"]),
    ),
    (
        ["set", "agents.defaults.model.fallbacks[1]", "huggingface/openai/gpt-oss-120b"],
        _at(
            "agents",
            "defaults",
            "model",
            "fallbacks",
            value=["huggingface/Qwen/Qwen3-8B", "huggingface/openai/gpt-oss-120b"],
        ),
    ),
    (
        ["set", 'agents.defaults.models["huggingface/Qwen/Qwen3-8B"].alias', "Q8"],
        _at("agents", "defaults", "models", "huggingface/Qwen/Qwen3-8B", "alias", value="Q8"),
    ),
    (
        ["set", "gateway.auth.token", "${CODERCLAW_GATEWAY_TOKEN}"],
        _at("gateway", "auth", "token", value="${CODERCLAW_GATEWAY_TOKEN}"),
    ),
    (
        ["set", "gateway.limits.maxBodyBytes", "4096"],
        _at("gateway", "limits", "maxBodyBytes", value=4096),
    ),
    (["set", "env.shellEnv", "{enabled: true}"], _at("env", "shellEnv", value={"enabled": True})),
    (["unset", "logging.level"], _drop("logging", "level")),
    (["unset", "gateway"], _drop("gateway")),
    (
        ["unset", "agents.defaults.model.fallbacks[0]"],
        _at("agents", "defaults", "model", "fallbacks", value=[]),
    ),
]


@pytest.mark.parametrize(("args", "change"), GOOD, ids=[" ".join(g[0]) for g in GOOD])
def test_edit_changes_only_its_key(config: Path, args: list[str], change: Change) -> None:
    """`config set/unset` changes exactly the path given; every other key and value is kept
    (the file is rewritten as JSON, mode 0600)."""
    expected = json5.loads(EDIT_BASE)
    change(expected)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert read_json(config) == expected
    assert mode(config) == 0o600


BAD: list[tuple[list[str], int, str]] = [
    (["set", "gateway.prot", "1"], 78, "gateway.prot: unknown key"),
    (["set", "gateway.port", '"abc"'], 78, "gateway.port"),
    (["set", "gateway.port", "70000"], 78, "gateway.port"),
    (["set", "gateway.bind", "everywhere"], 78, "gateway.bind"),
    (["set", "agents.defaults.model.primary", "bad ref"], 78, "white space"),
    (["set", "agents.defaults.model.fallbacks[0]", "x"], 78, "fallbacks[0]"),
    (["set", "agents.defaults.model.fallbacks[5]", "a/b"], 78, "index out of range"),
    (["set", "gateway.port.x", "1"], 78, "is not an object"),
    (["set", "a..b", "1"], 78, "bad config path"),
    (["set", "models.providers.huggingface.apiKey", GOOD_TOKEN], 78, "a secret is not written"),
    (["set", "gateway.auth.token", "s3cret-value"], 78, "a secret is not written"),
    (["set", "state.redis.url", "redis://:s3cret-value@h:6379/0"], 78, "a secret is not written"),
    (["set", "newsection", "{}"], 78, "newsection: unknown key"),
    (["unset", "logging.format"], 1, "logging.format is not set"),
    (["set", "gateway.port"], 2, "Missing argument"),
]


@pytest.mark.parametrize(("args", "code", "why"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_changes_nothing(config: Path, args: list[str], code: int, why: str) -> None:
    """An unknown key, a wrong type, a bad ref, a bad path or a secret: nothing is written
    (byte-for-byte), the message says why, and a secret is never echoed."""
    before = config.read_bytes()
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert why in result.stderr
    assert config.read_bytes() == before
    assert_secret_absent(GOOD_TOKEN, result.output)
    assert "s3cret-value" not in result.output


def test_unset_primary_falls_back_to_the_default(config: Path) -> None:
    """Removing the primary is allowed; the built-in default applies again."""
    result = invoke("unset", "agents.defaults.model.primary")
    assert result.exit_code == 0
    assert "primary" not in read_json(config)["agents"]["defaults"]["model"]


def test_an_edit_that_fixes_a_bad_config_is_allowed(config: Path) -> None:
    """A config with an unknown key can be repaired with `config unset` (only the result is
    validated)."""
    config.write_text('{ logging: { level: "info", colour: "blue" } }\n')
    assert invoke("validate").exit_code == 78
    result = invoke("unset", "logging.colour")
    assert result.exit_code == 0, result.output
    assert read_json(config) == {"logging": {"level": "info"}}


@pytest.mark.parametrize(
    ("args", "out", "note"),
    [
        (["gateway.port"], "18790", False),
        (["logging.level"], "debug", False),
        (["--json", "logging.level"], '"debug"', False),
        (["gateway.retries"], "1", True),
        (["gateway.timeouts.idleSeconds"], "45", False),
        (["gateway.timeouts.connectSeconds"], "5.0", True),
        (["models.providers.huggingface.apiKey"], "${HF_TOKEN}", False),
        (['agents.defaults.models["huggingface/Qwen/Qwen3-8B"].alias'], "Qwen3 8B", False),
        (["agents.defaults.model.fallbacks[0]"], "huggingface/Qwen/Qwen3-8B", False),
    ],
)
def test_get_prints_the_value_as_written_or_the_default(
    config: Path, args: list[str], out: str, note: bool
) -> None:
    """Strings print bare (JSON with --json); a key the file lacks prints its default with a
    note on stderr; ${VAR} is shown as written."""
    result = invoke("get", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == out
    assert ("this is the default" in result.stderr) is note


def test_get_of_an_object_is_json(config: Path) -> None:
    """An object prints as indented JSON."""
    result = invoke("get", "agents.defaults.model")
    assert json.loads(result.stdout) == {
        "primary": "huggingface/deepseek-ai/DeepSeek-R1",
        "fallbacks": ["huggingface/Qwen/Qwen3-8B"],
    }


def test_get_masks_a_literal_secret(state_dir: Path) -> None:
    """A token written literally into the config is shown masked, never in full."""
    (state_dir / "coderclaw.json").write_text(
        json.dumps({"models": {"providers": {"huggingface": {"apiKey": GOOD_TOKEN}}}})
    )
    result = invoke("get", "models.providers.huggingface.apiKey")
    assert result.exit_code == 0
    assert result.stdout.strip() == "hf_G…fXYZ"
    assert_secret_absent(GOOD_TOKEN, result.output)


def test_get_shows_the_redis_url_with_its_literal_password_masked(state_dir: Path) -> None:
    """``state.redis.url`` with a password written out: ``config get`` (of the key, of its
    section, of the whole file) shows the URL with ``***`` for the password, never the password."""
    url = "redis://:s3cret-value@redis.internal:6379/0"
    (state_dir / "coderclaw.json").write_text(json.dumps({"state": {"redis": {"url": url}}}))
    for args in (("state.redis.url",), ("state",), ()):
        result = invoke("get", *args)
        assert result.exit_code == 0, result.output
        assert "s3cret-value" not in result.output
        assert "redis://:***@redis.internal:6379/0" in result.stdout


def test_get_of_an_unknown_key_fails(config: Path) -> None:
    """A path neither in the file nor in the defaults: exit 1 with a hint about spelling."""
    result = invoke("get", "gateway.nope")
    assert result.exit_code == 1
    assert "gateway.nope is not set and has no default" in result.stderr


def test_help_says_comments_are_not_kept() -> None:
    """`config set --help` says the file is rewritten as JSON without comments."""
    result = invoke("set", "--help")
    text = " ".join(result.stdout.split())
    assert "rewritten as plain JSON: every key and value is kept, JSON5 comments are not" in text


# -------------------------------------------------------------------------- secrets

GW_SECRET = "gw-Secret-0123456789abcdef"
API_SECRET = "sk-ApiSecret0123456789abcdef"
PASSWORD = "pw-Password0123456789"
SECRET_TEXTS = (GOOD_TOKEN, OTHER_HF := "hf_InsideAString0123456789ab", GW_SECRET, API_SECRET)


@pytest.mark.parametrize(
    ("parts", "secret"),
    [
        (("models", "providers", "huggingface", "apiKey"), True),
        (("gateway", "auth", "token"), True),
        (("env", "vars", "HF_TOKEN"), True),
        (("env", "vars", "OPENAI_API_KEY"), True),
        (("env", "vars", "db_password"), True),
        (("env", "vars", "MY_SECRET"), True),
        (("env", "vars", "AWS_CREDENTIALS"), True),
        (("env", "vars", "HF_HOME"), False),
        (("env", "vars", "EXTRA"), False),
        (("gateway", "auth"), False),
        (("gateway", "port"), False),
        (("models", "providers", "huggingface", "baseUrl"), False),
        (("agents", "defaults", "models", "TOKEN", "alias"), False),
    ],
)
def test_is_secret_path(parts: tuple[Any, ...], secret: bool) -> None:
    """Secret by place: apiKey, gateway.auth.token and env.vars whose name holds TOKEN, KEY,
    SECRET, PASSWORD, PASSWD or CREDENTIAL (any case)."""
    assert is_secret_path(parts) is secret


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        (GOOD_TOKEN, True),
        (f"https://x.example/?t={GOOD_TOKEN}", True),
        (f"Bearer {GOOD_TOKEN}", True),
        ("api_org_AbCdEfGhIjKlMnOpQrSt", True),
        ("hf_short", False),
        ("huggingface/Qwen/Qwen3-8B", False),
        ("chf_AbCdEfGhIjKlMnOpQrSt", False),
        ("${HF_TOKEN}", False),
        ("", False),
    ],
)
def test_holds_token(text: str, holds: bool) -> None:
    """A Hugging Face token (hf_ or api_org_ and 16+ letters or digits) anywhere in a string."""
    assert holds_token(text) is holds


@pytest.mark.parametrize(
    ("value", "parts", "masked"),
    [
        (GOOD_TOKEN, ("models", "providers", "huggingface", "apiKey"), "hf_G…fXYZ"),
        ("${HF_TOKEN}", ("models", "providers", "huggingface", "apiKey"), "${HF_TOKEN}"),
        ("${A}${B}", ("gateway", "auth", "token"), "${A}${B}"),
        ("x${A}", ("gateway", "auth", "token"), "………"),
        ("", ("gateway", "auth", "token"), ""),
        (None, ("gateway", "auth", "token"), None),
        ({"token": GW_SECRET}, ("gateway", "auth"), {"token": "gw-S…cdef"}),
        (
            {"vars": {"OPENAI_API_KEY": API_SECRET, "EXTRA": "x", "NOTE": f"use {GOOD_TOKEN}"}},
            ("env",),
            {"vars": {"OPENAI_API_KEY": "sk-A…cdef", "EXTRA": "x", "NOTE": "use hf_G…fXYZ"}},
        ),
        ([f"a {GOOD_TOKEN} b", 3, True], ("x",), ["a hf_G…fXYZ b", 3, True]),
        ({"port": 1, "bind": "loopback"}, ("gateway",), {"port": 1, "bind": "loopback"}),
        (
            "redis://:s3cret-value@redis:6379/0",
            ("state", "redis", "url"),
            "redis://:***@redis:6379/0",
        ),
        (
            "redis://:${REDIS_PW}@redis:6379/0",
            ("state", "redis", "url"),
            "redis://:${REDIS_PW}@redis:6379/0",
        ),
        (
            {"redis": {"url": "rediss://u:s3cret@h/0"}},
            ("state",),
            {"redis": {"url": "rediss://u:***@h/0"}},
        ),
        ("redis://redis:6379/0", ("state", "redis", "url"), "redis://redis:6379/0"),
    ],
)
def test_mask_secrets(value: Any, parts: tuple[Any, ...], masked: Any) -> None:
    """A whole value at a secret path is masked (a ${VAR} reference is shown as written);
    elsewhere only the token inside a string; everything else is kept."""
    assert mask_secrets(value, parts) == masked


@pytest.mark.parametrize(
    ("parts", "value", "where"),
    [
        (("models", "providers", "huggingface", "apiKey"), GOOD_TOKEN, "apiKey"),
        (("models", "providers", "huggingface"), {"apiKey": GOOD_TOKEN}, "apiKey"),
        (("models",), {"providers": {"huggingface": {"apiKey": "x"}}}, "apiKey"),
        (("gateway",), {"auth": {"token": GW_SECRET}}, "gateway.auth.token"),
        (("env",), {"vars": {"MY_KEY": "v"}}, "env.vars.MY_KEY"),
        (("env", "vars"), {"OK": "1", "HF_TOKEN": GOOD_TOKEN}, "env.vars.HF_TOKEN"),
        (("agents", "defaults", "models"), {"a/b": {"alias": GOOD_TOKEN}}, '["a/b"].alias'),
        (("gateway", "port"), 8080, None),
        (("gateway",), {"auth": {"token": "${CODERCLAW_GATEWAY_TOKEN}"}}, None),
        (("env", "vars"), {"EXTRA": "x", "API_KEY": "${API_KEY}"}, None),
        (("models", "providers", "huggingface", "apiKey"), None, None),
    ],
)
def test_find_secret(parts: tuple[Any, ...], value: Any, where: str | None) -> None:
    """The first literal secret anywhere in a value or subtree, by its full path."""
    found = find_secret(value, parts)
    if where is None:
        assert found is None
    else:
        assert found is not None and format_path(found).endswith(where)


@pytest.fixture
def secret_config(state_dir: Path) -> Path:
    """A config holding a literal secret of every kind (as a careless user might write)."""
    path = state_dir / "coderclaw.json"
    data = {
        "agents": {"defaults": {"models": {"huggingface/a/b": {"alias": f"x {OTHER_HF}"}}}},
        "models": {"providers": {"huggingface": {"apiKey": GOOD_TOKEN, "baseUrl": "https://r"}}},
        "gateway": {"port": 18790, "auth": {"token": GW_SECRET}},
        "env": {"vars": {"OPENAI_API_KEY": API_SECRET, "DB_PASSWORD": PASSWORD, "EXTRA": "x"}},
    }
    path.write_text(json.dumps(data))
    return path


def _ancestors(*leaf: str) -> list[str]:
    return [format_path(tuple(leaf[:n])) for n in range(1, len(leaf) + 1)]


ANCESTORS = sorted(
    {
        *_ancestors("models", "providers", "huggingface", "apiKey"),
        *_ancestors("gateway", "auth", "token"),
        *_ancestors("env", "vars", "OPENAI_API_KEY"),
        *_ancestors("env", "vars", "DB_PASSWORD"),
        *_ancestors("agents", "defaults", "models", "huggingface/a/b", "alias"),
        "",
    }
)


@pytest.mark.parametrize("as_json", [False, True], ids=["plain", "json"])
@pytest.mark.parametrize("path", ANCESTORS, ids=lambda p: p or "(whole file)")
def test_get_of_every_ancestor_of_a_secret_never_prints_it(
    secret_config: Path, path: str, as_json: bool
) -> None:
    """`config get` of the whole file, of each ancestor and of each secret itself, plain and
    --json: every secret is masked; the other values are shown as written."""
    args = ["get", *(["--json"] if as_json else []), *([path] if path else [])]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    for secret in (*SECRET_TEXTS, PASSWORD):
        assert secret not in result.output, f"{secret} printed by config {' '.join(args)}"
    if path in ("", "models.providers.huggingface"):
        assert "https://r" in result.stdout
    if path in ("", "env", "env.vars"):
        assert '"EXTRA": "x"' in result.stdout and "sk-A…cdef" in result.stdout


SECRET_SETS: list[tuple[str, str]] = [
    ("models.providers.huggingface.apiKey", GOOD_TOKEN),
    ("models.providers.huggingface", json.dumps({"apiKey": GOOD_TOKEN})),
    ("models", f"{{providers: {{huggingface: {{apiKey: '{GOOD_TOKEN}'}}}}}}"),
    ("gateway.auth", json.dumps({"token": GW_SECRET})),
    ("gateway", json.dumps({"port": 1234, "auth": {"token": GW_SECRET}})),
    ("env.vars", json.dumps({"EXTRA": "y", "OPENAI_API_KEY": API_SECRET})),
    ("env.vars.OPENAI_API_KEY", API_SECRET),
    ('agents.defaults.models["huggingface/a/b"].alias', f"see {GOOD_TOKEN}"),
]


@pytest.mark.parametrize(("path", "value"), SECRET_SETS, ids=[p for p, _ in SECRET_SETS])
def test_set_of_a_literal_secret_anywhere_is_refused_byte_for_byte(
    config: Path, path: str, value: str
) -> None:
    """`config set` of a secret, or of any subtree holding one: exit 78, the message names the
    secret's path and says to use ${VAR} and the .env file, the file is byte-for-byte unchanged
    and the secret is not echoed."""
    before = config.read_bytes()
    result = invoke("set", path, value)
    assert result.exit_code == 78, result.output
    assert "a secret is not written into the config file" in result.stderr
    assert "${" in result.stderr and ".env" in result.stderr
    assert config.read_bytes() == before
    for secret in SECRET_TEXTS:
        assert secret not in result.output


def test_set_of_a_subtree_with_references_only_is_allowed(config: Path) -> None:
    """A subtree whose secrets are ${VAR} references is written."""
    value = json.dumps({"token": "${CODERCLAW_GATEWAY_TOKEN}"})
    result = invoke("set", "gateway.auth", value)
    assert result.exit_code == 0, result.output
    assert read_json(config)["gateway"]["auth"] == {"token": "${CODERCLAW_GATEWAY_TOKEN}"}
