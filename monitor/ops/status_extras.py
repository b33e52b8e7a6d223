"""What ``status --json`` adds per unit beyond the report: ``positions`` and the ``stress`` table.

``positions`` (asset → free, locked, borrowed, interest as strings, the exact ``price`` in the
unit's quote, null while unpriced, and ``fixed``: true for quote-like assets, which count at 1) is
what ``margin-monitor replay`` reads from a running daemon.
``stress`` is :func:`monitor.risk.stress.stress_table`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from monitor.risk.book import AccountBook
from monitor.risk.holdings import Holdings
from monitor.risk.stress import Beta, stress_table

__all__ = ["btc_price", "enrich", "positions_json"]


def positions_json(h: Holdings) -> dict[str, dict[str, Any]]:
    """The unit's balances and prices, exact, as strings."""
    out: dict[str, dict[str, Any]] = {}
    for asset, p in sorted(h.positions.items()):
        price = "1" if asset in h.fixed else (str(h.prices[asset]) if asset in h.prices else None)
        out[asset] = {
            "free": str(p.free),
            "locked": str(p.locked),
            "borrowed": str(p.borrowed),
            "interest": str(p.interest),
            "price": price,
            "fixed": asset in h.fixed,
        }
    return out


def btc_price(book: AccountBook, h: Holdings, bridge: str = "BTC") -> Decimal | None:
    """BTC's exact price in the unit's quote; None when the unit is valued in another quote (an
    isolated pair such as ETHBTC) or BTC has no price."""
    if h.quote != book.quote:
        return None
    if bridge in h.prices:
        return h.prices[bridge]
    return book.exact_asset_price(bridge)


def enrich(book: AccountBook, unit: str, data: dict[str, Any], betas: Mapping[str, Beta]) -> dict[str, Any]:
    """Add ``positions`` and ``stress`` to one unit's status dict (returned, changed in place)."""
    h = book.holdings(unit)
    data["positions"] = positions_json(h)
    data["stress"] = stress_table(h, betas, btc_price(book, h))
    return data
