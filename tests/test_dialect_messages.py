"""The Anthropic Messages dialect: request translation, rendering, errors, count_tokens, models.

What the dialect produces is parsed with the ``anthropic`` SDK's own types and run through the
SDK's own client (``messages.create`` / ``messages.stream``, strict response validation) over
an in-process transport that answers with the dialect's bytes, so the shapes are the SDK's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import ErrorResponse, Message, ModelInfo, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.dialects.messages import (
    DEFAULT_MODEL_MAP,
    ChatRequest,
    DialectError,
    MessagesStream,
    chat_request,
    error_for_failure,
    error_response,
    estimate_tokens,
    map_model,
    message_from_chat,
    models_page,
    split_think,
)

DATA = Path(__file__).parent / "data"
KNOWN = {"coder", "fast", "huggingface/Qwen/Qwen3-Coder-480B-A35B-Instruct"}
EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def is_known(name: str) -> bool:
    return name in KNOWN


def translate(body: dict[str, Any], model_map: dict[str, str] | None = None) -> ChatRequest:
    return chat_request(body, DEFAULT_MODEL_MAP if model_map is None else model_map, is_known)


def base(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


# -- model mapping --------------------------------------------------------------------------

CLAUDE_CODE_MAP = {
    "claude-haiku-*": "fast",
    "claude-*-haiku-*": "fast",
    "claude-opus-*": "huggingface/Qwen/Qwen3-Coder-480B-A35B-Instruct",
    "*": "coderclaw",
}


@pytest.mark.parametrize(
    ("name", "model_map", "expected"),
    [
        # the names Claude Code sends by default (main model and small/fast model)
        ("claude-sonnet-4-5-20250929", DEFAULT_MODEL_MAP, "coderclaw"),
        ("claude-haiku-4-5-20251001", DEFAULT_MODEL_MAP, "coderclaw"),
        ("claude-sonnet-4-6", DEFAULT_MODEL_MAP, "coderclaw"),
        ("claude-opus-4-1", DEFAULT_MODEL_MAP, "coderclaw"),
        ("claude-haiku-4-5-20251001", CLAUDE_CODE_MAP, "fast"),
        ("claude-3-5-haiku-20241022", CLAUDE_CODE_MAP, "fast"),
        ("CLAUDE-HAIKU-4-5", CLAUDE_CODE_MAP, "fast"),  # globs match case-insensitively
        ("claude-opus-4-6", CLAUDE_CODE_MAP, "huggingface/Qwen/Qwen3-Coder-480B-A35B-Instruct"),
        ("claude-sonnet-4-5-20250929", CLAUDE_CODE_MAP, "coderclaw"),  # first match wins: *
        # names the gateway knows are used as they are, whatever the globs say
        ("coder", DEFAULT_MODEL_MAP, "coder"),
        (
            "huggingface/Qwen/Qwen3-Coder-480B-A35B-Instruct",
            DEFAULT_MODEL_MAP,
            "huggingface/Qwen/Qwen3-Coder-480B-A35B-Instruct",
        ),
        ("coderclaw", {"*": "fast"}, "coderclaw"),
        ("default", {"*": "fast"}, "default"),
        # no glob matches: the name goes on unchanged (a 404 later)
        ("claude-sonnet-4-5", {"claude-haiku-*": "fast"}, "claude-sonnet-4-5"),
        ("gpt-4o", {}, "gpt-4o"),
    ],
)
def test_map_model(name: str, model_map: dict[str, str], expected: str) -> None:
    """Known names pass; others take the first matching glob's target; no match: unchanged."""
    assert map_model(name, model_map, is_known) == expected


def test_map_model_globs_apply_in_order() -> None:
    """The first glob that matches wins, even when a later one matches more precisely."""
    ordered = {"claude-*": "coder", "claude-haiku-*": "fast"}
    assert map_model("claude-haiku-4-5-20251001", ordered, is_known) == "coder"


# -- request translation --------------------------------------------------------------------


def test_minimal_request() -> None:
    """model + max_tokens + one user string: a chat body without model, mapped name kept."""
    req = translate(base(messages=[user("hi")]))
    assert req.body == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    assert (req.model, req.requested_model, req.stream) == ("coderclaw", "claude-sonnet-4-5", False)
    assert (req.thinking, req.reasoning_effort, req.stop_sequences, req.dropped_tools) == (
        False,
        None,
        (),
        (),
    )


