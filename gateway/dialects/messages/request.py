"""Messages requests to one upstream chat request: blocks, tools, thinking, model names."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import wire
from gateway.errors import DialectError
from gateway.refs import is_chain_name

DEFAULT_MODEL_MAP: Mapping[str, str] = {"*": "coderclaw"}


# -- model names ----------------------------------------------------------------------------


def map_model(name: str, model_map: Mapping[str, str], is_known: Callable[[str], bool]) -> str:
    """The gateway model name a Messages ``model`` stands for.

    A name the gateway knows (``is_known``: alias, ref; or a chain name) is used as is; any
    other is matched against ``model_map``'s globs in order, case-insensitively, and the first
    match's target wins; with no match the name is returned unchanged (a 404 later).
    """
    if is_chain_name(name) or is_known(name):
        return name
    lowered = name.strip().lower()
    for pattern, target in model_map.items():
        if fnmatch.fnmatchcase(lowered, pattern.strip().lower()):
            return target
    return name


# -- requests -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One Messages request as an upstream chat request.

    ``body`` has no ``model``: the engine sets it per attempt, from ``model`` (the name to
    resolve, after the model map). ``requested_model`` is what the client sent.
    """

    body: dict[str, Any]
    stream: bool
    model: str
    requested_model: str
    thinking: bool
    reasoning_effort: str | None
    stop_sequences: tuple[str, ...]
    dropped_tools: tuple[str, ...]


