"""The alert state machine: worked sequences first, then hypothesis properties."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitor.alerts.policy import AlertEvent, AlertPolicy, DistanceRule, LevelRule, PolicyConfig

U = "cross:alice"
LADDER = (
    LevelRule("normal", 1.5, ("chat",)),
    LevelRule("margin_call", 1.3, ("chat", "phone")),
    LevelRule("liquidation", 1.1, ("phone",)),
)


def policy(
    *,
    for_seconds: float = 0.0,
    hysteresis: float = 0.02,
    repeat: float | None = None,
    resolved: bool = True,
    distance: DistanceRule | None = None,
) -> AlertPolicy:
    levels = tuple(replace(rule, repeat=repeat, resolved=resolved) for rule in LADDER)
    return AlertPolicy(
        PolicyConfig(
            levels=levels,
            hysteresis=hysteresis,
            for_seconds=for_seconds,
            distance=distance,
            stale_after=30.0,
            blind_routes=("ops",),
        )
    )


def kinds(events: Sequence[AlertEvent]) -> list[tuple[str, str]]:
    return [(e.kind, e.rule) for e in events]


# -- worked examples ------------------------------------------------------------------------------


def test_crossing_fires_once_and_resolves_after_hysteresis() -> None:
    """A drop below 1.5 fires once; hovering just above the bar stays firing; 1.53 resolves."""
    p = policy()
    assert p.evaluate(U, 1.6, None, 0.0) == []
    fired = p.evaluate(U, 1.49, None, 1.0)
    assert kinds(fired) == [("firing", "normal")]
    assert fired[0].bar == 1.5 and fired[0].level == 1.49 and fired[0].routes == ("chat",)
    assert p.evaluate(U, 1.51, None, 2.0) == []
    assert p.evaluate(U, 1.49, None, 3.0) == []
    assert p.evaluate(U, 1.52, None, 4.0) == []
    back = p.evaluate(U, 1.53, None, 5.0)
    assert kinds(back) == [("resolved", "normal")]
    assert back[0].dedupe_key == fired[0].dedupe_key.replace("firing", "resolved")


def test_one_tick_across_three_bars_orders_by_severity_and_recovers_in_reverse() -> None:
    """Falling from 1.6 to 1.0 fires 1.5, 1.3, 1.1 in that order; recovery resolves 1.1, 1.3, 1.5."""
    p = policy()
    p.evaluate(U, 1.6, None, 0.0)
    down = p.evaluate(U, 1.0, None, 1.0)
    assert kinds(down) == [("firing", "normal"), ("firing", "margin_call"), ("firing", "liquidation")]
    assert [e.routes for e in down] == [("chat",), ("chat", "phone"), ("phone",)]
    up = p.evaluate(U, 2.0, None, 2.0)
    assert kinds(up) == [("resolved", "liquidation"), ("resolved", "margin_call"), ("resolved", "normal")]


def test_wick_shorter_than_for_fires_nothing() -> None:
    """With for=10 s a 5 s dip below 1.3 fires nothing; a dip held 10 s fires at the timer."""
    p = policy(for_seconds=10.0)
    p.evaluate(U, 1.4, None, 0.0)  # already below 1.5: pending
    late = p.evaluate(U, 1.25, None, 100.0)  # the 1.5 timer expired at 10 s: fires before 1.3 pends
    assert kinds(late) == [("firing", "normal")] and late[0].level == 1.4
    p2 = policy(for_seconds=10.0)
    p2.evaluate(U, 1.6, None, 0.0)
    assert p2.evaluate(U, 1.25, None, 1.0) == []
    assert p2.tick(5.0) == []
    assert p2.evaluate(U, 1.6, None, 6.0) == []  # back up before 11 s: a wick
    assert p2.tick(20.0) == []
    assert p2.evaluate(U, 1.25, None, 30.0) == []
    assert p2.tick(39.9) == []
    held = p2.tick(40.0)
    assert kinds(held) == [("firing", "normal"), ("firing", "margin_call")]
    assert all(e.since == 30.0 and e.at == 40.0 for e in held)


def test_expired_for_timer_fires_before_a_later_recovery_is_applied() -> None:
    """A breach that held past `for` fires even if the next call already sees recovery (then resolves)."""
    p = policy(for_seconds=10.0)
    p.evaluate(U, 1.6, None, 0.0)
    p.evaluate(U, 1.45, None, 1.0)
    events = p.evaluate(U, 1.6, None, 20.0)
    assert kinds(events) == [("firing", "normal"), ("resolved", "normal")]


def test_repeat_resends_while_firing_with_distinct_keys() -> None:
    """repeat=60 re-sends every 60 s while the breach holds, each with its own dedupe key."""
    p = policy(repeat=60.0)
    p.evaluate(U, 1.6, None, 0.0)
    first = p.evaluate(U, 1.45, None, 10.0)
    assert p.tick(69.0) == []
    r1 = p.tick(70.0)
    assert kinds(r1) == [("repeat", "normal")] and r1[0].repeat_n == 1
    assert p.tick(100.0) == []
    r2 = p.tick(131.0)
    assert r2[0].repeat_n == 2 and r2[0].since == 10.0
    keys = {first[0].dedupe_key, r1[0].dedupe_key, r2[0].dedupe_key}
    assert len(keys) == 3
    assert kinds(p.evaluate(U, 1.6, None, 140.0)) == [("resolved", "normal")]
    assert p.tick(1000.0) == []


def test_resolved_false_suppresses_the_resolved_message_only() -> None:
    """resolved=False: recovery sends nothing, but the next crossing fires again as a new crossing."""
    p = policy(resolved=False)
    p.evaluate(U, 1.6, None, 0.0)
    a = p.evaluate(U, 1.4, None, 1.0)
    assert p.evaluate(U, 1.6, None, 2.0) == []
    b = p.evaluate(U, 1.4, None, 3.0)
    assert kinds(b) == [("firing", "normal")]
    assert a[0].crossing + 1 == b[0].crossing and a[0].dedupe_key != b[0].dedupe_key


def test_no_debt_is_ok_and_resolves_a_firing_rule() -> None:
    """Level None (no debt) counts as infinitely safe: nothing fires, and firing rules resolve."""
    p = policy()
    assert p.evaluate(U, None, None, 0.0) == []
    p.evaluate(U, 1.2, None, 1.0)
    assert kinds(p.evaluate(U, None, None, 2.0)) == [("resolved", "margin_call"), ("resolved", "normal")]


def test_nan_level_or_distance_changes_nothing() -> None:
    """A NaN level or distance (a bug upstream) neither fires nor resolves anything."""
    p = policy(distance=DistanceRule(within=0.05, routes=("x",)))
    p.evaluate(U, 1.2, -0.03, 0.0)
    assert p.evaluate(U, math.nan, -0.03, 1.0) == []
    assert p.evaluate(U, 1.2, math.nan, 2.0) == []
    assert p.evaluate(U, 1.2, -0.03, 3.0) == []


def test_stale_freezes_state_and_blind_fires_once() -> None:
    """Stale: one blind event; no resolved from stale data; fresh data re-evaluates."""
    p = policy()
    p.evaluate(U, 1.2, None, 0.0)
    blind = p.mark_stale(U, 10.0, since=5.0, reason="price feed BTCUSDT silent")
    assert kinds(blind) == [("blind", "blind")]
    assert blind[0].routes == ("ops",) and blind[0].since == 5.0 and blind[0].detail.startswith("price")
    assert blind[0].level == 1.2
    assert p.mark_stale(U, 20.0) == []
    assert p.evaluate(U, 2.0, None, 25.0) == []  # stale data cannot resolve
    assert p.tick(10_000.0) == []
    back = p.mark_fresh(U, 30.0)
    assert kinds(back) == [("blind_resolved", "blind")]
    assert back[0].dedupe_key.split("|")[2] == blind[0].dedupe_key.split("|")[2]
    assert p.mark_fresh(U, 31.0) == []
    assert kinds(p.evaluate(U, 2.0, None, 32.0)) == [("resolved", "margin_call"), ("resolved", "normal")]
    again = p.mark_stale(U, 40.0)
    assert again[0].dedupe_key != blind[0].dedupe_key


def test_fresh_data_after_blind_does_not_send_a_stale_repeat_first() -> None:
    """After fresh, the fresh level is applied before timers: a recovery sends resolved, not repeat."""
    p = policy(repeat=60.0)
    p.evaluate(U, 1.45, None, 0.0)
    p.mark_stale(U, 10.0)
    p.mark_fresh(U, 500.0)
    assert kinds(p.evaluate(U, 1.6, None, 501.0)) == [("resolved", "normal")]


def test_distance_rule_fires_within_limit_and_uses_abs() -> None:
    """The distance rule fires when a move of at most `within` (either sign) liquidates."""
    rule = DistanceRule(within=0.05, routes=("phone",), hysteresis=0.01)
    p = policy(distance=rule)
    assert p.wants_distance
    assert p.evaluate(U, 1.6, -0.2, 0.0) == []
    fired = p.evaluate(U, 1.6, -0.049, 1.0)
    assert kinds(fired) == [("firing", "liquidation_distance")]
    assert fired[0].bar == 0.05 and fired[0].distance == -0.049 and fired[0].measure == "distance"
    assert p.evaluate(U, 1.6, 0.055, 2.0) == []  # inside hysteresis
    assert kinds(p.evaluate(U, 1.6, None, 3.0)) == [("resolved", "liquidation_distance")]
    assert p.evaluate(U, 1.6, 0.03, 4.0)[0].kind == "firing"
    assert not policy().wants_distance


def test_band_is_the_interval_where_nothing_changes() -> None:
    """band() is (bar of the highest ok rule, lowest firing bar + hysteresis); empty before any data."""
    p = policy()
    lo, hi = p.band(U)
    assert lo > hi  # unknown unit: any level is outside, so the engine evaluates it
    p.evaluate(U, 1.4, None, 0.0)
    lo, hi = p.band(U)
    assert lo == 1.3 and hi == pytest.approx(1.52)
    assert not p.quiet(U, 1.3, None) and p.quiet(U, 1.31, None) and p.quiet(U, 1.52, None)
    assert not p.quiet(U, 1.53, None)
    p.evaluate(U, None, None, 1.0)
    assert p.band(U) == (1.5, math.inf)
    assert p.quiet(U, None, None)


def test_restart_while_firing_does_not_refire_but_repeat_still_comes_due() -> None:
    """Export/import across a restart: still below 1.3 sends nothing until the repeat is due."""
    p = policy(repeat=600.0)
    p.evaluate(U, 1.6, None, 0.0)
    p.evaluate(U, 1.25, None, 10.0)
    saved = json.loads(json.dumps(p.export_state()))
    q = policy(repeat=600.0)
    q.import_state(saved)
    assert q.evaluate(U, 1.26, None, 100.0) == []
    due = q.tick(610.0)
    assert kinds(due) == [("repeat", "normal"), ("repeat", "margin_call")]


def test_crossing_while_down_fires_once_flagged() -> None:
    """A bar crossed while the daemon was down fires once with while_down=True; later ones are normal."""
    p = policy()
    p.evaluate(U, 1.4, None, 0.0)
    q = policy()
    q.import_state(p.export_state())
    events = q.evaluate(U, 1.2, None, 100.0)
    assert kinds(events) == [("firing", "margin_call")]
    assert events[0].while_down
    assert q.evaluate(U, 1.2, None, 101.0) == []
    later = q.evaluate(U, 1.05, None, 102.0)
    assert kinds(later) == [("firing", "liquidation")] and not later[0].while_down


def test_first_start_without_state_is_not_while_down() -> None:
    """A unit seen for the first time below a bar fires normally (not flagged as while down)."""
    p = policy()
    assert [e.while_down for e in p.evaluate(U, 1.2, None, 0.0)] == [False, False]


def test_blind_open_at_restart_is_resolved_by_fresh_data() -> None:
    """A unit blind at shutdown gets blind_resolved on its first fresh evaluation after restart."""
    p = policy()
    p.evaluate(U, 1.4, None, 0.0)
    blind = p.mark_stale(U, 10.0)
    q = policy()
    q.import_state(p.export_state())
    assert q.mark_stale(U, 50.0) == []  # already told: no second blind
    back = q.mark_fresh(U, 60.0)
    assert kinds(back) == [("blind_resolved", "blind")]
    r = policy()
    r.import_state(p.export_state())
    events = r.evaluate(U, 1.4, None, 70.0)
    assert kinds(events) == [("blind_resolved", "blind")]
    assert events[0].dedupe_key == back[0].dedupe_key
    assert blind[0].dedupe_key.split("|")[:3] == back[0].dedupe_key.split("|")[:3]


def test_import_skips_malformed_units_with_one_line_reasons() -> None:
    """A malformed unit's state is skipped with a one-line reason; the other units load."""
    good = policy()
    good.evaluate(U, 1.2, None, 0.0)
    p = policy()
    skipped = p.import_state(
        {"cross:x": {"rules": {"normal": {"phase": "weird"}}}, "cross:y": [], **good.export_state()}
    )
    assert set(skipped) == {"cross:x", "cross:y"}
    assert all("\n" not in why and unit in why for unit, why in skipped.items())
    assert "weird" in skipped["cross:x"]
    assert p.evaluate(U, 1.2, None, 1.0) == []  # the good unit kept its firing state
    assert p.units() == [U]


