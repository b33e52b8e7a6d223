"""The shared pinger's schedule, without I/O (``monitor/exchange/pinger.py`` drives it on the loop).

A heap of registered connections by the time each is next due. :meth:`PingHeap.take` hands out
what is due at ``now``, at most ``cap`` actions a call (1; 4 when the earliest due is more than
``behind`` seconds late), so that a caller taking once per event-loop turn never bunches pings.
Per connection: ping, then wait ``min(interval, timeout)``; a ping still unanswered ``timeout``
seconds after it is :data:`Action.DEAD` (no second ping meanwhile); an answered one is pinged
again ``interval`` seconds after the last ping.

>>> heap: PingHeap[str] = PingHeap()
>>> a = heap.add("a", interval=20.0, timeout=20.0, now=0.0, first=5.0)
>>> heap.next_due(), heap.take(4.0), [(s.item, act.name) for s, act in heap.take(5.0)]
(5.0, [], [('a', 'PING')])
>>> heap.answered(a); [(s.item, act.name) for s, act in heap.take(25.0)]
[('a', 'PING')]
>>> [(s.item, act.name) for s, act in heap.take(45.0)]  # unanswered for 20 s
[('a', 'DEAD')]
"""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

BEHIND = 1.0  # s late past which a turn may send more than one ping
CAP_BEHIND = 4  # pings a turn may send then


class Action(enum.Enum):
    """What the caller does for a connection that came due."""

    PING = "ping"
    DEAD = "dead"  # its ping went unanswered for the pong timeout


@dataclass(eq=False, slots=True)
class Slot(Generic[T]):
    """One registered connection: its item (the caller's), timings and ping state."""

    item: T
    interval: float
    timeout: float
    due: float
    sent: float = float("-inf")  # when its last ping went out
    waiting: bool = False  # that ping is unanswered
    live: bool = True  # registered (False once removed or found dead)
    order: int = 0  # ties of ``due`` go first come, first served (set at each push)

    def __lt__(self, other: Slot[T]) -> bool:
        """Heap order: ``due``, then push order. ``due`` changes only while the slot is out of the
        heap (:meth:`step` runs on a popped slot), so the order of what is in it never moves."""
        return (self.due, self.order) < (other.due, other.order)

    def step(self, now: float) -> Action | None:
        """What is due at ``now``, moving ``due`` on; None: only re-checked later."""
        if self.waiting:
            if now >= self.sent + self.timeout:
                return Action.DEAD
            self.due = self.sent + self.timeout
            return None
        if now < self.sent + self.interval:  # answered before an early pong check
            self.due = self.sent + self.interval
            return None
        self.sent = now
        self.waiting = True
        self.due = now + min(self.interval, self.timeout)
        return Action.PING


@dataclass(eq=False)
class PingHeap(Generic[T]):
    """The due-time heap of every registered connection (removal is lazy, compacted when it pays).

    The heap holds the slots themselves: a ``(due, order, slot)`` tuple per push lived a whole
    ping interval, long enough to reach the collector's oldest generation, and CPython cannot
    untrack a tuple that holds a slot (a census at 1,000 connections: ~520 of them, walked by every
    full collection; docs/benchmarks.md, session 12)."""

    behind: float = BEHIND
    cap_behind: int = CAP_BEHIND
    _heap: list[Slot[T]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    size: int = 0  # live slots

    def add(self, item: T, *, interval: float, timeout: float, now: float, first: float) -> Slot[T]:
        """Register ``item``; its first ping is due ``first`` seconds from ``now``."""
        slot = Slot(item, interval, timeout, now + first)
        self._push(slot)
        self.size += 1
        return slot

    def remove(self, slot: Slot[T]) -> None:
        """Unregister (idempotent): the slot is never handed out again."""
        if slot.live:
            slot.live = False
            self.size -= 1
            if len(self._heap) > 64 and len(self._heap) > 2 * self.size:
                self._heap = [entry for entry in self._heap if entry.live]
                heapq.heapify(self._heap)

    def answered(self, slot: Slot[T]) -> None:
        """Its ping's pong arrived."""
        slot.waiting = False

    def clear(self) -> list[Slot[T]]:
        """Unregister every slot; returns the ones that were live."""
        live = [entry for entry in self._heap if entry.live]
        for slot in live:
            slot.live = False
        self._heap.clear()
        self.size = 0
        return live

    def next_due(self) -> float | None:
        """When the earliest live slot is due; None when nothing is registered."""
        heap = self._heap
        while heap and not heap[0].live:
            heapq.heappop(heap)
        return heap[0].due if heap else None

    def take(self, now: float) -> list[tuple[Slot[T], Action]]:
        """The actions due at ``now``: at most one, or ``cap_behind`` when more than ``behind`` s late.
        A slot found dead is unregistered; the others are rescheduled."""
        earliest = self.next_due()
        if earliest is None or earliest > now:
            return []
        cap = self.cap_behind if now - earliest > self.behind else 1
        taken: list[tuple[Slot[T], Action]] = []
        heap = self._heap
        while len(taken) < cap and heap and heap[0].due <= now:
            slot = heapq.heappop(heap)
            if not slot.live:
                continue
            action = slot.step(now)
            if action is Action.DEAD:
                slot.live = False
                self.size -= 1
            else:
                self._push(slot)
            if action is not None:
                taken.append((slot, action))
        return taken

    def _push(self, slot: Slot[T]) -> None:
        slot.order = next(self._order)
        heapq.heappush(self._heap, slot)
