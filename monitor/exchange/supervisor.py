"""One reconnect shape for every long-lived connection.

A *session* is a coroutine that connects, reads until the connection ends, and returns (normal
close, e.g. Binance's 1001 24-hour disconnect) or raises. The supervisor runs sessions forever:

- errors are sorted once by ``classify``: fatal ones (``FatalError``: a revoked key) stop it and are
  re-raised; everything else, and a normal close, is retried;
- retries wait a jittered exponential delay that resets once a connection stayed up ``reset_after``
  seconds, and never give up;
- a watchdog treats silence as failure: no ``Heartbeat.beat()`` for ``silence`` seconds ends the
  session (the socket may be open but dead); a wait the session does on purpose is not silence:
  the session pauses it (``Heartbeat.pause``), and code deep in a connection attempt that has to
  queue (the connection budget) does so with ``watchdog_paused()`` without holding the heartbeat;
  the sessions of a loop share one watchdog timer (``monitor/exchange/watchdog.py``: a per-session
  timer, re-armed every ``silence`` seconds, kept ~2,000 objects at 1,000 accounts in the oldest
  generation for every full collection to walk);
- the reason is logged once per retry, and ``on_state`` hears every up/down transition.

Delays, clock, sleep and randomness are parameters so tests run in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import structlog

from monitor.exchange.errors import FatalError
from monitor.exchange.events import StreamState
from monitor.exchange.watchdog import release, shared_watchdog

log = structlog.get_logger(__name__)

Session = Callable[["Heartbeat"], Awaitable[str | None]]
StateHook = Callable[[StreamState], None]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential delays: ``initial * factor**attempt`` capped at ``maximum``.

    The delay is drawn from ``[d * (1 - jitter), d]``; a connection up for ``reset_after`` seconds
    resets the attempt counter, so a daily disconnect reconnects at once while a flapping server
    is approached ever more slowly.
    """

    initial: float = 0.25
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    reset_after: float = 30.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``attempt`` (0-based)."""
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return max(0.0, base * (1.0 - self.jitter * rand()))


class Heartbeat:
    """What a session tells its supervisor: connected, alive (any frame), or idle on purpose."""

    __slots__ = ("_clock", "_on_up", "_time", "last", "paused", "up_since")

    def __init__(
        self, time_fn: Callable[[], float], clock: Callable[[], float], on_up: Callable[[], None]
    ) -> None:
        self._time = time_fn
        self._clock = clock
        self._on_up = on_up
        self.last = time_fn()
        self.paused = False
        self.up_since: float | None = None

    def beat(self) -> None:
        """Record that the connection is alive (a frame or a pong arrived)."""
        self.last = self._time()

    def connected(self) -> None:
        """Record that the connection (and its subscriptions) are established."""
        self.last = self._time()
        if self.up_since is None:
            self.up_since = self._clock()
            self._on_up()

    def pause(self) -> None:
        """Suspend the silence watchdog (the session waits for work on purpose)."""
        self.paused = True

    def resume(self) -> None:
        """Re-arm the silence watchdog from now."""
        self.paused = False
        self.last = self._time()


_running: contextvars.ContextVar[Heartbeat | None] = contextvars.ContextVar("heartbeat", default=None)


@contextlib.contextmanager
def watchdog_paused() -> Iterator[None]:
    """Suspend the silence watchdog of the session running in this context while the block runs.

    A connection attempt queued for a slot of the connection budget has no socket to be silent on:
    counting that wait as silence ended a Risk Data Stream "silent for 60 s" after a minute in the
    queue, and sent it to the back of the queue to start over. Outside a supervised session, or
    when the session already paused its watchdog, it does nothing; the watchdog is re-armed from
    the end of the block (a handshake then has the whole silence limit)."""
    heartbeat = _running.get()
    if heartbeat is None or heartbeat.paused:
        yield
        return
    heartbeat.pause()
    try:
        yield
    finally:
        heartbeat.resume()


def is_fatal(exc: BaseException) -> bool:
    """The default sort: only ``FatalError`` stops a supervisor."""
    return isinstance(exc, FatalError)


def tell_state(hook: StateHook | None, state: StreamState) -> None:
    """``state`` to ``hook`` (a supervised session's, or one account's on a shared Risk Data Stream
    connection); a hook that raises is logged, never the stream's failure."""
    if hook is None:
        return
    try:
        hook(state)
    except Exception as exc:
        log.error("stream_state_hook_failed", stream=state.name, error=describe(exc))


