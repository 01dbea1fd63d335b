"""The one reader of the environment, the ``.env`` file and the config file.

``load_settings`` builds one immutable ``Settings``. Environment precedence, highest first
(a lower source never overrides a higher one):

1. the process environment
2. ``$STATE/.env``
3. the config's ``env.vars``
4. ``env.shellEnv`` (the login shell, run once, for the known keys still missing)
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from dotenv import dotenv_values

from gateway.config import (
    Config,
    aliases_of,
    chain_of,
    parse_json5,
    read_config_text,
    substitute_vars,
    validate_config,
)
from gateway.errors import ConfigError
from gateway.refs import ModelRef, build_alias_map
from gateway.secret import Secret, clean_token

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
        home = Path(env.get("CODERCLAW_HOME") or env.get("HOME") or Path.home()).expanduser()
        state = (
            Path(env["CODERCLAW_STATE_DIR"]).expanduser()
            if env.get("CODERCLAW_STATE_DIR")
            else home / ".coderclaw"
        )
        config = (
            Path(env["CODERCLAW_CONFIG_PATH"]).expanduser()
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
    env: Mapping[str, str]
    hf_token: Secret | None
    token_source: str | None
    gateway_token: Secret | None
    port: int
    host: str
    chain: tuple[ModelRef, ...]
    aliases: Mapping[str, ModelRef]
    config_exists: bool
    warnings: tuple[str, ...] = field(default=())

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    def secrets(self) -> tuple[str, ...]:
        return tuple(s.reveal() for s in (self.hf_token, self.gateway_token) if s is not None)


def current_paths() -> Paths:
    """The paths of this process's environment (no config is read)."""
    return Paths.from_env(os.environ)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (quotes, ``export``, comments, blank lines); missing file → empty."""
    try:
        if not path.is_file():
            if path.exists():
                raise ConfigError("is not a regular file", file=str(path))
            return {}
        with path.open(encoding="utf-8") as fh:
            values = dotenv_values(stream=fh)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot read the env file: {reason}",
            file=str(path),
            hint=f"fix its permissions (chmod 600 {path}) or remove it",
        ) from None
    return {k: v for k, v in values.items() if v is not None}


def read_shell_env(
    env: Mapping[str, str], keys: tuple[str, ...], timeout_s: float
) -> tuple[dict[str, str], str | None]:
    """Run the login shell once and return the wanted keys it sets, plus a warning if it failed."""
    shell = env.get("SHELL") or "/bin/sh"
    try:
        proc = subprocess.run(
            [shell, "-l", "-c", "env -0"],
            capture_output=True,
            timeout=timeout_s,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {}, f"env.shellEnv: the login shell {shell} did not finish in {timeout_s:g}s"
    except OSError as exc:
        return {}, f"env.shellEnv: cannot run the login shell {shell}: {exc.strerror}"
    if proc.returncode != 0:
        return {}, f"env.shellEnv: the login shell {shell} exited with status {proc.returncode}"
    found: dict[str, str] = {}
    for item in proc.stdout.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep and key in keys and value:
            found[key] = value
    return found, None


def hf_token_file(env: Mapping[str, str], home: Path) -> Path:
    """huggingface_hub's token file: HF_TOKEN_PATH, else $HF_HOME/token, else the cache dir."""
    if env.get("HF_TOKEN_PATH"):
        return Path(env["HF_TOKEN_PATH"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "token"
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else home / ".cache"
    return cache / "huggingface" / "token"


def resolve_hf_token(
    config: Config, env: Mapping[str, str], home: Path
) -> tuple[Secret | None, str | None]:
    """The first non-empty of apiKey, the token variables, then the token file."""
    candidates: list[tuple[str, str | None]] = [
        ("config models.providers.huggingface.apiKey", config.hf.api_key),
        *((name, env.get(name)) for name in TOKEN_VARS),
    ]
    for source, raw in candidates:
        token = clean_token(raw)
        if token:
            return Secret(_check_token(token, source)), source
    path = hf_token_file(env, home)
    try:
        token = clean_token(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        token = None
    if token:
        return Secret(_check_token(token, str(path))), str(path)
    return None, None


def _check_token(token: str, source: str) -> str:
    if not all(33 <= ord(ch) < 127 for ch in token):
        raise ConfigError(
            "the token contains spaces or characters that cannot be sent in a header",
            file=source,
            hint="copy the token again from Hugging Face → Settings → Tokens",
        )
    return token


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    bind: str | None = None,
    host: str | None = None,
) -> Settings:
    """Build the immutable ``Settings``; raises ``ConfigError`` for anything unusable."""
    process = dict(os.environ if environ is None else environ)
    paths = Paths.from_env(process)
    file = str(paths.config)
    text = read_config_text(paths.config)
    raw = parse_json5(text, file) if text is not None else {}
    dotenv = read_env_file(paths.env_file)
    # env.vars may itself use ${VAR} from the sources above it.
    raw_env = raw.get("env") if isinstance(raw.get("env"), dict) else {}
    vars_raw = raw_env.get("vars", {}) if isinstance(raw_env, dict) else {}
    config_vars = substitute_vars(vars_raw, merge_layers([process, dotenv]), file, "env.vars")
    if not isinstance(config_vars, dict) or not all(
        isinstance(v, str) for v in config_vars.values()
    ):
        raise ConfigError("expected an object of string values", file=file, path="env.vars")
    layers: list[Mapping[str, str]] = [process, dotenv, config_vars]
    warnings: list[str] = []
    shell_cfg = raw_env.get("shellEnv", {}) if isinstance(raw_env, dict) else {}
    if isinstance(shell_cfg, dict) and shell_cfg.get("enabled") is True:
        merged = merge_layers(layers)
        missing = tuple(k for k in KNOWN_KEYS if not merged.get(k))
        if missing:
            timeout = shell_cfg.get("timeoutMs", 15000)
            timeout_s = timeout / 1000 if isinstance(timeout, int) and timeout > 0 else 15.0
            shell, warning = read_shell_env(merged, missing, timeout_s)
            layers.append(shell)
            if warning:
                warnings.append(warning)
    env = merge_layers(layers)
    data = substitute_vars({k: v for k, v in raw.items() if k != "env"}, env, file)
    if "env" in raw:
        data["env"] = raw["env"] | {"vars": config_vars}
    config = validate_config(data, file, text)

    hf_token, token_source = resolve_hf_token(config, env, paths.home)
    gw_raw = clean_token(env.get("CODERCLAW_GATEWAY_TOKEN")) or clean_token(
        config.gateway.auth.token
    )
    gateway_token = Secret(_check_token(gw_raw, "gateway token")) if gw_raw else None

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

    return Settings(
        paths=paths,
        config=config,
        env=MappingProxyType(dict(env)),
        hf_token=hf_token,
        token_source=token_source,
        gateway_token=gateway_token,
        port=final_port,
        host=final_host,
        chain=chain_of(config),
        aliases=MappingProxyType(build_alias_map(aliases_of(config))),
        config_exists=text is not None,
        warnings=tuple(warnings),
    )


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
