"""The liquidation-distance alert past the liquidation bar: it stays firing, never "resolved" while
the account sinks deeper (found running two accounts on the crash scenario: bob's distance alert
resolved with "a 3.9 % rise liquidates" at level ~1.06, under its 1.1 bar).

Worked example: bob, cross, 1.2 BTC against 24,000 USDT: level(p) = 1.2 p / 24,000 = p / 20,000.
The liquidation bar 1.1 is at p = 22,000. At p = 22,600 the level is 1.13 and a 2.65 % drop
liquidates (22,000 / 22,600 − 1): within 3 %, the alert fires. At p = 21,200 the level is 1.06,
under the bar; the signed distance is now the move that restores it, +3.77 % (22,000 / 21,200 − 1):
|3.77 %| is beyond 3 % + 0.5 %, and the rule used to resolve there. Past the bar it stays breached;
it resolves once the level is back above 1.1 and a drop of more than 3.5 % is needed to reach it
(p > 22,798: level 1.140).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitor.alerts.policy import AlertEvent, AlertPolicy, DistanceRule, LevelRule, PolicyConfig
from monitor.config.model import AlertsConfig
from monitor.watch.ladder import CLASSIC_BARS, policy_for_unit

U = "cross:bob"
BAR = 1.1


def policy(liquidation_bar: float | None = BAR) -> AlertPolicy:
    rule = DistanceRule(within=0.03, routes=("phone",), hysteresis=0.005, liquidation_bar=liquidation_bar)
    return AlertPolicy(PolicyConfig(levels=(LevelRule("liquidation", BAR, ("phone",)),), distance=rule))


def distance_events(events: list[AlertEvent]) -> list[str]:
    return [e.kind for e in events if e.rule == "liquidation_distance"]


def at(p: float) -> tuple[float, float]:
    """bob's level and signed distance to 1.1 at BTC ``p`` (the module's worked example)."""
    return p / 20_000, 22_000 / p - 1


def test_sinking_past_the_bar_keeps_the_distance_alert_firing() -> None:
    pol = policy()
    assert distance_events(pol.evaluate(U, *at(30_000), 0.0)) == []
    assert distance_events(pol.evaluate(U, *at(22_600), 1.0)) == ["firing"]
    assert distance_events(pol.evaluate(U, *at(21_200), 2.0)) == []  # 1.06, +3.77 %: still firing
    assert distance_events(pol.evaluate(U, *at(15_000), 3.0)) == []  # 0.75, +46.7 %
    assert distance_events(pol.evaluate(U, *at(22_500), 4.0)) == []  # back above, −2.2 %: within
    resolved = pol.evaluate(U, *at(23_000), 5.0)  # −4.35 %: beyond 3 % + 0.5 %
    assert distance_events(resolved) == ["resolved"]
    assert resolved[-1].distance is not None and resolved[-1].distance < 0  # "a 4.3 % drop liquidates"


def test_without_the_bar_the_rule_reads_the_distance_alone() -> None:
    """The rule as it was (no ``liquidation_bar``): |+3.77 %| past the bar resolved it."""
    pol = policy(liquidation_bar=None)
    pol.evaluate(U, *at(22_600), 1.0)
    assert distance_events(pol.evaluate(U, *at(21_200), 2.0)) == ["resolved"]


def test_a_jump_from_far_above_to_far_past_fires() -> None:
    pol = policy()
    assert distance_events(pol.evaluate(U, *at(30_000), 0.0)) == []
    assert distance_events(pol.evaluate(U, *at(18_000), 1.0)) == ["firing"]  # 0.9, +22 %


def test_the_ladder_gives_the_rule_its_unit_bar() -> None:
    alerts = AlertsConfig.model_validate({"distance": {"within": 0.03}})
    assert policy_for_unit(alerts, CLASSIC_BARS, ("r",)).distance.liquidation_bar == 1.1  # type: ignore[union-attr]
    tier = {"normal": 1.111, "margin_call": 1.1, "liquidation": 1.05}
    assert policy_for_unit(alerts, tier, ("r",)).distance.liquidation_bar == 1.05  # type: ignore[union-attr]
    named = policy_for_unit(alerts, {"call": 1.3, "liq": 1.0}, ("r",), liquidation_bar=1.0)
    assert named.distance is not None and named.distance.liquidation_bar == 1.0


@given(st.lists(st.floats(8_000, 40_000), min_size=1, max_size=40))
def test_never_resolved_at_or_below_the_bar(prices: list[float]) -> None:
    """Any path of BTC prices: the distance alert resolves only with the level above the bar and a
    move of more than 3.5 % needed to reach it, and fires whenever the level is at or past it."""
    pol = policy()
    firing = False
    for t, p in enumerate(prices):
        level, dist = at(p)
        kinds = distance_events(pol.evaluate(U, level, dist, float(t)))
        if "resolved" in kinds:
            assert level > BAR and abs(dist) > 0.035
            firing = False
        if "firing" in kinds:
            firing = True
        if level <= BAR:
            assert firing
