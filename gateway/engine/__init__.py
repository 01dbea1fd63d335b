"""The chain engine: one upstream chat request through the chain, rendered by a dialect's sink.

    request = ChatRequest(client, request_id, dialect, settings, body, stream, chain, requested)
    response = await engine.run(request, sink)

``events`` defines the ``Sink`` protocol and what it receives; ``chain`` the attempt loop;
``relay`` one streamed attempt; ``record`` the request's log line and counters.
"""

from gateway.engine.chain import ChainEngine, ChatRequest
from gateway.engine.events import (
    ChainFailure,
    ClientGone,
    Clock,
    FailureKind,
    Sink,
    StreamError,
    SystemClock,
)
from gateway.engine.record import LOG_DELAY, RequestRecord

__all__ = [
    "LOG_DELAY",
    "ChainEngine",
    "ChainFailure",
    "ChatRequest",
    "ClientGone",
    "Clock",
    "FailureKind",
    "RequestRecord",
    "Sink",
    "StreamError",
    "SystemClock",
]
