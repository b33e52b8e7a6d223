"""Silences, pure: what a silence covers (property tests against a direct reading of the rules), and
the registry's stage (held back, acknowledgements ending on resolution, persistence)."""

from __future__ import annotations

import doctest
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import monitor.notify.silences as silences_module
from monitor.alerts.policy import AlertEvent, EventKind
from monitor.cli import daemon_client, status_view
from monitor.notify.silence_stage import SilenceRegistry
from monitor.notify.silences import (
    PROTECTED_RULES,
    Silence,
    SilenceError,
    ack_over,
    covers,
    from_dict,
    held_back,
    is_protected,
    make,
    parse_target,
)

ACCOUNTS = ["demo", "demo2", "alice", "de"]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
RULES = ["normal", "margin_call", "liquidation", "liquidation_distance", "blind", "level_1.25"]
KINDS = ["firing", "repeat", "resolved", "blind", "blind_resolved"]

units = st.one_of(
    st.sampled_from(ACCOUNTS).map(lambda a: f"cross:{a}"),
    st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(SYMBOLS)).map(lambda t: f"isolated:{t[0]}:{t[1]}"),
)
times = st.floats(min_value=0, max_value=10_000, allow_nan=False)
silences = st.builds(
    Silence,
    id=st.text("abcdef0123456789", min_size=8, max_size=8),
    account=st.sampled_from(ACCOUNTS),
    scope=st.sampled_from([None, "cross", *SYMBOLS]),
    bar=st.sampled_from([None, *RULES]),
    starts_at=times,
    ends_at=st.one_of(st.none(), times),
    comment=st.text(max_size=20),
    expired_at=st.one_of(st.none(), times),
)


def reference(s: Silence, unit: str, rule: str, protected: bool, now: float) -> bool:
    """The rules of monitor.notify.silences written out plainly."""
    parts = unit.split(":")
    account, symbol = (parts[1], None) if parts[0] == "cross" else (parts[1], parts[2])
    in_window = s.starts_at <= now and (s.ends_at is None or now < s.ends_at)
    lifted = s.expired_at is not None and now >= s.expired_at
    unit_ok = account == s.account and (
        s.scope is None or (s.scope == "cross" and symbol is None) or s.scope == symbol
    )
    rule_ok = (s.bar == rule) if s.bar is not None else not protected
    return in_window and not lifted and unit_ok and rule_ok


@given(silences, units, st.sampled_from(RULES), st.booleans(), times)
def test_covers_matches_the_plain_reading(
    s: Silence, unit: str, rule: str, protected: bool, now: float
) -> None:
    """`covers` agrees with the rules as written in the module docstring, for any silence and alert."""
    assert covers(s, unit, rule, protected=protected, now=now) == reference(s, unit, rule, protected, now)


@given(st.lists(silences, max_size=6), units, st.sampled_from(sorted(PROTECTED_RULES)), times)
def test_a_protected_rule_is_held_back_only_by_a_silence_naming_it(
    found: list[Silence], unit: str, rule: str, now: float
) -> None:
    """Liquidation, distance to liquidation and blind are hidden only by a silence that names them."""
    for kind in KINDS:
        for s in held_back(found, unit, rule, kind, protected=True, now=now):
            assert s.bar == rule


@given(st.lists(silences, max_size=6), silences, units, st.sampled_from(RULES), st.booleans(), times)
def test_adding_a_silence_never_releases_a_message(
    found: list[Silence], extra: Silence, unit: str, rule: str, protected: bool, now: float
) -> None:
    """Held back by some silences ⇒ still held back with one more (and never by an inactive one)."""
    for kind in KINDS:
        before = held_back(found, unit, rule, kind, protected=protected, now=now)
        after = held_back([*found, extra], unit, rule, kind, protected=protected, now=now)
        assert set(map(id, before)) <= set(map(id, after))
        assert all(s.active(now) for s in after)


@given(st.lists(silences, max_size=6), units, st.sampled_from(RULES), times)
def test_resolved_messages_pass_acknowledgements(
    found: list[Silence], unit: str, rule: str, now: float
) -> None:
    """A resolved message is held back only by timed silences: an acknowledged alert's end is sent."""
    for s in held_back(found, unit, rule, "resolved", protected=False, now=now):
        assert s.ends_at is not None