def chat_request(
    body: Mapping[str, Any],
    model_map: Mapping[str, str],
    is_known: Callable[[str], bool],
) -> ChatRequest:
    """Translate a ``POST /v1/messages`` body; raises ``DialectError`` for a wrong shape.

    Fields the gateway has no use for (``output_config``, ``context_management``,
    ``container``, ``mcp_servers``, ``cache_control`` on blocks, …) are ignored.
    """
    if not isinstance(body, Mapping):
        raise DialectError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise DialectError("`model` is required and must be a string", "model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise DialectError("`max_tokens` is required and must be a positive integer", "max_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise DialectError("`stream` must be true or false", "stream")

    system = _system_text(body.get("system"), "system")
    messages = _messages(body.get("messages"), system)
    out: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens}
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    for key in ("temperature", "top_p", "top_k"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DialectError(f"`{key}` must be a number", key)
        if key != "top_k":
            out[key] = value
    stops = _stop_sequences(body.get("stop_sequences"))
    if stops:
        out["stop"] = list(stops)

    tools, dropped = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"), dropped)
    if choice is not None and tools:  # OpenAI-style servers refuse a tool_choice without tools
        out["tool_choice"] = choice

    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise DialectError("`metadata` must be an object", "metadata")
        user = metadata.get("user_id")
        if isinstance(user, str) and user:
            out["user"] = user
    thinking, effort = _thinking(body.get("thinking"), body.get("output_config"))
    return ChatRequest(
        body=out,
        stream=stream,
        model=map_model(model, model_map, is_known),
        requested_model=model,
        thinking=thinking,
        reasoning_effort=effort,
        stop_sequences=stops,
        dropped_tools=dropped,
    )


def _system_text(value: Any, param: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, block in enumerate(value):
            if not isinstance(block, Mapping) or block.get("type") != "text":
                raise DialectError(f"`{param}[{i}]` must be a text block", param)
            texts.append(_str(block.get("text"), f"{param}[{i}].text"))
        return "\n\n".join(t for t in texts if t)
    raise DialectError(f"`{param}` must be a string or a list of text blocks", param)


def _str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise DialectError(f"`{param}` must be a string", param)
    return value


def _messages(value: Any, system: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise DialectError("`messages` must be a list of messages", "messages")
    systems = [system] if system else []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise DialectError(f"`{where}` must be an object", "messages")
        role = message.get("role")
        content = message.get("content")
        if role == "system":
            text = _system_text(content, f"{where}.content")
            if text:
                systems.append(text)
        elif role == "user":
            out += _user_turn(content, where)
        elif role == "assistant":
            out.append(_assistant_turn(content, where))
        else:
            raise DialectError(
                f'`{where}.role` must be "user" or "assistant", not {role!r}', "messages"
            )
    if systems:
        out.insert(0, {"role": "system", "content": "\n\n".join(systems)})
    return out


def _blocks(content: Any, where: str) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise DialectError(f"`{where}.content` must be a string or a list of blocks", "messages")
    for j, block in enumerate(content):
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            raise DialectError(f"`{where}.content[{j}]` must be a block with a type", "messages")
    return content


def _user_turn(content: Any, where: str) -> list[dict[str, Any]]:
    """Tool results first (they must follow the assistant turn), then one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content, where)):
        at = f"{where}.content[{j}]"
        if block["type"] == "tool_result":
            call_id = _str(block.get("tool_use_id"), f"{at}.tool_use_id")
            text, images = _tool_result_content(block.get("content"), at)
            if block.get("is_error") is True:
                text = f"Error: {text}" if text else "Error"
            tool_messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            parts += images
        else:
            parts.append(_user_part(block, at))
    out = tool_messages
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _user_part(block: Mapping[str, Any], at: str) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": _str(block.get("text"), f"{at}.text")}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source"), at)}}
    if kind == "document":
        source = block.get("source")
        if isinstance(source, Mapping) and source.get("type") == "text":
            return {"type": "text", "text": _str(source.get("data"), f"{at}.source.data")}
        raise DialectError(
            f"`{at}`: only plain-text documents can be sent to the gateway's models; "
            "send the document's text as a text block",
            "messages",
        )
    raise DialectError(
        f"`{at}`: a {kind!r} block cannot be sent to the gateway's models "
        "(text, image, document with a text source, tool_use, tool_result and thinking can)",
        "messages",
    )


def _image_url(source: Any, at: str) -> str:
    if isinstance(source, Mapping):
        if source.get("type") == "base64":
            media = _str(source.get("media_type"), f"{at}.source.media_type")
            data = _str(source.get("data"), f"{at}.source.data")
            return f"data:{media};base64,{data}"
        if source.get("type") == "url":
            return _str(source.get("url"), f"{at}.source.url")
    raise DialectError(
        f"`{at}.source` must be a base64 or url image source (file ids are not supported)",
        "messages",
    )


def _tool_result_content(content: Any, at: str) -> tuple[str, list[dict[str, Any]]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise DialectError(f"`{at}.content` must be a string or a list of blocks", "messages")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for k, block in enumerate(content):
        part = _user_part(_blocks([block], at)[0], f"{at}.content[{k}]")
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    return "\n\n".join(texts), images


def _assistant_turn(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content, where)):
        at = f"{where}.content[{j}]"
        kind = block["type"]
        if kind == "text":
            texts.append(_str(block.get("text"), f"{at}.text"))
        elif kind == "tool_use":
            arguments = block.get("input", {})
            if not isinstance(arguments, Mapping):
                raise DialectError(f"`{at}.input` must be an object", "messages")
            calls.append(
                {
                    "id": _str(block.get("id"), f"{at}.id"),
                    "type": "function",
                    "function": {
                        "name": _str(block.get("name"), f"{at}.name"),
                        "arguments": wire.dumps(arguments).decode(),
                    },
                }
            )
        elif kind not in ("thinking", "redacted_thinking"):
            raise DialectError(
                f"`{at}`: a {kind!r} block cannot be replayed to the gateway's models", "messages"
            )
    turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        turn["tool_calls"] = calls
    elif turn["content"] is None:
        turn["content"] = ""
    return turn


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise DialectError("`stop_sequences` must be a list of strings", "stop_sequences")
    return tuple(s for s in value if s)


def _tools(value: Any) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    if value is None:
        return [], ()
    if not isinstance(value, list):
        raise DialectError("`tools` must be a list", "tools")
    tools: list[dict[str, Any]] = []
    dropped: list[str] = []
    for i, tool in enumerate(value):
        if not isinstance(tool, Mapping):
            raise DialectError(f"`tools[{i}]` must be an object", "tools")
        name = _str(tool.get("name"), f"tools[{i}].name")
        schema = tool.get("input_schema")
        if schema is None and tool.get("type") not in (None, "custom"):
            dropped.append(name)  # a server tool: Anthropic runs it; no model here can
            continue
        if not isinstance(schema, Mapping):
            raise DialectError(f"`tools[{i}].input_schema` must be a JSON schema object", "tools")
        function: dict[str, Any] = {"name": name, "parameters": dict(schema)}
        description = tool.get("description")
        if isinstance(description, str) and description:
            function["description"] = description
        tools.append({"type": "function", "function": function})
    return tools, tuple(dropped)


def _tool_choice(value: Any, dropped: Sequence[str]) -> str | dict[str, Any] | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(value, Mapping):
        name = _str(value.get("name"), "tool_choice.name")
        if name in dropped:
            raise DialectError(
                f"`tool_choice` forces {name!r}, a server tool the gateway's models cannot run; "
                "offer it as a tool with an input_schema or choose another",
                "tool_choice",
            )
        return {"type": "function", "function": {"name": name}}
    raise DialectError("`tool_choice.type` must be one of auto, any, tool, none", "tool_choice")


_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high", "xhigh": "high"}


def _thinking(value: Any, output_config: Any) -> tuple[bool, str | None]:
    if value is None:
        return False, None
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "disabled":
        return False, None
    if kind == "adaptive" and isinstance(value, Mapping):
        effort = output_config.get("effort") if isinstance(output_config, Mapping) else None
        return True, _EFFORTS.get(effort) if isinstance(effort, str) else None
    if kind == "enabled" and isinstance(value, Mapping):
        budget = value.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise DialectError("`thinking.budget_tokens` must be an integer", "thinking")
        return True, "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    raise DialectError("`thinking.type` must be one of enabled, adaptive, disabled", "thinking")


def clamp_max_tokens(requested: int, limits: Sequence[tuple[int | None, int | None]]) -> int:
    """``max_tokens`` for the upstream, given each chain model's ``(max_output, context_window)``
    from the catalog.

    Anthropic clients send ``max_tokens`` as a ceiling (Claude Code: 128,000), and an open
    model whose limit is lower refuses the whole request (400, ``context_length_exceeded``),
    so every model of the chain would be tried in vain. The ceiling is lowered to the smallest
    known output limit of the chain: ``max_output`` where the catalog has it, else half the
    context window (the other half is left for the prompt); unknown limits lower nothing.
    """
    caps = [
        max_output or (context or 0) // 2 for max_output, context in limits if max_output or context
    ]
    return min([requested, *caps]) if caps else requested
