"""The gateway as a systemd user unit: ``systemctl --user`` and the lingering check."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.errors import ServiceError
from gateway.service.backend import (
    Runner,
    ServiceSettings,
    check_ours,
    first_line,
    not_installed,
    restore_service_file,
    write_service_file,
)
from gateway.service.units import UNIT_NAME, ServiceSpec, unit_text

_PORT_ARG = re.compile(r"(?:^|\s)--port\s+(\d+)(?:\s|$)")


class SystemdUser:
    kind = "systemd"

    def __init__(self, settings: ServiceSettings, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        env = settings.env
        config_home = (
            Path(env["XDG_CONFIG_HOME"])
            if env.get("XDG_CONFIG_HOME")
            else settings.paths.home / ".config"
        )
        self.path = config_home / "systemd" / "user" / UNIT_NAME

    def _systemctl(self, *args: str, hint: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.runner.check(
            "systemctl",
            "--user",
            *args,
            hint=hint
            or f"see `systemctl --user status {UNIT_NAME}` and `journalctl --user -u {UNIT_NAME}`",
        )

    def install(self, spec: ServiceSpec, *, force: bool) -> str:
        text = unit_text(spec)
        self.runner.require("systemctl")
        previous = write_service_file(self.path, text, force=force)
        try:
            self._systemctl("daemon-reload", hint=_BUS_HINT)
        except ServiceError:
            restore_service_file(self.path, previous)
            raise
        self._systemctl("enable", "--now", UNIT_NAME)
        lines = [f"wrote {self.path}" if previous != text else f"unchanged: {self.path}"]
        if previous is not None and previous != text:
            self._systemctl("restart", UNIT_NAME)
            lines.append(f"enabled and restarted {UNIT_NAME} with the new unit")
        else:
            lines.append(f"enabled and started {UNIT_NAME} (systemd user unit)")
        lines += self._linger_lines()
        lines.append("check it with: coderclaw gateway status")
        return "\n".join(lines)

    def _linger_lines(self) -> list[str]:
        user = _user_name(self.settings.env)
        if self.runner.which("loginctl") is None:
            return [
                "could not check lingering (loginctl not found): without it the gateway stops "
                "when you log out",
                f"  → if it does, run `loginctl enable-linger {user}`",
            ]
        proc = self.runner.run("loginctl", "show-user", user, "-p", "Linger")
        if proc.returncode == 0 and "Linger=yes" in proc.stdout:
            return [f"lingering is on for {user}: the gateway starts at boot and survives logout"]
        return [
            f"lingering is off for {user}: the gateway stops when you log out and starts again "
            "at your next login",
            f"  → run `loginctl enable-linger {user}` to keep it running after logout and start "
            "it at boot",
        ]

    def uninstall(self, *, force: bool) -> str:
        if not self.path.exists():
            return f"not installed: {self.path} does not exist; nothing to remove"
        check_ours(self.path, force=force)
        proc = self.runner.run("systemctl", "--user", "disable", "--now", UNIT_NAME)
        lines = []
        if proc.returncode != 0:
            lines.append(
                f"warning: `systemctl --user disable --now {UNIT_NAME}` failed: "
                f"{first_line(proc.stderr or proc.stdout)}"
            )
        self.path.unlink()
        # What `enable` linked; `disable` removes it, unless it could not reach the manager.
        wants = self.path.parent / "default.target.wants" / UNIT_NAME
        if wants.is_symlink():
            wants.unlink()
        lines.append(f"stopped and disabled {UNIT_NAME}; removed {self.path}")
        reload = self.runner.run("systemctl", "--user", "daemon-reload")
        if reload.returncode != 0:
            lines.append("warning: `systemctl --user daemon-reload` failed; run it yourself")
        return "\n".join(lines)

    def _require_installed(self) -> None:
        if not self.path.exists():
            raise not_installed(self.path)

    def start(self) -> str:
        self._require_installed()
        self._systemctl("start", UNIT_NAME)
        return f"started {UNIT_NAME}"

    def stop(self) -> str:
        self._require_installed()
        self._systemctl("stop", UNIT_NAME)
        return f"stopped {UNIT_NAME}"

    def restart(self) -> str:
        self._require_installed()
        self._systemctl("restart", UNIT_NAME)
        return f"restarted {UNIT_NAME}"

    def installed_port(self) -> int | None:
        if not self.path.exists():
            return None
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("ExecStart="):
                match = _PORT_ARG.search(line)
                return int(match.group(1)) if match else None
        return None

    def status(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "manager": self.kind,
            "name": UNIT_NAME,
            "path": str(self.path),
            "installed": self.path.exists(),
            "running": None,
            "pid": None,
        }
        try:
            proc = self.runner.run(
                "systemctl",
                "--user",
                "show",
                UNIT_NAME,
                "--property=LoadState,ActiveState,SubState,MainPID,UnitFileState",
            )
        except ServiceError as exc:
            return base | {"detail": exc.message}
        if proc.returncode != 0:
            return base | {"detail": f"systemctl --user show failed: {first_line(proc.stderr)}"}
        props = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        active = props.get("ActiveState", "unknown")
        pid = int(props["MainPID"]) if props.get("MainPID", "0").isdigit() else 0
        detail = f"{active} ({props.get('SubState', '?')})"
        if pid:
            detail += f", pid {pid}"
        if props.get("UnitFileState"):
            detail += f", {props['UnitFileState']}"
        return base | {
            "running": active in ("active", "reloading"),
            "pid": pid or None,
            "detail": detail,
        }


_BUS_HINT = (
    "no systemd user manager answered: log in to a normal session (not `su`/`sudo`), or set "
    "XDG_RUNTIME_DIR=/run/user/$(id -u); without systemd, run `coderclaw gateway`"
)


def _user_name(env: Mapping[str, str]) -> str:
    name = env.get("USER") or env.get("LOGNAME")
    if name:
        return name
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
