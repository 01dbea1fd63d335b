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
from gateway.rescue import ContinuationCheck, Mismatch, PrefixCheck, add_sent
from gateway.routing import Failure
from gateway.upstream import UpstreamReply

if TYPE_CHECKING:
    from gateway.engine.chain import ChainEngine, ChatRequest

ERROR_WRITE_SECONDS = 2.0


@dataclass(slots=True)
class Broken:
    """A committed stream that failed and may be rescued: ``attempt.sent`` holds the text the
    client has; ``mismatch``: a rescue's restart did not reproduce it (not to be rescued)."""

    attempt: Attempt
    out: web.StreamResponse
    error: StreamError
    mismatch: bool = False


_MISMATCH = object()


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


def _observed(request: ChatRequest) -> bool:
    """Is this request's time to first chunk a hedging observation? A stream's; a non-stream
    answer's (its whole time) only when non-stream requests are hedged too."""
    return request.stream or request.settings.config.gateway.hedge.non_stream


class Race:
    """Two attempts of one request running at once (a hedge, SPEC §9): the first to deliver a
    first chunk wins, and the other is cancelled at once (leaving its ``async with reply``
    closes its upstream connection, so the provider stops)."""

    __slots__ = ("tasks", "winner")

    def __init__(self) -> None:
        self.tasks: dict[Attempt, asyncio.Task[Any]] = {}
        self.winner: Attempt | None = None

    def claim(self, attempt: Attempt) -> bool:
        if self.winner is not None:
            return self.winner is attempt
        self.winner = attempt
        now = attempt.engine.clock.monotonic()
        for other, task in self.tasks.items():
            if other is not attempt and not task.done():
                task.cancel()
                waited = now - other.started
                # Before the winner's own 200: the header at commit shows "a=hedged,b=200".
                attempt.record.attempts.append(
                    AttemptLog(other.ref, None, None, waited * 1e3, mark="hedged")
                )
                if _observed(attempt.request):  # a lower bound: keeps the slow tail in the p90
                    attempt.engine.observe_ttft(other.ref, waited)
        return True


@dataclass(slots=True, eq=False)
class Attempt:
    """One try of one model for one request."""

    engine: ChainEngine
    request: ChatRequest
    record: RequestRecord
    sink: Sink
    ref: ModelRef
    started: float  # monotonic
    race: Race | None = None
    # Mid-stream rescue (SPEC §9): ``out`` the client's stream when this attempt continues an
    # already committed one; ``sent`` the text the client has (None: the stream may not be
    # rescued), ``tools`` whether a tool call was streamed, ``check`` what a rescue's text
    # goes through (``gateway.rescue``).
    out: web.StreamResponse | None = None
    sent: list[str] | None = None
    tools: bool = False
    check: ContinuationCheck | PrefixCheck | None = None

    def served(self, provider: str | None) -> None:
        """This attempt's answer goes to the client: record it as the serving one. The loser
        of a hedge that got its answer in the same turn as the winner stops here."""
        now = self.engine.clock.monotonic()
        if self.race is not None and not self.race.claim(self):
            raise asyncio.CancelledError
        if _observed(self.request):
            self.engine.observe_ttft(self.ref, now - self.started)
        record = self.record
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


async def _cut(
    attempt: Attempt, out: web.StreamResponse, error: StreamError
) -> web.StreamResponse | Broken:
    """A committed stream broke: rescue it when it may be (text only so far), else end it
    honestly."""
    if attempt.sent is not None and not attempt.tools:
        return Broken(attempt, out, error)
    await attempt.fail(error)
    return out


def _track(attempt: Attempt, chunk: dict[str, Any]) -> dict[str, Any] | object | None:
    """Note the text (and any tool call) a chunk carries; in a rescue, pass its text through
    the check: the chunk to relay, None to drop (held back), or ``_MISMATCH``."""
    choices = chunk.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        return chunk
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return chunk
    if delta.get("tool_calls"):
        attempt.tools = True
    text = delta.get("content")
    check = attempt.check
    if check is not None:
        delta.pop("role", None)  # the client's stream has had its role chunk
        if isinstance(text, str) and text:
            got = check.feed(text)
            if isinstance(got, Mismatch):
                return _MISMATCH
            text = got or ""
        if choice.get("finish_reason"):
            tail = check.finish()
            if isinstance(tail, Mismatch):
                return _MISMATCH
            text = (text or "") + (tail or "")
            attempt.check = None
        if isinstance(text, str):
            delta["content"] = text
            if "text" in choice:
                choice["text"] = text
        if not text and not choice.get("finish_reason") and not delta.get("tool_calls"):
            return chunk if chunk.get("usage") else None
    if isinstance(text, str) and text and attempt.sent is not None:
        add_sent(attempt.sent, text)
    return chunk


