"""Silences and acknowledgements: which alert messages are held back. Pure: no I/O, no clock.

Modelled on Alertmanager's silences (a matcher and a time window; the alert keeps firing and is
shown as silenced, only its notifications are held back) and PagerDuty's acknowledge (quiet until
the incident resolves). A :class:`Silence` names:

- an account and, optionally, one of its units: ``demo`` (every unit of the account), ``demo:cross``
  (its cross account), ``demo:BTCUSDT`` (its isolated pair);
- optionally a rule (``bar``): ``normal``, ``margin_call``, ``liquidation``, ``liquidation_distance``,
  ``blind`` or a rung's own name. Without one it covers every rule **except the protected ones**: the
  liquidation bar, any numeric rung at or below it, the distance-to-liquidation rule and "blind"
  (monitoring stopped). A silence hides those only when it names them.
- a window: from ``starts_at`` until ``ends_at``, or, with ``ends_at`` None, until the alerts it
  covers have all resolved (an acknowledgement). ``expired_at`` is set when it is lifted early.

What is held back: firing and repeat messages that an active silence covers; a "resolved" message
only when a *timed* silence covers it (an acknowledged alert's recovery is news, so it is sent).

>>> s = Silence("a1", "demo", None, None, starts_at=0.0, ends_at=3600.0)
>>> covers(s, "cross:demo", "margin_call", protected=False, now=10.0)
True
>>> covers(s, "cross:demo", "liquidation", protected=True, now=10.0)
False
>>> covers(s, "cross:demo2", "margin_call", protected=False, now=10.0)
False
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = [
    "PROTECTED_RULES",
    "Silence",
    "SilenceError",
    "ack_over",
    "covers",
    "from_dict",
    "held_back",
    "is_protected",
    "parse_target",
    "split_unit",
]

PROTECTED_RULES = frozenset({"liquidation", "liquidation_distance", "blind"})
_ACCOUNT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SYMBOL = re.compile(r"^[A-Z0-9]{4,20}$")
_RULE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
RESOLVED_KINDS = frozenset({"resolved", "blind_resolved"})


class SilenceError(ValueError):
    """A silence that cannot be made; the message is one line saying what is wrong."""


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence (see the module docstring). ``scope``: None, ``"cross"`` or an isolated symbol."""

    id: str
    account: str
    scope: str | None
    bar: str | None
    starts_at: float
    ends_at: float | None
    comment: str = ""
    expired_at: float | None = None

    @property
    def target(self) -> str:
        """``ACCOUNT`` or ``ACCOUNT:SCOPE``, as typed on the command line."""
        return self.account if self.scope is None else f"{self.account}:{self.scope}"

    @property
    def until_resolved(self) -> bool:
        return self.ends_at is None

    def active(self, now: float) -> bool:
        """In force at ``now``: started, not ended, not lifted."""
        if self.expired_at is not None and now >= self.expired_at:
            return False
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)

    def covers_unit(self, unit: str) -> bool:
        """Whether ``unit`` (``cross:ACCOUNT`` / ``isolated:ACCOUNT:SYMBOL``) is within the target."""
        account, symbol = split_unit(unit)
        if account != self.account:
            return False
        if self.scope is None:
            return True
        return symbol is None if self.scope == "cross" else symbol == self.scope

    def covers_rule(self, rule: str, protected: bool) -> bool:
        """Whether the rule is covered: named, or any unprotected rule when none is named."""
        return rule == self.bar if self.bar is not None else not protected

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (state file, HTTP API), plus the ``target`` for display."""
        return {**asdict(self), "target": self.target, "until_resolved": self.until_resolved}


def split_unit(unit: str) -> tuple[str, str | None]:
    """``cross:demo`` → ("demo", None); ``isolated:demo:BTCUSDT`` → ("demo", "BTCUSDT")."""
    kind, _, rest = unit.partition(":")
    if kind == "isolated":
        account, _, symbol = rest.rpartition(":")
        return account, symbol
    return rest, None


def parse_target(text: str) -> tuple[str, str | None]:
    """``ACCOUNT`` or ``ACCOUNT:PAIR`` (``PAIR`` a symbol or ``cross``) → (account, scope).

    >>> parse_target("demo:btcusdt")
    ('demo', 'BTCUSDT')
    """
    account, sep, scope = text.strip().partition(":")
    if not _ACCOUNT.match(account):
        raise SilenceError(f"{text!r}: expected ACCOUNT or ACCOUNT:PAIR, e.g. demo or demo:BTCUSDT")
    if not sep:
        return account, None
    if scope.lower() == "cross":
        return account, "cross"
    if not _SYMBOL.match(scope.upper()):
        raise SilenceError(f"{text!r}: {scope!r} is neither 'cross' nor a symbol such as BTCUSDT")
    return account, scope.upper()


def make(
    id: str,
    target: str,
    *,
    bar: str | None,
    now: float,
    duration: float | None,
    comment: str = "",
) -> Silence:
    """A new silence from what a user typed; ``duration`` None = until resolved."""
    account, scope = parse_target(target)
    if bar is not None and not _RULE.match(bar):
        raise SilenceError(f"bar {bar!r}: expected a rule name such as margin_call or liquidation")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise SilenceError("duration must be more than 0 seconds")
    if len(comment) > 500:
        raise SilenceError("comment is longer than 500 characters")
    ends = None if duration is None else now + duration
    return Silence(id, account, scope, bar, starts_at=now, ends_at=ends, comment=comment)


def from_dict(data: Mapping[str, Any]) -> Silence:
    """Parse :meth:`Silence.to_dict`'s output; raises :class:`SilenceError` on a bad shape."""
    try:
        silence = Silence(
            id=str(data["id"]),
            account=str(data["account"]),
            scope=None if data.get("scope") is None else str(data["scope"]),
            bar=None if data.get("bar") is None else str(data["bar"]),
            starts_at=float(data["starts_at"]),
            ends_at=None if data.get("ends_at") is None else float(data["ends_at"]),
            comment=str(data.get("comment", "")),
            expired_at=None if data.get("expired_at") is None else float(data["expired_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SilenceError(f"bad silence record: {type(exc).__name__}: {exc}") from None
    parse_target(silence.target)
    return silence


def is_protected(rule: str, measure: str, bar: float | None, liquidation_bar: float | None) -> bool:
    """Rules a silence hides only when it names them: liquidation, blind, distance to liquidation,
    and any level rung at or below the unit's liquidation bar.

    >>> is_protected("level_1.05", "level", 1.05, 1.1), is_protected("normal", "level", 1.5, 1.1)
    (True, False)
    """
    if rule in PROTECTED_RULES or measure in ("blind", "distance"):
        return True
    return measure == "level" and bar is not None and liquidation_bar is not None and bar <= liquidation_bar


def covers(silence: Silence, unit: str, rule: str, *, protected: bool, now: float) -> bool:
    """Whether ``silence`` is active at ``now`` and covers this unit's rule."""
    return silence.active(now) and silence.covers_unit(unit) and silence.covers_rule(rule, protected)


def held_back(
    silences: Iterable[Silence], unit: str, rule: str, kind: str, *, protected: bool, now: float
) -> list[Silence]:
    """The silences that hold back a message of ``kind`` (``firing``, ``repeat``, ``resolved``…);
    empty = deliver it. A resolved message is held back only by timed silences."""
    found = [s for s in silences if covers(s, unit, rule, protected=protected, now=now)]
    if kind in RESOLVED_KINDS:
        found = [s for s in found if not s.until_resolved]
    return found


def ack_over(silence: Silence, firing: Mapping[str, Iterable[tuple[str, bool]]]) -> bool:
    """For an acknowledgement: True when nothing it covers still fires. ``firing`` maps each unit to
    its (rule, protected) pairs that are firing or pending."""
    return not any(
        silence.covers_unit(unit) and silence.covers_rule(rule, protected)
        for unit, rules in firing.items()
        for rule, protected in rules
    )


def lifted(silence: Silence, now: float) -> Silence:
    """The silence, expired at ``now`` (kept for the record)."""
    return replace(silence, expired_at=now)
