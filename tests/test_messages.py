"""Alert texts: number formatting and worked examples of each kind of message."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from monitor.alerts.policy import AlertEvent
from monitor.notify.messages import (
    Message,
    demo_message,
    fmt_amount,
    fmt_duration,
    fmt_level,
    fmt_pct,
    fmt_price,
    fmt_time,
    render,
    summary,
)
from monitor.risk.report import UnitReport

T0 = 1_777_636_803.0  # 2026-05-01 12:00:03 UTC

REPORT = UnitReport(
    unit="cross:alice",
    account="alice",
    kind="cross",
    symbol=None,
    quote="USDT",
    margin_level=1.2843,
    bars={"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1},
    liquidation_bar="liquidation",
    distances={"normal": 0.2051, "margin_call": 0.0093, "liquidation": -0.0412},
    liquidation_prices={"BTC": 58123.456, "ETH": None},
    total_asset_value=10500.0,
    total_liability_value=8177.57,
    restore_target=1.5,
    repay={"USDT": 1239.2},
    add_collateral={"BTC": 0.030512},
    hours_to_bars={"normal": None, "margin_call": None, "liquidation": 41.27},
)


def event(
    kind: str = "firing", rule: str = "margin_call", bar: float | None = 1.3, **kw: object
) -> AlertEvent:
    base = AlertEvent(
        kind=kind,  # type: ignore[arg-type]
        unit="cross:alice",
        rule=rule,
        bar=bar,
        level=1.2843,
        distance=-0.0412,
        at=T0 + 200,
        since=T0,
        routes=("chat",),
        dedupe_key=f"cross:alice|{rule}|1|{kind}|0",
        crossing=1,
        severity=1,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


# -- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (58123.456, "58,123"),
        (2950.41, "2,950.4"),
        (1.23456, "1.2346"),
        (0.00012345678, "0.00012346"),
        (1234567.0, "1,234,567"),
        (20.0, "20"),
        (0.0, "0"),
        (None, "none"),
    ],
)
def test_fmt_price_keeps_five_significant_digits(value: float | None, text: str) -> None:
    """Prices keep five significant digits, never drop integer digits, and use thousands separators."""
    assert fmt_price(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(1239.2, "1,240"), (1234.5, "1,235"), (0.030512, "0.03052"), (0.0305, "0.0305"), (12.0, "12")],
)
def test_fmt_amount_rounds_up(value: float, text: str) -> None:
    """Amounts to repay or add are rounded up to four significant digits, so they are enough."""
    assert fmt_amount(value) == text


def test_fmt_level_pct_time_and_duration() -> None:
    """Levels, signed percentages, UTC times and durations read naturally."""
    assert fmt_level(1.2843) == "1.284"
    assert fmt_level(math.inf) == "∞ (no debt)"
    assert fmt_level(None) == "unknown"  # never shown as safe
    assert fmt_level(35.678) == "35.68"
    assert fmt_level(1234.5) == "1,234"
    assert fmt_pct(-0.0412) == "-4.1 %"
    assert fmt_pct(0.0045) == "+0.45 %"
    assert fmt_pct(None) == "none"
    assert fmt_pct(-1.5) == "-150 %"
    assert fmt_time(T0) == "2026-05-01 12:00:03 UTC"
    assert fmt_duration(45) == "45 s"
    assert fmt_duration(200) == "3 min 20 s"
    assert fmt_duration(7500) == "2 h 5 min"
    assert fmt_duration(3 * 86400 + 4 * 3600 + 59) == "3 d 4 h"


# -- worked examples -----------------------------------------------------------------------------


def test_firing_message_worked_example() -> None:
    """A margin-call crossing tells the level, the bar, the distances, prices and what restores safety."""
    msg = render(event(), REPORT)
    assert msg == Message(
        title="[MARGIN CALL] alice (cross): margin level 1.284 ≤ 1.3",
        body=(
            "Account alice, cross margin, valued in USDT.\n"
            "Margin level 1.284 is at or below the margin_call bar 1.3 "
            "(since 2026-05-01 12:00:03 UTC, 3 min 20 s ago).\n"
            "Liquidation (1.1): a 4.1 % drop of every non-USDT asset liquidates.\n"
            "Distance to each bar: normal 1.5: past, a 20.5 % rise restores it; margin_call 1.3: past, "
            "a 0.93 % rise restores it; liquidation 1.1: a 4.1 % drop reaches it.\n"
            "Liquidation prices (others held): BTC 58,123 USDT, ETH none.\n"
            "To get back to 1.5: repay 1,240 USDT or add 0.03052 BTC.\n"
            "Interest alone (prices standing) reaches liquidation 1.1 in 41 h.\n"
            "Assets 10,500 USDT, liabilities 8,178 USDT."
        ),
        notify_type="warning",
    )


def test_liquidation_is_a_failure_and_while_down_is_said() -> None:
    """The liquidation bar is sent as a failure, and a crossing while down says so."""
    msg = render(event(rule="liquidation", bar=1.1, level=1.05, while_down=True), REPORT)
    assert msg.notify_type == "failure"
    assert msg.title.startswith("[LIQUIDATION] alice (cross): margin level 1.050 ≤ 1.1")
    assert "Crossed while the monitor was down; reported on restart." in msg.body


def test_repeat_and_resolved_messages() -> None:
    """A repeat says it is a reminder; a resolved message gives the level now."""
    rep = render(event(kind="repeat", repeat_n=2), REPORT)
    assert rep.title == "[MARGIN CALL, still] alice (cross): margin level 1.284 ≤ 1.3"
    assert "Reminder 2: still at or below since 2026-05-01 12:00:03 UTC." in rep.body
    back = render(event(kind="resolved", level=1.35), replace(REPORT, margin_level=1.35))
    assert back.title == "[resolved MARGIN CALL] alice (cross): margin level 1.350 > 1.3"
    assert back.notify_type == "success"
    assert back.body.startswith("Margin level now 1.350, back above the margin_call bar 1.3.")


def test_isolated_pair_and_approximate_account() -> None:
    """An isolated pair names the pair; a MARGIN_2 account is flagged approximate, with Binance's level."""
    pair = replace(
        REPORT,
        unit="isolated:bob:BTCUSDT",
        account="bob",
        kind="isolated",
        symbol="BTCUSDT",
        approximate=True,
        exchange_margin_level=1.31,
        state="approximate",
        reason="priced by Binance's own level: no live price for BTC (BTCUSDT BREAK)",
    )
    msg = render(event(unit="isolated:bob:BTCUSDT"), pair)
    assert msg.title.startswith("[MARGIN CALL] bob BTCUSDT (isolated):")
    assert msg.body.startswith("Account bob, isolated pair BTCUSDT, valued in USDT.")
    assert msg.title.endswith("(approximate)")
    assert (
        "APPROXIMATE: priced by Binance's own level: no live price for BTC (BTCUSDT BREAK); "
        "Binance reported 1.310 at the last read." in msg.body
    )


