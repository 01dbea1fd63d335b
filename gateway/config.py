"""The configuration file: JSON5 text → ``${VAR}`` substitution → a validated, frozen ``Config``.

Pure apart from reading the file. Every error is a ``ConfigError`` naming the file, the dotted
path, the line when it can be found, and what was expected.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import json5
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from gateway.config_routing import BreakerSection, HedgeSection, RescueMode
from gateway.errors import ConfigError, RefError
from gateway.guard import normalize_host_name, normalize_origin, split_host
from gateway.ledger.config import BudgetConfig, ResponsesConfig, UsageConfig
from gateway.refs import ModelRef, is_chain_name, parse_ref
from gateway.shared.section import StateSection


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class ModelChain(_Section):
    primary: str | None = None
    # JSON5 gives a list; strict mode alone would refuse a list for a tuple.
    fallbacks: Annotated[tuple[StrictStr, ...], Field(strict=False)] = ()


class ModelOptions(_Section):
    alias: str | None = None
    # false: the model is known to refuse an assistant prefill (mid-stream rescue restarts).
    prefill: bool | None = None


class AgentDefaults(_Section):
    model: ModelChain = ModelChain()
    models: dict[str, ModelOptions] = Field(default_factory=dict)


class Agents(_Section):
    defaults: AgentDefaults = AgentDefaults()


class Discovery(_Section):
    enabled: bool = True
    refresh_minutes: float = Field(60.0, gt=0)
    timeout_seconds: float = Field(30.0, gt=0)


def upstream_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the router's or the Hub's base URL, or None when it can.

    The token goes to that URL in an ``Authorization`` header: credentials in the URL itself
    are refused (they made every request fail, and they would sit in the file), and plain
    ``http://`` only to a loopback host (127.0.0.0/8, ::1, localhost), where nothing crosses
    the network. The message never repeats the URL: it may hold a password.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        return "expected an http:// or https:// URL with a valid host and port"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return (
            "credentials in the URL (user:password@) are not allowed: the token is sent in "
            "the Authorization header; remove them from the URL"
        )
    if not host:
        return "expected an http:// or https:// URL with a host"
    if parts.scheme.lower() == "http" and not _is_loopback(host):
        return (
            f"plain http:// to {host} would send the token unencrypted; use https:// "
            "(http:// is only allowed to 127.0.0.1, ::1 or localhost)"
        )
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HuggingFace(_Section):
    base_url: str = Field("https://router.huggingface.co/v1", pattern=r"^https?://\S+$")
    hub_url: str = Field("https://huggingface.co", pattern=r"^https?://\S+$")
    api_key: str | None = Field(None, repr=False)
    discovery: Discovery = Discovery()

    @field_validator("base_url", "hub_url")
    @classmethod
    def _safe_url(cls, url: str) -> str:
        problem = upstream_url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url


class Providers(_Section):
    huggingface: HuggingFace = HuggingFace()


class ModelsSection(_Section):
    providers: Providers = Providers()


class Auth(_Section):
    token: str | None = Field(None, repr=False)


class Timeouts(_Section):
    connect_seconds: float = Field(5.0, gt=0)
    first_token_seconds: float = Field(15.0, gt=0)
    idle_seconds: float = Field(30.0, gt=0)
    total_seconds: float = Field(600.0, gt=0)
    # Client connections: an idle keep-alive connection is closed after keepAliveSeconds; a new
    # connection must have sent its first request's headers within headerSeconds.
    keep_alive_seconds: float = Field(30.0, gt=0, le=75)
    header_seconds: float = Field(10.0, gt=0, le=75)


class Limits(_Section):
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    # None: sized to the open-file limit (gateway.service.connections.default_max_connections).
    max_connections: int | None = Field(None, ge=8)


class MetricsSection(_Section):
    public: bool = False  # true: /metrics needs no gateway token (a local Prometheus)


def _origins(values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for value in values:
        origin = normalize_origin(value)
        if origin is None:
            raise ValueError(
                f"{value!r} is not an origin; write scheme://host[:port] with no path, "
                "such as http://localhost:3000"
            )
        out.append(origin)
    return tuple(out)


def _hosts(values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for value in values:
        parsed = split_host(value)
        if parsed is None or parsed[1] or ":" in value:
            raise ValueError(
                f"{value!r} is not a host name; write a name without a port, such as "
                "host.docker.internal (IP addresses are always answered)"
            )
        out.append(normalize_host_name(parsed[0]))
    return tuple(out)


class AnthropicSection(_Section):
    """``gateway.anthropic``: Messages API model names (globs, in order) → alias / ref /
    ``coderclaw``, so the ``claude-…`` names Claude Code sends are served by the chain."""

    model_map: dict[str, str] = Field(default_factory=lambda: {"*": "coderclaw"})


class GatewaySection(_Section):
    port: int = Field(18789, ge=1, le=65535)
    bind: Literal["loopback", "lan", "custom"] = "loopback"
    host: str | None = None
    auth: Auth = Auth()
    timeouts: Timeouts = Timeouts()
    retries: int = Field(1, ge=0, le=10)
    max_retry_wait_seconds: float = Field(10.0, ge=0)
    limits: Limits = Limits()
    # Browser pages allowed to call the gateway, and extra Host names answered on loopback.
    allowed_origins: Annotated[
        tuple[StrictStr, ...], Field(strict=False), AfterValidator(_origins)
    ] = ()
    allowed_hosts: Annotated[
        tuple[StrictStr, ...], Field(strict=False), AfterValidator(_hosts)
    ] = ()
    metrics: MetricsSection = MetricsSection()
    # At most 25: the service's stop timeout (TimeoutStopSec, ExitTimeOut) is 30 s and the
    # drain takes up to drainSeconds + 2 s.
    drain_seconds: float = Field(10.0, ge=0, le=25)
    breaker: BreakerSection = BreakerSection()
    hedge: HedgeSection = HedgeSection()
    rescue: RescueMode = "continue"
    usage: UsageConfig = UsageConfig()
    budget: BudgetConfig = BudgetConfig()
    responses: ResponsesConfig = ResponsesConfig()
    anthropic: AnthropicSection = AnthropicSection()


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
    state: StateSection = StateSection()  # several replicas through Redis (SPEC §13)

    @property
    def hf(self) -> HuggingFace:
        return self.models.providers.huggingface


_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_config_text(path: Path) -> str | None:
    """The file's text, None when it does not exist; a ``ConfigError`` when it cannot be read."""
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            # A FIFO or a device: reading it could block the start or a reload for ever.
            raise ConfigError(
                "is not a regular file", file=str(path), hint="replace it with a config file"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(
            "is a directory, not a config file",
            file=str(path),
            hint="remove it or point CODERCLAW_CONFIG_PATH at a file",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file: {exc.strerror or exc}",
            file=str(path),
            hint="check the file's permissions",
        ) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded)",
            file=str(path),
            line=data[: exc.start].count(b"\n") + 1,
            hint="save the file as UTF-8",
        ) from None


