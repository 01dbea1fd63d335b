"""The systemd user unit and the launchd agent, rendered from the committed templates.

The templates are ``systemd/coderclaw-gateway.service`` and ``launchd/ai.coderclaw.gateway.plist``
of the source tree, shipped inside the package as ``gateway/templates/`` (links to them). Each
``@NAME@`` field is filled with a value escaped for the file's syntax; a field without a value, or
a value without a field, is a bug caught by ``fill_template``. Nothing secret is ever an input:
the gateway reads ``$STATE/.env`` itself at every start.

Rendering is pure (``render_unit`` / ``render_plist`` take the template text); only
``read_template`` touches the file system.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from gateway.errors import ServiceError

UNIT_NAME = "coderclaw-gateway.service"
LAUNCHD_LABEL = "ai.coderclaw.gateway"
PLIST_NAME = f"{LAUNCHD_LABEL}.plist"
# Both templates carry this phrase; uninstall removes only a file that does.
MARKER = "written by `coderclaw gateway install`"

_FIELD = re.compile(r"@([A-Z][A-Z_]*)@")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What the installed service runs: an absolute interpreter, the state, an optional port."""

    python: str
    state_dir: Path
    config_path: Path
    logs_dir: Path
    port: int | None = None

    def argv(self) -> list[str]:
        port = ["--port", str(self.port)] if self.port is not None else []
        return [self.python, "-m", "gateway", "gateway", "run", *port]


def read_template(name: str) -> str:
    """The text of a template shipped in ``gateway/templates`` (UNIT_NAME or PLIST_NAME)."""
    return (resources.files("gateway") / "templates" / name).read_text(encoding="utf-8")


def template_fields(template: str) -> set[str]:
    """The ``@NAME@`` fields a template asks for."""
    return set(_FIELD.findall(template))


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``@NAME@``; a multi-line value keeps the indentation of its field's line.

    Raises ``ValueError`` when a field has no value or a value has no field: the template and
    the renderer have drifted apart.
    """
    wanted = template_fields(template)
    if wanted != set(values):
        missing = sorted(wanted - set(values))
        unused = sorted(set(values) - wanted)
        raise ValueError(f"template fields without a value: {missing}; values unused: {unused}")
    return "".join(_fill_line(line, values) for line in template.splitlines(keepends=True))


def _fill_line(line: str, values: Mapping[str, str]) -> str:
    indent = line[: len(line) - len(line.lstrip())]
    return _FIELD.sub(lambda m: values[m.group(1)].replace("\n", "\n" + indent), line)


def render_unit(spec: ServiceSpec, template: str) -> str:
    """The systemd unit for ``spec``."""
    return fill_template(
        template,
        {
            "EXEC_START": _systemd_command(spec.argv()),
            "STATE_DIR": _systemd_escape(str(spec.state_dir)),
            "CONFIG_PATH": _systemd_escape(str(spec.config_path)),
        },
    )


def render_plist(spec: ServiceSpec, template: str) -> str:
    """The launchd property list for ``spec``."""
    for value in (*spec.argv(), str(spec.state_dir), str(spec.config_path), str(spec.logs_dir)):
        _check_printable(value)
    return fill_template(
        template,
        {
            "PROGRAM_ARGUMENTS": "\n".join(
                f"<string>{xml_escape(arg)}</string>" for arg in spec.argv()
            ),
            "STATE_DIR": xml_escape(str(spec.state_dir)),
            "CONFIG_PATH": xml_escape(str(spec.config_path)),
            "LOGS_DIR": xml_escape(str(spec.logs_dir)),
        },
    )


def unit_text(spec: ServiceSpec) -> str:
    return render_unit(spec, read_template(UNIT_NAME))


def plist_text(spec: ServiceSpec) -> str:
    return render_plist(spec, read_template(PLIST_NAME))


def _check_printable(value: str) -> None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ServiceError(
            f"the path {value!r} contains a control character a service file cannot hold",
            hint="install CoderClaw and its state dir under paths without newlines or tabs",
        )


def _systemd_escape(value: str) -> str:
    """Escape for inside double quotes (``Environment="K=@V@"``): backslashes, ``%`` specifiers."""
    _check_printable(value)
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def _systemd_command(argv: list[str]) -> str:
    """An ``ExecStart=`` command line: words quoted when needed.

    systemd refuses an executable path with quotes or backslashes, and expands ``$`` in the
    arguments only (doubled there so nothing is expanded).
    """
    executable, *args = argv
    if re.search(r"[\"'\\]", executable):
        raise ServiceError(
            f"systemd cannot run the interpreter {executable!r}: "
            "its path has quotes or backslashes",
            hint="install CoderClaw in an environment whose path has none (see deploy/install.sh)",
        )
    words = [_systemd_word(executable)]
    words += [_systemd_word(arg).replace("$", "$$") for arg in args]
    return " ".join(words)


def _systemd_word(arg: str) -> str:
    escaped = _systemd_escape(arg)
    if not arg or re.search(r"[\s\"'\\;]", arg):
        return f'"{escaped}"'
    return escaped
