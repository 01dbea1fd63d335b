"""Self-tests of the fake Hugging Face router: each test pins one behaviour other tests rely on."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from tests.fake_router import (
    MSG_BAD_TOKEN,
    MSG_CREDITS,
    MSG_HUB_BAD_TOKEN,
    PERMISSION,
    USER_NAME,
    WWW_AUTHENTICATE,
    FakeRouter,
    Reply,
    ToolCall,
    default_models,
    make_model_entry,
)
from tests.gateway_harness import eventually
from tests.provider_page import PAGE_MODELS

TOKEN = "hf_test_token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "Qwen/Qwen3-8B"
REQUEST_ID = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24};[0-9a-f-]{36}$")


@pytest.fixture
async def sdk(router: FakeRouter) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=router.base_url, api_key=TOKEN, max_retries=0) as client:
        yield client


def chat_body(model: str = MODEL, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "say hello please"}],
        "stream": stream,
        **extra,
    }


async def post_chat(
    http: aiohttp.ClientSession,
    router: FakeRouter,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    return await http.post(
        f"{router.base_url}/chat/completions",
        json=body,
        headers=AUTH if headers is None else headers,
    )


async def read_events(resp: aiohttp.ClientResponse) -> tuple[list[str], Exception | None]:
    """Every ``data:`` payload of an SSE body, and the error that ended the read, if any."""
    events: list[str] = []
    try:
        async for line in resp.content:
            text = line.decode().rstrip("\n")
            if text.startswith("data: "):
                events.append(text[len("data: ") :])
            else:
                assert text == "", text
    except aiohttp.ClientPayloadError as exc:
        return events, exc
    return events, None


async def stream_events(
    http: aiohttp.ClientSession, router: FakeRouter, reply: Reply, **extra: Any
) -> tuple[aiohttp.ClientResponse, list[str], Exception | None]:
    router.script(MODEL, reply)
    async with await post_chat(http, router, chat_body(stream=True, **extra)) as resp:
        events, error = await read_events(resp)
    return resp, events, error


# ---------------------------------------------------------------------------------- /v1/models


async def test_models_list_shape(router: FakeRouter, http: aiohttp.ClientSession) -> None:
    """GET /v1/models needs no auth, ignores query params and returns the HF list shape."""
    async with http.get(f"{router.base_url}/models?provider=groq") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        body = await resp.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids[:10] == PAGE_MODELS
    assert {"zai-org/GLM-5.3-Flash", "org/model-a", "org/model-b"} <= set(ids)
    r1 = body["data"][0]
    assert r1["object"] == "model"
    assert r1["owned_by"] == "deepseek-ai"
    assert isinstance(r1["created"], int)
    assert r1["architecture"] == {"input_modalities": ["text"], "output_modalities": ["text"]}
    providers = {p["provider"]: p for p in r1["providers"]}
    assert set(providers) == {"novita", "together", "fireworks-ai"}
    novita = providers["novita"]
    assert novita["status"] == "live"
    assert novita["is_model_author"] is False
    assert set(novita["pricing"]) == {"input", "output"}
    for key in ("context_length", "supports_tools", "supports_structured_output"):
        assert key in novita
    assert novita["first_token_latency_ms"] > 0 and novita["throughput"] > 0
    assert "pricing" not in providers["fireworks-ai"]
    qwen = next(m for m in body["data"] if m["id"] == MODEL)
    featherless = next(p for p in qwen["providers"] if p["provider"] == "featherless-ai")
    assert featherless == {"provider": "featherless-ai", "status": "live", "is_model_author": False}
    flash = next(m for m in body["data"] if m["id"] == "zai-org/GLM-5.3-Flash")
    assert flash["providers"][0]["is_free"] is False
    glm = next(m for m in body["data"] if m["id"] == "zai-org/GLM-4.7")
    assert glm["providers"][0] == {
        **glm["providers"][0],
        "provider": "zai-org",
        "is_model_author": True,
    }
    assert body["data"] == default_models()
    assert len(router.models_calls) == 1
    assert "Authorization" not in router.models_calls[0].headers


async def test_models_list_via_sdk(router: FakeRouter, sdk: AsyncOpenAI) -> None:
    """The openai SDK parses the list and keeps the HF extras on each model."""
    page = await sdk.models.list()
    models = {m.id: m for m in page.data}
    assert set(PAGE_MODELS) <= set(models)
    assert models[MODEL].owned_by == "Qwen"
    extra = models[MODEL].model_extra
    assert extra is not None
    assert extra["providers"][0]["provider"] == "featherless-ai"


async def test_models_list_require_auth(http: aiohttp.ClientSession) -> None:
    """With require_auth, a missing or unknown token gets the 401 string error; a valid one 200."""
    async with FakeRouter(require_auth=True, tokens={"hf_good"}) as fake:
        async with http.get(f"{fake.base_url}/models") as resp:
            assert resp.status == 401
            assert await resp.json() == {"error": MSG_BAD_TOKEN}
            assert resp.headers["www-authenticate"] == WWW_AUTHENTICATE
        headers = {"Authorization": "Bearer hf_other"}
        async with http.get(f"{fake.base_url}/models", headers=headers) as resp:
            assert resp.status == 401
        headers = {"Authorization": "Bearer hf_good"}
        async with http.get(f"{fake.base_url}/models", headers=headers) as resp:
            assert resp.status == 200


async def test_models_reply_knobs(router: FakeRouter, http: aiohttp.ClientSession) -> None:
    """models_reply gives a status with a string error, a non-JSON 200, an override, a delay."""
    url = f"{router.base_url}/models"
    router.models_reply.status = 503
    async with http.get(url) as resp:
        assert resp.status == 503
        assert set(await resp.json()) == {"error"}
    router.models_reply.status = 200
    router.models_reply.invalid_json = True
    async with http.get(url) as resp:
        assert resp.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(await resp.text())
    router.models_reply.invalid_json = False
    router.models_reply.body_override = {"object": "list", "data": []}
    async with http.get(url) as resp:
        assert await resp.json() == {"object": "list", "data": []}
    router.models_reply.delay = 5.0
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=0.2)) as resp:
            await resp.read()
    assert time.monotonic() - started < 1.0
    assert len(router.models_calls) == 4


async def test_single_model_both_encodings(
    router: FakeRouter, http: aiohttp.ClientSession, sdk: AsyncOpenAI
) -> None:
    """/v1/models/org/name and /v1/models/org%2Fname both give the entry; unknown ids 404."""
    expected = next(m for m in default_models() if m["id"] == MODEL)
    for path in ("Qwen/Qwen3-8B", "Qwen%2FQwen3-8B"):
        async with http.get(f"{router.base_url}/models/{path}") as resp:
            assert resp.status == 200
            assert await resp.json() == expected
    model = await sdk.models.retrieve(MODEL)
    assert model.id == MODEL
    assert router.requests[-1].path in {"/v1/models/Qwen/Qwen3-8B", "/v1/models/Qwen%2FQwen3-8B"}
    async with http.get(f"{router.base_url}/models/nobody/nothing") as resp:
        assert resp.status == 404
        error = (await resp.json())["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert "nobody/nothing" in error["message"]


async def test_make_model_entry_custom_providers() -> None:
    """make_model_entry takes slugs or dicts; dicts keep their fields and get the required ones."""
    entry = make_model_entry("acme/m", ["groq", {"provider": "novita", "throughput": 9.5}])
    assert entry["owned_by"] == "acme"
    assert entry["providers"][0]["provider"] == "groq"
    assert entry["providers"][0]["supports_tools"] is True
    assert entry["providers"][1] == {
        "provider": "novita",
        "status": "live",
        "is_model_author": False,
        "throughput": 9.5,
    }


# ---------------------------------------------------------------------------------------- auth


async def test_chat_missing_auth_is_html_401(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """No Authorization header: 401 with an HTML body, not JSON; the request is still recorded."""
    async with await post_chat(http, router, chat_body(), headers={}) as resp:
        assert resp.status == 401
        assert resp.content_type == "text/html"
        assert "<title>401 Unauthorized</title>" in await resp.text()
        assert REQUEST_ID.match(resp.headers["x-request-id"])
    assert router.count(MODEL) == 1


async def test_chat_bad_token_is_string_401_before_model_check(
    router: FakeRouter, http: aiohttp.ClientSession, sdk: AsyncOpenAI
) -> None:
    """A non-hf_ token gets the string 401 + www-authenticate, even for an unknown model."""
    headers = {"Authorization": "Bearer sk-not-hf"}
    async with await post_chat(http, router, chat_body("no/such"), headers=headers) as resp:
        assert resp.status == 401
        assert await resp.json() == {"error": MSG_BAD_TOKEN}
        assert resp.headers["www-authenticate"] == WWW_AUTHENTICATE
    async with AsyncOpenAI(base_url=router.base_url, api_key="bogus", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            await bad.chat.completions.create(model=MODEL, messages=[])
    # The string error survives as the exception body; code/type stay unset.
    assert caught.value.body == MSG_BAD_TOKEN
    assert caught.value.code is None


async def test_chat_token_set_restricts_valid_tokens(http: aiohttp.ClientSession) -> None:
    """With an explicit token set, other hf_ tokens are rejected."""
    async with FakeRouter(tokens={"hf_good"}) as fake:
        bad = {"Authorization": "Bearer hf_other"}
        async with await post_chat(http, fake, chat_body(), headers=bad) as resp:
            assert resp.status == 401
        good = {"Authorization": "Bearer hf_good"}
        async with await post_chat(http, fake, chat_body(), headers=good) as resp:
            assert resp.status == 200


async def test_chat_no_inference_token_is_403(router: FakeRouter, sdk: AsyncOpenAI) -> None:
    """A token without inference.serverless.write gets the real 403 permission string."""
    router.no_inference_tokens.add(TOKEN)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await sdk.chat.completions.create(model=MODEL, messages=[])
    assert caught.value.status_code == 403
    assert caught.value.body == (
        "This authentication method does not have sufficient permissions to call "
        f"Inference Providers on behalf of user {USER_NAME}"
    )


# ------------------------------------------------------------------------------- non-streaming


async def test_non_stream_ok_body_and_headers(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """A 200 chat.completion echoes the model without suffix and sets the router headers."""
    body = chat_body(f"{MODEL}:fastest", temperature=0.2, tools=[])
    headers = {
        **AUTH,
        "X-Amzn-Trace-Id": "11111111-2222-3333-4444-555555555555",
        "X-HF-Bill-To": "acme",
    }
    async with await post_chat(http, router, body, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["x-inference-provider"] == "together"
        assert re.match(
            r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24};11111111-2222-3333-4444-555555555555$",
            resp.headers["x-request-id"],
        )
        assert "retry-after" not in resp.headers
        data = await resp.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == MODEL
    assert data["system_fingerprint"]
    assert isinstance(data["id"], str) and isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert choice["message"] == {
        "role": "assistant",
        "content": f"Hello from {MODEL}",
        "tool_calls": [],
    }
    usage = data["usage"]
    assert usage["prompt_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    recorded = router.chat_requests(f"{MODEL}:fastest")
    assert len(recorded) == 1
    assert recorded[0].json == body
    assert recorded[0].headers["x-hf-bill-to"] == "acme"
    assert recorded[0].token == TOKEN
    assert recorded[0].bare_model == MODEL
    assert router.chat_requests(MODEL) == []
    assert router.count(MODEL) == 1


async def test_non_stream_via_sdk(router: FakeRouter, sdk: AsyncOpenAI) -> None:
    """The SDK parses the completion and takes its request id from x-request-id."""
    router.script(MODEL, Reply(content="pong for {model}"))
    completion = await sdk.chat.completions.create(
        model=f"{MODEL}:cheapest", messages=[{"role": "user", "content": "ping"}]
    )
    assert completion.choices[0].message.content == f"pong for {MODEL}"
    assert completion.model == MODEL
    assert completion._request_id is not None
    assert completion._request_id.startswith("Root=1-")
    assert router.requests[-1].headers["x-stainless-retry-count"] == "0"


async def test_pinned_provider_names_the_provider(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """org/m:<provider> answers with that provider in x-inference-provider; policies do not."""
    router.script(MODEL, Reply(provider="novita"), Reply(provider="novita"))
    async with await post_chat(http, router, chat_body(f"{MODEL}:groq")) as resp:
        assert resp.headers["x-inference-provider"] == "groq"
    async with await post_chat(http, router, chat_body(f"{MODEL}:preferred")) as resp:
        assert resp.headers["x-inference-provider"] == "novita"


async def test_tool_calls_non_stream(router: FakeRouter, sdk: AsyncOpenAI) -> None:
    """tool_calls=True answers with one get_weather call and finish_reason tool_calls."""
    router.script(MODEL, Reply(tool_calls=True))
    completion = await sdk.chat.completions.create(model=MODEL, messages=[])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "unit": "celsius"}


async def test_unknown_model_is_400_model_not_supported(
    router: FakeRouter, sdk: AsyncOpenAI
) -> None:
    """An id that is neither listed nor scripted gets the router's 400 model_not_supported."""
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(model="nobody/nothing:groq", messages=[])
    assert caught.value.code == "model_not_supported"
    assert caught.value.param == "model"
    assert caught.value.type == "invalid_request_error"
    assert caught.value.body == {
        "message": "The requested model 'nobody/nothing:groq' is not supported by any provider "
        "you have enabled.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_supported",
    }
    router.script("fail/x", Reply(content="scripted"))
    completion = await sdk.chat.completions.create(model="fail/x", messages=[])
    assert completion.choices[0].message.content == "scripted"