def test_stream_asks_for_usage() -> None:
    """A streamed request streams upstream with usage included (for message_delta.usage)."""
    req = translate(base(messages=[user("hi")], stream=True))
    assert req.stream
    assert req.body["stream"] is True
    assert req.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"system": "be brief"}, [{"role": "system", "content": "be brief"}]),
        (
            {
                "system": [
                    {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "b"},
                ]
            },
            [{"role": "system", "content": "a\n\nb"}],
        ),
        ({"system": []}, []),
        ({"system": ""}, []),
    ],
)
def test_system_prompt(extra: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    """`system` (string or text blocks, cache_control ignored) is one system message first."""
    req = translate(base(messages=[user("hi")], **extra))
    assert req.body["messages"] == [*expected, {"role": "user", "content": "hi"}]


def test_system_messages_inside_messages_join_the_leading_system_prompt() -> None:
    """system-role messages (Claude Code sends them) join the one leading system message in
    order: open-model chat templates refuse a system message that is not first."""
    req = translate(
        base(
            system="top",
            messages=[
                user("q1"),
                {"role": "system", "content": "mid"},
                assistant("a1"),
                {"role": "system", "content": [{"type": "text", "text": "late"}]},
                user("q2"),
            ],
        )
    )
    assert req.body["messages"] == [
        {"role": "system", "content": "top\n\nmid\n\nlate"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]


def test_user_blocks_text_and_images() -> None:
    """Text-only blocks become one string; with an image, parts: base64 → data: URL, url kept."""
    req = translate(
        base(
            messages=[
                user([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
                user(
                    [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": "iVBORw0KGgo=",
                            },
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/c.jpg"},
                        },
                    ]
                ),
            ]
        )
    )
    assert req.body["messages"] == [
        {"role": "user", "content": "a\n\nb"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/c.jpg"}},
            ],
        },
    ]


def test_tool_round_trip() -> None:
    """tool_use → assistant tool_calls (JSON arguments); each tool_result → a tool message
    right after the assistant turn, in order (is_error marked, block content joined); text in
    the same user message follows as a user message; thinking blocks are dropped."""
    req = translate(
        base(
            messages=[
                user("weather in Paris and Rome?"),
                assistant(
                    [
                        {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xyz"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "toolu_2",
                            "name": "weather",
                            "input": {"city": "Rome"},
                        },
                    ]
                ),
                user(
                    [
                        {"type": "text", "text": "also, be quick"},
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "service down"},
                                {"type": "text", "text": "retry later"},
                            ],
                        },
                    ]
                ),
            ]
        )
    )
    assert req.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {
            "role": "tool",
            "tool_call_id": "toolu_2",
            "content": "Error: service down\n\nretry later",
        },
        {"role": "user", "content": "also, be quick"},
    ]


def test_tool_only_assistant_turn_and_image_in_tool_result() -> None:
    """An assistant turn with only tool calls has null content; an image a tool returned goes
    to a user message after the tool messages (tool messages carry text only)."""
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
    }
    req = translate(
        base(
            messages=[
                user("screenshot"),
                assistant([{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]),
                user(
                    [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "done"}, image],
                        }
                    ]
                ),
            ]
        )
    )
    assert req.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "done"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}],
        },
    ]


def test_sampling_stop_and_metadata() -> None:
    """stop_sequences → stop, temperature/top_p pass, top_k is checked but not sent,
    metadata.user_id → user, unknown fields ignored."""
    req = translate(
        base(
            messages=[user("hi")],
            stop_sequences=["END", ""],
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            metadata={"user_id": "u-1"},
            output_config={"effort": "low"},
            context_management={"edits": []},
            container="c",
            mcp_servers=[],
            service_tier="auto",
        )
    )
    assert req.body == {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1",
    }
    assert req.stop_sequences == ("END",)


def test_tools_and_server_tools() -> None:
    """input_schema → function parameters; server tools (a type, no schema) are dropped and
    named; cache_control on a tool is ignored."""
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    req = translate(
        base(
            messages=[user("hi")],
            tools=[
                {
                    "name": "search",
                    "description": "find",
                    "input_schema": schema,
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "custom", "name": "plain", "input_schema": schema},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
                {"type": "bash_20250124", "name": "bash"},
                {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
            ],
            tool_choice={"type": "auto"},
        )
    )
    assert req.body["tools"] == [
        {
            "type": "function",
            "function": {"name": "search", "parameters": schema, "description": "find"},
        },
        {"type": "function", "function": {"name": "plain", "parameters": schema}},
    ]
    assert req.body["tool_choice"] == "auto"
    assert req.dropped_tools == ("web_search", "bash", "str_replace_based_edit_tool")


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "any", "disable_parallel_tool_use": True}, "required"),
        ({"type": "tool", "name": "search"}, {"type": "function", "function": {"name": "search"}}),
        ({"type": "none"}, "none"),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    """auto / any → required / tool → that function / none."""
    schema = {"type": "object"}
    req = translate(
        base(
            messages=[user("hi")],
            tool_choice=choice,
            tools=[{"name": "search", "input_schema": schema}],
        )
    )
    assert req.body["tool_choice"] == expected


