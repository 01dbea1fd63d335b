"""Settings (SPEC §1, §3): paths, environment precedence, the login shell, the token, the port."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import (
    KNOWN_KEYS,
    Paths,
    hf_token_file,
    load_settings,
    merge_layers,
    read_env_file,
)

PATH = os.environ.get("PATH", "/usr/bin:/bin")


def _env(home: Path, **extra: str) -> dict[str, str]:
    """An explicit environment for load_settings: nothing of the real process leaks in."""
    return {"HOME": str(home), "PATH": PATH, **extra}


def _config(state: Path, data: dict[str, object]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "coderclaw.json").write_text(json.dumps(data))


def _login_shell(tmp_path: Path, body: str, name: str = "login-shell") -> tuple[Path, Path]:
    """An executable stand-in for the user's login shell, called as `$SHELL -l -c 'env -0'`.

    It records its arguments in a log file, runs ``body``, then runs the command it was given.
    """
    log = tmp_path / f"{name}.log"
    script = tmp_path / name
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        f"{body}\n"
        'if [ "$1" = "-l" ] && [ "$2" = "-c" ]; then exec /bin/sh -c "$3"; fi\n'
        "exit 64\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


def _shell_config(state: Path, *, timeout_ms: int = 5000, **vars_: str) -> None:
    _config(state, {"env": {"vars": vars_, "shellEnv": {"enabled": True, "timeoutMs": timeout_ms}}})


# ---------------------------------------------------------------------------------------- paths


def test_default_paths_live_under_home(isolated_home: Path) -> None:
    """State dir ~/.coderclaw holds the config, the .env, the catalog cache and the logs."""
    paths = Paths.from_env({"HOME": str(isolated_home)})
    state = isolated_home / ".coderclaw"
    assert paths.home == isolated_home
    assert paths.state_dir == state
    assert paths.config == state / "coderclaw.json"
    assert paths.env_file == state / ".env"
    assert paths.cache_file == state / "cache" / "huggingface-models.json"
    assert paths.logs_dir == state / "logs"


def test_coderclaw_state_dir_moves_everything_but_an_explicit_config(tmp_path: Path) -> None:
    """CODERCLAW_STATE_DIR moves config, .env and cache; CODERCLAW_CONFIG_PATH wins for config."""
    state = tmp_path / "elsewhere"
    paths = Paths.from_env({"HOME": "/nowhere", "CODERCLAW_STATE_DIR": str(state)})
    assert (paths.config, paths.env_file, paths.cache_file) == (
        state / "coderclaw.json",
        state / ".env",
        state / "cache" / "huggingface-models.json",
    )
    paths = Paths.from_env(
        {"HOME": "/nowhere", "CODERCLAW_STATE_DIR": str(state), "CODERCLAW_CONFIG_PATH": "/c.json"}
    )
    assert paths.config == Path("/c.json")
    assert paths.env_file == state / ".env"


def test_coderclaw_home_replaces_home_for_every_derived_path(tmp_path: Path) -> None:
    """CODERCLAW_HOME replaces $HOME, including for `~` in the other variables."""
    other = tmp_path / "other-home"
    paths = Paths.from_env({"HOME": "/nowhere", "CODERCLAW_HOME": str(other)})
    assert paths.home == other
    assert paths.state_dir == other / ".coderclaw"
    paths = Paths.from_env(
        {"HOME": "/nowhere", "CODERCLAW_HOME": str(other), "CODERCLAW_STATE_DIR": "~/state"}
    )
    assert paths.state_dir == other / "state"
    paths = Paths.from_env({"HOME": str(tmp_path), "CODERCLAW_HOME": "~/ch"})
    assert paths.home == tmp_path / "ch"


def test_load_settings_reads_the_config_and_env_file_of_the_state_dir(tmp_path: Path) -> None:
    """The .env and the config are found through CODERCLAW_STATE_DIR."""
    state = tmp_path / "state"
    _config(state, {"gateway": {"port": 20001}})
    (state / ".env").write_text("FROM_STATE_ENV=yes\n")
    settings = load_settings(_env(tmp_path / "home", CODERCLAW_STATE_DIR=str(state)))
    assert settings.port == 20001
    assert settings.env["FROM_STATE_ENV"] == "yes"
    assert settings.paths.state_dir == state


# --------------------------------------------------------------------------------- env precedence


def test_process_env_beats_the_env_file(state_dir: Path, isolated_home: Path) -> None:
    """1 > 2: a variable of the process is not overridden by $STATE/.env."""
    (state_dir / ".env").write_text("KEY=from-dotenv\nONLY_DOTENV=d\n")
    settings = load_settings(_env(isolated_home, KEY="from-process"))
    assert settings.env["KEY"] == "from-process"
    assert settings.env["ONLY_DOTENV"] == "d"


def test_env_file_beats_config_env_vars(state_dir: Path, isolated_home: Path) -> None:
    """2 > 3: $STATE/.env is not overridden by the config's env.vars."""
    _config(state_dir, {"env": {"vars": {"KEY": "from-config", "ONLY_CONFIG": "c"}}})
    (state_dir / ".env").write_text("KEY=from-dotenv\n")
    settings = load_settings(_env(isolated_home))
    assert settings.env["KEY"] == "from-dotenv"
    assert settings.env["ONLY_CONFIG"] == "c"


