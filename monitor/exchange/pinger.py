"""One pinger per event loop for every probed connection (risk and user-data streams, issue #12).

A connection per account used to run its own ``probe`` coroutine: ~1,000 tasks each sleeping and
pinging, whose pings still met in single loop turns and whose timers the GC walked. Here one
:class:`SharedPinger` keeps them all in a due-time heap (:mod:`monitor.exchange.ping_heap`, no
I/O) under ONE ``loop.call_at`` timer, armed for the earliest due connection. A wake sends at most
one ping per loop turn (four when more than 1 s behind) and comes back with ``call_soon`` for the
rest, so pings never bunch. Each registration has a ``dead`` future: a pong beats the connection's
heartbeat; a ping unanswered for its pong timeout fails ``dead`` with ``Reconnect``; a failed ping
(the connection closed) fails it with that error. If the pinger itself fails, it fails every
``dead`` future (every session reconnects; none is left un-pinged) and logs ``pinger_failed``.

:func:`shared_pinger` returns the running loop's pinger; ``monitor.exchange.userdata.probe``
registers with it for as long as its session lasts.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import structlog
from websockets.asyncio.client import ClientConnection

from monitor.exchange.errors import Reconnect
from monitor.exchange.per_loop import EarliestWake, PerLoop
from monitor.exchange.ping_heap import Action, PingHeap, Slot
from monitor.exchange.supervisor import Heartbeat, describe

log = structlog.get_logger(__name__)

# asyncio runs a timer up to one clock resolution early: a wake counts as that much later
RESOLUTION = time.get_clock_info("monotonic").resolution


@dataclass(eq=False, slots=True)
class Pinged:
    """One registered connection: what to ping, whom to tell."""

    ws: ClientConnection
    heartbeat: Heartbeat
    dead: asyncio.Future[None] = field(repr=False)


Registration = Slot[Pinged]


class SharedPinger:
    """Pings every registered connection from one timer on ``loop``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        schedule: PingHeap[Pinged] | None = None,
        spread: Callable[[], float] = random.random,
    ) -> None:
        self.loop = self._loop = loop
        self.schedule: PingHeap[Pinged] = schedule if schedule is not None else PingHeap()
        self._spread = spread
        # the one timer, for the earliest due; its wakes run in one empty context of their own: not a
        # copy of whichever session armed it (its bound log fields on pinger_failed), none per wake
        self.wake = EarliestWake(loop, self._wake, contextvars.Context())
        self._pings: set[asyncio.Task[None]] = set()  # pings in flight (one loop step each)
        self.failures = 0

    def register(
        self, ws: ClientConnection, heartbeat: Heartbeat, interval: float, pong_timeout: float
    ) -> Registration:
        """Ping ``ws`` every ``interval`` s, the first after a random part of it (connections opened
        together do not ping together); await the registration's ``item.dead``."""
        slot = self.schedule.add(
            Pinged(ws, heartbeat, self._loop.create_future()),
            interval=interval,
            timeout=pong_timeout,
            now=self._loop.time(),
            first=self._spread() * interval,
        )
        self.wake.arm(slot.due)
        return slot

    def unregister(self, slot: Registration) -> None:
        """Stop pinging (idempotent); the timer goes with the last registration."""
        self.schedule.remove(slot)
        dead = slot.item.dead
        if dead.done() and not dead.cancelled():
            dead.exception()  # retrieved: a session cancelled as it failed logs nothing
        if self.schedule.size == 0:
            self.wake.cancel()

    # -- the loop's side ------------------------------------------------------------------------

    def _wake(self) -> None:
        self.wake.fired()
        try:
            now = self._loop.time() + RESOLUTION
            for slot, action in self.schedule.take(now):
                if action is Action.PING:
                    task = self._loop.create_task(self._ping(slot))
                    self._pings.add(task)
                    task.add_done_callback(self._pings.discard)
                else:
                    self._end(slot, Reconnect(f"no pong within {slot.timeout:g} s"))
            due = self.schedule.next_due()
            if due is not None and due <= now:  # more due: the next turn, not this one
                self.wake.soon(now)
            elif due is not None:
                self.wake.arm(due)
        except Exception as exc:
            self._fail_all(exc)

    async def _ping(self, slot: Registration) -> None:
        try:
            pong = asyncio.ensure_future(await slot.item.ws.ping())  # (the future websockets made)
        except Exception as exc:  # closed meanwhile: the session ends with that error
            if slot.live:  # (else it ended already: nobody awaits its future)
                self.schedule.remove(slot)
                self._end(slot, exc)
            return
        pong.add_done_callback(partial(self._answered, slot))

    def _answered(self, slot: Registration, pong: asyncio.Future[float]) -> None:
        if pong.cancelled() or pong.exception() is not None:  # (retrieved: never logged)
            return
        try:
            self.schedule.answered(slot)
            slot.item.heartbeat.beat()
        except Exception as exc:
            self._fail_all(exc)

    @staticmethod
    def _end(slot: Registration, exc: BaseException) -> None:
        if not slot.item.dead.done():
            slot.item.dead.set_exception(exc)

    def _fail_all(self, exc: Exception) -> None:
        """Every session reconnects (and registers again) rather than go on un-pinged."""
        self.failures += 1
        failed = self.schedule.clear()
        log.error("pinger_failed", error=describe(exc), connections=len(failed))
        self.wake.cancel()
        for slot in failed:
            self._end(slot, Reconnect(f"pinger failed: {describe(exc)}"))


_pingers: PerLoop[SharedPinger] = PerLoop(SharedPinger)  # one per loop, while it has connections


def shared_pinger() -> SharedPinger:
    """The running loop's pinger (made on first use)."""
    return _pingers.get()


def release(pinger: SharedPinger, slot: Registration) -> None:
    """Unregister ``slot``; a pinger left with no connection is dropped (a closed loop leaves none)."""
    pinger.unregister(slot)
    if pinger.schedule.size == 0:
        _pingers.forget(pinger.loop, pinger)
