"""count_tokens: input tokens of a Messages request, estimated without a tokenizer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway import wire

MESSAGE_OVERHEAD = 4
IMAGE_TOKENS = 1600
TOOL_OVERHEAD = 10
# Pieces a BPE tokenizer rarely splits further: a word with its leading space, a digit run, a
# whitespace run, a punctuation run; any non-ASCII character is counted as one token.
_PIECES = re.compile(r" ?[A-Za-z]+|[0-9]+|\s+|[^\sA-Za-z0-9\x80-\U0010ffff]+|[\x80-\U0010ffff]")


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """Input tokens of a Messages request, estimated from its text without a tokenizer.

    The text of the system prompt, every message block (tool inputs as JSON, tool results)
    and the tool definitions (as JSON) is cut into pieces (see ``text_tokens``); each message
    adds 4, each tool 10, each image 1600 (Anthropic's figure for a full-size image). The
    shape is not checked here.
    """
    counter = _Counter()
    counter.add(body.get("system"))
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        counter.tokens += MESSAGE_OVERHEAD
        counter.add(message.get("content") if isinstance(message, Mapping) else message)
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        counter.tokens += TOOL_OVERHEAD
        counter.add_json(tool)
    return counter.tokens


def text_tokens(text: str) -> int:
    """Tokens of ``text``: a word per 8 letters, a number per 3 digits, a punctuation run per
    3 characters, a whitespace run per 4 (a single space is free), one per non-ASCII character.
    """
    count = 0
    for piece in _PIECES.findall(text):
        first = piece[1] if piece[0] == " " and len(piece) > 1 else piece[0]
        if first.isspace():
            count += 0 if len(piece) == 1 else -(-len(piece) // 4)
        elif "a" <= first.lower() <= "z":
            count += -(-len(piece) // 8)
        elif first < "\x80":  # digits and punctuation
            count += -(-len(piece) // 3)
        else:
            count += 1
    return count


class _Counter:
    __slots__ = ("tokens",)

    def __init__(self) -> None:
        self.tokens = 0

    def add(self, value: Any) -> None:
        if isinstance(value, str):
            self.tokens += text_tokens(value)
        elif isinstance(value, list):
            for item in value:
                self.add(item)
        elif isinstance(value, Mapping):
            kind = value.get("type")
            if kind == "image":
                self.tokens += IMAGE_TOKENS
            elif kind in ("text", "thinking"):
                self.add(value.get(kind))
            elif kind == "tool_use":
                self.add(value.get("name"))
                self.add_json(value.get("input"))
            elif kind == "tool_result":
                self.add(value.get("content"))
            elif kind == "document":
                source = value.get("source")
                if isinstance(source, Mapping):
                    self.add(source.get("data"))
            else:
                self.add_json(value)

    def add_json(self, value: Any) -> None:
        if value is not None:
            self.tokens += text_tokens(wire.dumps(value).decode())