def test_distance_message() -> None:
    """The distance rule says how small a move liquidates, with the direction."""
    msg = render(event(rule="liquidation_distance", bar=0.05, distance=-0.0412, measure="distance"), REPORT)
    assert msg.title == "[LIQUIDATION DISTANCE] alice (cross): a 4.1 % drop liquidates"
    assert "within the 5 % alert distance" in msg.body
    up = render(event(rule="liquidation_distance", bar=0.05, distance=0.03, measure="distance"), REPORT)
    assert "a 3 % rise liquidates" in up.title


def test_blind_messages() -> None:
    """Blind names what is stale and since when; blind_resolved says monitoring is back."""
    blind = render(
        event(
            kind="blind",
            rule="blind",
            bar=None,
            detail="price feed BTCUSDT silent",
            level=1.2843,
            measure="blind",
        ),
        None,
    )
    assert blind.title == "[BLIND] alice (cross): no fresh data since 2026-05-01 12:00:03 UTC"
    assert "price feed BTCUSDT silent" in blind.body
    assert "NOT being watched" in blind.body and "last known margin level 1.284" in blind.body
    back = render(event(kind="blind_resolved", rule="blind", bar=None, measure="blind"), REPORT)
    assert back.title == "[monitoring restored] alice (cross): data fresh again"
    assert back.notify_type == "success"
    assert "blind for 3 min 20 s" in back.body


