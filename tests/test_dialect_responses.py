"""The Responses dialect's pure translators, checked against the openai SDK's own types.

Request bodies → upstream chat bodies (tables of cases, Codex CLI's real request included);
chat completions → Response objects; chat chunks → Responses SSE events, parsed with
``openai.types.responses.ResponseStreamEvent`` and accumulated by the SDK's own stream state.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI, omit
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway import wire
from gateway.dialects.responses import (
    ChatRequest,
    DialectError,
    ResponsesStream,
    ToolOrigin,
    chat_request,
    error_body,
    response_from_chat,
)

DATA = Path(__file__).parent / "data"
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
SERVED = "huggingface/org/model-a"

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


# ------------------------------------------------------------------- request: messages

MESSAGE_CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    ("a string input is one user message", {"input": "hi"}, [{"role": "user", "content": "hi"}]),
    (
        "instructions come first as the system message",
        {"instructions": "Be brief.", "input": "hi"},
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    ),
    (
        "text parts of one message are joined",
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "one"},
                        {"type": "input_text", "text": "two"},
                    ],
                }
            ]
        },
        [{"role": "user", "content": "one\n\ntwo"}],
    ),
    (
        "an input_image makes the content a list of parts",
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    ],
                }
            ]
        },
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    ),
    (
        "developer and system items become one system message after the instructions",
        {
            "instructions": "A",
            "input": [
                {"type": "message", "role": "developer", "content": "B"},
                {"type": "message", "role": "system", "content": "C"},
                user("hi"),
            ],
        },
        [{"role": "system", "content": "A\n\nB\n\nC"}, {"role": "user", "content": "hi"}],
    ),
    (
        "consecutive user messages are merged; an assistant output_text stays its own turn",
        {
            "input": [
                user("ctx"),
                user("hi"),
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "hello", "annotations": []}],
                },
                user("again"),
            ]
        },
        [
            {"role": "user", "content": "ctx\n\nhi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
    ),
    (
        "function_call and function_call_output become a tool_calls turn and a tool message",
        {
            "input": [
                user("weather?"),
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ]
        },
        [
            {"role": "user", "content": "weather?"},
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
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    ),
    (
        "assistant text then two calls form one assistant message",
        {
            "input": [
                user("go"),
                {"type": "message", "role": "assistant", "content": "Let me check."},
                {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "a", "output": "1"},
                {"type": "function_call_output", "call_id": "b", "output": "2"},
            ]
        },
        [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "2"},
        ],
    ),
    (
        "reasoning items and hosted tool-call records are dropped",
        {
            "input": [
                user("hi"),
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xx"},
                {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                {"type": "message", "role": "assistant", "content": "done"},
            ]
        },
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "done"}],
    ),
    (
        "a custom tool call carries its input as the one string argument",
        {
            "input": [
                user("patch it"),
                {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*"},
                {"type": "custom_tool_call_output", "call_id": "c1", "output": "ok"},
            ]
        },
        [
            {"role": "user", "content": "patch it"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "apply_patch", "arguments": '{"input":"*"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
    ),
    (
        "an image in a tool output follows the tool turn as a user message",
        {
            "input": [
                user("look"),
                {"type": "function_call", "call_id": "v", "name": "view_image", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "v",
                    "output": [
                        {"type": "input_text", "text": "the image:"},
                        {"type": "input_image", "image_url": "data:image/png;base64,BB"},
                    ],
                },
                user("describe it"),
            ]
        },
        [
            {"role": "user", "content": "look"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "v",
                        "type": "function",
                        "function": {"name": "view_image", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "v", "content": "the image:"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,BB"}}
                ],
            },
            {"role": "user", "content": "describe it"},
        ],
    ),
    (
        "a tool output that is only an image says so in the tool message",
        {
            "input": [
                {"type": "function_call", "call_id": "v", "name": "view_image", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "v",
                    "output": [{"type": "input_image", "image_url": "https://example.com/a.png"}],
                },
            ]
        },
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "v",
                        "type": "function",
                        "function": {"name": "view_image", "arguments": "{}"},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "v",
                "content": "The tool returned an image; it follows in the next message.",
            },
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                ],
            },
        ],
    ),
]


@pytest.mark.parametrize(
    ("body", "messages"), [c[1:] for c in MESSAGE_CASES], ids=[c[0] for c in MESSAGE_CASES]
)
def test_input_items_become_chat_messages(
    body: dict[str, Any], messages: list[dict[str, Any]]
) -> None:
    """Each kind of input item maps to the chat message(s) the case names."""
    assert chat_request(body).body["messages"] == messages


def test_history_of_previous_response_comes_before_the_new_input() -> None:
    """The stored items of previous_response_id are prepended, output items included."""
    history = [
        user("first"),
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "hm"}],
        },
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "answer one", "annotations": []}],
        },
    ]
    request = chat_request(
        {"input": "second", "previous_response_id": "resp_1", "instructions": "sys"}, history
    )
    assert request.body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "second"},
    ]
    assert request.previous_response_id == "resp_1"
    assert [i["type"] for i in request.input_items] == ["message"], "only the new input is stored"


def test_input_items_to_store_get_ids_and_keep_their_content() -> None:
    """A string input is stored as one user message item; every stored item has an id."""
    request = chat_request({"input": "hi"})
    [item] = request.input_items
    assert item["id"].startswith("msg_")
    assert item["content"] == [{"type": "input_text", "text": "hi"}]
    kept = chat_request({"input": [dict(user("x"), id="msg_mine")]}).input_items
    assert kept[0]["id"] == "msg_mine"


def test_stored_input_items_are_the_sdks_response_items() -> None:
    """Stored input items (ids, statuses, content as parts) validate as the SDK's ResponseItem,
    the shape input_items lists."""
    request = chat_request(
        {
            "input": [
                {"role": "developer", "content": "rules"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "done"},
            ]
        }
    )
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseItem)
    items = [adapter.validate_python(item) for item in request.input_items]
    assert [item.type for item in items] == ["message"] * 3 + [
        "function_call",
        "function_call_output",
    ]
    assert items[1].content[0].text == "hi"
    assert {item.id[:3] for item in items} == {"msg", "fc_", "fco"}


# --------------------------------------------------------------------- request: fields

FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("max_output_tokens becomes max_tokens", {"max_output_tokens": 64}, {"max_tokens": 64}),
    (
        "temperature and top_p pass",
        {"temperature": 0.2, "top_p": 0.9},
        {"temperature": 0.2, "top_p": 0.9},
    ),
    ("user passes", {"user": "u-1"}, {"user": "u-1"}),
    (
        "reasoning.effort becomes reasoning_effort",
        {"reasoning": {"effort": "low", "summary": "auto"}},
        {"reasoning_effort": "low"},
    ),
    ("a reasoning without effort sends nothing", {"reasoning": {"summary": "auto"}}, {}),
    (
        "text.format json_schema becomes response_format",
        {
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "p",
                    "schema": {"type": "object"},
                    "strict": True,
                }
            }
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": True},
            }
        },
    ),
    (
        "text.format json_object",
        {"text": {"format": {"type": "json_object"}}},
        {"response_format": {"type": "json_object"}},
    ),
    (
        "text.format text sends nothing",
        {"text": {"format": {"type": "text"}, "verbosity": "low"}},
        {},
    ),
    ("metadata is not sent upstream", {"metadata": {"k": "v"}}, {}),
    (
        "stream asks for usage",
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
    ),
    (
        "fields the gateway has no use for are ignored",
        {
            "include": ["reasoning.encrypted_content"],
            "client_metadata": {"a": "b"},
            "prompt_cache_key": "k",
            "truncation": "auto",
            "service_tier": "priority",
            "store": False,
            "background": False,
            "safety_identifier": "s",
            "stream_options": {"include_obfuscation": False},
            "top_logprobs": 2,
            "parallel_tool_calls": False,
        },
        {},
    ),
    ("model is kept for the engine", {"model": "coderclaw"}, {"model": "coderclaw"}),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_request_fields_map_onto_the_chat_body(
    extra: dict[str, Any], expected: dict[str, Any]
) -> None:
    """Each Responses field lands in the chat body as the case says, and nothing else does."""
    body = chat_request({"input": "hi", **extra}).body
    assert {k: v for k, v in body.items() if k != "messages"} == expected


def test_store_flag_and_echoed_fields() -> None:
    """store defaults to true; the Response echo carries the request's own fields."""
    assert chat_request({"input": "x"}).store is True
    request = chat_request(
        {"input": "x", "store": False, "metadata": {"k": "v"}, "temperature": 0.5}
    )
    assert request.store is False
    assert request.echo["metadata"] == {"k": "v"}
    assert request.echo["temperature"] == 0.5
    assert request.echo["tool_choice"] == "auto"


