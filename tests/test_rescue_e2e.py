"""Mid-stream rescue (SPEC §9), end to end with the openai SDK: a committed text stream that
breaks goes on seamlessly on the next model, with no duplicated and no missing text; the
streams that may not be rescued end with the honest error of SPEC §6, as before."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from openai import AsyncOpenAI

from gateway.observe import setup_logging
from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import run_gateway

A, B, C = "org/model-a", "org/model-b", "org/model-c"
REF_A, REF_B, REF_C = (f"huggingface/{m}" for m in (A, B, C))
MESSAGES: list[Any] = [{"role": "user", "content": "Count to sixty"}]
# 60 words of 4 characters: 60 stream chunks are exactly the 60 words.
WORDS = "".join(f"w{i:02d} " for i in range(60))
TIMEOUTS = {"connectSeconds": 1, "firstTokenSeconds": 1, "idleSeconds": 0.5, "totalSeconds": 10}


@pytest.fixture
def rendered_logs() -> Iterator[io.StringIO]:
    """The gateway's real log pipeline (JSON lines) into a buffer."""
    out = io.StringIO()
    setup_logging("debug", "json", stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()


async def _stream(base: str, **extra: Any) -> tuple[str, list[str], str | None]:
    """(the whole text, the model of each content chunk, the finish reason) as the SDK sees it."""
    text, models, finish = "", [], None
    async with AsyncOpenAI(base_url=base, api_key="sk-c", max_retries=0, timeout=30) as client:
        stream = await client.chat.completions.create(
            model="coderclaw", messages=MESSAGES, stream=True, **extra
        )
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    text += choice.delta.content
                    models.append(chunk.model)
                finish = choice.finish_reason or finish
    return text, models, finish


def _log_attempts(logs: io.StringIO) -> list[tuple[str, Any]]:
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line]
    [entry] = [e for e in lines if e["event"] == "chat_completion"]
    return [(a["model"], a["status"]) for a in entry["attempts"]]


@pytest.mark.parametrize(
    ("fault", "sent"),
    [
        ({"drop_after": 40}, 40),
        ({"stall_after": 20}, 20),
        ({"error_event_after": 30}, 30),
    ],
    ids=["cut-after-40-of-60-words", "stalled-after-20", "error-event-after-30"],
)
async def test_a_broken_stream_is_continued_on_the_fallback_with_a_prefill(
    isolated_home: Path,
    router: FakeRouter,
    rendered_logs: io.StringIO,
    fault: dict[str, Any],
    sent: int,
) -> None:
    """The client gets the complete text exactly once, in order, and a normal finish; from the
    rescue on the chunks name the rescuing model; the log line shows a=200,a=cut,b=rescue; the
    fallback was asked with the sent text as a final assistant message."""
    router.script(A, Reply(content=WORDS, chunks=60, **fault))
    router.script(B, Reply(content=WORDS, chunks=60 - sent, continue_prefill=True))
    async with run_gateway(isolated_home, router, timeouts=TIMEOUTS) as (base, _):
        text, models, finish = await _stream(base)
        metrics = await _metrics(base)
    assert text == WORDS
    assert finish == "stop"
    assert "coderclaw_rescues_tried_total 1.0" in metrics
    assert "coderclaw_rescues_succeeded_total 1.0" in metrics
    assert models == [REF_A] * sent + [REF_B] * (60 - sent)
    [asked] = router.chat_requests(B)
    assert json.loads(asked.body)["messages"][-1] == {
        "role": "assistant",
        "content": WORDS[: 4 * sent],
    }
    # A pooled connection the router closed after its error event may show as a "reset" first.
    trail = [a for a in _log_attempts(rendered_logs) if a[1] != "reset"]
    assert trail == [(REF_A, 200), (REF_A, "cut"), (REF_B, "rescue")]


async def test_a_fallback_that_refuses_prefill_restarts_and_the_restart_completes_the_answer(
    isolated_home: Path, router: FakeRouter, rendered_logs: io.StringIO
) -> None:
    """The fallback answers Anthropic's 400 to the prefill: the same model is asked again
    without it, its answer is held back until it covers the sent text and only the rest is
    streamed on. The 400 never reaches the client."""
    router.script(A, Reply(content=WORDS, chunks=60, drop_after=40))
    router.script(B, Reply(reject_prefill=True), Reply(content=WORDS, chunks=60))
    async with run_gateway(isolated_home, router, timeouts=TIMEOUTS) as (base, _):
        text, models, finish = await _stream(base)
    assert text == WORDS and finish == "stop"
    assert models[-1] == REF_B
    first, second = router.chat_requests(B)
    assert json.loads(first.body)["messages"][-1]["role"] == "assistant"
    assert json.loads(second.body)["messages"] == MESSAGES  # the restart: no prefill
    assert _log_attempts(rendered_logs) == [
        (REF_A, 200),
        (REF_A, "cut"),
        (REF_B, 400),
        (REF_B, "rescue"),
    ]


