"""No secret leaks from a whole session, and the gateway token guards ``/v1`` even on loopback.

The session runs the real commands as child processes with a clean environment and a throwaway
HOME, against a FakeRouter that only accepts the recognisable HF token: onboarding, service
install (recording fake ``systemctl``/``loginctl`` first on PATH), the gateway itself, requests
that succeed and fail (the router even quotes the token back in its errors), a SIGHUP reload,
``doctor``, ``models list`` and ``config get``. Then every captured output and log line, every
HTTP body and header, every file under HOME but ``$STATE/.env``, the unit, a rendered plist and
the environments the fake service managers were run with are searched for either secret, in
plain, URL-encoded and base64 forms.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import aiohttp
import pytest

from gateway.secret import mask
from gateway.service.units import UNIT_NAME, ServiceSpec, plist_text
from gateway.store import set_env_var
from tests.cli_helpers import ONBOARD_WITH_KEY, child_env, mode, router_config, run_cli
from tests.daemon_harness import free_port, gateway_argv, run_process
from tests.fake_router import FakeRouter, Reply
from tests.fake_service_manager import make_fake_managers
from tests.gateway_harness import run_gateway

HF_SECRET = "hf_SECRETsecretSECRET0123456789abcd"
GW_SECRET = "gw-SECRET-token-0123456789"
PRIMARY = "huggingface/org/model-a"
SECTIONS = ("agents", "models", "gateway")


def secret_forms(secret: str) -> list[str]:
    """The secret as it could leak: plain, URL-encoded, and base64 at each of the three byte
    alignments it can have inside a longer encoded text (e.g. ``Basic base64(user:token)``)."""
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    for shift in range(3):
        # Only the base64 groups made entirely of the secret's bytes are fixed by it.
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        core = encoded[4 * (1 if shift else 0) : 4 * ((shift + len(raw)) // 3)]
        forms |= {core, core.replace("+", "-").replace("/", "_")}
    return sorted(forms)


def leaks(texts: dict[str, str]) -> list[str]:
    """``where: form`` for every secret form found in any text."""
    found = []
    for where, text in texts.items():
        for secret in (HF_SECRET, GW_SECRET):
            found += [f"{where}: {form}" for form in secret_forms(secret) if form in text]
    return found


def files_except_env(root: Path, env_file: Path) -> dict[str, str]:
    return {
        str(p): p.read_bytes().decode(errors="replace")
        for p in sorted(root.rglob("*"))
        if p.is_file() and p != env_file
    }


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    async with FakeRouter(tokens={HF_SECRET}) as fake:
        yield fake


async def test_a_whole_session_leaks_neither_token_anywhere(
    isolated_home: Path, router: FakeRouter, tmp_path: Path
) -> None:
    """Onboard → install → run → requests (ok, 401/402/403/503, an error event, a bad gateway
    token, unknown models) → SIGHUP → doctor, models list, config get: neither token appears in
    any output, log line, HTTP answer, file under HOME but .env, unit, plist or fake-manager
    environment; .env is 0600 in a 0700 dir; the router's own quoting of the token was masked."""
    home = isolated_home
    state = home / ".coderclaw"
    state.mkdir(mode=0o700)
    env_file = state / ".env"
    port = free_port()
    (state / "coderclaw.json").write_text(
        router_config(
            router.url,
            router.base_url,
            f"  gateway: {{ port: {port}, retries: 1, maxRetryWaitSeconds: 0.2 }},\n",
        )
    )
    fakes = make_fake_managers(tmp_path / "fakebin")
    env = child_env(home, CODERCLAW_SERVICE_MANAGER="systemd", USER="tester")
    env["PATH"] = f"{fakes.bin_dir}{os.pathsep}{env['PATH']}"
    texts: dict[str, str] = {}

    async def cli(name: str, *args: str) -> str:
        run = await run_cli(*args, env=env)
        texts[f"{name} stdout"] = run.out
        texts[f"{name} stderr"] = run.err
        return run.text

    onboarded = await cli(
        "onboard",
        *ONBOARD_WITH_KEY,
        HF_SECRET,
        "--model",
        PRIMARY,
    )
    assert mask(HF_SECRET) in onboarded, onboarded
    # The gateway token goes where the docs say: $STATE/.env, never the config.
    set_env_var(env_file, "CODERCLAW_GATEWAY_TOKEN", GW_SECRET)
    installed = await cli("install", "gateway", "install")
    assert f"enabled and started {UNIT_NAME}" in installed, installed

    router.script(
        "org/model-a",
        Reply(),  # non-stream ok
        Reply(),  # stream ok
        Reply(status=401, error_message=f"Invalid token {HF_SECRET}"),
        Reply(status=402),
        Reply(status=403),
        Reply(status=503),  # the retry's error is the one told to the client
        Reply(status=503, error_message=f"overloaded for key {HF_SECRET}"),
        Reply(error_event_after=1, error_message=f"provider refused {HF_SECRET}"),
    )
    good = {"Authorization": f"Bearer {GW_SECRET}"}
    async with run_process(gateway_argv(port), env, port=port) as gw:
        await gw.wait_healthy()
        async with aiohttp.ClientSession() as http:

            async def call(
                name: str, path: str, *, headers: dict[str, str] | None = None, **body: object
            ) -> int:
                method = http.post if body else http.get
                payload = (
                    {"messages": [{"role": "user", "content": "hi"}], **body} if body else None
                )
                async with method(f"{gw.base}{path}", json=payload, headers=headers) as resp:
                    texts[f"HTTP {name}"] = json.dumps(dict(resp.headers)) + await resp.text()
                    return resp.status

            chat = "/v1/chat/completions"
            statuses = {
                "ok": await call("ok", chat, headers=good, model=PRIMARY),
                "ok stream": await call("ok stream", chat, headers=good, stream=True),
                "401": await call("401", chat, headers=good, stream=False),
                "402": await call("402", chat, headers=good, stream=False),
                "403": await call("403", chat, headers=good, stream=False),
                "503": await call("503", chat, headers=good, stream=False),
                "error event": await call("error event", chat, headers=good, stream=True),
                "no token": await call("no token", chat, stream=False),
                "wrong token": await call(
                    "wrong token", chat, headers={"Authorization": "Bearer gw-wrong"}, stream=False
                ),
                "bad model": await call("bad model", chat, headers=good, model="no such model"),
                "unknown model": await call(
                    "unknown model", chat, headers=good, model="huggingface/org/nope"
                ),
                "models": await call("models", "/v1/models", headers=good),
                "metrics": await call("metrics", "/metrics", headers=good),
                "readyz": await call("readyz", "/readyz"),
            }
            mark = len(gw.stderr)
            gw.send(signal.SIGHUP)
            await gw.wait_event("config_reloaded", after=mark)
            statuses["after reload"] = await call("after reload", chat, headers=good, stream=True)

        doctor = await cli("doctor", "doctor")
        await cli("models list", "models", "list")
        # The whole config, section by section (what a user pastes into a bug report).
        config = "".join([await cli(f"config get {k}", "config", "get", k) for k in SECTIONS])
        gw.send(signal.SIGTERM)
        assert await gw.wait_exit() == 0
    texts.update({f"gateway log {i}": line for i, line in enumerate(gw.stderr)})

    assert statuses == {
        "ok": 200,
        "ok stream": 200,
        "401": 401,
        "402": 402,
        "403": 403,
        "503": 503,
        "error event": 200,
        "no token": 401,
        "wrong token": 401,
        "bad model": 404,
        "unknown model": 502,
        "models": 200,
        "metrics": 200,
        "readyz": 200,
        "after reload": 200,
    }
    assert '"error"' in texts["HTTP error event"] and "[DONE]" not in texts["HTTP error event"]
    assert "[ok  ] token" in doctor and mask(HF_SECRET) in doctor
    assert PRIMARY in config and f'"port": {port}' in config

    unit = home / ".config" / "systemd" / "user" / UNIT_NAME
    texts.update(files_except_env(home, env_file))
    assert str(unit) in texts  # the rendered unit is among the files searched
    texts["plist"] = plist_text(
        ServiceSpec(sys.executable, state, state / "coderclaw.json", state / "logs", port=port)
    )
    texts.update({f"fake manager env {i}": json.dumps(e) for i, e in enumerate(fakes.envs())})
    assert fakes.calls(), "the fake systemctl was never run"

    assert leaks(texts) == []
    # The router quoted the token three times (401, 503, the error event): the client saw it
    # masked, so the search above looked at text that would have held it.
    seen = "".join(texts[f"HTTP {n}"] for n in ("401", "503", "error event"))
    assert seen.count(mask(HF_SECRET)) >= 3, seen
    assert env_file.read_text().count(HF_SECRET) == 1
    assert env_file.read_text().count(GW_SECRET) == 1
    assert mode(env_file) == 0o600
    assert mode(state) == 0o700