# ---------------------------------------------------------------------- request: tools

TOOL_CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    (
        "a function tool becomes a chat function",
        {"tools": [WEATHER]},
        {"tools": [CHAT_WEATHER]},
        (),
    ),
    (
        "parallel_tool_calls and tool_choice pass with tools",
        {"tools": [WEATHER], "parallel_tool_calls": False, "tool_choice": "required"},
        {"tools": [CHAT_WEATHER], "parallel_tool_calls": False, "tool_choice": "required"},
        (),
    ),
    (
        "parallel_tool_calls true is the default and is not sent",
        {"tools": [WEATHER], "parallel_tool_calls": True},
        {"tools": [CHAT_WEATHER]},
        (),
    ),
    (
        "tool_choice none passes",
        {"tools": [WEATHER], "tool_choice": "none"},
        {"tools": [CHAT_WEATHER], "tool_choice": "none"},
        (),
    ),
    (
        "tool_choice naming a function",
        {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
        {
            "tools": [CHAT_WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
        (),
    ),
    (
        "allowed_tools keeps only the allowed ones",
        {
            "tools": [WEATHER, {"type": "function", "name": "other"}],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_weather"}],
            },
        },
        {"tools": [CHAT_WEATHER], "tool_choice": "required"},
        (),
    ),
    (
        "a custom tool becomes a function with one string argument and its grammar",
        {
            "tools": [
                {
                    "type": "custom",
                    "name": "apply_patch",
                    "description": "Patch files.",
                    "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
                }
            ],
            "tool_choice": {"type": "custom", "name": "apply_patch"},
        },
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "apply_patch",
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "input": {"type": "string", "description": "The tool's input."}
                            },
                            "required": ["input"],
                        },
                        "description": "Patch files.\n\nThe input must follow this lark "
                        "grammar:\nstart: /.+/",
                    },
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "apply_patch"}},
        },
        (),
    ),
    (
        "a namespace offers its functions under their own names",
        {"tools": [{"type": "namespace", "name": "ns", "description": "d", "tools": [WEATHER]}]},
        {"tools": [CHAT_WEATHER]},
        (),
    ),
    (
        "hosted tools merely offered are dropped and named",
        {
            "tools": [
                WEATHER,
                {"type": "web_search", "external_web_access": False},
                {"type": "file_search", "vector_store_ids": ["vs_1"]},
                {"type": "computer_use_preview", "display_width": 1, "display_height": 1},
                {"type": "code_interpreter", "container": {"type": "auto"}},
                {"type": "image_generation"},
                {"type": "mcp", "server_label": "x", "server_url": "https://example.com"},
                {"type": "local_shell"},
                {"type": "web_search"},
            ]
        },
        {"tools": [CHAT_WEATHER]},
        (
            "web_search",
            "file_search",
            "computer_use_preview",
            "code_interpreter",
            "image_generation",
            "mcp",
            "local_shell",
        ),
    ),
    (
        "only hosted tools: no tools and no tool_choice upstream",
        {"tools": [{"type": "web_search"}], "tool_choice": "auto", "parallel_tool_calls": True},
        {},
        ("web_search",),
    ),
]


