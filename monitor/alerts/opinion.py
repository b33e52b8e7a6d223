"""Binance's own word as a second opinion: compare the exchange's margin status with our alert state.

Pure and clock-free, like :mod:`monitor.alerts.policy`: every method takes ``now`` and returns the
:class:`AlertEvent` s to send. Binance speaks through ``MARGIN_LEVEL_STATUS_CHANGE`` (Risk Data
Stream, cross only) and through ``marginLevel`` / ``marginLevelStatus`` of every REST read (for a
cross account, which carries no status, the status is read from ``marginLevel`` against the unit's
bars: :func:`status_from_level`).

A status implies a ceiling on the level (:func:`implied_bar`): ``MARGIN_CALL`` and
``PRE_LIQUIDATION`` say "at or below the margin-call bar", ``FORCE_LIQUIDATION`` says "at or below
the liquidation bar". Our state *agrees* (:func:`verdict`) when the rung of our ladder that such a
level must breach — the lowest rung whose bar is at or above the ceiling — is pending or firing, or
when our level is itself at or within ``tolerance`` (relative) of the ceiling. A unit we cannot
evaluate (blind) never agrees: Binance's word is then the only one, and it is passed on.

Per unit, :class:`SecondOpinion` keeps one *disagreement* episode: it fires after the views have
disagreed for ``grace`` seconds (the status event and our own price tick or balance change race
each other: a difference that lasts less than that is no news), and resolves once they agree again
or Binance no longer reports danger. ``FORCE_LIQUIDATION`` — Binance is liquidating — is latched
when heard and always sent, ``grace`` seconds later (time for our own tick to arrive, so the message
can say whether we agree), on the routes of the liquidation rung, even if Binance has moved on
meanwhile (a liquidation ends in no debt within milliseconds), with its own resolved counterpart.

Binance's word from the Risk Data Stream holds until the next one (it is sent on every change); a
REST read's word holds for ``grace + rest_fresh`` seconds, and only while our own level stays within
``tolerance`` of what it was when the word was first checked: a REST read is Binance's level at one
moment, so once prices have moved it describes the past, not a disagreement (a pair read at 1.095
during a crash, then recovering to 1.39 on our ticks, is not "Binance reports MARGIN_CALL"). Past
that it can neither open nor close an episode (an isolated pair has no stream) until the next read.

Dedupe keys are ``unit|rule|<episode start in ms>|kind|0``: stable for one episode, distinct across
episodes and restarts (a counter restarting at 0 would collide with keys already in the outbox).

>>> bars = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}
>>> rules = (LevelRule("normal", 1.5, ("ops",)), LevelRule("margin_call", 1.3, ("ops",)),
...          LevelRule("liquidation", 1.1, ("pager",)))
>>> own = OwnView(level=1.42, firing={"normal": "firing"}, rules=rules, bars=bars)
>>> verdict("MARGIN_CALL", own)
'disagree'
>>> opinion = SecondOpinion(grace=2.0)
>>> opinion.report("cross:main", "MARGIN_CALL", 1.287, 100.0, own)
[]
>>> [e.kind for e in opinion.check("cross:main", 102.0, own)]
['firing']
>>> calm = OwnView(level=1.29, firing={"normal": "firing", "margin_call": "firing"}, rules=rules, bars=bars)
>>> [e.kind for e in opinion.check("cross:main", 103.0, calm)]
['resolved']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from monitor.alerts.rules import AlertEvent, LevelRule

OPINION_RULE = "exchange_opinion"
LIQUIDATION_RULE = "exchange_liquidation"
FORCE = "FORCE_LIQUIDATION"
# Binance's marginLevelStatus → the bar (by name) a level in that status is at or below.
IMPLIED = {"MARGIN_CALL": "margin_call", "PRE_LIQUIDATION": "margin_call", FORCE: "liquidation"}
NO_DEBT_LEVEL = Decimal(999)  # what Binance's REST reports for an account without debt (undocumented)

Verdict = Literal["calm", "agree", "disagree"]


@dataclass(frozen=True, slots=True)
class OwnView:
    """Our side of one unit: its level (None = no debt), which rules are not ok, its ladder and bars.

    ``blind`` is non-empty (the reason) when we have no current level for the unit."""

    level: float | None
    firing: Mapping[str, str]
    rules: Sequence[LevelRule]
    bars: Mapping[str, float]
    blind: str = ""


def alarming(status: str) -> bool:
    """Whether a Binance status says the unit is in danger (margin call or worse)."""
    return status in IMPLIED


def status_from_level(level: Decimal | None, bars: Mapping[str, float]) -> str:
    """The status Binance's reported ``marginLevel`` implies under the unit's bars (cross REST reads
    carry no status). ``None``, 0 and 999 (no debt) read as ``EXCESSIVE``.

    >>> bars = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}
    >>> [status_from_level(Decimal(x), bars) for x in ("2", "1.4", "1.3", "1.1", "0")]
    ['EXCESSIVE', 'NORMAL', 'MARGIN_CALL', 'FORCE_LIQUIDATION', 'EXCESSIVE']
    """
    if level is None or level <= 0 or level >= NO_DEBT_LEVEL:
        return "EXCESSIVE"
    value = float(level)
    if "liquidation" in bars and value <= bars["liquidation"]:
        return FORCE
    if "margin_call" in bars and value <= bars["margin_call"]:
        return "MARGIN_CALL"
    if "normal" in bars and value <= bars["normal"]:
        return "NORMAL"
    return "EXCESSIVE"


def implied_bar(status: str, bars: Mapping[str, float]) -> float | None:
    """The level ceiling a status implies under the unit's bars (None: not alarming, or bar unknown)."""
    name = IMPLIED.get(status)
    return bars.get(name) if name is not None else None