def test_process_env_beats_config_env_vars(state_dir: Path, isolated_home: Path) -> None:
    """1 > 3: the process environment is not overridden by env.vars."""
    _config(state_dir, {"env": {"vars": {"KEY": "from-config"}}})
    settings = load_settings(_env(isolated_home, KEY="from-process"))
    assert settings.env["KEY"] == "from-process"


@pytest.mark.parametrize(
    ("process", "dotenv", "config", "shell", "expected"),
    [
        ("p", "d", "c", "s", "p"),
        (None, "d", "c", "s", "d"),
        (None, None, "c", "s", "c"),
        (None, None, None, "s", "s"),
        ("p", None, None, "s", "p"),
        (None, "d", None, "s", "d"),
    ],
)
def test_each_env_source_in_order_for_hf_token(
    process: str | None,
    dotenv: str | None,
    config: str | None,
    shell: str | None,
    expected: str,
    state_dir: Path,
    isolated_home: Path,
    tmp_path: Path,
) -> None:
    """process env > $STATE/.env > env.vars > env.shellEnv, for HF_TOKEN as seen in settings."""
    script, _ = _login_shell(tmp_path, f"export HF_TOKEN=hf_{shell}")
    _shell_config(state_dir, **({"HF_TOKEN": f"hf_{config}"} if config else {}))
    if dotenv:
        (state_dir / ".env").write_text(f"HF_TOKEN=hf_{dotenv}\n")
    extra = {"HF_TOKEN": f"hf_{process}"} if process else {}
    settings = load_settings(_env(isolated_home, SHELL=str(script), **extra))
    assert settings.env["HF_TOKEN"] == f"hf_{expected}"
    assert settings.hf_token is not None
    assert settings.hf_token.reveal() == f"hf_{expected}"
    assert settings.token_source == "HF_TOKEN"


def test_config_vars_may_use_variables_of_the_env_file(
    state_dir: Path, isolated_home: Path
) -> None:
    """env.vars values substitute ${VAR} from the process and the .env file."""
    _config(state_dir, {"env": {"vars": {"HF_TOKEN": "${SECRET_FROM_DOTENV}"}}})
    (state_dir / ".env").write_text("SECRET_FROM_DOTENV=hf_fromdotenv\n")
    settings = load_settings(_env(isolated_home))
    assert settings.env["HF_TOKEN"] == "hf_fromdotenv"


def test_config_strings_substitute_from_every_source(state_dir: Path, isolated_home: Path) -> None:
    """`${VAR}` in the config sees the merged environment, env.vars included."""
    _config(
        state_dir,
        {
            "env": {"vars": {"MY_HOST": "10.0.0.7"}},
            "gateway": {"bind": "custom", "host": "${MY_HOST}"},
            "models": {"providers": {"huggingface": {"apiKey": "${KEY_IN_DOTENV}"}}},
        },
    )
    (state_dir / ".env").write_text("KEY_IN_DOTENV=hf_dotenvkey\n")
    settings = load_settings(_env(isolated_home))
    assert settings.host == "10.0.0.7"
    assert settings.hf_token is not None and settings.hf_token.reveal() == "hf_dotenvkey"


def test_merge_layers_first_layer_wins() -> None:
    """The pure merge: earlier layers have the higher precedence."""
    assert merge_layers([{"a": "1"}, {"a": "2", "b": "2"}, {"c": "3", "b": "3"}]) == {
        "a": "1",
        "b": "2",
        "c": "3",
    }


# ------------------------------------------------------------------------------------ .env file


