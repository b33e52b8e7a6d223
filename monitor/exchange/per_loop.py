"""What the shared pinger (``pinger.py``) and the shared silence watchdog (``watchdog.py``) have in
common: one of each per running event loop, made on first use and forgotten once it has nothing left
to do (a closed loop keeps nothing: :class:`PerLoop`), each with ONE timer for the earliest of its
connections' due times (:class:`EarliestWake`)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """The running loop's ``T``, made by ``make(loop)`` on first use."""

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self._make = make
        self._made: dict[asyncio.AbstractEventLoop, T] = {}

    def get(self) -> T:
        """The running loop's (made now if it has none)."""
        loop = asyncio.get_running_loop()
        made = self._made.get(loop)
        if made is None:
            made = self._made[loop] = self._make(loop)
        return made

    def forget(self, loop: asyncio.AbstractEventLoop, made: T) -> None:
        """``made`` is no longer ``loop``'s (it has nothing left); a newer one made since stays."""
        if self._made.get(loop) is made:
            del self._made[loop]

    def __contains__(self, loop: object) -> bool:
        return loop in self._made


class EarliestWake:
    """ONE pending call of ``callback`` on ``loop``, for the earliest of many due times (the shared
    pinger's and watchdog's timer). Arming for a time at or after the pending wake does nothing: that
    wake re-arms for the rest; an earlier time replaces it. The callback runs in ``context`` (None:
    a copy of the arming code's, as ``call_at`` does) and must call :meth:`fired` first."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[], None],
        context: contextvars.Context | None = None,
    ) -> None:
        self.loop = loop
        self._callback = callback
        self._context = context
        self.at: float | None = None  # when the pending wake runs (None: none pending)
        self._handle: asyncio.Handle | None = None

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def arm(self, due: float) -> None:
        """Wake at ``due`` (loop time) unless a wake comes at or before it."""
        if self.at is not None and self.at <= due:
            return
        self.cancel()
        self.at = due
        self._handle = self.loop.call_at(due, self._callback, context=self._context)

    def soon(self, at: float) -> None:
        """Wake at the next loop turn (counted as at ``at``): more is due than one turn takes."""
        self.cancel()
        self.at = at
        self._handle = self.loop.call_soon(self._callback, context=self._context)

    def fired(self) -> None:
        """The callback runs: nothing is pending any more."""
        self._handle = None
        self.at = None

    def cancel(self) -> None:
        """No wake pending (idempotent)."""
        if self._handle is not None:
            self._handle.cancel()
        self.fired()
