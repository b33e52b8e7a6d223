"""The shared silence watchdog's schedule, without I/O (``monitor/exchange/watchdog.py`` drives it).

Why shared (issue #12): each supervised stream used to keep its own ``loop.call_at`` timer, re-armed
every ``silence`` seconds while the stream was healthy. Each re-arm made a ``TimerHandle`` and a
``contextvars.Context`` that lived long enough to reach the oldest generation: at 1,000 accounts
~2,000 objects and ~11,000 references that every full collection walked (5.5-10 ms stalls). Here one
heap holds every watched heartbeat by its deadline ``last + silence``, and the driver keeps one timer
for the earliest.

The deadlines are exact and re-checked lazily: a beat does not touch the heap; when an entry comes
due, the heartbeat is read again. Beaten meanwhile: the entry is queued again at ``last + silence``;
paused: again ``silence`` from now (``resume`` sets ``last``, so the whole limit follows); otherwise
the watch is silent, handed out once and unregistered. Heap entries are ``(deadline, key)`` tuples of
a float and an int, which CPython untracks at their first young collection: a re-check leaves no
long-lived object for the GC to walk. Removal is lazy (a removed key's entry is skipped), compacted
when stale entries outnumber live ones.

>>> class Beat:
...     last, paused = 0.0, False
>>> heap: SilenceHeap[str] = SilenceHeap()
>>> beat = Beat()
>>> watch = heap.add("a", beat, silence=10.0)
>>> heap.next_due(), heap.take(9.0)
(10.0, [])
>>> beat.last = 4.0  # a frame came at 4 s: re-checked at 10 s, due again at 14 s
>>> heap.take(10.0), heap.next_due()
([], 14.0)
>>> [w.item for w in heap.take(14.0)], heap.size, heap.next_due()
(['a'], 0, None)
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class Beats(Protocol):
    """What the watchdog reads of a heartbeat (``supervisor.Heartbeat`` is one)."""

    @property
    def last(self) -> float:
        """When it last beat (the watchdog's clock)."""

    @property
    def paused(self) -> bool:
        """It waits on purpose: never silent."""


@dataclass(eq=False, slots=True)
class Watch(Generic[T]):
    """One watched heartbeat: the caller's item, the heartbeat and its silence limit."""

    item: T
    beats: Beats
    silence: float
    key: int


@dataclass(eq=False)
class SilenceHeap(Generic[T]):
    """Every watched heartbeat by deadline; see the module docstring."""

    _heap: list[tuple[float, int]] = field(default_factory=list)  # one entry per live watch, + stale
    _watches: dict[int, Watch[T]] = field(default_factory=dict)  # the live ones, by key
    _keys: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def size(self) -> int:
        """Live watches."""
        return len(self._watches)

    def add(self, item: T, beats: Beats, *, silence: float) -> Watch[T]:
        """Watch ``beats``: silent once it has not beaten for ``silence`` seconds (unless paused)."""
        if not silence > 0:
            raise ValueError(f"silence must be positive, not {silence!r}")
        watch = Watch(item, beats, silence, next(self._keys))
        self._watches[watch.key] = watch
        heapq.heappush(self._heap, (beats.last + silence, watch.key))
        return watch

    def remove(self, watch: Watch[T]) -> None:
        """Stop watching (idempotent): the watch is never handed out again."""
        if self._watches.pop(watch.key, None) is not None:
            heap = self._heap
            if len(heap) > 64 and len(heap) > 2 * len(self._watches):
                self._heap = [entry for entry in heap if entry[1] in self._watches]
                heapq.heapify(self._heap)

    def clear(self) -> list[Watch[T]]:
        """Stop watching everything; returns the watches that were live."""
        live = list(self._watches.values())
        self._watches.clear()
        self._heap.clear()
        return live

    def next_due(self) -> float | None:
        """The earliest deadline of a live watch (may be a re-check); None when nothing is watched."""
        heap = self._heap
        while heap and heap[0][1] not in self._watches:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def take(self, now: float) -> list[Watch[T]]:
        """The watches silent at ``now`` (no beat since ``now - silence``, not paused), unregistered;
        the other entries due are queued again. Each entry is looked at once a call. If reading a
        heartbeat raises, the watches are all still registered: ``clear`` hands them out."""
        heap, watches = self._heap, self._watches
        again: list[tuple[float, int]] = []
        silent: list[Watch[T]] = []
        while heap and heap[0][0] <= now:
            key = heapq.heappop(heap)[1]
            watch = watches.get(key)
            if watch is None:
                continue  # removed
            beats = watch.beats
            if beats.paused:
                again.append((now + watch.silence, key))
            elif now < beats.last + watch.silence:
                again.append((beats.last + watch.silence, key))
            else:
                silent.append(watch)
        for watch in silent:
            del watches[watch.key]
        for entry in again:
            heapq.heappush(heap, entry)
        return silent
