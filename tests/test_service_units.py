"""The committed service templates and their renderer: one source, valid output, no secret."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import GatewaySection
from gateway.errors import ServiceError
from gateway.service.units import (
    LAUNCHD_LABEL,
    MARKER,
    PLIST_NAME,
    UNIT_NAME,
    ServiceSpec,
    fill_template,
    plist_text,
    read_template,
    render_plist,
    render_unit,
    template_fields,
    unit_text,
)

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = {UNIT_NAME: ROOT / "systemd" / UNIT_NAME, PLIST_NAME: ROOT / "launchd" / PLIST_NAME}
# The fields each committed template has, and so the values its renderer must give.
FIELDS = {
    UNIT_NAME: {"EXEC_START", "STATE_DIR", "CONFIG_PATH"},
    PLIST_NAME: {"PROGRAM_ARGUMENTS", "STATE_DIR", "CONFIG_PATH", "LOGS_DIR"},
}


def spec_for(state: Path, *, python: str = sys.executable, port: int | None = None) -> ServiceSpec:
    return ServiceSpec(
        python=python,
        state_dir=state,
        config_path=state / "coderclaw.json",
        logs_dir=state / "logs",
        port=port,
    )


def unit_directives(text: str) -> dict[str, list[str]]:
    """``Section.Key`` → values, in order (a key may repeat, as Environment= does)."""
    section, out = "", {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


@pytest.mark.parametrize("name", [UNIT_NAME, PLIST_NAME])
def test_renderer_reads_the_committed_template(name: str) -> None:
    """The template install renders is, byte for byte, the file committed under systemd/ or
    launchd/: editing the committed file is editing what gets installed."""
    assert read_template(name) == COMMITTED[name].read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [UNIT_NAME, PLIST_NAME])
def test_committed_template_fields_are_the_ones_the_renderer_fills(name: str) -> None:
    """The committed template asks exactly for the fields the renderer fills, so a field added
    to or dropped from one side fails here (and rendering leaves no @NAME@ behind)."""
    assert template_fields(COMMITTED[name].read_text(encoding="utf-8")) == FIELDS[name]
    rendered = (
        unit_text(spec_for(Path("/s"))) if name == UNIT_NAME else plist_text(spec_for(Path("/s")))
    )
    assert template_fields(rendered) == set()
    assert MARKER in rendered


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        ("a=@X@\n", {"X": "1"}, "a=1\n"),
        ("  @L@\nend\n", {"L": "one\ntwo"}, "  one\n  two\nend\n"),
        ("@A@-@B@ @A@\n", {"A": "x", "B": "y"}, "x-y x\n"),
        ("mail me@example.com\n", {}, "mail me@example.com\n"),
    ],
)
def test_fill_template_table(template: str, values: dict[str, str], expected: str) -> None:
    """Fields are replaced everywhere; a multi-line value keeps its line's indentation; an @
    that does not enclose an upper-case name is text."""
    assert fill_template(template, values) == expected


@pytest.mark.parametrize(
    ("template", "values"),
    [("a=@X@\n", {}), ("a=1\n", {"X": "1"}), ("@X@ @Y@\n", {"X": "1"})],
)
def test_fill_template_refuses_drift(template: str, values: dict[str, str]) -> None:
    """A field without a value, or a value without a field, is an error, not a silent gap."""
    with pytest.raises(ValueError, match="template fields"):
        fill_template(template, values)


def test_fill_template_round_trips_the_committed_templates() -> None:
    """Filling each field with its own ``@NAME@`` gives back the committed file unchanged."""
    for name, path in COMMITTED.items():
        text = path.read_text(encoding="utf-8")
        assert fill_template(text, {f: f"@{f}@" for f in FIELDS[name]}) == text


def test_unit_has_the_directives_systemd_needs(tmp_path: Path) -> None:
    """Type=notify with the main process notifying, restart always except on exit 78, a stop
    timeout above the drain period, started with the user's session, the absolute interpreter."""
    state = tmp_path / ".coderclaw"
    d = unit_directives(unit_text(spec_for(state, port=18800)))
    assert d["Service.Type"] == ["notify"]
    assert d["Service.NotifyAccess"] == ["main"]
    assert d["Service.ExecStart"] == [f"{sys.executable} -m gateway gateway run --port 18800"]
    assert d["Service.Restart"] == ["always"]
    assert d["Service.RestartSec"] == ["2"]
    assert d["Service.RestartPreventExitStatus"] == ["78"]
    drain = GatewaySection().drain_seconds
    assert int(d["Service.TimeoutStopSec"][0]) > drain
    assert int(d["Service.WatchdogSec"][0]) >= 2
    assert d["Service.Environment"] == [
        "PYTHONUNBUFFERED=1",
        f'"CODERCLAW_STATE_DIR={state}"',
        f'"CODERCLAW_CONFIG_PATH={state}/coderclaw.json"',
    ]
    assert d["Install.WantedBy"] == ["default.target"]


