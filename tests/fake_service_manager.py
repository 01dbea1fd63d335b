"""Recording fakes of ``systemctl``, ``loginctl`` and ``launchctl``: real executables for PATH.

Each fake appends ``{"argv": [name, *args], "env": {...}}`` to ``calls.jsonl`` in its directory
and answers like the real tool for the commands the gateway uses, with a little state
(``state.json``): ``enable --now``/``start`` make the systemd unit active, ``stop``/``disable
--now`` inactive; ``enable``/``disable`` add/remove its ``default.target.wants`` link;
``bootstrap`` loads the launchd job, ``bootout`` unloads it. ``overrides.json`` maps a
command-line prefix (``"systemctl --user daemon-reload"``) to a forced reply
``{"rc": 1, "stdout": "", "stderr": "..."}``.
"""

from __future__ import annotations

import json
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCRIPT = r"""
import json
import os
import sys
from pathlib import Path

here = Path(sys.argv[0]).parent
name = Path(sys.argv[0]).name
args = sys.argv[1:]
with open(here / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"argv": [name, *args], "env": dict(os.environ)}) + "\n")

state_file = here / "state.json"
state = json.loads(state_file.read_text()) if state_file.exists() else {}
overrides_file = here / "overrides.json"
overrides = json.loads(overrides_file.read_text()) if overrides_file.exists() else {}
line = " ".join([name, *args])
for prefix, reply in overrides.items():
    if line.startswith(prefix):
        sys.stdout.write(reply.get("stdout", ""))
        sys.stderr.write(reply.get("stderr", ""))
        sys.exit(reply.get("rc", 0))


def save():
    state_file.write_text(json.dumps(state))


if name == "systemctl":
    verbs = [a for a in args if not a.startswith("-")]
    verb = verbs[0] if verbs else ""
    if verb in ("start", "restart") or (verb == "enable" and "--now" in args):
        state["active"] = True
    if verb == "stop" or (verb == "disable" and "--now" in args):
        state["active"] = False
    if verb in ("enable", "disable"):
        # Like systemd: enable links the unit into default.target.wants, disable unlinks it.
        state["enabled"] = verb == "enable"
        units = Path(os.environ["HOME"]) / ".config/systemd/user"
        link = units / "default.target.wants" / args[-1]
        if verb == "enable":
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(units / args[-1])
        else:
            link.unlink(missing_ok=True)
    save()
    if verb == "show":
        active = state.get("active", False)
        print("LoadState=loaded")
        print("ActiveState=" + ("active" if active else "inactive"))
        print("SubState=" + ("running" if active else "dead"))
        print("MainPID=" + ("4242" if active else "0"))
        print("UnitFileState=" + ("enabled" if state.get("enabled") else "disabled"))
elif name == "loginctl":
    print("Linger=" + state.get("linger", "no"))
elif name == "launchctl":
    verb = args[0] if args else ""
    if verb == "print":
        if not state.get("loaded"):
            print("Bad request.\nCould not find service in domain for port", file=sys.stderr)
            sys.exit(113)
        print(args[1] + " = {")
        print("\tactive count = 1")
        print("\tstate = running")
        print("\tpid = 4343")
        print("\tlast exit code = (never exited)")
        print("\tenvironment = {")
        print("\t\tstate = nested-not-top-level")
        print("\t}")
        print("}")
    elif verb == "bootstrap":
        if state.get("loaded"):
            print("Bootstrap failed: 5: Input/output error", file=sys.stderr)
            sys.exit(5)
        state["loaded"] = True
    elif verb == "bootout":
        if not state.get("loaded"):
            print("Boot-out failed: 3: No such process", file=sys.stderr)
            sys.exit(3)
        state["loaded"] = False
    save()
"""

NAMES = ("systemctl", "loginctl", "launchctl")


@dataclass
class FakeManagers:
    bin_dir: Path

    def calls(self) -> list[list[str]]:
        return [entry["argv"] for entry in self._entries()]

    def envs(self) -> list[dict[str, str]]:
        return [entry["env"] for entry in self._entries()]

    def _entries(self) -> list[dict[str, Any]]:
        log = self.bin_dir / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def clear(self) -> None:
        (self.bin_dir / "calls.jsonl").unlink(missing_ok=True)

    def set_state(self, **values: Any) -> None:
        path = self.bin_dir / "state.json"
        state = json.loads(path.read_text()) if path.exists() else {}
        state.update(values)
        path.write_text(json.dumps(state))

    def override(self, prefix: str, *, rc: int = 0, stdout: str = "", stderr: str = "") -> None:
        path = self.bin_dir / "overrides.json"
        overrides = json.loads(path.read_text()) if path.exists() else {}
        overrides[prefix] = {"rc": rc, "stdout": stdout, "stderr": stderr}
        path.write_text(json.dumps(overrides))


def make_fake_managers(bin_dir: Path, names: tuple[str, ...] = NAMES) -> FakeManagers:
    """Write the fakes into ``bin_dir`` (put it first on PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{_SCRIPT}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return FakeManagers(bin_dir)
