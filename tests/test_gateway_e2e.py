"""End to end with the official ``openai`` SDK: SDK → gateway → fake router (SPEC §6).

Every test runs the real gateway app on 127.0.0.1 port 0, configured through a real config
file, against the fake router; what the router received is read back from the fake.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai._legacy_response import LegacyAPIResponse
from openai.types.chat import ChatCompletion

from gateway.refs import parse_ref
from gateway.upstream import upstream_connection_counts
from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import TOKEN, GatewayView, eventually, run_gateway

A, B, C = "org/model-a", "org/model-b", "org/model-c"
REF_A, REF_B, REF_C = (f"huggingface/{m}" for m in (A, B, C))
CLIENT_KEY = "sk-client-own-key-0123456789"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
FAST = {"connectSeconds": 1, "firstTokenSeconds": 0.5, "idleSeconds": 0.5, "totalSeconds": 10}


@asynccontextmanager
async def serve(
    home: Path, router: FakeRouter, **config: Any
) -> AsyncIterator[tuple[AsyncOpenAI, GatewayView, str]]:
    """The gateway (fast timeouts unless given) and an AsyncOpenAI client pointed at it."""
    config.setdefault("timeouts", FAST)
    async with (
        run_gateway(home, router, **config) as (base, state),
        AsyncOpenAI(base_url=base, api_key=CLIENT_KEY, max_retries=0, timeout=30) as client,
    ):
        yield client, state, base


async def ask(client: AsyncOpenAI) -> LegacyAPIResponse[ChatCompletion]:
    """One plain chat to the ``coderclaw`` alias; raw, to read its x-coderclaw-* headers."""
    return await client.chat.completions.with_raw_response.create(
        model="coderclaw", messages=MESSAGES
    )


async def stream_text(stream: Any) -> tuple[str, list[Any]]:
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


async def raw_sse(base: str, body: dict[str, Any]) -> tuple[int, bytes]:
    """POST a streaming request with aiohttp and return the status and the raw body bytes."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/chat/completions", json={**body, "stream": True}) as resp,
    ):
        return resp.status, await resp.read()


# -- plain success ---------------------------------------------------------------------------


async def test_success_non_stream_names_the_serving_ref(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _, _):
        raw = await ask(client)
        completion = raw.parse()
    assert completion.choices[0].message.content == f"Hello from {A}"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == REF_A
    assert raw.headers["x-coderclaw-model"] == REF_A
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_A}=200"
    assert raw.headers["x-inference-provider"] == "together"
    assert raw.headers["x-request-id"]
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_success_stream_names_the_serving_ref_in_every_chunk(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(chunks=4))
    async with serve(isolated_home, router) as (client, _, _):
        raw = await client.chat.completions.with_raw_response.create(
            model="coderclaw", messages=MESSAGES, stream=True
        )
        text, chunks = await stream_text(raw.parse())
    assert text == f"Hello from {A}"
    assert len(chunks) == 5  # four content pieces and the finish chunk
    assert {c.model for c in chunks} == {REF_A}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-coderclaw-model"] == REF_A
    assert raw.headers["x-inference-provider"] == "together"


async def test_alias_asked_for_is_never_named_as_the_model(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router, aliases={"Fast": REF_B}) as (client, _, _):
        completion = await client.chat.completions.create(model="fast", messages=MESSAGES)
        stream = await client.chat.completions.create(model="FAST", messages=MESSAGES, stream=True)
        _, chunks = await stream_text(stream)
    assert completion.model == REF_B
    assert {c.model for c in chunks} == {REF_B}
    assert [r.model for r in router.chat_requests()] == [B, B]


async def test_sync_client_stream_and_not(isolated_home: Path, router: FakeRouter) -> None:
    """The sync OpenAI client works too (run in a thread: the gateway lives in this loop)."""
    async with serve(isolated_home, router) as (_, _, base):

        def use_sync_client() -> tuple[str | None, str, set[str]]:
            with OpenAI(base_url=base, api_key=CLIENT_KEY, max_retries=0, timeout=30) as sync:
                plain = sync.chat.completions.create(model="coderclaw", messages=MESSAGES)
                chunks = list(
                    sync.chat.completions.create(model="coderclaw", messages=MESSAGES, stream=True)
                )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return plain.choices[0].message.content, text, {c.model for c in chunks}

        content, text, models = await asyncio.to_thread(use_sync_client)
    assert content == f"Hello from {A}"
    assert text == f"Hello from {A}"
    assert models == {REF_A}


