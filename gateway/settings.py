"""The one reader of the environment, the ``.env`` file and the config file.

``load_settings`` builds one immutable ``Settings``. Environment precedence, highest first
(a lower source never overrides a higher one):

1. the process environment
2. ``$STATE/.env``
3. the config's ``env.vars``
4. ``env.shellEnv`` (the login shell, run once, for the known keys still missing)
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dotenv.parser import parse_stream

from gateway.config import (
    Config,
    aliases_of,
    chain_of,
    fallbacks_of,
    parse_json5,
    read_config_text,
    substitute_vars,
    validate_config,
)
from gateway.errors import ConfigError
from gateway.file_safety import file_problems
from gateway.guard import Policy, build_policy
from gateway.ledger.budget import Budgets
from gateway.refs import AliasMap, ModelRef, build_alias_map, parse_ref
from gateway.secret import Secret, clean_token
from gateway.shared.keys import redis_password

TOKEN_VARS = ("HUGGINGFACE_HUB_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
KNOWN_KEYS = (
    *TOKEN_VARS,
    "HF_TOKEN_PATH",
    "HF_HOME",
    "CODERCLAW_GATEWAY_TOKEN",
    "CODERCLAW_GATEWAY_PORT",
)
BIND_HOSTS = {"loopback": "127.0.0.1", "lan": "0.0.0.0"}


@dataclass(frozen=True, slots=True)
class Paths:
    home: Path
    state_dir: Path
    config: Path
    env_file: Path
    cache_file: Path
    logs_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Paths:
        """The paths of ``env``; ``~`` means CODERCLAW_HOME when set, else HOME."""
        user_home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        home = (
            expand_home(env["CODERCLAW_HOME"], user_home)
            if env.get("CODERCLAW_HOME")
            else user_home
        )
        state = (
            expand_home(env["CODERCLAW_STATE_DIR"], home)
            if env.get("CODERCLAW_STATE_DIR")
            else home / ".coderclaw"
        )
        config = (
            expand_home(env["CODERCLAW_CONFIG_PATH"], home)
            if env.get("CODERCLAW_CONFIG_PATH")
            else state / "coderclaw.json"
        )
        return cls(
            home=home,
            state_dir=state,
            config=config,
            env_file=state / ".env",
            cache_file=state / "cache" / "huggingface-models.json",
            logs_dir=state / "logs",
        )


@dataclass(frozen=True)
class Settings:
    """Everything the gateway needs, resolved once."""

    paths: Paths
    config: Config
    env: Mapping[str, str] = field(repr=False)  # holds the token variables: never printed
    hf_token: Secret | None
    token_source: str | None
    gateway_token: Secret | None
    port: int
    host: str
    chain: tuple[ModelRef, ...]
    aliases: AliasMap
    config_exists: bool
    warnings: tuple[str, ...] = field(default=())
    # The configured fallbacks as written (deduplicated); a request that names its own model
    # falls back to these, even one that is also the primary.
    fallbacks: tuple[ModelRef, ...] = field(default=())
    # Every ref the config names (the chain, agents.defaults.models): the refs whose metrics
    # and cooldowns are kept by name, with the catalog's (routing.KnownRefs).
    configured_refs: tuple[ModelRef, ...] = field(default=())

    @functools.cached_property
    def budgets(self) -> Budgets:
        """The spend limits of ``gateway.budget`` (built once: every request checks them)."""
        budget = self.config.gateway.budget
        return Budgets(daily_usd=budget.daily_usd, monthly_usd=budget.monthly_usd)

    @functools.cached_property
    def guard_policy(self) -> Policy:
        """The front door's guards of this config (built once: every request asks)."""
        section = self.config.gateway
        return build_policy(
            section.allowed_origins, section.allowed_hosts, loopback=self.is_loopback
        )

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    def secrets(self) -> tuple[str, ...]:
        """The values never to show: the tokens, and the Redis password of ``state.redis``."""
        tokens = tuple(s.reveal() for s in (self.hf_token, self.gateway_token) if s is not None)
        redis = self.config.state.redis
        password = redis_password(redis.url) if redis is not None else ""
        return (*tokens, password) if password else tokens


