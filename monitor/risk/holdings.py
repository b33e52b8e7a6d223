"""A frozen copy of one risk unit's balances and exact prices, for the what-if tools.

``monitor.risk.stress`` (moves of every asset) and ``monitor.replay.engine`` (a past price path) recompute a
unit's level from these without touching the live book. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from monitor.risk.margin import Bars, Position


@dataclass(frozen=True, slots=True)
class Holdings:
    """One unit now. ``prices`` holds the exact price (in ``quote``) of every *moving* asset; the
    assets in ``fixed`` count at 1 (the quote and listed stablecoins). ``scale`` maps the classic
    level onto the exchange's (Cross Margin Pro; 1 otherwise). ``unpriced`` lists assets with a
    balance and no price: while it is not empty no what-if is computed."""

    unit: str
    quote: str
    positions: dict[str, Position]
    prices: dict[str, Decimal]
    fixed: frozenset[str]
    bars: Bars
    scale: Decimal = Decimal(1)
    unpriced: tuple[str, ...] = ()
