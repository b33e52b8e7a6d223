"""One silence watchdog per event loop for every supervised session (issue #12).

Each supervised stream (1,000 risk streams, the user-data and market streams) used to keep its own
silence timer in ``Supervisor._watched``, re-armed every ``silence`` seconds while healthy: a new
``TimerHandle`` and ``contextvars.Context`` each time, old enough by then to sit in the oldest
generation. At 1,000 accounts those were ~2,000 objects and ~11,000 references walked by every full
collection (5.5-10 ms every 35-70 s under load), and ~1,000 live handles in the loop's heap kept
asyncio from purging the cancelled ones (it purges only above half the heap).

Here one :class:`SharedWatchdog` keeps every session in a deadline heap
(:mod:`monitor.exchange.silence_heap`, no I/O) under ONE ``loop.call_at`` timer, armed for the
earliest deadline, in one empty ``Context`` of its own (a wake copies none). A wake ends each
silent session through its ``end`` callback (``end(None)``); a re-check of a session that beat
meanwhile only re-queues a tuple of two numbers. If the watchdog itself fails, it calls ``end(exc)``
for every registered session (each reconnects and registers again; none goes on unwatched) and logs
``watchdog_failed`` once.

:func:`shared_watchdog` returns the running loop's watchdog; ``Supervisor._watched`` registers with
it for as long as its session lasts and leaves with :func:`release`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

import structlog

from monitor.exchange.per_loop import EarliestWake, PerLoop
from monitor.exchange.silence_heap import Beats, SilenceHeap, Watch

log = structlog.get_logger(__name__)

End = Callable[[Exception | None], None]  # None: silent; an exception: the watchdog failed with it
Registration = Watch[End]


class SharedWatchdog:
    """Ends every registered session that stays silent, from one timer on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, schedule: SilenceHeap[End] | None = None) -> None:
        self.loop = loop
        self.schedule: SilenceHeap[End] = schedule if schedule is not None else SilenceHeap()
        # the one timer, for the earliest deadline; its wakes run in one empty context of their own
        # (no session's, no copy per wake)
        self.wake = EarliestWake(loop, self._wake, contextvars.Context())
        self.failures = 0

    def watch(self, heartbeat: Beats, silence: float, end: End) -> Registration:
        """Call ``end(None)`` once ``heartbeat`` has not beaten for ``silence`` seconds (never while
        paused); ``end(exc)`` if the watchdog fails. Registered until :meth:`unwatch` or ``end``."""
        watch = self.schedule.add(end, heartbeat, silence=silence)
        self.wake.arm(heartbeat.last + silence)
        return watch

    def unwatch(self, watch: Registration) -> None:
        """Stop watching (idempotent); the timer goes with the last registration."""
        self.schedule.remove(watch)
        if self.schedule.size == 0:
            self.wake.cancel()

    # -- the loop's side ------------------------------------------------------------------------

    def _wake(self) -> None:
        self.wake.fired()
        silent: list[Registration] = []
        try:
            silent = self.schedule.take(self.loop.time())
            while silent:
                silent[-1].item(None)
                silent.pop()  # (after its end ran: a failing one is ended again by _fail_all)
            due = self.schedule.next_due()
            if due is not None:
                self.wake.arm(due)
        except Exception as exc:
            self._fail_all(exc, silent)

    def _fail_all(self, exc: Exception, taken: list[Registration]) -> None:
        """Every session ends (and registers again) rather than go on unwatched."""
        self.failures += 1
        failed = taken + self.schedule.clear()
        self.wake.cancel()
        unended = 0
        for watch in failed:
            try:
                watch.item(exc)
            except Exception:  # (counted in the one line below; the others are still ended)
                unended += 1
        log.error("watchdog_failed", error=repr(exc), sessions=len(failed), unended=unended)


_watchdogs: PerLoop[SharedWatchdog] = PerLoop(SharedWatchdog)  # one per loop, while it has sessions


def shared_watchdog() -> SharedWatchdog:
    """The running loop's watchdog (made on first use)."""
    return _watchdogs.get()


def release(watchdog: SharedWatchdog, watch: Registration) -> None:
    """Unwatch ``watch``; a watchdog left with no session is dropped (a closed loop leaves none)."""
    watchdog.unwatch(watch)
    if watchdog.schedule.size == 0:
        _watchdogs.forget(watchdog.loop, watchdog)
