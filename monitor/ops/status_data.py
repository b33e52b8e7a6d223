"""What ``/status`` adds to each unit's report: its alerts, the silences on it and the age of its data.

Added keys (the report's own keys are unchanged):

- ``firing``: rule names firing now (worst first as the ladder orders them); ``pending``: rules
  breached but waiting out ``alerts.for``;
- ``silenced``: the firing rules whose messages a silence holds back; ``silences``: ids of the
  active silences covering the unit;
- ``blind``: the unit is frozen for stale data (no alert is computed from it); its ``state`` then
  reads ``blind`` and ``reason`` says why, whatever the last numbers were;
- ``age``: seconds since the oldest of the unit's prices last moved (None: it needs no price);
  ``snapshot_age``: seconds since the account was last re-read over REST.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from monitor.alerts.policy import AlertPolicy, DistanceRule, LevelRule
from monitor.notify.silence_stage import FiringMap, SilenceRegistry
from monitor.notify.silences import is_protected
from monitor.risk.book import AccountBook
from monitor.risk.report import UnitReport


def liquidation_bar(report: UnitReport | Mapping[str, Any]) -> float | None:
    """The unit's liquidation bar (1.1 for classic cross), from a report or its JSON."""
    bars = report.bars if isinstance(report, UnitReport) else report.get("bars", {})
    name = report.liquidation_bar if isinstance(report, UnitReport) else report.get("liquidation_bar")
    value = bars.get(name) if isinstance(name, str) else None
    return float(value) if isinstance(value, int | float) else None


def rule_protected(policy: AlertPolicy, unit: str, rule: str, liq_bar: float | None) -> bool:
    """Whether a silence must name ``rule`` to hide it on ``unit`` (see :mod:`monitor.notify.silences`)."""
    for r in policy.config_for(unit).rules:
        if r.name == rule:
            if isinstance(r, DistanceRule):
                return True
            assert isinstance(r, LevelRule)
            return is_protected(rule, "level", r.bar, liq_bar)
    return is_protected(rule, "blind" if rule == "blind" else "level", None, liq_bar)


def firing_map(policy: AlertPolicy, book: AccountBook, restore_target: str) -> FiringMap:
    """unit → (rule, protected) for every rule firing or pending, plus ``blind`` on blind units."""
    out: dict[str, list[tuple[str, bool]]] = {}
    known = set(book.units())
    for unit in policy.units():
        rules = policy.firing(unit)
        blind = policy.is_stale(unit)
        if not rules and not blind:
            continue
        liq = liquidation_bar(book.report(unit, restore_target=restore_target)) if unit in known else None
        out[unit] = [(rule, rule_protected(policy, unit, rule, liq)) for rule in rules]
        if blind:
            out[unit].append(("blind", True))
    return out


def annotate(
    data: dict[str, Any],
    policy: AlertPolicy | None,
    silences: SilenceRegistry | None,
    *,
    blind: bool,
    price_ages: Iterable[float],
    snapshot_age: float | None,
) -> dict[str, Any]:
    """``data`` (a report's JSON) with the keys listed in the module docstring."""
    unit = str(data["unit"])
    phases = policy.firing(unit) if policy is not None else {}
    firing = [rule for rule, phase in phases.items() if phase == "firing"]
    liq = liquidation_bar(data)
    silenced: list[str] = []
    if silences is not None and policy is not None:
        for rule in firing + (["blind"] if blind else []):
            if silences.holding(unit, rule, rule_protected(policy, unit, rule, liq)):
                silenced.append(rule)
    ages = list(price_ages)
    data["firing"] = firing
    data["pending"] = [rule for rule, phase in phases.items() if phase == "pending"]
    data["silenced"] = silenced
    data["silences"] = [s.id for s in silences.covering(unit)] if silences is not None else []
    data["blind"] = blind
    if blind and data.get("state") != "blind":
        why = policy.stale_reason(unit) if policy is not None else ""
        data["state"], data["reason"] = "blind", why or "no fresh data (stale_after passed)"
    data["age"] = round(max(ages), 3) if ages else None
    data["snapshot_age"] = None if snapshot_age is None else round(snapshot_age, 3)
    return data
