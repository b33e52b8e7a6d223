"""The daemon's one WebSocket connection budget, on the event loop (the core: ``conn_slots``).

Every connection attempt of every kind — market streams, WebSocket API user-data sessions, Risk Data
Streams — goes through :meth:`ConnectionBudget.connect_factory`'s factory: it waits for a slot of
the shared :class:`~monitor.exchange.conn_slots.SlotWindow` (Binance's 300 attempts per 5 minutes
per IP, kept under 250), then opens the connection. A handshake refused with HTTP 429 (or 418, a
ban) spends the budget for its ``Retry-After`` (a whole window when the server gives none), so no
attempt follows a refusal before then: a reconnect storm waits its turn instead of hammering.

One timer wakes the budget when the next slot frees; a waiter that is cancelled leaves the queue.
While an attempt waits, its session's silence watchdog is paused (``supervisor.watchdog_paused``):
a stream queued longer than its silence limit keeps its place instead of being ended "silent".
The surfaces read :meth:`ConnectionBudget.wait_of` (an attempt's place and ETA), the counters and
:meth:`waiting_by_kind` (``/metrics``). When attempts start waiting it is logged once
(``connection_budget_exhausted``), and once more when the queue is empty again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from monitor.exchange.conn_slots import BINANCE_LIMIT, LIMIT, WINDOW, Priority, SlotWindow, Wait
from monitor.exchange.supervisor import watchdog_paused

log = structlog.get_logger(__name__)

__all__ = ["WAIT_REASON", "ConnectionBudget", "Priority", "Wait", "describe_wait"]

ConnectFactory = Callable[[str], AbstractAsyncContextManager[ClientConnection]]
WAIT_REASON = f"waiting for a connection slot (Binance allows {BINANCE_LIMIT} per 5 min per IP)"
REFUSED = (429, 418)  # too many attempts / banned for not backing off


def retry_after(headers: Any) -> float | None:
    """The ``Retry-After`` seconds of a refused handshake's headers, if it has a usable one.

    >>> retry_after({"Retry-After": "12"}), retry_after({}), retry_after({"Retry-After": "soon"})
    (12.0, None, None)
    """
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class ConnectionBudget:
    """One per daemon (per host IP); see the module docstring. ``clock``: monotonic seconds."""

    def __init__(
        self,
        limit: int = LIMIT,
        window: float = WINDOW,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.core = SlotWindow(limit, window)
        self._clock = clock
        self._on_wait = on_wait  # an attempt starts waiting (its feed shows as not connected)
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._memo: tuple[float, dict[str, Wait]] | None = None
        self.granted = 0  # attempts let through since start
        self.refusals = 0  # handshakes refused by the server all the same (429/418)
        self._exhausted = False

    # -- the connection factory ---------------------------------------------------------------------
    def connect_factory(self, connect: ConnectFactory, name: str, priority: Priority) -> ConnectFactory:
        """``connect`` behind the budget: each call waits for a slot under ``name`` first."""

        @contextlib.asynccontextmanager
        async def budgeted(url: str) -> AsyncIterator[ClientConnection]:
            with watchdog_paused():  # no socket yet: the wait is not the connection's silence
                await self.acquire(name, priority)
            try:
                cm = connect(url)
                ws = await cm.__aenter__()
            except InvalidStatus as exc:
                self.done()
                if exc.response.status_code in REFUSED:
                    self.refused(name, exc.response.status_code, retry_after(exc.response.headers))
                raise
            except BaseException:
                self.done()
                raise
            self.done()  # the handshake is over: the attempt counts from now in the window
            try:
                yield ws
            except BaseException as exc:
                if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                await cm.__aexit__(None, None, None)

        return budgeted

    # -- slots ------------------------------------------------------------------------------------
    async def acquire(self, name: str, priority: Priority) -> None:
        """Wait for a slot (at once when one is free); cancelling gives the place up."""
        key, n = name, 1
        while key in self._futures:  # several connections of one name (market, market-2 share one)
            n += 1
            key = f"{name}#{n}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[key] = future
        self.core.request(key, priority)
        self._memo = None
        self._pump()
        if future.done():
            return
        if self._on_wait is not None:
            self._on_wait(name)
        try:
            await future
        except asyncio.CancelledError:
            if self._futures.pop(key, None) is not None:
                self.core.cancel(key)
                self._memo = None
            else:  # granted, then cancelled before it could connect: give the slot back
                self.done()
            raise

    def done(self) -> None:
        """A granted attempt's handshake ended (whatever the outcome)."""
        self.core.done(self._clock())
        self._pump()

    def refused(self, name: str, status: int, after: float | None) -> None:
        """A handshake of ``name`` was refused with ``status``: no attempt before it may be retried."""
        self.refusals += 1
        self.core.refused(self._clock(), after)
        wait = self.core.blocked_until - self._clock()
        log.warning(
            "connection_refused_rate_limited",
            connection=name,
            status=status,
            retry_after=after,
            next_attempt_in=round(wait, 1),
        )
        self._memo = None
        self._pump()

    def _pump(self) -> None:
        now = self._clock()
        for key in self.core.grant(now):
            self.granted += 1
            future = self._futures.pop(key, None)
            if future is not None and not future.done():
                future.set_result(None)
        self._memo = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.core.next_at(now)
        if at is None:
            if self._exhausted:
                self._exhausted = False
                log.info("connection_budget_caught_up", used=self.core.used(now), limit=self.core.limit)
            return
        if not self._exhausted:
            self._exhausted = True
            log.warning(
                "connection_budget_exhausted",
                waiting=len(self.core.order()),
                used=self.core.used(now),
                limit=self.core.limit,
                window=self.core.window,
                next_slot_in=None if at == math.inf else round(at - now, 1),
            )
        if at == math.inf:  # handshakes under way hold every slot: the next done() pumps
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, at - now), self._pump)

    # -- what the surfaces read -------------------------------------------------------------------
    def waits(self) -> dict[str, Wait]:
        """Every waiting attempt's place and ETA (seconds from now), memoised for a quarter second."""
        now = self._clock()
        if self._memo is None or now - self._memo[0] > 0.25:
            self._memo = (now, {k: Wait(w.ahead, w.eta - now) for k, w in self.core.waiting(now).items()})
        return self._memo[1]

    def wait_of(self, name: str) -> Wait | None:
        """``name``'s place in the queue and its ETA in seconds, or None when it is not waiting."""
        return self.waits().get(name)

    def waiting_by_kind(self) -> dict[str, int]:
        """How many attempts wait, by kind (``market``, ``userdata``, ``risk``)."""
        return {priority.name.lower(): n for priority, n in self.core.waiting_by_priority().items()}

    @property
    def limit(self) -> int:
        """Attempts allowed per window."""
        return self.core.limit

    def used(self) -> int:
        """Attempts inside the window now."""
        return self.core.used(self._clock())

    def close(self) -> None:
        """Stop the timer (shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def describe_wait(wait: Wait) -> str:
    """The wait in words, as status and the page show it.

    >>> describe_wait(Wait(ahead=37, eta=41.6))
    'waiting for a connection slot (Binance allows 300 per 5 min per IP): 37 ahead, slot in ~42 s'
    """
    return f"{WAIT_REASON}: {wait.ahead} ahead, slot in ~{max(0.0, wait.eta):.0f} s"
