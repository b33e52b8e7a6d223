"""Latest prices per symbol, and how each asset's price in the quote asset is made from them.

An asset is valued in the book's quote asset (USDT by default), through the first *live* route of:

1. pinned: the quote itself, and the assets configured in ``exchange.pinned``, count at exactly 1;
2. direct: the symbol ASSET+QUOTE (price p);
3. inverse: the symbol QUOTE+ASSET (price 1/p), e.g. USDTBRL for BRL;
4. bridged: ASSET→B then B→QUOTE, each leg direct or inverse, for B in BTC, ETH, BNB and then the
   stablecoins (``Router.bridges``), e.g. XYZBTC x BTCUSDT;
5. none: the asset cannot be priced live (the unit holding it is *approximate* or *blind*, see
   ``monitor.risk.book``).

A symbol is live only while exchangeInfo lists it with ``status: TRADING``: a halted (``BREAK``,
``HALT``) or delisted pair streams no price, so a route through it would leave the unit waiting
forever. Stablecoins (USDC, FDUSD, ...) are priced at market like any other asset (USDCUSDT);
pinning one at 1 is a deliberate configuration choice.

A route's legs are *leg names*: a symbol, or ``1/`` + symbol for an inverse leg (price 1/p).
Before a catalog is set (``set_catalog``), every ASSET+QUOTE symbol is assumed to exist. Prices are
floats as they arrive; ``exact`` turns them back into the decimals the exchange sent (shortest repr)
for the exact ``Decimal`` maths (an inverse leg is 1 / that decimal, to 60 digits).

>>> r = Router("USDT", pinned=["DAI"])
>>> r.set_catalog({"BTCUSDT": ("BTC", "USDT", "TRADING"), "USDTBRL": ("USDT", "BRL", "TRADING"),
...                "XYZBTC": ("XYZ", "BTC", "TRADING"), "OLDUSDT": ("OLD", "USDT", "BREAK"),
...                "USDCUSDT": ("USDC", "USDT", "TRADING")})
>>> [r.route(a).legs if r.route(a) else None for a in ("DAI", "USDC", "BRL", "XYZ", "OLD")]
[(), ('USDCUSDT',), ('1/USDTBRL',), ('XYZBTC', 'BTCUSDT'), None]
>>> r.status("OLDUSDT")
'BREAK'
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal

__all__ = [
    "INVERSE",
    "NAN",
    "PriceBook",
    "Route",
    "Router",
    "exact_price",
    "leg_symbol",
    "symbols_of",
]

NAN = math.nan
ONE = Decimal(1)
INVERSE = "1/"
DEFAULT_BRIDGES = ("BTC", "ETH", "BNB")
KNOWN_STABLECOINS = ("USDT", "USDC", "FDUSD", "TUSD", "BUSD", "DAI", "USDP")
_EXACT = Context(prec=60)
Listing = Sequence[str]  # (base, quote) or (base, quote, status)


def leg_symbol(leg: str) -> str:
    """The exchange symbol a leg name reads (``1/USDTBRL`` -> ``USDTBRL``)."""
    return leg[len(INVERSE) :] if leg.startswith(INVERSE) else leg


def symbols_of(legs: Iterable[str]) -> set[str]:
    """The exchange symbols behind some leg names."""
    return {leg_symbol(leg) for leg in legs}


@dataclass(frozen=True, slots=True)
class Route:
    """How one asset's price is made: the product of its legs' prices (empty: pinned at 1)."""

    asset: str
    symbols: tuple[str, ...]

    @property
    def legs(self) -> tuple[str, ...]:
        """The leg names (a symbol, or ``1/`` + symbol for an inverse leg)."""
        return self.symbols

    @property
    def fixed(self) -> bool:
        """The asset counts as the quote at 1 (the quote asset or a pinned asset)."""
        return not self.symbols


class Router:
    """Chooses each asset's route from the exchange's symbol catalog (see the module docstring).

    ``stablecoins`` are the assets tried as bridges after BTC, ETH and BNB (they are priced at
    market, never pinned); ``pinned`` are fixed at 1 on purpose.
    """

    def __init__(
        self,
        quote: str = "USDT",
        stablecoins: Iterable[str] = KNOWN_STABLECOINS,
        bridge: str = "BTC",
        *,
        pinned: Iterable[str] = (),
    ) -> None:
        self.quote = quote.upper()
        self.pinned = frozenset(s.upper() for s in pinned) | {self.quote}
        bridges = [bridge.upper(), *DEFAULT_BRIDGES, *(s.upper() for s in stablecoins)]
        self.bridges: tuple[str, ...] = tuple(dict.fromkeys(bridges))
        self._pairs: dict[tuple[str, str], str] | None = None
        self._status: dict[str, str] = {}
        self._assets: dict[str, tuple[str, str]] = {}

    def set_catalog(self, symbols: Mapping[str, Listing] | None) -> None:
        """symbol -> (base, quote[, status]) from exchangeInfo (status absent: TRADING); None: assume
        ASSET+QUOTE always exists. Only TRADING symbols make routes."""
        if symbols is None:
            self._pairs, self._status, self._assets = None, {}, {}
            return
        pairs: dict[tuple[str, str], str] = {}
        status: dict[str, str] = {}
        assets: dict[str, tuple[str, str]] = {}
        for symbol, listing in symbols.items():
            name = symbol.upper()
            base, quote = listing[0].upper(), listing[1].upper()
            status[name] = listing[2].upper() if len(listing) > 2 else "TRADING"
            assets[name] = (base, quote)
            if status[name] == "TRADING":
                pairs[(base, quote)] = name
        self._pairs, self._status, self._assets = pairs, status, assets

    def status(self, symbol: str) -> str | None:
        """The catalog's status of ``symbol`` (None: not listed, or no catalog)."""
        return self._status.get(symbol.upper())

    def live(self, symbol: str) -> bool:
        """``symbol`` streams prices: TRADING in the catalog (always, before a catalog is set)."""
        return self._pairs is None or self._status.get(symbol.upper()) == "TRADING"

    def halted(self, asset: str) -> list[str]:
        """The listed but not trading symbols of ``asset`` (for the reason a trader reads)."""
        asset = asset.upper()
        return sorted(
            f"{symbol} {status}"
            for symbol, status in self._status.items()
            if status != "TRADING" and asset in self._assets[symbol]
        )

    def _symbol(self, base: str, quote: str) -> str | None:
        if self._pairs is None:
            return base + quote
        return self._pairs.get((base, quote))

    def _leg(self, base: str, quote: str) -> str | None:
        """A live leg pricing one ``base`` in ``quote``: BASEQUOTE, or 1/QUOTEBASE."""
        direct = self._symbol(base, quote)
        if direct is not None:
            return direct
        if self._pairs is None:
            return None
        inverse = self._pairs.get((quote, base))
        return None if inverse is None else INVERSE + inverse

    def route(self, asset: str) -> Route | None:
        """The asset's first live route to the quote, or None when no live symbol prices it."""
        asset = asset.upper()
        if asset in self.pinned:
            return Route(asset, ())
        leg = self._leg(asset, self.quote)
        if leg is not None:
            return Route(asset, (leg,))
        for bridge in self.bridges:
            if bridge in (asset, self.quote):
                continue
            first, second = self._leg(asset, bridge), self._leg(bridge, self.quote)
            if first is not None and second is not None:
                return Route(asset, (first, second))
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

    def age(self, symbol: str) -> float | None:
        """Seconds since ``symbol`` last updated (None before the first price)."""
        stamp = self.stamps.get(symbol)
        return None if stamp is None else self.clock() - stamp

    def exact(self, legs: Sequence[str]) -> Decimal | None:
        """The exact ``Decimal`` price of a route's legs (None while any is missing, or an inverse
        leg's symbol is at 0). An inverse leg is 1 / the exact decimal, to 60 significant digits."""
        price = ONE
        for leg in legs:
            inverse = leg.startswith(INVERSE)
            p = self.prices.get(leg[len(INVERSE) :] if inverse else leg)
            if p is None:
                return None
            d = exact_price(p)
            if inverse:
                if not d:
                    return None
                price = _EXACT.divide(price, d)
            else:
                price = _EXACT.multiply(price, d)
        return price