def test_import_ignores_rules_no_longer_configured() -> None:
    """State for a rule removed from the config is dropped; the remaining rules keep their state."""
    p = policy()
    p.evaluate(U, 1.2, None, 0.0)
    state = p.export_state()
    state[U]["rules"]["gone"] = state[U]["rules"]["normal"]
    q = policy()
    q.import_state(state)
    assert "gone" not in q.export_state()[U]["rules"]
    assert q.evaluate(U, 1.2, None, 1.0) == []


def test_configure_unit_gives_an_isolated_pair_its_own_bars() -> None:
    """A per-unit config (an isolated pair's bars) applies to that unit only."""
    p = policy()
    pair = "isolated:alice:BTCUSDT"
    p.configure_unit(pair, PolicyConfig(levels=(LevelRule("liquidation", 1.05, ("phone",)),)))
    assert kinds(p.evaluate(pair, 1.08, None, 0.0)) == []
    assert kinds(p.evaluate(pair, 1.04, None, 1.0)) == [("firing", "liquidation")]
    assert kinds(p.evaluate(U, 1.08, None, 1.0))[-1] == ("firing", "liquidation")


def test_dirty_units_are_reported_once() -> None:
    """take_dirty() returns units whose state changed since the last call, for the store to save."""
    p = policy()
    p.evaluate(U, 1.6, None, 0.0)
    p.take_dirty()
    p.evaluate(U, 1.61, None, 1.0)
    assert p.take_dirty() == set()
    p.evaluate(U, 1.4, None, 2.0)
    assert p.take_dirty() == {U}
    assert p.take_dirty() == set()