# -------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("shape", "content_type", "check"),
    [
        ("object", "application/json", lambda t: json.loads(t)["error"]["type"] == "server_error"),
        ("string", "application/json", lambda t: isinstance(json.loads(t)["error"], str)),
        ("html", "text/html", lambda t: "<h1>503 Service Unavailable</h1>" in t),
        ("text", "text/plain", lambda t: t.startswith("Service temporarily unavailable")),
    ],
)
async def test_503_body_shapes(
    router: FakeRouter,
    http: aiohttp.ClientSession,
    shape: Any,
    content_type: str,
    check: Any,
) -> None:
    """A scripted 503 renders as an object, a string, an HTML page or plain text."""
    router.script(MODEL, Reply(status=503, error_shape=shape))
    async with await post_chat(http, router, chat_body()) as resp:
        assert resp.status == 503
        assert resp.content_type == content_type
        assert resp.headers["x-inference-provider"] == "together"
        assert REQUEST_ID.match(resp.headers["x-request-id"])
        assert check(await resp.text())


async def test_default_error_wordings(router: FakeRouter, http: aiohttp.ClientSession) -> None:
    """Scripted statuses default to the real HF shapes and wordings for that status."""
    router.script(
        MODEL,
        Reply(status=401),
        Reply(status=402),
        Reply(status=410, provider="cerebras"),
        Reply(status=400),
        Reply(status=400, error_code="context_length_exceeded"),
        Reply(status=500, error_message="boom", error_code=""),
    )
    async with await post_chat(http, router, chat_body()) as resp:
        assert resp.status == 401
        assert await resp.json() == {"error": MSG_BAD_TOKEN}
        assert resp.headers["www-authenticate"] == WWW_AUTHENTICATE
    async with await post_chat(http, router, chat_body()) as resp:
        assert resp.status == 402
        assert await resp.json() == {"error": MSG_CREDITS}
    async with await post_chat(http, router, chat_body()) as resp:
        assert resp.status == 410
        assert (await resp.json())["error"]["message"] == (
            "The requested model is deprecated and no longer supported by provider 'cerebras'."
        )
    async with await post_chat(http, router, chat_body()) as resp:
        error = (await resp.json())["error"]
        assert (error["code"], error["param"]) == ("model_not_supported", "model")
        assert error["message"] == (
            f"The requested model '{MODEL}' is not supported by any provider you have enabled."
        )
    async with await post_chat(http, router, chat_body()) as resp:
        error = (await resp.json())["error"]
        assert error["code"] == "context_length_exceeded"
        assert "maximum context length" in error["message"]
    async with await post_chat(http, router, chat_body()) as resp:
        assert await resp.json() == {
            "error": {"message": "boom", "type": "server_error", "param": None, "code": None}
        }


