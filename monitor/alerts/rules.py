"""The alert rules (config-independent: the service maps config.yaml onto them) and the events.

Re-exported by :mod:`monitor.alerts.policy`; import them from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

EventKind = Literal["firing", "repeat", "resolved", "blind", "blind_resolved"]
Measure = Literal["level", "distance", "blind", "exchange"]
BLIND = "blind"


@dataclass(frozen=True, slots=True)
class LevelRule:
    """Alert when the margin level is at or below ``bar``; ``repeat`` in seconds (None = never)."""

    name: str
    bar: float
    routes: tuple[str, ...]
    repeat: float | None = None
    resolved: bool = True


@dataclass(frozen=True, slots=True)
class DistanceRule:
    """Alert when a uniform move of at most ``within`` (0.05 = 5 %, either sign) liquidates.

    ``liquidation_bar`` is the bar the distance is measured to: at or below it the rule stays
    breached whatever the distance, which there is the move that *restores* the bar. Without it a
    long account sinking 4 % past liquidation had its distance alert "resolved" (|+4 %| > within)
    while it got worse."""

    within: float
    routes: tuple[str, ...]
    repeat: float | None = None
    resolved: bool = True
    hysteresis: float = 0.005
    name: str = "liquidation_distance"
    liquidation_bar: float | None = None


Rule = LevelRule | DistanceRule


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The alert ladder and its timing; validated on construction (ValueError, one line)."""

    levels: tuple[LevelRule, ...]
    hysteresis: float = 0.02
    for_seconds: float = 0.0
    distance: DistanceRule | None = None
    stale_after: float = 30.0
    blind_routes: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [rule.name for rule in self.levels] + ([self.distance.name] if self.distance else [])
        for name in names:
            if names.count(name) > 1 or name == BLIND:
                raise ValueError(f"alert rule name {name!r} is duplicate or reserved")
        for rule in self.levels:
            if not (math.isfinite(rule.bar) and rule.bar > 0):
                raise ValueError(f"alert rule {rule.name!r}: bar must be a finite number > 0")
        for r in (*self.levels, *((self.distance,) if self.distance else ())):
            if r.repeat is not None and not r.repeat > 0:
                raise ValueError(f"alert rule {r.name!r}: repeat must be > 0 seconds or None")
        if self.distance and not 0 < self.distance.within < 1:
            raise ValueError("distance rule: within must be a fraction between 0 and 1")
        if not (self.hysteresis >= 0 and self.for_seconds >= 0 and self.stale_after > 0):
            raise ValueError("hysteresis and for must be >= 0, stale_after > 0")
        # Severity order: highest bar first (1.5, 1.3, 1.1), the distance rule last.
        by_bar = sorted(self.levels, key=lambda rule: -rule.bar)
        ordered: tuple[Rule, ...] = tuple(by_bar)
        object.__setattr__(self, "rules", ordered + ((self.distance,) if self.distance else ()))


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One thing to tell the trader. ``bar`` is the level bar (the ``within`` limit for the distance
    rule, None for blind); ``since`` is when the breach (or the staleness) began; ``measure`` says
    which rule family fired (``level``, ``distance`` or ``blind``)."""

    kind: EventKind
    unit: str
    rule: str
    bar: float | None
    level: float | None
    distance: float | None
    at: float
    since: float | None
    routes: tuple[str, ...]
    dedupe_key: str
    crossing: int
    severity: int
    repeat_n: int = 0
    while_down: bool = False
    detail: str = ""
    measure: Measure = "level"
    # measure "exchange" (monitor.alerts.opinion): Binance's status and level, and whether our view agrees
    exchange_status: str = ""
    exchange_level: float | None = None
    verdict: str = ""
