"""Latest prices per symbol, and how each asset's price in the quote asset is made from them.

An asset is valued in the book's quote asset (USDT by default):

- the quote itself and the user's stablecoins are fixed at 1 (they do not move);
- otherwise through the symbol ASSET+QUOTE when the exchange lists it;
- otherwise through the bridge: ASSET+BTC x BTC+QUOTE;
- otherwise it cannot be priced (the unit holding it reports it as unpriced).

Before a catalog is set (``set_catalog``), every ASSET+QUOTE symbol is assumed to exist. Inverted
pairs (QUOTE+ASSET) are not used. Prices are floats as they arrive; ``exact`` turns them back into
the decimals the exchange sent (shortest repr) for the exact ``Decimal`` maths.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["NAN", "PriceBook", "Route", "Router", "exact_price"]

NAN = math.nan
ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Route:
    """How one asset's price is made: the product of the prices of ``symbols`` (empty: fixed at 1)."""

    asset: str
    symbols: tuple[str, ...]

    @property
    def fixed(self) -> bool:
        """The asset counts as the quote at 1 (quote asset or a listed stablecoin)."""
        return not self.symbols


class Router:
    """Chooses each asset's route from the exchange's symbol catalog."""

    def __init__(self, quote: str = "USDT", stablecoins: Iterable[str] = (), bridge: str = "BTC") -> None:
        self.quote = quote.upper()
        self.stablecoins = frozenset(s.upper() for s in stablecoins) | {self.quote}
        self.bridge = bridge.upper()
        self._pairs: dict[tuple[str, str], str] | None = None

    def set_catalog(self, symbols: Mapping[str, tuple[str, str]] | None) -> None:
        """symbol -> (base, quote) from exchangeInfo; None: assume ASSET+QUOTE always exists."""
        if symbols is None:
            self._pairs = None
            return
        self._pairs = {
            (base.upper(), quote.upper()): symbol.upper() for symbol, (base, quote) in symbols.items()
        }

    def _symbol(self, base: str, quote: str) -> str | None:
        if self._pairs is None:
            return base + quote
        return self._pairs.get((base, quote))

    def route(self, asset: str) -> Route | None:
        """The asset's route to the quote, or None when no listed symbol prices it."""
        asset = asset.upper()
        if asset in self.stablecoins:
            return Route(asset, ())
        direct = self._symbol(asset, self.quote)
        if direct is not None:
            return Route(asset, (direct,))
        if asset != self.bridge and self.quote != self.bridge:
            leg, bridge = self._symbol(asset, self.bridge), self._symbol(self.bridge, self.quote)
            if leg is not None and bridge is not None:
                return Route(asset, (leg, bridge))
        return None


def exact_price(price: float) -> Decimal:
    """The decimal a float price was parsed from (its shortest round-tripping repr)."""
    return Decimal(repr(price))


class PriceBook:
    """The latest price and its arrival time per symbol. ``prices`` is read directly on the hot path."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.prices: dict[str, float] = {}
        self.stamps: dict[str, float] = {}
        self.clock = clock

    def update(self, symbol: str, price: float) -> None:
        """Record a price for ``symbol`` now."""
        self.prices[symbol] = price
        self.stamps[symbol] = self.clock()

    def get(self, symbol: str) -> float | None:
        """The latest price of ``symbol`` (None before the first)."""
        return self.prices.get(symbol)

    def age(self, symbol: str) -> float | None:
        """Seconds since ``symbol`` last updated (None before the first price)."""
        stamp = self.stamps.get(symbol)
        return None if stamp is None else self.clock() - stamp

    def value(self, symbols: tuple[str, ...]) -> float:
        """The float price of a route's symbols (NaN while any is missing; 1 for a fixed route)."""
        price = 1.0
        for symbol in symbols:
            price *= self.prices.get(symbol, NAN)
        return price

    def exact(self, symbols: tuple[str, ...]) -> Decimal | None:
        """The exact ``Decimal`` price of a route's symbols (None while any is missing)."""
        price = ONE
        for symbol in symbols:
            p = self.prices.get(symbol)
            if p is None:
                return None
            price *= exact_price(p)
        return price
