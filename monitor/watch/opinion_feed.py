"""Wires :mod:`monitor.alerts.opinion` into the daemon: Binance's word in, our view read, alerts queued.

The account watchers call :meth:`ExchangeOpinions.heard` with every ``MARGIN_LEVEL_STATUS_CHANGE``
and every REST read's ``marginLevel`` / ``marginLevelStatus``; the service calls
:meth:`ExchangeOpinions.sweep` once a second (the grace period runs out, our view changes), which
re-decides :data:`SWEEP_SLICE` units a turn of the event loop. Events go
onto the engine's outbox like any alert; each disagreement alerted is counted in
``margin_monitor_exchange_disagreements_total`` and logged as a warning (``exchange_disagrees``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal

import structlog
from prometheus_client import CollectorRegistry, Counter

from monitor.alerts.opinion import NO_DEBT_LEVEL, OwnView, SecondOpinion, status_from_level
from monitor.alerts.policy import AlertEvent, LevelRule
from monitor.ops.collectors import PREFIX
from monitor.watch.engine import Engine, Outgoing

log = structlog.get_logger(__name__)
BarsOf = Callable[[str], Mapping[str, float]]
# units re-decided by the once-a-second sweep between turns of the event loop: our view of a unit is
# an exact valuation (~60 µs); in a crash Binance speaks of a hundred units or more at once, and the
# whole sweep in one turn held the loop 3-12 ms (bench/crash.py, 5,000 ticks/s: docs/benchmarks.md)
SWEEP_SLICE = 8


def unit_labels(unit: str) -> tuple[str, str, str]:
    """``(account, kind, symbol)`` of a unit id (``cross:a`` or ``isolated:a:SYM``)."""
    kind, _, rest = unit.partition(":")
    account, _, symbol = rest.partition(":")
    return account, kind, symbol


class ExchangeOpinions:
    """Binance's status per unit against ours; see the module docstring."""

    def __init__(
        self,
        bars_of: BarsOf,
        registry: CollectorRegistry | None = None,
        *,
        grace: float = 5.0,
        tolerance: float = 0.01,
        clock: Callable[[], float] = time.time,
        fallback_routes: Callable[[], tuple[str, ...]] = tuple,
    ) -> None:
        self._fallback_routes = fallback_routes  # for a unit whose ladder has no rung (nowhere to send)
        self.opinion = SecondOpinion(grace=grace, tolerance=tolerance)
        self.engine: Engine | None = None
        self._bars_of = bars_of
        self._clock = clock
        self._counter = Counter(
            PREFIX + "exchange_disagreements",
            "Times Binance reported a margin call or worse that our own alert state did not show.",
            ["account", "kind", "symbol", "status"],
            registry=registry,
        )

    def heard(self, unit: str, status: str, level: Decimal | None, source: str) -> None:
        """Binance's word on ``unit`` (``status`` empty: derive it from ``level`` and the bars)."""
        if not status:
            status = status_from_level(level, self._bars_of(unit))
        shown = None if level is None or level <= 0 or level >= NO_DEBT_LEVEL else float(level)
        now = self._clock()
        self.opinion.note(unit, status, shown, now, source=source)
        # a settling unit's alert state is frozen (monitor.risk.ledger): decide once its views agree
        if self.engine is not None and self.opinion.active(unit) and unit not in self.engine.settling:
            self._queue(self.opinion.check(unit, now, self.own(unit)))

    async def sweep(self) -> None:
        """Re-decide every unit Binance spoke about (once a second), :data:`SWEEP_SLICE` a turn of the
        event loop. Each unit is decided on the state of its own turn: one that went calm or started
        settling meanwhile is left (:meth:`heard` decided it), one Binance first spoke of meanwhile
        was decided by :meth:`heard` and comes round next second."""
        engine = self.engine
        if engine is None:
            return
        active = self.opinion.active_units()  # the others are calm whatever our view (not looked at)
        for start in range(0, len(active), SWEEP_SLICE):
            if start:
                await asyncio.sleep(0)
            now = self._clock()
            for unit in active[start : start + SWEEP_SLICE]:
                # a settling unit waits for its views to agree; a calm one is calm whatever our view
                if unit not in engine.settling and self.opinion.active(unit):
                    self._queue(self.opinion.check(unit, now, self.own(unit)))

    def own(self, unit: str) -> OwnView:
        """Our current view of ``unit`` (the book asked about it alone: not a set of every unit id)."""
        engine = self.engine
        assert engine is not None
        config = engine.policy.config_for(unit)
        rules = tuple(r for r in config.rules if isinstance(r, LevelRule))
        bars = self._bars_of(unit)
        blind = ""
        if not engine.book.has_unit(unit):
            blind = "the account is not loaded"
        else:
            state, reason = engine.book.state(unit)
            if state == "blind" or unit in engine.stale:
                blind = f"blind: {reason}" if reason else "blind: no fresh data"
            elif not engine.book.is_priced(unit) and state != "approximate":
                blind = "not every asset has a price"
        level = None if blind else engine.book.level(unit)
        return OwnView(level=level, firing=engine.policy.firing(unit), rules=rules, bars=bars, blind=blind)

    def _queue(self, events: list[AlertEvent]) -> None:
        engine = self.engine
        assert engine is not None
        for event in events:
            if not event.routes:
                event = replace(event, routes=self._fallback_routes())
            if event.kind == "firing" and event.verdict == "disagree":
                account, kind, symbol = unit_labels(event.unit)
                self._counter.labels(account, kind, symbol, event.exchange_status).inc()
                log.warning(
                    "exchange_disagrees",
                    unit=event.unit,
                    status=event.exchange_status,
                    exchange_level=event.exchange_level,
                    ours=event.level,
                    blind=event.detail or None,
                )
            else:
                log.info("exchange_opinion", unit=event.unit, rule=event.rule, kind=event.kind)
            known = engine.book.has_unit(event.unit)
            report = engine.book.report(event.unit, restore_target=engine.restore_target) if known else None
            engine.outbox.put_nowait(Outgoing(event, report))  # type: ignore[arg-type]