def test_env_file_syntax(tmp_path: Path) -> None:
    """Quotes, `export`, comments and blank lines; no ${VAR} expansion from the process."""
    path = tmp_path / ".env"
    path.write_text(
        "# the token\n"
        "\n"
        "export HF_TOKEN=hf_exported\n"
        'DOUBLE="two words"\n'
        "SINGLE='keeps # and $ {X} and ${HOME}'\n"
        "PLAIN=value # trailing comment\n"
        "   \n"
        "  SPACED = spaced  \n"
        "EMPTY=\n"
        'ESCAPED="line1\\nline2"\n'
    )
    assert read_env_file(path) == {
        "HF_TOKEN": "hf_exported",
        "DOUBLE": "two words",
        "SINGLE": "keeps # and $ {X} and ${HOME}",
        "PLAIN": "value",
        "SPACED": "spaced",
        "EMPTY": "",
        "ESCAPED": "line1\nline2",
    }


def test_a_missing_env_file_is_empty(tmp_path: Path) -> None:
    """No .env is not an error."""
    assert read_env_file(tmp_path / "absent") == {}


def test_an_env_file_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    """A .env that cannot be read stops the start with a message naming it."""
    (tmp_path / ".env").mkdir()
    with pytest.raises(ConfigError, match="is not a regular file") as info:
        read_env_file(tmp_path / ".env")
    assert info.value.file == str(tmp_path / ".env")


