"""Property tests of the exact margin maths: each computed answer, applied, lands on its bar."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from decimal import localcontext

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from monitor.risk.margin import (
    Position,
    Totals,
    asset_liquidation_price,
    collateral_to_restore,
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

REL = D("1e-9")
STABLE = frozenset({"USDT", "USDC"})
ASSETS = ("USDT", "USDC", "BTC", "ETH", "DOGE")

# Binance amounts: 8 decimals, from dust to 1e12-sized balances, with zero well represented.
amounts = st.one_of(
    st.just(D(0)),
    st.sampled_from([D("0.00000001"), D(1), D(10) ** 12]),
    st.decimals(min_value=0, max_value=10**12, places=8, allow_nan=False, allow_infinity=False),
)
prices = st.one_of(
    st.just(D(0)),
    st.sampled_from([D("0.00000001"), D(1), D(10) ** 6]),
    st.decimals(min_value=D("0.00000001"), max_value=10**6, places=8, allow_nan=False, allow_infinity=False),
)
bars = st.sampled_from([D("1.05"), D("1.1"), D("1.3"), D("1.5"), D(2)])
positions = st.builds(Position, amounts, amounts, amounts, amounts)
accounts = st.dictionaries(st.sampled_from(ASSETS), positions, min_size=1, max_size=5)
price_maps = st.fixed_dictionaries({a: prices for a in ASSETS if a not in STABLE})


@pytest.fixture(autouse=True)
def precise_checks() -> Iterator[None]:
    """The checks below apply answers in 100-digit arithmetic, so cancellation in the check itself
    (1e12 owed minus a repayment of almost 1e12) does not hide or fake an error."""
    with localcontext(prec=100):
        yield


def near(got: D | None, want: D) -> bool:
    """Equal within 1e-9 relative."""
    return got is not None and abs(got - want) <= REL * abs(want)


@given(accounts, price_maps, bars)
def test_uniform_move_lands_on_the_bar(account: dict[str, Position], px: dict[str, D], bar: D) -> None:
    """Moving every non-quote price by the computed distance gives a level equal to the bar."""
    t = value_positions(account, px, STABLE)
    x = uniform_distance(t, bar)
    if x is None:
        if t.liabilities > 0:  # no positive factor crosses the bar: the level stays on one side
            sides = set()
            for f in (D("0.0001"), D("0.5"), D(1), D(2), D(10000)):
                level = moved(t, f - 1).level()
                sides.add(level is None or level > bar)
            assert len(sides) == 1
        return
    assert x > -1
    assert near(moved(t, x).level(), bar)


@given(accounts, price_maps, bars, st.sampled_from(ASSETS))
def test_asset_liquidation_price_lands_on_the_bar(
    account: dict[str, Position], px: dict[str, D], bar: D, asset: str
) -> None:
    """Setting one asset to its computed liquidation price, all else held, gives the bar."""
    p = asset_liquidation_price(account, px, asset, bar, STABLE)
    if p is None:
        return
    assert p > 0 and asset not in STABLE
    assert near(value_positions(account, {**px, asset: p}, STABLE).level(), bar)


@given(accounts, price_maps, bars, st.sampled_from(ASSETS), st.sampled_from(ASSETS))
def test_restore_amounts_reach_the_target(
    account: dict[str, Position], px: dict[str, D], target: D, debt: str, collateral: str
) -> None:
    """Repaying the computed amount with new funds, or adding the computed collateral, gives the target."""
    t = value_positions(account, px, STABLE)
    price_of = {**px, "USDT": D(1), "USDC": D(1)}
    owed = account[debt].owed if debt in account else D(0)
    repay = repay_to_restore(t.assets, t.liabilities, owed, price_of[debt], target)
    add = collateral_to_restore(t.assets, t.liabilities, price_of[collateral], target)
    level = t.level()
    if level is None or level >= target:
        assert repay is None and add is None
        return
    if price_of[collateral] > 0:
        assert add is not None and near(
            margin_level(t.assets + add * price_of[collateral], t.liabilities), target
        )
    if repay is not None:
        assert D(0) < repay.amount <= owed
        after = margin_level(t.assets, t.liabilities - repay.amount * price_of[debt])
        if repay.sufficient and t.assets == 0:
            assert after is None  # nothing held: only repaying the whole debt helps, and it does
        elif repay.sufficient:
            assert near(after, target)
        else:
            assert repay.amount == owed and (after is None or after < target * (1 + REL))


@given(accounts, price_maps, bars, st.decimals(min_value=0, max_value=D("0.001"), places=8))
def test_hours_to_bar_land_on_the_bar(
    account: dict[str, Position], px: dict[str, D], bar: D, rate: D
) -> None:
    """After the computed hours of interest the level equals the bar; no interest means no answer."""
    t = value_positions(account, px, STABLE)
    growth = interest_per_hour(account, px, dict.fromkeys(ASSETS, rate), STABLE)
    hours = hours_to_bar(t.assets, t.liabilities, growth, bar)
    if growth == 0:
        assert hours is None
        return
    level = t.level()
    if level is not None and level < bar:
        assert hours is None
        return
    assert hours is not None and hours >= 0
    assert near(margin_level(t.assets, t.liabilities + growth * hours), bar)


@given(accounts, price_maps, st.sampled_from([a for a in ASSETS if a not in STABLE]), st.data())
def test_level_is_monotone_in_each_price(
    account: dict[str, Position], px: dict[str, D], asset: str, data: st.DataObject
) -> None:
    """The level is monotone in any one asset's price, and never falls as a held-only asset's price rises."""
    p1, p2, p3 = sorted(data.draw(st.lists(prices, min_size=3, max_size=3)))
    levels = [value_positions(account, {**px, asset: p}, STABLE).level() for p in (p1, p2, p3)]
    assume(all(lv is not None for lv in levels))
    a, b, c = (lv for lv in levels if lv is not None)
    tol = REL * max(a, b, c)
    assert (a - tol <= b <= c + tol) or (a + tol >= b >= c - tol)
    position = account.get(asset)
    if position is not None and position.owed == 0:
        assert a - tol <= b <= c + tol


@given(positions, positions, prices, bars)
def test_isolated_pair_agrees_with_the_general_formulas(
    base: Position, quote: Position, p: D, bar: D
) -> None:
    """The pair's liquidation price is the per-asset formula; at it the pair sits on the bar;
    its distance is the uniform move of the base."""
    p_liq = isolated_liquidation_price(base, quote, bar)
    assert p_liq == liquidation_price(quote.held, quote.owed, base.held, base.owed, bar)
    if p_liq is not None:
        assert near(isolated_level(base, quote, p_liq), bar)
    d = isolated_distance(base, quote, p, bar)
    x = uniform_distance(isolated_totals(base, quote, p), bar)
    if d is not None and x is not None:
        assert abs(d - x) <= REL * max(abs(x), D(1))


@settings(max_examples=300)
@given(accounts, price_maps, bars, st.decimals(min_value=-2, max_value=2, places=6))
def test_edge_cases_give_defined_results(
    account: dict[str, Position], px: dict[str, D], bar: D, x: D
) -> None:
    """Zero prices, no debt, no assets, negative equity, dust and 1e12 balances never raise."""
    t = value_positions(account, px, STABLE)
    for value in (t.level(), uniform_distance(t, bar), moved(t, x).level()):
        assert value is None or value.is_finite()
    for asset in ASSETS:
        asset_liquidation_price(account, px, asset, bar, STABLE)
    assert isinstance(Totals(D(0), D(0), D(0), D(0)).level(), type(None))
