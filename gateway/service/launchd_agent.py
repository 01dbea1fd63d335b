"""The gateway as a launchd agent: ``launchctl`` in the user's ``gui/<uid>`` domain."""

from __future__ import annotations

import os
import plistlib
import subprocess
from typing import Any

from gateway.errors import ServiceError
from gateway.service.backend import (
    Runner,
    ServiceSettings,
    check_ours,
    not_installed,
    restore_service_file,
    write_service_file,
)
from gateway.service.units import LAUNCHD_LABEL, PLIST_NAME, ServiceSpec, plist_text


class LaunchdAgent:
    kind = "launchd"

    def __init__(self, settings: ServiceSettings, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        self.path = settings.paths.home / "Library" / "LaunchAgents" / PLIST_NAME
        self.domain = f"gui/{os.getuid()}"
        self.target = f"{self.domain}/{LAUNCHD_LABEL}"

    def _launchctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.runner.check(
            "launchctl",
            *args,
            hint=f"see `launchctl print {self.target}` and "
            f"{self.settings.paths.logs_dir}/gateway.err.log",
        )

    def _loaded(self) -> bool:
        return self.runner.run("launchctl", "print", self.target).returncode == 0

    def _bootstrap(self) -> None:
        # A disabled service cannot be bootstrapped; enabling first makes install idempotent.
        self._launchctl("enable", self.target)
        self._launchctl("bootstrap", self.domain, str(self.path))

    def install(self, spec: ServiceSpec, *, force: bool) -> str:
        text = plist_text(spec)
        self.runner.require("launchctl")
        self.settings.paths.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        previous = write_service_file(self.path, text, force=force)
        if self._loaded():
            self._launchctl("bootout", self.target)
        try:
            self._bootstrap()
        except ServiceError:
            restore_service_file(self.path, previous)
            raise
        return "\n".join(
            [
                f"wrote {self.path}" if previous != text else f"unchanged: {self.path}",
                f"loaded and started {LAUNCHD_LABEL} (launchd agent; starts at every login)",
                f"logs: {self.settings.paths.logs_dir}/gateway.log, gateway.err.log",
                "check it with: coderclaw gateway status",
            ]
        )

    def uninstall(self, *, force: bool) -> str:
        if not self.path.exists():
            return f"not installed: {self.path} does not exist; nothing to remove"
        check_ours(self.path, force=force)
        if self._loaded():
            self._launchctl("bootout", self.target)
        self.path.unlink()
        return f"stopped and unloaded {LAUNCHD_LABEL}; removed {self.path}"

    def _require_installed(self) -> None:
        if not self.path.exists():
            raise not_installed(self.path)

    def start(self) -> str:
        self._require_installed()
        if self._loaded():
            self._launchctl("kickstart", self.target)
        else:
            self._bootstrap()
        return f"started {LAUNCHD_LABEL}"

    def stop(self) -> str:
        self._require_installed()
        if self._loaded():
            self._launchctl("bootout", self.target)
        return f"stopped {LAUNCHD_LABEL} (it starts again at your next login)"

    def restart(self) -> str:
        self._require_installed()
        if self._loaded():
            self._launchctl("kickstart", "-k", self.target)
        else:
            self._bootstrap()
        return f"restarted {LAUNCHD_LABEL}"

    def installed_port(self) -> int | None:
        try:
            with self.path.open("rb") as fh:
                args = plistlib.load(fh).get("ProgramArguments", [])
        except (OSError, plistlib.InvalidFileException, ValueError):
            return None
        if "--port" in args and args.index("--port") + 1 < len(args):
            value = args[args.index("--port") + 1]
            return int(value) if str(value).isdigit() else None
        return None

    def status(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "manager": self.kind,
            "name": LAUNCHD_LABEL,
            "logs": str(self.settings.paths.logs_dir / "gateway.err.log"),
            "path": str(self.path),
            "installed": self.path.exists(),
            "running": None,
            "pid": None,
        }
        try:
            proc = self.runner.run("launchctl", "print", self.target)
        except ServiceError as exc:
            return base | {"detail": exc.message}
        if proc.returncode != 0:
            return base | {"running": False, "detail": "not loaded"}
        fields = _launchctl_fields(proc.stdout)
        state = fields.get("state", "unknown")
        pid = int(fields["pid"]) if fields.get("pid", "").isdigit() else None
        detail = f"loaded, {state}"
        if pid:
            detail += f", pid {pid}"
        if fields.get("last exit code"):
            detail += f", last exit code {fields['last exit code']}"
        return base | {"running": state == "running", "pid": pid, "detail": detail}


def _launchctl_fields(text: str) -> dict[str, str]:
    """The top-level ``key = value`` lines of ``launchctl print`` (one tab deep)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and line.startswith("\t") and not line.startswith("\t\t"):
            fields[key.strip()] = value.strip()
    return fields
