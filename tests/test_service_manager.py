"""`coderclaw gateway install|uninstall|start|stop|restart|status` against recording fakes of
systemctl, loginctl and launchctl placed first on PATH (real executables, real subprocesses)."""

from __future__ import annotations

import json
import os
import plistlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.errors import ServiceError
from gateway.service.manager import (
    choose_manager,
    install_service,
    service_status,
    uninstall_service,
)
from gateway.service.units import LAUNCHD_LABEL, UNIT_NAME, ServiceSpec, unit_text
from gateway.settings import load_settings
from tests.cli_helpers import ONBOARD_WITH_KEY
from tests.conftest import clean_env
from tests.fake_service_manager import FakeManagers, make_fake_managers

TOKEN = "hf_ServiceTestTokenDoNotLeak0123456789"
GATEWAY_TOKEN = "gw-ServiceTestGatewayTokenDoNotLeak"
UNIT_REL = f".config/systemd/user/{UNIT_NAME}"
WANTS_REL = f".config/systemd/user/default.target.wants/{UNIT_NAME}"
PLIST_REL = f"Library/LaunchAgents/{LAUNCHD_LABEL}.plist"
TARGET = f"gui/{os.getuid()}/{LAUNCHD_LABEL}"


@pytest.fixture
def fakes(tmp_path: Path) -> FakeManagers:
    return make_fake_managers(tmp_path / "fakebin")


