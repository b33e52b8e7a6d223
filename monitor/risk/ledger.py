"""One ledger, three views: when the balances and liabilities of a unit are known to agree.

Binance tells us about one account through three channels that arrive in any order and with any
delay: the user-data stream (balances: ``outboundAccountPosition`` absolute free/locked,
``balanceUpdate`` deltas), the Risk Data Stream (liabilities: ``USER_LIABILITY_CHANGE`` with the
principal ``p`` and interest ``i`` of the change) and REST snapshots (everything, atomically, but
maybe a little behind or ahead of the streams). A unit whose views disagree is *settling*: the
book still shows the level computed from what arrived, but the alert policy must not move until
the views agree again, because the level may come from a half-applied transaction.

What "agree" means here (pure bookkeeping; the caller applies the changes to the book):

- Per asset, the ledger sums the unexplained change of ``held`` (free + locked) that the user
  stream reported (``seen``) and the change of ``held`` that liability events imply (``expect``):
  a BORROW of ``p`` puts ``+p`` on free, a REPAY of ``p`` principal and ``i`` interest takes
  ``p + i`` off it. The views agree when ``seen == expect`` for every asset: a borrow or a repay
  whose balance and liability events both arrived, in either order. A change with ``held``
  unchanged (an order moving free to locked) needs nothing. INTEREST is complete on its own (no
  balance moves).
- A trade (two balances, no liability), a transfer in or out (one balance, no liability), an
  exchange liquidation (every balance, several repays) or a liability of an unknown type cannot
  be told complete from the streams alone: another event might still follow. For those the REST
  re-read decides.
- A REST snapshot agrees when every ``held`` the user stream reported since the last agreement
  equals REST's (REST is atomic: if it shows the streamed balances it shows their liabilities
  too). A REST answer that is behind (or ahead of) the stream is not put into the book; the unit
  stays settling and is re-read again shortly. With nothing streamed to compare, REST is taken as
  it is: any REST snapshot is one consistent state of the account.
- A stream value REST never comes to show (an event lost without a reconnect, a ``balanceUpdate``
  never followed by its ``outboundAccountPosition``) would keep a unit settling for ever: when REST
  has answered the same balances for :data:`REST_WINS_AFTER` seconds, longer than any view is late,
  REST is taken (and the caller logs it).

Worked example (the repay of issue #10)::

    >>> from decimal import Decimal as D
    >>> ledger = Ledger()
    >>> ledger.balance("cross:main", "USDT", D("10000"), D("0"), now=5.0)   # free 10,000 -> 0
    True
    >>> ledger.since("cross:main")                                          # settling since 5.0
    5.0
    >>> ledger.liability("cross:main", "USDT", "REPAY", D("10000"), D("0"), now=5.2)
    False
    >>> ledger.since("cross:main") is None                                  # agreed: repay complete
    True

A transfer in is settled only by REST::

    >>> ledger.balance("cross:main", "USDT", D("0"), D("500"), now=6.0)
    True
    >>> ledger.rest_verdict("cross:main", {"USDT": D("0")})                 # REST still behind
    'disagrees'
    >>> ledger.rest_verdict("cross:main", {"USDT": D("500")})
    'agrees'
    >>> ledger.accept_rest("cross:main"); ledger.since("cross:main") is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

ZERO = Decimal(0)
SETTLE_BOUND = 2.0
"""Seconds within which the three views of a unit are expected to agree on Binance (the property
test draws channel delays of 0-2 s): a crossing is alerted at most this plus 1 s after it happened.
Past ``alerts.stale_after`` of disagreement the unit is blind ("balances unconfirmed")."""

REST_WINS_AFTER = SETTLE_BOUND + 1.0
"""Seconds of REST answering the same balances, against the stream, after which REST is taken."""


def held_change(kind: str, principal: Decimal, interest: Decimal) -> Decimal | None:
    """The change of the asset's free balance that a liability event implies (None: unknown type).

    >>> held_change("BORROW", Decimal("100"), Decimal("0.01"))   # borrowed amount lands on free
    Decimal('100')
    >>> held_change("REPAY", Decimal("99"), Decimal("1"))        # principal and interest leave free
    Decimal('-100')
    >>> held_change("INTEREST", Decimal("0"), Decimal("0.5"))
    Decimal('0')
    """
    if kind == "BORROW":
        return abs(principal)
    if kind == "REPAY":
        return -(abs(principal) + abs(interest))
    if kind == "INTEREST":
        return ZERO
    return None


@dataclass(slots=True)
class Pending:
    """The unexplained changes of one unit since ``since``."""

    since: float
    seen: dict[str, Decimal] = field(default_factory=dict)
    expect: dict[str, Decimal] = field(default_factory=dict)
    unknown: bool = False

    def agrees(self) -> bool:
        if self.unknown:
            return False
        assets = self.seen.keys() | self.expect.keys()
        return all(self.seen.get(a, ZERO) == self.expect.get(a, ZERO) for a in assets)


class Ledger:
    """Per unit: the balances the user stream reported and the changes not yet explained."""

    def __init__(self) -> None:
        self._streamed: dict[str, dict[str, Decimal]] = {}
        self._pending: dict[str, Pending] = {}
        self._rest_held: dict[str, tuple[tuple[tuple[str, Decimal], ...], float]] = {}

    def since(self, unit: str) -> float | None:
        """When ``unit`` started settling (None: its views agree)."""
        pending = self._pending.get(unit)
        return None if pending is None else pending.since

    def settling(self) -> dict[str, float]:
        """Every settling unit and since when."""
        return {unit: p.since for unit, p in self._pending.items()}

    def balance(self, unit: str, asset: str, before: Decimal, after: Decimal, *, now: float) -> bool:
        """The user stream moved ``held`` of ``asset`` from ``before`` to ``after``; True if settling."""
        self._streamed.setdefault(unit, {})[asset] = after
        if after != before:
            pending = self._open(unit, now)
            pending.seen[asset] = pending.seen.get(asset, ZERO) + (after - before)
        return self._check(unit)

    def liability(
        self, unit: str, asset: str, kind: str, principal: Decimal, interest: Decimal, *, now: float
    ) -> bool:
        """A liability event (``kind`` BORROW / REPAY / INTEREST / other); True if settling."""
        change = held_change(kind, principal, interest)
        if change is None:
            self._open(unit, now).unknown = True
        elif change:
            pending = self._open(unit, now)
            pending.expect[asset] = pending.expect.get(asset, ZERO) + change
        return self._check(unit)

    def unplaceable(self, unit: str, *, now: float) -> None:
        """A change that could not be applied to the book (out of order): only REST can settle it."""
        self._open(unit, now).unknown = True

    def rest_verdict(
        self, unit: str, held: Mapping[str, Decimal], *, now: float = 0.0
    ) -> Literal["agrees", "disagrees", "stands"]:
        """Whether a REST snapshot (``held`` per asset) shows every balance the stream reported, or
        has stood against it, unchanged, for :data:`REST_WINS_AFTER` seconds (see above).

        >>> ledger = Ledger()
        >>> ledger.balance("u", "USDT", Decimal(0), Decimal(5), now=0.0)
        True
        >>> [ledger.rest_verdict("u", {"USDT": Decimal(0)}, now=t) for t in (0.2, 1.0, 3.3)]
        ['disagrees', 'disagrees', 'stands']
        """
        streamed = self._streamed.get(unit, {})
        if all(held.get(asset, ZERO) == value for asset, value in streamed.items()):
            self._rest_held.pop(unit, None)
            return "agrees"
        shown = tuple(sorted((asset, held.get(asset, ZERO)) for asset in streamed))
        last = self._rest_held.get(unit)
        if last is None or last[0] != shown:
            self._rest_held[unit] = (shown, now)
            return "disagrees"
        return "stands" if now - last[1] >= REST_WINS_AFTER else "disagrees"

    def disagree(self, unit: str, *, now: float) -> None:
        """REST and the stream disagree: the unit is settling (from ``now`` if it was not)."""
        self._open(unit, now)

    def accept_rest(self, unit: str) -> None:
        """A REST snapshot that agrees went into the book: everything before it is explained."""
        self._pending.pop(unit, None)
        self._streamed.pop(unit, None)
        self._rest_held.pop(unit, None)

    def forget(self, unit: str) -> None:
        """After a reconnect (events may have been missed) or when the unit goes: REST decides."""
        self._streamed.pop(unit, None)

    def drop(self, unit: str) -> None:
        """The unit is no longer watched."""
        self.accept_rest(unit)

    def _open(self, unit: str, now: float) -> Pending:
        pending = self._pending.get(unit)
        if pending is None:
            pending = self._pending[unit] = Pending(now)
        return pending

    def _check(self, unit: str) -> bool:
        pending = self._pending.get(unit)
        if pending is None:
            return False
        if pending.agrees():
            del self._pending[unit]
            return False
        return True