def matching_rule(rules: Sequence[LevelRule], ceiling: float) -> LevelRule | None:
    """The rung a level at ``ceiling`` must breach first: the lowest bar at or above it."""
    candidates = [r for r in rules if r.bar >= ceiling - 1e-12]
    return min(candidates, key=lambda r: r.bar) if candidates else None


def liquidation_rule(rules: Sequence[LevelRule], bars: Mapping[str, float]) -> LevelRule | None:
    """The ladder's liquidation rung: the one at the unit's liquidation bar, else the lowest."""
    if not rules:
        return None
    bar = bars.get("liquidation")
    exact = [r for r in rules if bar is not None and abs(r.bar - bar) < 1e-12]
    return exact[0] if exact else min(rules, key=lambda r: r.bar)


def verdict(status: str, own: OwnView, tolerance: float = 0.01) -> Verdict:
    """``calm`` (Binance reports no danger), ``agree`` or ``disagree``; see the module docstring."""
    if not alarming(status):
        return "calm"
    if own.blind:
        return "disagree"
    ceiling = implied_bar(status, own.bars)
    if ceiling is None:  # bars unknown: any rung engaged, or any level at all, is taken as agreement
        return "agree" if own.firing or own.level is not None else "disagree"
    rule = matching_rule(own.rules, ceiling)
    if rule is not None and own.firing.get(rule.name) in ("pending", "firing"):
        return "agree"
    if own.level is not None and own.level <= ceiling * (1 + tolerance):
        return "agree"
    return "disagree"


@dataclass(slots=True)
class _Unit:
    seq: int = 0  # the order Binance first spoke about the unit in (``SecondOpinion.active_units``)
    status: str = "EXCESSIVE"
    exchange_level: float | None = None
    source: str = ""
    heard_at: float = 0.0
    disagree_since: float | None = None
    open_since: float | None = None  # start of the disagreement episode whose alert was sent
    liquidation_since: float | None = None  # the Binance liquidation alert was sent (open)
    liquidation_heard: float | None = None  # FORCE_LIQUIDATION heard, not yet covered nor sent
    liquidation_level: float | None = None
    liquidation_agreed: bool = False  # our own view agreed at some point since it was heard
    routes: tuple[str, ...] = ()
    liquidation_routes: tuple[str, ...] = ()
    anchor: float | None = None  # our level when a REST word was first checked (see the docstring)
    anchored: bool = False


def _active(state: _Unit) -> bool:
    return (
        alarming(state.status)
        or state.disagree_since is not None
        or state.open_since is not None
        or state.liquidation_heard is not None
        or state.liquidation_since is not None
    )


def moved(before: float | None, now: float | None, tolerance: float) -> bool:
    """Our level moved by more than ``tolerance`` (relative) since ``before`` (None: no level).

    >>> moved(1.095, 1.10, 0.01), moved(1.095, 1.394, 0.01), moved(None, None, 0.01)
    (False, True, False)
    """
    if before is None or now is None:
        return before is not now
    return abs(now - before) > tolerance * abs(before)