async def test_sync_client_sees_gateway_errors(isolated_home: Path, router: FakeRouter) -> None:
    router.script(A, Reply(status=401))
    async with serve(isolated_home, router) as (_, _, base):

        def use_sync_client() -> openai.AuthenticationError:
            with (
                OpenAI(base_url=base, api_key=CLIENT_KEY, max_retries=0) as sync,
                pytest.raises(openai.AuthenticationError) as info,
            ):
                sync.chat.completions.create(model="coderclaw", messages=MESSAGES)
            return info.value

        exc = await asyncio.to_thread(use_sync_client)
    assert "coderclaw onboard" in exc.message


# -- retries and failover --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_primary_503_is_retried_then_the_fallback_serves(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script(A, Reply(status=503, repeat=True))
    router.script(B, Reply(provider="groq"))
    async with serve(isolated_home, router, retries=1) as (client, _, _):
        raw = await client.chat.completions.with_raw_response.create(
            model="coderclaw", messages=MESSAGES, stream=stream
        )
        if stream:
            text, chunks = await stream_text(raw.parse())
            assert {c.model for c in chunks} == {REF_B}
        else:
            completion = raw.parse()
            text = completion.choices[0].message.content or ""
            assert completion.model == REF_B
    assert text == f"Hello from {B}"
    assert router.count(A) == 2  # 1 + retries
    assert router.count(B) == 1
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_A}=503,{REF_A}=503,{REF_B}=200"
    assert raw.headers["x-coderclaw-model"] == REF_B
    assert raw.headers["x-inference-provider"] == "groq"


async def test_retries_setting_counts_attempts_on_one_model(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=502, retry_after="0", repeat=True))
    async with serve(isolated_home, router, retries=3) as (client, _, _):
        raw = await ask(client)
    assert router.count(A) == 4
    assert raw.headers["x-coderclaw-attempts"] == ",".join([f"{REF_A}=502"] * 4 + [f"{REF_B}=200"])


async def test_429_with_a_short_retry_after_is_waited_for(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=429, retry_after="2"))
    async with serve(isolated_home, router) as (client, _, _):
        started = time.monotonic()
        raw = await ask(client)
        elapsed = time.monotonic() - started
    assert raw.parse().model == REF_A
    assert elapsed >= 1.8
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_A}=429,{REF_A}=200"
    assert router.count(B) == 0


async def test_429_with_a_long_retry_after_fails_over_at_once_and_skips_the_primary_next(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=429, retry_after="60"))
    async with serve(isolated_home, router) as (client, state, _):
        started = time.monotonic()
        first = await ask(client)
        elapsed = time.monotonic() - started
        second = await ask(client)
        until = state.cooldowns.cooling_until(parse_ref(REF_A), time.monotonic())
    assert first.parse().model == REF_B
    assert elapsed < 1.0
    assert first.headers["x-coderclaw-attempts"] == f"{REF_A}=429,{REF_B}=200"
    assert second.parse().model == REF_B
    assert second.headers["x-coderclaw-attempts"] == f"{REF_B}=200"  # cooling: not listed
    assert router.count(A) == 1
    assert until is not None and until - time.monotonic() > 50  # the long Retry-After wins


async def test_a_failed_model_cools_down_then_comes_back_by_itself(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=503), Reply(status=503))
    ref_a = parse_ref(REF_A)
    async with serve(isolated_home, router) as (client, state, _):
        first = await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
        now = time.monotonic()
        until = state.cooldowns.cooling_until(ref_a, now)
        assert until is not None and 4 < until - now <= 5  # 5 s for a first failure (SPEC §9)
        while_cooling = await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
        assert router.count(A) == 2
        # The clock moves on through the public Cooldowns object: a failure recorded long ago
        # has a cooldown that ended long ago.
        state.cooldowns.fail(ref_a, time.monotonic() - 1000)
        assert state.cooldowns.cooling_until(ref_a, time.monotonic()) is None
        after = await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
        cleared = state.cooldowns.cooling_until(ref_a, time.monotonic())
        again = await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
    assert [first.model, while_cooling.model, after.model, again.model] == [
        REF_B,
        REF_B,
        REF_A,
        REF_A,
    ]
    assert cleared is None  # the success cleared the cooldown
    assert router.count(A) == 4


async def test_one_outage_met_by_many_requests_opens_the_model_5_s_not_15(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=503, delay_first_byte=0.2, retry_after="0", repeat=True))
    async with serve(isolated_home, router) as (client, state, _):
        answers = await asyncio.gather(
            *(
                client.chat.completions.create(model="coderclaw", messages=MESSAGES)
                for _ in range(8)
            )
        )
        now = time.monotonic()
        until = state.cooldowns.cooling_until(parse_ref(REF_A), now)
    assert {a.model for a in answers} == {REF_B}
    assert until is not None and until - now <= 5


