"""Flood control: a sliding-window counter per notification route (:class:`FloodGate`, pure: the
caller passes time) and the delivery stage built on it (:class:`FloodStage`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from monitor.notify.messages import summary
from monitor.notify.stages import Batch, Letter
from monitor.rate_window import SlidingWindow
from monitor.store import OutboxItem

log = structlog.get_logger(__name__)


# the route's window is the shared sliding-window counter (the REST pacing of heavy reads uses it too)
FloodGate = SlidingWindow


class Limit(Protocol):
    """A route's flood limit (a :class:`~monitor.notify.route.NotifyRoute`; the stages import none
    of each other)."""

    @property
    def name(self) -> str: ...
    @property
    def max_per_window(self) -> int | None: ...
    @property
    def window(self) -> float: ...


@dataclass(eq=False)
class _Window:
    gate: FloodGate
    window: float
    held: list[OutboxItem] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None


class FloodStage:
    """The flood-control stage: at most ``max_per_window`` letters per route per ``window``; the rest
    are held (their outbox rows say so, so they survive a restart) and leave as one summary per URL
    when the window allows: :meth:`release` builds it; a timer per route calls ``flush(route)``
    (the dispatcher's, which stores the summary in place of the held rows) once :meth:`start` ran."""

    def __init__(self, routes: Iterable[Limit], *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows = {r.name: _Window(FloodGate(r.max_per_window, r.window), r.window) for r in routes}
        self._flush: Callable[[str], None] | None = None

    def exec(self, batch: Batch, items: Sequence[Letter]) -> list[Letter]:
        """Mark each letter's routes whose window is full as ``held``; note the slots used."""
        out: list[Letter] = []
        for letter in items:
            held: list[str] = []
            for name in letter.routes:
                if self._windows[name].gate.admit(batch.now):
                    batch.admitted.append((letter.event.dedupe_key, name))
                else:
                    held.append(name)
            out.append(letter._replace(held=frozenset(held)) if held else letter)
        return out

    def refund(self, batch: Batch, added: Iterable[OutboxItem]) -> None:
        """Give back the slots of letters the outbox found to be duplicates (nothing new stored)."""
        stored = {(item.dedupe_key, item.route) for item in added}
        for key, name in batch.admitted:
            if (key, name) not in stored:
                self._windows[name].gate.refund()

    def hold(self, item: OutboxItem) -> None:
        """Keep a held row for the route's next summary (and time that summary once started)."""
        self._windows[item.route].held.append(item)
        log.info("notify_flood_held", route=item.route, dedupe_key=item.dedupe_key)
        self._schedule(item.route)

    def held(self, route: str) -> int:
        return len(self._windows[route].held)

    def release(self, route: str) -> tuple[list[int], list[OutboxItem]]:
        """Take ``route``'s held rows: their stored ids and the summary rows (one per URL) in their
        place; the summary uses up a slot of the window whatever the limit."""
        window = self._windows[route]
        held, window.held = window.held, []
        if not held:
            return [], []
        window.gate.force(self._clock())
        key = f"summary|{route}|{held[0].dedupe_key}"
        summaries = []
        for tid in dict.fromkeys(item.target for item in held):
            mine = [item for item in held if item.target == tid]
            msg = summary(route, [item.title for item in mine], window.window)
            summaries.append(
                OutboxItem(key, tid, route, "*", "summary", msg.title, msg.body, msg.notify_type,
                           min(item.event_at for item in mine))
            )  # fmt: skip
        log.info("notify_flood_summary", route=route, coalesced=len({item.dedupe_key for item in held}))
        return [item.id for item in held if item.id > 0], summaries

    # -- timers --------------------------------------------------------------------------------
    def start(self, flush: Callable[[str], None]) -> None:
        """From now on, ``flush(route)`` runs when a route's held rows may leave."""
        self._flush = flush
        for route, window in self._windows.items():
            if window.held:
                self._schedule(route)

    def routes(self) -> list[str]:
        return list(self._windows)

    def cancel_timers(self) -> None:
        for window in self._windows.values():
            if window.timer is not None:
                window.timer.cancel()

    async def stop(self) -> None:
        self._flush = None
        self.cancel_timers()
        timers = [w.timer for w in self._windows.values() if w.timer is not None]
        await asyncio.gather(*timers, return_exceptions=True)

    def _schedule(self, route: str) -> None:
        window = self._windows[route]
        if self._flush is not None and (window.timer is None or window.timer.done()):
            window.timer = asyncio.create_task(self._flush_later(route), name=f"flood-{route}")

    async def _flush_later(self, route: str) -> None:
        window = self._windows[route]
        while window.held and self._flush is not None:
            now = self._clock()
            delay = window.gate.next_free(now) - now
            if delay > 0:
                await asyncio.sleep(delay)
            if self._flush is not None:
                self._flush(route)
