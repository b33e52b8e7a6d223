"""Settle the heap once start-up is done: the objects of start-up stay out of the collector's walks,
and the memory its temporaries used goes back to the system.

Start-up with 1,000 accounts parses thousands of REST replies and opens as many connections; what
survives (clients, books, config: millions of objects) lives as long as the daemon, and every full
collection walked all of it: pauses of 0.1-2 s while ticks waited (bench/crash.py, "full GCs").
:func:`settle` calls ``gc.freeze()``, which moves every object alive now to the permanent
generation in O(1) (later collections walk only what was allocated since), then asks glibc to hand
free heap pages back (``malloc_trim``; a no-op elsewhere). It runs once, at ready. It does not
collect first: one full collection over that heap is itself a stall of a second or more (cyclic
garbage left from start-up stays, once, frozen).

Start-up has a tail after ready (risk streams still connecting, listen keys, first refreshes):
~120,000 objects at 1,000 accounts. Left to the collector, the first full collection after ready
walked them: 22-30 ms in the first load phase of every bench/crash.py run. So for
:data:`TAIL_SECONDS` after ready, :func:`settle` also freezes what survives each young
(generation 1) collection, the moment its survivors would be promoted into the generation full
collections walk. That is O(1) each and keeps only objects two collections old: live ones, and at
most the cyclic garbage already promoted, which stays frozen (bounded by the tail, once, as at
ready). After the window nothing is frozen but the survivors of the next full collection (once):
the daemon's own steady-state objects, long-lived by then.

With more accounts than the connection budget lets connect before ready (Binance's 300 attempts per
5 min per IP), risk streams keep connecting long after the tail window: each one's objects (a
connection, its buffers, its reader) reached the oldest generation one by one, and the first full
collection walked them (bench/late_streams.py: 200 accounts, 50 attempts per 20 s).
:class:`ConnectionsSettled` waits for the budget's queue to drain after ready, then freezes the
survivors of the next generation-1 collection, once (:func:`freeze_next_young_survivors`).

The steady state itself keeps the oldest generation small (what full collections cost): a REST
snapshot that changed nothing keeps the book's objects and its own units set and bars instead of
promoting fresh copies (``monitor.risk.book``, ``monitor.watch.snapshots``); an idle account holds
no task, coroutine or timer (``monitor.watch.rereads``); the streams share one silence watchdog and
one pinger per loop, whose heaps hold nothing the collector tracks per re-check or ping
(``monitor.exchange.watchdog``, ``monitor.exchange.ping_heap``); the Risk Data Streams of 20
accounts share one connection (``monitor.exchange.risk_group``), so the websockets parser's state
kept after each message is 50 connections' at 1,000 accounts, not 1,000
(``bench/gen2_census.py``). Thresholds stay CPython's defaults: nothing here defers a collection,
so garbage never grows beyond what the collector's own schedule allows (bench/soak.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable
from typing import Protocol

TAIL_SECONDS = 3.0  # s after ready: start-up's tail (risk streams, listen tokens, first refreshes)


def _trim() -> bool:
    """``malloc_trim(0)`` where the C library has it (glibc); False elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))


def freeze_after_next_full_collection() -> Callable[[str, dict[str, int]], None]:
    """Once: when the next full (generation 2) collection ends, freeze its survivors too. Returns the
    ``gc.callbacks`` entry (a no-op after its one freeze)."""
    done = False

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal done
        if not done and phase == "stop" and info.get("generation") == 2:
            done = True
            gc.freeze()

    gc.callbacks.append(on_gc)
    return on_gc


def freeze_young_survivors(
    seconds: float = TAIL_SECONDS, clock: Callable[[], float] = time.monotonic
) -> Callable[[str, dict[str, int]], None]:
    """For ``seconds`` from now: whenever a collection of generation 1 or 2 ends, freeze its
    survivors (the young generations are empty then: only objects two collections old are frozen).
    Returns the ``gc.callbacks`` entry (a no-op once the window is over)."""
    until = clock() + seconds

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info.get("generation", 0) >= 1 and clock() < until:
            gc.freeze()

    gc.callbacks.append(on_gc)
    return on_gc