@dataclass
class SecondOpinion:
    """Binance's latest word per unit and the disagreement episodes; see the module docstring."""

    grace: float = 5.0
    tolerance: float = 0.01
    rest_fresh: float = 5.0  # how long after ``grace`` a REST word may still start or end an episode
    disagreements: int = 0  # episodes alerted (FORCE_LIQUIDATION with a disagreeing view included)
    _units: dict[str, _Unit] = field(default_factory=dict)
    _active: dict[str, int] = field(default_factory=dict)  # unit → seq, for each unit ``active`` now

    def report(
        self, unit: str, status: str, level: float | None, now: float, own: OwnView, *, source: str = ""
    ) -> list[AlertEvent]:
        """Binance's word on ``unit`` arrived (``level``: its reported level, if any)."""
        self.note(unit, status, level, now, source=source)
        return self.check(unit, now, own)

    def note(self, unit: str, status: str, level: float | None, now: float, *, source: str = "") -> None:
        """Record Binance's word without deciding yet (before our own state exists)."""
        state = self._units.get(unit)
        if state is None:
            state = self._units[unit] = _Unit(seq=len(self._units))
        state.status, state.exchange_level, state.source, state.heard_at = status, level, source, now
        state.anchored = False
        if status == FORCE and state.liquidation_heard is None and state.liquidation_since is None:
            state.liquidation_level, state.liquidation_agreed = level, False
            state.liquidation_heard = now
        self._mark(unit, state)

    def check(self, unit: str, now: float, own: OwnView) -> list[AlertEvent]:
        """Re-decide ``unit`` against our current view (call on every change and periodically)."""
        state = self._units.get(unit)
        if state is None:
            return []
        events: list[AlertEvent] = []
        view = verdict(state.status, own, self.tolerance)
        if state.liquidation_since is not None and state.status != FORCE:
            events.append(self._event("resolved", unit, LIQUIDATION_RULE, state, own, view, now))
            state.liquidation_since = None
        if state.liquidation_heard is not None:
            if verdict(FORCE, own, self.tolerance) == "agree":
                state.liquidation_agreed = True
            if now - state.liquidation_heard >= self.grace:
                state.liquidation_since, state.liquidation_heard = state.liquidation_heard, None
                rule = liquidation_rule(own.rules, own.bars)
                state.liquidation_routes = rule.routes if rule is not None else ()
                said: Verdict = "agree" if state.liquidation_agreed else "disagree"
                self.disagreements += said == "disagree"
                events.append(self._event("firing", unit, LIQUIDATION_RULE, state, own, said, now))
        if state.source == "rest" and not state.anchored:
            state.anchor, state.anchored = own.level, True
        if state.source == "rest" and (
            now - state.heard_at > self.grace + self.rest_fresh
            or moved(state.anchor, own.level, self.tolerance)
        ):
            # a REST read is Binance's word at that moment only (an isolated pair has no stream to
            # say it changed): past its freshness, or once prices moved our level, it neither starts
            # nor ends an episode
            state.disagree_since = None
        elif view == "disagree":
            if state.disagree_since is None:
                state.disagree_since = now
            due = now - state.disagree_since >= self.grace
            if state.open_since is None and due and state.status != FORCE:
                state.open_since = state.disagree_since
                ceiling = implied_bar(state.status, own.bars)
                rule = matching_rule(own.rules, ceiling) if ceiling is not None else None
                state.routes = (
                    rule.routes
                    if rule is not None
                    else tuple(dict.fromkeys(r for rung in own.rules for r in rung.routes))
                )
                self.disagreements += 1
                events.append(self._event("firing", unit, OPINION_RULE, state, own, view, now))
        else:
            state.disagree_since = None
            if state.open_since is not None:
                events.append(self._event("resolved", unit, OPINION_RULE, state, own, view, now))
                state.open_since = None
        self._mark(unit, state)
        return events

    def units(self) -> list[str]:
        """Units Binance has spoken about."""
        return list(self._units)

    def active(self, unit: str) -> bool:
        """Whether ``unit`` needs deciding: Binance reports danger, or an episode is under way. For
        the others the verdict is "calm" whatever our view (callers skip computing it)."""
        state = self._units.get(unit)
        return state is not None and _active(state)

    def active_units(self) -> list[str]:
        """The units :meth:`active` is true of, in the order of :meth:`units`, without looking at
        every unit (kept up to date by ``note`` and ``check``, the only writers of a unit's state)."""
        return sorted(self._active, key=self._active.__getitem__)

    def _mark(self, unit: str, state: _Unit) -> None:
        if _active(state):
            self._active[unit] = state.seq
        else:
            self._active.pop(unit, None)

    def status(self, unit: str) -> str | None:
        """Binance's latest status for ``unit`` (None: never heard)."""
        state = self._units.get(unit)
        return None if state is None else state.status

    def open(self, unit: str) -> bool:
        """Whether a disagreement alert of ``unit`` is open (sent and not resolved)."""
        state = self._units.get(unit)
        return state is not None and state.open_since is not None

    def _event(
        self,
        kind: Literal["firing", "resolved"],
        unit: str,
        rule: str,
        state: _Unit,
        own: OwnView,
        view: Verdict,
        now: float,
    ) -> AlertEvent:
        liquidation = rule == LIQUIDATION_RULE
        since = state.liquidation_since if liquidation else state.open_since
        assert since is not None
        return AlertEvent(
            kind=kind,
            unit=unit,
            rule=rule,
            bar=implied_bar(FORCE if liquidation else state.status, own.bars) if kind == "firing" else None,
            level=None if own.blind else own.level,
            distance=None,
            at=now,
            since=since,
            routes=state.liquidation_routes if liquidation else state.routes,
            dedupe_key=f"{unit}|{rule}|{int(since * 1000)}|{kind}|0",
            crossing=int(since * 1000),
            severity=0,
            detail=own.blind,
            measure="exchange",
            exchange_status=FORCE if liquidation and kind == "firing" else state.status,
            exchange_level=state.liquidation_level
            if liquidation and kind == "firing"
            else state.exchange_level,
            verdict=view,
        )