@pytest.mark.parametrize(
    ("extra", "expected", "dropped"),
    [c[1:] for c in TOOL_CASES],
    ids=[c[0] for c in TOOL_CASES],
)
def test_tools_and_tool_choice(
    extra: dict[str, Any], expected: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    """Tools and tool_choice translate as the case says; hosted tools are listed as dropped."""
    request = chat_request({"input": "hi", **extra})
    assert {k: v for k, v in request.body.items() if k != "messages"} == expected
    assert request.dropped_tools == dropped
    header = request.headers().get("x-coderclaw-dropped-tools")
    assert header == (",".join(dropped) if dropped else None)


def test_namespace_functions_that_clash_get_the_namespace_prefix() -> None:
    """Two namespaces offering the same name: each is offered as ``<ns>__<name>``."""
    request = chat_request(
        {
            "input": "hi",
            "tools": [
                {"type": "namespace", "name": "a", "description": "", "tools": [WEATHER]},
                {"type": "namespace", "name": "b", "description": "", "tools": [WEATHER]},
            ],
        }
    )
    names = [t["function"]["name"] for t in request.body["tools"]]
    assert names == ["a__get_weather", "b__get_weather"]
    assert request.tools["b__get_weather"] == ToolOrigin("function", "get_weather", "b")


# --------------------------------------------------------------------- request: errors

ERROR_CASES: list[tuple[str, dict[str, Any], str | None, str]] = [
    ("no input", {}, "input", "'input' is required"),
    ("input of the wrong type", {"input": 3}, "input", "a string or a list"),
    ("an item that is not an object", {"input": ["hi"]}, "input", "must be an object"),
    ("an unknown item type", {"input": [{"type": "nope"}]}, "input", "'nope'"),
    (
        "an item_reference",
        {"input": [{"type": "item_reference", "id": "x"}]},
        "input",
        "item_reference",
    ),
    (
        "a bad role",
        {"input": [{"type": "message", "role": "bot", "content": "x"}]},
        "input",
        "role",
    ),
    (
        "a file_id image",
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
        "input",
        "file_id",
    ),
    (
        "an input_file part",
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}]},
        "input",
        "input_file",
    ),
    (
        "function_call arguments that are not a string",
        {"input": [{"type": "function_call", "call_id": "a", "name": "f", "arguments": {}}]},
        "input",
        "JSON string",
    ),
    (
        "max_output_tokens as a string",
        {"input": "x", "max_output_tokens": "10"},
        "max_output_tokens",
        "positive integer",
    ),
    ("temperature as a string", {"input": "x", "temperature": "hot"}, "temperature", "a number"),
    ("stream as a string", {"input": "x", "stream": "yes"}, "stream", "true or false"),
    ("instructions as a list", {"input": "x", "instructions": ["a"]}, "instructions", "a string"),
    ("tools not a list", {"input": "x", "tools": {"type": "function"}}, "tools", "a list"),
    (
        "tool_choice forcing a dropped hosted tool",
        {"input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}},
        "tool_choice",
        "'web_search'",
    ),
    (
        "tool_choice naming a function not offered",
        {"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
        "tool_choice",
        "'nope'",
    ),
    (
        "tool_choice required with only hosted tools",
        {"input": "x", "tools": [{"type": "web_search"}], "tool_choice": "required"},
        "tool_choice",
        "web_search",
    ),
    (
        "tool_choice of an unknown mode",
        {"input": "x", "tool_choice": "always"},
        "tool_choice",
        "auto, none",
    ),
    (
        "text.format of an unknown type",
        {"input": "x", "text": {"format": {"type": "xml"}}},
        "text.format",
        "json_schema",
    ),
    (
        "json_schema without a schema",
        {"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
        "text.format",
        "'schema'",
    ),
    (
        "a conversation object",
        {"input": "x", "conversation": "conv_1"},
        "conversation",
        "previous_response_id",
    ),
]


@pytest.mark.parametrize(
    ("body", "param", "fragment"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_untranslatable_requests_raise_a_400_naming_the_field(
    body: dict[str, Any], param: str | None, fragment: str
) -> None:
    """A body that cannot be translated raises DialectError (400) with the param and a hint."""
    with pytest.raises(DialectError) as caught:
        chat_request(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_error_body_is_the_openai_error_shape() -> None:
    """error_body is wire.error_payload's shape: {error: {message, type, param, code}}."""
    assert error_body(
        404, "no such model", "invalid_request_error", "model_not_found", "model"
    ) == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


# ----------------------------------------------------------------- Codex CLI's request


def codex_body() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "codex_responses_second_turn.json").read_text())
    return data


def test_codex_cli_request_translates() -> None:
    """Codex CLI 0.171's real second-turn request: developer items merge into one system
    message, the namespace's functions are offered flat, web_search is dropped, and the
    namespaced call in the history goes upstream as a tool call with its output after it."""
    request = chat_request(codex_body())
    body = request.body
    assert request.stream is True
    assert request.store is False
    assert request.dropped_tools == ("web_search",)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    names = {t["function"]["name"] for t in body["tools"]}
    assert {"exec_command", "write_stdin", "spawn_agent", "wait_agent"} <= names
    assert request.tools["wait_agent"] == ToolOrigin("function", "wait_agent", "multi_agent_v1")
    assert request.tools["exec_command"] == ToolOrigin("function", "exec_command", None)
    call = body["messages"][2]["tool_calls"][0]
    assert call["id"] == "call_probe1"
    assert call["function"]["name"] == "wait_agent"
    assert body["messages"][3]["tool_call_id"] == "call_probe1"
    assert body["stream_options"] == {"include_usage": True}
    for unused in ("include", "prompt_cache_key", "client_metadata", "store", "reasoning"):
        assert unused not in body


def test_response_for_codex_cli_request_validates() -> None:
    """The Response for Codex's request, echoing its namespace and web_search tools and its
    reasoning settings, is valid for the openai SDK."""
    request = chat_request(codex_body())
    response = translate(completion({"role": "assistant", "content": "ok"}), request)
    assert [t.type for t in response.tools].count("namespace") == 1
    assert response.reasoning is not None and response.reasoning.summary == "auto"
    assert response.store is False
    assert response.output_text == "ok"


# ----------------------------------------------------------------- non-stream response


def completion(message: dict[str, Any], finish: str = "stop", usage: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": SERVED,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def translate(chat: dict[str, Any], request: ChatRequest | None = None) -> Response:
    """response_from_chat, validated by the openai SDK's Response model."""
    data = response_from_chat(
        chat,
        response_id="resp_1",
        created_at=1_700_000_000,
        model=SERVED,
        request=request or chat_request({"input": "hi"}),
    )
    return Response.model_validate(data)


TOOLED = chat_request(
    {
        "input": "hi",
        "tools": [
            WEATHER,
            {"type": "custom", "name": "apply_patch"},
            {
                "type": "namespace",
                "name": "multi_agent_v1",
                "description": "",
                "tools": [{"type": "function", "name": "wait_agent"}],
            },
        ],
    }
)

NON_STREAM_CASES: list[tuple[str, dict[str, Any], list[str], str, str | None]] = [
    ("plain text", completion({"role": "assistant", "content": "Hi!"}), ["message"], "Hi!", None),
    (
        "reasoning_content becomes a reasoning item",
        completion({"role": "assistant", "content": "42", "reasoning_content": "think"}),
        ["reasoning", "message"],
        "42",
        "think",
    ),
    (
        "a reasoning field (Groq) becomes a reasoning item",
        completion({"role": "assistant", "content": "42", "reasoning": "hmm"}),
        ["reasoning", "message"],
        "42",
        "hmm",
    ),
    (
        "inline <think> at the start is split off",
        completion({"role": "assistant", "content": "<think>\nsteps\n</think>\n\nAnswer"}),
        ["reasoning", "message"],
        "Answer",
        "\nsteps\n",
    ),
    (
        "a <think> never closed is all reasoning",
        completion({"role": "assistant", "content": "<think>still going"}, finish="length"),
        ["reasoning", "message"],
        "",
        "still going",
    ),
    (
        "<think> later in the text is text",
        completion({"role": "assistant", "content": "say <think> literally"}),
        ["message"],
        "say <think> literally",
        None,
    ),
]


@pytest.mark.parametrize(
    ("chat", "types", "text", "reasoning"),
    [c[1:] for c in NON_STREAM_CASES],
    ids=[c[0] for c in NON_STREAM_CASES],
)
def test_non_stream_output_items(
    chat: dict[str, Any], types: list[str], text: str, reasoning: str | None
) -> None:
    """The chat message becomes the output items the case names; output_text works."""
    response = translate(chat)
    assert [item.type for item in response.output] == types
    assert response.output_text == text
    assert response.model == SERVED
    found = [
        part.text
        for item in response.output
        if item.type == "reasoning"
        for part in item.content or []
    ]
    assert found == ([reasoning] if reasoning is not None else [])


def test_non_stream_tool_calls_map_back_to_their_tools() -> None:
    """A chat tool call becomes a function_call (with namespace when it had one) or, for a
    custom tool, a custom_tool_call carrying the decoded input; no empty message item."""
    chat = completion(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin"}'},
                },
                {
                    "id": "call_c",
                    "type": "function",
                    "function": {"name": "wait_agent", "arguments": "{}"},
                },
            ],
        },
        finish="tool_calls",
    )
    response = translate(chat, TOOLED)
    weather, patch, wait = response.output
    assert weather.type == "function_call"
    assert (weather.call_id, weather.name, weather.arguments) == (
        "call_a",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert weather.status == "completed"
    assert weather.namespace is None
    assert patch.type == "custom_tool_call"
    assert (patch.call_id, patch.name, patch.input) == ("call_b", "apply_patch", "*** Begin")
    assert wait.type == "function_call"
    assert (wait.name, wait.namespace) == ("wait_agent", "multi_agent_v1")
    assert response.status == "completed"


def test_length_finish_is_incomplete_for_max_output_tokens() -> None:
    """finish_reason length → status incomplete, incomplete_details.reason max_output_tokens."""
    response = translate(completion({"role": "assistant", "content": "cut"}, finish="length"))
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[-1].status == "incomplete"


USAGE_CASES: list[tuple[str, Any, dict[str, int] | None]] = [
    ("no usage", None, None),
    (
        "OpenAI-style details",
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
        {"input": 10, "output": 5, "total": 15, "cached": 4, "reasoning": 3},
    ),
    (
        "Together's top-level cached_tokens",
        {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9, "cached_tokens": 1},
        {"input": 7, "output": 2, "total": 9, "cached": 1, "reasoning": 0},
    ),
    (
        "a missing total is summed",
        {"prompt_tokens": 7, "completion_tokens": 2},
        {"input": 7, "output": 2, "total": 9, "cached": 0, "reasoning": 0},
    ),
]


@pytest.mark.parametrize(
    ("usage", "expected"), [c[1:] for c in USAGE_CASES], ids=[c[0] for c in USAGE_CASES]
)
def test_usage_maps_to_the_responses_shape(usage: Any, expected: dict[str, int] | None) -> None:
    """Chat usage becomes input/output/total tokens with cached and reasoning details."""
    got = translate(completion({"role": "assistant", "content": "x"}, usage=usage)).usage
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.input_tokens, got.output_tokens, got.total_tokens) == (
        expected["input"],
        expected["output"],
        expected["total"],
    )
    assert got.input_tokens_details.cached_tokens == expected["cached"]
    assert got.output_tokens_details.reasoning_tokens == expected["reasoning"]


COST_CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("a known price", {"prompt_tokens": 1, "completion_tokens": 1, "cost": 0.00042}, 0.00042),
    ("no price known", {"prompt_tokens": 1, "completion_tokens": 1, "cost": None}, None),
]


