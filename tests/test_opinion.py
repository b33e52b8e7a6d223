"""Binance's status as a second opinion (monitor.alerts.opinion): the verdict, the episodes, the keys."""

from __future__ import annotations

import doctest
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

import monitor.alerts.opinion as opinion_module
import monitor.exchange.diagnose as diagnose_module
from monitor.alerts.opinion import (
    LIQUIDATION_RULE,
    OPINION_RULE,
    OwnView,
    SecondOpinion,
    implied_bar,
    matching_rule,
    status_from_level,
    verdict,
)
from monitor.alerts.policy import AlertPolicy, LevelRule, PolicyConfig
from monitor.notify.messages import render

BARS = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}
RULES = (
    LevelRule("normal", 1.5, ("ops",)),
    LevelRule("margin_call", 1.3, ("ops",)),
    LevelRule("liquidation", 1.1, ("pager",)),
)
STATUSES = ("EXCESSIVE", "NORMAL", "MARGIN_CALL", "PRE_LIQUIDATION", "FORCE_LIQUIDATION")
levels = st.decimals(min_value=Decimal("0.5"), max_value=Decimal(5), places=4)


def own_from_policy(level: float | None) -> OwnView:
    """Our view as the real alert policy has it after evaluating ``level`` (no hysteresis, no ``for``)."""
    policy = AlertPolicy(PolicyConfig(levels=RULES, hysteresis=0.0))
    policy.evaluate("cross:main", level, None, 0.0)
    return OwnView(level=level, firing=policy.firing("cross:main"), rules=RULES, bars=BARS)


def true_status(level: Decimal) -> str:
    """The status a level has, by Decimal comparison with the bars (the sim's reading, no PRE gap)."""
    if level <= Decimal("1.1"):
        return "FORCE_LIQUIDATION"
    if level <= Decimal("1.3"):
        return "MARGIN_CALL"
    return "NORMAL" if level <= Decimal("1.5") else "EXCESSIVE"


@given(levels)
def test_status_from_level_matches_exact_comparison(level: Decimal) -> None:
    """Reading a status from a reported level agrees with an exact Decimal comparison with the bars."""
    assert status_from_level(level, BARS) == true_status(level)


@given(levels)
def test_same_level_on_both_sides_always_agrees(level: Decimal) -> None:
    """When Binance's level and ours are the same number, the real policy's firing state agrees with
    Binance's status: never a disagreement alert from a consistent pair of views."""
    status = true_status(level)
    assert verdict(status, own_from_policy(float(level)), tolerance=0.0) in ("agree", "calm")


@given(levels, levels)
def test_disagreement_iff_our_level_is_clearly_above_the_bar(ours: Decimal, theirs: Decimal) -> None:
    """A disagreement is declared exactly when Binance says danger and our level is above the bar its
    status implies (beyond the tolerance), checked against exact Decimal arithmetic."""
    status = true_status(theirs)
    tolerance = Decimal("0.01")
    got = verdict(status, own_from_policy(float(ours)), tolerance=float(tolerance))
    ceiling = {"MARGIN_CALL": Decimal("1.3"), "FORCE_LIQUIDATION": Decimal("1.1")}.get(status)
    if ceiling is None:
        assert got == "calm"
    else:
        expected = "disagree" if ours > ceiling * (1 + tolerance) else "agree"
        # float rounding at the exact boundary is the only allowed difference
        if abs(ours - ceiling * (1 + tolerance)) > Decimal("1e-9"):
            assert got == expected


def test_blind_never_agrees_and_says_why() -> None:
    """With no current level of our own, Binance's margin call is passed on, naming why we are blind."""
    opinion = SecondOpinion(grace=0.0)
    own = OwnView(level=None, firing={}, rules=RULES, bars=BARS, blind="blind: no fresh data")
    (event,) = opinion.report("cross:main", "MARGIN_CALL", 1.25, 10.0, own)
    message = render(event, None)
    assert "our own level is unknown (blind: no fresh data)" in message.body
    assert message.title.startswith("[BINANCE DISAGREES] main (cross): Binance reports MARGIN_CALL")