def test_tool_choice_without_tools_is_not_sent() -> None:
    """A tool_choice with every tool dropped (or none offered) is left out: OpenAI-style
    servers refuse a tool_choice without tools."""
    req = translate(
        base(
            messages=[user("hi")],
            tool_choice={"type": "auto"},
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    )
    assert "tool_choice" not in req.body
    assert "tools" not in req.body
    assert "tool_choice" not in translate(base(messages=[], tool_choice={"type": "none"})).body


@pytest.mark.parametrize(
    ("thinking", "output_config", "expected"),
    [
        (None, None, (False, None)),
        ({"type": "disabled"}, None, (False, None)),
        ({"type": "enabled", "budget_tokens": 1024}, None, (True, "low")),
        ({"type": "enabled", "budget_tokens": 8000}, None, (True, "medium")),
        ({"type": "enabled", "budget_tokens": 31999}, None, (True, "high")),
        ({"type": "adaptive"}, None, (True, None)),
        ({"type": "adaptive"}, {"effort": "max"}, (True, "high")),
        ({"type": "adaptive"}, {"effort": "low"}, (True, "low")),
    ],
)
def test_thinking(thinking: Any, output_config: Any, expected: tuple[bool, str | None]) -> None:
    """thinking asks for thinking blocks; its budget maps to an effort that is not sent."""
    extra = {k: v for k, v in (("thinking", thinking), ("output_config", output_config)) if v}
    req = translate(base(messages=[user("hi")], **extra))
    assert (req.thinking, req.reasoning_effort) == expected
    assert "reasoning_effort" not in req.body


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 10, "messages": []}, "model"),
        ({"model": 3, "max_tokens": 10, "messages": []}, "model"),
        ({"model": "m", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": "10", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": True, "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": 0, "messages": []}, "max_tokens"),
        (base(messages="hi"), "messages"),
        (base(messages=[{"role": "tool", "content": "x"}]), "messages"),
        (base(messages=[user(5)]), "messages"),
        (base(messages=[user([{"text": "no type"}])]), "messages"),
        (
            base(messages=[user([{"type": "image", "source": {"type": "file", "file_id": "f"}}])]),
            "messages",
        ),
        (
            base(
                messages=[
                    user(
                        [
                            {
                                "type": "document",
                                "source": {
                                    "type": "base64",
                                    "media_type": "application/pdf",
                                    "data": "JVBE",
                                },
                            }
                        ]
                    )
                ]
            ),
            "messages",
        ),
        (base(messages=[user([{"type": "tool_result"}])]), "messages"),
        (
            base(messages=[assistant([{"type": "tool_use", "id": "t", "name": "n", "input": []}])]),
            "messages",
        ),
        (base(messages=[], system=3), "system"),
        (base(messages=[], system=[{"type": "image"}]), "system"),
        (base(messages=[], stream="yes"), "stream"),
        (base(messages=[], temperature="hot"), "temperature"),
        (base(messages=[], top_k=True), "top_k"),
        (base(messages=[], stop_sequences="END"), "stop_sequences"),
        (base(messages=[], tools={"name": "x"}), "tools"),
        (base(messages=[], tools=[{"name": "x"}]), "tools"),
        (base(messages=[], tool_choice={"type": "sometimes"}), "tool_choice"),
        (
            base(
                messages=[],
                tools=[{"type": "web_search_20250305", "name": "web_search"}],
                tool_choice={"type": "tool", "name": "web_search"},
            ),
            "tool_choice",
        ),
        (base(messages=[], thinking={"type": "enabled"}), "thinking"),
        (base(messages=[], thinking={"type": "maybe"}), "thinking"),
        (base(messages=[], metadata="u"), "metadata"),
    ],
)
def test_wrong_shapes_are_dialect_errors(body: dict[str, Any], param: str) -> None:
    """Wrong types raise DialectError naming the parameter, or the path into it (a 400
    invalid_request_error)."""
    with pytest.raises(DialectError) as caught:
        translate(body)
    assert caught.value.param is not None
    assert re.match(r"[a-z_]+", caught.value.param)[0] == param  # type: ignore[index]
    assert caught.value.message