def expand_home(raw: str, home: Path) -> Path:
    """``~`` and ``~/x`` relative to ``home`` (not the process's HOME); other paths as given."""
    if raw == "~":
        return home
    if raw.startswith("~/"):
        return home / raw[2:]
    return Path(raw)


def current_paths() -> Paths:
    """The paths of this process's environment (no config is read)."""
    return Paths.from_env(os.environ)


def current_environ() -> dict[str, str]:
    """A copy of this process's environment, for commands that must work with a broken config
    (``gateway stop``, ``status``, ``uninstall``)."""
    return dict(os.environ)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (quotes, ``export``, comments, blank lines); missing file → empty."""
    try:
        if not path.is_file():
            if path.exists():
                raise ConfigError("is not a regular file", file=str(path))
            return {}
        with path.open(encoding="utf-8-sig") as fh:
            # No ${VAR} expansion: it would read os.environ and break single-quoted values.
            bindings = list(parse_stream(fh))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot read the env file: {reason}",
            file=str(path),
            hint=f"fix its permissions (chmod 600 {path}) or remove it",
        ) from None
    for binding in bindings:
        # python-dotenv skips such a line with a warning: an unclosed quote would silently
        # drop the token. The line's text is not shown: it may hold a secret.
        if binding.error:
            raise ConfigError(
                "this line is not KEY=value (an unclosed quote?)",
                file=str(path),
                line=binding.original.line,
                hint="fix or remove the line; quote values that hold spaces or #",
            )
    return {b.key: b.value for b in bindings if b.key is not None and b.value is not None}


def read_shell_env(
    env: Mapping[str, str], keys: tuple[str, ...], timeout_s: float
) -> tuple[dict[str, str], str | None]:
    """Run the login shell once and return the wanted keys it sets, plus a warning if it failed.

    The shell runs in its own session so that, on timeout, everything it started is killed.
    """
    shell = env.get("SHELL") or "/bin/sh"
    try:
        proc = subprocess.Popen(
            [shell, "-l", "-c", "env -0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        return {}, (
            f"env.shellEnv: cannot run the login shell {shell}: {exc.strerror or exc}; "
            "set SHELL or disable env.shellEnv"
        )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        return {}, (
            f"env.shellEnv: the login shell {shell} did not finish in {timeout_s:g}s; "
            "raise env.shellEnv.timeoutMs or put the variables in the .env file"
        )
    if proc.returncode != 0:
        return {}, (
            f"env.shellEnv: the login shell {shell} exited with status {proc.returncode}; "
            "check your shell profile or put the variables in the .env file"
        )
    found: dict[str, str] = {}
    for item in out.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep and key in keys and value:
            found[key] = value
    return found, None


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.stdout is not None:
        proc.stdout.close()
    proc.wait()


def hf_token_file(env: Mapping[str, str], home: Path) -> Path:
    """huggingface_hub's token file: HF_TOKEN_PATH, else $HF_HOME/token, else the cache dir."""
    if env.get("HF_TOKEN_PATH"):
        return expand_home(env["HF_TOKEN_PATH"], home)
    if env.get("HF_HOME"):
        return expand_home(env["HF_HOME"], home) / "token"
    cache = (
        expand_home(env["XDG_CACHE_HOME"], home) if env.get("XDG_CACHE_HOME") else home / ".cache"
    )
    return cache / "huggingface" / "token"


API_KEY_PATH = "models.providers.huggingface.apiKey"
API_KEY_SOURCE = f"config {API_KEY_PATH}"
_HF_HINT = "copy the token again from Hugging Face → Settings → Tokens"


