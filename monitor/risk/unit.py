"""One risk unit's record and the numbers computed exactly from it (for ``AccountBook``).

A unit is valued in its own quote (the book's quote for a cross account, the pair's quote asset for
an isolated pair) at exact prices. ``scale`` maps the classic level onto the exchange's for a Cross
Margin Pro account (1 otherwise): every bar is divided by it before solving, so distances, prices,
restore amounts and hours are those at which the *scaled* level meets the bar.

Implied value. An asset with no live price route (a halted pair) is valued, for an account whose
exchange level is known, at what Binance's own ``marginLevel`` implies: at the REST read, with our
priced totals A and L and Binance's level E, the unpriced assets are worth V = max(0, E·L − A) held
and W = max(0, A/E − L) owed (one of the two is 0; a side the unpriced assets do not have is 0;
both are 0 for a unit that owes nothing), kept fixed (a halted pair does not trade) until the next
read, while the other prices move live. The unit is then *approximate*.

>>> from monitor.risk.margin import Bars
>>> u = Unit("cross:a", 0, "a", "cross", None, "USDT",
...          {"BTC": Position(Decimal(1)), "OLD": Position(Decimal(500)),
...           "USDT": Position(borrowed=Decimal(40000))}, Bars.classic(), exchange_level=Decimal("1.5"))
>>> u.routes = {"BTC": Route("BTC", ("BTCUSDT",)), "OLD": None, "USDT": Route("USDT", ())}
>>> implied_totals(u, {("BTCUSDT",): Decimal(50000)}.get)  # V = 1.5 x 40,000 - 50,000
(Decimal('10000.0'), Decimal('0'))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Context, Decimal

from monitor.risk.margin import (
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
from monitor.risk.prices import Route
from monitor.risk.report import UnitKind, UnitReport, UnitState

__all__ = ["Unit", "Valuation", "build_report", "implied_totals", "liquidation_distance", "valuation"]

INF = float("inf")
ONE = Decimal(1)
ZERO = Decimal(0)
_EXACT = Context(prec=60)


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
    implied: tuple[Decimal, Decimal] | None = None  # (V, W) of the unrouted assets, see above
    blind: str | None = None  # why the unit is blind (stale data), set by the engine
    why_unrouted: str = ""  # e.g. "OLD (OLDUSDT BREAK)"

    @property
    def owes(self) -> bool:
        """Anything is borrowed or accrues interest (else: no debt, whatever the prices)."""
        return any(p.owed > 0 for p in self.positions.values())

    @property
    def fallback(self) -> bool:
        """Binance's level can stand in for unrouted assets (a positive level from the last read)."""
        return self.exchange_level is not None and self.exchange_level > 0


def implied_totals(
    u: Unit, exact: Callable[[tuple[str, ...]], Decimal | None]
) -> tuple[Decimal, Decimal] | None:
    """(V, W): the value held and owed of ``u``'s unrouted assets that Binance's level implies, at
    the current prices of the routed ones (None while one of those has no price, or no level)."""
    if not u.fallback:
        return None
    assert u.exchange_level is not None
    held = owed = False  # what the unrouted assets have: only that side can carry an implied value
    a = lia = ZERO
    for asset, route in u.routes.items():
        if route is None:
            held, owed = held or u.positions[asset].held > 0, owed or u.positions[asset].owed > 0
            continue
        price = ONE if route.fixed else exact(route.symbols)
        if price is None:
            return None
        p = u.positions[asset]
        a = _EXACT.add(a, _EXACT.multiply(p.held, price))
        lia = _EXACT.add(lia, _EXACT.multiply(p.owed, price))
    if not u.owes:
        return ZERO, ZERO  # no debt: nothing to imply (Binance's 999 is no level)
    e = u.exchange_level
    v = max(ZERO, _EXACT.subtract(_EXACT.multiply(e, lia), a)) if held else ZERO
    w = max(ZERO, _EXACT.subtract(_EXACT.divide(a, e), lia)) if owed else ZERO
    return v, w


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class Valuation:
    """A unit's exact prices now: moving assets with a price, quote-like (fixed) assets, the assets
    that have a balance but no price (``unpriced``: no route at all, or no price yet), and the
    implied value standing in for the unrouted ones (None: nothing stands in)."""

    prices: dict[str, Decimal]
    fixed: set[str]
    unpriced: list[str]
    implied: tuple[Decimal, Decimal] | None = None
    unrouted: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Every asset is valued: priced live, or unrouted and covered by the implied value."""
        if self.implied is None:
            return not self.unpriced
        return set(self.unpriced) <= set(self.unrouted)

    def totals(self, unit: Unit) -> Totals:
        """The unit's totals over its priced assets, plus the implied value of the unrouted ones
        (as fixed: it does not move with prices)."""
        priced = {a: p for a, p in unit.positions.items() if a in self.prices or a in self.fixed}
        t = value_positions(priced, self.prices, self.fixed)
        if self.implied is None:
            return t
        v, w = self.implied
        return Totals(t.fixed_assets + v, t.fixed_liabilities + w, t.moving_assets, t.moving_liabilities)


def valuation(unit: Unit, exact: Callable[[tuple[str, ...]], Decimal | None]) -> Valuation:
    """Price the unit's assets along their routes with ``exact`` (legs -> exact price or None)."""
    prices: dict[str, Decimal] = {}
    fixed: set[str] = set()
    unpriced: list[str] = []
    unrouted: list[str] = []
    for asset, route in unit.routes.items():
        if route is not None and route.fixed:
            fixed.add(asset)
            continue
        if route is None:
            unrouted.append(asset)
        price = None if route is None else exact(route.symbols)
        if price is None:
            unpriced.append(asset)
        else:
            prices[asset] = price
    implied = unit.implied if unrouted else None
    return Valuation(prices, fixed, sorted(unpriced), implied, tuple(sorted(unrouted)))


