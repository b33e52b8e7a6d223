"""Margin level, status and number formatting, following Binance's definitions.

- Cross margin level = Σ(free + locked)·p / Σ(borrowed + interest)·p over the account's assets.
- Isolated pair level = (base held·P + quote held) / (base debt·P + quote debt).
- With no debt the level is infinite; the simulator reports it as ``"999.00000000"``
  (:data:`NO_DEBT_LEVEL`; Binance does not document its value).
- ``marginLevelStatus`` (our reading of Binance's five values, the same for cross and isolated):
  ``EXCESSIVE`` above the initial bar (``normalBar``), ``NORMAL`` above the margin-call bar,
  ``MARGIN_CALL`` above liquidation + 0.02 (the pre-liquidation gap of Binance's older isolated
  FAQ), ``PRE_LIQUIDATION`` above the liquidation bar, ``FORCE_LIQUIDATION`` at or below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from monitor.sim.scenario import ScenarioBars

NO_DEBT_LEVEL = Decimal(999)
PRE_LIQUIDATION_GAP = Decimal("0.02")
_QUANTUM = Decimal("0.00000001")


def fmt(value: Decimal) -> str:
    """A decimal as Binance writes it: a string with 8 decimals."""
    return f"{value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN):f}"


def q8(value: Decimal) -> Decimal:
    """Round to Binance's 8 decimals."""
    return value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def q8_down(value: Decimal) -> Decimal:
    """Round down to Binance's 8 decimals (a quantity one can afford)."""
    return value.quantize(_QUANTUM, rounding=ROUND_DOWN)


@dataclass(slots=True)
class Holding:
    """One asset of an account or pair (mutable simulator state)."""

    asset: str
    free: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)
    borrowed: Decimal = Decimal(0)
    interest: Decimal = Decimal(0)

    @property
    def held(self) -> Decimal:
        """free + locked (``totalAsset``)."""
        return self.free + self.locked

    @property
    def debt(self) -> Decimal:
        """borrowed + interest."""
        return self.borrowed + self.interest

    @property
    def net(self) -> Decimal:
        """``netAsset`` = free + locked − borrowed − interest."""
        return self.held - self.debt


@dataclass(frozen=True, slots=True)
class Level:
    """Asset and liability values of a unit in one quote, and the resulting margin level."""

    assets: Decimal
    liabilities: Decimal

    @property
    def margin_level(self) -> Decimal | None:
        """assets / liabilities, None when there is no debt."""
        return self.assets / self.liabilities if self.liabilities > 0 else None

    @property
    def reported(self) -> Decimal:
        """The level as the REST API reports it (:data:`NO_DEBT_LEVEL` for no debt)."""
        level = self.margin_level
        return NO_DEBT_LEVEL if level is None else level


def status(level: Decimal | None, bars: ScenarioBars) -> str:
    """Binance's ``marginLevelStatus`` for a level under ``bars`` (see the module docstring)."""
    if level is None or level > bars.normal:
        return "EXCESSIVE"
    if level > bars.margin_call:
        return "NORMAL"
    if level > min(bars.liquidation + PRE_LIQUIDATION_GAP, bars.margin_call):
        return "MARGIN_CALL"
    if level > bars.liquidation:
        return "PRE_LIQUIDATION"
    return "FORCE_LIQUIDATION"


def pair_level(base: Holding, quote: Holding, price: Decimal) -> Level:
    """The isolated pair's values in its quote asset at pair price ``price``."""
    return Level(base.held * price + quote.held, base.debt * price + quote.debt)


def liquidation_price(base: Holding, quote: Holding, bar: Decimal) -> Decimal | None:
    """The pair price at which the level meets ``bar``, None where no such positive price exists."""
    denominator = base.held - bar * base.debt
    if denominator == 0:
        return None
    price = (bar * quote.debt - quote.held) / denominator
    return price if price > 0 else None