def freeze_next_young_survivors() -> Callable[[str, dict[str, int]], None]:
    """Once: when the next collection of generation 1 or 2 ends, freeze its survivors (as in the tail
    window of :func:`freeze_young_survivors`, for one collection). Returns the ``gc.callbacks``
    entry, which leaves ``gc.callbacks`` after its one freeze."""

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info.get("generation", 0) >= 1:
            gc.freeze()
            gc.callbacks.remove(on_gc)

    gc.callbacks.append(on_gc)
    return on_gc


class Drains(Protocol):
    """What :class:`ConnectionsSettled` reads of the connection budget
    (``monitor.exchange.conn_budget.ConnectionBudget``)."""

    def on_drained(self, callback: Callable[[], None]) -> None:
        """``callback`` once, when no connection attempt waits for a slot (at once if none does)."""
        ...


class ConnectionsSettled:
    """Once after ready (:func:`settle`), when every connection waiting for a slot of ``budget`` has
    it: the survivors of the next generation-1 collection are frozen (the late connections' objects,
    see the module docstring). Registered with :func:`at_ready`. When nothing waits at ready, that
    one freeze is armed at once (at the next generation-1 collection, as in the tail window)."""

    def __init__(self, budget: Drains) -> None:
        self.budget = budget
        self.hook: Callable[[str, dict[str, int]], None] | None = None  # the gc callback, once armed

    def __call__(self) -> None:
        """At ready: wait for the budget's queue to drain."""
        self.budget.on_drained(self.drained)

    def drained(self) -> None:
        if self.hook is None:
            self.hook = freeze_next_young_survivors()


_at_ready: list[Callable[[], None]] = []  # run once by the next settle()


def at_ready(hook: Callable[[], None]) -> None:
    """Run ``hook`` once, at ready, after :func:`settle` froze the heap."""
    _at_ready.append(hook)


HOLD_AT_MOST = 30.0  # s: start-up's hold on automatic collections ends at ready, or after this at the latest
_held = False


def hold_collections() -> None:
    """Start-up: no automatic collection until :func:`resume_collections` (at ready, in
    :func:`settle`; or at shutdown, or :data:`HOLD_AT_MOST` after start: ``monitor.service``).

    What start-up allocates lives as long as the daemon or dies by reference counting; the
    collector's passes over it found little and cost ~0.35 s of CPU before ready at 1,000 accounts
    (bench/rss.py: RSS 10 s after ready within 1 MiB of before). Cyclic garbage of start-up waits until ready,
    where :func:`settle` sets it aside once with the rest, as it already accepts. No-op when the
    collector is already off (someone else's choice, left alone)."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def resume_collections() -> None:
    """End :func:`hold_collections`' hold (a no-op when there is none): collections as usual."""
    global _held
    if _held:
        _held = False
        gc.enable()


def set_aside() -> int:
    """A start-up milestone (imports and config done; every account loaded): what is alive now lives
    as long as the daemon, so it leaves the collector's walks now (``gc.freeze()``, O(1)) rather
    than at ready. Start-up grows the heap from nothing to ~340,000 objects at 1,000 accounts, and
    each full collection on the way walked all of it: ~0.6 s of CPU before ready, 0.15-0.25 s per
    collection once the accounts were loaded (bench/rss.py). No collection first (that walk is what
    is saved); the garbage of start-up alive now stays, once, as at :func:`settle`. Returns the
    number of objects set aside so far."""
    gc.freeze()
    return gc.get_freeze_count()


def settle() -> dict[str, float]:
    """Freeze and trim; freeze the survivors of young collections for :data:`TAIL_SECONDS`, and
    once more after the next full collection; returns what it did (for the log line at ready)."""
    started = time.perf_counter()
    resume_collections()
    gc.freeze()
    freeze_young_survivors()
    freeze_after_next_full_collection()
    hooks = _at_ready[:]
    _at_ready.clear()
    for hook in hooks:
        hook()
    trimmed = _trim()
    return {
        "frozen": gc.get_freeze_count(),
        "trimmed": float(trimmed),
        "seconds": round(time.perf_counter() - started, 4),
    }
