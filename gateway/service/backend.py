"""What the systemd and launchd backends share: the settings they read, the command runner,
and the write/restore of the one file install owns."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from gateway.errors import ServiceError
from gateway.service.units import MARKER
from gateway.settings import Paths
from gateway.store import atomic_write

_COMMAND_TIMEOUT_S = 30.0
# What systemctl/launchctl need to reach the user's manager; nothing else (no token) is passed.
_CHILD_ENV_KEYS = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
)


class ServiceSettings(Protocol):
    """The part of ``Settings`` the service commands use (``BareSettings`` when the config is
    broken, so stop/status/uninstall still work)."""

    @property
    def paths(self) -> Paths: ...

    @property
    def env(self) -> Mapping[str, str]: ...

    @property
    def port(self) -> int: ...

    @property
    def host(self) -> str: ...


class Runner:
    """Runs the manager's commands, found on the settings' PATH, with a minimal environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = {k: env[k] for k in _CHILD_ENV_KEYS if env.get(k)}
        self.env.setdefault("PATH", os.defpath)

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.env["PATH"])

    def require(self, name: str) -> str:
        exe = self.which(name)
        if exe is None:
            raise ServiceError(
                f"`{name}` was not found on PATH",
                hint=_MISSING_HINTS.get(name, f"install {name} or run `coderclaw gateway`"),
            )
        return exe

    def run(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        exe = self.require(name)
        try:
            return subprocess.run(
                [exe, *args],
                capture_output=True,
                text=True,
                env=self.env,
                stdin=subprocess.DEVNULL,
                timeout=_COMMAND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ServiceError(
                f"`{name} {' '.join(args)}` did not answer in {_COMMAND_TIMEOUT_S:g}s",
                hint="check the service manager, then try again",
            ) from None
        except OSError as exc:
            raise ServiceError(
                f"cannot run `{name}`: {exc.strerror}", hint=f"check {exe} is executable"
            ) from None

    def check(self, name: str, *args: str, hint: str) -> subprocess.CompletedProcess[str]:
        proc = self.run(name, *args)
        if proc.returncode != 0:
            raise ServiceError(
                f"`{name} {' '.join(args)}` failed (status {proc.returncode}): "
                f"{first_line(proc.stderr or proc.stdout)}",
                hint=hint,
            )
        return proc


_MISSING_HINTS = {
    "systemctl": "this needs systemd; without it, run `coderclaw gateway` in the foreground "
    "(or under your own supervisor)",
    "launchctl": "launchctl is part of macOS; on Linux, unset CODERCLAW_SERVICE_MANAGER",
}


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no output)"


def write_service_file(path: Path, text: str, *, force: bool) -> str | None:
    """Write ``text`` at ``path``; return the previous content (None when there was none)."""
    previous = path.read_text(encoding="utf-8") if path.exists() else None
    if previous is not None and previous != text and not force:
        raise ServiceError(
            f"{path} already exists and differs from the file this install would write",
            hint="run `coderclaw gateway install --force` to replace it",
        )
    if previous != text:
        atomic_write(path, text, mode=0o644)
    return previous


def restore_service_file(path: Path, previous: str | None) -> None:
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, previous, mode=0o644)


def check_ours(path: Path, *, force: bool) -> None:
    if not force and MARKER not in path.read_text(encoding="utf-8", errors="replace"):
        raise ServiceError(
            f"{path} was not written by `coderclaw gateway install`; leaving it alone",
            hint="remove it yourself, or run `coderclaw gateway uninstall --force`",
        )


def not_installed(path: Path) -> ServiceError:
    return ServiceError(
        f"the gateway service is not installed ({path} does not exist)",
        hint="run `coderclaw gateway install`",
    )