@pytest.mark.parametrize(
    ("usage", "cost"), [c[1:] for c in COST_CASES], ids=[c[0] for c in COST_CASES]
)
def test_the_engines_cost_is_kept_in_the_responses_usage(usage: dict[str, Any], cost: Any) -> None:
    """A ``cost`` key the engine put into the chat usage (USD, or None) is in the Response's
    usage too, in the non-stream object and in the streamed final one."""
    got = translate(completion({"role": "assistant", "content": "x"}, usage=usage)).usage
    assert got is not None and got.model_extra == {"cost": cost}
    stream = ResponsesStream(
        ChatRequest(body={}, stream=True, model=None, input_items=[]),
        response_id="resp_1",
        created_at=1,
    )
    stream.start("huggingface/org/m")
    stream.feed({"choices": [], "usage": usage})
    stream.finish()
    assert stream.response["usage"]["cost"] == cost


def test_usage_without_a_cost_key_has_none() -> None:
    """Before the engine prices requests (or for a usage without it), no ``cost`` appears."""
    got = translate(completion({"role": "assistant", "content": "x"}, usage={"prompt_tokens": 1}))
    assert got.usage is not None and "cost" not in (got.usage.model_extra or {})


def test_response_echoes_the_request() -> None:
    """instructions, metadata, temperature, max_output_tokens, tool_choice and tools are echoed."""
    request = chat_request(
        {
            "input": "hi",
            "instructions": "sys",
            "metadata": {"k": "v"},
            "temperature": 0.3,
            "max_output_tokens": 9,
            "tools": [WEATHER],
            "tool_choice": "required",
        }
    )
    response = translate(completion({"role": "assistant", "content": "x"}), request)
    assert response.instructions == "sys"
    assert response.metadata == {"k": "v"}
    assert response.temperature == 0.3
    assert response.max_output_tokens == 9
    assert response.tool_choice == "required"
    assert [t.type for t in response.tools] == ["function"]
    assert response.id == "resp_1"
    assert response.object == "response"


