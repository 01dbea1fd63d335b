"""``RedisState``: the shared state of several replicas in one Redis (SPEC §13).

What goes through Redis, and when:

- breaker transitions: ``publish_open`` / ``publish_close`` write (or delete) the opening's key
  and publish the event on one channel; a subscriber task hands the other replicas' events to
  the ``Listener``. At every (re)connection the current openings are read once (``SCAN``), so
  a replica that joins late, or comes back after an outage, knows them.
- hedging statistics: ``observe_ttft`` only buffers; every ``sync_seconds`` one pipelined round
  trip appends the buffered times to each ref's capped stream and reads the other replicas'
  new ones (``XREAD``), which go to ``Listener.on_ttft``. Lost on an outage: they are
  statistics.
- budgets and usage counters: ``SharedBudget`` (``gateway.shared.budget``): admission from a
  lease of the budget while it lasts, else one script; the spend written in one transaction
  per ``flush_seconds``, through this state's bounded calls.

Every call is bounded by ``timeout`` (socket timeouts and an outer ``asyncio.timeout``). The
first failure turns the state ``degraded`` with one log line; from then on every call answers
locally at once without touching Redis, and a background task reconnects (``retry_first``
seconds, doubling up to ``retry_max``), logs one line when Redis is back, re-reads the
openings and writes the spend and usage counted meanwhile (at least once: a write that timed
out may have landed too, so a budget errs on the safe side).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.observe import get_logger
from gateway.shared import keys as k
from gateway.shared.budget import FLUSH_S, Down, SharedBudget
from gateway.shared.keys import Closing, Opening, Status
from gateway.shared.lease import IDLE_S
from gateway.shared.scripts import ADMIT
from gateway.shared.spend import text
from gateway.shared.state import (
    Admission,
    Clock,
    Lifecycle,
    Listener,
    SystemClock,
    UsageDelta,
    UsageRow,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = get_logger("gateway.shared")

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 0.05
MAX_IN_FLIGHT = 64  # Redis calls at once (redis-py's pool holds 100 connections)
CONNECT_TIMEOUT_S = 1.0
SYNC_S = 2.0
MAX_TRACKED_REFS = 256


def default_replica() -> str:
    """This replica's name: the host (a pod's name in Kubernetes), the pid and a random tag."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class RedisState(Lifecycle):
    """The shared state in Redis at ``url``, every key under ``key_prefix``."""

    def __init__(
        self,
        url: str,
        key_prefix: str = "coderclaw:",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        clock: Clock | None = None,
        replica: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        sync_seconds: float = SYNC_S,
        flush_seconds: float = FLUSH_S,
        lease_idle_s: float = IDLE_S,
        retry_first: float = 1.0,
        retry_max: float = 5.0,
    ) -> None:
        problem = k.check_url(url)
        if problem is not None:
            raise ValueError(f"state.redis.url {k.masked_url(url)}: {problem}")
        self._url = url
        self.url_for_log = k.masked_url(url)
        self._password = k.redis_password(url)
        self.prefix = key_prefix
        self.replica = replica or default_replica()
        self.timeout = timeout
        self._connect_timeout = max(connect_timeout, timeout)
        self._sync_seconds = sync_seconds
        self._retry = (retry_first, retry_max)
        self._clock = clock or SystemClock()
        self._channel = k.events_channel(key_prefix)
        self._listener: Listener | None = None
        self._status: Status = "degraded"
        self._closed = False
        self._client: Redis | None = None
        self._pubsub_client: Redis | None = None
        self._pubsub: PubSub | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._logged_errors: set[str] = set()
        # Calls in flight at once, below the client's pool (redis-py: 100 connections): under
        # load, past that the pool raises MaxConnectionsError, which is not an outage. A call
        # that cannot start within the timeout answers from local state (``busy``).
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.busy = 0
        # Redis round trips per call kind (for /metrics and the benchmark's per-request count).
        self.round_trips: dict[str, int] = {}
        self._down_since = 0.0
        self.budget = SharedBudget(
            key_prefix,
            self.replica,
            self._clock,
            self._run,
            lambda: self._status == "redis",
            flush_seconds=flush_seconds,
            lease_idle_s=lease_idle_s,
        )
        # Hedging statistics: this replica's buffered times, and the stream positions read
        # (kept across a reconnection: stream ids grow with time, even in a restarted Redis).
        self._ttft_out: dict[str, list[float]] = {}
        self._ttft_seen: dict[str, str] = {}
        self._tracked: OrderedDict[str, None] = OrderedDict()

    # -- lifecycle ---------------------------------------------------------------------------

    def status(self) -> Status:
        return self._status

    async def start(self, listener: Listener | None = None) -> None:
        """Connect (within ``connect_timeout``), read the current openings into ``listener``
        and start the subscriber and the sync task. Never raises: when Redis cannot be
        reached the state starts degraded, logs it once, and keeps trying in the background."""
        self._listener = listener
        self._spawn(self._sync_loop())
        self._spawn(self.budget.flush_loop())
        error = await self._connect()
        if error is not None:
            self._log_degraded(error)
            self._spawn(self._reconnect_loop())

    async def close(self) -> None:
        """Hand the leases back and write what is pending (bounded by the timeout), stop
        every task and close the connections (bounded by ``connect_timeout``)."""
        await self.budget.close()
        self._closed = True
        self._status = "degraded"
        tasks = [t for t in (*self._tasks, self._subscriber) if t is not None]
        for task in tasks:
            task.cancel()
        # Connections of an earlier failure still being closed are waited for, not cancelled:
        # a cancelled close leaves its sockets open.
        await asyncio.gather(*tasks, *self._closers, return_exceptions=True)
        await self._close_clients(self._client, self._pubsub_client, self._pubsub)
        self._client = self._pubsub_client = self._pubsub = None

    # -- breaker transitions -----------------------------------------------------------------

    async def publish_open(
        self,
        ref: str,
        until_wall: float,
        reason: str,
        *,
        openings: int = 1,
        since_wall: float | None = None,
    ) -> None:
        """Tell every replica that ``ref`` is open until ``until_wall`` (wall-clock seconds):
        its key with a TTL to the end plus a margin, and the event on the channel."""
        now = self._clock.time()
        opening = Opening(
            ref, until_wall, now if since_wall is None else since_wall, reason,
            max(openings, 1), self.replica,
        )  # fmt: skip
        data = k.encode_opening(opening)
        ttl_ms = k.breaker_ttl_ms(until_wall, now)

        async def op(client: Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(k.breaker_key(self.prefix, ref), data, px=ttl_ms)
                pipe.publish(self._channel, data)
                await pipe.execute()

        with contextlib.suppress(Down):
            await self._run("publish_open", op)

    async def publish_close(self, ref: str) -> None:
        """Tell every replica that ``ref`` answered again: its key deleted, the event sent."""
        data = k.encode_closing(Closing(ref, self.replica))

        async def op(client: Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.delete(k.breaker_key(self.prefix, ref))
                pipe.publish(self._channel, data)
                await pipe.execute()

        with contextlib.suppress(Down):
            await self._run("publish_close", op)

    # -- hedging statistics ------------------------------------------------------------------

    def track_refs(self, refs: Sequence[str]) -> None:
        """The refs whose shared times to first chunk are read back (the configured chain)."""
        for ref in refs:
            self._track(ref)

    def observe_ttft(self, ref: str, seconds: float) -> None:
        """Buffer one time to first chunk of ``ref``; sent with the next sync. No I/O."""
        if not (0 <= seconds < float("inf")):
            return
        self._track(ref)
        buffered = self._ttft_out.setdefault(ref, [])
        if len(buffered) < k.TTFT_WINDOW:
            buffered.append(seconds)

    def _track(self, ref: str) -> None:
        self._tracked[ref] = None
        self._tracked.move_to_end(ref)
        while len(self._tracked) > MAX_TRACKED_REFS:
            old, _ = self._tracked.popitem(last=False)
            self._ttft_seen.pop(old, None)

    # -- budgets and usage (``SharedBudget``) -------------------------------------------------

    async def try_spend(
        self, period_keys: Mapping[str, str], limits_usd: Mapping[str, float | None]
    ) -> Admission:
        return await self.budget.try_spend(period_keys, limits_usd)

    def record_spend(
        self, period_keys: Mapping[str, str], usage: UsageDelta, *, day: str | None = None
    ) -> None:
        self.budget.record_spend(period_keys, usage, day=day)

    async def add_spend(
        self, period_keys: Mapping[str, str], usage: UsageDelta, *, day: str | None = None
    ) -> Mapping[str, float] | None:
        return await self.budget.add_spend(period_keys, usage, day=day)

    async def flush(self) -> bool:
        return await self.budget.flush()

    async def usage_totals(self, days: Sequence[str]) -> list[UsageRow] | None:
        return await self.budget.usage_totals(days)

    # -- one bounded call --------------------------------------------------------------------

    async def _run(self, name: str, op: Callable[[Redis], Awaitable[T]]) -> T:
        """``op`` on the connected client within ``timeout``; ``Down`` at once when degraded,
        and on any failure (which degrades the state)."""
        from redis.exceptions import RedisError, ResponseError

        client = self._client
        if client is None or self._status != "redis":
            raise Down
        acquired = False
        try:
            # One deadline for the wait for a slot and the call itself.
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
                acquired = True
                self.round_trips[name] = self.round_trips.get(name, 0) + 1
                return await op(client)
        except TimeoutError as exc:
            if acquired:
                self._degrade(exc)
            else:
                self.busy += 1  # this replica is saturated, Redis is not down: no degradation
            raise Down from None
        except ResponseError as exc:
            # Redis answered, with an error (a key of another type under our prefix): not an
            # outage. Logged once per call kind.
            if name not in self._logged_errors:
                self._logged_errors.add(name)
                log.warning("shared_state_error", call=name, error=self._describe(exc))
            raise Down from None
        except (RedisError, OSError) as exc:
            self._degrade(exc)
            raise Down from None
        except Exception as exc:
            # Anything else from the client (uvloop's RuntimeError on a transport closed by a
            # degradation while this call was on it) is an outage too, never the request's.
            self._degrade(exc)
            raise Down from None
        finally:
            if acquired:
                self._slots.release()

    # -- degradation and recovery ------------------------------------------------------------

    def _degrade(self, exc: BaseException) -> None:
        if self._status != "redis" or self._closed:
            return
        self._status = "degraded"
        self._log_degraded(self._describe(exc))
        client, pubsub_client, pubsub = self._client, self._pubsub_client, self._pubsub
        self._client = self._pubsub_client = self._pubsub = None
        # The leases are dropped (their rest stays counted: Redis may come back without it).
        self.budget.down()
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None and subscriber is not asyncio.current_task():
            subscriber.cancel()
        closer = asyncio.get_running_loop().create_task(
            self._close_clients(client, pubsub_client, pubsub)
        )
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)
        self._spawn(self._reconnect_loop())

    def _log_degraded(self, error: str) -> None:
        self._down_since = self._clock.monotonic()
        log.warning(
            "shared_state_degraded",
            redis=self.url_for_log,
            replica=self.replica,
            error=error,
            hint="each replica goes on with its own state; it re-joins by itself when Redis "
            "answers again",
        )

    async def _reconnect_loop(self) -> None:
        for delay in k.retry_delays(*self._retry):
            await asyncio.sleep(delay)
            if self._closed:
                return
            if await self._connect() is None:
                log.info(
                    "shared_state_recovered",
                    redis=self.url_for_log,
                    replica=self.replica,
                    down_s=round(self._clock.monotonic() - self._down_since, 3),
                )
                return

    async def _connect(self) -> str | None:
        """Connect, subscribe, read the openings and write what was kept meanwhile; on
        success the state is ``redis``. Returns why it failed, None on success."""
        from redis.exceptions import RedisError

        client = pubsub_client = None
        pubsub = None
        try:
            client = self._make_client(self.timeout)
            # The subscriber waits for events for ever: no read timeout on its connection.
            pubsub_client = self._make_client(None)
            async with asyncio.timeout(self._connect_timeout):
                await client.ping()
                pubsub = pubsub_client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self._channel)
                openings = await self._read_openings(client)
                await self.budget.write_pending(client)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            await self._close_clients(client, pubsub_client, pubsub)
            return self._describe(exc)
        except Exception as exc:
            # Not an outage but a surprise (a bug, an odd server): still keep retrying.
            log.error("shared_state_connect_failed", error=self._describe(exc), exc_info=True)
            await self._close_clients(client, pubsub_client, pubsub)
            return self._describe(exc)
        if self._closed:
            await self._close_clients(client, pubsub_client, pubsub)
            return "closed"
        self._client, self._pubsub_client, self._pubsub = client, pubsub_client, pubsub
        self.budget.script = client.register_script(ADMIT)
        self._status = "redis"
        self._subscriber = self._spawn(self._subscribe_loop(pubsub))
        for opening in openings:
            self._deliver(opening)
        return None

    def _make_client(self, socket_timeout: float | None) -> Redis:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside redis-py: one bounded try, then the state degrades.
        return Redis.from_url(
            self._url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )

    async def _read_openings(self, client: Redis) -> list[Opening]:
        pattern = k.glob_escape(k.breaker_key(self.prefix, "")) + "*"
        names = [name async for name in client.scan_iter(match=pattern, count=500)]
        if not names:
            return []
        values = await client.mget(names)
        events = (k.decode_event(v) for v in values if v is not None)
        return [e for e in events if isinstance(e, Opening)]

    async def _close_clients(
        self, client: Redis | None, pubsub_client: Redis | None, pubsub: PubSub | None
    ) -> None:
        for closing in (
            pubsub.aclose() if pubsub is not None else None,  # type: ignore[no-untyped-call]
            pubsub_client.aclose() if pubsub_client is not None else None,
            client.aclose() if client is not None else None,
        ):
            if closing is None:
                continue
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await closing
            except Exception as exc:
                # A connection that will not close is dropped anyway.
                log.debug("shared_state_close_failed", error=self._describe(exc))

    # -- background tasks --------------------------------------------------------------------

    async def _subscribe_loop(self, pubsub: PubSub) -> None:
        from redis.exceptions import RedisError

        try:
            while pubsub.subscribed:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is None or message.get("type") != "message":
                    continue
                event = k.decode_event(message["data"])
                if event is not None:
                    self._deliver(event)
        except (RedisError, OSError) as exc:
            self._degrade(exc)
            return
        # Unsubscribed under us: without the channel this replica would miss openings.
        self._degrade(ConnectionError("the subscription ended"))

    def _deliver(self, event: Opening | Closing) -> None:
        listener = self._listener
        if listener is None or event.replica == self.replica:
            return
        try:
            if isinstance(event, Opening):
                listener.on_open(event.ref, event.until_wall, event.reason, event.openings)
            else:
                listener.on_close(event.ref)
        except Exception as exc:
            log.error("shared_state_listener_failed", ref=event.ref, error=repr(exc))

    async def _sync_loop(self) -> None:
        """Every ``sync_seconds``: hedging statistics both ways. Also notices a dead Redis when
        no request does."""
        while not self._closed:
            await asyncio.sleep(self._sync_seconds)
            with contextlib.suppress(Down):
                await self.sync()

    async def sync(self) -> None:
        """One sync round trip now (the sync task calls it; tests may too)."""
        out, self._ttft_out = self._ttft_out, {}
        refs = list(self._tracked)

        async def op(client: Redis) -> Any:
            async with client.pipeline(transaction=False) as pipe:
                for ref, values in out.items():
                    name = k.ttft_key(self.prefix, ref)
                    for seconds in values:
                        entry: dict[Any, Any] = {"r": self.replica, "s": seconds}
                        pipe.xadd(name, entry, maxlen=k.TTFT_WINDOW, approximate=True)
                    pipe.expire(name, k.TTFT_TTL_S)
                if refs:
                    seen = self._ttft_seen
                    streams = {k.ttft_key(self.prefix, r): seen.get(r, "0") for r in refs}
                    pipe.xread(streams, count=k.TTFT_WINDOW)  # type: ignore[arg-type]
                return (await pipe.execute())[-1] if refs else None

        read = await self._run("sync", op)
        self._deliver_ttft(read or [])

    def _deliver_ttft(self, read: Any) -> None:
        start = len(k.ttft_key(self.prefix, ""))
        for name, entries in read:
            ref = text(name)[start:]
            samples: list[float] = []
            for entry_id, fields in entries:
                self._ttft_seen[ref] = text(entry_id)
                if text(fields.get(b"r", b"")) == self.replica:
                    continue
                with contextlib.suppress(ValueError):
                    samples.append(float(fields.get(b"s", b"nan")))
            samples = [s for s in samples if 0 <= s < float("inf")]
            if samples and self._listener is not None and ref in self._tracked:
                try:
                    self._listener.on_ttft(ref, samples)
                except Exception as exc:
                    log.error("shared_state_listener_failed", ref=ref, error=repr(exc))

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return text
