"""When one account is next re-read by REST: after events, while its views disagree, after a failure.

A burst of events is coalesced into one read :data:`DEBOUNCE` later; a read whose answer disagreed
with the streams is repeated about :data:`AGAIN` later; a failed read is retried at once with
jittered backoff capped at 2 s. Only the time of the next read is kept (``at``, clock time): an
earlier request moves it earlier, a later one leaves it.

An idle account holds nothing on the event loop (issue #12). Each account used to run a
``refresh_loop`` task for the daemon's life, idling in ``Rereads.wait`` → ``asyncio.Event.wait``: a
Task, two coroutines, a Future, its iterator, its callbacks and the Task's wake-up method per
account. At 1,000 accounts that chain was the largest group in the oldest generation 70 s after
ready (~720 accounts × 6 = ~4,300 objects, ~16,000 references), walked by every full collection
(5.5-10 ms each), and each event made a fresh chain that idled into that generation again. Now, once
:meth:`Rereads.run` is given a way to start tasks, a pending re-read arms ONE timer
(``call_later``) for its due time, moved earlier by an earlier request and left by a later one. When
it fires, one short-lived task (started through ``spawn``, so the daemon's ``Tasks`` logs its failure
and cancels it at shutdown) does the re-read, and the next if it is due by then, and ends when none
is; never two at once: a request meanwhile is taken by that task, or arms the timer when it ends.
:meth:`Rereads.stop` (shutdown) cancels the timer and starts nothing more. Without ``run`` (tests on
manual time) nothing is armed: the caller takes due reads itself (``take_due``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from monitor.exchange.supervisor import Backoff

DEBOUNCE = 0.2  # s: a burst of events is re-read once
AGAIN = 0.25  # s: REST answered but disagreed with the streams (behind or ahead): ask again soon
REREAD_BACKOFF = Backoff(initial=0.25, maximum=2.0, factor=2.0, jitter=0.5)  # a failed re-read


class Timer(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Timer]
Spawn = Callable[[Coroutine[Any, Any, None], str], object]  # starts and keeps a task (``Tasks.spawn``)
Read = Callable[[], Coroutine[Any, Any, None]]  # one re-read; it reports back by answered/failed


class Rereads:
    """The next re-read of one account, and the timer and task that do it (see the module docstring)."""

    def __init__(
        self,
        clock: Callable[[], float],
        rand: Callable[[], float],
        *,
        read: Read | None = None,
        name: str = "reread",
        call_later: CallLater | None = None,
    ) -> None:
        self.clock = clock
        self.rand = rand
        self.at: float | None = None  # when the next REST re-read is due (clock time)
        self.failures = 0  # re-reads failed in a row
        self.reading = False  # a re-read task is running
        self._read = read
        self._name = name  # of the re-read task
        self._call_later = call_later  # None: the running loop's
        self._spawn: Spawn | None = None  # set by ``run``, dropped by ``stop``
        self._timer: Timer | None = None  # armed only while a re-read is pending and no task runs
        self._timer_at: float | None = None

    @property
    def timer_at(self) -> float | None:
        """When the armed timer fires (clock time); None: no timer."""
        return self._timer_at

    def run(self, spawn: Spawn) -> None:
        """From now on, do every re-read when due, in a task started by ``spawn``."""
        self._spawn = spawn
        self._arm()

    def stop(self) -> None:
        """Cancel the timer and start no task any more (shutdown); a running task is its owner's."""
        self._spawn = None
        self._disarm()

    def request(self, delay: float = DEBOUNCE) -> None:
        """Re-read in ``delay`` seconds (or sooner, if already due sooner)."""
        at = self.clock() + delay
        if self.at is None or at < self.at:
            self.at = at
            self._arm()

    def take_due(self) -> bool:
        """True (and the read is no longer pending) when a re-read is due by now."""
        if self.at is None or self.at > self.clock():
            return False
        self.at = None
        self._disarm()
        return True

    def failed(self) -> float:
        """A re-read failed: retry with backoff; the delay chosen."""
        retry = REREAD_BACKOFF.delay(self.failures, self.rand)
        self.failures += 1
        self.request(retry)
        return retry

    def answered(self, *, disagreed: bool) -> None:
        """A re-read answered; if it disagreed with the streams, ask again shortly (jittered)."""
        self.failures = 0
        if disagreed:
            self.request(AGAIN * (0.8 + 0.4 * self.rand()))

    # -- the timer and the task -----------------------------------------------------------------
    def _arm(self) -> None:
        """The timer for ``at``, if running, pending and no task runs (that task takes it, or arms
        the timer as it ends)."""
        at = self.at
        if self._spawn is None or self._read is None or self.reading or at is None:
            return
        if self._timer_at is not None and self._timer_at <= at:
            return
        self._disarm()
        call_later = self._call_later or asyncio.get_running_loop().call_later
        self._timer_at = at
        self._timer = call_later(max(0.0, at - self.clock()), self._fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        if self._spawn is None or self.reading:
            return
        if self.at is None or self.at > self.clock():  # early by our clock (not the loop's): again
            self._arm()
            return
        self.reading = True
        self._spawn(self._reread_due(), self._name)

    async def _reread_due(self) -> None:
        """The re-read task: every re-read due by now, one after the other, then it ends."""
        assert self._read is not None  # armed only with one
        try:
            while self.take_due():
                await self._read()
        finally:
            self.reading = False
            self._arm()  # one asked meanwhile for later (not after ``stop``)
