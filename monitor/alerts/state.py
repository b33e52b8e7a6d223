"""The mutable per-unit alert state behind :class:`monitor.alerts.policy.AlertPolicy`, and its JSON form.

Kept apart from the policy so the persisted shape is visible in one place: a change here is a
change of the state file's contents (bump ``STATE_VERSION``; :mod:`monitor.store` keeps it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["ok", "pending", "firing"]
PHASES: tuple[Phase, ...] = ("ok", "pending", "firing")
STATE_VERSION = 1


@dataclass(slots=True)
class RuleState:
    """One rule of one unit. ``since``: start of the breach; ``crossing`` counts firings."""

    phase: Phase = "ok"
    crossing: int = 0
    since: float | None = None
    last_sent: float | None = None
    repeats: int = 0
    while_down: bool = False
    restored: bool = False  # loaded from a restart and not evaluated since (not persisted)


@dataclass(slots=True)
class UnitState:
    """All rules of one unit plus its staleness ("blind") bookkeeping."""

    rules: dict[str, RuleState] = field(default_factory=dict)
    level: float | None = None
    distance: float | None = None
    stale: bool = False
    stale_since: float | None = None
    reason: str = ""
    blind_seq: int = 0
    blind_open: bool = False
    recheck: bool = False  # the next evaluation applies fresh data before timers
    stale_by_import: bool = False  # stale at shutdown; not persisted
    imported: bool = False  # loaded from a restart and not evaluated since; not persisted


def dump_unit(state: UnitState) -> dict[str, Any]:
    """The JSON-ready form of one unit's state."""
    return {
        "v": STATE_VERSION,
        "level": state.level,
        "distance": state.distance,
        "stale": state.stale,
        "stale_since": state.stale_since,
        "reason": state.reason,
        "blind_seq": state.blind_seq,
        "blind_open": state.blind_open,
        "recheck": state.recheck,
        "rules": {
            name: {
                "phase": rs.phase,
                "crossing": rs.crossing,
                "since": rs.since,
                "last_sent": rs.last_sent,
                "repeats": rs.repeats,
                "while_down": rs.while_down,
            }
            for name, rs in state.rules.items()
        },
    }


def load_unit(blob: Any) -> UnitState:
    """Parse :func:`dump_unit`'s output; raises ValueError/TypeError/KeyError on a bad shape."""
    if not isinstance(blob, dict):
        raise TypeError(f"expected an object, got {type(blob).__name__}")
    if blob.get("v", STATE_VERSION) != STATE_VERSION:
        raise ValueError(f"unsupported state version {blob.get('v')!r}")
    rules_blob = blob.get("rules", {})
    if not isinstance(rules_blob, dict):
        raise TypeError("rules: expected an object")
    rules = {str(name): _load_rule(name, rb) for name, rb in rules_blob.items()}
    stale = _bool(blob.get("stale", False), "stale")
    return UnitState(
        rules=rules,
        level=_opt_float(blob.get("level"), "level"),
        distance=_opt_float(blob.get("distance"), "distance"),
        stale=stale,
        stale_since=_opt_float(blob.get("stale_since"), "stale_since"),
        reason=str(blob.get("reason", "")),
        blind_seq=_count(blob.get("blind_seq", 0), "blind_seq"),
        blind_open=_bool(blob.get("blind_open", False), "blind_open"),
        recheck=_bool(blob.get("recheck", False), "recheck"),
        stale_by_import=stale,
        imported=True,
    )


def _load_rule(name: str, blob: Any) -> RuleState:
    if not isinstance(blob, dict):
        raise TypeError(f"rule {name!r}: expected an object")
    phase = blob.get("phase", "ok")
    if phase not in PHASES:
        raise ValueError(f"rule {name!r}: unknown phase {phase!r}")
    since = _opt_float(blob.get("since"), "since")
    if phase != "ok" and since is None:
        raise ValueError(f"rule {name!r}: phase {phase} needs since")
    return RuleState(
        phase=phase,
        crossing=_count(blob.get("crossing", 0), "crossing"),
        since=since,
        last_sent=_opt_float(blob.get("last_sent"), "last_sent"),
        repeats=_count(blob.get("repeats", 0), "repeats"),
        while_down=_bool(blob.get("while_down", False), "while_down"),
        restored=True,
    )


def _opt_float(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{key}: expected a number or null, got {value!r}")
    return float(value)


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key}: expected a non-negative integer, got {value!r}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    return value