async def test_a_restart_that_does_not_reproduce_the_sent_text_ends_with_the_original_error(
    isolated_home: Path, router: FakeRouter
) -> None:
    """A restart that says something else: the stream ends honestly with the original
    error (the drop), not the 400; the next rescue on that model skips the prefill."""
    other = "".join(f"x{i:02d} " for i in range(60))
    router.script(A, Reply(content=WORDS, chunks=60, drop_after=40))
    router.script(B, Reply(reject_prefill=True), Reply(content=other, chunks=60))
    async with run_gateway(isolated_home, router, timeouts=TIMEOUTS) as (base, _):
        status, body = await _raw_stream(base)
        assert status == 200
        assert body.count(b'"error"') == 1
        assert b"the upstream connection dropped mid-stream" in body
        assert b"prefill" not in body
        assert b"[DONE]" not in body
        # A second broken stream: the fallback is asked without prefill at once.
        router.script(A, Reply(content=WORDS, chunks=60, drop_after=10))
        router.script(B, Reply(content=WORDS, chunks=60))
        again, _, finish = await _stream(base)
    assert again == WORDS and finish == "stop"
    assert [json.loads(r.body)["messages"][-1]["role"] for r in router.chat_requests(B)] == [
        "assistant",
        "user",
        "user",
    ]


async def _metrics(base: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{base[:-3]}/metrics") as resp:
        return await resp.text()


async def _raw_stream(base: str, **extra: Any) -> tuple[int, bytes]:
    body = {"model": "coderclaw", "messages": MESSAGES, "stream": True, **extra}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/chat/completions", json=body) as resp,
    ):
        return resp.status, await resp.read()


@pytest.mark.parametrize(
    ("a", "extra", "config"),
    [
        (Reply(tool_calls=True, chunks=4, drop_after=2), {}, {}),
        (Reply(content=WORDS, chunks=60, drop_after=40), {}, {"rescue": "off"}),
        (Reply(content=WORDS, chunks=60, drop_after=40), {"n": 2}, {}),
        (Reply(content=WORDS, chunks=60, drop_after=40), {"logprobs": True}, {}),
    ],
    ids=["tool-call-stream", "rescue-off", "n-2", "logprobs"],
)
async def test_streams_that_may_not_be_rescued_end_with_the_honest_error(
    isolated_home: Path,
    router: FakeRouter,
    a: Reply,
    extra: dict[str, Any],
    config: dict[str, Any],
) -> None:
    router.script(A, a)
    async with run_gateway(isolated_home, router, timeouts=TIMEOUTS, **config) as (base, _):
        status, body = await _raw_stream(base, **extra)
    assert status == 200
    assert b"the upstream connection dropped mid-stream" in body
    assert b"[DONE]" not in body
    assert router.count(B) == 0


@pytest.mark.parametrize(
    ("b", "timeouts"),
    [
        (Reply(status=503, repeat=True), TIMEOUTS),  # out of models
        (  # out of time: the rescue would take 9 s of a 1.5 s budget
            Reply(content=WORDS, chunks=60, continue_prefill=True, chunk_delay=0.3),
            {**TIMEOUTS, "totalSeconds": 1.5},
        ),
    ],
    ids=["out-of-models", "out-of-time"],
)
async def test_a_rescue_that_runs_out_ends_with_the_original_error(
    isolated_home: Path, router: FakeRouter, b: Reply, timeouts: dict[str, Any]
) -> None:
    router.script(A, Reply(content=WORDS, chunks=60, error_event_after=30, chunk_delay=0.01))
    router.script(B, b)
    async with run_gateway(isolated_home, router, timeouts=timeouts) as (base, _):
        status, body = await _raw_stream(base)
    assert status == 200
    assert b"The upstream provider failed mid-stream" in body  # the original error
    assert b"[DONE]" not in body
    assert b"503" not in body and b"time budget" not in body


async def test_a_broken_responses_stream_is_continued_on_the_fallback(
    isolated_home: Path, router: FakeRouter
) -> None:
    """The Responses API gets the same rescue: the openai SDK's ``responses`` stream carries
    the whole text once, in order, and ends ``response.completed`` (not ``response.failed``)."""
    router.script(A, Reply(content=WORDS, chunks=60, drop_after=40))
    router.script(B, Reply(content=WORDS, chunks=20, continue_prefill=True))
    async with (
        run_gateway(isolated_home, router, timeouts=TIMEOUTS) as (base, _),
        AsyncOpenAI(base_url=base, api_key="sk-c", max_retries=0, timeout=30) as client,
    ):
        stream = await client.responses.create(model="coderclaw", input="Count", stream=True)
        events = [event async for event in stream]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == WORDS
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == WORDS
    assert "response.failed" not in [e.type for e in events]
    [asked] = router.chat_requests(B)
    assert json.loads(asked.body)["messages"][-1] == {"role": "assistant", "content": WORDS[:160]}


async def test_a_broken_messages_stream_is_continued_on_the_fallback(
    isolated_home: Path, router: FakeRouter
) -> None:
    """The Messages API too: the anthropic SDK's stream gets the whole text once and a clean
    ``message_stop`` with ``stop_reason: end_turn``."""
    anthropic = pytest.importorskip("anthropic")
    router.script(A, Reply(content=WORDS, chunks=60, stall_after=20))
    router.script(B, Reply(content=WORDS, chunks=40, continue_prefill=True))
    async with (
        run_gateway(isolated_home, router, timeouts=TIMEOUTS) as (base, _),
        anthropic.AsyncAnthropic(
            base_url=base.removesuffix("/v1"), api_key="x", max_retries=0
        ) as claude,
        claude.messages.stream(
            model="claude-sonnet-4-5", max_tokens=1000, messages=MESSAGES
        ) as stream,
    ):
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == WORDS
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == WORDS