def resolve_hf_token(
    config: Config, env: Mapping[str, str], home: Path, *, config_file: str | None = None
) -> tuple[Secret | None, str | None]:
    """The first non-empty of apiKey, the token variables, then the token file.

    Returns the token and where it came from (a label; never the token).
    """
    token = clean_token(config.hf.api_key)
    if token:
        _check_token(token, "the Hugging Face token", _HF_HINT, file=config_file, path=API_KEY_PATH)
        return Secret(token), API_KEY_SOURCE
    for name in TOKEN_VARS:
        token = clean_token(env.get(name))
        if token:
            _check_token(token, f"the Hugging Face token in {name}", _HF_HINT)
            return Secret(token), name
    path = hf_token_file(env, home)
    try:
        token = clean_token(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        token = None
    if token:
        _check_token(token, "the Hugging Face token", _HF_HINT, file=str(path))
        return Secret(token), str(path)
    return None, None


def _check_token(
    token: str, what: str, hint: str, *, file: str | None = None, path: str | None = None
) -> None:
    """A token must fit in an HTTP header; the error never shows the token."""
    if not all(33 <= ord(ch) < 127 for ch in token):
        raise ConfigError(
            f"{what} contains spaces or characters that cannot be sent in an HTTP header",
            file=file,
            path=path,
            hint=hint,
        )


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    bind: str | None = None,
    host: str | None = None,
    check_files: bool = True,
) -> Settings:
    """Build the immutable ``Settings``; raises ``ConfigError`` for anything unusable.

    The layers, in order: the paths, who may write the files (``check_files``: only
    ``doctor`` turns it off, to report every file problem on its own), the config file's
    text, the environment layers, the validated config, the tokens, the listen address.
    """
    process = dict(os.environ if environ is None else environ)
    paths = Paths.from_env(process)
    warnings = check_file_safety(paths) if check_files else []
    source = read_config_source(paths.config)
    env, env_raw = resolve_environment(process, read_env_file(paths.env_file), source, warnings)
    config = load_config(source, env, env_raw)
    hf_token, token_source = resolve_hf_token(config, env, paths.home, config_file=source.file)
    final_host, final_port = resolve_listen(config, env, source.file, port, bind, host)
    return Settings(
        paths=paths,
        config=config,
        env=MappingProxyType(dict(env)),
        hf_token=hf_token,
        token_source=token_source,
        gateway_token=resolve_gateway_token(config, env, source.file),
        port=final_port,
        host=final_host,
        chain=chain_of(config),
        fallbacks=fallbacks_of(config),
        aliases=build_alias_map(aliases_of(config)),
        configured_refs=configured_refs_of(config),
        config_exists=source.text is not None,
        warnings=tuple(warnings),
    )


def configured_refs_of(config: Config) -> tuple[ModelRef, ...]:
    """The chain, then every ref of ``agents.defaults.models``, without duplicates."""
    listed = (parse_ref(key) for key in config.agents.defaults.models)
    return tuple(dict.fromkeys((*chain_of(config), *listed)))


def check_file_safety(paths: Paths) -> list[str]:
    """The warnings about the state dir, config and ``.env``; a ``ConfigError`` (exit 78)
    naming the file and the fix when another user could write one of them."""
    problems = file_problems(paths.state_dir, paths.config, paths.env_file)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more: see `coderclaw doctor`)" if len(errors) > 1 else ""
        raise ConfigError(first.detail + more, file=first.path, hint=first.fix)
    return [f"{p.message}; fix: {p.fix}" for p in problems]


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """The config file as read: its path, text (None when absent) and parsed JSON5."""

    file: str
    text: str | None
    raw: dict[str, Any]


def read_config_source(path: Path) -> ConfigSource:
    text = read_config_text(path)
    raw = parse_json5(text, str(path)) if text is not None else {}
    return ConfigSource(str(path), text, raw)


