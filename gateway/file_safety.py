"""Who else may change the files the gateway trusts: the state dir, the config and ``.env``.

Another local user who can write the config can point ``baseUrl`` at a listener of theirs and
receive the token on the next reload. So, like OpenSSH with ``~/.ssh``, the gateway refuses
(``ConfigError``, exit 78) a state dir, config file or ``.env`` that is writable by group or
others, or owned by someone other than the user (root may own them), and warns about an
``.env`` that group or others can read. Missing files are fine: they are created 0600/0700.

``mode_problems`` is the pure rule (a table in the tests); ``file_problems`` stats the files.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["state dir", "config file", "env file"]
Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class FileProblem:
    path: str
    kind: Kind
    severity: Severity
    detail: str  # what is wrong, without the path
    fix: str  # the command that fixes it

    @property
    def message(self) -> str:
        return f"{self.path}: {self.detail}"


def _chmod_fix(path: str, kind: Kind) -> str:
    return f"chmod {'700' if kind == 'state dir' else '600'} {path}"


def mode_problems(
    path: str, kind: Kind, st_mode: int, st_uid: int, euid: int, user: str
) -> list[FileProblem]:
    """The problems of one file or directory from its ``stat`` fields; ``user`` names ``euid``."""
    problems: list[FileProblem] = []
    if st_uid not in (euid, 0):
        problems.append(
            FileProblem(
                path,
                kind,
                "error",
                f"the {kind} is owned by another user (uid {st_uid}), who could change it",
                f"sudo chown {user} {path} (or replace it with one of your own)",
            )
        )
    perms = stat.S_IMODE(st_mode)
    if perms & 0o022:
        problems.append(
            FileProblem(
                path,
                kind,
                "error",
                f"the {kind} is writable by group or others (mode {perms:04o}): another local "
                "user could change where the gateway sends your token",
                _chmod_fix(path, kind),
            )
        )
    elif kind == "env file" and perms & 0o044:
        problems.append(
            FileProblem(
                path,
                kind,
                "warning",
                f"the env file is readable by group or others (mode {perms:04o}): it holds "
                "your tokens",
                _chmod_fix(path, kind),
            )
        )
    return problems


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def file_problems(state_dir: Path, config: Path, env_file: Path) -> list[FileProblem]:
    """The problems of the state dir, the config file and the ``.env`` that exist (symlinks
    followed: what matters is the file that is read)."""
    euid = os.geteuid()
    user = _user_name(euid)
    problems: list[FileProblem] = []
    checked: tuple[tuple[Path, Kind], ...] = (
        (state_dir, "state dir"),
        (config, "config file"),
        (env_file, "env file"),
    )
    for path, kind in checked:
        try:
            st = os.stat(path)
        except OSError:
            continue  # missing or unreadable: the readers say so in their own words
        problems += mode_problems(str(path), kind, st.st_mode, st.st_uid, euid, user)
    return problems