@given(silences)
def test_round_trip(s: Silence) -> None:
    """The stored form reads back to the same silence."""
    assert from_dict(s.to_dict()) == s


def test_targets_and_bad_input() -> None:
    """Targets parse as documented; bad ones give one line naming what is wrong."""
    assert parse_target("demo") == ("demo", None)
    assert parse_target("demo:Cross") == ("demo", "cross")
    assert parse_target("demo:ethusdt") == ("demo", "ETHUSDT")
    for bad in ("", "de mo", "demo:B$"):
        with pytest.raises(SilenceError):
            parse_target(bad)
    with pytest.raises(SilenceError, match="more than 0"):
        make("x", "demo", bar=None, now=0.0, duration=0.0)
    with pytest.raises(SilenceError):
        from_dict({"id": "x"})


def test_protected_rules() -> None:
    """Liquidation, distance, blind and rungs at or below the liquidation bar are protected."""
    assert is_protected("liquidation", "level", 1.1, 1.1)
    assert is_protected("level_1.05", "level", 1.05, 1.1)
    assert is_protected("liquidation_distance", "distance", 0.03, 1.1)
    assert is_protected("blind", "blind", None, None)
    assert not is_protected("margin_call", "level", 1.3, 1.1)


def test_ack_over() -> None:
    """An acknowledgement is over once nothing it covers fires."""
    ack = Silence("a", "demo", None, None, starts_at=0.0, ends_at=None)
    assert not ack_over(ack, {"cross:demo": [("normal", False)]})
    assert ack_over(ack, {"cross:demo": [("liquidation", True)], "cross:other": [("normal", False)]})


def event(kind: EventKind, rule: str = "margin_call", unit: str = "cross:demo") -> AlertEvent:
    return AlertEvent(kind, unit, rule, 1.3, 1.2, None, 0.0, 0.0, ("hook",), f"{unit}|{rule}|{kind}", 1, 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_registry_holds_back_persists_and_ends_acknowledgements() -> None:
    """The stage: a silenced firing is held back and counted; an ack ends when its alerts resolve and its
    resolved message goes out; every change is saved and a new registry loads it."""
    saved: dict[str, Any] = {"v": []}
    clock = Clock()
    reg = SilenceRegistry(lambda: saved["v"], lambda v: saved.__setitem__("v", v), clock=clock)
    firing = {"cross:demo": [("margin_call", False)]}
    with pytest.raises(SilenceError, match="nothing is firing"):
        reg.add("demo", bar=None, duration=None, comment="", firing={}, units=["cross:demo"])
    with pytest.raises(SilenceError, match="no such account"):
        reg.add("nobody", bar=None, duration=3600.0, comment="", firing=firing, units=["cross:demo"])
    ack = reg.add("demo", bar=None, duration=None, comment="on it", firing=firing, units=["cross:demo"])
    assert reg.hold(event("firing"), "t", False, lambda: firing)
    assert not reg.hold(event("firing", "liquidation"), "t", True, lambda: firing)
    assert reg.held == {"firing": 1}
    # reloaded from what was saved
    again = SilenceRegistry(lambda: saved["v"], lambda v: None, clock=clock)
    assert [s.id for s in again.listing()] == [ack.id]
    # the resolved message is delivered, and with nothing left firing the acknowledgement ends
    assert not reg.hold(event("resolved"), "t", False, lambda: {})
    assert reg.listing() == [] and reg.listing(include_ended=True)[0].id == ack.id
    # a timed silence ends on its own and can be lifted early
    timed = reg.add("demo:cross", bar="normal", duration=60.0, comment="", firing={}, units=["cross:demo"])
    assert reg.hold(event("resolved", "normal"), "t", False, lambda: {})
    assert reg.lift(timed.id) is not None and reg.lift(timed.id) is None
    clock.now += 8 * 86400  # ended a week ago: forgotten at the next save
    reg.add("demo", bar="blind", duration=1.0, comment="", firing={}, units=["cross:demo"])
    assert len(saved["v"]) == 1


@pytest.mark.parametrize("module", [silences_module, status_view, daemon_client])
def test_docstring_examples(module: ModuleType) -> None:
    """The worked examples in the docstrings of the silence, status-view and daemon-client modules hold."""
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
