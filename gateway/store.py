"""Atomic, validated writes of the config file and the 0600 env file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.config import parse_json5, read_config_text, substitute_vars, validate_config


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


def update_config(path: Path, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the config, apply ``mutate`` to its data, validate, and write it back atomically.

    Other keys are kept; ``${VAR}`` strings are kept as written. Nothing is written when the
    result does not validate (a ``ConfigError`` says why).
    """
    text = read_config_text(path)
    data = parse_json5(text, str(path)) if text is not None else {}
    mutate(data)
    validate_config(substitute_vars(data, _Placeholders(), str(path)), str(path))

    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return data


_LINE_KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def set_env_var(path: Path, key: str, value: str) -> None:
    """Set ``key`` in the env file (mode 0600, directory 0700), keeping every other line."""
    lines: list[str] = []
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
    quoted = "'" + value.replace("'", "") + "'" if re.search(r"[\s#'\"$\\]", value) else value
    new_line = f"{key}={quoted}"
    out, replaced = [], False
    for line in lines:
        m = _LINE_KEY.match(line)
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
