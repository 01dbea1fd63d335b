"""Fixtures shared by the whole suite: an isolated home and state dir for every test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fake_router import FakeRouter

# Variables that would let a test see the developer's real setup.
_LEAKY = (
    "HF_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HOME",
    "XDG_CACHE_HOME",
    "CODERCLAW_STATE_DIR",
    "CODERCLAW_CONFIG_PATH",
    "CODERCLAW_HOME",
    "CODERCLAW_GATEWAY_PORT",
    "CODERCLAW_GATEWAY_TOKEN",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own HOME; no test can read or write the real ~/.coderclaw."""
    home = tmp_path / "home"
    home.mkdir()
    for name in _LEAKY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHELL", "/bin/sh")
    yield home


@pytest.fixture
def state_dir(isolated_home: Path) -> Path:
    """The default state dir under the isolated home (created)."""
    path = isolated_home / ".coderclaw"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    """A default ``FakeRouter``; a module that needs other options overrides it."""
    async with FakeRouter() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session for the test, closed after it."""
    async with aiohttp.ClientSession() as session:
        yield session


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment for a child process: PATH and the isolated HOME, nothing of the user's."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    env["HOME"] = str(home)
    env.update(extra)
    return env