def test_no_debt_and_missing_report_do_not_crash() -> None:
    """A resolved alert for an account with no debt and any event without a report still render."""
    msg = render(
        event(kind="resolved", level=None), replace(REPORT, margin_level=None, repay={}, distances={})
    )
    assert "Margin level now ∞ (no debt)" in msg.body
    assert render(event(), None).title.startswith("[MARGIN CALL] alice (cross)")


def test_summary_and_test_message() -> None:
    """A flood summary lists the coalesced titles; the test message says it is a test."""
    msg = summary("chat", ["a", "b", "c"], 60.0)
    assert msg.title == "[SUMMARY] 3 more alerts on route chat"
    assert msg.body.splitlines()[1:] == ["- a", "- b", "- c"]
    assert "test" in demo_message(T0).title.lower()


# -- past a bar ----------------------------------------------------------------------------------

# A long account already under its liquidation bar (the case of issue 15): level 1.097 < 1.1, and a
# uniform rise of 0.29 % of its non-USDT assets brings it back to 1.1.
PAST = replace(
    REPORT,
    margin_level=1.097,
    distances={"normal": 0.385, "margin_call": 0.194, "liquidation": 0.0029},
    hours_to_bars={},
)


def test_past_the_liquidation_bar_says_how_far_past_and_what_restores_it() -> None:
    """Under the liquidation bar the text never says "a rise liquidates": it says it is past, by how
    much, which move restores the bar, and (from the report) what to repay or add."""
    msg = render(event(rule="liquidation", bar=1.1, level=1.097), PAST)
    lines = msg.body.splitlines()
    assert lines[2] == (
        "Liquidation (1.1): PAST IT, margin level 1.097 is 0.003 below; "
        "a 0.29 % rise of every non-USDT asset restores 1.1."
    )
    assert lines[3] == (
        "Distance to each bar: normal 1.5: past, a 38.5 % rise restores it; margin_call 1.3: past, "
        "a 19.4 % rise restores it; liquidation 1.1: past, a 0.29 % rise restores it."
    )
    assert "To get back to 1.5: repay 1,240 USDT or add 0.03052 BTC." in lines
    assert "liquidates" not in msg.body


def test_distance_alert_past_the_bar_says_restores_not_liquidates() -> None:
    """The distance rule firing for a unit already under its liquidation bar says so in the title."""
    msg = render(
        event(rule="liquidation_distance", bar=0.03, distance=0.0029, level=1.097, measure="distance"), PAST
    )
    assert msg.title == (
        "[LIQUIDATION DISTANCE] alice (cross): past the liquidation bar; a 0.29 % rise restores it"
    )
    assert "Binance liquidates at this level: act now." in msg.body
    assert "rise liquidates" not in msg.body + msg.title


def test_a_short_account_past_the_bar_is_restored_by_a_drop() -> None:
    """A net-short account under its bar is brought back by a drop; not past, a rise liquidates it."""
    short = replace(PAST, distances={"normal": -0.3, "margin_call": -0.15, "liquidation": -0.004})
    assert "a 0.4 % drop of every non-USDT asset restores 1.1." in render(event(), short).body
    above = replace(
        short, margin_level=1.2, distances={"normal": -0.2, "margin_call": -0.1, "liquidation": 0.05}
    )
    assert "Liquidation (1.1): a 5 % rise of every non-USDT asset liquidates." in render(event(), above).body


def test_past_the_bar_with_no_uniform_move_says_repay_or_add() -> None:
    """When no uniform move restores the bar, the line says to repay or add collateral."""
    stuck = replace(PAST, distances={"normal": None, "margin_call": None, "liquidation": None})
    body = render(event(), stuck).body
    assert (
        "PAST IT, margin level 1.097 is 0.003 below; no uniform price move restores it: "
        "repay or add collateral." in body
    )
    assert "liquidation 1.1: no uniform move reaches it" in body
