"""The pure pieces of mid-stream rescue (SPEC §9): which streams, which requests, which
refusals, and how a restarted answer is checked against the text already sent."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.refs import parse_ref
from gateway.rescue import (
    ContinuationCheck,
    Mismatch,
    PrefillMemory,
    PrefixCheck,
    add_sent,
    can_rescue,
    continuation_request,
    is_prefill_rejection,
    rescue_request,
    stream_check,
)

A = parse_ref("huggingface/org/model-a")
B = parse_ref("huggingface/org/model-b")

# -- the sent text, kept in few pieces --------------------------------------------------------

SENT_CASES = [
    # (pieces as they come, the pieces kept)
    (["Hel"], ["Hel"]),
    (["Hel", "lo"], ["Hello"]),  # 3 <= 2*2: merged
    (["Hello, wor", "ld"], ["Hello, wor", "ld"]),  # 10 > 2*2: kept apart
    (["a"] * 30, ["a" * 21, "a" * 8, "a"]),
    (["tok "] * 30, ["tok " * 21, "tok " * 8, "tok "]),
    (["long piece of text", "x", "y", "z"], ["long piece of text", "xyz"]),
]


@pytest.mark.parametrize(("pieces", "kept"), SENT_CASES)
def test_add_sent_keeps_the_text_in_few_pieces(pieces: list[str], kept: list[str]) -> None:
    """The sent text is the pieces joined, whatever their sizes, in at most ~log2(n) pieces
    (a 30-chunk stream keeps 3 strings, not 30)."""
    sent: list[str] = []
    for piece in pieces:
        add_sent(sent, piece)
    assert sent == kept
    assert "".join(sent) == "".join(pieces)


def test_add_sent_bounds_the_pieces_of_a_long_stream() -> None:
    """10,000 chunks of uneven sizes: the text is whole and at most 2*log2(n) pieces."""
    sent: list[str] = []
    pieces = [str(i % 97) * (1 + i % 5) for i in range(10_000)]
    for piece in pieces:
        add_sent(sent, piece)
    text = "".join(pieces)
    assert "".join(sent) == text
    assert len(sent) <= 2 * len(text).bit_length()


# -- prefill refusals ------------------------------------------------------------------------

PREFILL_REJECTIONS = [
    # Anthropic, Claude 4.6 and later (also through Copilot, Vertex, OpenRouter…)
    "This model does not support assistant message prefill. The conversation must end with a "
    "user message.",
    # ... wrapped by a proxy into its own error
    '{"type":"error","error":{"type":"invalid_request_error","message":"This model does not '
    'support assistant message prefill. The conversation must end with a user message."}}',
    # Anthropic with tools
    "Your API request included an `assistant` message in the final position, which would "
    "pre-fill the `assistant` response. When using tools, pre-filling the `assistant` response "
    "is not supported.",
    # Anthropic, a prefill that ends in whitespace
    "messages: final assistant content cannot end with trailing whitespace",
    # Mistral API / mistral_common, also vLLM serving a Mistral tokenizer
    "Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant",
    "Expected the last role to be User or Tool (or Assistant with prefix True).",
    # DeepSeek
    "The last message of deepseek-reasoner must be a user message, or an assistant message "
    "with prefix mode on (refer to https://api-docs.deepseek.com/guides/chat_prefix_completion).",
    # llama.cpp server, thinking templates
    "Assistant response prefill is incompatible with enable_thinking.",
    # vLLM
    "Cannot set `add_generation_prompt` to True when the last message is from the assistant. "
    "Consider using `continue_final_message` instead.",
    # Bedrock-style and generic servers
    "A conversation must end with a user message. Try again with a conversation that ends with "
    "a user message.",
    "Last message must be from user for first chunk",
    "The last message must be a user message",
    "last message role must be user",
]


@pytest.mark.parametrize("message", PREFILL_REJECTIONS)
@pytest.mark.parametrize("status", [400, 422])
def test_prefill_rejections_are_recognised(status: int, message: str) -> None:
    assert is_prefill_rejection(status, message, "invalid_request_error")
    assert is_prefill_rejection(status, message.upper(), None)  # case does not matter


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        # other 400s the router returns
        (
            400,
            "The requested model 'org/x' is not supported by any provider you have enabled.",
            "model_not_supported",
        ),
        (400, "This model's maximum context length is 8192 tokens.", "context_length_exceeded"),
        (400, "Conversation roles must alternate user/assistant/user/assistant/...", None),
        (400, "Unexpected role 'user' after role 'tool'", None),
        (400, "messages: at least one message is required", None),
        (400, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096", None),
        (400, "", None),
        (400, None, None),
        # the wording, but not a refusal of the request
        (500, "This model does not support assistant message prefill.", None),
        (503, "Expected last role User or Tool", None),
        (429, "The last message must be a user message", None),
        (None, "The last message must be a user message", None),
        # the wording inside an error about something else
        (400, "The last message must be a user message", "context_length_exceeded"),
    ],
)
def test_other_errors_are_not_prefill_rejections(
    status: int | None, message: str | None, code: str | None
) -> None:
    assert not is_prefill_rejection(status, message, code)


# -- which streams -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "saw_tool_calls", "ok"),
    [
        ({"stream": True, "messages": []}, False, True),
        ({"stream": True, "n": 1, "logprobs": False}, False, True),
        ({"stream": True, "tools": [{"type": "function"}]}, False, True),  # tools, none called
        ({"stream": True}, True, False),  # a tool call was streamed
        ({"stream": True, "n": 2}, False, False),
        ({"stream": True, "logprobs": True}, False, False),
        ({"stream": True, "top_logprobs": 3}, False, False),
        ({"stream": True, "top_logprobs": 0}, False, True),
        ({"stream": False}, False, False),  # nothing was committed: plain failover
        ({}, False, False),
        ({"stream": True, "n": True}, False, True),  # not a count (and refused upstream)
    ],
)
def test_can_rescue(body: dict[str, Any], saw_tool_calls: bool, ok: bool) -> None:
    assert can_rescue(body, saw_tool_calls) is ok


# -- the continuation request --------------------------------------------------------------


def test_continuation_request_appends_the_sent_text_as_a_prefill() -> None:
    body: dict[str, Any] = {
        "model": "org/model-a",
        "stream": True,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Count to ten."},
        ],
    }
    original = {**body, "messages": list(body["messages"])}
    got = continuation_request(body, "one two three")
    assert got["messages"] == [
        *original["messages"],
        {"role": "assistant", "content": "one two three"},
    ]
    assert {k: v for k, v in got.items() if k != "messages"} == {
        k: v for k, v in original.items() if k != "messages"
    }
    assert body == original  # the original request is not changed


def test_continuation_keeps_the_sent_text_exactly() -> None:
    """No trimming: the model continues the final message as it stands."""
    got = continuation_request({"messages": []}, "  ends with a space ")
    assert got["messages"][-1]["content"] == "  ends with a space "


@pytest.mark.parametrize(
    ("configured", "learnt", "ref", "kind"),
    [
        ([], [], A, "continue"),
        ([A], [], A, "restart"),  # prefill: false in the config
        ([], [A], A, "restart"),  # refused at run time
        ([B], [], A, "continue"),
    ],
)
def test_rescue_request_picks_continuation_or_restart(
    configured: list[Any], learnt: list[Any], ref: Any, kind: str
) -> None:
    memory = PrefillMemory(configured)
    for r in learnt:
        memory.learn(r)
    body = {"stream": True, "messages": [{"role": "user", "content": "hi"}]}
    got_kind, request = rescue_request(body, "Hello", ref, memory)
    assert got_kind == kind
    expected = continuation_request(body, "Hello") if kind == "continue" else body
    assert request == expected


def test_prefill_memory_learns_for_the_lifetime_and_is_bounded() -> None:
    memory = PrefillMemory([A], max_learnt=2)
    refs = [parse_ref(f"huggingface/org/x-{i}") for i in range(3)]
    for ref in refs:
        memory.learn(ref)
    assert memory.learnt == refs[1:]
    assert not memory.rejects(refs[0])  # the oldest learnt one forgotten
    assert memory.rejects(A)  # configured ones never are
    memory.configure([])
    assert not memory.rejects(A)
    assert memory.rejects(refs[2])  # a reload keeps what was learnt


# -- the prefix-checked restart ------------------------------------------------------------

SENT = "The quick brown fox"


@pytest.mark.parametrize(
    ("sent", "chunks", "outputs"),
    [
        # exact, in one chunk, with more beyond it
        (SENT, [SENT + " jumps"], [" jumps"]),
        # split chunks: held back until covered, then only the part beyond
        (SENT, ["The qu", "ick bro", "wn fox jum", "ps over"], [None, None, " jum", "ps over"]),
        # covered exactly at a chunk boundary: nothing yet, then the rest verbatim
        (SENT, ["The quick ", "brown fox", " jumps"], [None, None, " jumps"]),
        # one character at a time
        ("abc", ["a", "b", "c", "d"], [None, None, None, "d"]),
        # a cut in the middle of a word
        ("Hel", ["Hello"], ["lo"]),
        # leading whitespace at the very start is ignored on both sides
        (SENT, ["\n\n", SENT, "!"], [None, None, "!"]),
        ("\n" + SENT, [SENT + "!"], ["!"]),
        ("  " + SENT, ["\n" + SENT + "!"], ["!"]),
        # ... only at the start: later whitespace counts
        ("a b", ["  a", " b c"], [None, " c"]),
        # nothing sent (the first chunk had only the role): everything passes, as it is
        ("", ["\n", "Hi"], ["\n", "Hi"]),
        # only whitespace sent: the new answer's leading whitespace is dropped
        ("\n", ["\n", "Hi"], [None, "Hi"]),
        # empty chunks are held
        (SENT, ["", SENT, "", " x"], [None, None, None, " x"]),
        # unicode
        ("Grüße, 世界", ["Grüße, 世", "界。"], [None, "。"]),
    ],
)
def test_prefix_check_holds_back_until_covered_then_streams_the_rest(
    sent: str, chunks: list[str], outputs: list[str | None]
) -> None:
    check = PrefixCheck(sent)
    assert [check.feed(c) for c in chunks] == outputs
    assert check.covered
    assert check.finish() is None


@pytest.mark.parametrize(
    ("sent", "chunks", "mismatch"),
    [
        (SENT, ["The quick red fox"], Mismatch(10, "brown fox", "red fox")),
        (SENT, ["The qu", "ack"], Mismatch(6, "ick brown fox", "ack")),
        # whitespace inside the text is compared exactly
        (SENT, ["The quick  brown fox"], Mismatch(10, "brown fox", " brown fox")),
        ("a\nb", ["a b"], Mismatch(1, "\nb", " b")),
        # a different case is a different text
        (SENT, ["the"], Mismatch(0, "The quick brown fox", "the")),
        # offsets count the sent text's leading whitespace
        ("\nab", ["ax"], Mismatch(2, "b", "x")),
    ],
)
def test_prefix_check_reports_a_mismatch_and_keeps_it(
    sent: str, chunks: list[str], mismatch: Mismatch
) -> None:
    check = PrefixCheck(sent)
    results = [check.feed(c) for c in chunks]
    assert results[-1] == mismatch
    assert all(r is None for r in results[:-1])
    assert check.feed(" more text") == mismatch  # for ever after
    assert check.finish() == mismatch
    assert not check.covered


@pytest.mark.parametrize(
    ("chunks", "mismatch"),
    [
        (["The quick"], Mismatch(9, " brown fox", "")),
        ([], Mismatch(0, "The quick brown fox", "")),
        (["  "], Mismatch(0, "The quick brown fox", "")),
    ],
)
def test_prefix_check_an_answer_shorter_than_the_sent_text(
    chunks: list[str], mismatch: Mismatch
) -> None:
    """The restart finished before reproducing what the client already has: a mismatch."""
    check = PrefixCheck(SENT)
    assert all(check.feed(c) is None for c in chunks)
    assert check.finish() == mismatch


def test_prefix_check_long_text_in_token_sized_chunks() -> None:
    """A 60-word answer cut after 40 words, restarted identically in 3-character chunks: the
    client gets exactly the remaining 20 words, once."""
    words = [f"word{i}" for i in range(60)]
    full = " ".join(words)
    sent = " ".join(words[:40])
    check = PrefixCheck(sent)
    out = [check.feed(full[i : i + 3]) for i in range(0, len(full), 3)]
    tail = "".join(o for o in out if isinstance(o, str))
    assert sent + tail == full
    assert tail == " " + " ".join(words[40:])


# -- the continuation guard ----------------------------------------------------------------

LONG = "The quick brown fox jumps over the lazy dog"  # longer than the 24 echo characters


@pytest.mark.parametrize(
    ("sent", "chunks", "outputs", "restarted"),
    [
        # a real continuation passes verbatim, leading space and all, without delay
        (LONG, [" and", " runs"], [" and", " runs"], False),
        (LONG, ["s."], ["s."], False),  # a cut inside a word
        # held only while it still looks like the start of the sent text
        (LONG, ["The", " quiet", " one"], [None, "The quiet", " one"], False),
        (LONG, ["\n", "\n- item"], [None, "\n\n- item"], False),
        # the model answered anew instead of continuing: the repeat is dropped
        (
            LONG,
            ["The quick brown ", "fox jumps over the lazy dog", " again."],
            [None, None, " again."],
            True,
        ),
        (LONG, ["\n" + LONG + "!"], ["!"], True),
        # a sent text under 8 characters is too short to tell: always a continuation
        ("Hello", ["Hello again"], ["Hello again"], False),
        ("", ["Hi"], ["Hi"], False),
    ],
)
def test_continuation_check(
    sent: str, chunks: list[str], outputs: list[str | None], restarted: bool
) -> None:
    check = ContinuationCheck(sent)
    assert [check.feed(c) for c in chunks] == outputs
    assert check.restarted is restarted
    assert check.finish() is None


def test_continuation_check_a_restart_that_diverges_is_a_mismatch() -> None:
    check = ContinuationCheck(LONG)
    assert check.feed("The quick brown fox jumps") is None  # 24 characters agree: a restart
    assert check.feed(" under the fence") == Mismatch(26, "over the lazy dog", "under the fence")
    assert check.finish() == Mismatch(26, "over the lazy dog", "under the fence")


@pytest.mark.parametrize(
    ("chunks", "rest"),
    [(["The qu"], "The qu"), ([" "], " "), ([], None)],
)
def test_continuation_check_finish_releases_what_is_held(
    chunks: list[str], rest: str | None
) -> None:
    """A continuation that ended while it still looked like a restart is a continuation."""
    check = ContinuationCheck(LONG)
    assert all(check.feed(c) is None for c in chunks)
    assert check.finish() == rest


@pytest.mark.parametrize(
    ("kind", "checker"), [("continue", ContinuationCheck), ("restart", PrefixCheck)]
)
def test_stream_check_per_rescue_kind(kind: Any, checker: type) -> None:
    assert type(stream_check(kind, "text")) is checker
