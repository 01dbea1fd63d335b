"""One streamed attempt: relay upstream chunks to the sink, commit on the first, end honestly.

Until the first chunk the first-token deadline holds and every failure is a ``Failed`` attempt
the chain may fail over from; after it the idle deadline holds between reads, and every
failure ends the client's stream through ``Sink.fail`` — never a clean finish.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import wire
from gateway.engine.events import ClientGone, Sink, StreamError
from gateway.engine.record import AttemptLog, RequestRecord, log
from gateway.errors import UpstreamError, UpstreamTooLarge
from gateway.observe import SecretRedactor
from gateway.refs import ModelRef
from gateway.routing import Failure
from gateway.upstream import UpstreamReply

if TYPE_CHECKING:
    from gateway.engine.chain import ChainEngine, ChatRequest

ERROR_WRITE_SECONDS = 2.0


@dataclass(slots=True)
class Failed:
    """An attempt that produced no answer for the client (yet)."""

    status: int | None
    failure: Failure | None
    message: str
    code: str | None = None
    type_: str | None = None
    retry_after: float | None = None
    param: str | None = None


@dataclass(slots=True)
class Attempt:
    """One try of one model for one request."""

    engine: ChainEngine
    request: ChatRequest
    record: RequestRecord
    sink: Sink
    ref: ModelRef
    started: float  # monotonic

    def served(self, provider: str | None) -> None:
        """This attempt's answer goes to the client: record it as the serving one."""
        record = self.record
        now = self.engine.clock.monotonic()
        record.served = self.ref
        record.provider = provider
        record.attempts.append(AttemptLog(self.ref, 200, None, (now - self.started) * 1e3))
        record.ttfb = now - record.started
        if record.usage is not None:  # a non-stream answer: its body's usage is known now
            self.engine.log.price(self.ref, provider, record.usage, record)

    async def commit(self, provider: str | None) -> web.StreamResponse:
        self.served(provider)
        out = await self.sink.commit(self.ref, provider, self.record.headers())
        self.record.ttfb = self.engine.clock.monotonic() - self.record.started
        return out

    async def fail(self, error: StreamError) -> None:
        """End a committed stream honestly, within ``ERROR_WRITE_SECONDS``: a client that
        stopped reading must not hold the handler forever."""
        record = self.record
        record.outcome = "stream_failed"
        redact = SecretRedactor(self.request.settings.secrets()).redact
        error = StreamError(redact(error.message), error.type, error.code)
        log.warning(
            "stream_failed",
            request_id=record.request_id,
            model=str(record.served),
            error=error.message,
        )
        try:
            async with asyncio.timeout(ERROR_WRITE_SECONDS):
                await self.sink.fail(error)
        except TimeoutError:
            record.outcome = "client_stalled"
            transport = self.request.client.transport
            if transport is not None:
                transport.abort()
        except (ClientGone, ConnectionError, RuntimeError):
            record.outcome = "client_closed"


async def relay_stream(
    attempt: Attempt, reply: UpstreamReply, first_deadline: float, total_deadline: float
) -> web.StreamResponse | Failed:
    """Relay SSE events; commit on the first chunk; end honestly whatever happens."""
    request, record, sink = attempt.request, attempt.record, attempt.sink
    idle = request.settings.config.gateway.timeouts.idle_seconds
    loop = asyncio.get_running_loop()
    ref_name = str(attempt.ref)
    out: web.StreamResponse | None = None
    finished = False
    batch: list[dict[str, Any]] = []
    writing = False  # a timeout while writing means the client, not the upstream, stalled
    try:
        async with asyncio.timeout_at(first_deadline) as timer:
            async for events in reply.events():
                ended = False
                for data in events:
                    if data.startswith(b"[DONE]"):
                        ended = True
                        break
                    chunk = _chunk_of(attempt, reply.provider, data, ref_name)
                    if isinstance(chunk, StreamError):  # an upstream error event
                        if out is None and not batch:
                            message, type_, code = wire.parse_upstream_error(502, data)
                            return Failed(502, None, message, code, type_)
                        # Chunks came first (in this very read, maybe): the stream is committed
                        # to this model, and its failure is told honestly.
                        if out is None:
                            out = await attempt.commit(reply.provider)
                        await sink.chunks(batch)
                        await attempt.fail(chunk)
                        return out
                    if chunk is not None:
                        batch.append(chunk)
                        if not finished and _finished(record, chunk):
                            finished = True
                if batch:
                    if out is None:
                        out = await attempt.commit(reply.provider)
                    writing = True
                    await sink.chunks(batch)
                    writing = False
                    batch = []
                if out is not None:  # until the first chunk, the first-token deadline holds
                    timer.reschedule(min(loop.time() + idle, total_deadline))
                if ended:
                    break
    except ClientGone:
        record.outcome = "client_closed"
        # The rest of the upstream stream is not read: its connection is closed.
        attempt.engine.upstream.replace_closed_connection(request.settings)
        return out if out is not None else web.Response(status=499)
    except asyncio.CancelledError:
        if out is not None and attempt.engine.draining:
            await attempt.fail(StreamError("the gateway is shutting down; retry the request"))
        raise
    except TimeoutError:
        if out is None:
            return Failed(None, Failure.TIMEOUT, "no chunk before the first-token timeout")
        if loop.time() >= total_deadline:
            message = (
                "the request used up the gateway's time budget mid-stream "
                "(gateway.timeouts.totalSeconds)"
            )
        elif writing:
            message = "the client did not read the stream for the idle timeout"
        else:
            message = "the upstream stream stalled past the idle timeout"
        await attempt.fail(StreamError(message))
        return out
    except UpstreamTooLarge as exc:
        if out is None:
            return Failed(502, None, exc.message)
        await attempt.fail(StreamError(f"{exc.message}; the stream was cut there"))
        return out
    except UpstreamError as exc:
        if out is None:
            return Failed(None, Failure.RESET, exc.message)
        await attempt.fail(StreamError("the upstream connection dropped mid-stream"))
        return out
    if out is None:
        return Failed(502, None, "the upstream stream ended before the first chunk")
    if not finished:
        await attempt.fail(StreamError("the upstream stream ended without a finish_reason"))
        return out
    try:
        await sink.finish()
    except ClientGone:
        record.outcome = "client_closed"
        return out
    record.outcome = "ok"
    return out


def _chunk_of(
    attempt: Attempt, provider: str | None, data: bytes, ref_name: str
) -> dict[str, Any] | StreamError | None:
    """The chunk to relay (``model`` rewritten, ``usage`` priced), the error of an upstream
    error event, or None for an event to drop (not a JSON object)."""
    record = attempt.record
    try:
        obj = wire.loads(data)
    except ValueError:
        log.warning("upstream_event_not_json", request_id=record.request_id, size=len(data))
        return None
    if not isinstance(obj, dict):
        log.warning("upstream_event_not_object", request_id=record.request_id)
        return None
    if obj.get("error"):
        err = obj["error"]
        message = err.get("message") if isinstance(err, dict) else err
        return StreamError(f"upstream error mid-stream: {message}")
    obj["model"] = ref_name
    if obj.get("usage"):
        record.usage = obj["usage"]
        attempt.engine.log.price(attempt.ref, provider, record.usage, record)
    return obj


def _finished(record: RequestRecord, chunk: dict[str, Any]) -> bool:
    """Whether ``chunk`` carries a ``finish_reason`` (recorded for the log line)."""
    choices = chunk.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                record.finish_reason = str(choice["finish_reason"])
                return True
    return False
