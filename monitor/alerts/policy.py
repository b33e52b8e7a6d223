"""The alert policy: a state machine per (risk unit, rule), pure and clock-free.

Every method takes ``now`` (seconds, wall clock) and returns the events it emits; nothing here does
I/O. Per rule the phases are ``ok → pending (breach seen, `for` running) → firing → ok``:

- a level rule is breached at ``level <= bar``; a pending or firing rule ends only at
  ``level > bar + hysteresis`` (so a level hovering at a bar neither flaps nor resets ``for``);
- the distance rule is breached at ``|distance| <= within`` and ends at ``> within + hysteresis``,
  and is breached whatever the distance while the level is at or below its ``liquidation_bar``
  (past liquidation the distance is the move back, and a unit sinking deeper is not "far from" it);
- ``level is None`` means no debt (infinitely safe); a NaN level or distance is ignored.

A unit marked stale is frozen (no event but one "blind") until :meth:`AlertPolicy.mark_fresh`;
the next evaluation then applies the fresh level before any timer. Each event carries a dedupe key
``unit|rule|crossing|kind|repeat_n`` unique per crossing, so the outbox never sends one twice, also
across restarts (:meth:`AlertPolicy.export_state` / :meth:`AlertPolicy.import_state`).
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping
from typing import Any

from monitor.alerts.rules import (
    BLIND,
    AlertEvent,
    DistanceRule,
    EventKind,
    LevelRule,
    Measure,
    PolicyConfig,
    Rule,
)
from monitor.alerts.state import RuleState, UnitState, dump_unit, load_unit

EMPTY_BAND = (math.inf, -math.inf)
FULL_BAND = (-math.inf, math.inf)

__all__ = [
    "BLIND",
    "AlertEvent",
    "AlertPolicy",
    "DistanceRule",
    "EventKind",
    "LevelRule",
    "Measure",
    "PolicyConfig",
    "Rule",
]


def _breached(rule: Rule, hysteresis: float, engaged: bool, level: float | None, dist: float | None) -> bool:
    if isinstance(rule, LevelRule):
        value = math.inf if level is None else level
        return value <= (rule.bar + hysteresis if engaged else rule.bar)
    if rule.liquidation_bar is not None and level is not None and level <= rule.liquidation_bar:
        return True  # past liquidation: the distance is the move that restores the bar
    value = math.inf if dist is None else abs(dist)
    return value <= (rule.within + rule.hysteresis if engaged else rule.within)


class AlertPolicy:
    """The alert state of every unit under one default config (plus per-unit overrides)."""

    def __init__(self, config: PolicyConfig, unit_configs: Mapping[str, PolicyConfig] | None = None) -> None:
        self.config = config
        self._configs: dict[str, PolicyConfig] = dict(unit_configs or {})
        # how many of ``_configs`` have a distance rule: ``wants_distance`` is asked per evaluation,
        # and every unit has a config of its own (1,000 looked at: ~36 µs a tick's evaluation)
        self._with_distance = sum(c.distance is not None for c in self._configs.values())
        self._units: dict[str, UnitState] = {}
        self._timed: set[str] = set()
        self._dirty: set[str] = set()

    # -- configuration -------------------------------------------------------------------------
    @property
    def wants_distance(self) -> bool:
        """Whether any config has a distance rule (the caller then passes distances)."""
        return self.config.distance is not None or self._with_distance > 0

    def config_for(self, unit: str) -> PolicyConfig:
        return self._configs.get(unit, self.config)

    def configure_unit(self, unit: str, config: PolicyConfig | None) -> None:
        """Give ``unit`` its own ladder (None = back to the default); rule states are kept by name."""
        old = self._configs.pop(unit, None) if config is None else self._configs.get(unit)
        if config is not None:
            self._configs[unit] = config
        self._with_distance += (config is not None and config.distance is not None) - (
            old is not None and old.distance is not None
        )
        state = self._units.get(unit)
        if state is not None:
            names = {rule.name for rule in self.config_for(unit).rules}
            state.rules = {n: s for n, s in state.rules.items() if n in names}
            state.recheck = True
            self._dirty.add(unit)

    # -- inputs --------------------------------------------------------------------------------
    def evaluate(
        self, unit: str, level: float | None, distance: float | None, now: float
    ) -> list[AlertEvent]:
        """Run the unit's rules on fresh data; returns events in order of severity."""
        if level is not None and math.isnan(level):
            return []
        state = self._state(unit)
        if distance is not None and math.isnan(distance):
            distance = state.distance  # keep the last good distance rather than resolve on NaN
        events: list[AlertEvent] = []
        if state.stale:
            if not state.stale_by_import:
                return []
            # Stale at shutdown: the caller only evaluates fresh data, so this is the recovery.
            state.stale = state.stale_by_import = False
            state.recheck = True
            events.append(self._blind_event(unit, state, "blind_resolved", now))
        if not state.recheck:
            events += self._timers(unit, state, now)  # the previous level held until now
        events += self._apply(unit, state, level, distance, now)
        state.level, state.distance = level, distance
        if state.recheck:
            state.recheck = False
            self._dirty.add(unit)
            events += self._timers(unit, state, now)
        state.imported = False
        for rule_state in state.rules.values():
            rule_state.restored = False
        self._touch(unit, state)
        return events

    def mark_stale(
        self, unit: str, now: float, *, since: float | None = None, reason: str = ""
    ) -> list[AlertEvent]:
        """Freeze the unit; the first call emits one "blind" (``since``: the last fresh data)."""
        state = self._state(unit)
        if state.stale:
            state.stale_by_import = False
            return []
        state.stale, state.stale_since, state.reason = True, now if since is None else since, reason
        self._dirty.add(unit)
        if state.blind_open:
            return []
        state.blind_seq += 1
        state.blind_open = True
        return [self._blind_event(unit, state, "blind", now)]

    def mark_fresh(self, unit: str, now: float) -> list[AlertEvent]:
        """Thaw the unit; emits "blind_resolved". The next :meth:`evaluate` applies fresh data first."""
        state = self._units.get(unit)
        if state is None or not state.stale:
            return []
        state.stale = state.stale_by_import = False
        state.recheck = True
        for rule_state in state.rules.values():
            if rule_state.phase == "pending":
                rule_state.since = now  # the `for` clock restarts: nothing is known about the gap
        self._dirty.add(unit)
        return [self._blind_event(unit, state, "blind_resolved", now)] if state.blind_open else []

    def tick(self, now: float, skip: Container[str] = ()) -> list[AlertEvent]:
        """Timers: pending `for` windows that expired, repeat intervals that came due (not for the
        units in ``skip``: settling ones, whose level may be half-applied)."""
        events: list[AlertEvent] = []
        for unit in sorted(self._timed):
            state = self._units[unit]
            if not (state.stale or state.recheck or unit in skip):
                events += self._timers(unit, state, now)
                self._touch(unit, state)
        return events

    # -- queries -------------------------------------------------------------------------------

    def band(self, unit: str) -> tuple[float, float]:
        """``(lo, hi)``: no level rule changes state while ``lo < level <= hi`` (None = +inf).

        Empty (lo > hi) for a unit that must be evaluated next (unknown, just fresh or restored)."""
        return self._band(unit, distance=False)

    def quiet(self, unit: str, level: float | None, distance: float | None) -> bool:
        """True when evaluating these values would change no rule (timers aside)."""
        lo, hi = self._band(unit, distance=False)
        value = math.inf if level is None else level
        if not lo < value <= hi:
            return False
        if self.config_for(unit).distance is None:
            return True
        lo, hi = self._band(unit, distance=True)
        return lo < (math.inf if distance is None else abs(distance)) <= hi

    def firing(self, unit: str) -> dict[str, str]:
        """Rule name → phase for the rules of ``unit`` that are not ok (for /status)."""
        state = self._units.get(unit)
        return {} if state is None else {n: s.phase for n, s in state.rules.items() if s.phase != "ok"}

    def stale_reason(self, unit: str) -> str:
        """Why ``unit`` is blind ("" when it is not, or when no reason was given)."""
        state = self._units.get(unit)
        return state.reason if state is not None and state.stale else ""

    def is_stale(self, unit: str) -> bool:
        state = self._units.get(unit)
        return state is not None and state.stale

    def units(self) -> list[str]:
        return list(self._units)

    # -- persistence ---------------------------------------------------------------------------
    def take_dirty(self) -> set[str]:
        """Units whose persisted state changed since the last call (to save with :meth:`export_state`)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def export_state(self, units: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """JSON-ready state per unit (all units by default)."""
        chosen = self._units if units is None else [u for u in units if u in self._units]
        return {unit: dump_unit(self._units[unit]) for unit in chosen}

    def import_state(self, data: Mapping[str, Any]) -> dict[str, str]:
        """Restore states saved before a restart. A malformed unit is skipped (it starts fresh):
        returns unit → one-line reason for those, for the caller to log."""
        skipped: dict[str, str] = {}
        for unit, blob in data.items():
            try:
                state = load_unit(blob)
            except (TypeError, ValueError, KeyError) as exc:
                skipped[unit] = f"alert state for unit {unit!r} is malformed: {exc}"
                continue
            names = {rule.name for rule in self.config_for(unit).rules}
            state.rules = {n: s for n, s in state.rules.items() if n in names}
            self._units[unit] = state
            self._touch(unit, state)
        return skipped

    # -- internals -----------------------------------------------------------------------------
    def _state(self, unit: str) -> UnitState:
        state = self._units.get(unit)
        if state is None:
            state = self._units[unit] = UnitState(recheck=True)
        return state

    def _rule_state(self, state: UnitState, name: str) -> RuleState:
        rule_state = state.rules.get(name)
        if rule_state is None:
            rule_state = state.rules[name] = RuleState()
        return rule_state

    def _apply(
        self, unit: str, state: UnitState, level: float | None, dist: float | None, now: float
    ) -> list[AlertEvent]:
        config = self.config_for(unit)
        fired: list[AlertEvent] = []
        resolved: list[AlertEvent] = []
        for severity, rule in enumerate(config.rules):
            rs = self._rule_state(state, rule.name)
            engaged = rs.phase != "ok"
            breached = _breached(rule, config.hysteresis, engaged, level, dist)
            if not engaged and breached:
                rs.phase, rs.since, rs.while_down = "pending", now, rs.restored
                self._dirty.add(unit)
                if config.for_seconds <= 0:
                    fired.append(self._fire(unit, rule, severity, rs, level, dist, now))
            elif engaged and not breached:
                was_firing = rs.phase == "firing"
                rs.phase, rs.since, rs.last_sent, rs.repeats, rs.while_down = "ok", None, None, 0, False
                self._dirty.add(unit)
                if was_firing and rule.resolved:
                    resolved.append(self._event("resolved", unit, rule, severity, rs, level, dist, now))
        return fired + resolved[::-1]

    def _timers(self, unit: str, state: UnitState, now: float) -> list[AlertEvent]:
        config = self.config_for(unit)
        events: list[AlertEvent] = []
        for severity, rule in enumerate(config.rules):
            rs = state.rules.get(rule.name)
            if rs is None or rs.since is None:
                continue
            if rs.phase == "pending" and now >= rs.since + config.for_seconds:
                events.append(self._fire(unit, rule, severity, rs, state.level, state.distance, now))
            elif rs.phase == "firing" and (due := self._repeat_due(rule, rs)) is not None and now >= due:
                rs.repeats += 1
                rs.last_sent = now
                self._dirty.add(unit)
                events.append(
                    self._event("repeat", unit, rule, severity, rs, state.level, state.distance, now)
                )
        return events

    @staticmethod
    def _repeat_due(rule: Rule, rs: RuleState) -> float | None:
        return None if rule.repeat is None or rs.last_sent is None else rs.last_sent + rule.repeat

    def _fire(
        self,
        unit: str,
        rule: Rule,
        severity: int,
        rs: RuleState,
        level: float | None,
        dist: float | None,
        now: float,
    ) -> AlertEvent:
        rs.phase, rs.last_sent, rs.repeats = "firing", now, 0
        rs.crossing += 1
        self._dirty.add(unit)
        return self._event("firing", unit, rule, severity, rs, level, dist, now)

    def _event(
        self,
        kind: EventKind,
        unit: str,
        rule: Rule,
        severity: int,
        rs: RuleState,
        level: float | None,
        dist: float | None,
        now: float,
    ) -> AlertEvent:
        repeat_n = rs.repeats if kind == "repeat" else 0
        return AlertEvent(
            kind=kind,
            unit=unit,
            rule=rule.name,
            bar=rule.bar if isinstance(rule, LevelRule) else rule.within,
            level=level,
            distance=dist,
            at=now,
            since=rs.since,
            routes=rule.routes,
            dedupe_key=f"{unit}|{rule.name}|{rs.crossing}|{kind}|{repeat_n}",
            crossing=rs.crossing,
            severity=severity,
            repeat_n=repeat_n,
            while_down=rs.while_down and kind == "firing",
            measure="level" if isinstance(rule, LevelRule) else "distance",
        )

    def _blind_event(self, unit: str, state: UnitState, kind: EventKind, now: float) -> AlertEvent:
        if kind == "blind_resolved":
            state.blind_open = False
            self._dirty.add(unit)
        return AlertEvent(
            kind=kind,
            unit=unit,
            rule=BLIND,
            bar=None,
            level=state.level,
            distance=state.distance,
            at=now,
            since=state.stale_since,
            routes=self.config_for(unit).blind_routes,
            dedupe_key=f"{unit}|{BLIND}|{state.blind_seq}|{kind}|0",
            crossing=state.blind_seq,
            severity=-1,
            detail=state.reason,
            measure="blind",
        )

    def _dues(self, unit: str, state: UnitState) -> Iterable[float]:
        config = self.config_for(unit)
        for rule in config.rules:
            rs = state.rules.get(rule.name)
            if rs is None:
                continue
            if rs.phase == "pending" and rs.since is not None:
                yield rs.since + config.for_seconds
            elif rs.phase == "firing" and (due := self._repeat_due(rule, rs)) is not None:
                yield due

    def _touch(self, unit: str, state: UnitState) -> None:
        if any(True for _ in self._dues(unit, state)):
            self._timed.add(unit)
        else:
            self._timed.discard(unit)

    def _band(self, unit: str, *, distance: bool) -> tuple[float, float]:
        state = self._units.get(unit)
        if state is None or state.recheck or state.imported or state.stale_by_import:
            return EMPTY_BAND
        if state.stale:
            return FULL_BAND
        config = self.config_for(unit)
        lo, hi = -math.inf, math.inf
        for rule in config.rules:
            if isinstance(rule, DistanceRule) != distance:
                continue
            rs = state.rules.get(rule.name)
            if rs is None:
                return EMPTY_BAND
            if isinstance(rule, DistanceRule):
                bar, hyst = rule.within, rule.hysteresis
            else:
                bar, hyst = rule.bar, config.hysteresis
            if rs.phase == "ok":
                lo = max(lo, bar)
            else:
                hi = min(hi, bar + hyst)
        return lo, hi
