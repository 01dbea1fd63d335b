"""``coderclaw doctor``: one line per check, each with what to do when it is not ok.

The checks: who may write (or read) the state dir, config and ``.env``, config valid, token
present and accepted by the Hub, router reachable, catalog cache age, port free or the gateway
answering ``/healthz``, service installed and running.
``fail`` means the gateway will not work as configured (exit 1); ``warn`` means it works but
something deserves attention; ``skip`` means a check could not run because an earlier one
failed. The token is never shown, only masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gateway.discovery import fetch_models, load_cached_catalog
from gateway.errors import ConfigError, GatewayError, UpstreamError
from gateway.file_safety import file_problems
from gateway.hub import PERMISSION_FIX, TokenStatus, check_token
from gateway.secret import mask
from gateway.settings import Paths, Settings
from gateway.upstream import fetch, one_off_session

if TYPE_CHECKING:
    import aiohttp

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


_MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def format_check(check: Check) -> str:
    line = f"[{_MARKS[check.status]}] {check.name:<8} {check.detail}"
    return f"{line}\n{'':16}→ {check.fix}" if check.fix else line


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0


def catalog_age_check(fetched_at: float | None, refresh_minutes: float, now: float) -> Check:
    """Pure: how old the cached discovery is, against the refresh interval."""
    if fetched_at is None:
        return Check(
            "catalog",
            "warn",
            "no cached model list yet: the gateway starts with the built-in list",
            "run `coderclaw models list --refresh` (or start the gateway) to fetch it",
        )
    age = max(now - fetched_at, 0.0)
    text = _age(age)
    if age > 2 * refresh_minutes * 60 + 300:
        return Check(
            "catalog",
            "warn",
            f"the cached model list is {text} old (refresh every {refresh_minutes:g} min)",
            "run `coderclaw models list --refresh`, or check the gateway is running",
        )
    return Check("catalog", "ok", f"cached model list is {text} old")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def check_files(paths: Paths) -> list[Check]:
    """One check per problem with the state dir, the config or the ``.env`` (who may write or
    read them), each with the command that fixes it; one ``ok`` line when there is none."""
    problems = file_problems(paths.state_dir, paths.config, paths.env_file)
    if not problems:
        return [Check("files", "ok", "the state dir, config and .env are writable by you only")]
    return [
        Check("files", "fail" if p.severity == "error" else "warn", p.message, p.fix)
        for p in problems
    ]


def config_failure(exc: ConfigError) -> Check:
    return Check("config", "fail", exc.message, exc.hint or "fix the file, then run doctor again")


def check_config(settings: Settings) -> Check:
    where = str(settings.paths.config)
    if not settings.config_exists:
        return Check(
            "config",
            "warn",
            f"no config file at {where}: the defaults apply",
            "run `coderclaw onboard --auth-choice huggingface-api-key`",
        )
    chain = ", ".join(str(r) for r in settings.chain)
    return Check("config", "ok", f"{where} is valid (chain: {chain})")


async def check_hub_token(session: aiohttp.ClientSession, settings: Settings) -> Check:
    token = settings.hf_token
    if token is None:
        return Check(
            "token",
            "fail",
            "no Hugging Face token (apiKey, HF_TOKEN, HUGGINGFACE_HUB_TOKEN or the token file)",
            "run `coderclaw onboard --auth-choice huggingface-api-key`",
        )
    shown = f"{mask(token.reveal())} from {settings.token_source}"
    hf = settings.config.hf
    result = await check_token(session, hf.hub_url, token, min(hf.discovery.timeout_seconds, 10))
    if result.status is TokenStatus.OK:
        return Check("token", "ok", f"{shown}, {result.describe()}")
    if result.status is TokenStatus.NO_INFERENCE:
        return Check("token", "fail", f"{shown}, {result.describe()}", PERMISSION_FIX)
    if result.status is TokenStatus.REJECTED:
        return Check(
            "token",
            "fail",
            f"{shown}, {result.describe()}",
            "run `coderclaw onboard` with a valid token",
        )
    return Check(
        "token",
        "warn",
        f"{shown}, {result.describe()}",
        f"check that {hf.hub_url} is reachable from this machine",
    )


async def check_router(session: aiohttp.ClientSession, settings: Settings) -> Check:
    hf = settings.config.hf
    try:
        catalog = await fetch_models(
            session, hf.base_url, settings.hf_token, min(hf.discovery.timeout_seconds, 10)
        )
    except UpstreamError as exc:
        return Check(
            "router",
            "fail",
            exc.message,
            f"check the network and models.providers.huggingface.baseUrl ({hf.base_url})",
        )
    found = sum(1 for e in catalog.entries if e.source != "builtin")
    return Check("router", "ok", f"{hf.base_url} answers ({found} models)")


async def check_port(session: aiohttp.ClientSession, settings: Settings) -> Check:
    host, port = settings.host, settings.port
    if _port_free(host, port):
        return Check("port", "ok", f"{host}:{port} is free for the gateway")
    probe = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
    url = f"http://{probe}:{port}/healthz"
    try:
        async with fetch.get(session, url, timeout_s=3) as reply:
            if reply.status == 200:
                return Check("port", "ok", f"the gateway answers on {host}:{port} (/healthz 200)")
            answer = f"answers /healthz with {reply.status}"
    except UpstreamError as exc:
        answer = f"does not answer /healthz ({exc.message})"
    return Check(
        "port",
        "fail",
        f"{host}:{port} is in use by something that {answer}",
        "stop that program, or choose another port: coderclaw config set gateway.port N",
    )


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def service_check_from(status: Any) -> Check:
    """Pure: a ``service_status`` answer (a mapping with installed/running/detail) → a check."""
    if not isinstance(status, Mapping):
        return Check("service", "warn", f"unknown ({status})")
    detail = str(status.get("detail") or "")
    where = f" ({status.get('manager')})" if status.get("manager") else ""
    if not status.get("installed"):
        return Check(
            "service",
            "warn",
            f"not installed{where}",
            "optional: `coderclaw gateway install` runs the gateway in the background",
        )
    if status.get("running") is True:
        return Check("service", "ok", f"installed and running{where}: {detail}".rstrip(": "))
    if status.get("running") is None:
        return Check("service", "warn", f"installed{where}; state unknown: {detail}".rstrip(": "))
    return Check(
        "service",
        "fail",
        f"installed but not running{where}: {detail}".rstrip(": "),
        "start it: coderclaw gateway start (logs: coderclaw gateway status)",
    )


def check_service(settings: Settings) -> Check:
    from gateway.service.manager import service_status

    try:
        return service_check_from(service_status(settings))
    except GatewayError as exc:
        return Check("service", "warn", f"unknown: {exc.message}", exc.hint)


async def _network_checks(settings: Settings) -> list[Check]:
    async with one_off_session() as session:
        return list(
            await asyncio.gather(
                check_hub_token(session, settings),
                check_router(session, settings),
                check_port(session, settings),
            )
        )


def run_checks(settings: Settings, now: float | None = None) -> list[Check]:
    """Every check for loaded settings, in display order."""
    token, router, port = asyncio.run(_network_checks(settings))
    cached = load_cached_catalog(settings.paths.cache_file)
    age = catalog_age_check(
        cached.fetched_at if cached else None,
        settings.config.hf.discovery.refresh_minutes,
        time.time() if now is None else now,
    )
    files = check_files(settings.paths)
    return [*files, check_config(settings), token, router, age, port, check_service(settings)]


def skipped_after_config() -> list[Check]:
    why = "skipped: the config does not load"
    return [Check(name, "skip", why) for name in ("token", "router", "catalog", "port", "service")]
