"""Exact margin maths: levels, liquidation distances and prices, restore amounts, interest erosion.

Pure functions on ``Decimal`` (no I/O, no floats): the account book (``monitor.risk.book``) runs a float
twin of the level on its hot path and checks it against these. Values are in one quote asset.

Terms used throughout:

- A position's *held* = free + locked; *owed* = borrowed + interest.
- ``Totals`` splits an account's value into a *fixed* part (the quote asset and the stablecoins,
  priced at 1, which do not move in a uniform move) and a *moving* part (everything else).
- A *bar* is a margin level threshold (1.5, 1.3, 1.1 ...); ``Bars`` names a ladder of them.
- ``None`` is the answer wherever no number exists: no debt (infinite level), no move that reaches a
  bar, nothing to restore. Edge cases (zero prices, no assets, negative equity) never raise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation, localcontext
from typing import ParamSpec, TypeVar

ZERO = Decimal(0)
ONE = Decimal(1)

# Binance amounts have <= 8 decimals and prices come as short decimal strings: with 60 significant
# digits, sums and products of 1e12-sized balances and prices are exact and only divisions round.
_CONTEXT = Context(prec=60)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _exact(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` under the module's 60-digit context, whatever the caller's context is."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext(_CONTEXT):
            return fn(*args, **kwargs)

    return wrapper


__all__ = [
    "Bars",
    "MissingPrice",
    "Position",
    "Repay",
    "Totals",
    "asset_liquidation_price",
    "collateral_to_restore",
    "cross_level",
    "hours_to_bar",
    "interest_per_hour",
    "isolated_distance",
    "isolated_level",
    "isolated_liquidation_price",
    "isolated_totals",
    "liquidation_price",
    "margin_level",
    "moved",
    "relative_move",
    "repay_to_restore",
    "uniform_distance",
    "value_positions",
]


class MissingPrice(KeyError):
    """An asset with a balance has no price to value it with."""

    def __init__(self, asset: str) -> None:
        super().__init__(asset)
        self.asset = asset

    def __str__(self) -> str:
        return f"no price for {self.asset}"


def _amount(name: str, value: object) -> Decimal:
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{name} is not a decimal number: {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return amount


@dataclass(frozen=True, slots=True)
class Position:
    """One asset's balance in a margin account (Binance's ``userAssets`` fields), never negative."""

    free: Decimal = ZERO
    locked: Decimal = ZERO
    borrowed: Decimal = ZERO
    interest: Decimal = ZERO

    def __post_init__(self) -> None:
        for name in ("free", "locked", "borrowed", "interest"):
            object.__setattr__(self, name, _amount(name, getattr(self, name)))

    @classmethod
    def from_binance(cls, row: Mapping[str, object]) -> Position:
        """Parse a ``userAssets`` / isolated ``baseAsset`` row (amounts as strings; absent = 0)."""
        return cls(*(_amount(k, row.get(k, "0")) for k in ("free", "locked", "borrowed", "interest")))

    @property
    def held(self) -> Decimal:
        """free + locked: what counts as an asset."""
        return self.free + self.locked

    @property
    def owed(self) -> Decimal:
        """borrowed + interest: what counts as a liability."""
        return self.borrowed + self.interest

    @property
    def net(self) -> Decimal:
        """held - owed (Binance's ``netAsset``)."""
        return self.held - self.owed

    @property
    def is_empty(self) -> bool:
        """Nothing held and nothing owed: the asset needs no price."""
        return not self.held and not self.owed


@dataclass(frozen=True)
class Bars:
    """A named ladder of margin-level bars, e.g. normal 1.5, margin_call 1.3, liquidation 1.1.

    ``liquidation`` names the bar that liquidates; ``normal`` the default restore target (when the
    ladder has no such bar, the highest bar is the target).
    """

    levels: Mapping[str, Decimal]
    liquidation: str = "liquidation"
    normal: str = "normal"
    _sorted: tuple[tuple[str, Decimal], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        levels = {name: _amount(f"bar {name}", value) for name, value in self.levels.items()}
        if self.liquidation not in levels:
            raise ValueError(f"bars {sorted(levels)} lack the liquidation bar {self.liquidation!r}")
        if any(value <= 0 for value in levels.values()):
            raise ValueError(f"bars must be > 0: {levels}")
        object.__setattr__(self, "levels", levels)
        ordered = tuple(sorted(levels.items(), key=lambda item: item[1], reverse=True))
        object.__setattr__(self, "_sorted", ordered)

    @classmethod
    def classic(cls) -> Bars:
        """Binance's default cross-margin classic ladder: 1.5 / 1.3 / 1.1."""
        return cls({"normal": Decimal("1.5"), "margin_call": Decimal("1.3"), "liquidation": Decimal("1.1")})

    @property
    def liquidation_level(self) -> Decimal:
        """The bar at which the unit is liquidated."""
        return self.levels[self.liquidation]

    @property
    def normal_level(self) -> Decimal:
        """The default restore target: the ``normal`` bar, else the highest bar."""
        return self.levels.get(self.normal, self._sorted[0][1])

    def descending(self) -> tuple[tuple[str, Decimal], ...]:
        """(name, level) pairs, highest bar first."""
        return self._sorted


@dataclass(frozen=True, slots=True)
class Totals:
    """An account's value in the quote asset, split into fixed (quote-like) and moving parts."""

    fixed_assets: Decimal
    fixed_liabilities: Decimal
    moving_assets: Decimal
    moving_liabilities: Decimal

    @property
    def assets(self) -> Decimal:
        """Total asset value A."""
        return self.fixed_assets + self.moving_assets

    @property
    def liabilities(self) -> Decimal:
        """Total liability value L (borrowed + interest)."""
        return self.fixed_liabilities + self.moving_liabilities

    def level(self) -> Decimal | None:
        """The margin level A / L (None: no debt)."""
        return margin_level(self.assets, self.liabilities)


@_exact
def margin_level(assets: Decimal, liabilities: Decimal) -> Decimal | None:
    """A / L; None when nothing is owed (infinite level, "no debt"); 0 for debt with no assets."""
    if liabilities <= 0:
        return None
    return assets / liabilities


@_exact
def value_positions(
    positions: Mapping[str, Position], prices: Mapping[str, Decimal], fixed: Container[str]
) -> Totals:
    """Value positions: assets in ``fixed`` at 1, the others at ``prices`` (MissingPrice if absent)."""
    fa = fl = ma = ml = ZERO
    for asset, p in positions.items():
        if p.is_empty:
            continue
        if asset in fixed:
            fa += p.held
            fl += p.owed
            continue
        price = prices.get(asset)
        if price is None:
            raise MissingPrice(asset)
        ma += p.held * price
        ml += p.owed * price
    return Totals(fa, fl, ma, ml)


@_exact
def cross_level(
    positions: Mapping[str, Position], prices: Mapping[str, Decimal], fixed: Container[str] = ()
) -> Decimal | None:
    """Cross margin level (classic): sum held x price / sum owed x price; None for no debt."""
    return value_positions(positions, prices, fixed).level()


@_exact
def moved(totals: Totals, move: Decimal) -> Totals:
    """The totals after every moving price is multiplied by (1 + move)."""
    factor = ONE + move
    return Totals(
        totals.fixed_assets,
        totals.fixed_liabilities,
        totals.moving_assets * factor,
        totals.moving_liabilities * factor,
    )


@_exact
def uniform_distance(totals: Totals, bar: Decimal) -> Decimal | None:
    """The signed move x of every moving price that brings the level to ``bar``.

    x = (T (L_q + L_n) - (A_q + A_n)) / (A_n - T L_n). None when there is no debt, when the level
    does not depend on the move (denominator 0: hedged) or when the move would need a price <= 0.
    Negative: a drop reaches the bar; positive: a rise (a net-short account). A unit already below
    the bar gets the move that would bring it back up to it.
    """
    if totals.liabilities <= 0:
        return None
    denominator = totals.moving_assets - bar * totals.moving_liabilities
    if denominator == 0:
        return None
    x = (bar * totals.liabilities - totals.assets) / denominator
    if ONE + x <= 0:
        return None
    return x


@_exact
def liquidation_price(
    other_assets: Decimal, other_liabilities: Decimal, held: Decimal, owed: Decimal, bar: Decimal
) -> Decimal | None:
    """The price of one asset (held/owed quantities), all other values fixed, at which level = bar.

    p* = (T L_o - A_o) / (A_x - T L_x); None when that asset cannot move the level there
    (denominator 0) or the answer is not a positive price.
    """
    denominator = held - bar * owed
    if denominator == 0:
        return None
    price = (bar * other_liabilities - other_assets) / denominator
    return price if price > 0 else None


@_exact
def asset_liquidation_price(
    positions: Mapping[str, Position],
    prices: Mapping[str, Decimal],
    asset: str,
    bar: Decimal,
    fixed: Container[str] = (),
) -> Decimal | None:
    """``liquidation_price`` for ``asset`` of a cross account, every other price held."""
    p = positions.get(asset)
    if p is None or asset in fixed:
        return None
    others = value_positions({a: q for a, q in positions.items() if a != asset}, prices, fixed)
    return liquidation_price(others.assets, others.liabilities, p.held, p.owed, bar)


@_exact
def relative_move(price: Decimal, target: Decimal | None) -> Decimal | None:
    """target / price - 1 (None if there is no target or the price is not positive)."""
    if target is None or price <= 0:
        return None
    return target / price - ONE


@dataclass(frozen=True, slots=True)
class Repay:
    """A repayment with new funds: ``amount`` of the asset; ``sufficient`` False when repaying the whole
    debt in that asset (``amount``) still leaves the level under the target."""

    amount: Decimal
    sufficient: bool


@_exact
def repay_to_restore(
    assets: Decimal, liabilities: Decimal, owed: Decimal, price: Decimal, target: Decimal
) -> Repay | None:
    """How much of a liability asset (``owed`` of it, at ``price``) to repay with new funds so that
    A / (L - r p) = target: r = (L - A / target) / p, capped at ``owed``.

    None when nothing is needed (no debt, or level >= target) or the asset cannot help (price <= 0,
    nothing owed in it).
    """
    if liabilities <= 0 or assets >= target * liabilities or price <= 0 or owed <= 0:
        return None
    amount = (liabilities - assets / target) / price
    if amount > owed:
        return Repay(owed, False)
    return Repay(amount, True)


@_exact
def collateral_to_restore(
    assets: Decimal, liabilities: Decimal, price: Decimal, target: Decimal
) -> Decimal | None:
    """How much of an asset at ``price`` to deposit so that (A + c p) / L = target: c = (T L - A) / p.

    None when nothing is needed (no debt, level >= target) or the price is not positive.
    """
    if liabilities <= 0 or assets >= target * liabilities or price <= 0:
        return None
    return (target * liabilities - assets) / price


@_exact
def interest_per_hour(
    positions: Mapping[str, Position],
    prices: Mapping[str, Decimal],
    hourly_rates: Mapping[str, Decimal],
    fixed: Container[str] = (),
) -> Decimal:
    """Liability value added per hour: sum of borrowed x hourly rate x price (simple interest on
    principal; assets without a rate accrue nothing)."""
    growth = ZERO
    for asset, rate in hourly_rates.items():
        p = positions.get(asset)
        if p is None or not p.borrowed or rate <= 0:
            continue
        if asset in fixed:
            growth += p.borrowed * rate
            continue
        price = prices.get(asset)
        if price is None:
            raise MissingPrice(asset)
        growth += p.borrowed * rate * price
    return growth


@_exact
def hours_to_bar(assets: Decimal, liabilities: Decimal, growth: Decimal, bar: Decimal) -> Decimal | None:
    """Hours of interest accrual (``growth`` of liability value per hour, prices standing) until
    A / L reaches ``bar``: (A / T - L) / growth. None if nothing accrues or the level is already
    below the bar."""
    if growth <= 0:
        return None
    hours = (assets / bar - liabilities) / growth
    return hours if hours >= 0 else None


@_exact
def isolated_totals(base: Position, quote: Position, price: Decimal) -> Totals:
    """An isolated pair valued in its quote asset at pair price ``price`` (the base is the mover)."""
    return Totals(quote.held, quote.owed, base.held * price, base.owed * price)


@_exact
def isolated_level(base: Position, quote: Position, price: Decimal) -> Decimal | None:
    """(base held x P + quote held) / (base owed x P + quote owed); None for no debt."""
    return isolated_totals(base, quote, price).level()


@_exact
def isolated_liquidation_price(base: Position, quote: Position, bar: Decimal) -> Decimal | None:
    """P_liq = (T x quote owed - quote held) / (base held - T x base owed); None where no price does."""
    return liquidation_price(quote.held, quote.owed, base.held, base.owed, bar)


@_exact
def isolated_distance(base: Position, quote: Position, price: Decimal, bar: Decimal) -> Decimal | None:
    """The relative move of the pair price from ``price`` that brings the pair's level to ``bar``."""
    if not (base.owed or quote.owed):
        return None
    return relative_move(price, isolated_liquidation_price(base, quote, bar))
