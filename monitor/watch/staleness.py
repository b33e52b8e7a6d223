"""Which of one account's units are stale ("blind") now (pure: times and sets in, units out).

A unit is stale when a symbol it is priced by has no fresh price, when its views have disagreed
(settling) for longer than ``limit``, or, for every unit of the account, when REST has not
answered for longer than both ``limit`` and three snapshot intervals. An account loaded less than
``limit`` ago is not judged yet: its symbols' first prices are still due.

Asking every account each second costs ~1 µs each on a quiet machine, 3-7 ms for 1,000 accounts on
a loaded one (bench/crash.py), in the loop turn that must not yield (monitor/app/periodic.py).
:class:`RestDeadlines` keeps the accounts ordered by when REST silence can first make them stale,
so a second looks only at those due; the daemon asks the others only when one of their units is
settling or a symbol is stale (``monitor.app.periodic.Staleness``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


@dataclass(slots=True)
class Freshness:
    """What the staleness of one account's units is judged on, at ``now``. Not frozen: built once a
    second for every account (1,000), where a frozen dataclass's ``__init__`` costs 4x as much."""

    now: float
    loaded_at: float
    last_snapshot: float
    snapshot_interval: float
    limit: float


def silent_after(snapshot_interval: float, limit: float) -> float:
    """Seconds without a REST answer after which every unit of a loaded account is stale."""
    return max(3 * snapshot_interval, limit)


def stale_units(
    units: Set[str],
    times: Freshness,
    settling: Mapping[str, float],
    stale_symbols: Set[str],
    symbols_of: Callable[[str], Set[str]],
) -> set[str]:
    """The stale units among ``units`` (see the module docstring); ``settling``: unit → since."""
    now, limit = times.now, times.limit
    if now - times.loaded_at < limit:
        return set()  # loaded just now (late, after an outage): its symbols' first prices are due
    if now - times.last_snapshot > silent_after(times.snapshot_interval, limit):
        return set(units)
    unconfirmed = {u for u in units if u in settling and now - settling[u] > limit} if settling else set()
    if not stale_symbols:  # the usual case: skip building every unit's symbol set each second
        return unconfirmed
    return unconfirmed | {u for u in units if symbols_of(u) & stale_symbols}


class Watched(Protocol):
    """What :class:`RestDeadlines` reads of an account's watcher."""

    @property
    def loaded(self) -> bool: ...

    @property
    def enabled(self) -> bool: ...

    def rest_silent(self, now: float, limit: float) -> bool:
        """REST has been silent too long: every unit stale (``now - last_snapshot > silent_after``)."""
        ...

    def rest_deadline(self, limit: float) -> float:
        """When REST silence first makes every unit stale: ``last_snapshot + silent_after``."""
        ...


W = TypeVar("W", bound=Watched)

# a deadline is taken this much early, so that the exact test (a subtraction) decides at the edge
EARLY = 1e-3


class RestDeadlines(Generic[W]):
    """The watchers whose REST silence can make their units stale at ``now``, found without looking
    at each watcher every second.

    Every watcher is in exactly one of three places:

    - **waiting**: not loaded, or disabled: none of its units is judged (looked at each call: none
      in the steady state, all during start-up);
    - **the heap**, by deadline: loaded, and REST answered recently enough; its deadline was taken
      from a ``last_snapshot`` no later than the current one (which only moves forward: it is the
      clock's time of the last answer), so it is never later than the true deadline. A watcher is
      looked at when its deadline passes: if it answered meanwhile it goes back with the new
      deadline, ~once per ``silent_after`` (3 snapshot intervals) per watcher;
    - **silent**: REST silent too long now: looked at every call until it answers again.

    :meth:`due` returns the silent ones; each watcher in the heap with a deadline still ahead has no
    unit stale for REST silence, so it need not be asked. A clock that went back (a wall-clock step)
    or a changed watcher list puts every watcher back to waiting: their deadlines are taken anew.
    """

    def __init__(self, watchers: Sequence[W]) -> None:
        self.watchers = watchers
        self.looked_at = 0  # watchers looked at in the last call (tests: only the due ones)
        self._reset()

    def _reset(self) -> None:
        self._count = len(self.watchers)
        self._waiting: set[int] = set(range(self._count))
        self._heap: list[tuple[float, int]] = []
        self._silent: set[int] = set()
        self._last_now = -float("inf")

    def due(self, now: float, limit: float) -> list[W]:
        """The watchers whose REST has been silent for too long at ``now``."""
        if now < self._last_now or len(self.watchers) != self._count:
            self._reset()
        self._last_now = now
        watchers, heap = self.watchers, self._heap
        back: list[int] = []  # to the heap, with their new deadlines
        looked = 0
        silent, self._silent = self._silent, set()
        for i in silent:  # until REST answers again
            looked += 1
            self._place(i, now, limit, back)
        looked += len(self._waiting)  # none in the steady state: all loaded
        for i in [i for i in self._waiting if watchers[i].loaded and watchers[i].enabled]:
            self._waiting.discard(i)
            self._place(i, now, limit, back)
        while heap and heap[0][0] <= now:
            _, i = heapq.heappop(heap)
            looked += 1
            self._place(i, now, limit, back)
        for i in back:  # after the pops: a deadline within EARLY of now is looked at next call, not again now
            heapq.heappush(heap, (watchers[i].rest_deadline(limit) - EARLY, i))
        self.looked_at = looked
        return [watchers[i] for i in sorted(self._silent)]

    def _place(self, i: int, now: float, limit: float, back: list[int]) -> None:
        w = self.watchers[i]
        if not (w.loaded and w.enabled):
            self._waiting.add(i)
        elif w.rest_silent(now, limit):
            self._silent.add(i)
        else:
            back.append(i)