async def relay_stream(
    attempt: Attempt, reply: UpstreamReply, first_deadline: float, total_deadline: float
) -> web.StreamResponse | Failed | Broken:
    """Relay SSE events; commit on the first chunk; end honestly whatever happens (or hand a
    broken text stream back for a rescue)."""
    request, record, sink = attempt.request, attempt.record, attempt.sink
    idle = request.settings.config.gateway.timeouts.idle_seconds
    loop = asyncio.get_running_loop()
    ref_name = str(attempt.ref)
    out: web.StreamResponse | None = attempt.out
    finished = False
    writing = False  # a timeout while writing means the client, not the upstream, stalled
    try:
        async with asyncio.timeout_at(first_deadline) as timer:
            async for events in reply.events():
                batch, ended, stop, raw = _batch_of(attempt, reply.provider, events, ref_name)
                if stop is _MISMATCH:
                    assert out is not None
                    return Broken(attempt, out, StreamError("mismatch"), mismatch=True)
                if isinstance(stop, StreamError):  # an upstream error event
                    if out is None and not batch:
                        message, type_, code = wire.parse_upstream_error(502, raw)
                        return Failed(502, None, message, code, type_)
                    # Chunks came first (in this very read, maybe): the stream is committed
                    # to this model, and its failure is told honestly.
                    if out is None:
                        out = await attempt.commit(reply.provider)
                    if batch:
                        await sink.chunks(batch)
                    return await _cut(attempt, out, stop)
                if batch:
                    if not finished:
                        finished = _finished(record, batch)
                    if out is None:
                        out = await attempt.commit(reply.provider)
                    writing = True
                    await sink.chunks(batch)
                    writing = False
                if out is not None:  # until the first chunk, the first-token deadline holds
                    timer.reschedule(min(loop.time() + idle, total_deadline))
                if ended:
                    break
                # Nothing of this read stays referenced while the next one is awaited: its
                # parsed chunks are ~1 KiB a stream (1,000 open streams: 1 MiB).
                del events, batch
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
        return await _timed_out(attempt, out, loop.time() >= total_deadline, writing)
    except UpstreamTooLarge as exc:
        if out is None:
            return Failed(502, None, exc.message)
        await attempt.fail(StreamError(f"{exc.message}; the stream was cut there"))
        return out
    except UpstreamError as exc:
        if out is None:
            return Failed(None, Failure.RESET, exc.message)
        return await _cut(attempt, out, StreamError("the upstream connection dropped mid-stream"))
    if out is None:
        return Failed(502, None, "the upstream stream ended before the first chunk")
    return await _ended(attempt, out, finished)


async def _timed_out(
    attempt: Attempt, out: web.StreamResponse, budget_spent: bool, writing: bool
) -> web.StreamResponse | Broken:
    """A committed stream's deadline passed: the time budget (a rescue hands it back to end
    with the original error), a client that stopped reading, or an upstream that stalled (cut,
    so that it may be rescued)."""
    if budget_spent:
        message = (
            "the request used up the gateway's time budget mid-stream "
            "(gateway.timeouts.totalSeconds)"
        )
        if attempt.out is not None:  # a rescue: it ends with the original error
            return Broken(attempt, out, StreamError(message))
    elif writing:
        message = "the client did not read the stream for the idle timeout"
    else:
        return await _cut(
            attempt, out, StreamError("the upstream stream stalled past the idle timeout")
        )
    await attempt.fail(StreamError(message))
    return out


async def _ended(
    attempt: Attempt, out: web.StreamResponse, finished: bool
) -> web.StreamResponse | Broken:
    """The upstream stream ended after a first chunk: a normal end when a finish_reason came,
    else a cut (which may be rescued)."""
    if not finished:
        return await _cut(
            attempt, out, StreamError("the upstream stream ended without a finish_reason")
        )
    try:
        await attempt.sink.finish()
    except ClientGone:
        attempt.record.outcome = "client_closed"
        return out
    attempt.record.outcome = "ok"
    return out


def _batch_of(
    attempt: Attempt, provider: str | None, events: list[bytes], ref_name: str
) -> tuple[list[dict[str, Any]], bool, StreamError | object | None, bytes]:
    """The chunks of one read to relay; whether ``[DONE]`` ended the stream; what stopped the
    read early, if anything: an upstream error event (and its bytes) or ``_MISMATCH`` (a
    rescue's text did not reproduce what the client has)."""
    batch: list[dict[str, Any]] = []
    tracking = attempt.sent is not None
    for data in events:
        if data.startswith(b"[DONE]"):
            return batch, True, None, b""
        chunk = _chunk_of(attempt, provider, data, ref_name)
        if isinstance(chunk, StreamError):
            return batch, False, chunk, data
        if chunk is not None and tracking:
            tracked = _track(attempt, chunk)
            if tracked is _MISMATCH:
                return batch, False, _MISMATCH, b""
            chunk = tracked if isinstance(tracked, dict) else None
        if chunk is not None:
            batch.append(chunk)
    return batch, False, None, b""


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


def _finished(record: RequestRecord, chunks: list[dict[str, Any]]) -> bool:
    """Whether one of ``chunks`` carries a ``finish_reason`` (the first is recorded for the log
    line)."""
    for chunk in chunks:
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    record.finish_reason = str(choice["finish_reason"])
                    return True
    return False
