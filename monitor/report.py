"""The plain data a risk unit (a cross account or one isolated pair) is reported as.

Produced by the account book (``monitor.book``), consumed by the alert policy, the messages,
``status --json`` and ``/metrics``. Pure data: no behaviour beyond (de)serialisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

UnitKind = Literal["cross", "isolated"]


def unit_id(account: str, symbol: str | None = None) -> str:
    """The stable id of a risk unit: ``cross:<account>`` or ``isolated:<account>:<SYMBOL>``."""
    return f"isolated:{account}:{symbol}" if symbol else f"cross:{account}"


@dataclass(frozen=True, slots=True)
class UnitReport:
    """Everything a trader needs to act on one risk unit, valued in ``quote``.

    ``margin_level`` is None when the unit has no debt (infinite level). Distances are signed
    fractions (-0.041 = a 4.1 % drop of every non-quote asset); None where no uniform move reaches
    the bar. ``liquidation_prices`` maps an asset to the price (in ``quote``; for an isolated pair,
    in the pair's quote asset) at which, all else held, the level meets the liquidation bar.
    ``repay`` maps a liability asset to the amount that, repaid with new funds, lifts the level to
    ``restore_target``; ``add_collateral`` maps an asset to the amount to deposit for the same.
    ``hours_to_bars`` maps a bar name to the hours of interest accrual (prices standing) until
    the level reaches it; None where interest never gets it there.
    ``unpriced_assets`` lists the assets with a balance and no price yet: while it is not empty the
    level, distances and restore amounts are unknown (None / empty), never "safe", and the totals
    cover the priced assets only.
    """

    unit: str
    account: str
    kind: UnitKind
    symbol: str | None
    quote: str
    margin_level: float | None
    bars: dict[str, float]
    liquidation_bar: str
    distances: dict[str, float | None]
    liquidation_prices: dict[str, float | None]
    total_asset_value: float
    total_liability_value: float
    restore_target: float
    repay: dict[str, float] = field(default_factory=dict)
    add_collateral: dict[str, float] = field(default_factory=dict)
    hours_to_bars: dict[str, float | None] = field(default_factory=dict)
    approximate: bool = False
    exchange_margin_level: float | None = None
    unpriced_assets: list[str] = field(default_factory=list)
    settling: bool = False  # balances and liabilities disagree for now: alerts wait (monitor/ledger.py)

    @property
    def liquidation_distance(self) -> float | None:
        """The signed distance to the liquidation bar (None where no uniform move reaches it)."""
        return self.distances.get(self.liquidation_bar)

    def to_json(self) -> dict[str, Any]:
        """The ``status --json`` shape for this unit."""
        data = asdict(self)
        data["liquidation_distance"] = self.liquidation_distance
        return data