def liquidation_distance(unit: Unit, v: Valuation) -> float | None:
    """The signed uniform move to the liquidation bar (None: unpriced, no debt, or unreachable)."""
    if not v.complete:
        return None
    return _f(uniform_distance(v.totals(unit), unit.bars.liquidation_level / unit.scale))


def unit_state(unit: Unit, v: Valuation) -> tuple[UnitState, str]:
    """The unit's one state and its reason (see ``monitor.risk.report.UnitState``)."""
    if unit.blind is not None:
        return "blind", unit.blind
    if not unit.owes:
        return "no_debt", ""
    if not v.complete:
        waiting = [a for a in v.unpriced if a not in v.unrouted]
        if waiting:
            legs = sorted({leg for a in waiting for leg in unit.routes[a].symbols})  # type: ignore[union-attr]
            return "blind", f"no price yet for {', '.join(legs)}"
        return (
            "blind",
            f"no live price for {unit.why_unrouted or ', '.join(v.unrouted)} and no level from Binance",
        )
    if v.unrouted:
        return "approximate", f"priced by Binance's own level: no live price for {unit.why_unrouted}"
    if unit.approximate:
        return (
            "approximate",
            "Cross Margin Pro account: priced by Binance's own level (formula not published)",
        )
    return "known", ""


def build_report(unit: Unit, v: Valuation, restore_target: str | None) -> UnitReport:
    """Everything about the unit at these prices. ``restore_target`` names a bar (default: the
    normal bar, else the highest); KeyError for an unknown name."""
    bars = unit.bars
    target = bars.levels[restore_target] if restore_target is not None else bars.normal_level
    totals = v.totals(unit)
    state, reason = unit_state(unit, v)
    implied = v.implied if v.implied is not None and v.unrouted else (ZERO, ZERO)
    report = UnitReport(
        unit=unit.id,
        account=unit.account,
        kind=unit.kind,
        symbol=unit.symbol,
        quote=unit.quote,
        margin_level=INF if state == "no_debt" else None,
        bars={name: float(value) for name, value in bars.levels.items()},
        liquidation_bar=bars.liquidation,
        distances=dict.fromkeys(bars.levels),
        liquidation_prices={},
        total_asset_value=float(totals.assets),
        total_liability_value=float(totals.liabilities),
        restore_target=float(target),
        approximate=state == "approximate",
        exchange_margin_level=_f(unit.exchange_level),
        unpriced_assets=v.unpriced,
        state=state,
        reason=reason,
        implied_value=float(implied[0]),
        implied_liability=float(implied[1]),
    )
    if not v.complete:
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
        if p.owed > 0 and asset in price:
            r = repay_to_restore(a, lia, p.owed, price[asset], goal)
            if r is not None and r.sufficient:
                repay[asset] = float(r.amount)
    for asset in candidates:
        c = collateral_to_restore(a, lia, price.get(asset, ONE), goal)
        if c is not None:
            collateral[asset] = float(c)
    hours: dict[str, float | None] = {}
    if u.rates:
        valued = {a: p for a, p in u.positions.items() if a in price}
        growth = interest_per_hour(valued, prices, u.rates, fixed)
        hours = {name: _f(hours_to_bar(a, lia, growth, value)) for name, value in bar.items()}
    return replace(
        report,
        margin_level=_f(classic * s) if classic is not None else INF,
        distances={name: _f(uniform_distance(t, value)) for name, value in bar.items()},
        liquidation_prices=liquidation_prices,
        repay=repay,
        add_collateral=collateral,
        hours_to_bars=hours,
    )
