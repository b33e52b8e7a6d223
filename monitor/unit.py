"""One risk unit's record and the numbers computed exactly from it (for ``AccountBook``).

A unit is valued in its own quote (the book's quote for a cross account, the pair's quote asset for
an isolated pair) at exact prices. ``scale`` maps the classic level onto the exchange's for a Cross
Margin Pro account (1 otherwise): every bar is divided by it before solving, so distances, prices,
restore amounts and hours are those at which the *scaled* level meets the bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from monitor.margin import (
    Bars,
    Position,
    Totals,
    collateral_to_restore,
    hours_to_bar,
    interest_per_hour,
    liquidation_price,
    repay_to_restore,
    uniform_distance,
    value_positions,
)
from monitor.pricebook import Route
from monitor.report import UnitKind, UnitReport

__all__ = ["Unit", "Valuation", "build_report", "liquidation_distance", "valuation"]

INF = float("inf")
ONE = Decimal(1)


@dataclass(eq=False, slots=True)
class Unit:
    """The book's record of one risk unit (exact balances; see ``AccountBook``)."""

    id: str
    index: int
    account: str
    kind: UnitKind
    symbol: str | None
    quote: str
    positions: dict[str, Position]
    bars: Bars
    approximate: bool = False
    exchange_level: Decimal | None = None
    base_asset: str | None = None
    rates: dict[str, Decimal] = field(default_factory=dict)
    band: tuple[float, float] = (INF, -INF)
    scale: Decimal = ONE
    calibrated: bool = False
    routes: dict[str, Route | None] = field(default_factory=dict)


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class Valuation:
    """A unit's exact prices now: moving assets with a price, quote-like (fixed) assets, and the
    assets that have a balance but no price (yet, or no route at all)."""

    prices: dict[str, Decimal]
    fixed: set[str]
    unpriced: list[str]

    def totals(self, unit: Unit) -> Totals:
        """The unit's totals over its priced assets."""
        priced = {a: p for a, p in unit.positions.items() if a in self.prices or a in self.fixed}
        return value_positions(priced, self.prices, self.fixed)


def valuation(unit: Unit, exact: Callable[[tuple[str, ...]], Decimal | None]) -> Valuation:
    """Price the unit's assets along their routes with ``exact`` (symbols -> exact price or None)."""
    prices: dict[str, Decimal] = {}
    fixed: set[str] = set()
    unpriced: list[str] = []
    for asset, route in unit.routes.items():
        if route is not None and route.fixed:
            fixed.add(asset)
            continue
        price = None if route is None else exact(route.symbols)
        if price is None:
            unpriced.append(asset)
        else:
            prices[asset] = price
    return Valuation(prices, fixed, sorted(unpriced))


def liquidation_distance(unit: Unit, v: Valuation) -> float | None:
    """The signed uniform move to the liquidation bar (None: unpriced, no debt, or unreachable)."""
    if v.unpriced:
        return None
    return _f(uniform_distance(v.totals(unit), unit.bars.liquidation_level / unit.scale))


def build_report(unit: Unit, v: Valuation, restore_target: str | None) -> UnitReport:
    """Everything about the unit at these prices. ``restore_target`` names a bar (default: the
    normal bar, else the highest); KeyError for an unknown name."""
    bars = unit.bars
    target = bars.levels[restore_target] if restore_target is not None else bars.normal_level
    totals = v.totals(unit)
    report = UnitReport(
        unit=unit.id,
        account=unit.account,
        kind=unit.kind,
        symbol=unit.symbol,
        quote=unit.quote,
        margin_level=None,
        bars={name: float(value) for name, value in bars.levels.items()},
        liquidation_bar=bars.liquidation,
        distances=dict.fromkeys(bars.levels),
        liquidation_prices={},
        total_asset_value=float(totals.assets),
        total_liability_value=float(totals.liabilities),
        restore_target=float(target),
        approximate=unit.approximate,
        exchange_margin_level=_f(unit.exchange_level),
        unpriced_assets=v.unpriced,
    )
    if v.unpriced:
        return report
    return _solve(unit, report, totals, v, target)


def _solve(u: Unit, report: UnitReport, t: Totals, v: Valuation, target: Decimal) -> UnitReport:
    prices, fixed = v.prices, v.fixed
    s = u.scale
    classic = t.level()
    a, lia = t.assets, t.liabilities
    bar = {name: value / s for name, value in u.bars.levels.items()}
    liq = bar[u.bars.liquidation]
    goal = target / s
    price = {**prices, **dict.fromkeys(fixed, ONE)}
    liquidation_prices: dict[str, float | None] = {}
    repay: dict[str, float] = {}
    collateral: dict[str, float] = {}
    if u.kind == "cross":
        candidates = [u.quote] + [x for x in prices if u.positions[x].held > 0]
    else:
        candidates = [x for x in (u.base_asset, u.quote) if x is not None]
    for asset, p in u.positions.items():
        if asset in prices:
            px = prices[asset]
            other_a, other_l = a - p.held * px, lia - p.owed * px
            liquidation_prices[asset] = _f(liquidation_price(other_a, other_l, p.held, p.owed, liq))
        if p.owed > 0:
            r = repay_to_restore(a, lia, p.owed, price[asset], goal)
            if r is not None and r.sufficient:
                repay[asset] = float(r.amount)
    for asset in candidates:
        c = collateral_to_restore(a, lia, price.get(asset, ONE), goal)
        if c is not None:
            collateral[asset] = float(c)
    hours: dict[str, float | None] = {}
    if u.rates:
        growth = interest_per_hour(u.positions, prices, u.rates, fixed)
        hours = {name: _f(hours_to_bar(a, lia, growth, value)) for name, value in bar.items()}
    return replace(
        report,
        margin_level=_f(classic * s) if classic is not None else None,
        distances={name: _f(uniform_distance(t, value)) for name, value in bar.items()},
        liquidation_prices=liquidation_prices,
        repay=repay,
        add_collateral=collateral,
        hours_to_bars=hours,
    )