def test_config_validation_is_one_line() -> None:
    """Duplicate rule names and non-positive bars are rejected when the config is built."""
    with pytest.raises(ValueError, match="duplicate"):
        PolicyConfig(levels=(LevelRule("a", 1.5, ()), LevelRule("a", 1.3, ())))
    with pytest.raises(ValueError, match="bar"):
        PolicyConfig(levels=(LevelRule("a", 0.0, ()),))
    with pytest.raises(ValueError, match="repeat"):
        PolicyConfig(levels=(LevelRule("a", 1.2, (), repeat=0.0),))


# -- properties ------------------------------------------------------------------------------------

Op = tuple[str, float | None, float]
levels_st = st.one_of(
    st.none(), st.floats(min_value=0.5, max_value=2.5), st.sampled_from([1.1, 1.3, 1.5, 1.52])
)
ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("eval"), levels_st, st.floats(min_value=0.0, max_value=30.0)),
        st.tuples(st.just("tick"), st.none(), st.floats(min_value=0.0, max_value=30.0)),
        st.tuples(st.just("stale"), st.none(), st.floats(min_value=0.0, max_value=30.0)),
        st.tuples(st.just("fresh"), st.none(), st.floats(min_value=0.0, max_value=30.0)),
    ),
    max_size=60,
)
config_st = st.fixed_dictionaries(
    {
        "for_seconds": st.sampled_from([0.0, 5.0, 20.0]),
        "hysteresis": st.sampled_from([0.0, 0.02, 0.1]),
        "repeat": st.sampled_from([None, 15.0, 60.0]),
    }
)


