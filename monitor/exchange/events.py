"""Typed events the exchange streams deliver to the daemon.

Quantities are ``Decimal`` (parsed at the boundary). ``unit_scope`` is the isolated pair symbol an
event belongs to, or None for the cross account.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class BalanceUpdate:
    """The new free and locked amounts of one asset (``outboundAccountPosition``)."""

    account: str
    unit_scope: str | None
    asset: str
    free: Decimal
    locked: Decimal
    event_time: int = 0


@dataclass(frozen=True, slots=True)
class BalanceDelta:
    """A change of an asset's free amount by a transfer in or out (``balanceUpdate``)."""

    account: str
    unit_scope: str | None
    asset: str
    delta: Decimal
    event_time: int = 0


@dataclass(frozen=True, slots=True)
class LiabilityChange:
    """A borrow, repay or interest change of one asset (Risk Data Stream ``USER_LIABILITY_CHANGE``).

    Whether ``principal``/``interest`` are totals or the amounts of this change is not documented by
    Binance: treat the event as a trigger to re-read the account by REST.
    """

    account: str
    asset: str
    principal: Decimal
    interest: Decimal
    update_type: str = ""
    event_time: int = 0


@dataclass(frozen=True, slots=True)
class MarginStatus:
    """Binance's own view of the cross margin level (``MARGIN_LEVEL_STATUS_CHANGE``)."""

    account: str
    level: Decimal
    status: str
    event_time: int = 0


@dataclass(frozen=True, slots=True)
class StreamState:
    """A connection went up or down; ``reason`` says why, in one line."""

    name: str
    up: bool
    reason: str
    fatal: bool = False


ExchangeEvent = BalanceUpdate | BalanceDelta | LiabilityChange | MarginStatus | StreamState
