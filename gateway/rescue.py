"""Mid-stream rescue (SPEC §9), the pure pieces: may a broken stream be rescued, the request
that continues it, the recognition of a model that refuses an assistant prefill, and the check
of a restarted answer against the text the client already has.

Stitching is strict, and says so:
- **continuation** (the sent text as a final assistant message, ``ContinuationCheck``): the
  new model's text is appended verbatim. A model that supports prefill continues the final
  message token-exactly, leading space included (``"The quick"`` → ``" brown fox"``); inserting
  or dropping spaces would break the words that a cut splits (``"Hel"`` → ``"lo"``). One guard:
  a server that takes the trailing assistant message as a finished turn and answers anew
  (vLLM-style servers without ``continue_final_message`` do) would repeat the text; an answer
  that opens like the sent text (its first ``ECHO_MIN_CHARS`` characters agree) is taken for
  such a restart and checked like one, so one that then says something else is refused.
- **prefix-checked restart** (``PrefixCheck``): leading whitespace at the very start of the
  answer is ignored on both sides (a restart often differs only in an opening newline, and the
  client already shows the first one); after it the new answer must reproduce the sent text
  character for character, whitespace included, and only the text beyond it is streamed on.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.refs import ModelRef

RescueMode = Literal["continue", "off"]
RescueKind = Literal["continue", "restart"]

DEFAULT_MAX_LEARNT = 256
# A continuation that opens with this many characters of the sent text is a restart, not a
# continuation; a sent text shorter than ECHO_MIN_CHARS is too short to tell.
ECHO_CHARS = 24
ECHO_MIN_CHARS = 8

# The wordings of providers and servers that refuse a trailing assistant message, matched
# case-insensitively anywhere in the error message (some proxies wrap the provider's JSON).
PREFILL_REJECTIONS = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        # Anthropic (Claude 4.6+, and every proxy in front of it)
        r"does not support assistant message prefill",
        # Anthropic with tools
        r"pre-?fill(ing)? the .?assistant.? response is not supported",
        # Anthropic, a prefill ending in whitespace: that prefill cannot be sent either
        r"final assistant content cannot end with trailing whitespace",
        # llama.cpp server with a thinking template
        r"assistant response prefill is incompatible",
        # Mistral API and mistral_common (also vLLM with a Mistral tokenizer)
        r"expected (the )?last role (to be )?user or tool",
        # DeepSeek
        r"last message of \S+ must be a user message",
        # vLLM
        r"add_generation_prompt.? to true when the last message is from the assistant",
        # Anthropic's second sentence, Bedrock, and generic servers
        r"(conversation|messages?) must end with a user message",
        r"last message (role )?(must|should) (be|come) (from |a |an )?(the )?user",
    )
)
_PREFILL_STATUSES = frozenset({400, 422})
# A 400 with one of these codes is about something else, whatever its text says.
_OTHER_CODES = frozenset({"context_length_exceeded", "model_not_supported", "model_not_found"})


def is_prefill_rejection(status: int | None, message: str | None, code: str | None) -> bool:
    """Does this error say the model refuses a final assistant message (a prefill)?"""
    if status not in _PREFILL_STATUSES or not message or code in _OTHER_CODES:
        return False
    return any(p.search(message) for p in PREFILL_REJECTIONS)


def can_rescue(body: Mapping[str, Any], saw_tool_calls: bool) -> bool:
    """May a committed stream of this (chat completions) request be rescued? Only a stream
    that carried text alone: not once a tool call was streamed, not with ``n`` > 1 (several
    answers interleaved), not with ``logprobs`` / ``top_logprobs`` (a new model's would not
    continue the old ones)."""
    if saw_tool_calls or body.get("stream") is not True:
        return False
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return False
    return not (body.get("logprobs") or body.get("top_logprobs"))


def add_sent(sent: list[str], text: str) -> None:
    """Add ``text`` to the sent text kept as pieces (``"".join(sent)`` is the text): the last
    pieces are merged while one is not more than twice the size of the next, so a stream of
    n characters keeps at most ~log2(n) pieces (a chunk's few characters would cost a 50-byte
    string each for the stream's life) and each character is copied ~log2(n) times."""
    sent.append(text)
    while len(sent) > 1 and len(sent[-2]) <= 2 * len(sent[-1]):
        last = sent.pop()
        sent[-1] += last


def continuation_request(body: Mapping[str, Any], sent_text: str) -> dict[str, Any]:
    """The original request with the text already sent as a final assistant message (prefill).
    ``body`` is not changed. ``max_tokens`` is left as it was (the gateway does not count the
    sent tokens), so the whole answer may be longer by at most the sent part."""
    messages = list(body.get("messages") or ())
    return {**body, "messages": [*messages, {"role": "assistant", "content": sent_text}]}


class PrefillMemory:
    """The models that refuse a prefill: the configured ``prefill: false`` ones, and those
    learnt at run time (for the gateway's lifetime, at most ``max_learnt`` of them, the oldest
    forgotten first). ``prefill: true`` and no setting are the same: tried until refused."""

    def __init__(
        self, configured: Iterable[ModelRef] = (), *, max_learnt: int = DEFAULT_MAX_LEARNT
    ) -> None:
        self._configured = frozenset(configured)
        self._learnt: OrderedDict[ModelRef, None] = OrderedDict()
        self.max_learnt = max_learnt

    def configure(self, configured: Iterable[ModelRef]) -> None:
        """Apply a reloaded config; what was learnt is kept."""
        self._configured = frozenset(configured)

    def learn(self, ref: ModelRef) -> None:
        self._learnt[ref] = None
        self._learnt.move_to_end(ref)
        while len(self._learnt) > self.max_learnt:
            self._learnt.popitem(last=False)

    def rejects(self, ref: ModelRef) -> bool:
        return ref in self._configured or ref in self._learnt

    @property
    def learnt(self) -> list[ModelRef]:
        return list(self._learnt)


def rescue_request(
    body: Mapping[str, Any], sent_text: str, ref: ModelRef, memory: PrefillMemory
) -> tuple[RescueKind, dict[str, Any]]:
    """How to ask ``ref`` to rescue a stream: a continuation unless ``ref`` refuses prefill,
    else the same request again (to be checked with ``PrefixCheck``)."""
    if memory.rejects(ref):
        return "restart", dict(body)
    return "continue", continuation_request(body, sent_text)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A restarted answer that does not reproduce the sent text: where (an index into the sent
    text), and a few characters of each side from there, for the log."""

    offset: int
    expected: str
    got: str


_SNIPPET = 20


class PrefixCheck:
    """Checks a restarted answer against ``sent_text``, chunk by chunk.

    ``feed(text)`` returns None while the answer is held back (it does not yet cover the sent
    text, or nothing beyond it has come), the text beyond the sent text once it is covered, or a
    ``Mismatch`` (for ever after). ``finish()`` at the end of the answer returns a ``Mismatch``
    when the answer ended before covering the sent text.
    """

    def __init__(self, sent_text: str) -> None:
        self._target = sent_text.lstrip()
        self._lead = len(sent_text) - len(self._target)
        self._skip_space = bool(sent_text)
        self._matched = 0
        self._covered = not sent_text
        self._mismatch: Mismatch | None = None

    @property
    def covered(self) -> bool:
        return self._covered

    def feed(self, text: str) -> str | Mismatch | None:
        if self._mismatch is not None:
            return self._mismatch
        if self._covered:
            return text or None
        if self._skip_space:
            text = text.lstrip()
            if not text:
                return None
            self._skip_space = False
        need = self._target[self._matched :]
        n = min(len(need), len(text))
        if text[:n] != need[:n]:
            i = next(i for i in range(n) if text[i] != need[i])
            at = self._matched + i
            self._mismatch = Mismatch(
                self._lead + at, self._target[at : at + _SNIPPET], text[i : i + _SNIPPET]
            )
            return self._mismatch
        self._matched += n
        if self._matched < len(self._target):
            return None
        self._covered = True
        return text[n:] or None

    def finish(self) -> Mismatch | None:
        if self._mismatch is not None or self._covered:
            return self._mismatch
        at = self._matched
        self._mismatch = Mismatch(self._lead + at, self._target[at : at + _SNIPPET], "")
        return self._mismatch


class ContinuationCheck:
    """Passes a continuation on verbatim, unless it turns out to be the answer started over.

    ``feed(text)`` holds text back only while the answer's start (leading whitespace aside)
    still agrees with the first ``ECHO_CHARS`` characters of the sent text; as soon as it
    differs everything held is released and the rest passes through. When it agrees on all of
    them it is a restart, checked from then on by a ``PrefixCheck`` (so its results are the
    same: None, the text beyond the sent one, or a ``Mismatch``). ``finish()`` returns what is
    still held (an answer too short to tell is a continuation) or the restart's ``Mismatch``.
    """

    def __init__(self, sent_text: str) -> None:
        self._sent = sent_text
        core = sent_text.lstrip()
        self._probe = core[:ECHO_CHARS] if len(core) >= ECHO_MIN_CHARS else ""
        self._held = ""
        self._decided = not self._probe
        self._restart: PrefixCheck | None = None

    @property
    def restarted(self) -> bool:
        """Did the model start the answer over (instead of continuing it)?"""
        return self._restart is not None

    def feed(self, text: str) -> str | Mismatch | None:
        if self._restart is not None:
            return self._restart.feed(text)
        if self._decided:
            return text or None
        self._held += text
        start = self._held.lstrip()
        if len(start) < len(self._probe) and self._probe.startswith(start):
            return None
        # An answer that opens like the sent text (its first ECHO_MIN_CHARS characters, or
        # all of a shorter probe) started over, even if it says something else later: a
        # continuation never repeats the answer's opening. The prefix check then decides.
        common = _common_prefix(start, self._probe)
        if common >= min(len(self._probe), ECHO_MIN_CHARS):
            self._restart = PrefixCheck(self._sent)
            return self._restart.feed(self._held)
        self._decided = True
        held, self._held = self._held, ""
        return held or None

    def finish(self) -> str | Mismatch | None:
        if self._restart is not None:
            return self._restart.finish()
        held, self._held = self._held, ""
        self._decided = True
        return held or None


def _common_prefix(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def stream_check(kind: RescueKind, sent_text: str) -> ContinuationCheck | PrefixCheck:
    """The checker for a rescue's new stream: every text delta goes through its ``feed``, and
    its ``finish`` is called when the new stream ends (see the two classes)."""
    return ContinuationCheck(sent_text) if kind == "continue" else PrefixCheck(sent_text)