def run(
    p: AlertPolicy, ops: Sequence[Op], start: float = 0.0, stale: bool = False
) -> tuple[list[AlertEvent], float, bool]:
    """Apply ops as the engine does: a unit it knows is stale is not evaluated."""
    now = start
    out: list[AlertEvent] = []
    for op, level, dt in ops:
        now += dt
        if op == "eval":
            if not stale:
                out += p.evaluate(U, level, None, now)
        elif op == "tick":
            out += p.tick(now)
        elif op == "stale":
            out += p.mark_stale(U, now)
            stale = True
        else:
            out += p.mark_fresh(U, now)
            stale = False
    return out, now, stale


@settings(max_examples=300, deadline=None)
@given(cfg=config_st, ops=ops_st)
def test_property_keys_unique_and_lifecycle_well_formed(cfg: dict[str, Any], ops: list[Op]) -> None:
    """Dedupe keys never repeat; per rule, events alternate firing → (repeat*) → resolved."""
    events, _, _ = run(policy(**cfg), ops)
    keys = [e.dedupe_key for e in events]
    assert len(keys) == len(set(keys))
    open_: dict[str, int | None] = {}
    for e in events:
        current = open_.get(e.rule)
        if e.kind in ("firing", "blind"):
            assert current is None
            open_[e.rule] = e.crossing
        else:
            assert current == e.crossing, (e, open_)
            if e.kind in ("resolved", "blind_resolved"):
                open_[e.rule] = None