def test_claude_code_shaped_request() -> None:
    """A request shaped like Claude Code's (system blocks with cache_control, reminders, a
    thinking budget, a server tool, a tool round trip, unknown fields) translates whole."""
    body = json.loads((DATA / "claude_code_shaped_messages_request.json").read_text())
    req = translate(body)
    assert req.model == "coderclaw"
    assert req.stream and req.thinking and req.reasoning_effort == "high"
    assert req.dropped_tools == ("web_search",)
    assert [t["function"]["name"] for t in req.body["tools"]] == ["Bash", "Read"]
    roles = [m["role"] for m in req.body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assert req.body["messages"][2]["tool_calls"][0]["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert req.body["messages"][3]["content"] == "README.md\npyproject.toml\nsrc\n"
    assert req.body["user"] == body["metadata"]["user_id"]


# -- the SDK as the judge -------------------------------------------------------------------


def sdk_client(status: int, body: bytes, content_type: str) -> anthropic.Anthropic:
    """The real SDK, strict validation, over a transport that answers with ``body``."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=body, headers={"content-type": content_type})

    return anthropic.Anthropic(
        api_key="test-token",
        base_url="http://gateway.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        max_retries=0,
        _strict_response_validation=True,
    )


def sdk_stream_final(sse: bytes) -> Message:
    client = sdk_client(200, sse, "text/event-stream")
    with client.messages.stream(model="m", max_tokens=10, messages=[]) as stream:
        for _ in stream:
            pass
        return stream.get_final_message()


def parsed_events(sse: bytes) -> list[dict[str, Any]]:
    """Every event of ``sse``: its ``event:`` name equals its data's type, and it validates."""
    out = []
    for block in sse.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        name = name_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        if name not in ("ping", "error"):
            EVENTS.validate_python(data)
        out.append(data)
    return out


# -- non-stream responses -------------------------------------------------------------------


def chat(message: dict[str, Any], finish: str | None = "stop", **choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "Qwen/Qwen3",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish,
                **choice,
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37},
    }


REQ = translate(base(messages=[user("hi")]))
THINKING_REQ = translate(base(messages=[user("hi")], thinking={"type": "adaptive"}))
STOP_REQ = translate(base(messages=[user("hi")], stop_sequences=["END", "###"]))


@pytest.mark.parametrize(
    ("completion", "request_", "content", "stop"),
    [
        (
            chat({"content": "Hello!"}),
            REQ,
            [{"type": "text", "text": "Hello!"}],
            ("end_turn", None),
        ),
        (
            chat({"content": "Hel"}, "length"),
            REQ,
            [{"type": "text", "text": "Hel"}],
            ("max_tokens", None),
        ),
        (chat({"content": ""}, None), REQ, [], ("end_turn", None)),
        (
            chat({"content": "refused"}, "content_filter"),
            REQ,
            [{"type": "text", "text": "refused"}],
            ("refusal", None),
        ),
        # the matched stop sequence is known only when the upstream names it (vLLM does)
        (
            chat({"content": "a"}, stop_reason="END"),
            STOP_REQ,
            [{"type": "text", "text": "a"}],
            ("stop_sequence", "END"),
        ),
        (chat({"content": "a"}), STOP_REQ, [{"type": "text", "text": "a"}], ("end_turn", None)),
        (
            chat({"content": "a"}, stop_reason="OTHER"),
            STOP_REQ,
            [{"type": "text", "text": "a"}],
            ("end_turn", None),
        ),
        (
            chat({"content": "a"}, stop_reason=128001),
            STOP_REQ,
            [{"type": "text", "text": "a"}],
            ("end_turn", None),
        ),
        # reasoning: shown as thinking only when asked for, from a field or inline <think>
        (
            chat({"content": "4", "reasoning_content": "2+2"}),
            THINKING_REQ,
            [
                {"type": "thinking", "thinking": "2+2", "signature": ""},
                {"type": "text", "text": "4"},
            ],
            ("end_turn", None),
        ),
        (
            chat({"content": "4", "reasoning": "2+2"}),
            THINKING_REQ,
            [
                {"type": "thinking", "thinking": "2+2", "signature": ""},
                {"type": "text", "text": "4"},
            ],
            ("end_turn", None),
        ),
        (
            chat({"content": "<think>2+2</think>\n\n4"}),
            THINKING_REQ,
            [
                {"type": "thinking", "thinking": "2+2", "signature": ""},
                {"type": "text", "text": "4"},
            ],
            ("end_turn", None),
        ),
        (
            chat({"content": "<think>2+2</think>\n\n4", "reasoning_content": "r"}),
            REQ,
            [{"type": "text", "text": "4"}],
            ("end_turn", None),
        ),
    ],
)
def test_message_from_chat(
    completion: dict[str, Any], request_: ChatRequest, content: list[Any], stop: tuple[Any, Any]
) -> None:
    """Content blocks and stop reasons from a chat completion; the SDK parses the message."""
    message = message_from_chat(
        completion, message_id="msg_1", model="served/ref", request=request_
    )
    assert message["content"] == content
    assert (message["stop_reason"], message["stop_sequence"]) == stop
    assert message["usage"] == {"input_tokens": 30, "output_tokens": 7}
    Message.model_validate(message)
    got = sdk_client(200, json.dumps(message).encode(), "application/json").messages.create(
        model="m", max_tokens=10, messages=[]
    )
    assert got.model == "served/ref"
    assert got.id == "msg_1"


def test_message_from_chat_tool_calls() -> None:
    """tool_calls → tool_use blocks with toolu_ ids from the upstream ids (made up when there
    is none), parsed input; `stop` with tool calls is still tool_use."""
    completion = chat(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": '{"command": "ls"}'},
                },
                {"id": "", "type": "function", "function": {"name": "Read", "arguments": ""}},
                {
                    "id": "chatcmpl-tool-9.x",
                    "type": "function",
                    "function": {"name": "Bad", "arguments": "{not json"},
                },
            ],
        },
        "stop",
    )
    message = message_from_chat(completion, message_id="msg_7", model="m", request=REQ)
    assert message["content"] == [
        {"type": "tool_use", "id": "toolu_call_abc", "name": "Bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": "toolu_7_1", "name": "Read", "input": {}},
        {
            "type": "tool_use",
            "id": "toolu_chatcmpl-tool-9_x",
            "name": "Bad",
            "input": {"_arguments": "{not json"},
        },
    ]
    assert message["stop_reason"] == "tool_use"
    Message.model_validate(message)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 60},
            },
            {"input_tokens": 40, "output_tokens": 5, "cache_read_input_tokens": 60},
        ),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 2,
                "cached_tokens": 4,
            },  # Together's flat one
            {"input_tokens": 6, "output_tokens": 2, "cache_read_input_tokens": 4},
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 2, "cached_tokens": 0},
            {"input_tokens": 10, "output_tokens": 2},
        ),
        (None, {"input_tokens": 0, "output_tokens": 0}),
        (  # the gateway's price of the request, put there by the engine: kept
            {"prompt_tokens": 10, "completion_tokens": 2, "cost": 0.0012},
            {"input_tokens": 10, "output_tokens": 2, "cost": 0.0012},
        ),
        (  # no price known
            {"prompt_tokens": 10, "completion_tokens": 2, "cost": None},
            {"input_tokens": 10, "output_tokens": 2, "cost": None},
        ),
    ],
)
def test_usage(usage: Any, expected: dict[str, int]) -> None:
    """Input tokens exclude cache reads (Anthropic's total is input + cache_read)."""
    completion = chat({"content": "x"})
    completion["usage"] = usage
    assert message_from_chat(completion, message_id="msg_1", model="m", request=REQ)["usage"] == (
        expected
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", ("", "plain")),
        ("<think>a</think>b", ("a", "b")),
        ("\n<think>a</think>\n\nb", ("a", "b")),
        ("<think>unfinished", ("unfinished", "")),
        ("say <think> later", ("", "say <think> later")),
    ],
)
def test_split_think(text: str, expected: tuple[str, str]) -> None:
    """Only a leading <think> opens reasoning; an unclosed one is all reasoning."""
    assert split_think(text) == expected


