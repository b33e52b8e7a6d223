"""When one account is next re-read by REST: after events, while its views disagree, after a failure.

A burst of events is coalesced into one read :data:`DEBOUNCE` later; a read whose answer disagreed
with the streams is repeated about :data:`AGAIN` later; a failed read is retried at once with
jittered backoff capped at 2 s. Only the time of the next read is kept (``at``, clock time): an
earlier request moves it earlier, a later one leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from monitor.exchange.supervisor import Backoff

DEBOUNCE = 0.2  # s: a burst of events is re-read once
AGAIN = 0.25  # s: REST answered but disagreed with the streams (behind or ahead): ask again soon
REREAD_BACKOFF = Backoff(initial=0.25, maximum=2.0, factor=2.0, jitter=0.5)  # a failed re-read


class Rereads:
    """The next re-read of one account (see the module docstring)."""

    def __init__(self, clock: Callable[[], float], rand: Callable[[], float]) -> None:
        self.clock = clock
        self.rand = rand
        self.at: float | None = None  # when the next REST re-read is due (clock time)
        self.failures = 0  # re-reads failed in a row
        self._wake = asyncio.Event()

    def request(self, delay: float = DEBOUNCE) -> None:
        """Re-read in ``delay`` seconds (or sooner, if already due sooner)."""
        at = self.clock() + delay
        if self.at is None or at < self.at:
            self.at = at
            self._wake.set()

    def take_due(self) -> bool:
        """True (and the read is no longer pending) when a re-read is due by now."""
        if self.at is None or self.at > self.clock():
            return False
        self.at = None
        return True

    async def wait(self) -> None:
        """Return when a re-read may be due: the time requested came, or an earlier one was asked."""
        self._wake.clear()
        due = self.at
        if due is None:
            await self._wake.wait()
            return
        delay = due - self.clock()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

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
