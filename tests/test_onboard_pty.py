"""Interactive onboarding driven through a real pseudo-terminal (pexpect).

The fake router and Hub run in the test's event loop; the terminal conversation runs in a
worker thread (``asyncio.to_thread``) so the loop keeps serving them. Arrow keys are sent as
the escape sequences a terminal sends (``ESC [ B`` is Down). PROMPT_TOOLKIT_NO_CPR=1 spares
each prompt the one-second wait for a cursor-position answer a pexpect terminal never gives.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pexpect
import pytest

from tests.cli_helpers import (
    BAD_TOKEN,
    CODERCLAW,
    GOOD_TOKEN,
    assert_secret_absent,
    child_env,
    mode,
    read_json,
    router_config,
)
from tests.fake_router import FakeRouter, ModelsReply

DOWN = "\x1b[B"
ENTER = "\r"
_SGR = r"(?:\x1b\[[0-9;]*m)*"


def filter_echo(text: str) -> str:
    """The dropdown's echo of the typed filter (``/ text...``), styles between the parts.

    prompt_toolkit redraws only what changed, so a line that keeps its style is not rewritten
    whole; the echo line and a line the pointer moves to always are.
    """
    return "/ " + _SGR + re.escape(text) + _SGR + r"\.\.\."


def pointed(title: str) -> str:
    """The dropdown line the pointer (») is on, whatever styles sit between the parts."""
    return "» " + _SGR + re.escape(title)


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    async with FakeRouter(tokens={GOOD_TOKEN}) as fake:
        yield fake


@contextmanager
def spawn(home: Path, *args: str) -> Iterator[tuple[pexpect.spawn, list[str]]]:
    """``coderclaw onboard ARGS`` on a 40x300 pty (wide: temp paths are long).

    Yields the child and its transcript; the child is killed (by its PID) if still alive.
    """
    env = child_env(home, TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(
        CODERCLAW,
        ["onboard", *args],
        env=env,
        encoding="utf-8",
        dimensions=(40, 300),
        timeout=8,
    )
    transcript: list[str] = []

    class _Log:
        def write(self, data: str) -> None:
            transcript.append(data)

        def flush(self) -> None:
            pass

    child.logfile_read = _Log()
    try:
        yield child, transcript
    finally:
        if child.isalive():
            child.terminate(force=True)
        child.close()


def finish(child: pexpect.spawn) -> int:
    child.expect("Next step")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None
    return int(child.exitstatus)


async def converse(fn: Callable[[], int]) -> int:
    return await asyncio.to_thread(fn)


def _write_config(state_dir: Path, router: FakeRouter, body: str = "") -> Path:
    path = state_dir / "coderclaw.json"
    path.write_text(router_config(router.url, router.base_url, body), encoding="utf-8")
    return path


async def test_type_token_filter_move_and_pick_a_cheapest_variant(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """A rejected paste is said plainly and asked again; the pasted `export HF_TOKEN=…` form is
    accepted; typing filters the dropdown, Down moves to :cheapest, Enter saves it; the config
    and the 0600 .env (dir 0700) end up right and the token never shows on the terminal."""
    config = _write_config(state_dir, router, '  logging: { level: "debug" },\n')

    with spawn(isolated_home, "--auth-choice", "huggingface-api-key") as (child, transcript):

        def talk() -> int:
            child.expect("Hugging Face token")
            child.sendline(BAD_TOKEN)
            child.expect("rejected this token")
            child.expect("Hugging Face token")
            child.sendline(f'export HF_TOKEN="{GOOD_TOKEN}"  ')
            child.expect("accepted by Hugging Face")
            child.expect("Default Hugging Face model")
            child.send("qwen3-8b")
            child.expect(filter_echo("qwen3-8b"))
            child.send(DOWN)
            child.expect(pointed("huggingface/Qwen/Qwen3-8B:cheapest"))
            child.send(ENTER)
            return finish(child)

        code = await converse(talk)
    assert code == 0, "".join(transcript)
    data = read_json(config)
    assert data["agents"]["defaults"]["model"] == {"primary": "huggingface/Qwen/Qwen3-8B:cheapest"}
    assert data["agents"]["defaults"]["models"] == {
        "huggingface/Qwen/Qwen3-8B:cheapest": {"alias": "Qwen3 8B (cheapest)"}
    }
    assert data["logging"] == {"level": "debug"}
    env_file = state_dir / ".env"
    assert env_file.read_text() == f"HF_TOKEN={GOOD_TOKEN}\n"
    assert mode(env_file) == 0o600 and mode(state_dir) == 0o700
    screen = "".join(transcript)
    assert_secret_absent(GOOD_TOKEN, screen)
    assert_secret_absent(BAD_TOKEN, screen)
    assert "hf_G…fXYZ" in screen
    models_calls = router.models_calls
    assert len(models_calls) == 1 and models_calls[0].token == GOOD_TOKEN


async def test_second_run_keeps_the_token_and_preselects_the_current_model(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """With a token already in .env, the offer shows it masked; 'y' keeps it; the dropdown
    starts on the current default, so Enter keeps it; fallbacks and aliases stay."""
    body = (
        "  agents: { defaults: {\n"
        '    model: { primary: "huggingface/openai/gpt-oss-120b:fastest",\n'
        '             fallbacks: ["huggingface/Qwen/Qwen3-8B"] },\n'
        '    models: { "huggingface/Qwen/Qwen3-8B": { alias: "Q8" } },  // mine\n'
        "  } },\n"
    )
    config = _write_config(state_dir, router, body)
    env_file = state_dir / ".env"
    env_file.write_text(f"OTHER=kept\nHF_TOKEN={GOOD_TOKEN}\n")
    env_file.chmod(0o600)

    with spawn(isolated_home, "--auth-choice", "huggingface-api-key") as (child, transcript):

        def talk() -> int:
            child.expect(r"Use the Hugging Face token found in .*\.env \(HF_TOKEN\) \(hf_G…fXYZ\)")
            child.send("y")
            child.expect("accepted by Hugging Face")
            child.expect("Default Hugging Face model")
            child.expect(pointed("huggingface/openai/gpt-oss-120b:fastest  (GPT-OSS 120B, fastest"))
            child.send(ENTER)
            return finish(child)

        code = await converse(talk)
    assert code == 0, "".join(transcript)
    data = read_json(config)
    assert data["agents"]["defaults"]["model"] == {
        "primary": "huggingface/openai/gpt-oss-120b:fastest",
        "fallbacks": ["huggingface/Qwen/Qwen3-8B"],
    }
    assert data["agents"]["defaults"]["models"] == {
        "huggingface/Qwen/Qwen3-8B": {"alias": "Q8"},
        "huggingface/openai/gpt-oss-120b:fastest": {"alias": "GPT-OSS 120B (fastest)"},
    }
    assert env_file.read_text() == f"OTHER=kept\nHF_TOKEN={GOOD_TOKEN}\n"
    assert_secret_absent(GOOD_TOKEN, "".join(transcript))


async def test_router_down_offers_the_builtin_list_and_still_finishes(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """GET /models answering 500: a note says so, the built-in list is offered, and the choice
    is saved."""
    router.models_reply = ModelsReply(status=500)
    config = _write_config(state_dir, router)

    with spawn(isolated_home, "--auth-choice", "huggingface-api-key") as (child, transcript):

        def talk() -> int:
            child.expect("Hugging Face token")
            child.sendline(GOOD_TOKEN)
            child.expect("Could not load the models from the router")
            child.expect("showing the built-in list")
            child.expect("Default Hugging Face model")
            child.send("kimi")
            child.expect(filter_echo("kimi"))
            child.send(DOWN + DOWN)
            child.expect(pointed("huggingface/moonshotai/Kimi-K2.5:fastest"))
            child.send(ENTER)
            return finish(child)

        code = await converse(talk)
    assert code == 0, "".join(transcript)
    data = read_json(config)
    assert (
        data["agents"]["defaults"]["model"]["primary"] == "huggingface/moonshotai/Kimi-K2.5:fastest"
    )
    screen = "".join(transcript)
    assert "GLM-5.3-Flash" not in screen  # only the router knows that one
    assert_secret_absent(GOOD_TOKEN, screen)


async def test_no_provider_flag_asks_for_the_provider_first(
    router: FakeRouter, state_dir: Path, isolated_home: Path
) -> None:
    """Plain `coderclaw onboard` shows the provider dropdown (Hugging Face) before the token;
    Ctrl-C at the token prompt cancels with nothing written."""
    config = _write_config(state_dir, router)
    before = config.read_bytes()

    with spawn(isolated_home) as (child, transcript):

        def talk() -> int:
            child.expect("Model provider")
            child.expect("Hugging Face")
            child.send(ENTER)
            child.expect("Hugging Face token")
            child.sendcontrol("c")
            child.expect("nothing was written")
            child.expect(pexpect.EOF)
            child.close()
            return int(child.exitstatus or 0)

        code = await converse(talk)
    assert code == 130, "".join(transcript)
    assert config.read_bytes() == before
    assert not (state_dir / ".env").exists()