# -- streaming ------------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    **choice: Any,
) -> dict[str, Any]:
    choices = (
        []
        if delta is None and finish is None
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice}]
    )
    return {"object": "chat.completion.chunk", "choices": choices, "usage": usage}


def run_stream(request: ChatRequest, chunks: list[dict[str, Any]]) -> bytes:
    stream = MessagesStream(request, "msg_s")
    return stream.start("org/served") + stream.feed_all(chunks) + stream.finish()


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_stream_text() -> None:
    """Text deltas in one text block; usage-only chunk read; message_delta then message_stop;
    the SDK's stream gives the final message."""
    sse = run_stream(
        REQ,
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk(usage=USAGE),
        ],
    )
    types = [e["type"] for e in parsed_events(sse)]
    assert types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    final = sdk_stream_final(sse)
    assert final.model_dump(exclude_none=True)["content"] == [{"type": "text", "text": "Hello"}]
    assert (final.stop_reason, final.model, final.id) == ("end_turn", "org/served", "msg_s")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 3)


def test_stream_start_estimate_is_replaced_by_the_upstream_count() -> None:
    """An estimate in message_start is overwritten by message_delta's real usage."""
    stream = MessagesStream(REQ, "msg_e")
    sse = stream.start("m", input_tokens=99)
    assert parsed_events(sse)[0]["message"]["usage"] == {"input_tokens": 99, "output_tokens": 0}
    sse += stream.feed(chunk({"content": "a"}, "stop", usage=USAGE)) + stream.finish()
    assert sdk_stream_final(sse).usage.input_tokens == 12


def test_stream_thinking_then_text_from_a_reasoning_field() -> None:
    """reasoning_content / reasoning deltas → a thinking block, closed before the text block."""
    sse = run_stream(
        THINKING_REQ,
        [
            chunk({"reasoning_content": "let me "}),
            chunk({"reasoning": "think"}),
            chunk({"content": "42"}),
            chunk({}, "stop", usage=USAGE),
        ],
    )
    final = sdk_stream_final(sse)
    assert final.model_dump()["content"] == [
        {"type": "thinking", "thinking": "let me think", "signature": ""},
        {"type": "text", "text": "42", "citations": None},
    ]


def test_stream_inline_think_split_across_chunks() -> None:
    """<think> and </think> cut anywhere across chunks still split thinking from text."""
    text = "\n<think>step one</think>\n\nanswer <b>"
    for cut in range(1, len(text)):
        sse = run_stream(
            THINKING_REQ,
            [chunk({"content": text[:cut]}), chunk({"content": text[cut:]}), chunk({}, "stop")],
        )
        final = sdk_stream_final(sse)
        blocks = final.content
        assert [b.type for b in blocks] == ["thinking", "text"], cut
        assert blocks[0].thinking == "step one"  # type: ignore[union-attr]
        assert blocks[1].text == "answer <b>"  # type: ignore[union-attr]


def test_stream_reasoning_left_out_unless_thinking_was_asked() -> None:
    """Without `thinking` in the request, reasoning (field or inline) is not shown."""
    sse = run_stream(
        REQ,
        [
            chunk({"reasoning_content": "hmm"}),
            chunk({"content": "<think>x"}),
            chunk({"content": "y</think>ok"}),
            chunk({}, "stop"),
        ],
    )
    final = sdk_stream_final(sse)
    assert final.model_dump(exclude_none=True)["content"] == [{"type": "text", "text": "ok"}]


