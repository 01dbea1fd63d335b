"""The OpenAI Responses API end to end (SPEC §10.1): the ``openai`` SDK's ``client.responses``
and the openai-agents SDK → gateway → fake router, which only ever receives chat completions.

Every test runs the real gateway app on 127.0.0.1 port 0 against the fake router, configured
by a real config file; what the router received is read back from the fake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import agents
import aiohttp
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from structlog.testing import capture_logs

from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import run_gateway

A, B = "org/model-a", "org/model-b"
REF_A, REF_B = (f"huggingface/{m}" for m in (A, B))
FAST = {"connectSeconds": 1, "firstTokenSeconds": 0.5, "idleSeconds": 0.5, "totalSeconds": 10}
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}


@asynccontextmanager
async def serve(
    home: Path, router: FakeRouter, **config: Any
) -> AsyncIterator[tuple[AsyncOpenAI, str]]:
    config.setdefault("timeouts", FAST)
    async with (
        run_gateway(home, router, **config) as (base, _),
        AsyncOpenAI(base_url=base, api_key="sk-unused", max_retries=0, timeout=30) as client,
    ):
        yield client, base


async def events_of(stream: Any) -> list[Any]:
    return [event async for event in stream]


def types_of(events: list[Any]) -> list[str]:
    return [e.type for e in events]


async def test_a_plain_response_names_the_serving_ref_and_its_text(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _):
        raw = await client.responses.with_raw_response.create(model="coderclaw", input="Hi")
        response = raw.parse()
    assert response.status == "completed"
    assert response.output_text == f"Hello from {A}"
    assert response.model == REF_A
    assert raw.headers["x-coderclaw-model"] == REF_A
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_A}=200"
    assert response.usage is not None and response.usage.output_tokens == 3
    sent = router.chat_requests()[-1].json
    assert sent["model"] == A
    assert sent["messages"] == [{"role": "user", "content": "Hi"}]


async def test_instructions_and_developer_items_become_system_messages(
    isolated_home: Path, router: FakeRouter
) -> None:
    """``instructions`` and a ``developer`` item reach the router as system text, in order."""
    async with serve(isolated_home, router) as (client, _):
        await client.responses.create(
            model="coderclaw",
            instructions="Be brief.",
            input=[
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            ],
        )
    # Consecutive system messages are merged into one, instructions first: many chat
    # templates accept a single system message only (the translator's documented decision).
    messages = router.chat_requests()[-1].json["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    system = messages[0]["content"]
    assert system.index("Be brief.") < system.index("Answer in French.")


async def test_a_stream_has_the_openai_event_sequence_and_ends_completed(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(chunks=4))
    async with serve(isolated_home, router) as (client, _):
        events = await events_of(
            await client.responses.create(model="coderclaw", input="Hi", stream=True)
        )
    kinds = types_of(events)
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.failed" not in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == f"Hello from {A}"
    assert events[-1].response.output_text == text
    assert events[-1].response.model == REF_A


async def test_responses_stream_helper_sync_and_async_give_the_final_response(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, base):
        async with client.responses.stream(model="coderclaw", input="Hi") as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_response()
        assert final.output_text == f"Hello from {A}"

        def sync_stream() -> str:
            with (
                OpenAI(base_url=base, api_key="sk-unused", max_retries=0) as sync_client,
                sync_client.responses.stream(model="coderclaw", input="Hi") as stream,
            ):
                for _ in stream:
                    pass
                return stream.get_final_response().output_text

        assert await asyncio.to_thread(sync_stream) == f"Hello from {A}"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_function_call_and_its_output_in_the_next_turn(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    """The model calls get_weather; the client sends the output back with the call in the
    input; the router receives an assistant tool call and a tool message, then answers."""
    router.script(A, Reply(tool_calls=True), Reply(content="Sunny in Paris"))
    async with serve(isolated_home, router) as (client, _):
        if stream:
            async with client.responses.stream(
                model="coderclaw", input="Weather in Paris?", tools=[WEATHER_TOOL]
            ) as s:
                async for _ in s:
                    pass
                first = await s.get_final_response()
        else:
            first = await client.responses.create(
                model="coderclaw", input="Weather in Paris?", tools=[WEATHER_TOOL]
            )
        calls = [item for item in first.output if item.type == "function_call"]
        assert len(calls) == 1
        call = calls[0]
        assert call.name == "get_weather"
        assert json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}
        second = await client.responses.create(
            model="coderclaw",
            tools=[WEATHER_TOOL],
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sun"},
            ],
        )
    assert second.output_text == "Sunny in Paris"
    first_sent, second_sent = (r.json for r in router.chat_requests())
    assert first_sent["tools"][0]["function"]["name"] == "get_weather"
    roles = [m["role"] for m in second_sent["messages"]]
    assert roles == ["user", "assistant", "tool"]
    assistant, tool = second_sent["messages"][1:]
    assert assistant["tool_calls"][0]["id"] == call.call_id
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    assert tool == {"role": "tool", "tool_call_id": call.call_id, "content": "18 C, sun"}


async def test_text_format_json_schema_becomes_response_format(
    isolated_home: Path, router: FakeRouter
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    router.script(A, Reply(content='{"city": "Paris"}'))
    async with serve(isolated_home, router) as (client, _):
        response = await client.responses.create(
            model="coderclaw",
            input="Which city?",
            text={"format": {"type": "json_schema", "name": "city", "schema": schema}},
        )
    assert json.loads(response.output_text) == {"city": "Paris"}
    sent = router.chat_requests()[-1].json
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert sent["response_format"]["json_schema"]["name"] == "city"


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_from_a_reasoning_model_is_a_reasoning_item(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script(A, Reply(reasoning="reasoning_content"))
    async with serve(isolated_home, router) as (client, _):
        if stream:
            events = await events_of(
                await client.responses.create(
                    model="coderclaw", input="Think", stream=True, reasoning={"effort": "high"}
                )
            )
            assert any(e.type == "response.reasoning_text.delta" for e in events)
            response = events[-1].response
        else:
            response = await client.responses.create(
                model="coderclaw", input="Think", reasoning={"effort": "high"}
            )
    kinds = [item.type for item in response.output]
    assert kinds[0] == "reasoning"
    assert "message" in kinds
    assert response.output_text == f"Hello from {A}"
    assert router.chat_requests()[-1].json["reasoning_effort"] == "high"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_length_finish_is_an_incomplete_response(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script(A, Reply(finish_reason="length"))
    async with serve(isolated_home, router) as (client, _):
        if stream:
            events = await events_of(
                await client.responses.create(
                    model="coderclaw", input="Hi", max_output_tokens=16, stream=True
                )
            )
            assert events[-1].type == "response.incomplete"
            response = events[-1].response
        else:
            response = await client.responses.create(
                model="coderclaw", input="Hi", max_output_tokens=16
            )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert router.chat_requests()[-1].json["max_tokens"] == 16


@pytest.mark.parametrize("stream", [False, True])
async def test_failover_before_the_first_event_is_invisible(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script(A, Reply(status=503, repeat=True))
    async with serve(isolated_home, router, retries=0) as (client, _):
        raw = await client.responses.with_raw_response.create(
            model="coderclaw", input="Hi", stream=stream
        )
        if stream:
            events = await events_of(raw.parse())
            assert types_of(events)[-1] == "response.completed"
            response = events[-1].response
        else:
            response = raw.parse()
    assert response.output_text == f"Hello from {B}"
    assert response.model == REF_B
    assert raw.headers["x-coderclaw-attempts"] == f"{REF_A}=503,{REF_B}=200"


async def test_a_stream_cut_after_commit_ends_with_response_failed(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(chunks=4, drop_after=2))
    async with serve(isolated_home, router, rescue="off") as (client, _):
        events = await events_of(
            await client.responses.create(model="coderclaw", input="Hi", stream=True)
        )
    kinds = types_of(events)
    assert kinds[-1] == "response.failed"
    assert "response.completed" not in kinds
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None


async def test_previous_response_id_continues_a_stored_conversation(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(content="I am Ada."), Reply(content="You asked my name."))
    async with serve(isolated_home, router) as (client, _):
        first = await client.responses.create(model="coderclaw", input="Who are you?")
        second = await client.responses.create(
            model="coderclaw", input="What did I ask?", previous_response_id=first.id
        )
        assert second.previous_response_id == first.id
    sent = router.chat_requests()[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "Who are you?"),
        ("assistant", "I am Ada."),
        ("user", "What did I ask?"),
    ]


async def test_a_stored_response_can_be_retrieved_listed_and_deleted(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _):
        created = await client.responses.create(model="coderclaw", input="Hi")
        again = await client.responses.retrieve(created.id)
        assert again.id == created.id
        assert again.output_text == created.output_text
        items = await client.responses.input_items.list(created.id)
        assert [item.type for item in items.data] == ["message"]
        await client.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(
                model="coderclaw", input="Hi", previous_response_id=created.id
            )
    assert len(router.chat_requests()) == 1


async def test_store_false_keeps_nothing(isolated_home: Path, router: FakeRouter) -> None:
    async with serve(isolated_home, router) as (client, _):
        created = await client.responses.create(model="coderclaw", input="Hi", store=False)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(created.id)


async def test_an_offered_hosted_tool_is_dropped_and_a_forced_one_is_refused(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _):
        raw = await client.responses.with_raw_response.create(
            model="coderclaw", input="Hi", tools=[{"type": "web_search"}, WEATHER_TOOL]
        )
        assert raw.headers["x-coderclaw-dropped-tools"] == "web_search"
        with pytest.raises(openai.BadRequestError) as info:
            await client.responses.create(
                model="coderclaw",
                input="Hi",
                tools=[{"type": "web_search"}],
                tool_choice={"type": "web_search"},
            )
    assert "web_search" in str(info.value)
    sent = router.chat_requests()[-1].json
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]


async def test_bad_bodies_get_a_400_and_unknown_models_a_404(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (client, _):
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="coderclaw", input=42)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="no such model!", input="Hi")
    assert router.chat_requests() == []


async def test_the_openai_agents_sdk_runs_a_tool_agent_with_its_default_model_provider(
    isolated_home: Path, router: FakeRouter
) -> None:
    """openai-agents' default provider speaks the Responses API: the agent calls its function
    tool, gets the result, and answers."""
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str, unit: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"18 degrees {unit} and sunny in {city}"

    router.script(A, Reply(tool_calls=True), Reply(content="It is sunny in Paris."))
    async with serve(isolated_home, router) as (client, _):
        agents.set_tracing_disabled(True)
        agents.set_default_openai_client(client, use_for_tracing=False)
        agent = agents.Agent(name="weather", model="coderclaw", tools=[get_weather])
        result = await agents.Runner.run(agent, "What is the weather in Paris?")
    assert result.final_output == "It is sunny in Paris."
    assert seen == ["Paris"]
    second = router.chat_requests()[-1].json["messages"]
    assert second[-1]["role"] == "tool"
    assert "18 degrees celsius" in second[-1]["content"]


async def test_the_log_line_and_metrics_carry_the_dialect_and_dropped_tools_are_logged(
    isolated_home: Path, router: FakeRouter
) -> None:
    """The engine's request log line says ``dialect="responses"`` (``chat`` for a chat
    completion), ``/metrics`` counts requests per dialect, and an offered hosted tool gets one
    ``responses_tools_dropped`` line naming it."""
    with capture_logs() as logs:
        async with serve(isolated_home, router) as (client, base):
            await client.responses.create(
                model="coderclaw", input="Hi", tools=[{"type": "web_search"}, WEATHER_TOOL]
            )
            await events_of(
                await client.responses.create(model="coderclaw", input="Hi", stream=True)
            )
            await client.chat.completions.create(
                model="coderclaw", messages=[{"role": "user", "content": "Hi"}]
            )
            async with aiohttp.ClientSession() as http, http.get(f"{base[:-3]}/metrics") as got:
                metrics = await got.text()
    lines = [e for e in logs if e["event"] == "chat_completion"]
    assert sorted((e["dialect"], e["stream"]) for e in lines) == [
        ("chat", False),
        ("responses", False),
        ("responses", True),
    ]
    dropped = [e for e in logs if e["event"] == "responses_tools_dropped"]
    assert [e["tools"] for e in dropped] == [["web_search"]]
    assert 'coderclaw_dialect_requests_total{dialect="responses",outcome="ok"} 2.0' in metrics
    assert 'coderclaw_dialect_requests_total{dialect="chat",outcome="ok"} 1.0' in metrics


async def test_input_items_page_with_after_limit_and_order_and_delete_answers_openais_shape(
    isolated_home: Path, router: FakeRouter
) -> None:
    """``input_items`` lists this request's own items (newest first by default) in pages of
    ``limit`` continued by ``after``; a bad ``limit``/``order``/``after`` is a 400 naming it;
    ``DELETE`` answers ``{id, object: "response", deleted: true}``, then 404."""
    said = [{"role": "user", "content": f"message {n}"} for n in range(3)]
    async with serve(isolated_home, router) as (client, base):
        created = await client.responses.create(model="coderclaw", input=said)  # type: ignore[arg-type]
        texts = lambda page: [item.content[0].text for item in page.data]  # noqa: E731
        newest = await client.responses.input_items.list(created.id, limit=2)
        assert texts(newest) == ["message 2", "message 1"]
        assert newest.has_more is True
        rest = await client.responses.input_items.list(created.id, limit=2, after=newest.last_id)
        assert (texts(rest), rest.has_more) == (["message 0"], False)
        oldest = await client.responses.input_items.list(created.id, order="asc")
        assert texts(oldest) == ["message 0", "message 1", "message 2"]
        for query, param in (
            ({"limit": 0}, "limit"),
            ({"order": "sideways"}, "order"),
            ({"after": "msg_unknown"}, "after"),
        ):
            with pytest.raises(openai.BadRequestError) as bad:
                await client.responses.input_items.list(created.id, **query)  # type: ignore[arg-type]
            assert bad.value.param == param
        async with aiohttp.ClientSession() as http:
            async with http.delete(f"{base}/responses/{created.id}") as deleted:
                assert deleted.status == 200
                assert await deleted.json() == {
                    "id": created.id,
                    "object": "response",
                    "deleted": True,
                }
            async with http.delete(f"{base}/responses/{created.id}") as again:
                assert again.status == 404
                assert (await again.json())["error"]["type"] == "invalid_request_error"
        with pytest.raises(openai.NotFoundError):
            await client.responses.input_items.list(created.id)


async def test_a_streamed_answer_also_names_the_dropped_hosted_tools(
    isolated_home: Path, router: FakeRouter
) -> None:
    """``x-coderclaw-dropped-tools`` is on a stream's headers too, with the engine's own."""
    async with serve(isolated_home, router) as (client, _):
        raw = await client.responses.with_raw_response.create(
            model="coderclaw",
            input="Hi",
            stream=True,
            tools=[{"type": "web_search"}, {"type": "code_interpreter", "container": "auto"}],
        )
        await events_of(raw.parse())
    assert raw.headers["x-coderclaw-dropped-tools"] == "web_search,code_interpreter"
    assert raw.headers["x-coderclaw-model"] == REF_A
    assert "tools" not in router.chat_requests()[-1].json


async def test_without_a_hugging_face_token_a_response_is_the_same_503_as_chat(
    isolated_home: Path, router: FakeRouter
) -> None:
    """No HF token: 503 ``no_upstream_token`` that says to run onboarding; nothing is sent."""
    async with (
        run_gateway(isolated_home, router, token=None, timeouts=FAST) as (base, _),
        AsyncOpenAI(base_url=base, api_key="sk-unused", max_retries=0) as client,
    ):
        with pytest.raises(openai.InternalServerError) as info:
            await client.responses.create(model="coderclaw", input="Hi")
    assert info.value.status_code == 503
    assert info.value.code == "no_upstream_token"
    assert "coderclaw onboard" in info.value.message
    assert router.chat_requests() == []


async def test_a_streamed_response_is_stored_before_its_last_event_and_can_be_continued(
    isolated_home: Path, router: FakeRouter
) -> None:
    """A stream's response is in the store by the time the client has read
    ``response.completed``: the next turn sent at once with ``previous_response_id`` finds it,
    its function call included, and the router receives the whole conversation."""
    router.script(A, Reply(tool_calls=True), Reply(content="Sunny."))
    async with serve(isolated_home, router) as (client, _):
        async with client.responses.stream(
            model="coderclaw", input="Weather in Paris?", tools=[WEATHER_TOOL]
        ) as stream:
            first = await stream.get_final_response()
        (call,) = [item for item in first.output if item.type == "function_call"]
        second = await client.responses.create(
            model="coderclaw",
            previous_response_id=first.id,
            tools=[WEATHER_TOOL],
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}],
        )
        assert (await client.responses.retrieve(first.id)).status == "completed"
    assert second.output_text == "Sunny."
    sent = router.chat_requests()[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "18 C"}