@pytest.fixture
def env(isolated_home: Path, state_dir: Path, fakes: FakeManagers) -> dict[str, str]:
    """A child environment: the fakes first on PATH, a token in the env and in $STATE/.env."""
    dotenv = state_dir / ".env"
    dotenv.write_text(f"HF_TOKEN={TOKEN}\nCODERCLAW_GATEWAY_TOKEN={GATEWAY_TOKEN}\n")
    dotenv.chmod(0o600)
    child = clean_env(
        isolated_home,
        PATH=f"{fakes.bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        USER="tester",
        CODERCLAW_SERVICE_MANAGER="systemd",
        HF_TOKEN=TOKEN,
    )
    child.pop("XDG_CONFIG_HOME", None)
    return child


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "gateway", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def files_under(root: Path) -> dict[str, bytes]:
    """Every file and symlink under ``root``: content, or ``-> target`` for a link."""
    return {
        str(p.relative_to(root)): f"-> {os.readlink(p)}".encode()
        if p.is_symlink()
        else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def assert_no_token_outside_env_file(home: Path, fakes: FakeManagers) -> None:
    """Neither the HF token nor the gateway token is in any file but .env, nor in the
    environment of any systemctl/loginctl/launchctl run."""
    for secret in (TOKEN, GATEWAY_TOKEN):
        for rel, data in files_under(home).items():
            if rel != ".coderclaw/.env":
                assert secret.encode() not in data, rel
        for seen in fakes.envs():
            assert secret not in json.dumps(seen)


def expected_unit(home: Path, port: int | None = None) -> str:
    state = home / ".coderclaw"
    return unit_text(
        ServiceSpec(
            python=str(Path(sys.executable).absolute()),
            state_dir=state,
            config_path=state / "coderclaw.json",
            logs_dir=state / "logs",
            port=port,
        )
    )


@contextmanager
def healthz_server() -> Iterator[int]:
    """A stand-in gateway answering GET /healthz on 127.0.0.1 (port returned)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/healthz"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}' if ok else b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------- systemd


def test_install_writes_the_unit_reloads_enables_and_hints_lingering(
    env: dict[str, str], isolated_home: Path, fakes: FakeManagers
) -> None:
    """Install writes exactly one file, the rendered unit; runs daemon-reload then enable --now;
    checks lingering and says how to enable it; no file and no command sees the token."""
    before = files_under(isolated_home)
    proc = cli(env, "install", "--port", "18800")
    assert proc.returncode == 0, proc.stderr
    assert fakes.calls() == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", UNIT_NAME],
        ["loginctl", "show-user", "tester", "-p", "Linger"],
    ]
    after = files_under(isolated_home)
    assert set(after) - set(before) == {UNIT_REL, WANTS_REL}
    assert {k: v for k, v in after.items() if k in before} == before
    assert after[UNIT_REL].decode() == expected_unit(isolated_home, port=18800)
    assert "loginctl enable-linger tester" in proc.stdout
    assert_no_token_outside_env_file(isolated_home, fakes)


def test_install_with_lingering_on_gives_no_linger_hint(
    env: dict[str, str], isolated_home: Path, fakes: FakeManagers
) -> None:
    """When lingering is already on, install says so and does not ask for enable-linger."""
    fakes.set_state(linger="yes")
    summary = install_service(load_settings(env))
    assert "lingering is on for tester" in summary
    assert "enable-linger" not in summary


def test_install_without_loginctl_still_installs_and_names_the_fix(
    env: dict[str, str], isolated_home: Path, tmp_path: Path
) -> None:
    """No loginctl on PATH: the unit is installed and the summary still names enable-linger."""
    only = make_fake_managers(tmp_path / "only-systemctl", names=("systemctl",))
    env["PATH"] = f"{only.bin_dir}{os.pathsep}/nonexistent"
    summary = install_service(load_settings(env))
    assert (isolated_home / UNIT_REL).exists()
    assert "loginctl enable-linger tester" in summary


@pytest.mark.parametrize("where", ["XDG_CONFIG_HOME", "CODERCLAW_HOME"])
def test_install_honours_xdg_config_home_and_coderclaw_home(
    env: dict[str, str], tmp_path: Path, where: str
) -> None:
    """The unit goes under $XDG_CONFIG_HOME when set, else under the settings' home
    (CODERCLAW_HOME replaces HOME), and its state dir follows the same home."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    env[where] = str(other)
    install_service(load_settings(env))
    if where == "XDG_CONFIG_HOME":
        unit = other / "systemd" / "user" / UNIT_NAME
    else:
        unit = other / UNIT_REL
        assert f'"CODERCLAW_STATE_DIR={other}/.coderclaw"' in unit.read_text()
    assert unit.is_file()


def test_reinstall_same_unit_is_idempotent_and_a_different_one_needs_force(
    env: dict[str, str], isolated_home: Path, fakes: FakeManagers
) -> None:
    """The same install twice succeeds; a different unit (new port) is refused without --force
    (nothing written, no command run) and with --force replaces the unit and restarts it."""
    assert cli(env, "install").returncode == 0
    assert cli(env, "install").returncode == 0
    fakes.clear()
    refused = cli(env, "install", "--port", "18801")
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    assert fakes.calls() == []
    assert (isolated_home / UNIT_REL).read_text() == expected_unit(isolated_home)
    forced = cli(env, "install", "--port", "18801", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (isolated_home / UNIT_REL).read_text() == expected_unit(isolated_home, 18801)
    assert ["systemctl", "--user", "restart", UNIT_NAME] in fakes.calls()


def test_port_given_to_the_gateway_group_reaches_install(
    env: dict[str, str], isolated_home: Path
) -> None:
    """`coderclaw gateway --port N install` installs with --port N, like `install --port N`."""
    proc = cli(env, "--port", "18803", "install")
    assert proc.returncode == 0, proc.stderr
    assert (isolated_home / UNIT_REL).read_text() == expected_unit(isolated_home, 18803)


def test_install_rolls_back_when_no_user_manager_answers(
    env: dict[str, str], isolated_home: Path, fakes: FakeManagers
) -> None:
    """daemon-reload failing (no user bus, as over `su`) leaves no unit behind and the error
    says what to do."""
    fakes.override(
        "systemctl --user daemon-reload", rc=1, stderr="Failed to connect to bus: No medium found"
    )
    before = files_under(isolated_home)
    proc = cli(env, "install")
    assert proc.returncode == 1
    assert "Failed to connect to bus" in proc.stderr
    assert "XDG_RUNTIME_DIR" in proc.stderr
    assert files_under(isolated_home) == before


def test_install_without_systemctl_says_so_and_writes_nothing(
    env: dict[str, str], isolated_home: Path, tmp_path: Path
) -> None:
    """No systemctl on PATH: a ServiceError naming it and the foreground alternative."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env["PATH"] = str(empty)
    before = files_under(isolated_home)
    with pytest.raises(ServiceError) as err:
        install_service(load_settings(env))
    assert "`systemctl` was not found" in str(err.value)
    assert "coderclaw gateway" in str(err.value)
    assert files_under(isolated_home) == before


def test_install_with_a_broken_config_exits_78(
    env: dict[str, str], state_dir: Path, fakes: FakeManagers
) -> None:
    """A service that could only exit 78 is not installed: the config error comes first."""
    (state_dir / "coderclaw.json").write_text("{ gateway: { port: 'x' } }")
    proc = cli(env, "install")
    assert proc.returncode == 78
    assert "gateway.port" in proc.stderr
    assert fakes.calls() == []


def test_uninstall_removes_exactly_what_install_wrote(
    env: dict[str, str], isolated_home: Path, fakes: FakeManagers
) -> None:
    """After install then uninstall, the files under HOME are what they were before; uninstall
    runs disable --now and daemon-reload."""
    before = files_under(isolated_home)
    assert cli(env, "install").returncode == 0
    fakes.clear()
    proc = cli(env, "uninstall")
    assert proc.returncode == 0, proc.stderr
    assert fakes.calls() == [
        ["systemctl", "--user", "disable", "--now", UNIT_NAME],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert files_under(isolated_home) == before


def test_uninstall_without_a_user_manager_still_removes_the_unit_and_its_link(
    env: dict[str, str], isolated_home: Path, fakes: FakeManagers
) -> None:
    """When systemctl cannot disable (no user bus), uninstall still removes the unit and the
    default.target.wants link enable made, warns, and leaves HOME as before install."""
    before = files_under(isolated_home)
    assert cli(env, "install").returncode == 0
    assert (isolated_home / WANTS_REL).is_symlink()
    fakes.override("systemctl --user", rc=1, stderr="Failed to connect to bus: No medium found")
    proc = cli(env, "uninstall")
    assert proc.returncode == 0, proc.stderr
    assert "warning: `systemctl --user disable --now" in proc.stdout
    assert files_under(isolated_home) == before


def test_uninstall_when_not_installed_does_nothing(
    env: dict[str, str], fakes: FakeManagers
) -> None:
    """Nothing installed: uninstall says so, exits 0 and runs no command."""
    proc = cli(env, "uninstall")
    assert proc.returncode == 0
    assert "not installed" in proc.stdout
    assert fakes.calls() == []


def test_uninstall_leaves_a_unit_it_did_not_write_unless_forced(
    env: dict[str, str], isolated_home: Path
) -> None:
    """A hand-written unit of the same name is not ours: kept, unless --force."""
    unit = isolated_home / UNIT_REL
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    refused = cli(env, "uninstall")
    assert refused.returncode == 1
    assert "not written by `coderclaw gateway install`" in refused.stderr
    assert unit.exists()
    assert cli(env, "uninstall", "--force").returncode == 0
    assert not unit.exists()


@pytest.mark.parametrize("verb", ["start", "stop", "restart"])
def test_start_stop_restart_call_systemctl_user(
    env: dict[str, str], fakes: FakeManagers, verb: str
) -> None:
    """start/stop/restart map to `systemctl --user <verb> coderclaw-gateway.service`."""
    assert cli(env, "install").returncode == 0
    fakes.clear()
    proc = cli(env, verb)
    assert proc.returncode == 0, proc.stderr
    assert fakes.calls() == [["systemctl", "--user", verb, UNIT_NAME]]


@pytest.mark.parametrize("verb", ["start", "stop", "restart"])
def test_start_stop_restart_before_install_say_to_install(
    env: dict[str, str], fakes: FakeManagers, verb: str
) -> None:
    """Driving a service that is not installed fails with the command that installs it."""
    proc = cli(env, verb)
    assert proc.returncode == 1
    assert "coderclaw gateway install" in proc.stderr
    assert fakes.calls() == []


def test_status_json_reports_the_manager_and_probes_healthz(env: dict[str, str]) -> None:
    """status --json: installed, running with the pid systemd reports, and /healthz answered on
    the port the unit was installed with; exit 0. After stop: not running, exit 3."""
    with healthz_server() as port:
        assert cli(env, "install", "--port", str(port)).returncode == 0
        proc = cli(env, "status", "--json")
        assert proc.returncode == 0, proc.stderr
        status = json.loads(proc.stdout)
        assert status["manager"] == "systemd"
        assert status["installed"] is True
        assert status["running"] is True
        assert status["pid"] == 4242
        assert status["port"] == port
        assert status["health"]["ok"] is True
        assert status["health"]["url"] == f"http://127.0.0.1:{port}/healthz"
        assert "active (running), pid 4242, enabled" in status["detail"]
        assert cli(env, "stop").returncode == 0
        stopped = cli(env, "status")
    assert stopped.returncode == 3
    assert "inactive (dead)" in stopped.stdout
    assert "coderclaw gateway start" in stopped.stdout


def test_status_not_installed_and_gateway_down(env: dict[str, str]) -> None:
    """Nothing installed, nothing listening: exit 3, the install hint, the failed probe."""
    env["CODERCLAW_GATEWAY_PORT"] = str(free_port())
    proc = cli(env, "status")
    assert proc.returncode == 3
    assert "(not installed)" in proc.stdout
    assert "health:   no answer from" in proc.stdout
    assert "coderclaw gateway install" in proc.stdout


def test_status_running_but_not_answering_points_at_the_logs(env: dict[str, str]) -> None:
    """systemd says active but /healthz does not answer: the status names where the logs are."""
    env["CODERCLAW_GATEWAY_PORT"] = str(free_port())
    assert cli(env, "install").returncode == 0
    proc = cli(env, "status")
    assert proc.returncode == 0
    assert f"journalctl --user -u {UNIT_NAME}" in proc.stdout


def test_status_without_systemctl_is_unknown(env: dict[str, str], tmp_path: Path) -> None:
    """The manager cannot be asked: running is null, the detail names the problem, exit 4."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env["PATH"] = str(empty)
    env["CODERCLAW_GATEWAY_PORT"] = str(free_port())
    status = service_status(load_settings(env))
    assert status["running"] is None
    assert "`systemctl` was not found" in status["detail"]
    proc = cli(env, "status", "--json")
    assert proc.returncode == 4


def test_service_commands_work_with_a_broken_config(
    env: dict[str, str], state_dir: Path, fakes: FakeManagers
) -> None:
    """A broken config must not keep the user from stopping, inspecting or removing the
    service: a warning, then the command runs."""
    assert cli(env, "install").returncode == 0
    (state_dir / "coderclaw.json").write_text("{ nope: 1 }")
    fakes.clear()
    stop = cli(env, "stop")
    assert stop.returncode == 0, stop.stderr
    assert "warning: the config cannot be loaded" in stop.stderr
    status = cli(env, "status", "--json")
    assert json.loads(status.stdout)["installed"] is True
    assert cli(env, "uninstall").returncode == 0
    assert ["systemctl", "--user", "stop", UNIT_NAME] in fakes.calls()


# ---------------------------------------------------------------- launchd


@pytest.fixture
def launchd_env(env: dict[str, str]) -> dict[str, str]:
    return env | {"CODERCLAW_SERVICE_MANAGER": "launchd"}


def test_launchd_install_writes_the_plist_and_bootstraps_it(
    launchd_env: dict[str, str], isolated_home: Path, fakes: FakeManagers
) -> None:
    """Install writes the plist under ~/Library/LaunchAgents (and the logs dir it names),
    enables and bootstraps it in gui/<uid>; no file and no command sees the token."""
    before = files_under(isolated_home)
    proc = cli(launchd_env, "install")
    assert proc.returncode == 0, proc.stderr
    plist = isolated_home / PLIST_REL
    assert fakes.calls() == [
        ["launchctl", "print", TARGET],
        ["launchctl", "enable", TARGET],
        ["launchctl", "bootstrap", f"gui/{os.getuid()}", str(plist)],
    ]
    assert set(files_under(isolated_home)) - set(before) == {PLIST_REL}
    data = plistlib.loads(plist.read_bytes())
    assert data["ProgramArguments"][0] == str(Path(sys.executable).absolute())
    assert data["StandardOutPath"] == str(isolated_home / ".coderclaw/logs/gateway.log")
    assert (isolated_home / ".coderclaw/logs").is_dir()
    assert_no_token_outside_env_file(isolated_home, fakes)


def test_launchd_reinstall_boots_out_the_loaded_job_first(
    launchd_env: dict[str, str], fakes: FakeManagers
) -> None:
    """Installing over a loaded job unloads it before loading the new plist (else bootstrap
    fails with 'Input/output error')."""
    assert cli(launchd_env, "install").returncode == 0
    fakes.clear()
    proc = cli(launchd_env, "install", "--port", "18802", "--force")
    assert proc.returncode == 0, proc.stderr
    assert [c[:2] for c in fakes.calls()] == [
        ["launchctl", "print"],
        ["launchctl", "bootout"],
        ["launchctl", "enable"],
        ["launchctl", "bootstrap"],
    ]


def test_launchd_uninstall_removes_exactly_what_install_wrote(
    launchd_env: dict[str, str], isolated_home: Path, fakes: FakeManagers
) -> None:
    """Uninstall boots the job out and removes the plist; only the (empty) logs dir stays."""
    before = files_under(isolated_home)
    assert cli(launchd_env, "install").returncode == 0
    fakes.clear()
    assert cli(launchd_env, "uninstall").returncode == 0
    assert fakes.calls() == [["launchctl", "print", TARGET], ["launchctl", "bootout", TARGET]]
    assert files_under(isolated_home) == before


def test_launchd_start_stop_restart(launchd_env: dict[str, str], fakes: FakeManagers) -> None:
    """restart = kickstart -k; stop = bootout; start of an unloaded job = enable + bootstrap."""
    assert cli(launchd_env, "install").returncode == 0
    fakes.clear()
    assert cli(launchd_env, "restart").returncode == 0
    assert fakes.calls()[-1] == ["launchctl", "kickstart", "-k", TARGET]
    assert cli(launchd_env, "stop").returncode == 0
    assert fakes.calls()[-1] == ["launchctl", "bootout", TARGET]
    fakes.clear()
    assert cli(launchd_env, "start").returncode == 0
    assert [c[1] for c in fakes.calls()] == ["print", "enable", "bootstrap"]


def test_launchd_status_reads_launchctl_print(launchd_env: dict[str, str]) -> None:
    """status parses the job's state and pid from `launchctl print` (top-level fields only)."""
    env = launchd_env | {"CODERCLAW_GATEWAY_PORT": str(free_port())}
    assert cli(env, "install").returncode == 0
    proc = cli(env, "status", "--json")
    status = json.loads(proc.stdout)
    assert (status["manager"], status["running"], status["pid"]) == ("launchd", True, 4343)
    assert status["detail"] == "loaded, running, pid 4343, last exit code (never exited)"
    assert cli(env, "stop").returncode == 0
    stopped = json.loads(cli(env, "status", "--json").stdout)
    assert (stopped["running"], stopped["detail"]) == (False, "not loaded")


# ---------------------------------------------------------------- choosing


@pytest.mark.parametrize(
    ("override", "platform", "expected"),
    [
        ("", "linux", "systemd"),
        ("", "darwin", "launchd"),
        ("launchd", "linux", "launchd"),
        ("systemd", "darwin", "systemd"),
    ],
)
def test_choose_manager_by_platform_with_override(
    override: str, platform: str, expected: str
) -> None:
    """Linux → systemd, macOS → launchd; CODERCLAW_SERVICE_MANAGER wins."""
    assert choose_manager({"CODERCLAW_SERVICE_MANAGER": override}, platform) == expected


@pytest.mark.parametrize(
    ("override", "platform", "message"),
    [("upstart", "linux", "is not a service manager"), ("", "win32", "no supported")],
)
def test_choose_manager_errors_say_what_to_do(override: str, platform: str, message: str) -> None:
    """An unknown override or platform is a ServiceError with a way forward."""
    with pytest.raises(ServiceError, match=message) as err:
        choose_manager({"CODERCLAW_SERVICE_MANAGER": override}, platform)
    assert err.value.hint


def test_uninstall_in_process_matches_the_cli(env: dict[str, str], isolated_home: Path) -> None:
    """The library call the onboarding uses removes the unit install_service wrote."""
    settings = load_settings(env)
    install_service(settings)
    assert "removed" in uninstall_service(settings)
    assert not (isolated_home / UNIT_REL).exists()


def test_onboard_install_daemon_installs_and_starts_the_service(
    env: dict[str, str], isolated_home: Path, state_dir: Path, fakes: FakeManagers
) -> None:
    """`onboard ... --install-daemon` saves the token, then writes the unit and runs
    daemon-reload and enable --now, like `gateway install`; the unit holds no token."""
    (state_dir / ".env").unlink()
    # The Hub is unreachable (a closed port): onboarding warns and still saves the token.
    (state_dir / "coderclaw.json").write_text(
        '{ models: { providers: { huggingface: { hubUrl: "http://127.0.0.1:9" } } } }'
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            *ONBOARD_WITH_KEY,
            TOKEN,
            "--install-daemon",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert ["systemctl", "--user", "daemon-reload"] in fakes.calls()
    assert ["systemctl", "--user", "enable", "--now", UNIT_NAME] in fakes.calls()
    assert (isolated_home / UNIT_REL).read_text() == expected_unit(isolated_home)
    assert f"HF_TOKEN={TOKEN}" in (state_dir / ".env").read_text()
    assert TOKEN not in proc.stdout + proc.stderr
    assert_no_token_outside_env_file(isolated_home, fakes)
