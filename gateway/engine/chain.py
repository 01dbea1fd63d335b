"""One upstream chat request through the chain: attempts, retries, failover, the time budget.

The decisions are ``routing``'s; the rendering is the sink's (``events``); the upstream I/O is
``gateway.upstream``'s. A dialect handler builds a ``ChatRequest`` and calls
``ChainEngine.run(request, sink)``; the engine returns the response to send.

``breaker`` (SPEC §9) is the one object consulted for planning (``Breaker.plan``) and told of
each model's outcome (``succeed`` / ``fail``); a half-open model is tried as a probe, one
request at a time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import wire
from gateway.breaker import Breaker, Planned, ProbeTicket, failure_reason
from gateway.engine.events import ChainFailure, Clock, FailureKind, Sink, SystemClock
from gateway.engine.record import AttemptLog, RequestLog, RequestRecord
from gateway.engine.relay import Attempt, Broken, Failed, Race, relay_stream
from gateway.errors import (
    UpstreamError,
    UpstreamRedirect,
    UpstreamTimeout,
    UpstreamTooLarge,
)
from gateway.hedging import HedgeBudget, HedgeStats, hedge_delay
from gateway.metrics import Metrics
from gateway.observe import SecretRedactor
from gateway.refs import ModelRef
from gateway.rescue import (
    ECHO_MIN_CHARS,
    PrefillMemory,
    can_rescue,
    is_prefill_rejection,
    rescue_request,
    stream_check,
)
from gateway.routing import (
    Action,
    Failure,
    Verdict,
    chain_failure,
    classify,
    decide,
    parse_retry_after,
)
from gateway.settings import Settings
from gateway.upstream import MAX_BODY_BYTES, Upstream, UpstreamReply

MAX_ERROR_BODY = 64 * 1024

ACCOUNT_MESSAGES = {
    401: (
        "Hugging Face rejected the token: run `coderclaw onboard` to set a valid one",
        "invalid_api_key",
    ),
    402: (
        "Hugging Face credits exhausted: buy pre-paid credits or subscribe to PRO at "
        "https://huggingface.co/settings/billing, then retry",
        "insufficient_quota",
    ),
    403: (
        "the Hugging Face token may not call Inference Providers: create a fine-grained token "
        "with 'Make calls to Inference Providers' and run `coderclaw onboard`",
        "permission_denied",
    ),
}


@dataclass(slots=True)
class ChatRequest:
    """One upstream chat request as a dialect hands it to the engine."""

    client: web.Request  # the client's request: its headers, its connection
    request_id: str
    dialect: str  # "chat", "responses", "messages": on the log line and in the metrics
    settings: Settings
    body: dict[str, Any]  # the upstream chat completions body; ``model`` is set per attempt
    stream: bool
    chain: list[ModelRef]
    requested: Any = None  # the client's model name as sent, for the log line


class ChainEngine:
    """Drives requests through the chain; one per app."""

    def __init__(
        self,
        upstream: Upstream,
        breaker: Breaker,
        metrics: Metrics,
        clock: Clock | None = None,
    ) -> None:
        self.upstream = upstream
        self.breaker = breaker
        self.metrics = metrics
        self.hedge_stats = HedgeStats()
        self.hedge_budget = HedgeBudget()
        self.prefill = PrefillMemory()
        self.clock = clock or SystemClock()
        self.log = RequestLog(metrics)
        self.draining = False  # set at shutdown: streams cut then end with an honest error
        # Told of each time to first chunk this engine observes (the shared state, SPEC §13).
        self.on_ttft: Callable[[ModelRef, float], None] | None = None

    def observe_ttft(self, ref: ModelRef, seconds: float) -> None:
        """One time to first chunk of ``ref``: the hedging statistics, and ``on_ttft``."""
        self.hedge_stats.observe(ref, seconds)
        if self.on_ttft is not None:
            self.on_ttft(ref, seconds)

    async def run(self, request: ChatRequest, sink: Sink) -> web.StreamResponse:
        """The chain, model after model (a half-open one as a probe, when no other request is
        probing it), until one serves, one's answer must go to the client as it is, or the
        time budget is spent; the request's record is logged in any case. One coroutine
        frame for the request's life (1,000 open streams hold 1,000 of each)."""
        record = RequestRecord(
            request_id=request.request_id,
            dialect=request.dialect,
            requested=request.requested,
            stream=request.stream,
            chain=request.chain,
            started=self.clock.monotonic(),
        )
        try:
            gw = request.settings.config.gateway
            deadline = asyncio.get_running_loop().time() + gw.timeouts.total_seconds
            last: Failed | None = None
            now = self.clock.monotonic()
            self.hedge_budget.record_request(now)
            plan = list(self.breaker.plan(request.chain, now))  # a few models: a list is smallest
            while plan:
                planned = plan.pop(0)
                ticket = self._probe_ticket(planned)
                if ticket is False:
                    continue  # another request is probing it: skip, as an open one
                try:
                    result = await self._try_model(request, record, sink, planned, plan, deadline)
                finally:
                    if isinstance(ticket, ProbeTicket):
                        self.breaker.release_probe(ticket)
                if result is None:
                    return self._exhausted(request, record, sink, last, budget_spent=True)
                # Not isinstance(result, web.StreamResponse): an ABC, its check is Python code.
                if not isinstance(result, Failed):
                    return result
                last = result
            return self._exhausted(request, record, sink, last, budget_spent=False)
        except asyncio.CancelledError:
            if record.outcome == "error":  # not already told: the client left, or the drain
                record.outcome = "shutdown" if self.draining else "client_closed"
            raise
        finally:
            record.finished = self.clock.monotonic()
            self.log.add(record)

    def configure(self, settings: Settings) -> None:
        """Apply the settings in force (at start and on every reload)."""
        gw = settings.config.gateway
        self.breaker.configure(
            gw.breaker.base_seconds,
            gw.breaker.max_seconds,
            configured=settings.configured_refs,
            probe_timeout=gw.timeouts.total_seconds,
        )
        self.hedge_stats.configured = frozenset(settings.configured_refs)
        self.hedge_budget.max_fraction = gw.hedge.max_fraction
        models = settings.config.agents.defaults.models
        self.prefill.configure(
            ref
            for ref in settings.configured_refs
            if (opts := models.get(str(ref))) is not None and opts.prefill is False
        )

    def flush_logs(self) -> None:
        self.log.flush()

    def _probe_ticket(self, planned: Planned) -> ProbeTicket | bool:
        """True for a closed model, the ticket of a half-open one, False when it is taken."""
        if not planned.probe:
            return True
        ticket = self.breaker.acquire_probe(planned.ref, self.clock.monotonic())
        return ticket if ticket is not None else False

    async def _try_model(
        self,
        request: ChatRequest,
        record: RequestRecord,
        sink: Sink,
        planned: Planned,
        plan: list[Planned],
        deadline: float,
    ) -> web.StreamResponse | Failed | None:
        """One model's attempts (retries within ``gateway.retries``; a probe tries once): the
        response when it served or the chain must stop, its last failure when the chain goes
        on, None when the time budget ran out. An attempt without a first chunk after the
        hedge delay starts the next model of ``plan`` beside it (taken out of ``plan``)."""
        gw = request.settings.config.gateway
        loop = asyncio.get_running_loop()
        clock = self.clock
        ref = planned.ref
        tries = 0
        model_started = clock.monotonic()
        outcomes: list[int | str] = []
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            tries += 1
            attempt = Attempt(self, request, record, sink, ref, clock.monotonic())
            delay = self._hedge_delay(request, planned, plan)
            hedged = False
            if delay is None:
                result = await self._attempt(attempt, remaining)
            else:
                result, hedged = await self._hedged(attempt, planned, delay, plan, deadline)
                if hedged:  # the race logged both attempts and told the breaker
                    result = self._after_race(request, record, sink, result)
                    if isinstance(result, Broken):
                        return await self._rescue(result, plan, deadline)
                    return result
            if isinstance(result, Broken):
                self.breaker.succeed(ref)  # it answered; the cut is the rescue's
                return await self._rescue(result, plan, deadline)
            if not isinstance(result, Failed):  # the answer
                self.breaker.succeed(ref)
                return result
            elapsed = clock.monotonic() - attempt.started
            record.attempts.append(AttemptLog(ref, result.status, result.failure, elapsed * 1e3))
            outcomes.append(result.failure.value if result.failure else result.status or 502)
            verdict = classify(result.status, code=result.code, failure=result.failure)
            decision = decide(
                verdict,
                # A probe asks once: a still-dead model costs the user one quick failure. After
                # a hedge the chain has moved on: no retry either.
                attempts_on_model=gw.retries + 1 if planned.probe or hedged else tries,
                retries=gw.retries,
                retry_after=result.retry_after,
                max_retry_wait=gw.max_retry_wait_seconds,
            )
            if decision.action is Action.RETURN:
                return self._client_error(request, record, sink, result)
            if decision.action is Action.STOP:
                return self._account_error(request, record, sink, result)
            if decision.action is Action.RETRY:
                wait = min(decision.wait, deadline - loop.time())
                if wait > 0:
                    await asyncio.sleep(wait)
                continue
            self.breaker.fail(
                ref,
                clock.monotonic(),
                result.retry_after,
                started=model_started,
                reason=failure_reason(outcomes, result.retry_after),
            )
            return result

    # -- hedging -----------------------------------------------------------------------------

    def _hedge_delay(
        self, request: ChatRequest, planned: Planned, plan: list[Planned]
    ) -> float | None:
        """When an attempt of ``planned`` without a first chunk is hedged (None: never)."""
        if not plan:
            return None
        gw = request.settings.config.gateway
        first_token = gw.timeouts.first_token_seconds
        delay = hedge_delay(
            self.hedge_stats,
            planned.ref,
            first_token_seconds=first_token,
            after_seconds=gw.hedge.after_seconds,
            non_stream=gw.hedge.non_stream,
            stream=request.stream,
            probe=planned.probe,
        )
        # A delay that reaches the first-token timeout is no hedge: the timeout fails over then.
        return delay if delay is not None and delay < first_token else None

    def _take_hedge(
        self, probe: bool, plan: list[Planned]
    ) -> tuple[Planned, ProbeTicket | None] | None:
        """The next model of ``plan`` to hedge with (taken out of it), or None: nothing left,
        or the minute's hedges are spent (a half-open probe is hedged regardless)."""
        if not probe and not self.hedge_budget.allow(self.clock.monotonic()):
            return None
        while plan:
            planned = plan.pop(0)
            ticket = self._probe_ticket(planned)
            if ticket is not False:
                return planned, ticket if isinstance(ticket, ProbeTicket) else None
        return None

    async def _hedged(
        self,
        first: Attempt,
        planned: Planned,
        delay: float,
        plan: list[Planned],
        deadline: float,
    ) -> tuple[web.StreamResponse | Failed | Broken, bool]:
        """Run ``first``; if it has no first chunk after ``delay``, start the next model beside
        it. Returns (its result, whether a hedge was started). With a hedge the race tells
        the breaker and the record about both attempts, but a failure of ``first`` when
        neither won: that one is the caller's, as without a hedge."""
        loop = asyncio.get_running_loop()
        race = Race()
        first.race = race
        task_a = loop.create_task(self._raced(first, deadline))
        race.tasks[first] = task_a
        tasks = [task_a]
        hedge: tuple[Planned, ProbeTicket | None] | None = None
        try:
            done, _ = await asyncio.wait(tasks, timeout=delay)
            if done or race.winner is not None:
                return await task_a, False
            hedge = self._take_hedge(planned.probe, plan)
            if hedge is None:
                return await task_a, False
            self.metrics.hedges_started.inc()
            planned_b = hedge[0]
            second = Attempt(
                self,
                first.request,
                first.record,
                first.sink,
                planned_b.ref,
                self.clock.monotonic(),
                race,
            )
            task_b = loop.create_task(self._raced(second, deadline))
            race.tasks[second] = task_b
            tasks.append(task_b)
            return await self._settle(race, first, planned, second, planned_b, task_a, task_b)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            if len(tasks) > 1 or not task_a.done():
                await asyncio.gather(*tasks, return_exceptions=True)
            if hedge is not None and hedge[1] is not None:
                self.breaker.release_probe(hedge[1])

    async def _raced(
        self, attempt: Attempt, deadline: float
    ) -> web.StreamResponse | Failed | Broken:
        """One attempt of a race; its failure is logged at once (before the other's 200)."""
        loop = asyncio.get_running_loop()
        result = await self._attempt(attempt, deadline - loop.time())
        race = attempt.race
        if isinstance(result, Failed) and race is not None and len(race.tasks) > 1:
            elapsed = self.clock.monotonic() - attempt.started
            attempt.record.attempts.append(
                AttemptLog(attempt.ref, result.status, result.failure, elapsed * 1e3)
            )
            if _opens(result):
                self._open(attempt.ref, result, attempt.started)
        return result

    async def _settle(
        self,
        race: Race,
        first: Attempt,
        planned_a: Planned,
        second: Attempt,
        planned_b: Planned,
        task_a: asyncio.Task[web.StreamResponse | Failed | Broken],
        task_b: asyncio.Task[web.StreamResponse | Failed | Broken],
    ) -> tuple[web.StreamResponse | Failed | Broken, bool]:
        """Wait for both attempts of a hedge (the winner's whole answer; the loser is cancelled
        by the winner's claim) and tell the breaker. Failures were logged as they came."""
        await asyncio.wait([task_a, task_b])
        now = self.clock.monotonic()
        result_a = None if task_a.cancelled() else task_a.result()
        result_b = None if task_b.cancelled() else task_b.result()
        if race.winner is second and result_b is not None and not isinstance(result_b, Failed):
            self.metrics.hedges_won.inc()
            self.breaker.succeed(second.ref)
            if result_a is None and planned_a.probe:  # a probe slower than the hedge
                self.breaker.fail(first.ref, now, started=first.started, reason="hedged")
            return result_b, True
        if race.winner is first and result_a is not None and not isinstance(result_a, Failed):
            self.breaker.succeed(first.ref)
            if result_b is None and planned_b.probe:
                self.breaker.fail(second.ref, now, started=second.started, reason="hedged")
            return result_a, True
        # Neither served: both failed (or the winner's task ended without a response).
        for result in (result_a, result_b):
            if result is not None and not isinstance(result, Failed):
                return result, True
        assert isinstance(result_b, Failed) and isinstance(result_a, Failed)
        return (
            result_a
            if classify(result_a.status, code=result_a.code, failure=result_a.failure) in _FINAL
            else result_b
        ), True

    def _after_race(
        self,
        request: ChatRequest,
        record: RequestRecord,
        sink: Sink,
        result: web.StreamResponse | Failed | Broken,
    ) -> web.StreamResponse | Failed | Broken:
        if not isinstance(result, Failed):
            return result
        verdict = classify(result.status, code=result.code, failure=result.failure)
        if verdict is Verdict.CLIENT_ERROR:
            return self._client_error(request, record, sink, result)
        if verdict is Verdict.ACCOUNT:
            return self._account_error(request, record, sink, result)
        return result

    def _open(self, ref: ModelRef, failed: Failed, started: float) -> None:
        outcome: int | str = failed.failure.value if failed.failure else failed.status or 502
        self.breaker.fail(
            ref,
            self.clock.monotonic(),
            failed.retry_after,
            started=started,
            reason=failure_reason([outcome], failed.retry_after),
        )

    # -- mid-stream rescue -------------------------------------------------------------------

    async def _rescue(
        self, broken: Broken, plan: list[Planned], deadline: float
    ) -> web.StreamResponse:
        """Continue a broken text stream on the next models of ``plan`` (SPEC §9): with the
        sent text as a prefill where the model is not known to refuse it, else a restart whose
        answer must reproduce that text. The client's stream goes on; when no model finishes
        it, it ends with the original error."""
        first = broken.attempt
        request, record, sink = first.request, first.record, first.sink
        loop = asyncio.get_running_loop()
        clock = self.clock
        sent = first.sent if first.sent is not None else []
        original = broken.error
        retries = request.settings.config.gateway.retries
        record.attempts.append(
            AttemptLog(first.ref, None, None, (clock.monotonic() - first.started) * 1e3, "cut")
        )
        self.metrics.rescues_tried.inc()
        for planned in list(plan):
            ref = planned.ref
            if ref == first.ref:
                continue
            resets = 0
            while deadline - loop.time() > 0:
                text = "".join(sent)
                kind, body = rescue_request(request.body, text, ref, self.prefill)
                if len(text.strip()) < ECHO_MIN_CHARS:
                    # Too short to tell a continuation from an answer started over: restart.
                    kind, body = "restart", dict(request.body)
                attempt = Attempt(
                    self,
                    request,
                    record,
                    sink,
                    ref,
                    clock.monotonic(),
                    out=broken.out,
                    sent=sent,
                    check=stream_check(kind, text),
                )
                result = await self._attempt(attempt, deadline - loop.time(), body)
                ms = (clock.monotonic() - attempt.started) * 1e3
                if isinstance(result, Failed):
                    record.attempts.append(AttemptLog(ref, result.status, result.failure, ms))
                    if kind == "continue" and is_prefill_rejection(
                        result.status, result.message, result.code
                    ):
                        self.prefill.learn(ref)  # for the gateway's lifetime
                        continue  # the same model again, as a restart
                    if result.failure is Failure.RESET and resets < retries:
                        resets += 1  # a pooled connection the router had closed: again
                        continue
                    break
                if isinstance(result, Broken):
                    if result.mismatch:
                        record.attempts.append(AttemptLog(ref, None, None, ms, "mismatch"))
                        await first.fail(original)
                        return broken.out
                    record.attempts.append(AttemptLog(ref, None, None, ms, "cut"))
                    break  # the next model goes on from the text sent so far
                record.attempts.append(AttemptLog(ref, 200, None, ms, "rescue"))
                if record.outcome == "ok":
                    self.metrics.rescues_succeeded.inc()
                return result
        await first.fail(original)
        return broken.out

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(
        self, attempt: Attempt, remaining: float, body: dict[str, Any] | None = None
    ) -> web.StreamResponse | Failed | Broken:
        request = attempt.request
        gw = request.settings.config.gateway
        timeouts = gw.timeouts
        if (
            request.stream
            and attempt.sent is None
            and gw.rescue == "continue"
            and can_rescue(request.body, False)
        ):
            attempt.sent = []
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + min(timeouts.first_token_seconds, remaining)
        total_deadline = loop.time() + remaining
        silent = "no answer before the first-token timeout"
        try:
            # The first-token timeout covers the wait for the status line too: a model that
            # answers nothing at all is as silent as one that sends headers and no chunk.
            async with asyncio.timeout_at(first_deadline) as timer:
                # Neither the encoded body nor its dict is kept for the stream's life.
                reply = await self.upstream.post_chat(
                    request.settings,
                    _encoded(request.body if body is None else body, attempt.ref),
                    stream=request.stream,
                    client_headers=request.client.headers,
                )
                async with reply:
                    if reply.status != 200:
                        return await _failed_answer(reply)
                    if request.stream:
                        timer.reschedule(None)  # the relay keeps its own deadlines
                        return await relay_stream(attempt, reply, first_deadline, total_deadline)

                    # Headers came: from now on the body may fall silent for idleSeconds at
                    # most between pieces (and never past the time budget); the timer moves
                    # only when the read has to wait (a small body came with the headers).
                    progress = _idle_progress(timer, timeouts.idle_seconds, total_deadline)
                    silent = "the answer's body stalled past the idle timeout"
                    raw = await reply.read(MAX_BODY_BYTES, progress=progress)
                    return self._finish_plain(attempt, reply, raw)
        except TimeoutError:
            return Failed(None, Failure.TIMEOUT, silent)
        except UpstreamTimeout:
            return Failed(None, Failure.TIMEOUT, "the connection timed out")
        except UpstreamRedirect as exc:
            return Failed(exc.status, None, exc.message)
        except UpstreamTooLarge as exc:
            return Failed(502, None, exc.message)
        except UpstreamError as exc:  # unreachable, or the body broke off
            return Failed(None, Failure.RESET, exc.message)
        except asyncio.CancelledError:
            # The client went away: leaving the `async with` closed the upstream connection,
            # which is how the router learns to stop.
            if not self.draining:
                self.upstream.replace_closed_connection(request.settings)
            raise

    def _finish_plain(
        self, attempt: Attempt, reply: UpstreamReply, raw: bytes
    ) -> web.StreamResponse | Failed:
        try:
            data = wire.loads(raw)
        except ValueError:
            return Failed(502, None, "the router sent a body that is not JSON")
        if not isinstance(data, dict):
            return Failed(502, None, "the router sent a JSON body that is not an object")
        if "error" in data and "choices" not in data:
            message, type_, code = wire.parse_upstream_error(502, raw)
            return Failed(502, None, message, code, type_)
        record = attempt.record
        data["model"] = str(attempt.ref)
        record.usage = data.get("usage")
        record.finish_reason = _finish_reason(data)
        attempt.served(reply.provider)
        record.outcome = "ok"
        return attempt.sink.answer(attempt.ref, reply.provider, data, record.headers())

    # -- answers when no model served --------------------------------------------------------

    def _render(
        self, record: RequestRecord, sink: Sink, failure: ChainFailure
    ) -> web.StreamResponse:
        headers = record.headers()
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
        return sink.error(failure, headers)

    def _client_error(
        self, request: ChatRequest, record: RequestRecord, sink: Sink, failed: Failed
    ) -> web.StreamResponse:
        status = failed.status or 502
        record.outcome = f"client_error_{status}"
        redact = _redactor(request)
        failure = ChainFailure(
            FailureKind.CLIENT_ERROR,
            status,
            redact(failed.message),
            failed.type_ or "invalid_request_error",
            _redact_opt(redact, failed.code),
            _redact_opt(redact, failed.param),
        )
        return self._render(record, sink, failure)

    def _account_error(
        self, request: ChatRequest, record: RequestRecord, sink: Sink, failed: Failed
    ) -> web.StreamResponse:
        status = failed.status or 401
        message, code = ACCOUNT_MESSAGES.get(status, ACCOUNT_MESSAGES[401])
        record.outcome = f"account_{status}"
        text = _redactor(request)(f"{message} (Hugging Face said: {failed.message})")
        failure = ChainFailure(FailureKind.ACCOUNT, status, text, "authentication_error", code)
        return self._render(record, sink, failure)

    def _exhausted(
        self,
        request: ChatRequest,
        record: RequestRecord,
        sink: Sink,
        last: Failed | None,
        *,
        budget_spent: bool,
    ) -> web.StreamResponse:
        tried = ", ".join(a.label for a in record.attempts) or "none"
        detail = f"; last error: {last.message}" if last else ""
        status, code, lead = chain_failure(
            [a.status for a in record.attempts],
            [a.failure for a in record.attempts],
            budget_spent=budget_spent,
        )
        retry_after = None
        if status == 429:
            now = self.clock.monotonic()
            end = self.breaker.soonest_end(request.chain, now)
            retry_after = max(1, math.ceil((end or now + 1) - now))
        record.outcome = f"failed_{status}"
        failure = ChainFailure(
            FailureKind.EXHAUSTED,
            status,
            _redactor(request)(f"{lead} (attempts: {tried}){detail}"),
            "rate_limit_error" if status == 429 else "upstream_error",
            code,
            retry_after=retry_after,
        )
        return self._render(record, sink, failure)