async def test_when_every_model_cools_the_soonest_to_end_is_tried(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, state, _):
        now = time.monotonic()
        state.cooldowns.fail(parse_ref(REF_A), now, retry_after=50)
        state.cooldowns.fail(parse_ref(REF_B), now)
        raw = await ask(client)
    assert raw.parse().model == REF_B
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_B}=200"
    assert router.count(A) == 0


@pytest.mark.parametrize(
    ("stream", "reply"),
    [
        (False, Reply(delay_first_byte=3)),
        (True, Reply(delay_first_byte=3)),
        (True, Reply(stall_after=0)),  # headers sent, then nothing
    ],
    ids=["silent", "silent-stream", "stalled-before-first-chunk"],
)
async def test_a_silent_primary_is_asked_once_then_the_fallback_serves(
    isolated_home: Path, router: FakeRouter, stream: bool, reply: Reply
) -> None:
    router.script(A, reply)
    async with serve(isolated_home, router, retries=2) as (client, _, _):
        started = time.monotonic()
        raw = await client.chat.completions.with_raw_response.create(
            model="coderclaw", messages=MESSAGES, stream=stream
        )
        if stream:
            text, _ = await stream_text(raw.parse())
        else:
            text = raw.parse().choices[0].message.content or ""
        elapsed = time.monotonic() - started
    assert text == f"Hello from {B}"
    assert router.count(A) == 1
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_A}=timeout,{REF_B}=200"
    assert 0.4 < elapsed < 2.5  # the first-token timeout (0.5 s), not the router's delay


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "model_not_supported"),
        (400, "model_not_found"),
        (400, "context_length_exceeded"),
        (404, None),
        (410, None),
        (408, None),
    ],
)
async def test_model_unavailable_goes_to_the_next_model_at_once(
    isolated_home: Path, router: FakeRouter, status: int, code: str | None
) -> None:
    router.script(A, Reply(status=status, error_code=code, repeat=True))
    async with serve(isolated_home, router, retries=3) as (client, _, _):
        raw = await ask(client)
    assert raw.parse().model == REF_B
    assert router.count(A) == 1
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_A}={status},{REF_B}=200"


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "", openai.BadRequestError),
        (400, "content_policy_violation", openai.BadRequestError),
        (413, "", openai.APIStatusError),
        (422, "", openai.UnprocessableEntityError),
    ],
)
async def test_a_bad_request_goes_back_to_the_client_as_is(
    isolated_home: Path,
    router: FakeRouter,
    status: int,
    code: str,
    error: type[openai.APIStatusError],
) -> None:
    router.script(A, Reply(status=status, error_code=code))
    async with serve(isolated_home, router) as (client, _, _):
        with pytest.raises(error) as info:
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
    exc = info.value
    assert exc.status_code == status
    assert exc.code == (code or None)
    if code == "content_policy_violation":
        assert "safety system" in exc.message
    assert len(router.chat_requests()) == 1
    assert exc.response.headers["x-coderclaw-attempts"] == f"{REF_A}={status}"


@pytest.mark.parametrize("stream", [False, True])
async def test_401_stops_the_chain_and_says_run_onboard(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script(A, Reply(status=401))
    async with serve(isolated_home, router) as (client, _, _):
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(
                model="coderclaw", messages=MESSAGES, stream=stream
            )
    exc = info.value
    assert "coderclaw onboard" in exc.message
    assert "Invalid username or password." in exc.message  # the router's words are kept
    assert exc.code == "invalid_api_key"
    assert len(router.chat_requests()) == 1


async def test_402_says_credits_are_exhausted(isolated_home: Path, router: FakeRouter) -> None:
    router.script(A, Reply(status=402))
    async with serve(isolated_home, router) as (client, _, _):
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
    exc = info.value
    assert exc.status_code == 402
    assert "credits exhausted" in exc.message
    assert "huggingface.co/settings/billing" in exc.message
    assert exc.code == "insufficient_quota"
    assert len(router.chat_requests()) == 1


async def test_403_says_the_token_lacks_the_permission(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=403))
    async with serve(isolated_home, router) as (client, _, _):
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
    assert "Make calls to Inference Providers" in info.value.message
    assert len(router.chat_requests()) == 1