# ----------------------------------------------------------------------------- stream


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "org/model-a",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


def usage_chunk(prompt: int = 10, completion: int = 5) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "org/model-a",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def parse_sse(data: bytes) -> Iterator[dict[str, Any]]:
    """Split SSE bytes into event payloads, checking the ``event:`` line names the type."""
    text = data.decode()
    assert text.endswith("\n\n")
    for block in text[:-2].split("\n\n"):
        event_line, data_line = block.split("\n")
        payload: dict[str, Any] = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {payload['type']}"
        yield payload


def run_stream(
    chunks: list[dict[str, Any]],
    request: ChatRequest | None = None,
    *,
    fail: tuple[str, str] | None = None,
) -> tuple[list[dict[str, Any]], ResponsesStream]:
    """Drive a ResponsesStream; every event is parsed by the SDK's types and accumulated by the
    SDK's own stream state (which raises on an inconsistent sequence)."""
    stream = ResponsesStream(
        request or chat_request({"input": "hi", "stream": True}),
        response_id="resp_s",
        created_at=1_700_000_000,
    )
    data = stream.start(SERVED)
    for c in chunks:
        data += stream.feed(c)
    data += stream.fail(*fail) if fail else stream.finish(completed_at=1_700_000_001)
    events = list(parse_sse(data))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for payload in events:
        state.handle_event(EVENTS.validate_python(payload))
    Response.model_validate(stream.response)
    return events, stream


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def test_stream_of_text_has_openais_event_sequence() -> None:
    """A text stream: created, in_progress, item/part added, deltas, done events, completed."""
    events, stream = run_stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({"content": ""}, "stop"),
            usage_chunk(),
        ]
    )
    assert types_of(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["model"] == SERVED
    assert events[6]["text"] == "Hello"
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed"
    assert final.output_text == "Hello"
    assert final.usage is not None and final.usage.total_tokens == 15
    assert stream.response == events[-1]["response"]


THINK_TEXT = "<think>\nweigh it\n</think>\n\nThe answer"


def splits() -> list[list[str]]:
    """Every way to cut THINK_TEXT in two, and one chunk per character."""
    cuts = [[THINK_TEXT[:i], THINK_TEXT[i:]] for i in range(1, len(THINK_TEXT))]
    return [*cuts, list(THINK_TEXT)]


@pytest.mark.parametrize("pieces", splits(), ids=lambda p: "|".join(p)[:40])
def test_inline_think_split_anywhere_across_chunks(pieces: list[str]) -> None:
    """Inline <think>…</think> becomes a reasoning item however the tags are cut."""
    events, stream = run_stream([chunk({"content": p}) for p in pieces] + [chunk({}, "stop")])
    final = Response.model_validate(stream.response)
    assert [i.type for i in final.output] == ["reasoning", "message"]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.content is not None
    assert reasoning.content[0].text == "\nweigh it\n"
    assert final.output_text == "The answer"
    deltas = [e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"]
    assert "".join(deltas) == "\nweigh it\n"


def test_partial_think_tag_that_is_text_is_not_lost() -> None:
    """Content that starts like a tag but is not one ('<th' then 'ere') is plain text."""
    _, stream = run_stream(
        [chunk({"content": "<th"}), chunk({"content": "ere"}), chunk({}, "stop")]
    )
    assert Response.model_validate(stream.response).output_text == "<there"
    _, stream = run_stream([chunk({"content": "<thi"}), chunk({}, "stop")])
    assert Response.model_validate(stream.response).output_text == "<thi"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning", "reasoning_text"])
def test_reasoning_deltas_become_a_reasoning_item_before_the_text(field: str) -> None:
    """Reasoning deltas (any of the providers' field names) open a reasoning item that is
    done when the text starts."""
    events, stream = run_stream(
        [
            chunk({"role": "assistant", "content": "", field: "Let me"}),
            chunk({field: " think."}),
            chunk({"content": "42"}),
            chunk({}, "stop"),
        ]
    )
    assert types_of(events)[2:] == [
        "output_item.added",
        "content_part.added",
        "reasoning_text.delta",
        "reasoning_text.delta",
        "reasoning_text.done",
        "content_part.done",
        "output_item.done",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    final = Response.model_validate(stream.response)
    assert final.output[0].type == "reasoning"
    assert final.output[0].content is not None
    assert final.output[0].content[0].text == "Let me think."
    assert final.output_text == "42"


def test_tool_calls_by_index_with_arguments_over_many_chunks() -> None:
    """Text, then two tool calls: the text item is done when the first call starts, each call
    streams its argument deltas and is done when the next begins; status completed."""
    events, stream = run_stream(
        [
            chunk({"role": "assistant", "content": "Checking."}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "wait_agent", "arguments": "{}"},
                        }
                    ]
                }
            ),
            chunk({}, "tool_calls"),
            usage_chunk(),
        ],
        TOOLED,
    )
    assert types_of(events)[2:] == [
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "completed",
    ]
    final = Response.model_validate(stream.response)
    message, weather, wait = final.output
    assert message.type == "message"
    assert weather.type == "function_call" and wait.type == "function_call"
    assert (weather.call_id, weather.name, weather.arguments) == (
        "call_a",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert (wait.name, wait.namespace, wait.arguments) == ("wait_agent", "multi_agent_v1", "{}")
    assert final.status == "completed"
    assert [e["output_index"] for e in events if "output_index" in e][-1] == 2


def test_whole_tool_calls_in_one_chunk() -> None:
    """Groq sends whole calls, several in one delta: each becomes its own function_call."""
    _, stream = run_stream(
        [
            chunk(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"A"}'},
                        },
                        {
                            "index": 1,
                            "id": "b",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"B"}'},
                        },
                    ],
                },
                "tool_calls",
            )
        ],
        TOOLED,
    )
    final = Response.model_validate(stream.response)
    assert [(o.type, getattr(o, "arguments", None)) for o in final.output] == [
        ("function_call", '{"city":"A"}'),
        ("function_call", '{"city":"B"}'),
    ]


