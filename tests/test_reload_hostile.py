"""Hostile files met by a reload of the running gateway (a real ``gateway run`` process).

A config file replaced by a directory, a FIFO or a file nested too deeply, a ``.env`` that
cannot be read or parsed, a token with a line break or a space in it: each reload logs one
clear ``config_reload_failed`` event naming the file (never a token), the gateway keeps serving
with what it had, nothing is rewritten, and a fixed file is picked up by the next reload.
(A config with a JSON5 or schema error is tests/test_daemon.py's.)
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import clean_env
from tests.daemon_harness import GatewayProcess, chat, free_port, gateway_argv, run_process
from tests.fake_router import FakeRouter
from tests.gateway_harness import TOKEN, write_config

NEW_TOKEN = "hf_reloadedTokenQRSTUV987654"
MODEL_A = "huggingface/org/model-a"
MODEL_B = "huggingface/org/model-b"


def write_env(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


async def reload(gw: GatewayProcess, outcome: str) -> dict[str, object]:
    """SIGHUP, then the first ``config_reloaded``/``config_reload_failed`` event after it."""
    mark = len(gw.stderr)
    gw.send(signal.SIGHUP)
    event = await gw.wait_event(outcome, after=mark)
    other = "config_reloaded" if outcome == "config_reload_failed" else "config_reload_failed"
    assert other not in {e["event"] for e in gw.events()[mark:]}
    return event


async def assert_serves(
    http: aiohttp.ClientSession, gw: GatewayProcess, router: FakeRouter, model: str, token: str
) -> None:
    resp = await chat(http, gw.v1)
    assert resp.status == 200
    assert resp.headers["x-coderclaw-model"] == model
    assert router.chat_requests()[-1].token == token


def no_secret_in_logs(gw: GatewayProcess) -> None:
    text = gw.log_text()
    assert TOKEN not in text and NEW_TOKEN not in text
    assert "hf_" not in text  # not even a part of a token


@asynccontextmanager
async def running_gateway(
    home: Path, router: FakeRouter
) -> AsyncIterator[tuple[GatewayProcess, Path, Path]]:
    """``gateway run`` (chain [MODEL_A], ``HF_TOKEN=TOKEN`` in its .env), healthy; yields the
    process, the config and the .env (neither rewritten by the start). At the end of the
    block: SIGTERM exits 0, and no token is in the log."""
    config = write_config(home, router, chain=[MODEL_A])
    config_text = config.read_text()
    env_file = config.parent / ".env"
    write_env(env_file, f"HF_TOKEN={TOKEN}\n")
    port = free_port()
    async with run_process(gateway_argv(port), clean_env(home), port=port) as gw:
        await gw.wait_healthy()
        assert config.read_text() == config_text
        assert env_file.read_text() == f"HF_TOKEN={TOKEN}\n"
        yield gw, config, env_file
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0
    no_secret_in_logs(gw)


def remove(path: Path) -> None:
    """Take away a broken file, whether a directory or not."""
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink()


def to_directory(path: Path) -> None:
    """Replace a file (the config or the .env) by an empty directory of the same name."""
    path.unlink()
    path.mkdir()


def to_fifo(path: Path) -> None:
    """Replace a file (the config or the .env) by a FIFO nobody writes to."""
    path.unlink()
    os.mkfifo(path)


# -- the config file ---------------------------------------------------------------------------


def config_nested(config: Path) -> None:
    config.write_text("{ gateway: " + "[" * 5000 + "]" * 5000 + " }")


@pytest.mark.parametrize(
    ("breaks", "says"),
    [
        (to_directory, "is a directory, not a config file"),
        (to_fifo, "is not a regular file"),
        (config_nested, "nested too deeply"),
    ],
    ids=["directory", "fifo", "nested-5000-deep"],
)
async def test_a_config_that_cannot_be_a_config_fails_the_reload_and_the_gateway_keeps_serving(
    isolated_home: Path,
    router: FakeRouter,
    http: aiohttp.ClientSession,
    breaks: Callable[[Path], None],
    says: str,
) -> None:
    """Before: a FIFO blocked the reload thread for ever, and 5,000 nested arrays were a
    RecursionError that killed the reload task without a word."""
    async with running_gateway(isolated_home, router) as (gw, config, env_file):
        await assert_serves(http, gw, router, MODEL_A, TOKEN)

        breaks(config)
        failed = await reload(gw, "config_reload_failed")
        assert failed["level"] == "error"
        assert failed["kept"] == "previous"
        assert str(config) in str(failed["error"]) and says in str(failed["error"])
        await assert_serves(http, gw, router, MODEL_A, TOKEN)
        assert env_file.read_text() == f"HF_TOKEN={TOKEN}\n"

        remove(config)
        write_config(isolated_home, router, chain=[MODEL_B])
        await reload(gw, "config_reloaded")
        await assert_serves(http, gw, router, MODEL_B, TOKEN)


# -- the .env file -----------------------------------------------------------------------------


def env_not_utf8(env_file: Path) -> None:
    env_file.write_bytes(b"HF_TOKEN=hf_\xff\xfe\n")


def env_unclosed_quote(env_file: Path) -> None:
    write_env(env_file, f'OTHER=1\nHF_TOKEN="{NEW_TOKEN}\n')


def env_unreadable(env_file: Path) -> None:
    env_file.chmod(0)


@pytest.mark.parametrize(
    ("breaks", "says"),
    [
        (to_directory, "is not a regular file"),
        (to_fifo, "is not a regular file"),
        (env_not_utf8, "cannot read the env file"),
        (env_unclosed_quote, ":2: this line is not KEY=value (an unclosed quote?)"),
        pytest.param(
            env_unreadable,
            "cannot read the env file: Permission denied",
            marks=pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file"),
        ),
    ],
    ids=["directory", "fifo", "not-utf8", "unclosed-quote", "mode-000"],
)
async def test_an_env_file_that_cannot_be_read_fails_the_reload_and_keeps_the_token(
    isolated_home: Path,
    router: FakeRouter,
    http: aiohttp.ClientSession,
    breaks: Callable[[Path], None],
    says: str,
) -> None:
    """Before: an unclosed quote made python-dotenv skip the line with a warning, so the
    reload 'succeeded' without a token and every request then failed with 503."""
    async with running_gateway(isolated_home, router) as (gw, config, env_file):
        config_text = config.read_text()
        await assert_serves(http, gw, router, MODEL_A, TOKEN)

        breaks(env_file)
        failed = await reload(gw, "config_reload_failed")
        assert str(env_file) in str(failed["error"]) and says in str(failed["error"])
        await assert_serves(http, gw, router, MODEL_A, TOKEN)
        assert config.read_text() == config_text

        remove(env_file)
        write_env(env_file, f"HF_TOKEN={NEW_TOKEN}\n")
        await reload(gw, "config_reloaded")
        await assert_serves(http, gw, router, MODEL_A, NEW_TOKEN)


# -- tokens with line breaks and spaces --------------------------------------------------------


async def test_a_token_with_a_line_break_is_joined_as_huggingface_hub_does_never_sent_broken(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """``HF_TOKEN="hf_…\\n…"`` (a paste that wrapped), in the .env at a reload and in the
    process environment at start: CR/LF are dropped as huggingface_hub drops them, and the
    router receives the joined token in one clean header."""
    first, second = NEW_TOKEN[:12], NEW_TOKEN[12:]
    async with running_gateway(isolated_home, router) as (gw, _, env_file):
        await assert_serves(http, gw, router, MODEL_A, TOKEN)
        write_env(env_file, f'HF_TOKEN="{first}\\n{second}"\n')
        await reload(gw, "config_reloaded")
        await assert_serves(http, gw, router, MODEL_A, NEW_TOKEN)
        write_env(env_file, f'HF_TOKEN="{TOKEN[:10]}\r\n{TOKEN[10:]}"\n')  # a real CRLF in quotes
        await reload(gw, "config_reloaded")
        await assert_serves(http, gw, router, MODEL_A, TOKEN)

    env_file.unlink()
    env = clean_env(isolated_home, HF_TOKEN=f"{first}\n{second}\n")
    async with run_process(gateway_argv(gw.port), env, port=gw.port) as gw:
        await gw.wait_healthy()
        await assert_serves(http, gw, router, MODEL_A, NEW_TOKEN)
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0


@pytest.mark.parametrize(
    ("line", "names"),
    [
        (f'HF_TOKEN="{NEW_TOKEN[:12]} {NEW_TOKEN[12:]}"\n', "HF_TOKEN"),
        (f'HF_TOKEN="{NEW_TOKEN[:12]}\\t{NEW_TOKEN[12:]}"\n', "HF_TOKEN"),
        (f'CODERCLAW_GATEWAY_TOKEN="gw {NEW_TOKEN}"\n', "CODERCLAW_GATEWAY_TOKEN"),
    ],
    ids=["hf-space", "hf-tab", "gateway-space"],
)
async def test_a_token_with_a_space_or_tab_fails_the_reload_without_showing_it(
    isolated_home: Path, router: FakeRouter, http: aiohttp.ClientSession, line: str, names: str
) -> None:
    async with running_gateway(isolated_home, router) as (gw, _, env_file):
        write_env(env_file, f"HF_TOKEN={TOKEN}\n{line}")
        failed = await reload(gw, "config_reload_failed")
        assert names in str(failed["error"])
        assert "cannot be sent in an HTTP header" in str(failed["error"])
        await assert_serves(http, gw, router, MODEL_A, TOKEN)
    assert NEW_TOKEN[:12] not in gw.log_text() and NEW_TOKEN[12:] not in gw.log_text()
