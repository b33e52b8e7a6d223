"""The scenario's timeline as one ordered stream of due items on the simulated time axis.

Items are price ticks, account events and faults; the cursor also yields the hourly interest
accrual (every 3600 simulated seconds since the start) and, when asked, a ticker flush every
``flush_every`` seconds (manual mode's stand-in for the 1 s miniTicker cadence). With
``loop: true`` the whole timeline (prices, events and faults) repeats every ``duration`` seconds
(default: the last item's time + 1 s); interest keeps accruing across loops.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from monitor.sim.scenario import Event, Fault, Scenario
from monitor.sim.sources import Tick

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Marker:
    """A clock-driven item: ``interest`` (hourly accrual) or ``flush`` (ticker cadence)."""

    kind: Literal["interest", "flush"]


INTEREST = Marker("interest")
FLUSH = Marker("flush")
Item = Tick | Event | Fault | Marker
_RANK = {Tick: 0, Event: 1, Fault: 2}


class Cursor:
    """Walks the timeline forward; :meth:`due` yields every item up to a time, in order."""

    def __init__(self, scenario: Scenario, flush_every: float | None = None) -> None:
        timeline = scenario.timeline
        items: list[Tick | Event | Fault] = [*scenario.ticks(), *timeline.events, *timeline.faults]
        entries = [
            (item.t if isinstance(item, Tick) else item.at, _RANK[type(item)], seq, item)
            for seq, item in enumerate(items)
        ]
        entries.sort(key=lambda e: (e[0], e[1], e[2]))
        last = entries[-1][0] if entries else 0.0
        self.period = (timeline.duration or last + 1.0) if timeline.loop and entries else 0.0
        if self.period:
            entries = [e for e in entries if e[0] < self.period]
        self._items = [(e[0], e[3]) for e in entries]
        self._index = 0
        self._cycle = 0
        self._next_hour = HOUR
        self._flush_every = flush_every
        self._next_flush = flush_every if flush_every else float("inf")
        self.now = 0.0

    def _next_item_time(self) -> float:
        if self._index >= len(self._items):
            if not self.period:
                return float("inf")
            self._index = 0
            self._cycle += 1
        return self._items[self._index][0] + self._cycle * self.period

    def next_due(self) -> float:
        """The simulated time of the next item (inf if none)."""
        return min(self._next_item_time(), self._next_hour, self._next_flush)

    def due(self, until: float) -> Iterator[tuple[float, Item]]:
        """Yield ``(time, item)`` for everything due at or before ``until``; ``now`` follows along."""
        while True:
            t_item = self._next_item_time()
            t = min(t_item, self._next_hour, self._next_flush)
            if t > until:
                break
            self.now = max(self.now, t)
            if t == t_item:
                item = self._items[self._index][1]
                self._index += 1
                yield t, item
            elif t == self._next_hour:
                self._next_hour += HOUR
                yield t, INTEREST
            else:
                assert self._flush_every is not None
                self._next_flush += self._flush_every
                yield t, FLUSH
        self.now = max(self.now, until)