def test_custom_tool_call_streams_its_decoded_input() -> None:
    """A call of a custom tool is a custom_tool_call whose input is the decoded argument."""
    events, stream = run_stream(
        [
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "p",
                            "type": "function",
                            "function": {"name": "apply_patch", "arguments": '{"in'},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'put":"*** Begin"}'}}]}),
            chunk({}, "tool_calls"),
        ],
        TOOLED,
    )
    assert "custom_tool_call_input.done" in types_of(events)
    final = Response.model_validate(stream.response)
    [call] = final.output
    assert call.type == "custom_tool_call"
    assert (call.call_id, call.name, call.input) == ("p", "apply_patch", "*** Begin")


FINISH_CASES: list[tuple[str | None, str, str, str | None]] = [
    ("stop", "completed", "response.completed", None),
    ("tool_calls", "completed", "response.completed", None),
    ("length", "incomplete", "response.incomplete", "max_output_tokens"),
    ("content_filter", "incomplete", "response.incomplete", "content_filter"),
]


@pytest.mark.parametrize(("finish", "status", "last", "reason"), FINISH_CASES)
def test_finish_reason_decides_the_closing_event(
    finish: str | None, status: str, last: str, reason: str | None
) -> None:
    """Exactly one closing event, completed or incomplete by the chat finish_reason."""
    events, stream = run_stream([chunk({"content": "partial"}), chunk({}, finish)])
    closing = [e["type"] for e in events if e["type"] in CLOSING]
    assert closing == [last]
    final = Response.model_validate(stream.response)
    assert final.status == status
    assert (final.incomplete_details.reason if final.incomplete_details else None) == reason


