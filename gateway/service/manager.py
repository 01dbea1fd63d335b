"""Install and drive the gateway as a systemd user unit (Linux) or a launchd agent (macOS).

The manager is chosen by platform; ``CODERCLAW_SERVICE_MANAGER=systemd|launchd`` overrides it
(tests use it to drive launchd's code on Linux). ``systemctl``, ``loginctl`` and ``launchctl``
are found on the ``PATH`` of the settings' environment and run with a small environment of their
own (never the token). Every failure is a ``ServiceError`` that says what to do.

Install writes one file (the unit or the plist) plus, for launchd, the logs dir it points at;
uninstall removes that file and nothing else.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ServiceError
from gateway.service.backend import Runner, ServiceSettings
from gateway.service.launchd_agent import LaunchdAgent
from gateway.service.systemd_user import SystemdUser
from gateway.service.units import ServiceSpec
from gateway.settings import Paths

__all__ = [
    "BareSettings",
    "ServiceSettings",
    "bare_settings",
    "choose_manager",
    "install_service",
    "probe_health",
    "restart_service",
    "service_status",
    "start_service",
    "stop_service",
    "uninstall_service",
]

MANAGERS = ("systemd", "launchd")
DEFAULT_PORT = 18789
_PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class BareSettings:
    paths: Paths
    env: Mapping[str, str]
    port: int
    host: str = "127.0.0.1"


def bare_settings(env: Mapping[str, str]) -> BareSettings:
    """Settings from the environment alone, for when the config file cannot be loaded."""
    raw = env.get("CODERCLAW_GATEWAY_PORT", "").strip()
    port = int(raw) if raw.isdigit() and 1 <= int(raw) <= 65535 else DEFAULT_PORT
    return BareSettings(paths=Paths.from_env(env), env=dict(env), port=port)


def choose_manager(env: Mapping[str, str], platform: str = sys.platform) -> str:
    override = env.get("CODERCLAW_SERVICE_MANAGER", "").strip()
    if override:
        if override not in MANAGERS:
            raise ServiceError(
                f"CODERCLAW_SERVICE_MANAGER={override!r} is not a service manager",
                hint="set it to systemd or launchd, or unset it to choose by platform",
            )
        return override
    if platform == "darwin":
        return "launchd"
    if platform.startswith("linux"):
        return "systemd"
    raise ServiceError(
        f"no supported service manager on {platform} (systemd on Linux, launchd on macOS)",
        hint="run the gateway in the foreground with `coderclaw gateway`",
    )


def install_service(
    settings: ServiceSettings,
    *,
    port: int | None = None,
    force: bool = False,
    python: str | None = None,
) -> str:
    """Write the unit (or plist), load it, enable and start it; return a summary for the user.

    ``python`` is the interpreter the service runs (default: this process's, unresolved so a
    venv stays a venv). A different file already in place is replaced only with ``force``.
    """
    spec = ServiceSpec(
        python=str(Path(python or sys.executable).absolute()),
        state_dir=settings.paths.state_dir,
        config_path=settings.paths.config,
        logs_dir=settings.paths.logs_dir,
        port=port,
    )
    return _manager(settings).install(spec, force=force)


def uninstall_service(settings: ServiceSettings, *, force: bool = False) -> str:
    """Stop and disable the service and remove the file install wrote."""
    return _manager(settings).uninstall(force=force)


def start_service(settings: ServiceSettings) -> str:
    return _manager(settings).start()


def stop_service(settings: ServiceSettings) -> str:
    return _manager(settings).stop()


def restart_service(settings: ServiceSettings) -> str:
    return _manager(settings).restart()


def service_status(settings: ServiceSettings) -> dict[str, Any]:
    """The manager's view and a ``/healthz`` probe.

    Keys: manager, installed, path, running (None when the manager cannot be asked), detail,
    pid, port, health ({url, ok, status, error}).
    """
    manager = _manager(settings)
    status = manager.status()
    port = manager.installed_port() or settings.port
    status["port"] = port
    status["health"] = probe_health(_probe_host(settings.host), port)
    return status


def probe_health(host: str, port: int) -> dict[str, Any]:
    """GET ``/healthz`` on the gateway, directly (no proxy from the environment)."""
    url = f"http://{host}:{port}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=_PROBE_TIMEOUT_S) as resp:
            return {"url": url, "ok": resp.status == 200, "status": resp.status, "error": None}
    except urllib.error.HTTPError as exc:
        return {"url": url, "ok": False, "status": exc.code, "error": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return {"url": url, "ok": False, "status": None, "error": str(reason)}


def _probe_host(host: str) -> str:
    if host in ("0.0.0.0", "::", "") or host == "localhost" or host.startswith("127."):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _manager(settings: ServiceSettings) -> SystemdUser | LaunchdAgent:
    kind = choose_manager(settings.env)
    runner = Runner(settings.env)
    return SystemdUser(settings, runner) if kind == "systemd" else LaunchdAgent(settings, runner)
