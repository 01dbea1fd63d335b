"""The Anthropic Messages API end to end (SPEC §10.2): the ``anthropic`` SDK → gateway → fake
router, which only ever receives chat completions.

Every test runs the real gateway app on 127.0.0.1 port 0 against the fake router, configured
by a real config file; what the router received is read back from the fake.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import run_gateway

anthropic = pytest.importorskip("anthropic")

A, B = "org/model-a", "org/model-b"
REF_A, REF_B = (f"huggingface/{m}" for m in (A, B))
FAST = {"connectSeconds": 1, "firstTokenSeconds": 0.5, "idleSeconds": 0.5, "totalSeconds": 10}
CLAUDE = "claude-sonnet-4-5-20250929"
HI: Any = [{"role": "user", "content": "Hi"}]
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}
GW_TOKEN = "gw-anthropic-Zq8Xv2Lm4Np6Rt"


@asynccontextmanager
async def serve(
    home: Path, router: FakeRouter, *, api_key: str = "sk-ant-unused", **config: Any
) -> AsyncIterator[tuple[Any, str]]:
    config.setdefault("timeouts", FAST)
    async with run_gateway(home, router, **config) as (base, _):
        root = base.removesuffix("/v1")
        client = anthropic.AsyncAnthropic(base_url=root, api_key=api_key, max_retries=0)
        try:
            yield client, root
        finally:
            await client.close()


async def test_a_plain_message_names_the_serving_ref(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _):
        raw = await client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=100, messages=HI
        )
        message = await raw.parse()  # the async client's parse() is a coroutine
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == f"Hello from {A}"
    assert message.stop_reason == "end_turn"
    assert message.model == REF_A
    assert message.usage.output_tokens == 3
    assert raw.headers["x-coderclaw-model"] == REF_A
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_A}=200"
    sent = router.chat_requests()[-1].json
    assert sent["model"] == A and sent["max_tokens"] == 100
    assert sent["messages"] == [{"role": "user", "content": "Hi"}]


async def test_the_system_prompt_and_stop_sequences_reach_the_router(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _):
        await client.messages.create(
            model=CLAUDE,
            max_tokens=100,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            stop_sequences=["\n\nHuman:"],
            messages=HI,
        )
    sent = router.chat_requests()[-1].json
    assert sent["messages"][0]["role"] == "system"
    assert "Be brief." in json.dumps(sent["messages"][0])
    assert sent["stop"] == ["\n\nHuman:"]


async def test_messages_stream_gives_the_text_and_a_final_message(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(chunks=4))
    async with (
        serve(isolated_home, router) as (client, _),
        client.messages.stream(model=CLAUDE, max_tokens=100, messages=HI) as stream,
    ):
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == f"Hello from {A}"
    assert final.stop_reason == "end_turn"
    assert final.model == REF_A


async def test_the_sync_client_streams_too(isolated_home: Path, router: FakeRouter) -> None:
    async with serve(isolated_home, router) as (_, root):

        def sync() -> str:
            with (
                anthropic.Anthropic(base_url=root, api_key="x", max_retries=0) as client,
                client.messages.stream(model=CLAUDE, max_tokens=50, messages=HI) as s,
            ):
                return "".join(s.text_stream)

        assert await asyncio.to_thread(sync) == f"Hello from {A}"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_is_called_and_its_result_sent_back(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script(A, Reply(tool_calls=True), Reply(content="Sunny in Paris"))
    async with serve(isolated_home, router) as (client, _):
        ask = "Weather in Paris?"
        if stream:
            async with client.messages.stream(
                model=CLAUDE,
                max_tokens=100,
                tools=[WEATHER_TOOL],
                messages=[{"role": "user", "content": ask}],
            ) as s:
                first = await s.get_final_message()
        else:
            first = await client.messages.create(
                model=CLAUDE,
                max_tokens=100,
                tools=[WEATHER_TOOL],
                messages=[{"role": "user", "content": ask}],
            )
        assert first.stop_reason == "tool_use"
        uses = [b for b in first.content if b.type == "tool_use"]
        assert len(uses) == 1
        use = uses[0]
        assert use.name == "get_weather"
        assert use.input == {"city": "Paris", "unit": "celsius"}
        second = await client.messages.create(
            model=CLAUDE,
            max_tokens=100,
            tools=[WEATHER_TOOL],
            messages=[
                {"role": "user", "content": ask},
                {"role": "assistant", "content": first.content},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sun"}
                    ],
                },
            ],
        )
    assert second.content[0].text == "Sunny in Paris"
    first_sent, second_sent = (r.json for r in router.chat_requests())
    assert first_sent["tools"][0]["function"]["name"] == "get_weather"
    assert first_sent["tools"][0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]
    messages = second_sent["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    call = messages[1]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert messages[2]["tool_call_id"] == call["id"]
    assert "18 C, sun" in json.dumps(messages[2]["content"])


async def test_a_failed_tool_result_says_so_upstream(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _):
        await client.messages.create(
            model=CLAUDE,
            max_tokens=100,
            messages=[
                {"role": "user", "content": "Run it"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"c": 1}}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "is_error": True,
                            "content": [{"type": "text", "text": "command not found"}],
                        }
                    ],
                },
            ],
        )
    tool = router.chat_requests()[-1].json["messages"][-1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "toolu_1"
    text = json.dumps(tool["content"]).lower()
    assert "command not found" in text and "error" in text


async def test_an_image_block_reaches_the_router_as_an_image_part(
    isolated_home: Path, router: FakeRouter
) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    async with serve(isolated_home, router) as (client, _):
        await client.messages.create(
            model=CLAUDE,
            max_tokens=100,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": png},
                        },
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ],
        )
    parts = router.chat_requests()[-1].json["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}
    assert parts[1] == {"type": "text", "text": "What is this?"}


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_deltas_become_thinking_blocks(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script(A, Reply(reasoning="reasoning_content"))
    async with serve(isolated_home, router) as (client, _):
        kwargs: Any = {
            "model": CLAUDE,
            "max_tokens": 2000,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": HI,
        }
        if stream:
            async with client.messages.stream(**kwargs) as s:
                kinds = [event.type async for event in s]
                message = await s.get_final_message()
            assert "thinking" in kinds
        else:
            message = await client.messages.create(**kwargs)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking
    assert message.content[1].text == f"Hello from {A}"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_length_finish_is_stop_reason_max_tokens(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script(A, Reply(finish_reason="length"))
    async with serve(isolated_home, router) as (client, _):
        if stream:
            async with client.messages.stream(model=CLAUDE, max_tokens=5, messages=HI) as s:
                message = await s.get_final_message()
        else:
            message = await client.messages.create(model=CLAUDE, max_tokens=5, messages=HI)
    assert message.stop_reason == "max_tokens"


@pytest.mark.parametrize("stream", [False, True])
async def test_failover_before_the_first_event_is_invisible(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script(A, Reply(status=503, repeat=True))
    async with serve(isolated_home, router, retries=0) as (client, _):
        if stream:
            async with client.messages.stream(model=CLAUDE, max_tokens=50, messages=HI) as s:
                message = await s.get_final_message()
        else:
            message = await client.messages.create(model=CLAUDE, max_tokens=50, messages=HI)
    assert message.content[0].text == f"Hello from {B}"
    assert message.model == REF_B


async def test_a_stream_cut_after_commit_raises_in_the_sdk(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(chunks=4, drop_after=2))
    seen: list[str] = []
    async with serve(isolated_home, router, rescue="off") as (client, _):
        with pytest.raises(anthropic.APIError):
            async with client.messages.stream(model=CLAUDE, max_tokens=50, messages=HI) as s:
                async for event in s:
                    seen.append(event.type)
    assert "message_stop" not in seen
    assert "content_block_delta" in seen


async def test_every_model_rate_limited_is_a_rate_limit_error_with_retry_after(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=429, retry_after="30", repeat=True))
    router.script(B, Reply(status=429, retry_after="30", repeat=True))
    async with serve(isolated_home, router, retries=0) as (client, _):
        with pytest.raises(anthropic.RateLimitError) as info:
            await client.messages.create(model=CLAUDE, max_tokens=50, messages=HI)
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert info.value.body["error"]["type"] == "rate_limit_error"


async def test_a_rejected_token_is_an_authentication_error_naming_onboard(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=401))
    async with serve(isolated_home, router) as (client, _):
        with pytest.raises(anthropic.AuthenticationError) as info:
            await client.messages.create(model=CLAUDE, max_tokens=50, messages=HI)
    assert "coderclaw onboard" in str(info.value)
    assert info.value.body["type"] == "error"


async def test_count_tokens_answers_without_calling_the_router(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _):
        short = await client.messages.count_tokens(model=CLAUDE, messages=HI)
        long = await client.messages.count_tokens(
            model=CLAUDE, messages=[{"role": "user", "content": "word " * 400}]
        )
    assert 0 < short.input_tokens < long.input_tokens
    assert router.chat_requests() == []


async def test_models_list_parses_with_ids_and_display_names(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router, aliases={"Fast": REF_B}) as (client, _):
        page = await client.models.list()
        models = [m async for m in page]
    ids = {m.id for m in models}
    assert {"coderclaw", REF_A, REF_B} <= ids
    assert all(m.type == "model" and m.display_name for m in models)
    # The translator's pinned naming (gateway/dialects/messages/models.py): the model part of a
    # ref, and ``alias → model`` for an alias entry.
    names = {m.id: m.display_name for m in models}
    assert names[REF_B] == "model-b"
    assert names["Fast"] == "Fast → model-b"


async def test_the_model_map_sends_claude_names_to_the_chain_or_a_chosen_model(
    isolated_home: Path, router: FakeRouter
) -> None:
    model_map = {"claude-haiku-*": REF_B, "*": "coderclaw"}
    async with serve(isolated_home, router, anthropic={"modelMap": model_map}) as (client, _):
        main = await client.messages.create(model=CLAUDE, max_tokens=50, messages=HI)
        small = await client.messages.create(
            model="claude-haiku-4-5-20251001", max_tokens=50, messages=HI
        )
    assert main.model == REF_A
    assert small.model == REF_B
    assert [r.model for r in router.chat_requests()] == [A, B]


async def test_the_gateway_token_is_accepted_as_x_api_key(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router, api_key=GW_TOKEN, auth={"token": GW_TOKEN}) as (
        client,
        root,
    ):
        message = await client.messages.create(model=CLAUDE, max_tokens=50, messages=HI)
        assert message.content[0].text == f"Hello from {A}"
        wrong = anthropic.AsyncAnthropic(base_url=root, api_key="wrong-token", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            await wrong.messages.create(model=CLAUDE, max_tokens=50, messages=HI)
        await wrong.close()


async def test_bad_bodies_and_a_head_probe(isolated_home: Path, router: FakeRouter) -> None:
    async with serve(isolated_home, router) as (client, root):
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(model=CLAUDE, max_tokens=50, messages="nope")  # type: ignore[arg-type]
        assert info.value.body["error"]["type"] == "invalid_request_error"
        async with aiohttp.ClientSession() as http:
            async with http.head(f"{root}/") as resp:
                assert resp.status < 400
            async with http.post(
                f"{root}/v1/messages?beta=true",
                data=b"{not json",
                headers={"content-type": "application/json", "anthropic-version": "2023-06-01"},
            ) as resp:
                body = await resp.json()
                assert resp.status == 400
                assert body["type"] == "error"
                assert body["error"]["type"] == "invalid_request_error"
    assert router.chat_requests() == []