CLOSING = {"response.completed", "response.incomplete", "response.failed"}


@pytest.mark.parametrize(
    ("code", "sent"),
    [
        ("server_error", "server_error"),
        ("rate_limit_exceeded", "rate_limit_exceeded"),
        ("timeout", "server_error"),
        (None, "server_error"),
    ],
)
def test_failure_after_commit_is_response_failed_never_completed(
    code: str | None, sent: str
) -> None:
    """fail() closes nothing as completed: the open item stays incomplete and the stream ends
    with response.failed carrying the error (codes the SDK does not know become server_error)."""
    events, stream = run_stream(
        [chunk({"content": "half an ans"})], fail=("the upstream stream broke", code or "")
    )
    assert [e["type"] for e in events if e["type"] in CLOSING] == ["response.failed"]
    assert "response.output_item.done" not in [e["type"] for e in events]
    final = Response.model_validate(stream.response)
    assert final.status == "failed"
    assert final.error is not None
    assert (final.error.code, final.error.message) == (sent, "the upstream stream broke")
    assert final.output[0].status == "incomplete"
    assert final.output_text == "half an ans"


def test_nothing_after_the_end() -> None:
    """Once finished (or failed), feed/finish/fail produce no more bytes."""
    stream = ResponsesStream(chat_request({"input": "x"}), response_id="r", created_at=1)
    stream.start(SERVED)
    stream.feed(chunk({"content": "x"}, "stop"))
    assert stream.finish()
    assert stream.feed(chunk({"content": "more"})) == b""
    assert stream.finish() == b""
    assert stream.fail("late", "server_error") == b""
    assert stream.response["status"] == "completed"


