"""One account's user-data and risk events, applied to the book through the ledger.

A balance (``outboundAccountPosition`` / ``balanceUpdate``) or liability (``USER_LIABILITY_CHANGE``)
event becomes the unit's new position; the unit settles when its balance and liability views
agree (``monitor/risk/ledger.py``), else a REST re-read decides (``reread``). An event that cannot
be placed (an asset the book has no row for, a delta out of order, an unknown liability type)
asks REST too. Binance's own margin status goes to ``word``; a fatal stream state to ``on_fatal``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import structlog

from monitor.exchange.events import (
    BalanceDelta,
    BalanceUpdate,
    ExchangeEvent,
    LiabilityChange,
    MarginStatus,
    StreamState,
)
from monitor.risk.book import AccountBook
from monitor.risk.margin import Position
from monitor.risk.report import unit_id
from monitor.watch.settling import Settling
from monitor.watch.snapshots import ExchangeWordHook

log = structlog.get_logger(__name__)
_SIGN = {"BORROW": 1, "INTEREST": 1, "REPAY": -1}  # how a liability change moves what is owed


class AccountEvents:
    """Applies account ``name``'s stream events to the units it has (``units()``, from REST)."""

    def __init__(
        self,
        name: str,
        book: AccountBook,
        settling: Settling,
        units: Callable[[], set[str]],
        clock: Callable[[], float],
        *,
        reread: Callable[[], None],
        word: ExchangeWordHook,
        on_state: Callable[[StreamState], None],
        on_fatal: Callable[[str], None],
    ) -> None:
        self.name = name
        self.book = book
        self.settling = settling
        self.units = units
        self.clock = clock
        self.reread = reread
        self.word = word
        self.on_state = on_state
        self.on_fatal = on_fatal

    def on_event(self, event: ExchangeEvent) -> None:
        """Apply a user-data or risk event through the ledger (see the module docstring)."""
        if isinstance(event, StreamState):
            self.on_state(event)
            if event.fatal:
                self.on_fatal(event.reason)
            return
        if isinstance(event, BalanceUpdate | BalanceDelta):
            self._on_balance(event)
        elif isinstance(event, LiabilityChange):
            log.info("liability_changed", account=self.name, asset=event.asset, type=event.update_type)
            self._on_liability(event)
        elif isinstance(event, MarginStatus):
            log.info("exchange_margin_status", account=self.name, level=str(event.level), status=event.status)
            self.word(unit_id(self.name), event.status, event.level, "risk")

    def _on_balance(self, event: BalanceUpdate | BalanceDelta) -> None:
        uid = unit_id(self.name, event.unit_scope)
        if not self._known(uid):
            return
        now = self.clock()
        ledger = self.settling.ledger
        current = self.book.position(uid, event.asset)
        if current is None:  # an asset the book has no row for: REST brings it with its price route
            after = event.free + event.locked if isinstance(event, BalanceUpdate) else event.delta
            ledger.balance(uid, event.asset, Decimal(0), after, now=now)
            ledger.unplaceable(uid, now=now)
            self._apply(uid, event.asset, None)
            return
        if isinstance(event, BalanceUpdate):
            new = Position(event.free, event.locked, current.borrowed, current.interest)
        elif current.free + event.delta >= 0:
            new = Position(current.free + event.delta, current.locked, current.borrowed, current.interest)
        else:  # a delta we cannot place (events out of order): the REST view decides
            ledger.unplaceable(uid, now=now)
            self._apply(uid, event.asset, None)
            return
        ledger.balance(uid, event.asset, current.held, new.held, now=now)
        self._apply(uid, event.asset, new)

    def _on_liability(self, event: LiabilityChange) -> None:
        """A borrow, repay or interest posting of the cross account (amounts of this change)."""
        uid = unit_id(self.name)
        if not self._known(uid):
            return
        now = self.clock()
        ledger = self.settling.ledger
        current = self.book.position(uid, event.asset)
        p, i = abs(event.principal), abs(event.interest)
        sign = _SIGN.get(event.update_type)
        borrowed = current.borrowed + sign * p if current is not None and sign is not None else None
        interest = current.interest + sign * i if current is not None and sign is not None else None
        if current is None or borrowed is None or interest is None or borrowed < 0 or interest < 0:
            ledger.liability(uid, event.asset, event.update_type or "?", p, i, now=now)
            ledger.unplaceable(uid, now=now)
            self._apply(uid, event.asset, None)
            return
        ledger.liability(uid, event.asset, event.update_type, p, i, now=now)
        self._apply(uid, event.asset, Position(current.free, current.locked, borrowed, interest))

    def reconnected(self) -> None:
        """After a stream (re)subscribes, events may have been missed: reconcile by REST, which
        then decides alone (what the streams said before may be incomplete)."""
        for uid in self.units():
            self.settling.ledger.forget(uid)
        self.reread()

    def _known(self, uid: str) -> bool:
        """Whether ``uid`` is a unit REST reported; if not (a pair opened since), REST is asked."""
        if uid in self.units():
            return True
        self.reread()
        return False

    def _apply(self, uid: str, asset: str, position: Position | None) -> None:
        if self.settling.apply(uid, asset, position):
            self.reread()  # the streams alone cannot settle it (or not yet): ask REST
