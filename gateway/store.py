"""Atomic, validated writes of the config file and the 0600 env file."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import parse_json5, read_config_text, substitute_vars, validate_config
from gateway.errors import ConfigError


def atomic_write(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write ``text`` to a temp file beside ``path`` and rename it over; ``mode`` always holds."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _Placeholders(Mapping[str, str]):
    """Every variable 'exists', so a write can be validated without the values at hand."""

    def __getitem__(self, key: str) -> str:
        return "placeholder"

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class ConfigEdit:
    """A validated edit of the config file, not yet written."""

    path: Path
    before: str | None
    after: str
    data: dict[str, Any]
    changed: bool

    def commit(self) -> None:
        """Write the new text atomically (mode 0600); a no-op when nothing changed."""
        if self.changed:
            atomic_write(_write_target(self.path), self.after)


def _write_target(path: Path) -> Path:
    """A symlinked config is written through the link, not replaced by a file."""
    return path.resolve() if path.is_symlink() else path


def plan_config_update(path: Path, mutate: Callable[[dict[str, Any]], None]) -> ConfigEdit:
    """Read the config, apply ``mutate`` to a copy of its data and validate the result.

    Raises ``ConfigError`` (saying why) when the file cannot be read or parsed or the result
    does not validate; nothing is written either way.
    """
    text = read_config_text(path)
    original = parse_json5(text, str(path)) if text is not None else {}
    data = copy.deepcopy(original)
    mutate(data)
    validate_config(substitute_vars(data, _Placeholders(), str(path)), str(path))
    after = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return ConfigEdit(path, text, after, data, data != original or text is None)


def update_config(path: Path, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the config, apply ``mutate`` to its data, validate, and write it back atomically.

    Other keys are kept; ``${VAR}`` strings are kept as written; the file is rewritten as plain
    JSON (JSON5 comments are not kept). Nothing is written when the result does not validate
    (a ``ConfigError`` says why) or when the data did not change.
    """
    edit = plan_config_update(path, mutate)
    edit.commit()
    return edit.data


_LINE_KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def set_env_var(path: Path, key: str, value: str, *, drop: Iterable[str] = ()) -> None:
    """Set ``key`` in the env file (mode 0600, directory 0700), keeping every other line.

    Lines setting a name in ``drop`` are removed (e.g. other names of the same token, which
    would otherwise shadow the new value).
    """
    if "'" in value or "\n" in value or "\r" in value:
        raise ConfigError(f"the value for {key} contains a quote or a line break", file=str(path))
    lines: list[str] = []
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
    quoted = f"'{value}'" if re.search(r"[\s#'\"$\\]", value) else value
    new_line = f"{key}={quoted}"
    dropped = set(drop) - {key}
    out, replaced = [], False
    for line in lines:
        m = _LINE_KEY.match(line)
        if m and m.group(1) in dropped:
            continue
        if m and m.group(1) == key:
            if not replaced:
                out.append(new_line)
                replaced = True
            continue
        out.append(line)
    if not replaced:
        out.append(new_line)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    atomic_write(path, "\n".join(out) + "\n", mode=0o600)