def resolve_environment(
    process: Mapping[str, str],
    dotenv: Mapping[str, str],
    source: ConfigSource,
    warnings: list[str],
) -> tuple[dict[str, str], Any]:
    """The merged environment (process > ``.env`` > ``env.vars`` > ``env.shellEnv``) and the
    config's ``env`` section with its ``${VAR}`` substituted.

    The env section is checked first (the shell must not run for a broken config); its strings
    may use ${VAR} from the two sources above it. The login shell runs only when enabled and a
    known key is still missing; its failure is a warning.
    """
    file, text = source.file, source.text
    env_raw = substitute_vars(
        source.raw.get("env", {}), merge_layers([process, dotenv]), file, "env", text=text
    )
    env_section = validate_config({"env": env_raw}, file, text).env
    layers: list[Mapping[str, str]] = [process, dotenv, dict(env_section.vars)]
    shell_cfg = env_section.shell_env
    if shell_cfg.enabled:
        merged = merge_layers(layers)
        missing = tuple(k for k in KNOWN_KEYS if not merged.get(k))
        if missing:
            shell, warning = read_shell_env(merged, missing, shell_cfg.timeout_ms / 1000)
            layers.append(shell)
            if warning:
                warnings.append(warning)
    return merge_layers(layers), env_raw


def load_config(source: ConfigSource, env: Mapping[str, str], env_raw: Any) -> Config:
    """The validated ``Config``: every ``${VAR}`` outside ``env`` from the merged environment."""
    raw = source.raw
    data = substitute_vars(
        {k: v for k, v in raw.items() if k != "env"}, env, source.file, text=source.text
    )
    if "env" in raw:
        data["env"] = env_raw
    return validate_config(data, source.file, source.text)


def resolve_gateway_token(config: Config, env: Mapping[str, str], file: str) -> Secret | None:
    """CODERCLAW_GATEWAY_TOKEN, else ``gateway.auth.token``; None when neither is set."""
    gw_env = clean_token(env.get("CODERCLAW_GATEWAY_TOKEN"))
    gw_raw = gw_env or clean_token(config.gateway.auth.token)
    if not gw_raw:
        return None
    _check_token(
        gw_raw,
        "the gateway token" + (" in CODERCLAW_GATEWAY_TOKEN" if gw_env else ""),
        "use printable ASCII without spaces for the gateway token",
        file=None if gw_env else file,
        path=None if gw_env else "gateway.auth.token",
    )
    return Secret(gw_raw)


def resolve_listen(
    config: Config,
    env: Mapping[str, str],
    file: str,
    port: int | None,
    bind: str | None,
    host: str | None,
) -> tuple[str, int]:
    """(host, port): ``--port`` > CODERCLAW_GATEWAY_PORT > ``gateway.port``; ``--bind``/
    ``--host`` over ``gateway.bind``/``gateway.host``."""
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port number (1-65535)", hint="pass 1-65535")
    final_port = port if port is not None else _env_port(env) or config.gateway.port
    bind_mode = bind or config.gateway.bind
    final_host = host or (config.gateway.host if bind_mode == "custom" else None)
    if bind_mode not in ("loopback", "lan", "custom"):
        raise ConfigError(f"unknown bind mode {bind_mode!r}; expected loopback, lan or custom")
    if final_host is None:
        if bind_mode == "custom":
            raise ConfigError(
                "bind is 'custom' but no host is set",
                file=file,
                path="gateway.host",
                hint="set gateway.host (or pass --host)",
            )
        final_host = BIND_HOSTS[bind_mode]
    return final_host, final_port


def merge_layers(layers: list[Mapping[str, str]]) -> dict[str, str]:
    """One dict of the layers; the first layer given has the highest precedence."""
    merged: dict[str, str] = {}
    for layer in reversed(layers):
        merged.update(layer)
    return merged


def _env_port(env: Mapping[str, str]) -> int | None:
    raw = env.get("CODERCLAW_GATEWAY_PORT")
    if not raw:
        return None
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(
            f"CODERCLAW_GATEWAY_PORT={raw!r} is not a port number (1-65535)",
            hint="fix or unset CODERCLAW_GATEWAY_PORT",
        )
    return int(raw)
