"""The plain data a risk unit (a cross account or one isolated pair) is reported as.

Produced by the account book (``monitor.risk.book``), consumed by the alert policy, the messages,
``status --json`` and ``/metrics``. Pure data: no behaviour beyond (de)serialisation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

UnitKind = Literal["cross", "isolated"]

UnitState = Literal["known", "approximate", "blind", "no_debt"]
"""What a unit's numbers are worth; exactly one at any moment (``UnitReport.state``):

- ``known``: every held or owed asset priced live (a TRADING symbol route), the level is ours;
- ``approximate``: the level stands on Binance's own ``marginLevel`` (latest REST read), carried
  forward with the live prices we have: some asset has no live price route (a halted or delisted
  pair), or the account is a Cross Margin Pro (MARGIN_2) one whose formula is not published. The
  reason names which. Alerted with the unit's bars like a known level, and flagged in every message;
- ``blind``: no level can be trusted (stale feed, REST failing, no price yet, or an asset with no
  live price and no level from Binance to stand in); ``margin_level`` is None, alerts frozen, the
  trader told (BLIND) once it lasts past ``alerts.stale_after``;
- ``no_debt``: nothing is owed: infinitely safe whatever the prices (``margin_level`` is inf).
"""

UNIT_STATES: tuple[UnitState, ...] = ("known", "approximate", "blind", "no_debt")


def unit_id(account: str, symbol: str | None = None) -> str:
    """The stable id of a risk unit: ``cross:<account>`` or ``isolated:<account>:<SYMBOL>``."""
    return f"isolated:{account}:{symbol}" if symbol else f"cross:{account}"


@dataclass(frozen=True, slots=True)
class UnitReport:
    """Everything a trader needs to act on one risk unit, valued in ``quote``.

    ``state`` says what the numbers are worth (see :data:`UnitState`) and ``reason`` why, in one
    line (empty for ``known`` and ``no_debt``). ``margin_level`` is ``math.inf`` when the unit has
    no debt and None when no level can be computed (a ``blind`` unit with an unpriced asset; a unit
    blind on stale data keeps its last computed level, not to be acted on): the two never share a
    value. Distances are signed
    fractions (-0.041 = a 4.1 % drop of every non-quote asset); None where no uniform move reaches
    the bar. ``liquidation_prices`` maps an asset to the price (in ``quote``; for an isolated pair,
    in the pair's quote asset) at which, all else held, the level meets the liquidation bar.
    ``repay`` maps a liability asset to the amount that, repaid with new funds, lifts the level to
    ``restore_target``; ``add_collateral`` maps an asset to the amount to deposit for the same.
    ``hours_to_bars`` maps a bar name to the hours of interest accrual (prices standing) until
    the level reaches it; None where interest never gets it there.
    ``unpriced_assets`` lists the assets with a balance and no price: in a ``blind`` unit the level,
    distances and restore amounts are unknown (None / empty), never "safe", and the totals cover
    the priced assets only; in an ``approximate`` one they are valued at what Binance's level
    implies (``implied_value`` / ``implied_liability``, in ``quote``).

    ``to_json`` (``status --json``) writes ``margin_level`` as a number, or null when there is no
    finite level: then ``state`` says ``no_debt`` or ``blind``.
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
    settling: bool = False  # balances and liabilities disagree for now: alerts wait (monitor/risk/ledger.py)
    state: UnitState = "known"
    reason: str = ""
    implied_value: float = 0.0
    implied_liability: float = 0.0

    @property
    def liquidation_distance(self) -> float | None:
        """The signed distance to the liquidation bar (None where no uniform move reaches it)."""
        return self.distances.get(self.liquidation_bar)

    def to_json(self) -> dict[str, Any]:
        """The ``status --json`` shape for this unit."""
        data = asdict(self)
        level = self.margin_level
        data["margin_level"] = level if level is not None and math.isfinite(level) else None
        data["liquidation_distance"] = self.liquidation_distance
        return data
