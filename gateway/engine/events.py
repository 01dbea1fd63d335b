"""What the chain engine tells a dialect: the ``Sink`` protocol and the values it carries.

The engine drives one upstream chat request through the chain and knows nothing of wire
formats; a dialect (OpenAI chat, Responses, Messages) is a ``Sink`` that renders what the
engine tells it. For a stream, in this order:

    commit(served, provider, headers) -> web.StreamResponse
        the first upstream chunk has arrived: prepare the client's stream response with these
        headers (``x-request-id``, ``x-coderclaw-model``, ``x-coderclaw-attempts``,
        ``x-inference-provider``), write any preamble, and return it. Before this call a
        failure is the engine's to fail over, invisibly; after it, the model is chosen.
    chunks(chunks)      zero or more times: the parsed upstream chat chunks of one read, in
        order, each's ``model`` already the served ref. May raise ``ClientGone``.
    then exactly one of
    finish()            a ``finish_reason`` arrived and the body ended: the clean ending
        (``data: [DONE]``, ``response.completed``, ``message_stop``). May raise ``ClientGone``.
    fail(error)         a failure after commit (drop, stall, cut, upstream error event,
        shutdown): the dialect's honest ending, never a clean one. The engine bounds its time.

Without a stream, or when no model served, one call that returns the response to send:

    answer(served, provider, body, headers) -> web.StreamResponse
        a non-stream success: ``body`` is the upstream chat completion, ``model`` rewritten.
    error(failure, headers) -> web.StreamResponse
        no model served: the chain failed, the request was refused as is, the account was
        refused, or the time budget ran out. ``failure`` says which and carries what every
        dialect maps into its own error shape. ``headers`` already hold ``x-request-id``,
        ``x-coderclaw-attempts`` and, for a 429, ``Retry-After``.

Every message a sink receives has had the known secrets masked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.refs import ModelRef

__all__ = [
    "ChainFailure",
    "ClientGone",
    "Clock",
    "FailureKind",
    "Sink",
    "StreamError",
    "SystemClock",
]


class ClientGone(Exception):
    """The client closed its connection while a sink was writing to it."""


class FailureKind(enum.Enum):
    """Why no model served."""

    CLIENT_ERROR = "client_error"  # the upstream refused the request itself: returned as is
    ACCOUNT = "account"  # 401/402/403: the shared token is refused, the chain stopped
    EXHAUSTED = "exhausted"  # every model failed (or was skipped), or the time budget ran out
    BUDGET = "budget"  # a spend budget (gateway.budget) is used up: refused at admission, 429


@dataclass(frozen=True, slots=True)
class ChainFailure:
    """A request no model served, in the OpenAI error vocabulary every dialect maps from."""

    kind: FailureKind
    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after: int | None = None  # seconds (a 429): also sent as the Retry-After header


@dataclass(frozen=True, slots=True)
class StreamError:
    """A failure after commit; ``message`` says what happened and what to do."""

    message: str
    type: str = "upstream_error"
    code: str = "stream_interrupted"


class Sink(Protocol):
    """One dialect's rendering of one request (see the module docstring for the order)."""

    async def commit(
        self, served: ModelRef, provider: str | None, headers: dict[str, str]
    ) -> web.StreamResponse: ...

    async def chunks(self, chunks: list[dict[str, Any]]) -> None: ...

    async def finish(self) -> None: ...

    async def fail(self, error: StreamError) -> None: ...

    def answer(
        self,
        served: ModelRef,
        provider: str | None,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse: ...

    def error(self, failure: ChainFailure, headers: dict[str, str]) -> web.StreamResponse: ...