async def test_every_model_rate_limited_gives_429_with_retry_after(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.set_default(Reply(status=429, retry_after="30", repeat=True))
    async with serve(isolated_home, router) as (client, _, _):
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
    headers = info.value.response.headers
    assert 25 <= int(headers["retry-after"]) <= 30  # the soonest cooldown end
    assert headers["x-coderclaw-attempts"] == f"{REF_A}=429,{REF_B}=429"
    assert REF_A in info.value.message and REF_B in info.value.message


async def test_every_model_rate_limited_without_retry_after(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.set_default(Reply(status=429, repeat=True))
    async with serve(isolated_home, router, retries=0) as (client, _, _):
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 10


@pytest.mark.parametrize(
    ("a", "b", "status", "attempts"),
    [
        (
            [Reply(status=503, retry_after="0", repeat=True)],
            [Reply(status=503, retry_after="0", repeat=True)],
            503,
            f"{REF_A}=503,{REF_A}=503,{REF_B}=503,{REF_B}=503",
        ),
        (
            [Reply(status=500, retry_after="0"), Reply(status=404)],
            [Reply(status=429, retry_after="0"), Reply(status=500, retry_after="0")],
            502,
            f"{REF_A}=500,{REF_A}=404,{REF_B}=429,{REF_B}=500",
        ),
        (
            [Reply(delay_first_byte=3, repeat=True)],
            [Reply(chunks=2, stall_after=0, repeat=True)],
            504,
            f"{REF_A}=timeout,{REF_B}=timeout",
        ),
        (
            [Reply(delay_first_byte=3)],
            [Reply(status=503, retry_after="0", repeat=True)],
            502,
            f"{REF_A}=timeout,{REF_B}=503,{REF_B}=503",
        ),
    ],
    ids=["all-503", "mixed", "all-silent", "silent-and-503"],
)
async def test_every_model_failing_lists_each_attempt(
    isolated_home: Path,
    router: FakeRouter,
    a: list[Reply],
    b: list[Reply],
    status: int,
    attempts: str,
) -> None:
    router.script(A, *a)
    router.script(B, *b)
    async with serve(isolated_home, router) as (client, _, _):
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES, stream=True)
    exc = info.value
    assert exc.status_code == status
    assert exc.response.headers["x-coderclaw-attempts"] == attempts
    assert exc.response.headers["x-request-id"]
    assert "x-coderclaw-model" not in exc.response.headers
    for attempt in attempts.split(","):
        assert attempt in exc.message


async def test_the_time_budget_bounds_retries_and_waits(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.set_default(Reply(status=503, retry_after="5", repeat=True))
    timeouts = {**FAST, "totalSeconds": 1.5}
    async with serve(isolated_home, router, retries=5, timeouts=timeouts) as (client, _, _):
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
        elapsed = time.monotonic() - started
    assert info.value.status_code == 504
    assert "time budget" in info.value.message
    assert elapsed < 2.5
    assert router.count(B) == 0  # the budget ran out while waiting to retry A


async def test_the_time_budget_bounds_a_slow_first_token(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.set_default(Reply(delay_first_byte=5, repeat=True))
    timeouts = {**FAST, "firstTokenSeconds": 10, "totalSeconds": 1}
    async with serve(isolated_home, router, timeouts=timeouts) as (client, _, _):
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
        elapsed = time.monotonic() - started
    assert info.value.status_code == 504
    assert elapsed < 2.0


# -- honest streams --------------------------------------------------------------------------

STREAM_FAULTS = [
    pytest.param(Reply(chunks=6, drop_after=3), "dropped", id="dropped-after-3"),
    pytest.param(Reply(chunks=6, stall_after=3), "stalled", id="stalled-past-idle"),
    pytest.param(Reply(chunks=3, finish_reason=None), "finish_reason", id="no-finish-reason"),
    pytest.param(
        Reply(chunks=3, finish_reason=None, done=False), "finish_reason", id="no-finish-no-done"
    ),
    pytest.param(
        Reply(chunks=4, error_event_after=2, error_message="provider exploded"),
        "provider exploded",
        id="error-event",
    ),
    pytest.param(
        Reply(chunks=3, stall_after=0, reasoning="reasoning_content"),
        "stalled",
        id="stall-after-reasoning",
    ),
]


@pytest.mark.parametrize(("reply", "words"), STREAM_FAULTS)
async def test_a_stream_failing_after_its_first_chunk_raises_in_the_sdk(
    isolated_home: Path, router: FakeRouter, reply: Reply, words: str
) -> None:
    reply.repeat = True
    router.script(A, reply)
    # rescue off: SPEC §9 would continue these on the fallback (tests/test_rescue_e2e.py)
    async with serve(isolated_home, router, rescue="off") as (client, _, base):
        stream = await client.chat.completions.create(
            model="coderclaw", messages=MESSAGES, stream=True
        )
        received: list[Any] = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                received.append(chunk)
        status, body = await raw_sse(base, {"model": "coderclaw", "messages": MESSAGES})
    assert received, "the stream was committed before it failed"
    assert words in info.value.message
    assert status == 200
    assert b"[DONE]" not in body
    assert body.rstrip().endswith(b"}")
    last = body.rstrip().rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b'data: {"error":')
    assert router.count(B) == 0  # committed: no failover after the first chunk


async def test_the_time_budget_ends_a_long_stream_honestly(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(chunks=10, chunk_delay=0.2))
    timeouts = {**FAST, "idleSeconds": 5, "totalSeconds": 1}
    async with serve(isolated_home, router, timeouts=timeouts) as (client, _, _):
        stream = await client.chat.completions.create(
            model="coderclaw", messages=MESSAGES, stream=True
        )
        started = time.monotonic()
        with pytest.raises(openai.APIError) as info:
            async for _ in stream:
                pass
        elapsed = time.monotonic() - started
    assert "totalSeconds" in info.value.message
    assert elapsed < 1.5


async def test_a_finished_stream_without_done_ends_normally(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(done=False, repeat=True))
    async with serve(isolated_home, router) as (client, _, base):
        stream = await client.chat.completions.create(
            model="coderclaw", messages=MESSAGES, stream=True
        )
        text, chunks = await stream_text(stream)
        status, body = await raw_sse(base, {"model": "coderclaw", "messages": MESSAGES})
    assert text == f"Hello from {A}"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert status == 200
    assert body.endswith(b"data: [DONE]\n\n")
    assert body.count(b"[DONE]") == 1


async def test_a_non_json_event_mid_stream_is_dropped(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(chunks=4, non_json_event_after=2, repeat=True))
    async with serve(isolated_home, router) as (client, _, base):
        text, chunks = await stream_text(
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES, stream=True)
        )
        _, body = await raw_sse(base, {"model": "coderclaw", "messages": MESSAGES})
    assert text == f"Hello from {A}"
    assert len(chunks) == 5
    assert b"not json" not in body
    assert body.endswith(b"data: [DONE]\n\n")


# -- pass-through ----------------------------------------------------------------------------


@pytest.mark.parametrize("usage", ["last", "separate"])
async def test_usage_reaches_the_client(
    isolated_home: Path, router: FakeRouter, usage: Any
) -> None:
    router.script(A, Reply(usage=usage))
    async with serve(isolated_home, router) as (client, _, _):
        _, chunks = await stream_text(
            await client.chat.completions.create(
                model="coderclaw",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0].usage.completion_tokens == 3  # 'Hello from org/model-a'
    if usage == "separate":
        assert with_usage[0].choices == []
        assert with_usage[0].model == REF_A
    else:
        assert with_usage[0].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_deltas_pass_through(
    isolated_home: Path, router: FakeRouter, field: Any
) -> None:
    router.script(A, Reply(reasoning=field), Reply(reasoning=field))
    async with serve(isolated_home, router) as (client, _, _):
        text, chunks = await stream_text(
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES, stream=True)
        )
        completion = await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
    first = chunks[0].choices[0].delta.model_dump()
    assert first[field] == f"Thinking about it ({A})."
    assert text == f"Hello from {A}"
    assert completion.choices[0].message.model_dump()[field] == f"Thinking about it ({A})."


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


async def test_tool_calls_pass_through(isolated_home: Path, router: FakeRouter) -> None:
    router.script(A, Reply(tool_calls=True, chunks=3), Reply(tool_calls=True))
    async with serve(isolated_home, router) as (client, _, _):
        _, chunks = await stream_text(
            await client.chat.completions.create(
                model="coderclaw", messages=MESSAGES, tools=TOOLS, stream=True
            )
        )
        completion = await client.chat.completions.create(
            model="coderclaw", messages=MESSAGES, tools=TOOLS
        )
    arguments = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    head = next(c for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert head.choices[0].delta.tool_calls[0].function.name == "get_weather"
    assert arguments == '{"city": "Paris", "unit": "celsius"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris", "unit": "celsius"}'
    assert completion.choices[0].finish_reason == "tool_calls"


def _events(body: bytes) -> list[Any]:
    """The JSON events of an SSE body, without the fields that differ per request (and the
    ``cost`` the gateway adds to every ``usage``: ``_costs`` reads it)."""
    out = []
    for block in body.split(b"\n\n"):
        if block.startswith(b"data: {"):
            event = json.loads(re.sub(rb'"call_[0-9a-f]+"', b'"call_X"', block[6:]))
            for key in ("id", "created", "model"):
                event.pop(key, None)
            if isinstance(event.get("usage"), dict):
                event["usage"].pop("cost", None)
            out.append(event)
    return out


def _costs(body: bytes) -> list[Any]:
    """The ``usage.cost`` of each event of an SSE body that has a usage (absent: "absent")."""
    return [
        event["usage"].get("cost", "absent")
        for block in body.split(b"\n\n")
        if block.startswith(b"data: {")
        and isinstance((event := json.loads(block[6:])).get("usage"), dict)
    ]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(reasoning="reasoning_content", usage="separate"),
        Reply(reasoning="reasoning", tool_calls=True, chunks=4),
        Reply(provider="hf-inference", usage="none"),
    ],
    ids=["reasoning_content", "reasoning-tools", "tgi"],
)
async def test_stream_events_pass_through_untouched_but_for_the_model(
    isolated_home: Path, router: FakeRouter, reply: Reply
) -> None:
    """Each event the client gets is the upstream's, field for field; only ``model`` differs,
    and each ``usage`` gains the gateway's ``cost`` (None here: the fake's model has no price)."""
    reply.repeat = True
    router.script(A, reply)
    body = {
        "model": A,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with serve(isolated_home, router) as (_, _, base):
        _, through = await raw_sse(base, body)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{router.base_url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as resp,
        ):
            direct = await resp.read()
    assert _events(through) == _events(direct)
    assert len(_events(through)) >= 4
    assert _costs(through) == [None for e in _events(direct) if isinstance(e.get("usage"), dict)]
    models = {json.loads(b[6:])["model"] for b in through.split(b"\n\n") if b[6:7] == b"{"}
    assert models == {REF_A}


@pytest.mark.parametrize(
    "reply",
    [Reply(reasoning="reasoning_content"), Reply(reasoning="reasoning", tool_calls=True)],
    ids=["reasoning_content", "reasoning-tools"],
)
async def test_a_plain_body_passes_through_untouched_but_for_the_model(
    isolated_home: Path, router: FakeRouter, reply: Reply
) -> None:
    reply.repeat = True
    router.script(A, reply)
    body = {"model": A, "messages": MESSAGES, "tools": TOOLS}
    async with (
        serve(isolated_home, router) as (_, _, base),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(f"{base}/chat/completions", json=body) as resp:
            through = await resp.read()
        async with session.post(
            f"{router.base_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            direct = await resp.read()
    [got] = _events(b"data: " + through)
    [want] = _events(b"data: " + direct)
    assert got == want
    assert _costs(b"data: " + through) == [None]  # no price for org/model-a: unknown, not 0
    assert json.loads(through)["model"] == REF_A
    assert json.loads(through)["choices"][0]["seed"] == 3629048360264764400  # exact


@pytest.mark.parametrize("stream", [False, True])
async def test_every_request_field_reaches_the_upstream_untouched(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 °C, sunny ☀"},
    ]
    fields: dict[str, Any] = {
        "temperature": 0.25,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["\n\n", "END"],
        "seed": 1234,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_object"},
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "logprobs": True,
        "top_logprobs": 2,
        "user": "someone",
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
    }
    extra = {"top_k": 20, "tool_prompt": "x", "nested": {"a": [1, None, {"b": 2.5}]}}
    if stream:
        fields["stream_options"] = {"include_usage": True}
    async with serve(isolated_home, router) as (client, _, _):
        raw = await client.chat.completions.with_raw_response.create(
            model="coderclaw", messages=messages, stream=stream, extra_body=extra, **fields
        )
        if stream:
            await stream_text(raw.parse())
        sent = raw.http_request.content
    [recorded] = router.chat_requests()
    expected = json.loads(sent)
    assert expected["model"] == "coderclaw"
    assert recorded.json == {**expected, "model": A}


async def test_big_integers_in_the_request_reach_the_upstream_exactly(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _, _):
        await client.chat.completions.create(
            model="coderclaw", messages=MESSAGES, extra_body={"big": 2**70 + 1, "neg": -(2**64) - 3}
        )
    [recorded] = router.chat_requests()
    assert recorded.json["big"] == 2**70 + 1
    assert recorded.json["neg"] == -(2**64) - 3


async def test_upstream_gets_the_bare_id_with_suffix_and_the_hf_token_only(
    isolated_home: Path, router: FakeRouter
) -> None:
    chain = ["huggingface/Qwen/Qwen3-8B:cheapest", "huggingface/org/model-b:together"]
    router.script("Qwen/Qwen3-8B", Reply(status=503, repeat=True))
    async with serve(isolated_home, router, chain=chain, retries=0) as (client, _, _):
        raw = await client.chat.completions.with_raw_response.create(
            model="coderclaw",
            messages=MESSAGES,
            extra_headers={"X-HF-Bill-To": "my-org", "X-Secret-Header": "keep-me-local"},
        )
    assert [r.model for r in router.chat_requests()] == ["Qwen/Qwen3-8B:cheapest", f"{B}:together"]
    for recorded in router.chat_requests():
        assert recorded.headers["Authorization"] == f"Bearer {TOKEN}"
        assert CLIENT_KEY not in str(dict(recorded.headers))
        assert recorded.headers.get("X-HF-Bill-To") == "my-org"
        assert "X-Secret-Header" not in recorded.headers
    assert raw.parse().model == "huggingface/org/model-b:together"
    assert raw.headers["x-inference-provider"] == "together"


async def test_the_gateway_token_is_not_forwarded_either(
    isolated_home: Path, router: FakeRouter
) -> None:
    gateway_token = "gw-secret-token-0123456789abcdef"
    async with (
        run_gateway(isolated_home, router, auth={"token": gateway_token}) as (base, _),
        AsyncOpenAI(base_url=base, api_key=gateway_token, max_retries=0) as client,
    ):
        await client.chat.completions.create(model="coderclaw", messages=MESSAGES)
    [recorded] = router.chat_requests()
    assert recorded.token == TOKEN
    assert gateway_token not in str(dict(recorded.headers))


# -- load and disconnects --------------------------------------------------------------------


async def test_200_concurrent_streams_all_complete_in_order(
    isolated_home: Path, router: FakeRouter
) -> None:
    content = " ".join(f"w{i:02d}" for i in range(40))
    router.set_default(Reply(chunks=20, content=content, repeat=True))
    # 200 streams, their router and their clients share one process: the 0.5 s first-token
    # timeout of FAST measures this test's own loop, not the gateway (and a timeout opens A).
    patient = {**FAST, "firstTokenSeconds": 10, "idleSeconds": 10}
    async with serve(isolated_home, router, timeouts=patient) as (client, _, _):

        async def one() -> tuple[str, int]:
            stream = await client.chat.completions.create(
                model="coderclaw", messages=MESSAGES, stream=True
            )
            text, chunks = await stream_text(stream)
            return text, len(chunks)

        results = await asyncio.gather(*(one() for _ in range(200)))
    assert results == [(content, 21)] * 200
    assert router.count(A) == 200


async def test_a_client_disconnect_cancels_the_upstream_request(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(chunks=6, stall_after=2))
    timeouts = {**FAST, "idleSeconds": 30}  # only the disconnect can end the upstream call
    async with serve(isolated_home, router, timeouts=timeouts) as (client, state, _):
        stream = await client.chat.completions.create(
            model="coderclaw", messages=MESSAGES, stream=True
        )
        got = [await stream.__anext__(), await stream.__anext__()]
        assert state.open_streams == 1
        closed_at = time.monotonic()
        await stream.close()
        model, seen_at = await router.wait_disconnect(1.0)
        await eventually(lambda: state.open_streams == 0, 1.0)
        assert state.open_streams == 0
    assert len(got) == 2
    assert model == A
    assert seen_at - closed_at < 1.0


async def test_a_client_giving_up_before_the_answer_cancels_the_upstream_request(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(delay_first_byte=20))
    timeouts = {**FAST, "firstTokenSeconds": 30}
    async with serve(isolated_home, router, timeouts=timeouts) as (client, _, _):
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES, timeout=0.3)
        model, seen_at = await router.wait_disconnect(1.0)
    assert model == A
    assert seen_at - started < 1.3
    assert router.count(B) == 0


async def test_the_connection_closed_for_a_client_that_gave_up_is_replaced(
    isolated_home: Path, router: FakeRouter
) -> None:
    """Closing the upstream connection is how the router learns to stop; the gateway opens a
    replacement at once, so the next request pays no new handshake."""
    router.script(A, Reply(), Reply(delay_first_byte=20), Reply())
    timeouts = {**FAST, "firstTokenSeconds": 30}
    async with serve(isolated_home, router, timeouts=timeouts) as (client, state, _):
        await ask(client)
        [first] = router.connection_ports()
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="coderclaw", messages=MESSAGES, timeout=0.3)
        await router.wait_disconnect(1.0)
        await eventually(lambda: len(router.connection_ports() - {first}) == 1, 2.0)
        await eventually(lambda: first not in router.connection_ports(), 2.0)
        [replacement] = router.connection_ports()
        await eventually(lambda: upstream_connection_counts(state.session.connector) == (0, 1))
        await ask(client)
        assert router.connection_ports() == {replacement}
    ports = [r.port for r in router.chat_requests()]
    assert ports == [first, first, replacement]


async def test_connections_closed_for_streams_given_up_together_are_replaced_together(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.set_default(Reply(chunks=6, stall_after=2, repeat=True))
    timeouts = {**FAST, "idleSeconds": 30}
    async with serve(isolated_home, router, timeouts=timeouts) as (client, state, _):
        streams = await asyncio.gather(
            *(
                client.chat.completions.create(model="coderclaw", messages=MESSAGES, stream=True)
                for _ in range(4)
            )
        )
        for stream in streams:
            await stream.__anext__()
        used = router.connection_ports()
        assert len(used) == 4
        for stream in streams:
            await stream.close()
        for _ in range(4):
            await router.wait_disconnect(1.0)
        await eventually(lambda: not router.connection_ports() & used, 2.0)
        await eventually(lambda: len(router.connection_ports()) == 4, 2.0)
        await eventually(lambda: upstream_connection_counts(state.session.connector) == (0, 4))


async def test_no_connection_is_opened_for_a_failure_of_the_router(
    isolated_home: Path, router: FakeRouter
) -> None:
    """Only a client going away is made good: a router that resets its connection is not
    dialled again until a request needs it."""
    router.script(A, Reply(chunks=6, drop_after=2))
    # rescue off: SPEC §9 would continue the stream on the fallback
    async with serve(isolated_home, router, rescue="off") as (client, state, _):
        with pytest.raises(openai.APIError):
            stream = await client.chat.completions.create(
                model="coderclaw", messages=MESSAGES, stream=True
            )
            await stream_text(stream)
        await asyncio.sleep(0.3)  # past the refill delay
        assert upstream_connection_counts(state.session.connector) == (0, 0)
        assert router.connection_ports() == set()


# -- model resolution ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["coderclaw", "default", "", "CoderClaw"])
async def test_chain_names_use_the_configured_chain(
    isolated_home: Path, router: FakeRouter, name: str
) -> None:
    async with serve(isolated_home, router) as (client, _, _):
        completion = await client.chat.completions.create(model=name, messages=MESSAGES)
    assert completion.model == REF_A


async def test_an_alias_is_tried_first_then_the_fallbacks(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(C, Reply(status=404))
    async with serve(isolated_home, router, aliases={"Coder C": REF_C}) as (client, _, _):
        raw = await client.chat.completions.with_raw_response.create(
            model="  coder c ", messages=MESSAGES
        )
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_C}=404,{REF_B}=200"
    assert router.count(A) == 0  # the primary is not a fallback of another model


@pytest.mark.parametrize(
    ("name", "sent", "served"),
    [
        ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B", "huggingface/Qwen/Qwen3-8B"),
        ("huggingface/Qwen/Qwen3-8B:fastest", "Qwen/Qwen3-8B:fastest", None),
        ("huggingface/huggingface/Qwen/Qwen3-8B", "Qwen/Qwen3-8B", "huggingface/Qwen/Qwen3-8B"),
        ("new-org/brand-new:groq", "new-org/brand-new:groq", "huggingface/new-org/brand-new:groq"),
    ],
)
async def test_a_ref_or_bare_id_is_sent_as_the_hf_id(
    isolated_home: Path, router: FakeRouter, name: str, sent: str, served: str | None
) -> None:
    router.script("new-org/brand-new", Reply())  # a model the catalog does not know yet
    async with serve(isolated_home, router) as (client, _, _):
        raw = await client.chat.completions.with_raw_response.create(model=name, messages=MESSAGES)
    assert router.chat_requests()[0].model == sent
    assert raw.parse().model == (served or f"huggingface/{sent}")


@pytest.mark.parametrize(
    "name", ["not a model", "gpt-4o", "a/b/c/d", "huggingface/", "org/model:", "other/org/model"]
)
async def test_an_invalid_model_name_is_404_model_not_found(
    isolated_home: Path, router: FakeRouter, name: str
) -> None:
    async with serve(isolated_home, router) as (client, _, _):
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model=name, messages=MESSAGES)
    assert info.value.code == "model_not_found"
    assert "/v1/models" in info.value.message
    assert router.chat_requests() == []


# -- /v1/models ------------------------------------------------------------------------------


async def test_models_list_and_retrieve(isolated_home: Path, router: FakeRouter) -> None:
    aliases = {"Qwen3 8B (cheapest)": "huggingface/Qwen/Qwen3-8B:cheapest", "Mine": REF_C}
    async with serve(isolated_home, router, aliases=aliases) as (client, _, _):
        page = await client.models.list()
        one = await client.models.retrieve("huggingface/Qwen/Qwen3-8B")
        alias = await client.models.retrieve("qwen3 8b (CHEAPEST)")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("huggingface/nobody/nothing")
    ids = [m.id for m in page.data]
    assert ids[0] == "coderclaw"
    for wanted in (
        "huggingface/Qwen/Qwen3-8B",
        "huggingface/deepseek-ai/DeepSeek-R1",
        "huggingface/Qwen/Qwen3-8B:cheapest",
        REF_A,
        REF_B,
        REF_C,
        "Qwen3 8B (cheapest)",
        "Mine",
    ):
        assert wanted in ids
    assert len(ids) == len(set(ids))
    assert one.id == "huggingface/Qwen/Qwen3-8B"
    assert one.model_dump()["context_length"] == 40_960
    assert alias.model_dump()["alias_for"] == "huggingface/Qwen/Qwen3-8B:cheapest"