def test_stream_text_that_only_looks_like_a_tag_start() -> None:
    """A held-back "<th" that turns out to be text (or ends the stream) is sent as text."""
    for pieces in (["<th", "is"], ["  <thi"]):
        sse = run_stream(
            THINKING_REQ, [chunk({"content": p}) for p in pieces] + [chunk({}, "stop")]
        )
        assert sdk_stream_final(sse).content[0].text == "".join(pieces)  # type: ignore[union-attr]


def test_stream_tool_calls() -> None:
    """Several tool calls by index, arguments over many chunks → tool_use blocks with
    input_json_delta; text before them closes first; finish tool_calls → tool_use."""
    sse = run_stream(
        REQ,
        [
            chunk({"content": "Running."}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "Bash", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"comm'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'and": "ls"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "Read", "arguments": '{"file_path":"/a"}'},
                        }
                    ]
                }
            ),
            chunk({}, "tool_calls", usage=USAGE),
        ],
    )
    events = parsed_events(sse)
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert [d["type"] for d in deltas] == [
        "text_delta",
        "input_json_delta",
        "input_json_delta",
        "input_json_delta",
    ]
    final = sdk_stream_final(sse)
    assert final.model_dump(exclude_none=True)["content"] == [
        {"type": "text", "text": "Running."},
        {"type": "tool_use", "id": "toolu_call_1", "name": "Bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": "toolu_call_2", "name": "Read", "input": {"file_path": "/a"}},
    ]
    assert final.stop_reason == "tool_use"


def test_stream_tool_call_without_id_or_with_late_name() -> None:
    """A call with no id gets one from the message id; arguments before the name are held."""
    sse = run_stream(
        REQ,
        [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "1}"}}]}),
            chunk({}, "stop"),
        ],
    )
    final = sdk_stream_final(sse)
    assert final.model_dump(exclude_none=True)["content"] == [
        {"type": "tool_use", "id": "toolu_s_0", "name": "f", "input": {"a": 1}}
    ]
    assert final.stop_reason == "tool_use"


def test_stream_tool_name_repeated_on_every_chunk() -> None:
    """A provider that repeats the id and name on each chunk still gets one tool_use block."""
    call = {"index": 0, "id": "call_9", "type": "function"}
    sse = run_stream(
        REQ,
        [
            chunk(
                {"tool_calls": [{**call, "function": {"name": "Bash", "arguments": '{"command"'}}]}
            ),
            chunk({"tool_calls": [{**call, "function": {"name": "Bash", "arguments": ':"pwd"}'}}]}),
            chunk({}, "tool_calls"),
        ],
    )
    final = sdk_stream_final(sse)
    assert final.model_dump(exclude_none=True)["content"] == [
        {"type": "tool_use", "id": "toolu_call_9", "name": "Bash", "input": {"command": "pwd"}}
    ]


def test_stream_ignores_malformed_chunk_parts() -> None:
    """Chunk parts of the wrong type are skipped, never a crash in the middle of a stream."""
    sse = run_stream(
        REQ,
        [
            {"choices": ["nonsense"]},
            {"choices": [{"delta": "text?"}]},
            {"choices": [{"delta": {"content": 5, "tool_calls": "x"}}]},
            {"choices": [{"delta": {"tool_calls": [7, {"index": "0", "function": "f"}]}}]},
            chunk({"content": "fine"}),
            chunk({}, "stop"),
        ],
    )
    final = sdk_stream_final(sse)
    assert final.model_dump(exclude_none=True)["content"] == [{"type": "text", "text": "fine"}]


@pytest.mark.parametrize(
    ("finish", "matched", "expected"),
    [
        ("length", None, ("max_tokens", None)),
        ("stop", "END", ("stop_sequence", "END")),
        (None, None, ("end_turn", None)),
        ("eos", None, ("end_turn", None)),
    ],
)
def test_stream_finish_mapping(
    finish: str | None, matched: str | None, expected: tuple[str, str | None]
) -> None:
    """The upstream finish_reason (and a named stop sequence) becomes message_delta's stop."""
    extra = {"stop_reason": matched} if matched else {}
    chunks = [chunk({"content": "x"})]
    if finish:
        chunks.append(chunk({}, finish, **extra))
    final = sdk_stream_final(run_stream(STOP_REQ, chunks))
    assert (final.stop_reason, final.stop_sequence) == expected


def test_stream_with_no_content_is_still_a_valid_message() -> None:
    """An upstream that sends nothing but a finish still gives a well-formed empty message."""
    final = sdk_stream_final(run_stream(REQ, [chunk({}, "stop")]))
    assert final.content == []
    assert final.stop_reason == "end_turn"


