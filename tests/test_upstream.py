"""The upstream module: bodies and events read within caps, identity encoding asked for and a
compressed body inflated only within the cap, redirects never followed, errors mapped once —
first against the module directly, then through the gateway (a failed attempt, then the
fallback). Every server here is a real aiohttp app on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.discovery import fetch_models
from gateway.doctor import check_hub_token
from gateway.errors import (
    UpstreamBroken,
    UpstreamError,
    UpstreamRedirect,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnreachable,
)
from gateway.hub import TokenStatus, check_token
from gateway.refs import parse_ref
from gateway.secret import Secret
from gateway.settings import load_settings
from gateway.upstream import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    MAX_MODELS_BYTES,
    MAX_WHOAMI_BYTES,
    Upstream,
    fetch,
    new_session,
)
from gateway.upstream.reply import mapped_errors
from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import TOKEN, run_gateway, serve_app, write_config

A, B = "org/model-a", "org/model-b"
REF_A, REF_B = f"huggingface/{A}", f"huggingface/{B}"
CHAT = {"model": "coderclaw", "messages": [{"role": "user", "content": "Say hello"}]}
TIMEOUTS = {"connectSeconds": 1, "firstTokenSeconds": 3, "idleSeconds": 0.5, "totalSeconds": 20}
Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(routes: dict[str, Answer]) -> AsyncIterator[str]:
    """A server answering GET ``routes`` (path → handler); yields its origin."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    async with serve_app(app, shutdown_timeout=0.1) as port:
        yield f"http://127.0.0.1:{port}"


def body_of(data: bytes, **headers: str) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=data, headers=headers)

    return answer


