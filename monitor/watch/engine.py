"""The tick path: prices and balance changes → account book → alert policy → outbound alerts.

Synchronous and allocation-light: a tick touches only the units whose level left their band; the
alerts it produces go onto a queue that the notifier drains, so the hot path never waits on I/O.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

import structlog

from monitor.alerts.policy import AlertEvent, AlertPolicy
from monitor.risk.book import AccountBook
from monitor.risk.margin import Position
from monitor.risk.report import UnitReport

log = structlog.get_logger(__name__)


# at most this many due units evaluated, or alerts queued, in one event-loop turn (Engine.evaluate_due)
TURN_UNITS = 16
TURN_EVENTS = 2


@dataclass(slots=True)
class Outgoing:
    """An alert event with the report it was computed from, waiting for the notifier."""

    event: AlertEvent
    report: UnitReport
    tick_time: float | None = None


class RoundRobin:
    """At most ``batch`` items per call, cycling through a list that may change between calls."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self._next = 0

    def take(self, items: Sequence[str]) -> Sequence[str]:
        if len(items) <= self.batch:
            return items
        start = self._next % len(items)
        self._next = start + self.batch
        out = items[start : start + self.batch]  # copies the slice, not every item (ms on a busy machine)
        return out if len(out) == self.batch else [*out, *items[: self.batch - len(out)]]


