"""A clock and ``call_later`` that move only when a test says so: timers fire in (time, arming) order,
a cancelled one never. For code that takes ``call_later`` (and a clock) as parameters."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualTime:
    """The clock starts at ``start``; :meth:`run_until` and :meth:`advance` move it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, Timer, Callable[[], None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer()
        heapq.heappush(self._timers, (self.now + delay, next(self._seq), timer, callback))
        return timer

    def pending(self) -> int:
        """Timers armed and not cancelled."""
        return sum(not t.cancelled for _, _, t, _ in self._timers)

    def run_until(self, until: float, *, inclusive: bool = False) -> None:
        """Fire every timer due before ``until`` (at it too if ``inclusive``), the clock left at
        ``until`` (at the last fired for ``inf``)."""
        while self._timers and (self._timers[0][0] <= until if inclusive else self._timers[0][0] < until):
            when, _, timer, callback = heapq.heappop(self._timers)
            if not timer.cancelled:
                self.now = when
                callback()
        if until != float("inf"):
            self.now = max(self.now, until)

    def advance(self, seconds: float) -> None:
        """``seconds`` on: every timer due by then fires (those due at the end too)."""
        self.run_until(self.now + seconds, inclusive=True)

    def run_all(self) -> None:
        """Fire every timer, the clock left at the last."""
        self.run_until(float("inf"))