def test_ping_is_skipped_by_the_sdk() -> None:
    """ping events (sent during silence) are valid SSE the SDK skips."""
    stream = MessagesStream(REQ, "msg_p")
    sse = stream.start("m") + stream.ping() + stream.feed(chunk({"content": "a"})) + stream.ping()
    sse += stream.finish()
    assert stream.ping() == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert sdk_stream_final(sse).content[0].text == "a"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overloaded", "kind", "error_class"),
    [
        (False, "api_error", anthropic.APIStatusError),
        (True, "overloaded_error", anthropic.APIStatusError),
    ],
)
def test_stream_failure_after_commit_raises_in_the_sdk(
    overloaded: bool, kind: str, error_class: type[Exception]
) -> None:
    """fail() sends event: error with no message_stop: the SDK raises, never a clean end."""
    stream = MessagesStream(REQ, "msg_f")
    sse = stream.start("m") + stream.feed(chunk({"content": "partial"}))
    tail = stream.fail("the upstream stream broke; retry", overloaded)
    assert b"message_stop" not in tail
    events = parsed_events(sse + tail)
    assert events[-1] == {
        "type": "error",
        "error": {"type": kind, "message": "the upstream stream broke; retry"},
    }
    ErrorResponse.model_validate(events[-1])
    client = sdk_client(200, sse + tail, "text/event-stream")
    with (
        pytest.raises(error_class, match="the upstream stream broke"),
        client.messages.stream(model="m", max_tokens=10, messages=[]) as live,
    ):
        for _ in live:
            pass


def test_stream_events_are_compact_and_framed() -> None:
    """Each event is `event: <type>\\ndata: <one-line JSON>\\n\\n` (what SSE decoders expect)."""
    sse = run_stream(REQ, [chunk({"content": 'quote " and \n newline'}), chunk({}, "stop")])
    for block in sse.decode().split("\n\n")[:-1]:
        lines = block.split("\n")
        assert len(lines) == 2
        assert lines[0].startswith("event: ")
        assert lines[1].startswith("data: {")
    assert sdk_stream_final(sse).content[0].text == 'quote " and \n newline'  # type: ignore[union-attr]


# -- errors ---------------------------------------------------------------------------------

ERROR_CLASSES: dict[int, type[Exception]] = {
    400: anthropic.BadRequestError,
    401: anthropic.AuthenticationError,
    402: anthropic.PaymentRequiredError,
    403: anthropic.PermissionDeniedError,
    404: anthropic.NotFoundError,
    413: anthropic.ContentTooLargeError,
    429: anthropic.RateLimitError,
    500: anthropic.InternalServerError,
    502: anthropic.InternalServerError,
    504: anthropic.InternalServerError,
    529: anthropic.OverloadedError,
}


@pytest.mark.parametrize(
    ("status", "answered", "kind"),
    [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (402, 402, "billing_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (413, 413, "request_too_large"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (502, 502, "api_error"),
        (503, 529, "overloaded_error"),  # an all-503 chain
        (504, 504, "api_error"),
        (422, 422, "invalid_request_error"),
    ],
)
def test_error_for_failure(status: int, answered: int, kind: str) -> None:
    """Gateway failures in Anthropic's shape and statuses; the SDK raises the matching class."""
    code, body = error_for_failure(status, "what to do next")
    assert code == answered
    assert body == {"type": "error", "error": {"type": kind, "message": "what to do next"}}
    if kind != "request_too_large":  # Anthropic's docs name it; the SDK's union does not
        ErrorResponse.model_validate(body)
    client = sdk_client(code, json.dumps(body).encode(), "application/json")
    expected = ERROR_CLASSES.get(code, anthropic.UnprocessableEntityError)
    with pytest.raises(expected, match="what to do next") as caught:
        client.messages.create(model="m", max_tokens=10, messages=[])
    assert caught.value.body == body  # type: ignore[attr-defined]


def test_error_response_explicit_kind() -> None:
    """An explicit kind wins over the status's default."""
    assert error_response(500, "m", "overloaded_error") == (
        500,
        {"type": "error", "error": {"type": "overloaded_error", "message": "m"}},
    )


# -- count_tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": []}, 0),
        ({"messages": [user("hello world")]}, 4 + 2),
        ({"messages": [user("a" * 17)]}, 4 + 3),  # a word per 8 letters
        ({"messages": [user("1234567")]}, 4 + 3),  # a number per 3 digits
        ({"messages": [user('{"a": 1}')]}, 4 + 1 + 1 + 1 + 1 + 1),
        ({"messages": [user("x\n\n\n\n\ny")]}, 4 + 1 + 2 + 1),  # whitespace run per 4
        ({"messages": [user("日本語")]}, 4 + 3),  # one per non-ASCII character
        ({"system": "be brief", "messages": [user("ok")]}, 2 + 4 + 1),
        (
            {
                "messages": [
                    user(
                        [
                            {"type": "image", "source": {"type": "base64", "data": "x" * 9999}},
                            {"type": "text", "text": "caption"},
                        ]
                    )
                ]
            },
            4 + 1600 + 1,
        ),
        (
            {
                "messages": [
                    user(
                        [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "text", "text": "done now"}],
                            }
                        ]
                    )
                ]
            },
            4 + 2,
        ),
    ],
)
def test_estimate_tokens_table(body: dict[str, Any], expected: int) -> None:
    """Text pieces + 4 per message + 1600 per image; an image's bytes are not counted."""
    assert estimate_tokens(body) == expected