def test_disagreement_waits_out_the_grace_then_fires_once_then_resolves() -> None:
    """A difference shorter than the grace period is no news; one that lasts fires once (ops route,
    the margin-call rung's), repeats nothing, and resolves when the views agree."""
    opinion = SecondOpinion(grace=2.0)
    ours = own_from_policy(1.42)
    assert opinion.report("cross:main", "MARGIN_CALL", 1.287, 100.0, ours) == []
    assert opinion.check("cross:main", 101.9, ours) == []
    (fired,) = opinion.check("cross:main", 102.0, ours)
    assert opinion.check("cross:main", 105.0, ours) == []
    assert (fired.kind, fired.rule, fired.routes, fired.bar) == ("firing", OPINION_RULE, ("ops",), 1.3)
    assert fired.dedupe_key == "cross:main|exchange_opinion|100000|firing|0"
    text = render(fired, None)
    assert "Binance reports MARGIN_CALL for main (cross) (its level 1.287); our own level reads 1.420: " \
        "prices or balances disagree." in text.body  # fmt: skip
    (resolved,) = opinion.check("cross:main", 106.0, own_from_policy(1.29))
    assert resolved.kind == "resolved"
    assert resolved.dedupe_key == "cross:main|exchange_opinion|100000|resolved|0"
    assert opinion.disagreements == 1 and not opinion.open("cross:main")


def test_short_disagreement_is_forgotten() -> None:
    """A status event that races our own tick: agreement within the grace period sends nothing."""
    opinion = SecondOpinion(grace=2.0)
    assert opinion.report("cross:main", "MARGIN_CALL", 1.29, 0.0, own_from_policy(1.31 * 1.02)) == []
    assert opinion.check("cross:main", 1.0, own_from_policy(1.29)) == []
    assert opinion.check("cross:main", 5.0, own_from_policy(1.29)) == []
    assert opinion.disagreements == 0


def test_binance_back_to_normal_resolves() -> None:
    """Binance no longer reporting danger closes an open disagreement."""
    opinion = SecondOpinion(grace=0.0)
    ours = own_from_policy(1.42)
    assert [e.kind for e in opinion.report("cross:main", "PRE_LIQUIDATION", 1.12, 0.0, ours)] == ["firing"]
    assert [e.kind for e in opinion.report("cross:main", "NORMAL", 1.42, 1.0, ours)] == ["resolved"]


def test_force_liquidation_always_reaches_the_liquidation_routes() -> None:
    """FORCE_LIQUIDATION is always sent, after the grace, on the liquidation rung's routes: saying we
    agree when our own view agreed meanwhile, else that we disagree; also when Binance has moved on
    meanwhile (a liquidation ends in no debt at once); then resolved; episodes have distinct keys."""
    opinion = SecondOpinion(grace=1.0)
    assert opinion.report("cross:main", "FORCE_LIQUIDATION", 1.05, 1.0, own_from_policy(1.2)) == []
    (agreed,) = opinion.check("cross:main", 2.0, own_from_policy(1.05))
    assert (agreed.rule, agreed.routes, agreed.verdict) == (LIQUIDATION_RULE, ("pager",), "agree")
    assert "disagree" not in render(agreed, None).body
    (over,) = opinion.report("cross:main", "EXCESSIVE", None, 6.0, own_from_policy(None))
    assert over.kind == "resolved"
    assert opinion.report("cross:main", "FORCE_LIQUIDATION", 1.08, 10.0, own_from_policy(1.6)) == []
    assert opinion.report("cross:main", "EXCESSIVE", None, 10.1, own_from_policy(1.6)) == []
    (fired,) = opinion.check("cross:main", 11.0, own_from_policy(None))
    assert (fired.rule, fired.routes, fired.verdict) == (LIQUIDATION_RULE, ("pager",), "disagree")
    assert (fired.exchange_status, fired.exchange_level, fired.bar) == ("FORCE_LIQUIDATION", 1.08, 1.1)
    assert fired.dedupe_key != agreed.dedupe_key
    message = render(fired, None)
    assert message.notify_type == "failure" and "prices or balances disagree" in message.body
    assert message.title == "[BINANCE FORCE LIQUIDATION] main (cross): Binance reports FORCE_LIQUIDATION"
    (gone,) = opinion.check("cross:main", 12.0, own_from_policy(None))
    assert gone.kind == "resolved" and gone.dedupe_key == fired.dedupe_key.replace("firing", "resolved")
    assert opinion.disagreements == 1


def test_matching_rule_is_the_lowest_rung_at_or_above_the_ceiling() -> None:
    """A custom ladder (1.6, 1.25): Binance's margin call (≤ 1.3) must breach the 1.6 rung."""
    ladder = (LevelRule("warn", 1.6, ("a",)), LevelRule("deep", 1.25, ("b",)))
    ceiling = implied_bar("MARGIN_CALL", BARS)
    assert ceiling == 1.3
    rule = matching_rule(ladder, ceiling)
    assert rule is not None and rule.name == "warn"
    own = OwnView(level=1.4, firing={"warn": "firing"}, rules=ladder, bars=BARS)
    assert verdict("MARGIN_CALL", own) == "agree"
    assert verdict("MARGIN_CALL", OwnView(level=1.7, firing={}, rules=ladder, bars=BARS)) == "disagree"