def chunked(data: bytes, piece: int = 65536) -> Answer:
    """The body in chunked pieces, with no Content-Length to read the size from."""

    async def answer(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        out.enable_chunked_encoding()
        await out.prepare(request)
        for i in range(0, len(data), piece):
            await out.write(data[i : i + piece])
        await out.write_eof()
        return out

    return answer


# -- the reply object, directly ------------------------------------------------------------


READ_CASES = {
    # name: (handler, limit, expected body or the error type)
    "under the cap": (body_of(b"x" * 1000), 1000, b"x" * 1000),
    "over the cap, Content-Length": (body_of(b"x" * 1001), 1000, UpstreamTooLarge),
    "over the cap, chunked": (chunked(b"x" * 5000, 100), 1000, UpstreamTooLarge),
    "gzip within the cap": (
        body_of(gzip.compress(b'{"ok":true}'), **{"Content-Encoding": "gzip"}),
        1000,
        b'{"ok":true}',
    ),
    "gzip bomb": (
        body_of(gzip.compress(b"\0" * (64 << 20)), **{"Content-Encoding": "gzip"}),
        1 << 20,
        UpstreamTooLarge,
    ),
    "an encoding not asked for": (
        body_of(b"\x1b\x00", **{"Content-Encoding": "br"}),
        1000,
        UpstreamBroken,
    ),
}


@pytest.mark.parametrize("case", sorted(READ_CASES))
async def test_read_is_bounded(case: str) -> None:
    """``read(limit)`` returns a body of at most ``limit`` decoded bytes, else raises
    UpstreamTooLarge; a gzip body is inflated no further than the cap (64 MiB of zeros in a
    64 KiB bomb stop at 1 MiB)."""
    handler, limit, expected = READ_CASES[case]
    async with (
        serving({"/x": handler}) as origin,
        aiohttp.ClientSession() as session,
        fetch.get(session, f"{origin}/x", timeout_s=10) as reply,
    ):
        if isinstance(expected, bytes):
            assert await reply.read(limit) == expected
        else:
            with pytest.raises(expected):
                await reply.read(limit)


async def test_identity_is_asked_for_on_every_call(isolated_home: Path) -> None:
    """Chat completions, /models and whoami all send ``Accept-Encoding: identity``."""
    async with FakeRouter(tokens={TOKEN}) as router:
        settings = _settings(isolated_home, router.base_url)
        upstream = Upstream(new_session())
        try:
            async with await upstream.post_chat(
                settings, json.dumps({**CHAT, "model": A}).encode(), stream=False,
                client_headers={},
            ) as reply:
                assert reply.status == 200
            await fetch_models(upstream.session, router.base_url, Secret(TOKEN), 5)
            await check_token(upstream.session, router.url, Secret(TOKEN), 5)
        finally:
            await upstream.close()
            await upstream.session.close()
        sent = [r.headers.get("Accept-Encoding") for r in router.requests]
        assert len(sent) == 3
        assert sent == ["identity"] * 3


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_never_followed(isolated_home: Path, status: int) -> None:
    """A 3xx raises UpstreamRedirect naming the target host; the target receives nothing."""
    async with FakeRouter() as router, FakeRouter() as other:
        target = other.base_url.replace("127.0.0.1", "localhost") + "/chat/completions"
        router.script(A, Reply(status=status, location=target))
        upstream = Upstream(new_session())
        try:
            with pytest.raises(UpstreamRedirect) as info:
                await upstream.post_chat(
                    _settings(isolated_home, router.base_url),
                    json.dumps({**CHAT, "model": A}).encode(),
                    stream=False,
                    client_headers={},
                )
        finally:
            await upstream.close()
            await upstream.session.close()
        assert info.value.status == status
        assert info.value.location_host == "localhost"
        assert "localhost" in info.value.message and "not followed" in info.value.message
        assert len(_chat_calls(router)) == 1
        assert other.requests == []


async def test_unreachable_and_broken_are_mapped() -> None:
    """A closed port is UpstreamUnreachable (with the failure's kind); a body cut short of its
    Content-Length is UpstreamBroken — never an aiohttp exception."""

    async def short(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Length": "1000"})
        await out.prepare(request)
        await out.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()
        return out

    async with serving({"/short": short}) as origin, aiohttp.ClientSession() as session:
        async with fetch.get(session, f"{origin}/short", timeout_s=5) as reply:
            with pytest.raises(UpstreamBroken):
                await reply.read(10_000)
        closed = FakeRouter()
        await closed.start()
        url = closed.url
        await closed.close()
        with pytest.raises(UpstreamUnreachable) as info:
            async with fetch.get(session, f"{url}/x", timeout_s=5):
                pass
        assert info.value.reason == "ClientConnectorError"


async def test_sse_events_are_capped_and_inflated() -> None:
    """``events()`` yields each read's payloads; one event past ``max_event`` raises
    UpstreamTooLarge; a gzip-compressed stream is inflated in bounded slices."""
    stream = b"".join(b'data: {"i":%d}\n\n' % i for i in range(1000))
    async with (
        serving({
            "/long": chunked(b"data: " + b"x" * 5000),
            "/gz": body_of(gzip.compress(stream), **{"Content-Encoding": "gzip"}),
            "/gzlong": body_of(
                gzip.compress(b"data: " + b"x" * (64 << 20)), **{"Content-Encoding": "gzip"}
            ),
        }) as origin,
        aiohttp.ClientSession() as session,
    ):
        async with fetch.get(session, f"{origin}/long", timeout_s=5) as reply:
            with pytest.raises(UpstreamTooLarge):
                async for _ in reply.events(max_event=1024):
                    pass
        async with fetch.get(session, f"{origin}/gz", timeout_s=5) as reply:
            events = [e async for batch in reply.events() for e in batch]
        assert events == [b'{"i":%d}' % i for i in range(1000)]
        async with fetch.get(session, f"{origin}/gzlong", timeout_s=5) as reply:
            with pytest.raises(UpstreamTooLarge):
                async for _ in reply.events(max_event=1 << 20):
                    pass


async def test_models_and_whoami_bodies_are_capped(router: FakeRouter) -> None:
    """A /models body past 16 MiB is an unusable discovery; a whoami past 1 MiB leaves the
    token unchecked (not accepted)."""
    huge_models = b'{"object":"list","data":[' + b" " * MAX_MODELS_BYTES + b"]}"
    huge_whoami = b'{"name":"x","pad":"' + b"x" * MAX_WHOAMI_BYTES + b'"}'
    async with (
        serving({
            "/v1/models": chunked(huge_models),
            "/api/whoami-v2": chunked(huge_whoami),
        }) as origin,
        aiohttp.ClientSession() as session,
    ):
        with pytest.raises(UpstreamError) as info:
            await fetch_models(session, f"{origin}/v1", Secret(TOKEN), 10)
        assert "larger than 16 MiB" in info.value.message
        check = await check_token(session, origin, Secret(TOKEN), 10)
        assert check.status is TokenStatus.UNREACHABLE
        assert check.detail is not None and "larger than 1 MiB" in check.detail


async def test_discovery_and_doctor_report_a_redirect(isolated_home: Path) -> None:
    """GET /models and whoami answered with a 302 are errors naming the target host; doctor
    says so instead of "token accepted", and the target receives nothing."""

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"http://localhost:{other_port}{request.path}")

    async with FakeRouter(tokens={TOKEN}) as other:
        other_port = int(other.url.rsplit(":", 1)[1])
        async with (
            serving({"/v1/models": redirect, "/api/whoami-v2": redirect}) as origin,
            aiohttp.ClientSession() as session,
        ):
            with pytest.raises(UpstreamError) as info:
                await fetch_models(session, f"{origin}/v1", Secret(TOKEN), 5)
            assert info.value.status == 302
            assert "redirect to localhost" in info.value.message
            settings = _settings(isolated_home, f"{origin}/v1", hub_url=origin)
            check = await check_hub_token(session, settings)
        assert check.status != "ok"
        assert "redirect to localhost" in check.detail
        assert "accepted" not in check.detail
        assert other.requests == []


# -- through the gateway --------------------------------------------------------------------


class MiniRouter:
    """A router stand-in answering chat completions per model with the handlers given (a
    misbehaving primary, say), counting the calls; ``url``/``base_url`` as the FakeRouter's."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.url = self.base_url = ""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MiniRouter]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        async with serve_app(app, handler_cancellation=True, shutdown_timeout=0.1) as port:
            self.url = f"http://127.0.0.1:{port}"
            self.base_url = f"{self.url}/v1"
            yield self

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        self.calls.append(model)
        return await self.answers[model](request)


async def served_fine(request: web.Request) -> web.StreamResponse:
    """A small valid answer, streamed when asked."""
    body = await request.json()
    if not body.get("stream"):
        return web.json_response({
            "id": "x", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                         "finish_reason": "stop"}],
        })
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    await out.write(_chunk("fine", None) + _chunk("", "stop") + b"data: [DONE]\n\n")
    await out.write_eof()
    return out


def _chunk(text: str, finish: str | None) -> bytes:
    data = {"id": "x", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def huge_body(request: web.Request) -> web.StreamResponse:
    return await chunked(b'{"choices":[],"pad":"' + b"x" * MAX_BODY_BYTES + b'"}', 1 << 20)(
        request
    )


async def huge_event(request: web.Request) -> web.StreamResponse:
    return await chunked(b"data: " + b"x" * (MAX_EVENT_BYTES + 1), 1 << 20)(request)


async def chunk_then_huge_event(request: web.Request) -> web.StreamResponse:
    return await chunked(_chunk("hi", None) + b"data: " + b"x" * (MAX_EVENT_BYTES + 1), 1 << 20)(
        request
    )


async def stalled_body(request: web.Request) -> web.StreamResponse:
    out = web.StreamResponse(headers={"Content-Type": "application/json"})
    out.enable_chunked_encoding()
    await out.prepare(request)
    await out.write(b'{"id":')
    await asyncio.sleep(30)
    return out


async def error_with_extras(request: web.Request) -> web.StreamResponse:
    error = {"message": "bad tool schema", "type": "invalid_request_error", "param": "tools",
             "code": "invalid_tools", "trace": "internal-host-7 /srv/x.py", "extra": {"a": 1}}
    return web.json_response({"error": error, "debug": True}, status=400)


@asynccontextmanager
async def gateway_over(
    home: Path, primary: Answer
) -> AsyncIterator[tuple[str, MiniRouter, aiohttp.ClientSession]]:
    async with (
        MiniRouter({A: primary, B: served_fine}).running() as mini,
        run_gateway(home, mini, timeouts=TIMEOUTS) as (base, _),  # type: ignore[arg-type]
        aiohttp.ClientSession() as session,
    ):
        yield base, mini, session


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("primary", ["huge_body", "huge_event"])
async def test_an_answer_past_its_cap_is_a_failed_attempt(
    isolated_home: Path, primary: str, stream: bool
) -> None:
    """A non-stream body past 32 MiB, or a first SSE event past 4 MiB, is a failed attempt
    (a 502: retried once, as a 502 is) before anything reached the client: the fallback
    serves."""
    handler = huge_body if primary == "huge_body" else huge_event
    async with (
        gateway_over(isolated_home, handler) as (base, mini, session),
        session.post(f"{base}/chat/completions", json={**CHAT, "stream": stream}) as r,
    ):
        text = await r.text()
        assert r.status == 200, text
        assert r.headers["x-coderclaw-attempts"] == f"{REF_A}=502,{REF_A}=502,{REF_B}=200"
        assert "fine" in text
        assert mini.calls == [A, A, B]


async def test_an_event_past_its_cap_after_commit_ends_the_stream_honestly(
    isolated_home: Path,
) -> None:
    """After the first chunk, an event past 4 MiB cuts the stream: an SSE error event that
    names the cap, and no [DONE]."""
    async with (
        gateway_over(isolated_home, chunk_then_huge_event) as (base, _, session),
        session.post(f"{base}/chat/completions", json={**CHAT, "stream": True}) as r,
    ):
        assert r.status == 200
        raw = await r.read()
    assert b"[DONE]" not in raw
    events = [json.loads(e[6:]) for e in raw.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[0]["choices"][0]["delta"]["content"] == "hi"
    assert "larger than 4 MiB" in events[-1]["error"]["message"]
    assert events[-1]["error"]["code"] == "stream_interrupted"


async def test_a_plain_body_that_stalls_after_the_headers_is_cut_after_idle(
    isolated_home: Path,
) -> None:
    """Headers at once, then silence: the attempt ends after idleSeconds (0.5 s) of silence,
    not firstTokenSeconds (3 s) + idleSeconds, and the fallback serves."""
    async with gateway_over(isolated_home, stalled_body) as (base, _, session):
        started = time.monotonic()
        async with session.post(f"{base}/chat/completions", json=CHAT) as r:
            body = await r.json()
        elapsed = time.monotonic() - started
    assert r.status == 200
    assert r.headers["x-coderclaw-attempts"] == f"{REF_A}=timeout,{REF_B}=200"
    assert body["choices"][0]["message"]["content"] == "fine"
    assert 0.4 < elapsed < 2.5


async def test_a_client_error_carries_only_the_four_openai_fields(isolated_home: Path) -> None:
    """The upstream's 400 comes back as 400 with its message, type, param and code — and
    nothing else of its error object or body."""
    async with (
        gateway_over(isolated_home, error_with_extras) as (base, _, session),
        session.post(f"{base}/chat/completions", json=CHAT) as r,
    ):
        body = await r.json()
    assert r.status == 400
    assert body == {
        "error": {
            "message": "bad tool schema",
            "type": "invalid_request_error",
            "param": "tools",
            "code": "invalid_tools",
        }
    }


@pytest.mark.parametrize("status", [301, 302, 307, 308, "loop"])
async def test_a_redirecting_primary_fails_over(
    isolated_home: Path, router: FakeRouter, status: int | str
) -> None:
    """A primary answering a redirect (to another host, or to itself) costs one request, is a
    failed attempt, and the fallback serves; the other host receives nothing."""
    async with FakeRouter() as other:
        if status == "loop":
            code, target = 307, router.base_url + "/chat/completions"
        else:
            code = int(status)
            target = other.base_url.replace("127.0.0.1", "localhost") + "/chat/completions"
        router.script(A, Reply(status=code, location=target, repeat=True))
        async with (
            run_gateway(isolated_home, router, timeouts=TIMEOUTS) as (base, _),
            aiohttp.ClientSession() as session,
            session.post(f"{base}/chat/completions", json=CHAT) as r,
        ):
            body = await r.json()
        assert r.status == 200, body
        assert r.headers["x-coderclaw-attempts"] == f"{REF_A}={code},{REF_B}=200"
        assert [c.bare_model for c in _chat_calls(router)] == [A, B]
        assert other.requests == []


def _chat_calls(router: FakeRouter) -> list[Any]:
    return [r for r in router.requests if r.path == "/v1/chat/completions"]


def _settings(home: Path, base_url: str, *, hub_url: str | None = None) -> Any:
    """Settings whose router is ``base_url`` (and Hub ``hub_url``), with the test token."""

    class Target:
        url = hub_url or base_url.removesuffix("/v1")

    Target.base_url = base_url  # type: ignore[attr-defined]
    write_config(home, Target)  # type: ignore[arg-type]
    return load_settings({"HOME": str(home), "HF_TOKEN": TOKEN})


async def test_a_client_leaving_during_a_long_upstream_read_closes_it(isolated_home: Path) -> None:
    """The primary sends one endless SSE line (below the cap, 1 KiB every 10 ms); the client
    goes away after 0.3 s: the upstream request is closed within a second."""
    closed = asyncio.Event()

    async def endless_line(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b"data: ")
        try:
            while True:
                await out.write(b"x" * 1024)
                await asyncio.sleep(0.01)
        except (asyncio.CancelledError, ConnectionError):
            closed.set()
            raise

    async with gateway_over(isolated_home, endless_line) as (base, _, session):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):
                async with session.post(
                    f"{base}/chat/completions", json={**CHAT, "stream": True}
                ) as r:
                    await r.read()
        started = time.monotonic()
        await asyncio.wait_for(closed.wait(), 1.0)
        assert time.monotonic() - started < 1.0


class StepClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_800_000_000.0 + self.now


async def test_the_injected_clock_runs_the_cooldowns(
    isolated_home: Path, router: FakeRouter
) -> None:
    """With a clock passed to the app, a cooled primary comes back when that clock passes the
    open time (15 s max, SPEC §9), with no sleeping and no back-dating."""
    clock = StepClock()
    router.script(A, Reply(status=503, retry_after="0"), Reply(status=503, retry_after="0"))
    async with (
        run_gateway(isolated_home, router, clock=clock, timeouts=TIMEOUTS) as (base, state),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(f"{base}/chat/completions", json=CHAT) as r:
            assert r.headers["x-coderclaw-attempts"] == f"{REF_A}=503,{REF_A}=503,{REF_B}=200"
        assert state.cooldowns.cooling_until(parse_ref(REF_A), clock.now) == clock.now + 5
        async with session.post(f"{base}/chat/completions", json=CHAT) as r:
            assert r.headers["x-coderclaw-attempts"] == f"{REF_B}=200", "A is cooling"
        clock.now += 16
        async with session.post(f"{base}/chat/completions", json=CHAT) as r:
            assert r.headers["x-coderclaw-attempts"] == f"{REF_A}=200", "A is back"


@pytest.mark.parametrize(
    ("raised", "seen"),
    [
        (aiohttp.ClientConnectionError("refused"), UpstreamUnreachable),
        (ConnectionResetError(), UpstreamUnreachable),
        (TimeoutError(), UpstreamTimeout),
        (aiohttp.ClientPayloadError("cut"), UpstreamBroken),
        (UpstreamTooLarge("big", limit=1), UpstreamTooLarge),  # already the gateway's own
        (ValueError("a bug"), ValueError),  # not aiohttp's: as it is
        (asyncio.CancelledError(), asyncio.CancelledError),  # a cancel goes through untouched
    ],
)
def test_mapped_errors_table(raised: BaseException, seen: type[BaseException]) -> None:
    """``mapped_errors`` turns what aiohttp and the OS raise into the gateway's upstream errors,
    once, with no chained traceback; anything else leaves the block as it came."""
    with pytest.raises(seen) as caught, mapped_errors():
        raise raised
    if isinstance(caught.value, UpstreamError) and caught.value is not raised:
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    else:
        assert caught.value is raised
    with mapped_errors():  # and a block that raises nothing is left as usual
        pass