def test_usage_only_chunk_without_choices_sets_usage() -> None:
    """A ``choices: []`` chunk carries the usage into response.completed and emits nothing."""
    stream = ResponsesStream(chat_request({"input": "x"}), response_id="r", created_at=1)
    stream.start(SERVED)
    stream.feed(chunk({"content": "x"}, "stop"))
    assert stream.feed(usage_chunk(3, 4)) == b""
    completed = list(parse_sse(stream.finish()))[-1]
    assert completed["response"]["usage"]["total_tokens"] == 7
    assert completed["response"]["usage"]["input_tokens"] == 3


def test_stream_bytes_are_wire_dumps_per_event() -> None:
    """Each event is framed ``event: <type>\\ndata: <json>\\n\\n`` with compact JSON."""
    stream = ResponsesStream(chat_request({"input": "x"}), response_id="r", created_at=1)
    stream.start(SERVED)
    data = stream.feed(chunk({"content": "hé"}))
    blocks = data.split(b"\n\n")[:-1]
    last = blocks[-1].split(b"\n", 1)[1].removeprefix(b"data: ")
    assert last == wire.dumps(json.loads(last))


# ------------------------------------------------------- the openai SDK over real HTTP

SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "text": [
        chunk({"role": "assistant", "content": "<think>hm</think>"}),
        chunk({"content": "Hello there"}),
        chunk({}, "stop"),
        usage_chunk(),
    ],
    "tool": [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_w",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"ci'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
        chunk({}, "tool_calls"),
    ],
    "cut": [chunk({"content": "half"})],
}


@pytest.fixture
async def responses_server() -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 that answers ``POST /v1/responses`` with the
    translators' bytes for a scripted list of chat chunks (the input text picks the script;
    ``cut`` ends with ``fail``), so the SDK's own HTTP and SSE parsing read them."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request_ = chat_request(await request.json())
        script = SCENARIOS[request_.body["messages"][-1]["content"]]
        if not request_.stream:
            message: dict[str, Any] = {"role": "assistant", "content": "Hello there"}
            chat = completion(message, usage={"prompt_tokens": 3, "completion_tokens": 2})
            body = response_from_chat(
                chat, response_id="resp_h", created_at=1, model=SERVED, request=request_
            )
            return web.json_response(body, headers=request_.headers())
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        stream = ResponsesStream(request_, response_id="resp_h", created_at=1)
        await out.write(stream.start(SERVED))
        for c in script:
            await out.write(stream.feed(c))
        cut = script is SCENARIOS["cut"]
        await out.write(stream.fail("upstream broke", "server_error") if cut else stream.finish())
        return out

    app = web.Application()
    app.router.add_post("/v1/responses", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


async def test_sdk_responses_create_parses_the_translated_answer(responses_server: str) -> None:
    """client.responses.create (plain and stream=True) reads the translator's output."""
    async with AsyncOpenAI(base_url=responses_server, api_key="k", max_retries=0) as client:
        response = await client.responses.create(model="coderclaw", input="text")
        assert response.output_text == "Hello there"
        assert response.usage is not None and response.usage.total_tokens == 5
        events = await client.responses.create(model="coderclaw", input="text", stream=True)
        kinds = [event.type async for event in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.reasoning_text.delta" in kinds


async def test_sdk_responses_stream_helper_accumulates_a_tool_call(
    responses_server: str,
) -> None:
    """client.responses.stream's final response has the function call, arguments whole."""
    async with (
        AsyncOpenAI(base_url=responses_server, api_key="k", max_retries=0) as client,
        client.responses.stream(model="coderclaw", input="tool", tools=[WEATHER]) as stream,
    ):
        final = await stream.get_final_response()
    [call] = final.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == (
        "call_w",
        "get_weather",
        '{"city":"Paris"}',
    )


async def test_sdk_sees_response_failed_and_no_final_response(responses_server: str) -> None:
    """A stream that fails after commit gives the SDK response.failed, never completed: its
    stream helper has no final response to hand out."""
    async with (
        AsyncOpenAI(base_url=responses_server, api_key="k", max_retries=0) as client,
        client.responses.stream(model="coderclaw", input="cut") as stream,
    ):
        kinds = [event.type async for event in stream]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            await stream.get_final_response()
    assert kinds[-1] == "response.failed"
    assert "response.completed" not in kinds


def test_malformed_chunks_are_skipped_not_fatal() -> None:
    """Chunks with the wrong shapes (a string choice, a list delta, odd tool-call fields) emit
    nothing and the stream still completes with what was well formed."""
    _, stream = run_stream(
        [
            {"choices": ["x"]},
            {"choices": [{"delta": ["x"]}]},
            {"choices": [{"delta": {"content": 5, "reasoning": {"a": 1}}}]},
            chunk({"content": "ok"}),
            chunk({"tool_calls": [{"index": [0], "id": 7, "function": "f"}]}),
            chunk({}, "stop"),
        ]
    )
    final = Response.model_validate(stream.response)
    assert final.output_text == "ok"
    assert final.status == "completed"