def test_an_env_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a ConfigError naming the file (exit 78), not a crash."""
    (tmp_path / ".env").write_bytes(b"HF_TOKEN=\xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read the env file") as info:
        read_env_file(tmp_path / ".env")
    assert info.value.exit_code == 78


# ------------------------------------------------------------------------------------ shellEnv


def test_shell_env_imports_a_missing_key(
    state_dir: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """The login shell runs once as `$SHELL -l -c 'env -0'`; a missing known key is imported."""
    script, log = _login_shell(
        tmp_path, "export HF_HOME=/from/login/shell\nexport NOT_A_KNOWN_KEY=x"
    )
    _shell_config(state_dir)
    settings = load_settings(_env(isolated_home, SHELL=str(script)))
    assert settings.env["HF_HOME"] == "/from/login/shell"
    assert "NOT_A_KNOWN_KEY" not in settings.env, "only the known keys are imported"
    assert log.read_text().splitlines() == ["-l -c env -0"]
    assert settings.warnings == ()


def test_shell_env_never_overrides_a_higher_source(
    state_dir: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """Each missing key on its own: present keys keep their value, absent ones are filled."""
    script, _ = _login_shell(
        tmp_path,
        "export HF_TOKEN=hf_shell\nexport HUGGINGFACE_HUB_TOKEN=hf_shellhub\n"
        "export CODERCLAW_GATEWAY_TOKEN=shell-gw\nexport CODERCLAW_GATEWAY_PORT=1111",
    )
    _shell_config(state_dir, CODERCLAW_GATEWAY_TOKEN="config-gw")
    (state_dir / ".env").write_text("HF_TOKEN=hf_dotenv\n")
    settings = load_settings(_env(isolated_home, SHELL=str(script), CODERCLAW_GATEWAY_PORT="2222"))
    assert settings.env["HF_TOKEN"] == "hf_dotenv"
    assert settings.env["CODERCLAW_GATEWAY_TOKEN"] == "config-gw"
    assert settings.env["CODERCLAW_GATEWAY_PORT"] == "2222"
    assert settings.port == 2222
    assert settings.env["HUGGINGFACE_HUB_TOKEN"] == "hf_shellhub"
    # HUGGINGFACE_HUB_TOKEN comes first in the token order, whichever source gave it
    assert settings.token_source == "HUGGINGFACE_HUB_TOKEN"


def test_shell_env_is_not_run_when_disabled_or_nothing_is_missing(
    state_dir: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """The shell is not started unless shellEnv is enabled and a known key is missing."""
    script, log = _login_shell(tmp_path, "export HF_TOKEN=hf_shell")
    _config(state_dir, {"env": {"shellEnv": {"enabled": False}}})
    settings = load_settings(_env(isolated_home, SHELL=str(script)))
    assert "HF_TOKEN" not in settings.env
    _shell_config(state_dir)
    everything = {key: "1234" for key in KNOWN_KEYS}
    settings = load_settings(_env(isolated_home, SHELL=str(script), **everything))
    assert settings.env["HF_TOKEN"] == "1234"
    assert not log.exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_shell_env_timeout_is_honoured_and_its_children_are_killed(
    state_dir: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """A login shell that hangs is abandoned after timeoutMs with a warning; nothing lingers."""
    pidfile = tmp_path / "sleep.pid"
    script, _ = _login_shell(tmp_path, f'sleep 30 &\necho $! > "{pidfile}"\nwait')
    _shell_config(state_dir, timeout_ms=400)
    started = time.monotonic()
    settings = load_settings(_env(isolated_home, SHELL=str(script)))
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 5.0
    assert "HF_TOKEN" not in settings.env
    assert len(settings.warnings) == 1
    assert "did not finish in 0.4s" in settings.warnings[0]
    assert "timeoutMs" in settings.warnings[0], "the warning says what to do"
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the shell's own children are killed with it"


def test_a_failing_login_shell_is_a_warning_not_a_crash(
    state_dir: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """A shell profile that exits non-zero gives a warning; the gateway still starts."""
    script, _ = _login_shell(tmp_path, "export HF_TOKEN=hf_never\necho broken >&2\nexit 3")
    _shell_config(state_dir)
    settings = load_settings(_env(isolated_home, SHELL=str(script)))
    assert "HF_TOKEN" not in settings.env
    assert settings.warnings == (
        f"env.shellEnv: the login shell {script} exited with status 3; check your shell "
        "profile or put the variables in the .env file",
    )


def test_a_login_shell_that_cannot_run_is_a_warning(
    state_dir: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """SHELL pointing at nothing executable is a warning too."""
    _shell_config(state_dir)
    settings = load_settings(_env(isolated_home, SHELL=str(tmp_path / "no-such-shell")))
    assert len(settings.warnings) == 1
    assert "cannot run the login shell" in settings.warnings[0]


def test_a_broken_env_section_fails_before_the_shell_runs(
    state_dir: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """A wrong shellEnv type is a config error and the login shell is never started."""
    script, log = _login_shell(tmp_path, "")
    _config(state_dir, {"env": {"shellEnv": {"enabled": True, "timeoutMs": "soon"}}})
    with pytest.raises(ConfigError, match="expected an integer, got a string") as info:
        load_settings(_env(isolated_home, SHELL=str(script)))
    assert info.value.path == "env.shellEnv.timeoutMs"
    assert not log.exists()


# ------------------------------------------------------------------------------------- token


def _token_scenario(
    home: Path,
    *,
    api_key: str | None = None,
    file_token: str | None = None,
    **env: str,
) -> dict[str, str]:
    state = home / ".coderclaw"
    if api_key is not None:
        _config(state, {"models": {"providers": {"huggingface": {"apiKey": api_key}}}})
    if file_token is not None:
        token_file = home / ".cache" / "huggingface" / "token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(file_token)
    return _env(home, **env)


@pytest.mark.parametrize(
    ("api_key", "variables", "file_token", "token", "source"),
    [
        (
            "hf_cfg",
            {"HUGGINGFACE_HUB_TOKEN": "hf_a", "HF_TOKEN": "hf_b", "HUGGING_FACE_HUB_TOKEN": "hf_c"},
            "hf_file",
            "hf_cfg",
            "config models.providers.huggingface.apiKey",
        ),
        (
            None,
            {"HUGGINGFACE_HUB_TOKEN": "hf_a", "HF_TOKEN": "hf_b", "HUGGING_FACE_HUB_TOKEN": "hf_c"},
            "hf_file",
            "hf_a",
            "HUGGINGFACE_HUB_TOKEN",
        ),
        (
            None,
            {"HF_TOKEN": "hf_b", "HUGGING_FACE_HUB_TOKEN": "hf_c"},
            "hf_file",
            "hf_b",
            "HF_TOKEN",
        ),
        (None, {"HUGGING_FACE_HUB_TOKEN": "hf_c"}, "hf_file", "hf_c", "HUGGING_FACE_HUB_TOKEN"),
        (None, {}, "hf_file", "hf_file", "FILE"),
        # empty and blank values do not count: the next source is used
        ("", {"HUGGINGFACE_HUB_TOKEN": "", "HF_TOKEN": " \r\n"}, "hf_file", "hf_file", "FILE"),
        ("  ", {"HF_TOKEN": "hf_b"}, None, "hf_b", "HF_TOKEN"),
        (None, {}, "\n", None, None),
        (None, {}, None, None, None),
    ],
)
def test_token_resolution_order(
    api_key: str | None,
    variables: dict[str, str],
    file_token: str | None,
    token: str | None,
    source: str | None,
    isolated_home: Path,
) -> None:
    """apiKey > HUGGINGFACE_HUB_TOKEN > HF_TOKEN > HUGGING_FACE_HUB_TOKEN > the token file."""
    env = _token_scenario(isolated_home, api_key=api_key, file_token=file_token, **variables)
    settings = load_settings(env)
    if token is None:
        assert settings.hf_token is None
        assert settings.token_source is None
        return
    assert settings.hf_token is not None
    assert settings.hf_token.reveal() == token
    expected_source = (
        str(isolated_home / ".cache/huggingface/token") if source == "FILE" else source
    )
    assert settings.token_source == expected_source


@pytest.mark.parametrize(
    ("env", "relative"),
    [
        ({"HF_TOKEN_PATH": "{tmp}/custom/tok"}, "custom/tok"),
        ({"HF_HOME": "{tmp}/hfhome"}, "hfhome/token"),
        ({"XDG_CACHE_HOME": "{tmp}/xdg"}, "xdg/huggingface/token"),
        ({"HF_TOKEN_PATH": "{tmp}/custom/tok", "HF_HOME": "{tmp}/hfhome"}, "custom/tok"),
        ({}, "home/.cache/huggingface/token"),
        ({"CODERCLAW_HOME": "{tmp}/chome"}, "chome/.cache/huggingface/token"),
        ({"HF_TOKEN_PATH": "~/tilde/tok", "CODERCLAW_HOME": "{tmp}/chome"}, "chome/tilde/tok"),
    ],
)
def test_the_token_file_location(env: dict[str, str], relative: str, tmp_path: Path) -> None:
    """HF_TOKEN_PATH, else $HF_HOME/token, else the cache dir under CODERCLAW_HOME or HOME."""
    resolved = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    full = {"HOME": str(tmp_path / "home"), **resolved}
    paths = Paths.from_env(full)
    assert hf_token_file(full, paths.home) == tmp_path / relative
    # and load_settings really reads it from there, cleaned of white space and CR/LF
    target = tmp_path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("  hf_fromfile\r\n")
    settings = load_settings({**full, "PATH": PATH})
    assert settings.hf_token is not None
    assert settings.hf_token.reveal() == "hf_fromfile"
    assert settings.token_source == str(target)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("hf_abc\n", "hf_abc"),
        ("hf_abc\r\n", "hf_abc"),
        ("  hf_abc\t", "hf_abc"),
        ("hf_a\rbc", "hf_abc"),
    ],
)
def test_token_cleaning(raw: str, clean: str, isolated_home: Path) -> None:
    """CR, LF and surrounding white space are removed, as huggingface_hub does."""
    settings = load_settings(_env(isolated_home, HF_TOKEN=raw))
    assert settings.hf_token is not None
    assert settings.hf_token.reveal() == clean


SECRET = "hf_SeCrEtToKeN0123456789"


@pytest.mark.parametrize("where", ["config", "env", "file"])
def test_a_token_with_bad_characters_is_an_error_that_never_shows_it(
    where: str, isolated_home: Path
) -> None:
    """A token with inner spaces or non-ASCII is a ConfigError; the message has no token part."""
    bad = f"{SECRET} é{SECRET[::-1]}"
    if where == "config":
        env = _token_scenario(isolated_home, api_key=bad)
    elif where == "env":
        env = _token_scenario(isolated_home, HF_TOKEN=bad)
    else:
        env = _token_scenario(isolated_home, file_token=bad)
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    text = f"{info.value} {info.value.hint} {info.value!r}"
    assert "cannot be sent in an HTTP header" in text
    assert SECRET not in text
    assert SECRET[::-1] not in text
    assert "SeCrEt" not in text and "0123456789" not in text


def test_settings_never_print_the_tokens(state_dir: Path, isolated_home: Path) -> None:
    """repr(settings) masks the HF token and the gateway token (config and env included)."""
    _config(
        state_dir,
        {
            "models": {"providers": {"huggingface": {"apiKey": SECRET}}},
            "gateway": {"auth": {"token": "gw-" + SECRET}},
        },
    )
    settings = load_settings(_env(isolated_home, HF_TOKEN=SECRET[::-1]))
    text = repr(settings)
    assert SECRET not in text
    assert SECRET[::-1] not in text
    assert settings.secrets() == (SECRET, "gw-" + SECRET)


# ---------------------------------------------------------------------------- gateway token


def test_gateway_token_env_beats_config(state_dir: Path, isolated_home: Path) -> None:
    """CODERCLAW_GATEWAY_TOKEN wins over gateway.auth.token."""
    _config(state_dir, {"gateway": {"auth": {"token": "from-config"}}})
    settings = load_settings(_env(isolated_home))
    assert settings.gateway_token is not None
    assert settings.gateway_token.reveal() == "from-config"
    settings = load_settings(_env(isolated_home, CODERCLAW_GATEWAY_TOKEN="from-env\n"))
    assert settings.gateway_token is not None
    assert settings.gateway_token.reveal() == "from-env"


def test_a_gateway_token_with_spaces_is_an_error_that_does_not_show_it(
    state_dir: Path, isolated_home: Path
) -> None:
    """The gateway token must fit in a header; the error names where it came from, not it."""
    _config(state_dir, {"gateway": {"auth": {"token": "my secret words"}}})
    with pytest.raises(ConfigError) as info:
        load_settings(_env(isolated_home))
    assert info.value.path == "gateway.auth.token"
    assert "secret words" not in str(info.value)


# ------------------------------------------------------------------------------------- port


@pytest.mark.parametrize(
    ("arg", "env_port", "config_port", "expected"),
    [
        (None, None, None, 18789),
        (None, None, 20000, 20000),
        (None, "20001", 20000, 20001),
        (20002, "20001", 20000, 20002),
        (20002, None, None, 20002),
        (None, " 20003 ", None, 20003),
    ],
)
def test_port_precedence(
    arg: int | None,
    env_port: str | None,
    config_port: int | None,
    expected: int,
    state_dir: Path,
    isolated_home: Path,
) -> None:
    """--port > CODERCLAW_GATEWAY_PORT > gateway.port > 18789."""
    if config_port is not None:
        _config(state_dir, {"gateway": {"port": config_port}})
    extra = {"CODERCLAW_GATEWAY_PORT": env_port} if env_port else {}
    assert load_settings(_env(isolated_home, **extra), port=arg).port == expected


def test_port_from_the_env_file(state_dir: Path, isolated_home: Path) -> None:
    """CODERCLAW_GATEWAY_PORT may come from $STATE/.env like any variable."""
    (state_dir / ".env").write_text("CODERCLAW_GATEWAY_PORT=20004\n")
    assert load_settings(_env(isolated_home)).port == 20004


@pytest.mark.parametrize("bad", ["abc", "0", "70000", "-1", "80.5"])
def test_a_bad_gateway_port_variable_is_a_config_error(bad: str, isolated_home: Path) -> None:
    """A CODERCLAW_GATEWAY_PORT that is not 1-65535 stops with a message naming it."""
    with pytest.raises(ConfigError) as info:
        load_settings(_env(isolated_home, CODERCLAW_GATEWAY_PORT=bad))
    assert f"CODERCLAW_GATEWAY_PORT={bad!r} is not a port number (1-65535)" in str(info.value)
    assert info.value.hint == "fix or unset CODERCLAW_GATEWAY_PORT"


@pytest.mark.parametrize("bad", [0, 65536, -5])
def test_a_bad_port_argument_is_a_config_error(bad: int, isolated_home: Path) -> None:
    """--port outside 1-65535 is refused like the variable."""
    with pytest.raises(ConfigError, match=f"--port {bad} is not a port number"):
        load_settings(_env(isolated_home), port=bad)


# ------------------------------------------------------------------------------------- bind


@pytest.mark.parametrize(
    ("gateway", "host", "loopback"),
    [
        ({}, "127.0.0.1", True),
        ({"bind": "lan"}, "0.0.0.0", False),
        ({"bind": "custom", "host": "127.0.0.2"}, "127.0.0.2", True),
        ({"bind": "custom", "host": "192.168.1.5"}, "192.168.1.5", False),
    ],
)
def test_bind_modes(
    gateway: dict[str, str], host: str, loopback: bool, state_dir: Path, isolated_home: Path
) -> None:
    """loopback → 127.0.0.1, lan → 0.0.0.0, custom → gateway.host."""
    _config(state_dir, {"gateway": gateway})
    settings = load_settings(_env(isolated_home))
    assert settings.host == host
    assert settings.is_loopback is loopback


def test_custom_bind_without_host_is_a_config_error(state_dir: Path, isolated_home: Path) -> None:
    """bind 'custom' needs gateway.host."""
    _config(state_dir, {"gateway": {"bind": "custom"}})
    with pytest.raises(ConfigError, match="no host is set") as info:
        load_settings(_env(isolated_home))
    assert info.value.path == "gateway.host"
