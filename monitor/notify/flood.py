"""Flood control: a sliding-window counter per notification route (pure; the caller passes time)."""

from __future__ import annotations

from collections import deque


class FloodGate:
    """At most ``limit`` admissions in any sliding ``window`` seconds (no limit when None)."""

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
