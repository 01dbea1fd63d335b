"""The configuration file: JSON5 text → ``${VAR}`` substitution → a validated, frozen ``Config``.

Pure apart from reading the file. Every error is a ``ConfigError`` naming the file, the dotted
path, the line when it can be found, and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import json5
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from gateway.errors import ConfigError, RefError
from gateway.refs import ModelRef, parse_ref


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class ModelChain(_Section):
    primary: str | None = None
    fallbacks: tuple[str, ...] = ()


class ModelOptions(_Section):
    alias: str | None = None


class AgentDefaults(_Section):
    model: ModelChain = ModelChain()
    models: dict[str, ModelOptions] = Field(default_factory=dict)


class Agents(_Section):
    defaults: AgentDefaults = AgentDefaults()


class Discovery(_Section):
    enabled: bool = True
    refresh_minutes: float = Field(60.0, gt=0)
    timeout_seconds: float = Field(30.0, gt=0)


class HuggingFace(_Section):
    base_url: str = Field("https://router.huggingface.co/v1", pattern=r"^https?://\S+$")
    hub_url: str = Field("https://huggingface.co", pattern=r"^https?://\S+$")
    api_key: str | None = None
    discovery: Discovery = Discovery()


class Providers(_Section):
    huggingface: HuggingFace = HuggingFace()


class ModelsSection(_Section):
    providers: Providers = Providers()


class Auth(_Section):
    token: str | None = None


class Timeouts(_Section):
    connect_seconds: float = Field(5.0, gt=0)
    first_token_seconds: float = Field(15.0, gt=0)
    idle_seconds: float = Field(30.0, gt=0)
    total_seconds: float = Field(600.0, gt=0)


class Limits(_Section):
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)


class GatewaySection(_Section):
    port: int = Field(18789, ge=1, le=65535)
    bind: Literal["loopback", "lan", "custom"] = "loopback"
    host: str | None = None
    auth: Auth = Auth()
    timeouts: Timeouts = Timeouts()
    retries: int = Field(1, ge=0, le=10)
    max_retry_wait_seconds: float = Field(10.0, ge=0)
    limits: Limits = Limits()
    drain_seconds: float = Field(10.0, ge=0)


class ShellEnv(_Section):
    enabled: bool = False
    timeout_ms: int = Field(15000, gt=0)


class EnvSection(_Section):
    vars: dict[str, str] = Field(default_factory=dict)
    shell_env: ShellEnv = ShellEnv()


class Logging(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"


class Config(_Section):
    """The whole file; every key optional."""

    agents: Agents = Agents()
    models: ModelsSection = ModelsSection()
    gateway: GatewaySection = GatewaySection()
    env: EnvSection = EnvSection()
    logging: Logging = Logging()

    @property
    def hf(self) -> HuggingFace:
        return self.models.providers.huggingface


_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def read_config_text(path: Path) -> str | None:
    """The file's text, None when it does not exist; a ``ConfigError`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(
            "is a directory, not a config file",
            file=str(path),
            hint="remove it or point CODERCLAW_CONFIG_PATH at a file",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot read the config file: {reason}",
            file=str(path),
            hint="check the file's permissions and that it is UTF-8 text",
        ) from None


def parse_json5(text: str, file: str) -> dict[str, Any]:
    """Parse JSON5 text into a dict, or raise a ``ConfigError`` with the line."""
    try:
        data = json5.loads(text) if text.strip() else {}
    except ValueError as exc:
        msg = str(exc)
        m = re.match(r"<string>:(\d+)\s*(.*)", msg)
        line = int(m.group(1)) if m else None
        raise ConfigError(
            f"JSON5 syntax error: {m.group(2) if m else msg}",
            file=file,
            line=line,
            hint="fix the syntax (JSON5 allows comments, unquoted keys and trailing commas)",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected an object at the top level, got {type(data).__name__}", file=file
        )
    return data


def substitute_vars(data: Any, env: Mapping[str, str], file: str, path: str = "") -> Any:
    """Replace ``${VAR}`` in every string; ``$${VAR}`` stays literal as ``${VAR}``."""
    if isinstance(data, dict):
        return {k: substitute_vars(v, env, file, _join(path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_vars(v, env, file, f"{path}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def replace(m: re.Match[str]) -> str:
        escaped, name = m.group(1), m.group(2)
        if escaped:
            return "${" + name + "}"
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(
                f"${{{name}}} is not a valid variable name (uppercase letters, digits, '_')",
                file=file,
                path=path or None,
            )
        value = env.get(name)
        if value is None:
            raise ConfigError(
                f"environment variable {name} is not set",
                file=file,
                path=path or None,
                hint=f"set {name} in the environment or in the state dir's .env file, or "
                "write the value into the config",
            )
        return value

    return _VAR.sub(replace, data)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _find_line(text: str | None, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line of the last key in ``loc`` (JSON5 parsers give no positions)."""
    if not text:
        return None
    keys = [k for k in loc if isinstance(k, str)]
    if not keys:
        return None
    pattern = re.compile(r"""(?:^|[\s{,])["']?""" + re.escape(keys[-1]) + r"""["']?\s*:""")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.search(line):
            return number
    return None


def _describe(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        return f"expected {err['ctx']['expected']}"
    if kind.endswith("_type") or kind == "model_type" or kind == "dict_type":
        expected = kind.removesuffix("_type").replace("model", "object").replace("dict", "object")
        return f"expected {expected}, got {type(err['input']).__name__}"
    return str(err["msg"])


def validate_config(data: dict[str, Any], file: str, text: str | None = None) -> Config:
    """A ``Config`` from parsed data, with every model ref checked."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = tuple(first["loc"])
        dotted = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc)
        dotted = dotted.replace(".[", "[")
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(
            _describe(first) + more,
            file=file,
            path=dotted or None,
            line=_find_line(text, loc),
            hint="see the configuration reference in the README",
        ) from None
    check_refs(config, file, text)
    return config


def check_refs(config: Config, file: str, text: str | None = None) -> None:
    defaults = config.agents.defaults
    places: list[tuple[str, str]] = []
    if defaults.model.primary is not None:
        places.append(("agents.defaults.model.primary", defaults.model.primary))
    places += [
        (f"agents.defaults.model.fallbacks[{i}]", r) for i, r in enumerate(defaults.model.fallbacks)
    ]
    places += [(f'agents.defaults.models["{k}"]', k) for k in defaults.models]
    for path, ref in places:
        try:
            parse_ref(ref)
        except RefError as exc:
            raise ConfigError(
                exc.reason,
                file=file,
                path=path,
                line=_find_ref_line(text, ref),
                hint="use huggingface/<org>/<model>[:fastest|:cheapest|:<provider>]",
            ) from None


def _find_ref_line(text: str | None, ref: str) -> int | None:
    if not text or not ref:
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        if ref in line:
            return number
    return None


def chain_of(config: Config) -> tuple[ModelRef, ...]:
    """The configured chain, primary first, duplicates dropped; default when none is set."""
    model = config.agents.defaults.model
    raw = [model.primary or DEFAULT_PRIMARY, *model.fallbacks]
    chain: list[ModelRef] = []
    for text in raw:
        ref = parse_ref(text)
        if ref not in chain:
            chain.append(ref)
    return tuple(chain)


def aliases_of(config: Config) -> list[tuple[str, ModelRef]]:
    return [
        (opts.alias, parse_ref(key))
        for key, opts in config.agents.defaults.models.items()
        if opts.alias
    ]


DEFAULT_PRIMARY = "huggingface/deepseek-ai/DeepSeek-R1"