def parse_json5(text: str, file: str) -> dict[str, Any]:
    """Parse JSON5 text into a dict, or raise a ``ConfigError`` with the line."""
    try:
        data = json5.loads(text) if text.strip() else {}
    except RecursionError:
        raise ConfigError(
            "the file is nested too deeply to be a config", file=file, hint="fix the file"
        ) from None
    except ValueError as exc:
        if _only_comments(text):
            return {}
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
            f"expected an object at the top level, got {_kind(data)}",
            file=file,
            hint="the config file is one JSON5 object: { agents: {…}, models: {…}, … }",
        )
    return data


def _only_comments(text: str) -> bool:
    """True when the text holds nothing but comments (an empty config being written)."""
    try:
        return bool(json5.loads(text + "\n{}") == {})
    except ValueError:
        return False


def substitute_vars(
    data: Any, env: Mapping[str, str], file: str, path: str = "", *, text: str | None = None
) -> Any:
    """Replace ``${VAR}`` in every string; ``$${VAR}`` stays literal as ``${VAR}``.

    ``path`` is the dotted path of ``data`` in the file; ``text`` (the file's text) lets an
    error name the line.
    """
    prefix = tuple(path.split(".")) if path else ()
    return _substitute(data, env, file, prefix, text)


def _substitute(
    data: Any, env: Mapping[str, str], file: str, loc: tuple[Any, ...], text: str | None
) -> Any:
    if isinstance(data, dict):
        return {k: _substitute(v, env, file, (*loc, k), text) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, env, file, (*loc, i), text) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def replace(m: re.Match[str]) -> str:
        escaped, name = m.group(1), m.group(2)
        if escaped:
            return "${" + name + "}"
        path = dotted_path(loc) or None
        line = _find_text_line(text, _find_line(text, loc), m.group(0))
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(
                f"${{{name}}} is not a valid variable name; expected uppercase letters, digits "
                "and '_'",
                file=file,
                path=path,
                line=line,
                hint="rename the variable, or write $${…} for a literal ${…}",
            )
        value = env.get(name)
        if value is None:
            raise ConfigError(
                f"environment variable {name} is not set",
                file=file,
                path=path,
                line=line,
                hint=f"set {name} in the environment or in the state dir's .env file, or "
                "write the value into the config",
            )
        return value

    return _VAR.sub(replace, data)


def dotted_path(loc: tuple[Any, ...]) -> str:
    """``('agents', 'defaults', 'models', 'huggingface/a/b', 'alias')`` →
    ``agents.defaults.models["huggingface/a/b"].alias``; list indexes as ``[i]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f'["{part}"]'
    return out


def _find_line(text: str | None, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line of the last key in ``loc`` (JSON5 parsers give no positions).

    The keys are looked for in order, each after the line of the one before, so that a key
    that appears in several sections is found in the right one.
    """
    if not text:
        return None
    lines = text.splitlines()
    start, found = 0, None
    for key in (k for k in loc if isinstance(k, str)):
        pattern = re.compile(r"""(?:^|[\s{,])["']?""" + re.escape(key) + r"""["']?\s*:""")
        for number in range(start, len(lines)):
            if pattern.search(lines[number]):
                start, found = number, number + 1
                break
        else:
            break
    return found