def describe(exc: BaseException) -> str:
    """One short line naming an exception (type and message, newlines folded): python-binance can
    put a response's headers on later lines of its error.

    >>> describe(ValueError("bad\\nanswer\\n<CIMultiDictProxy('Content-Type': 'text/plain')>"))
    "ValueError: bad answer <CIMultiDictProxy('Content-Type': 'text/plain')>"
    """
    text = str(exc).replace("\n", " ").strip()
    name = type(exc).__name__
    line = f"{name}: {text}" if text else name
    return line if len(line) <= 200 else line[:197] + "..."


class Supervisor:
    """Run ``session`` forever under one reconnect policy; see the module docstring."""

    def __init__(
        self,
        name: str,
        session: Session,
        *,
        backoff: Backoff | None = None,
        silence: float | None = None,
        classify: Callable[[BaseException], bool] = is_fatal,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        on_state: StateHook | None = None,
    ) -> None:
        if silence is not None and not silence > 0:
            raise ValueError(f"silence must be positive seconds or None, not {silence!r}")
        self.name = name
        self._session = session
        self._backoff = backoff or Backoff()
        self._silence = silence
        self._classify = classify
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._on_state = on_state
        self.up: bool = False
        self.retries = 0
        self.last_reason = ""
        self._announced: bool | None = None

    async def run(self) -> None:
        """Connect, read, retry; returns never, raises on a fatal error or cancellation."""
        attempt = 0
        while True:
            heartbeat = Heartbeat(asyncio.get_running_loop().time, self._clock, self._mark_up)
            try:
                ended = await self._run_once(heartbeat)
                reason = ended or "connection closed"
            except asyncio.CancelledError:
                self._mark_down("stopped")
                raise
            except Exception as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # a cancel raced a failure (e.g. inside a TaskGroup) and was reported as the
                    # failure: honour the cancel, or the supervisor would loop on forever
                    self._mark_down("stopped")
                    raise asyncio.CancelledError from exc
                if self._classify(exc):
                    self._mark_down(describe(exc), fatal=True)
                    log.error("stream_fatal", stream=self.name, reason=describe(exc))
                    raise
                reason = describe(exc)
            healthy_for = 0.0 if heartbeat.up_since is None else self._clock() - heartbeat.up_since
            if healthy_for >= self._backoff.reset_after:
                attempt = 0
            delay = self._backoff.delay(attempt, self._rand)
            attempt += 1
            self.retries += 1
            self._mark_down(reason)
            log.warning(
                "stream_retry",
                stream=self.name,
                reason=reason,
                attempt=attempt,
                delay=round(delay, 3),
                up_for=round(healthy_for, 3),
            )
            await self._sleep(delay)

    async def _run_once(self, heartbeat: Heartbeat) -> str | None:
        running = _running.set(heartbeat)
        try:
            return await self._watched(heartbeat)
        finally:
            _running.reset(running)

    async def _watched(self, heartbeat: Heartbeat) -> str | None:
        if self._silence is None:
            return await self._session(heartbeat)
        loop = asyncio.get_running_loop()
        silence = self._silence
        ended = ""  # why the watchdog ended the session
        try:
            async with asyncio.timeout(None) as deadline:

                def end(failure: Exception | None) -> None:
                    nonlocal ended
                    if failure is None:
                        ended = f"silent for {silence:g} s"
                    else:
                        ended = f"silence watchdog failed: {describe(failure)}"
                    deadline.reschedule(loop.time())

                watchdog = shared_watchdog()  # the loop's one timer for every session (watchdog.py)
                watch = watchdog.watch(heartbeat, silence, end)
                try:
                    return await self._session(heartbeat)
                finally:
                    release(watchdog, watch)
        except TimeoutError:
            if deadline.expired() and ended:
                return ended
            raise

    def _mark_up(self) -> None:
        self.up = True
        if self._announced is not True:
            self._announced = True
            log.info("stream_up", stream=self.name)
            self._emit(StreamState(self.name, True, "connected"))

    def _mark_down(self, reason: str, *, fatal: bool = False) -> None:
        self.up = False
        self.last_reason = reason
        if self._announced is not False or fatal:
            self._announced = False
            self._emit(StreamState(self.name, False, reason, fatal))

    def _emit(self, state: StreamState) -> None:
        tell_state(self._on_state, state)