@dataclass
class Engine:
    """Owns the per-tick work; the service feeds it, the notifier drains ``outbox``."""

    book: AccountBook
    policy: AlertPolicy  # one state machine set for every unit (per-unit ladders inside)
    clock: Callable[[], float] = time.time
    restore_target: str = "normal"
    outbox: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    stale: set[str] = field(default_factory=set)
    settling: dict[str, float] = field(default_factory=dict)  # unit → since: views disagree (ledger.py)
    ticks: int = 0
    # units that left their band and wait for their evaluation (unit → the tick's time): see evaluate_due
    due: dict[str, float | None] = field(default_factory=dict)
    distance_sweep: RoundRobin = field(default_factory=lambda: RoundRobin(100))
    last_tick: float = 0.0

    # -- inputs --------------------------------------------------------------------------------
    def on_prices(self, prices: Mapping[str, float], sent_at: float | None = None) -> None:
        """Apply a conflated batch of prices and evaluate the units that left their band, all now."""
        self.apply_prices(prices, sent_at)
        while self.evaluate_due():
            pass

    def apply_prices(self, prices: Mapping[str, float], sent_at: float | None = None) -> None:
        """Apply a conflated batch of prices to the book; the units that left their band become
        ``due`` (evaluated by :meth:`evaluate_due`, a bounded slice per event-loop turn)."""
        due, on_price = self.due, self.book.on_price
        for symbol, price in prices.items():
            for unit in on_price(symbol, price):
                due.setdefault(unit, sent_at)  # a unit still due keeps the tick that made it due
        self.ticks += len(prices)
        self.last_tick = self.clock()

    def evaluate_due(self, units: int = TURN_UNITS, events: int = TURN_EVENTS) -> bool:
        """Evaluate due units until ``units`` were evaluated or ``events`` alerts queued (each builds an
        exact report: ~0.3-1 ms), whichever comes first; True while some are still due.

        The market feed calls it once per event-loop turn until it returns False, before it takes
        the next batch of prices: a crash that moves hundreds of units at once (1,000 at the first
        prices) no longer holds the loop for the whole batch (113 ms at the first prices, 3-8 ms in
        bench/crash.py's phases). A unit is evaluated on the book as it is at its turn: the same
        prices (no batch is applied before the due set is empty), and any balance change that came
        in between, as if it had come before the tick. Readiness waits for the due set to empty
        (``monitor.app.periodic``): every unit evaluated."""
        due, evaluate = self.due, self.evaluate
        queued = self.outbox.qsize()
        while due and units > 0 and self.outbox.qsize() - queued < events:
            unit, tick_time = due.popitem()
            units -= 1
            if self.book.has_unit(unit):  # not when it left the book while due
                evaluate(unit, tick_time=tick_time)
        return bool(due)

    def on_position(self, unit: str, asset: str, position: Position) -> None:
        """Apply one balance or liability change and re-evaluate that unit."""
        if not self.book.has_unit(unit):
            return
        self.book.set_position(unit, asset, position)
        self.evaluate(unit)

    def hold(self, unit: str, since: float) -> None:
        """``unit`` is settling (its views disagree): its level is shown, its alert state frozen."""
        self.settling.setdefault(unit, since)

    def release(self, unit: str) -> None:
        """``unit``'s views agree again: evaluate it on the settled book at once."""
        if self.settling.pop(unit, None) is not None and self.book.has_unit(unit):
            self.evaluate(unit)

    def evaluate(self, unit: str, tick_time: float | None = None) -> None:
        """Run the unit's state machine on its current level; queue any events it emits.

        A settling unit is skipped here, not in the book: its level keeps following the prices."""
        if unit in self.stale or unit in self.settling or not self.book.is_priced(unit):
            return
        now = self.clock()
        policy = self.policy
        level = self.book.level(unit)
        distance = self.book.liquidation_distance(unit) if policy.wants_distance else None
        events = policy.evaluate(unit, level, distance, now)
        lo, hi = policy.band(unit)
        # the policy's band is (lo, hi]; the book's is closed: [next float above lo, hi]
        self.book.set_band(unit, math.nextafter(lo, math.inf) if lo < hi else lo, hi)
        self._queue(events, tick_time)

    def evaluate_all(self, units: Iterable[str] | None = None) -> None:
        """Evaluate ``units`` (default all) whose exact distance or level would change a rule: the
        distance rule can trip while the level stays inside its band."""
        for unit in self.book.unit_ids() if units is None else units:
            if unit in self.stale or unit in self.settling or not self.book.is_priced(unit):
                continue
            level = self.book.level(unit)
            distance = self.book.liquidation_distance(unit)
            if not self.policy.quiet(unit, level, distance):
                self.evaluate(unit)

    # -- timers --------------------------------------------------------------------------------
    def tick_timers(self) -> None:
        """Pending `for` windows and repeat intervals, once a second."""
        now = self.clock()
        self._queue(self.policy.tick(now, skip=self.settling), None)
        if self.policy.wants_distance:
            # exact distances cost ~50 µs a unit: a bounded slice per second keeps the loop free
            self.evaluate_all(self.distance_sweep.take(self.book.unit_ids()))

    def set_staleness(
        self,
        stale_units: Iterable[str],
        reasons: Mapping[str, str] | None = None,
        silent_for: Mapping[str, float] | None = None,
    ) -> None:
        """Freeze units whose data is stale ("blind"), saying why (``reasons``: unit → one line, shown
        in the BLIND message) and since when (``silent_for``: unit → seconds since its data was last
        fresh, where known; else the BLIND message says now); thaw and re-evaluate the ones fresh
        again. A set is read as it is, not copied (the once-a-second staleness step hands the same
        set each time: read here, not kept)."""
        now = self.clock()
        stale_now = stale_units if isinstance(stale_units, AbstractSet) else set(stale_units)
        for unit in sorted(stale_now - self.stale):
            self.stale.add(unit)
            reason = reasons.get(unit, "") if reasons else ""
            if self.book.has_unit(unit):
                self.book.set_blind(unit, reason or "no fresh data")  # the unit's state: blind
            silent = silent_for.get(unit) if silent_for else None
            since = None if silent is None else now - silent
            self._queue(self.policy.mark_stale(unit, now, since=since, reason=reason), None)
        for unit in sorted(self.stale - stale_now):
            self.stale.discard(unit)
            known = self.book.has_unit(unit)  # not when it left the book while blind
            if known:
                self.book.set_blind(unit, None)
            self._queue(self.policy.mark_fresh(unit, now), None)
            if known:
                self.evaluate(unit)

    # -- output --------------------------------------------------------------------------------
    def report(self, unit: str) -> UnitReport:
        """The book's report of ``unit``, flagged ``settling`` while its views disagree."""
        report = self.book.report(unit, restore_target=self.restore_target)
        return replace(report, settling=True) if unit in self.settling else report

    def _queue(self, events: Iterable[AlertEvent], tick_time: float | None) -> None:
        for event in events:
            if not self.book.has_unit(event.unit):
                # the unit left the book (an isolated pair closed, an account disabled) while its
                # state still had something to say (a blind unit's thaw, a repeat): there is no
                # report to send it with; said in the log, and the policy's state moves on all the same
                log.warning("alert_for_departed_unit", unit=event.unit, rule=event.rule, kind=event.kind)
                continue
            report = self.report(event.unit)
            self.outbox.put_nowait(Outgoing(event, report, tick_time))
