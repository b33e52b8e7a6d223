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

Start-up has a tail after ready (risk streams still connecting, first refreshes): the first full
collection after :func:`settle` walks it (36-122 ms in bench/crash.py runs). So :func:`settle` also
freezes, once, what survives that collection: long-lived by then, and the collections after walk
only what the daemon allocates in its steady state.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable


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


def settle() -> dict[str, float]:
    """Freeze and trim, and freeze once more after the next full collection; returns what it did
    (for the log line at ready)."""
    started = time.perf_counter()
    gc.freeze()
    freeze_after_next_full_collection()
    trimmed = _trim()
    return {
        "frozen": gc.get_freeze_count(),
        "trimmed": float(trimmed),
        "seconds": round(time.perf_counter() - started, 4),
    }
