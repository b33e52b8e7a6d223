"""Fault windows on the simulated time axis: REST errors/timeouts/429s and stalled websockets.

Instant faults (drop, 1001 close, malformed frame, token expiry, key revocation) act once and
are carried out by the server; this board only holds the faults that last for a window.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from monitor.sim.scenario import Fault

WINDOWED = frozenset({"stall", "rest_5xx", "rest_timeout", "rest_429"})


@dataclass(slots=True)
class Window:
    """A fault active from ``start`` to ``end`` (simulated seconds); ``done`` is set when it ends."""

    fault: Fault
    start: float
    end: float
    done: asyncio.Event = field(default_factory=asyncio.Event)


class FaultBoard:
    """The fault windows open now."""

    def __init__(self) -> None:
        self._windows: list[Window] = []

    def open(self, fault: Fault, now: float) -> Window:
        """Open a window for a windowed fault starting at ``now``."""
        window = Window(fault, now, now + fault.duration)
        self._windows.append(window)
        return window

    def update(self, now: float) -> None:
        """Close the windows that ended at or before ``now``."""
        for window in [w for w in self._windows if w.end <= now]:
            window.done.set()
            self._windows.remove(window)

    def clear(self) -> None:
        """Close every window."""
        for window in self._windows:
            window.done.set()
        self._windows.clear()

    def rest(self) -> Window | None:
        """The REST fault in force (the most recently opened), if any."""
        for window in reversed(self._windows):
            if window.fault.kind.startswith("rest_"):
                return window
        return None

    def stalled(self, target: str, symbol: str | None = None) -> bool:
        """Whether connections of ``target`` (``streams``/``ws_api``) are stalled for ``symbol``.

        A stall with a symbol silences only that symbol's messages; one without silences the
        whole connection, pongs included. ``symbol=None`` asks about the whole connection.
        """
        for window in self._windows:
            f = window.fault
            if f.kind != "stall" or f.target not in (target, "all"):
                continue
            if f.symbol is None or (symbol is not None and f.symbol == symbol):
                return True
        return False
