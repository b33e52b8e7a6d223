"""Worked examples of the margin maths, each number derived by hand in the test's docstring."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from monitor.risk.margin import (
    Bars,
    MissingPrice,
    Position,
    Totals,
    asset_liquidation_price,
    collateral_to_restore,
    cross_level,
    hours_to_bar,
    interest_per_hour,
    isolated_distance,
    isolated_level,
    isolated_liquidation_price,
    isolated_totals,
    liquidation_price,
    margin_level,
    moved,
    repay_to_restore,
    uniform_distance,
    value_positions,
)

STABLE = frozenset({"USDT", "USDC", "FDUSD"})


def close(got: D | None, want: D, tol: str = "1e-40") -> bool:
    """Exact up to the 60-digit rounding of a division."""
    return got is not None and abs(got - want) <= D(tol) * max(abs(want), D(1))


def pos(free: str = "0", locked: str = "0", borrowed: str = "0", interest: str = "0") -> Position:
    return Position(D(free), D(locked), D(borrowed), D(interest))


# A cross account with BTC and ETH collateral and a USDT loan.
LONG = {
    "BTC": pos(free="0.4", locked="0.1"),  # held 0.5 BTC
    "ETH": pos(free="5"),
    "USDT": pos(borrowed="32000", interest="400"),  # owed 32,400 USDT
}
LONG_PRICES = {"BTC": D(60000), "ETH": D(3000)}


def test_position_from_binance_row() -> None:
    """A userAssets row parses with Decimal: held = free + locked = 2346.5, owed = 201.66666672."""
    row = {"asset": "BNB", "borrowed": "201.66666672", "free": "2346.50000000", "interest": "0.00000000"}
    p = Position.from_binance({**row, "locked": "0.00000000", "netAsset": "2144.83333328"})
    assert p.held == D("2346.5")
    assert p.owed == D("201.66666672")
    assert p.net == D("2144.83333328")


def test_position_rejects_negative_and_non_finite_amounts() -> None:
    """Binance never sends a negative balance or NaN; such input is refused at the boundary."""
    with pytest.raises(ValueError, match="borrowed"):
        Position(borrowed=D(-1))
    with pytest.raises(ValueError, match="free"):
        Position.from_binance({"free": "NaN"})


def test_cross_long_level_and_distances() -> None:
    """BTC 0.5 x 60,000 = 30,000 plus ETH 5 x 3,000 = 15,000 gives A = 45,000 (all moving);
    L = 32,400 USDT (quote, fixed). Level = 45,000 / 32,400 = 1.388888...
    A uniform move x solves 45,000 (1+x) = T x 32,400:
    to 1.3: x = 42,120 / 45,000 - 1 = -0.064; to 1.1: x = 35,640 / 45,000 - 1 = -0.208.
    """
    t = value_positions(LONG, LONG_PRICES, STABLE)
    assert t == Totals(D(0), D(32400), D(45000), D(0))
    assert close(margin_level(t.assets, t.liabilities), D("1.3888888888888888888888888888888888888888889"))
    assert close(cross_level(LONG, LONG_PRICES, STABLE), D("1.38888888888888888888888888888888888888888889"))
    assert uniform_distance(t, D("1.3")) == D("-0.064")
    assert uniform_distance(t, D("1.1")) == D("-0.208")
    assert moved(t, D("-0.208")).level() == D("1.1")


def test_cross_long_per_asset_liquidation_prices() -> None:
    """BTC alone: others A_o = 15,000 (ETH), L_o = 32,400: p* = (1.1 x 32,400 - 15,000) / 0.5
    = (35,640 - 15,000) / 0.5 = 41,280. ETH alone: A_o = 30,000: p* = (35,640 - 30,000) / 5 = 1,128.
    """
    assert asset_liquidation_price(LONG, LONG_PRICES, "BTC", D("1.1"), STABLE) == D(41280)
    assert asset_liquidation_price(LONG, LONG_PRICES, "ETH", D("1.1"), STABLE) == D(1128)
    assert liquidation_price(D(15000), D(32400), D("0.5"), D(0), D("1.1")) == D(41280)


def test_cross_long_restore_to_normal() -> None:
    """To lift 45,000 / 32,400 back to 1.5: repay 32,400 - 45,000 / 1.5 = 2,400 USDT (of 32,400 owed,
    so sufficient), or add (1.5 x 32,400 - 45,000) / 60,000 = 3,600 / 60,000 = 0.06 BTC,
    or 3,600 USDT of collateral.
    """
    t = value_positions(LONG, LONG_PRICES, STABLE)
    repay = repay_to_restore(t.assets, t.liabilities, D(32400), D(1), D("1.5"))
    assert repay is not None and repay.amount == D(2400) and repay.sufficient
    assert collateral_to_restore(t.assets, t.liabilities, D(60000), D("1.5")) == D("0.06")
    assert collateral_to_restore(t.assets, t.liabilities, D(1), D("1.5")) == D(3600)
    assert margin_level(t.assets + D(3600), t.liabilities) == D("1.5")


def test_restore_reports_insufficient_repay_and_nothing_when_safe() -> None:
    """Owing 100 USDT and 1 BTC (at 30,000; L = 30,100) against A = 33,110 (level 1.1): reaching 1.5
    needs 30,100 - 33,110 / 1.5 = 8,026.67 of value repaid: all 100 USDT is not enough, so the answer
    is 'repay all 100 USDT, still short'. A level already at the target needs nothing.
    """
    repay = repay_to_restore(D(33110), D(30100), D(100), D(1), D("1.5"))
    assert repay is not None and repay.amount == D(100) and not repay.sufficient
    btc = repay_to_restore(D(33110), D(30100), D(1), D(30000), D("1.5"))
    assert btc is not None and btc.sufficient
    assert abs(btc.amount - D("0.267555")) < D("0.000001")
    assert repay_to_restore(D(150), D(100), D(100), D(1), D("1.5")) is None
    assert collateral_to_restore(D(150), D(100), D(1), D("1.5")) is None


def test_interest_erosion_hours() -> None:
    """32,000 USDT borrowed at 0.000005 per hour adds 0.16 USDT of liability per hour (interest is
    simple, on principal only). Level 45,000 / 32,400 reaches 1.3 when L = 45,000 / 1.3 = 34,615.3846...,
    i.e. after (34,615.3846 - 32,400) / 0.16 = 13,846.15 hours.
    """
    growth = interest_per_hour(LONG, LONG_PRICES, {"USDT": D("0.000005")}, STABLE)
    assert growth == D("0.16")
    hours = hours_to_bar(D(45000), D(32400), growth, D("1.3"))
    assert hours is not None and abs(hours - D("13846.153846")) < D("0.000001")
    assert hours_to_bar(D(45000), D(32400), D(0), D("1.3")) is None  # no interest: never
    assert hours_to_bar(D(100), D(100), growth, D("1.1")) is None  # already below


def test_net_short_liquidates_on_a_rise() -> None:
    """Short 0.4 BTC at 50,000 with 30,000 USDT held: A = 30,000 (fixed), L = 20,000 (moving),
    level 1.5. Uniform x: 30,000 = 1.1 x 20,000 (1+x) gives 1+x = 30,000 / 22,000, x = +0.363636...:
    a 36.4 % rise liquidates. BTC's own liquidation price is the same move: (0 - 30,000) / (0 - 1.1 x 0.4)
    = 68,181.82 = 50,000 x 1.363636.
    """
    short = {"USDT": pos(free="30000"), "BTC": pos(borrowed="0.4")}
    prices = {"BTC": D(50000)}
    t = value_positions(short, prices, STABLE)
    assert t.level() == D("1.5")
    x = uniform_distance(t, D("1.1"))
    assert x is not None and x > 0
    assert abs(x - D(8000) / D(22000)) < D("1e-20")
    p = asset_liquidation_price(short, prices, "BTC", D("1.1"), STABLE)
    assert p is not None and abs(p - D(30000) / D("0.44")) < D("1e-18")
    assert abs(p / D(50000) - 1 - x) < D("1e-20")


def test_fully_hedged_and_no_debt_have_no_distance() -> None:
    """Holding 2 BTC and owing 1 BTC gives level 2 at every price: the uniform move to 1.1 would be
    1+x = 0, so no move reaches it (None, never 0). No debt: level None, distance None.
    """
    hedged = value_positions({"BTC": pos(free="2", borrowed="1")}, {"BTC": D(40000)}, STABLE)
    assert hedged.level() == D(2)
    assert uniform_distance(hedged, D("1.1")) is None
    free = value_positions({"BTC": pos(free="1")}, {"BTC": D(40000)}, STABLE)
    assert free.level() is None
    assert uniform_distance(free, D("1.1")) is None
    assert margin_level(D(0), D(0)) is None


def test_debt_without_assets_and_negative_equity() -> None:
    """Owing 100 USDT with nothing held is level 0 (not an error); holding 50 against 100 owed is 0.5.
    The uniform move from 0.5 to 1.1 with only a fixed liability: 50 (1+x) = 110, x = 1.2.
    """
    assert margin_level(D(0), D(100)) == D(0)
    t = Totals(D(0), D(100), D(50), D(0))
    assert t.level() == D("0.5")
    assert uniform_distance(t, D("1.1")) == D("1.2")
    empty = Totals(D(0), D(100), D(0), D(0))
    assert uniform_distance(empty, D("1.1")) is None


def test_missing_price_is_named() -> None:
    """Valuing an asset with no price raises MissingPrice naming the asset; an empty row needs none."""
    with pytest.raises(MissingPrice, match="ETH"):
        value_positions({"ETH": pos(free="1")}, {}, STABLE)
    assert value_positions({"ETH": pos()}, {}, STABLE) == Totals(D(0), D(0), D(0), D(0))


def test_isolated_ten_x_pair_matches_exchange_formula() -> None:
    """10x BTCUSDT pair: 1,000 USDT own funds + 9,000 borrowed, 9,000 spent on 0.09 BTC at 100,000.
    Level = (0.09 x 100,000 + 1,000) / 9,000 = 1.1111 (the tier's initialRiskRatio 1.111).
    Liquidation at T = 1.05 (liquidationRiskRatio): P = (1.05 x 9,000 - 1,000) / 0.09 = 8,450 / 0.09
    = 93,888.89, a -6.11 % move. The reference quotes no numeric liquidatePrice; it reports that the
    exchange's liquidatePrice matched, to 99.9 %, a forum user's function with margin_level 1.05
    (a = USDT_loan x ML - USDT_balance, b = BTC_balance - BTC_loan x ML, price = a / b). That function,
    written out independently here, gives the same price to 0.1 %.
    """
    base, quote = pos(free="0.09"), pos(free="1000", borrowed="9000")
    assert close(isolated_level(base, quote, D(100000)), D("1.111111111111111111111111111111111111111111111"))
    p_liq = isolated_liquidation_price(base, quote, D("1.05"))
    assert p_liq is not None and abs(p_liq - D("93888.888888")) < D("0.001")
    usdt_balance, usdt_loan, btc_balance, btc_loan, ml = D(1000), D(9000), D("0.09"), D(0), D("1.05")
    forum = (usdt_loan * ml - usdt_balance) / (btc_balance - btc_loan * ml)
    assert abs(p_liq / forum - 1) < D("0.001")
    d = isolated_distance(base, quote, D(100000), D("1.05"))
    assert d is not None and abs(d - D("-0.0611111")) < D("0.0000001")
    at_liq = isolated_level(base, quote, p_liq)
    assert at_liq is not None and abs(at_liq - D("1.05")) < D("1e-20")
    x = uniform_distance(isolated_totals(base, quote, D(100000)), D("1.05"))
    assert x is not None and abs(x - d) < D("1e-20")


def test_isolated_short_pair() -> None:
    """Short pair: borrowed 0.1 BTC sold at 100,000 (+10,000 USDT) on top of 2,000 own USDT:
    level = 12,000 / 10,000 = 1.2; liquidation at 1.05 when P = (0 - 12,000) / (0 - 1.05 x 0.1)
    = 114,285.71, a +14.29 % rise. No base debt and no base held: no price liquidates (None).
    """
    base, quote = pos(borrowed="0.1"), pos(free="12000")
    assert isolated_level(base, quote, D(100000)) == D("1.2")
    p_liq = isolated_liquidation_price(base, quote, D("1.05"))
    assert p_liq is not None and abs(p_liq - D("114285.714285")) < D("0.001")
    assert isolated_liquidation_price(pos(), pos(free="1", borrowed="1"), D("1.05")) is None


def test_bars_classic_and_isolated_tier() -> None:
    """The classic ladder is 1.5 / 1.3 / 1.1; an isolated tier without a normal bar restores to its
    highest bar; a ladder without its liquidation bar is refused."""
    bars = Bars.classic()
    assert bars.levels == {"normal": D("1.5"), "margin_call": D("1.3"), "liquidation": D("1.1")}
    assert bars.liquidation_level == D("1.1") and bars.normal_level == D("1.5")
    pair = Bars({"margin_call": D("1.1"), "liquidation": D("1.05")})
    assert pair.normal_level == D("1.1")
    with pytest.raises(ValueError, match="liquidation"):
        Bars({"normal": D("1.5")})
