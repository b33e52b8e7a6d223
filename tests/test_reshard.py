"""Re-sharding, the pure part: departed units dropped, adopted units fire what already holds (once,
marked and counted as a possible duplicate), and nothing else changes for a daemon without shards."""

from __future__ import annotations

import doctest

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import monitor.watch.reshard
from monitor.alerts.policy import AlertPolicy, LevelRule, PolicyConfig
from monitor.config.shard import Shard, shard_of
from monitor.notify.messages import Message
from monitor.watch.reshard import TAKEOVER_NOTE, Handoff, account_of

LADDER = PolicyConfig(
    levels=(
        LevelRule("normal", 1.5, ("hook",)),
        LevelRule("margin_call", 1.3, ("hook",)),
        LevelRule("liquidation", 1.1, ("hook",)),
    )
)


def counter(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    return 0.0 if value is None else value


def test_doctests() -> None:
    """The worked example in monitor/watch/reshard.py holds."""
    assert doctest.testmod(monitor.watch.reshard).failed == 0


def test_departed_units_are_those_of_accounts_owned_elsewhere() -> None:
    """Of the saved units, exactly those whose account hashes to another shard are dropped."""
    registry = CollectorRegistry()
    names = [f"acct-{i}" for i in range(200)]
    firing = {"rules": {"normal": {"phase": "firing", "since": 1.0}, "margin_call": {"phase": "ok"}}}
    saved: dict[str, object] = {f"cross:{n}": firing for n in names}
    saved |= {f"isolated:{n}:BTCUSDT": {} for n in names[:50]}
    handoff = Handoff(Shard(1, 5), registry)
    gone = handoff.departed(saved)
    assert set(gone) == {u for u in saved if shard_of(account_of(u), 5) != 1}
    assert counter(registry, "margin_monitor_shard_units_departed_total") == len(gone)
    moved_cross = sum(1 for u in gone if u.startswith("cross:"))
    assert counter(registry, "margin_monitor_shard_departed_firing_rules_total") == moved_cross
    assert Handoff(None).departed(saved) == []


def test_adopted_unit_fires_what_already_holds_once_marked_and_counted() -> None:
    """An adopted unit below two bars: two alerts on the first look, both while_down, both noted
    as possible duplicates; a later crossing of the third bar is an ordinary alert."""
    registry = CollectorRegistry()
    policy = AlertPolicy(LADDER)
    handoff = Handoff(Shard(4, 5), registry)
    assert handoff.adopt(policy, ["cross:a", "cross:b"], saved={"cross:b": {}}) == ["cross:a"]
    events = policy.evaluate("cross:a", 1.25, None, now=100.0)
    assert [(e.rule, e.kind, e.while_down) for e in events] == [
        ("normal", "firing", True),
        ("margin_call", "firing", True),
    ]
    for event in events:
        message = handoff.annotate(event, Message("t", "body", "warning"))
        assert message.body == "body\n" + TAKEOVER_NOTE.format(shard="4/5")
    assert counter(registry, "margin_monitor_shard_takeover_alerts_total") == 2
    assert counter(registry, "margin_monitor_shard_units_adopted_total") == 1
    (later,) = policy.evaluate("cross:a", 1.05, None, now=101.0)
    assert (later.rule, later.while_down, handoff.is_takeover(later)) == ("liquidation", False, False)
    assert handoff.annotate(later, Message("t", "body", "warning")).body == "body"


def test_adopted_unit_in_safety_sends_nothing() -> None:
    """An adopted unit above every bar sends nothing on the first look, and counts nothing."""
    registry = CollectorRegistry()
    policy = AlertPolicy(LADDER)
    handoff = Handoff(Shard(0, 2), registry)
    handoff.adopt(policy, ["cross:a"], saved={})
    assert policy.evaluate("cross:a", 2.0, None, now=1.0) == []
    (event,) = policy.evaluate("cross:a", 1.4, None, now=2.0)
    assert not event.while_down and not handoff.is_takeover(event)
    assert counter(registry, "margin_monitor_shard_takeover_alerts_total") == 0


def test_unsharded_daemon_adopts_nothing() -> None:
    """Without a shard, a unit with no saved state is simply new (no 'crossed while down')."""
    policy = AlertPolicy(LADDER)
    handoff = Handoff(None, CollectorRegistry())
    assert handoff.adopt(policy, ["cross:a"], saved={}) == []
    events = policy.evaluate("cross:a", 1.25, None, now=1.0)
    assert [e.while_down for e in events] == [False, False]


@given(st.floats(min_value=0.5, max_value=3.0), st.floats(min_value=0.5, max_value=3.0))
def test_first_look_fires_exactly_the_bars_the_level_is_past(level: float, then: float) -> None:
    """For any level at takeover, the adopted unit fires exactly the rules whose bar it is at or
    below (no more, no fewer), and a second level only adds the newly crossed bars."""
    policy = AlertPolicy(LADDER)
    Handoff(Shard(0, 1), CollectorRegistry()).adopt(policy, ["cross:x"], saved={})
    first = policy.evaluate("cross:x", level, None, now=1.0)
    assert {e.rule for e in first} == {r.name for r in LADDER.levels if level <= r.bar}
    assert all(e.kind == "firing" and e.while_down for e in first)
    second = policy.evaluate("cross:x", then, None, now=2.0)
    fired = {e.rule for e in second if e.kind == "firing"}
    assert fired == {r.name for r in LADDER.levels if then <= r.bar < level}