def _find_text_line(text: str | None, after: int | None, needle: str) -> int | None:
    """The first line at or after line ``after`` (1-based) that contains ``needle``."""
    if not text or not needle:
        return after
    lines = text.splitlines()
    for start in ((after or 1) - 1, 0):
        for number in range(start, len(lines)):
            if needle in lines[number]:
                return number + 1
    return after


def _kind(value: Any) -> str:
    """A value's type in the words of JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema class that sits at ``loc`` in the file, if any."""
    current: Any = Config
    for key in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if key in (n, f.alias)), None)
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _describe(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        section = _section_at(loc[:-1])
        if section is None:
            return "unknown key"
        keys = ", ".join(f.alias or n for n, f in section.model_fields.items())
        return f"unknown key; expected one of: {keys}"
    got = _kind(err.get("input"))
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"expected {err['ctx']['expected']}, got {err.get('input')!r}"
    if kind == "string_pattern_mismatch" and "https?" in str(err.get("ctx", {}).get("pattern")):
        return f"expected an http:// or https:// URL, got {err.get('input')!r}"
    msg = str(err["msg"])
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if msg.startswith("Input should be "):
        return f"expected a value {msg.removeprefix('Input should be ')}, got {err.get('input')!r}"
    return msg


def validate_config(data: dict[str, Any], file: str, text: str | None = None) -> Config:
    """A ``Config`` from parsed data, with every model ref checked."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = tuple(first["loc"])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(
            _describe(first) + more,
            file=file,
            path=dotted_path(loc) or None,
            line=_find_line(text, loc),
            hint="see the configuration reference in the README",
        ) from None
    check_refs(config, file, text)
    return config


def check_refs(config: Config, file: str, text: str | None = None) -> None:
    """Every model ref of the config parses; a ``ConfigError`` names the first that does not."""
    defaults = config.agents.defaults
    base = ("agents", "defaults")
    places: list[tuple[tuple[Any, ...], str]] = []
    if defaults.model.primary is not None:
        places.append(((*base, "model", "primary"), defaults.model.primary))
    fallbacks = defaults.model.fallbacks
    places += [((*base, "model", "fallbacks", i), r) for i, r in enumerate(fallbacks)]
    places += [((*base, "models", k), k) for k in defaults.models]
    for loc, ref in places:
        try:
            parse_ref(ref)
        except RefError as exc:
            raise ConfigError(
                exc.reason,
                file=file,
                path=dotted_path(loc),
                line=_find_text_line(text, _find_line(text, loc), ref),
                hint="use huggingface/<org>/<model>[:fastest|:cheapest|:<provider>]",
            ) from None
    _check_aliases(config, file, text)
    _check_model_map(config, file, text)


def _check_model_map(config: Config, file: str, text: str | None) -> None:
    """Each ``gateway.anthropic.modelMap`` target is a chain name, an alias or a ref."""
    aliases = {
        (opts.alias or "").strip().lower() for opts in config.agents.defaults.models.values()
    }
    for glob, target in config.gateway.anthropic.model_map.items():
        if is_chain_name(target) or target.strip().lower() in aliases:
            continue
        try:
            parse_ref(target)
        except RefError as exc:
            loc = ("gateway", "anthropic", "modelMap", glob)
            raise ConfigError(
                f"{target!r} is not a chain name, an alias or a model ref ({exc.reason})",
                file=file,
                path=f'gateway.anthropic.modelMap["{glob}"]',
                line=_find_line(text, loc),
                hint='map to "coderclaw" (the chain), an alias, or huggingface/<org>/<model>',
            ) from None


def _check_aliases(config: Config, file: str, text: str | None) -> None:
    """Aliases match case-insensitively, so one alias must not name two models."""
    owners: dict[str, str] = {}
    for key, opts in config.agents.defaults.models.items():
        alias = (opts.alias or "").strip()
        if not alias:
            continue
        other = owners.setdefault(alias.lower(), key)
        if parse_ref(other) != parse_ref(key):
            loc = ("agents", "defaults", "models", key, "alias")
            raise ConfigError(
                f"alias {alias!r} is already used for {other!r} (aliases match case-insensitively)",
                file=file,
                path=dotted_path(loc),
                line=_find_line(text, loc),
                hint="give each model its own alias",
            )


def fallbacks_of(config: Config) -> tuple[ModelRef, ...]:
    """The configured fallbacks in order, duplicates dropped (the primary may be among them)."""
    return tuple(dict.fromkeys(parse_ref(text) for text in config.agents.defaults.model.fallbacks))


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
    """``(alias, ref)`` of every configured model that has an alias, as written."""
    return [
        (opts.alias, parse_ref(key))
        for key, opts in config.agents.defaults.models.items()
        if opts.alias
    ]


DEFAULT_PRIMARY = "huggingface/deepseek-ai/DeepSeek-R1"
