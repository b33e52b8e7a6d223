"""A sliding-window counter, pure: at most N admissions in any W seconds.

Shared by the notification routes' flood control (:mod:`monitor.notify.flood`) and the pacing of
Binance's heavy REST reads (:mod:`monitor.exchange.rest`), so neither layer imports the other.
"""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """At most ``limit`` admissions in any sliding ``window`` seconds (no limit when None).

    >>> w = SlidingWindow(2, 60.0)
    >>> [w.admit(now) for now in (0.0, 0.0, 0.0, 59.0, 60.0)]
    [True, True, False, False, True]
    """

    def __init__(self, limit: int | None, window: float) -> None:
        self.limit, self.window = limit, window
        self._times: deque[float] = deque()

    def admit(self, now: float) -> bool:
        if self.limit is None:
            return True
        self._expire(now)
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

    def refund(self) -> None:
        """Undo the latest admission (its event turned out to be a duplicate)."""
        if self._times:
            self._times.pop()

    def force(self, now: float) -> None:
        """Count an admission whatever the limit (a summary)."""
        self._times.append(now)

    def next_free(self, now: float) -> float:
        """The earliest time an admission will succeed."""
        self._expire(now)
        if self.limit is None or len(self._times) < self.limit:
            return now
        return self._times[len(self._times) - self.limit] + self.window

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
