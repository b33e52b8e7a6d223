"""What the HTTP surfaces read: ``status --json``, the status page's feed and the silences API."""

from __future__ import annotations

from typing import Any

from monitor.app.components import Components, not_loaded
from monitor.notify.silence_stage import FiringMap, SilenceApi
from monitor.ops.page import Feed
from monitor.ops.status_data import annotate, firing_map
from monitor.ops.status_extras import enrich


class Views:
    """Read-only views of one daemon's parts."""

    def __init__(self, parts: Components) -> None:
        self.parts = parts
        self._by_name = {w.name: w for w in parts.watchers}

    def status(self) -> list[dict[str, Any]]:
        """The ``status --json`` list: one dict per unit, then the accounts not loaded."""
        ages = self.parts.market.ages()
        units = [self.unit_status(unit, ages) for unit in sorted(self.parts.book.units())]
        return units + self.not_loaded()

    def not_loaded(self) -> list[dict[str, Any]]:
        return not_loaded(self.parts.watchers, self.parts.config.exchange.quote)

    def unit_status(self, unit: str, ages: dict[str, float] | None = None) -> dict[str, Any]:
        """One unit's ``status --json`` dict: its report (flagged ``settling`` while its balances are
        unconfirmed, see ledger.py) plus positions and stress table (:mod:`monitor.ops.status_extras`),
        its alerts, silences and data age (:mod:`monitor.ops.status_data`); ``state_file_failing``
        (the reason) while the state file fails."""
        parts = self.parts
        data = enrich(parts.book, unit, parts.engine.report(unit).to_json(), parts.recorder.betas)
        if ages is None:
            ages = parts.market.ages()
        snapshot = next((w.last_snapshot for w in parts.watchers if unit in w.units), 0.0)
        if unit.startswith("cross:"):
            self._risk_stream(data, unit)
        if parts.state_health.failing:  # every unit's alerts are sent but not saved meanwhile
            data["state_file_failing"] = parts.state_health.reason
        return annotate(
            data, parts.policy, parts.silences,
            blind=unit in parts.engine.stale,
            price_ages=[ages[s] for s in parts.book.unit_symbols(unit) if s in ages],
            snapshot_age=parts.clock() - snapshot if snapshot else None,
        )  # fmt: skip

    def _risk_stream(self, data: dict[str, Any], unit: str) -> None:
        """The cross account's Risk Data Stream (Binance's own word on it, pushed): ``risk_stream``
        is ``up``, ``waiting`` (for a slot of the connection budget: ``risk_stream_wait`` says how
        many attempts are ahead and the ETA in seconds), ``connecting`` or ``down``;
        ``risk_stream_reason`` says it in words. Meanwhile the unit is still evaluated on prices,
        balances and REST reads, and Binance's word still comes from every REST read."""
        watcher = self._by_name.get(unit.split(":", 2)[1])
        state = watcher.risk_stream_state() if watcher is not None else None
        if state is None:
            return
        data["risk_stream"], data["risk_stream_reason"], wait = state
        if wait is not None:
            data["risk_stream_wait"] = wait

    def firing(self) -> FiringMap:
        return firing_map(self.parts.policy, self.parts.book, self.parts.config.alerts.restore_target)

    def silence_api(self) -> SilenceApi:
        """What the HTTP API's /silences endpoints call."""
        book, policy = self.parts.book, self.parts.policy

        def rules() -> set[str]:
            return {r.name for u in book.units() for r in policy.config_for(u).rules} | {"blind"}

        return SilenceApi(self.parts.silences, self.firing, book.units, rules)

    def page_feed(self) -> Feed:
        parts = self.parts
        book = parts.book

        def age(unit: str) -> float | None:
            if unit not in book.units():
                return None
            ages = [book.prices.age(s) for s in book.unit_symbols(unit)]
            known = [a for a in ages if a is not None]
            return None if len(known) < len(ages) else max(known, default=0.0)

        return Feed(
            unit_ids=book.units,
            status_of=self.unit_status,
            firing=parts.policy.firing,
            blind=lambda: set(parts.engine.stale),
            age=age,
            history=parts.recorder.history,
            clock=parts.clock,
            live=lambda unit: (book.is_priced(unit), book.level(unit)),
            not_loaded=self.not_loaded,
        )