@settings(max_examples=300, deadline=None)
@given(hysteresis=st.sampled_from([0.0, 0.02]), levels=st.lists(levels_st, max_size=40))
def test_property_firing_set_matches_level_with_no_for(hysteresis: float, levels: list[float | None]) -> None:
    """With for=0 the firing rules after each tick are exactly the bars the level is at or below,
    up to hysteresis; a multi-bar move is ordered by severity (reverse for recovery)."""
    p = policy(hysteresis=hysteresis)
    firing: set[str] = set()
    bars = {r.name: r.bar for r in LADDER}
    for i, level in enumerate(levels):
        events = p.evaluate(U, level, None, float(i))
        fired = [bars[e.rule] for e in events if e.kind == "firing"]
        resolved = [bars[e.rule] for e in events if e.kind == "resolved"]
        assert fired == sorted(fired, reverse=True) and resolved == sorted(resolved)
        firing |= {e.rule for e in events if e.kind == "firing"}
        firing -= {e.rule for e in events if e.kind == "resolved"}
        value = math.inf if level is None else level
        for name, bar in bars.items():
            if value <= bar:
                assert name in firing
            elif value > bar + hysteresis:
                assert name not in firing


@settings(max_examples=200, deadline=None)
@given(cfg=config_st, ops=ops_st, cut=st.integers(min_value=0, max_value=60))
@example(  # restart between mark_fresh and the first fresh evaluation: no stale repeat
    cfg={"for_seconds": 0.0, "hysteresis": 0.0, "repeat": 15.0},
    ops=[("eval", 1.4, 0.0), ("stale", None, 1.0), ("fresh", None, 1.0), ("tick", None, 30.0)],
    cut=3,
)
@example(  # restart while pending, then a late recovery: the expired `for` still fires first
    cfg={"for_seconds": 5.0, "hysteresis": 0.0, "repeat": None},
    ops=[("eval", 1.4, 0.0), ("eval", 1.6, 10.0)],
    cut=1,
)
def test_property_restart_is_invisible_apart_from_while_down(
    cfg: dict[str, Any], ops: list[Op], cut: int
) -> None:
    """Exporting, JSON round-tripping and importing mid-run yields the same events (ignoring the
    while_down flag) and the same keys as an uninterrupted run."""
    whole, _, _ = run(policy(**cfg), ops)
    first = policy(**cfg)
    before, now, stale = run(first, ops[:cut])
    second = policy(**cfg)
    second.import_state(json.loads(json.dumps(first.export_state())))
    after, _, _ = run(second, ops[cut:], start=now, stale=stale)
    strip = [replace(e, while_down=False) for e in before + after]
    assert strip == whole


@settings(max_examples=200, deadline=None)
@given(cfg=config_st, ops=ops_st, probe=levels_st)
def test_property_quiet_means_no_level_event(cfg: dict[str, Any], ops: list[Op], probe: float | None) -> None:
    """If quiet(level) holds, evaluating that level at a time with no timer due (the timers' own
    tick emits nothing) emits nothing."""
    p = policy(**cfg)
    _, now, _ = run(p, ops)
    if p.quiet(U, probe, None) and p.tick(now) == []:
        assert p.evaluate(U, probe, None, now) == []


@settings(max_examples=200, deadline=None)
@given(ops=ops_st)
def test_property_nothing_resolves_while_stale(ops: list[Op]) -> None:
    """Between mark_stale and mark_fresh no event other than a single blind is emitted."""
    p = policy(repeat=15.0)
    now = 0.0
    stale = False
    for op, level, dt in ops:
        now += dt
        if op == "eval":
            events = p.evaluate(U, level, None, now)
        elif op == "tick":
            events = p.tick(now)
        elif op == "stale":
            events = p.mark_stale(U, now)
            assert len(events) == (0 if stale else 1)
            stale = True
            continue
        else:
            events = p.mark_fresh(U, now)
            assert len(events) == (1 if stale else 0)
            stale = False
            continue
        if stale:
            assert events == []