@given(st.lists(st.tuples(st.sampled_from(STATUSES), levels), min_size=1, max_size=30))
def test_every_firing_has_one_resolved_with_the_same_episode(words: list[tuple[str, Decimal]]) -> None:
    """Whatever Binance says in whatever order: firing and resolved alternate per rule, each resolved
    carries its firing's episode key, and nothing fires twice for one episode."""
    opinion = SecondOpinion(grace=0.0)
    open_keys: dict[str, str] = {}
    for n, (status, ours) in enumerate(words):
        for event in opinion.report("cross:main", status, 1.2, float(n), own_from_policy(float(ours))):
            episode = event.dedupe_key.rsplit("|", 2)[0]
            if event.kind == "firing":
                assert event.rule not in open_keys
                open_keys[event.rule] = episode
            else:
                assert open_keys.pop(event.rule) == episode


def test_a_rest_word_goes_stale_without_closing_the_episode() -> None:
    """A REST read (an isolated pair's only word) opens an episode while fresh; once stale it neither
    re-opens nor resolves anything; the next read decides."""
    opinion = SecondOpinion(grace=1.0, rest_fresh=1.0)
    unit = "isolated:main:BTCUSDT"
    ours = own_from_policy(1.42)
    assert opinion.report(unit, "MARGIN_CALL", 1.28, 0.0, ours, source="rest") == []
    (fired,) = opinion.check(unit, 1.0, ours)
    assert fired.kind == "firing"
    assert opinion.check(unit, 10.0, own_from_policy(1.6)) == []  # stale: no resolution from our side alone
    assert opinion.open(unit)
    (resolved,) = opinion.report(unit, "NORMAL", 1.45, 60.0, own_from_policy(1.6), source="rest")
    assert resolved.kind == "resolved"
    # a new disagreement on a stale word never fires
    assert opinion.report(unit, "MARGIN_CALL", 1.28, 70.0, own_from_policy(1.29), source="rest") == []
    assert opinion.check(unit, 75.0, own_from_policy(1.6)) == []
    assert opinion.disagreements == 1


@given(st.lists(st.tuples(st.sampled_from(STATUSES), levels), min_size=1, max_size=20))
def test_skipping_inactive_units_changes_nothing(words: list[tuple[str, Decimal]]) -> None:
    """Checking only the units :meth:`SecondOpinion.active` names (as the daemon does, to save the
    cost of our view) emits exactly what checking every unit every time emits."""
    every, lazy = SecondOpinion(grace=1.0), SecondOpinion(grace=1.0)
    got_every: list[str] = []
    got_lazy: list[str] = []
    for n, (status, ours) in enumerate(words):
        own = own_from_policy(float(ours))
        for now in (float(n), n + 0.5):
            if now == n:
                every.note("u", status, 1.2, now)
                lazy.note("u", status, 1.2, now)
            got_every += [e.dedupe_key for e in every.check("u", now, own)]
            if lazy.active("u"):
                got_lazy += [e.dedupe_key for e in lazy.check("u", now, own)]
    assert got_lazy == got_every


def test_worked_examples_in_the_docstrings_hold() -> None:
    """The docstring examples of the second opinion and of the load diagnosis run as written."""
    for module in (opinion_module, diagnose_module):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_a_rest_word_outdated_by_our_own_ticks_is_no_disagreement() -> None:
    """The demo's false alarm: a pair read in a margin call (Binance 1.28, ours 1.28: agree), then
    prices recover on our ticks to 1.45 within the REST word's freshness. The read describes the
    past, not a disagreement: nothing is sent. Had our level stayed where it was, it would be one."""
    opinion = SecondOpinion(grace=1.0, rest_fresh=5.0)
    unit = "isolated:main:ETHUSDT"
    assert opinion.report(unit, "MARGIN_CALL", 1.28, 0.0, own_from_policy(1.28), source="rest") == []
    for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        assert opinion.check(unit, t, own_from_policy(1.45)) == []
    assert not opinion.open(unit) and opinion.disagreements == 0
    steady = SecondOpinion(grace=1.0, rest_fresh=5.0)
    assert steady.report(unit, "MARGIN_CALL", 1.28, 0.0, own_from_policy(1.45), source="rest") == []
    (fired,) = steady.check(unit, 1.0, own_from_policy(1.452))
    assert fired.kind == "firing"