# -- the gateway token on /v1 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {GW_SECRET}", 200),
        (f"bearer {GW_SECRET}", 200),
        (None, 401),
        ("", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        (GW_SECRET, 401),  # no scheme
        (f"Basic {GW_SECRET}", 401),
        ("Bearer " + "x" * len(GW_SECRET), 401),  # same length, wrong
        ("Bearer " + GW_SECRET[:-1] + "X", 401),  # same length, last character wrong
        ("Bearer " + GW_SECRET[:-1], 401),  # a prefix
        ("Bearer " + GW_SECRET + "0", 401),  # longer
        (f"Bearer {HF_SECRET}", 401),  # the upstream token is not the gateway token
    ],
)
async def test_v1_needs_the_gateway_token_on_loopback(
    isolated_home: Path, router: FakeRouter, authorization: str | None, status: int
) -> None:
    """With a gateway token configured, /v1/chat/completions and /v1/models on 127.0.0.1 accept
    exactly that token (any case of 'Bearer') and reject a missing one, another scheme, and
    wrong ones of equal or different length with an OpenAI-shaped 401 that does not echo it;
    /healthz needs none."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with (
        run_gateway(
            isolated_home, router, token=HF_SECRET, env={"CODERCLAW_GATEWAY_TOKEN": GW_SECRET}
        ) as (v1, _),
        aiohttp.ClientSession() as http,
    ):
        payload = {"messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"{v1}/chat/completions", json=payload, headers=headers) as resp:
            chat_status, chat_body = resp.status, await resp.text()
        async with http.get(f"{v1}/models", headers=headers) as resp:
            models_status = resp.status
        async with http.get(v1.removesuffix("/v1") + "/healthz") as resp:
            health = resp.status

    assert (chat_status, models_status, health) == (status, status, 200)
    if status == 401:
        error = json.loads(chat_body)["error"]
        assert error["code"] == "invalid_api_key"
        assert "gateway token" in error["message"]
        assert leaks({"401 body": chat_body}) == []
    assert router.count("org/model-a") == (1 if status == 200 else 0)


async def test_without_a_gateway_token_loopback_needs_none(
    isolated_home: Path, router: FakeRouter
) -> None:
    """No gateway token configured: /v1 on loopback answers without Authorization."""
    async with (
        run_gateway(isolated_home, router, token=HF_SECRET) as (v1, _),
        aiohttp.ClientSession() as http,
        http.get(f"{v1}/models") as resp,
    ):
        assert resp.status == 200


def test_secret_forms_find_url_and_base64_encodings_at_any_alignment() -> None:
    """The search finds the token URL-encoded, base64-encoded alone, and base64-encoded after
    a prefix of any length (a Basic header carries ``base64(user:token)``)."""
    assert {"a b/c", "a%20b%2Fc", "a+b%2Fc"} <= set(secret_forms("a b/c"))
    for prefix in ("", "u:", "user:", "gateway:"):
        encoded = base64.b64encode(f"{prefix}{GW_SECRET}".encode()).decode()
        assert leaks({"header": f"Authorization: Basic {encoded}"}) != [], prefix
    assert (
        leaks({"header": "Authorization: Basic " + base64.b64encode(b"user:other").decode()}) == []
    )