_FINAL = frozenset({Verdict.CLIENT_ERROR, Verdict.ACCOUNT})


def _opens(failed: Failed) -> bool:
    """Does this failure open the model's breaker (a failover, not the request's own fault)?"""
    return classify(failed.status, code=failed.code, failure=failed.failure) not in _FINAL


async def _failed_answer(reply: UpstreamReply) -> Failed:
    """A non-200 answer as a failed attempt, with the parts of its error body that decide."""
    raw = await reply.read_prefix(MAX_ERROR_BODY)
    message, type_, code = wire.parse_upstream_error(reply.status, raw)
    return Failed(
        reply.status,
        None,
        message,
        code,
        type_,
        parse_retry_after(reply.headers.get("Retry-After")),
        _error_param(raw),
    )


def _idle_progress(
    timer: asyncio.Timeout, idle_seconds: float, total_deadline: float
) -> Callable[[], None]:
    """What a non-stream read calls when it has to wait: ``timer`` moves to ``idle_seconds``
    from now, never past ``total_deadline``. (A closure made here, not in ``_attempt``: there
    its variables would be cells for every attempt, streams too.)"""
    loop = asyncio.get_running_loop()

    def progress() -> None:
        timer.reschedule(min(loop.time() + idle_seconds, total_deadline))

    return progress


def _encoded(body: dict[str, Any], ref: ModelRef) -> bytes:
    """The upstream request body for one attempt: ``body`` with the model's upstream id.

    A copy of its own size: orjson's bytes keep the 4 KiB block they were written in whatever
    their length, and the body waits for the router's status line (1,000 requests arriving
    at once: 4 MiB held for that wait)."""
    return bytes(memoryview(wire.dumps({**body, "model": ref.upstream_id})))


def _error_param(raw: bytes) -> str | None:
    """The ``param`` of an OpenAI error object body, when it is a string."""
    try:
        data = wire.loads(raw) if raw else None
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    param = err.get("param") if isinstance(err, dict) else None
    return param if isinstance(param, str) else None


def _finish_reason(data: dict[str, Any]) -> str | None:
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
            return str(choice["finish_reason"])
    return None


def _redactor(request: ChatRequest) -> Any:
    """Masks the tokens in a text: the router's own words are passed on, and a router (or a
    provider behind it) may quote the key it was sent."""
    return SecretRedactor(request.settings.secrets()).redact


def _redact_opt(redact: Any, value: str | None) -> str | None:
    return None if value is None else str(redact(value))