async def test_retry_after_header_on_error_and_success(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """retry_after sets Retry-After on a 429 and, like the real router, on a 200 too."""
    router.script(MODEL, Reply(status=429, retry_after="7"), Reply(retry_after="30"))
    async with await post_chat(http, router, chat_body()) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "7"
        assert (await resp.json())["error"]["message"].startswith("Rate limit")
    async with await post_chat(http, router, chat_body()) as resp:
        assert resp.status == 200
        assert resp.headers["Retry-After"] == "30"


# ----------------------------------------------------------------------------------- streaming


async def test_stream_ok_with_usage_on_last_chunk(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """A stream is SSE data events: role first, content pieces, finish chunk with usage, [DONE]."""
    resp, events, error = await stream_events(http, router, Reply(chunks=3, content="abcdef"))
    assert error is None
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert resp.headers["x-inference-provider"] == "together"
    assert REQUEST_ID.match(resp.headers["x-request-id"])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 4
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["ab", "cd", "ef", ""]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "role" not in chunks[1]["choices"][0]["delta"]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert [c["usage"] is None for c in chunks] == [True, True, True, False]
    assert chunks[-1]["usage"]["completion_tokens"] == 1


async def test_stream_usage_separate_chunk(router: FakeRouter, http: aiohttp.ClientSession) -> None:
    """usage="separate" adds a choices:[] usage chunk before [DONE] only with include_usage."""
    _, events, _ = await stream_events(
        http, router, Reply(usage="separate"), stream_options={"include_usage": True}
    )
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] > 0
    finish = json.loads(events[-3])
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["usage"] is None
    _, events, _ = await stream_events(http, router, Reply(usage="separate"))
    assert all(json.loads(e)["usage"] is None for e in events[:-1])


async def test_stream_via_sdk(router: FakeRouter, sdk: AsyncOpenAI) -> None:
    """The SDK reads the whole stream and the separate usage chunk."""
    router.script(MODEL, Reply(usage="separate", content="one two three"))
    stream = await sdk.chat.completions.create(
        model=MODEL, messages=[], stream=True, stream_options={"include_usage": True}
    )
    text = ""
    usage = None
    async with stream:
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
    assert text == "one two three"
    assert usage is not None
    assert usage.completion_tokens == 3


async def test_drop_after_aborts_mid_stream(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """drop_after=k sends k chunks then resets the connection: a payload error, no [DONE]."""
    _, events, error = await stream_events(http, router, Reply(chunks=3, drop_after=1))
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert len(events) == 1
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Hello fr"
    await asyncio.sleep(0.05)
    assert router.disconnects == []


async def test_error_event_after(router: FakeRouter, sdk: AsyncOpenAI) -> None:
    """error_event_after=k sends k chunks, a data: {"error": {...}} event, then ends; no [DONE]."""
    router.script(MODEL, Reply(error_event_after=1, error_message="upstream exploded"))
    stream = await sdk.chat.completions.create(model=MODEL, messages=[], stream=True)
    received = []
    async with stream:
        with pytest.raises(openai.APIError, match="upstream exploded"):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content)
    assert received == ["Hello fr"]


async def test_error_event_raw_framing(router: FakeRouter, http: aiohttp.ClientSession) -> None:
    """The error event is the last event and carries a server_error object."""
    _, events, error = await stream_events(http, router, Reply(error_event_after=2))
    assert error is None
    assert len(events) == 3
    assert json.loads(events[-1]) == {
        "error": {"message": "The upstream provider failed mid-stream", "type": "server_error"}
    }


async def test_non_json_event_after(router: FakeRouter, http: aiohttp.ClientSession) -> None:
    """non_json_event_after=k inserts one non-JSON data event after k chunks and carries on."""
    _, events, _ = await stream_events(http, router, Reply(chunks=2, non_json_event_after=1))
    assert events[1] == "this is not json"
    assert events[-1] == "[DONE]"
    assert len(events) == 5


async def test_done_false_ends_without_done(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """done=False ends the stream cleanly after the finish chunk but without [DONE]."""
    _, events, error = await stream_events(http, router, Reply(done=False))
    assert error is None
    assert "[DONE]" not in events
    assert json.loads(events[-1])["choices"][0]["finish_reason"] == "stop"


async def test_finish_reason_none_truncates(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """finish_reason=None leaves every chunk, the last included, with finish_reason null."""
    _, events, _ = await stream_events(http, router, Reply(finish_reason=None))
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4


async def test_stream_reasoning_and_tool_calls(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """reasoning puts a reasoning delta first; tool_calls streams a call and ends in tool_calls."""
    _, events, _ = await stream_events(http, router, Reply(reasoning="reasoning_content"))
    first = json.loads(events[0])["choices"][0]["delta"]
    assert first["role"] == "assistant"
    assert first["reasoning_content"].startswith("Thinking")
    assert "role" not in json.loads(events[1])["choices"][0]["delta"]
    _, events, _ = await stream_events(http, router, Reply(tool_calls=True, chunks=2))
    deltas = [json.loads(e)["choices"][0] for e in events[:-1]]
    head = deltas[0]["delta"]["tool_calls"][0]
    assert head["function"]["name"] == "get_weather"
    assert head["id"].startswith("call_")
    arguments = "".join(d["delta"]["tool_calls"][0]["function"]["arguments"] for d in deltas[:2])
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    assert deltas[-1]["finish_reason"] == "tool_calls"


async def test_stall_then_client_disconnect_is_recorded(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """stall_after=k hangs after k chunks; the client closing is recorded within 1 s."""
    router.script(MODEL, Reply(stall_after=1))
    resp = await post_chat(http, router, chat_body(f"{MODEL}:groq", stream=True))
    line = await asyncio.wait_for(resp.content.readline(), 1.0)
    assert (
        json.loads(line.decode()[len("data: ") :])["choices"][0]["delta"]["content"] == "Hello fr"
    )
    closed_at = time.monotonic()
    resp.close()
    model, at = await router.wait_disconnect(1.0)
    assert model == f"{MODEL}:groq"
    assert 0 <= at - closed_at < 1.0
    with pytest.raises(TimeoutError):
        await router.wait_disconnect(0.1)


async def test_delay_first_byte(router: FakeRouter, http: aiohttp.ClientSession) -> None:
    """delay_first_byte holds the status line; the request is recorded before the delay."""
    router.script(MODEL, Reply(delay_first_byte=0.3), Reply(delay_first_byte=30))
    started = time.monotonic()
    async with await post_chat(http, router, chat_body()) as resp:
        assert resp.status == 200
    assert time.monotonic() - started >= 0.3
    task = asyncio.create_task(post_chat(http, router, chat_body(stream=True)))
    await eventually(lambda: router.count(MODEL) == 2, 1.0)
    assert router.count(MODEL) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    model, _ = await router.wait_disconnect(1.0)
    assert model == MODEL


async def test_queue_order_repeat_and_exact_suffix(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Replies pop in order then fall back to the default; repeat sticks; exact ids win."""

    async def status(model: str) -> int:
        async with await post_chat(http, router, chat_body(model)) as resp:
            await resp.read()
            return resp.status

    router.script(MODEL, Reply(status=503), Reply(status=429))
    assert [await status(MODEL) for _ in range(3)] == [503, 429, 200]
    router.script(MODEL, Reply(status=502, repeat=True))
    assert [await status(MODEL) for _ in range(3)] == [502, 502, 502]
    router.script(f"{MODEL}:novita", Reply(status=504))
    assert await status(f"{MODEL}:novita") == 504
    assert await status(f"{MODEL}:novita") == 502
    router.set_default(Reply(status=500))
    assert await status("org/model-a") == 500
    assert router.count(MODEL) == 8


async def test_close_is_prompt_with_a_stalled_client(http: aiohttp.ClientSession) -> None:
    """Closing the fake with a client stalled mid-stream takes well under a second."""
    fake = FakeRouter()
    await fake.start()
    fake.script(MODEL, Reply(stall_after=0))
    resp = await post_chat(http, fake, chat_body(stream=True))
    started = time.monotonic()
    await fake.close()
    assert time.monotonic() - started < 1.0
    assert fake.disconnects == []
    resp.close()


async def test_unknown_route_is_404(router: FakeRouter, http: aiohttp.ClientSession) -> None:
    """Routes the router does not have answer 404 and are still recorded."""
    async with http.post(f"{router.base_url}/completions", json={"prompt": "x"}) as resp:
        assert resp.status == 404
    assert router.requests[-1].path == "/v1/completions"
    assert router.requests[-1].json == {"prompt": "x"}


# ------------------------------------------------------------------------------------- whoami


async def test_whoami_valid_token(router: FakeRouter, http: aiohttp.ClientSession) -> None:
    """A valid token gets the whoami-v2 user with a fine-grained inference permission."""
    async with http.get(f"{router.url}/api/whoami-v2", headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["type"] == "user"
    assert body["name"] == USER_NAME
    token = body["auth"]["accessToken"]
    assert body["auth"]["type"] == "access_token"
    assert token["role"] == "fineGrained"
    assert PERMISSION in token["fineGrained"]["global"]


async def test_whoami_invalid_or_missing_token(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """A missing or non-hf_ token gets 401 with the Hub's credentials string."""
    for headers in ({}, {"Authorization": "Bearer nope"}):
        async with http.get(f"{router.url}/api/whoami-v2", headers=headers) as resp:
            assert resp.status == 401
            assert await resp.json() == {"error": MSG_HUB_BAD_TOKEN}
            assert "x-request-id" not in resp.headers


async def test_whoami_no_inference_token(http: aiohttp.ClientSession) -> None:
    """A no_inference token is valid for whoami but its permissions lack inference."""
    async with FakeRouter(tokens={"hf_a"}, no_inference_tokens={"hf_b"}) as fake:
        headers = {"Authorization": "Bearer hf_b"}
        async with http.get(f"{fake.url}/api/whoami-v2", headers=headers) as resp:
            assert resp.status == 200
            token = (await resp.json())["auth"]["accessToken"]
    assert token["role"] == "fineGrained"
    assert PERMISSION not in token["fineGrained"]["global"]


# ------------------------------------------------------------------------ scripted tool calls

TWO_CALLS = [
    ToolCall("exec_command", {"cmd": "echo hi", "workdir": "/tmp/x"}, chunks=3, id="call_one"),
    ToolCall("wait_agent", '{"targets": []}'),
]


async def test_scripted_tool_calls_non_stream(router: FakeRouter, sdk: AsyncOpenAI) -> None:
    """A list of ToolCall answers those calls in order, with text_before as the content."""
    router.script(MODEL, Reply(tool_calls=TWO_CALLS, text_before="Running it."))
    completion = await sdk.chat.completions.create(model=MODEL, messages=[])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Running it."
    calls = choice.message.tool_calls or []
    assert (calls[0].id, calls[0].function.name) == ("call_one", "exec_command")
    assert [c.function.name for c in calls] == ["exec_command", "wait_agent"]
    assert json.loads(calls[0].function.arguments) == {"cmd": "echo hi", "workdir": "/tmp/x"}
    assert calls[1].function.arguments == '{"targets": []}'
    assert calls[1].id.startswith("call_") and calls[1].id != "call_one"


async def test_scripted_tool_calls_stream_like_openai_style_providers(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Streamed: text before, each call's arguments over its ``chunks`` pieces (the head piece
    with id, type and name, the rest by index only), text after, then finish tool_calls."""
    reply = Reply(tool_calls=TWO_CALLS, text_before="Let me run that.", text_after="Done.")
    _, events, error = await stream_events(http, router, reply)
    assert error is None
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0]["content"] == "Let me run that."
    assert deltas[0]["role"] == "assistant"
    pieces = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert [p["index"] for p in pieces] == [0, 0, 0, 1]
    assert [p.get("id") for p in pieces] == ["call_one", None, None, pieces[3]["id"]]
    assert [p["function"].get("name") for p in pieces] == [
        "exec_command",
        None,
        None,
        "wait_agent",
    ]
    first = "".join(p["function"]["arguments"] for p in pieces if p["index"] == 0)
    assert json.loads(first) == {"cmd": "echo hi", "workdir": "/tmp/x"}
    assert deltas[-2]["content"] == "Done."
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "tool_calls"


async def test_scripted_tool_call_faults_count_argument_pieces(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Stream counters count body chunks, argument pieces included: an error event after two
    pieces of a three-piece call ends the stream there."""
    reply = Reply(tool_calls=[ToolCall("f", '{"a": 1}', chunks=3)], error_event_after=2)
    _, events, _ = await stream_events(http, router, reply)
    assert len(events) == 3
    assert "error" in json.loads(events[-1])


async def test_multi_turn_tool_use_is_two_queued_replies(
    router: FakeRouter, sdk: AsyncOpenAI
) -> None:
    """Queued replies answer requests in order: a tool call first, then the final text; the
    second request, with the tool result, is recorded for the test to check."""
    router.script(
        MODEL,
        Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="call_w")]),
        Reply(content="It is sunny in Paris."),
    )
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = await sdk.chat.completions.create(model=MODEL, messages=messages)
    call = (first.choices[0].message.tool_calls or [])[0]
    assert (call.id, call.function.name) == ("call_w", "get_weather")
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = await sdk.chat.completions.create(model=MODEL, messages=messages)
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert second.choices[0].finish_reason == "stop"
    sent = router.chat_requests()[1].json["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_w", "content": "sunny, 21 C"}