def test_estimate_tokens_counts_tools_and_tool_use() -> None:
    """Tool definitions (10 each + their JSON) and tool_use inputs add to the estimate."""
    plain = {"messages": [user("hi")]}
    tool = {"name": "Bash", "input_schema": {"type": "object"}}
    with_tools = {**plain, "tools": [tool]}
    assert estimate_tokens(with_tools) >= estimate_tokens(plain) + 10 + 8
    call = assistant(
        [{"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": "ls -la /tmp"}}]
    )
    assert estimate_tokens({"messages": [call]}) > estimate_tokens({"messages": [assistant("")]})


def test_estimate_tokens_of_the_claude_code_shaped_request() -> None:
    """The estimate of a whole Claude Code-shaped request is in the range its size implies."""
    body = json.loads((DATA / "claude_code_shaped_messages_request.json").read_text())
    size = len(json.dumps(body))
    assert size / 8 < estimate_tokens(body) < size / 2


SAMPLES = json.loads((DATA / "token_samples.json").read_text())["samples"]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["name"] for s in SAMPLES])
def test_estimate_tokens_against_a_known_tokenizer(sample: dict[str, Any]) -> None:
    """On English, code and JSON samples counted with a real BPE tokenizer (Anthropic's
    published legacy one; see token_samples.json) the estimate is within 15%."""
    estimate = estimate_tokens({"messages": [{"role": "user", "content": sample["text"]}]})
    estimate -= 4  # the per-message overhead is not in the sample's count
    assert abs(estimate - sample["tokens"]) <= 0.15 * sample["tokens"]


# -- models ---------------------------------------------------------------------------------

OBJECTS = [
    {
        "id": "coderclaw",
        "object": "model",
        "created": 1764547200,
        "owned_by": "coderclaw",
        "chain": ["huggingface/Qwen/Qwen3-Coder-480B-A35B-Instruct"],
    },
    {
        "id": "huggingface/Qwen/Qwen3-Coder-480B-A35B-Instruct",
        "object": "model",
        "created": 1764547200,
        "owned_by": "Qwen",
        "context_length": 262144,
        "max_output_tokens": 65536,
        "aliases": ["coder"],
    },
    {
        "id": "huggingface/zai-org/GLM-4.6:cheapest",
        "object": "model",
        "created": 1764547200,
        "owned_by": "zai-org",
        "context_length": None,
        "aliases": [],
    },
    {
        "id": "coder",
        "object": "model",
        "created": 1764547200,
        "owned_by": "coderclaw",
        "alias_for": "huggingface/Qwen/Qwen3-Coder-480B-A35B-Instruct",
    },
]
IDS = [o["id"] for o in OBJECTS]


@pytest.mark.parametrize(
    ("kwargs", "ids", "has_more"),
    [
        ({}, IDS, False),
        ({"limit": 2}, IDS[:2], True),
        ({"limit": 2, "after_id": IDS[1]}, IDS[2:], False),
        ({"limit": 1, "after_id": IDS[0]}, IDS[1:2], True),
        ({"limit": 2, "before_id": IDS[3]}, IDS[1:3], True),
        ({"limit": 5, "before_id": IDS[2]}, IDS[:2], False),
        ({"after_id": "nope"}, [], False),
        ({"before_id": "nope"}, [], False),
    ],
)
def test_models_page(kwargs: dict[str, Any], ids: list[str], has_more: bool) -> None:
    """Pages by after_id / before_id with has_more, first_id and last_id."""
    page = models_page(OBJECTS, **kwargs)
    assert [m["id"] for m in page["data"]] == ids
    assert page["has_more"] is has_more
    assert (page["first_id"], page["last_id"]) == ((ids[0], ids[-1]) if ids else (None, None))


def test_models_page_parses_in_the_sdk() -> None:
    """models.list parses every entry with ids, display names and RFC 3339 creation times."""
    page = models_page(OBJECTS)
    for info in page["data"]:
        ModelInfo.model_validate(info)
    assert page["data"][0]["created_at"] == "2025-12-01T00:00:00Z"
    client = sdk_client(200, json.dumps(page).encode(), "application/json")
    listed = client.models.list()
    assert [(m.id, m.display_name) for m in listed.data] == [
        ("coderclaw", "coderclaw (the configured chain)"),
        ("huggingface/Qwen/Qwen3-Coder-480B-A35B-Instruct", "Qwen3-Coder-480B-A35B-Instruct"),
        ("huggingface/zai-org/GLM-4.6:cheapest", "GLM-4.6:cheapest"),
        ("coder", "coder → Qwen3-Coder-480B-A35B-Instruct"),
    ]
    assert listed.data[1].max_input_tokens == 262144
    assert listed.data[1].max_tokens == 65536