def test_unit_without_port_leaves_it_to_the_config(tmp_path: Path) -> None:
    """No --port at install: ExecStart passes none, so the config's gateway.port applies."""
    d = unit_directives(unit_text(spec_for(tmp_path)))
    assert d["Service.ExecStart"] == [f"{sys.executable} -m gateway gateway run"]


def _verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    ("interpreter_dir", "state_name", "port"),
    [
        ("venv/bin", ".coderclaw", None),
        ("venv/bin", ".coderclaw", 18800),
        ("my venv%h/bin", "state $HOME dir", 1),
    ],
)
def test_rendered_unit_passes_systemd_analyze_verify(
    tmp_path: Path, interpreter_dir: str, state_name: str, port: int | None
) -> None:
    """`systemd-analyze verify --user` accepts the rendered unit without a warning, also when
    the interpreter's path has a space and a % (quoted and escaped, so systemd finds it)."""
    bin_dir = tmp_path / interpreter_dir
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.symlink_to(sys.executable)
    unit = tmp_path / UNIT_NAME
    unit.write_text(unit_text(spec_for(tmp_path / state_name, python=str(python), port=port)))
    proc = _verify(unit, tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_catches_a_wrong_interpreter(tmp_path: Path) -> None:
    """The verify test can fail: an ExecStart whose interpreter does not exist is rejected."""
    unit = tmp_path / UNIT_NAME
    unit.write_text(unit_text(spec_for(tmp_path, python=str(tmp_path / "missing/python"))))
    proc = _verify(unit, tmp_path)
    assert proc.returncode != 0
    assert "missing/python" in proc.stderr


def test_interpreter_path_systemd_cannot_run_is_refused() -> None:
    """A quote in the interpreter's path cannot be written into ExecStart: a clear error."""
    with pytest.raises(ServiceError, match="quotes or backslashes"):
        unit_text(spec_for(Path("/s"), python='/opt/we"ird/python'))


@pytest.mark.parametrize("bad", ["/tmp/new\nline", "/tmp/tab\there"])
def test_control_characters_in_paths_are_refused(bad: str) -> None:
    """A newline in a path would split a unit line or a plist string: refused with a hint."""
    with pytest.raises(ServiceError, match="control character"):
        unit_text(spec_for(Path(bad)))
    with pytest.raises(ServiceError, match="control character"):
        plist_text(spec_for(Path(bad)))


def test_plist_parses_with_the_required_keys_and_types(tmp_path: Path) -> None:
    """The plist is a valid property list: label, argv with the absolute interpreter, started at
    load and kept alive, logs under $STATE/logs, umask 077, background process."""
    state = tmp_path / ".coderclaw"
    data = plistlib.loads(plist_text(spec_for(state, port=18800)).encode())
    assert data["Label"] == LAUNCHD_LABEL
    assert data["ProgramArguments"] == [
        sys.executable,
        "-m",
        "gateway",
        "gateway",
        "run",
        "--port",
        "18800",
    ]
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["StandardOutPath"] == f"{state}/logs/gateway.log"
    assert data["StandardErrorPath"] == f"{state}/logs/gateway.err.log"
    assert data["Umask"] == 0o077
    assert type(data["Umask"]) is int
    assert data["ProcessType"] == "Background"
    assert data["EnvironmentVariables"] == {
        "PYTHONUNBUFFERED": "1",
        "CODERCLAW_STATE_DIR": str(state),
        "CODERCLAW_CONFIG_PATH": f"{state}/coderclaw.json",
    }
    assert data["ExitTimeOut"] > GatewaySection().drain_seconds


def test_plist_escapes_xml_in_paths(tmp_path: Path) -> None:
    """Paths with &, < and > survive as themselves (escaped in the XML, parsed back intact)."""
    state = tmp_path / "a&b <c>"
    python = str(tmp_path / "v&env" / "python")
    data = plistlib.loads(plist_text(spec_for(state, python=python)).encode())
    assert data["ProgramArguments"][0] == python
    assert data["EnvironmentVariables"]["CODERCLAW_STATE_DIR"] == str(state)


def test_render_functions_are_pure_over_the_template_text() -> None:
    """render_unit/render_plist fill whatever template they are given (no file read)."""
    spec = spec_for(Path("/s"), python="/usr/bin/python3", port=9)
    assert render_unit(spec, "X=@EXEC_START@ @STATE_DIR@ @CONFIG_PATH@\n") == (
        "X=/usr/bin/python3 -m gateway gateway run --port 9 /s /s/coderclaw.json\n"
    )
    assert render_plist(spec, "@PROGRAM_ARGUMENTS@|@STATE_DIR@|@CONFIG_PATH@|@LOGS_DIR@") == (
        "<string>/usr/bin/python3</string>\n<string>-m</string>\n<string>gateway</string>\n"
        "<string>gateway</string>\n<string>run</string>\n<string>--port</string>\n"
        "<string>9</string>|/s|/s/coderclaw.json|/s/logs"
    )
