"""The simulated exchange's books: prices and accounts, changed by ticks, events and interest.

Pure (no I/O): every change returns the user-data and risk events Binance would push for it, so
what REST reports afterwards is exactly the state those events describe.

Events pushed (payload shapes of Binance's spot user-data stream and margin Risk Data Stream):
- borrow: ``outboundAccountPosition`` and ``USER_LIABILITY_CHANGE`` t=BORROW (the first hour of
  interest is charged at borrow time, as Binance does);
- repay (interest first, then principal): ``outboundAccountPosition``, ``USER_LIABILITY_CHANGE``
  t=REPAY;
- deposit / transfer_in / transfer_out / withdraw: ``balanceUpdate`` and ``outboundAccountPosition``;
- liquidation: every asset sold at the current price to repay all debt, equity left in the quote
  asset: ``outboundAccountPosition`` and ``USER_LIABILITY_CHANGE`` t=REPAY per repaid asset;
- trade (``side`` buy/sell ``amount`` of ``asset`` against the quote, at ``price`` or the current
  price, no more than the free balance pays for): one ``outboundAccountPosition`` with both assets;
- interest (``amount`` posted on ``asset`` now): ``USER_LIABILITY_CHANGE`` t=INTEREST;
- hourly interest: ``USER_LIABILITY_CHANGE`` t=INTEREST;
- any change of the cross level's status: ``MARGIN_LEVEL_STATUS_CHANGE``.
``p`` and ``i`` of ``USER_LIABILITY_CHANGE`` are the amounts of this change (Binance does not say
whether they are totals). Risk events exist for cross accounts only, as on Binance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from monitor.sim.levels import Holding, Level, fmt, pair_level, q8, q8_down, status
from monitor.sim.scenario import Account, Event, Scenario, ScenarioPair

Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A user-data event for one account's cross account (scope None) or isolated pair (scope symbol)."""

    account: str
    scope: str | None
    payload: Payload


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """A Risk Data Stream event of one account's cross margin account."""

    account: str
    payload: Payload


Emission = UserEvent | RiskEvent


@dataclass(slots=True)
class PairState:
    """One isolated pair of an account."""

    spec: ScenarioPair
    base: Holding
    quote: Holding

    def holding(self, asset: str) -> Holding:
        """The pair's holding of ``asset`` (its base or quote)."""
        return self.base if asset == self.base.asset else self.quote


@dataclass(slots=True)
class AccountState:
    """One simulated user."""

    spec: Account
    cross: dict[str, Holding]
    pairs: dict[str, PairState]
    revoked: bool = False
    cross_status: str = "EXCESSIVE"
    updated_ms: int = 0

    @property
    def name(self) -> str:
        """The account's name in the scenario."""
        return self.spec.name


def _holding(b: Any) -> Holding:
    return Holding(b.asset, b.free, b.locked, b.borrowed, b.interest)


class ExchangeState:
    """Prices and accounts; methods return the events their changes emit."""

    def __init__(self, scenario: Scenario, now_ms: Callable[[], int]) -> None:
        self.scenario = scenario
        self.quote = scenario.quote
        self._now_ms = now_ms
        self.prices: dict[str, Decimal] = dict(scenario.prices)
        self.accounts: dict[str, AccountState] = {}
        for spec in scenario.accounts:
            acc = AccountState(
                spec,
                {b.asset: _holding(b) for b in spec.cross},
                {p.symbol: PairState(p, _holding(p.base), _holding(p.quote)) for p in spec.isolated},
            )
            acc.cross_status = status(self.cross_level(acc).margin_level, spec.effective_bars)
            self.accounts[spec.name] = acc
        self.by_key = {acc.spec.api_key: acc for acc in self.accounts.values()}

    # --- valuation -------------------------------------------------------------------------

    def price_of(self, asset: str) -> Decimal | None:
        """The price of ``asset`` in the scenario's quote asset (None if not simulated)."""
        if asset == self.quote:
            return Decimal(1)
        return self.prices.get(asset + self.quote)

    def value_in(self, amount: Decimal, asset: str, target: str) -> Decimal:
        """``amount`` of ``asset`` valued in ``target`` through the quote asset (0 if unpriced)."""
        if asset == target:
            return amount
        p_asset, p_target = self.price_of(asset), self.price_of(target)
        if p_asset is not None and p_target:
            return amount * p_asset / p_target
        direct = self.prices.get(asset + target)
        return amount * direct if direct is not None else Decimal(0)

    def cross_level(self, acc: AccountState) -> Level:
        """The cross account's asset and liability values in the quote asset."""
        assets = liabilities = Decimal(0)
        for h in acc.cross.values():
            price = self.price_of(h.asset) or Decimal(0)
            assets += h.held * price
            liabilities += h.debt * price
        return Level(assets, liabilities)

    def pair_level(self, pair: PairState) -> Level:
        """The isolated pair's values in its quote asset at the current pair price."""
        return pair_level(pair.base, pair.quote, self.prices[pair.spec.symbol])

    # --- changes ---------------------------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal) -> list[Emission]:
        """A new price of ``symbol``; returns margin-status changes it causes."""
        if symbol not in self.prices:
            raise KeyError(symbol)
        self.prices[symbol] = price
        base = self.scenario.symbol_info(symbol).base
        out: list[Emission] = []
        for acc in self.accounts.values():
            if base in acc.cross:
                out.extend(self._status_check(acc))
        return out

    def apply(self, event: Event) -> list[Emission]:
        """Apply an account event (validated against the scenario beforehand)."""
        acc = self.accounts[event.account]
        now = self._now_ms()
        acc.updated_ms = now
        out: list[Emission] = []
        if event.type == "liquidation":
            out.extend(self._liquidate(acc, event.symbol, now))
        else:
            assert event.asset is not None
            h = self._holding(acc, event.asset, event.symbol)
            out.extend(self._change(acc, event, h, now))
        out.extend(self._status_check(acc))
        return out

    def accrue_interest(self) -> list[Emission]:
        """One hour of interest on every loan: interest += borrowed x hourly rate."""
        now = self._now_ms()
        out: list[Emission] = []
        for acc in self.accounts.values():
            for h in acc.cross.values():
                charge = q8(h.borrowed * self.scenario.hourly_rate(acc.spec, h.asset))
                if charge > 0:
                    h.interest += charge
                    out.extend(self._liability(acc, None, h.asset, "INTEREST", Decimal(0), charge, now))
            for pair in acc.pairs.values():
                for h in (pair.base, pair.quote):
                    charge = q8(h.borrowed * self.scenario.hourly_rate(acc.spec, h.asset, pair.spec.symbol))
                    h.interest += charge
            out.extend(self._status_check(acc))
        return out

    def revoke(self, account: str, revoked: bool = True) -> None:
        """Revoke (or restore) an account's API key: -2015 from then on."""
        self.accounts[account].revoked = revoked

    # --- internals -------------------------------------------------------------------------

    def _holding(self, acc: AccountState, asset: str, symbol: str | None) -> Holding:
        if symbol is not None:
            return acc.pairs[symbol].holding(asset)
        return acc.cross.setdefault(asset, Holding(asset))

    def _change(self, acc: AccountState, e: Event, h: Holding, now: int) -> list[Emission]:
        out: list[Emission] = []
        amount = e.amount or Decimal(0)
        if e.type == "borrow":
            charged = q8(amount * self.scenario.hourly_rate(acc.spec, h.asset, e.symbol))
            h.borrowed += amount
            h.free += amount
            h.interest += charged
            out.extend(self._liability(acc, e.symbol, h.asset, "BORROW", amount, charged, now))
        elif e.type == "repay":
            paid = min(amount, h.free, h.debt)
            interest_paid = min(paid, h.interest)
            h.interest -= interest_paid
            h.borrowed -= paid - interest_paid
            h.free -= paid
            out.extend(
                self._liability(acc, e.symbol, h.asset, "REPAY", paid - interest_paid, interest_paid, now)
            )
        elif e.type == "trade":
            counter = self._counter(acc, e.symbol)
            price = e.price or self._trade_price(h.asset, counter.asset, e.symbol)
            if e.side == "buy":
                qty = min(amount, q8_down(counter.free / price))
                cost = min(q8(qty * price), counter.free)
                h.free, counter.free = h.free + qty, counter.free - cost
            else:
                qty = min(amount, h.free)
                h.free, counter.free = h.free - qty, counter.free + q8(qty * price)
            return [self._position(acc, e.symbol, [h, counter], now)]
        elif e.type == "interest":
            h.interest += amount
            out.extend(self._liability(acc, e.symbol, h.asset, "INTEREST", Decimal(0), amount, now))
            return out
        elif e.type in ("deposit", "transfer_in", "transfer_out", "withdraw"):
            delta = amount if e.type in ("deposit", "transfer_in") else -min(amount, h.free)
            h.free += delta
            payload = {"e": "balanceUpdate", "E": now, "a": h.asset, "d": fmt(delta), "T": now}
            out.append(UserEvent(acc.name, e.symbol, payload))
        else:  # set_balance
            before = (h.borrowed, h.interest)
            h.free = e.free if e.free is not None else h.free
            h.locked = e.locked if e.locked is not None else h.locked
            h.borrowed = e.borrowed if e.borrowed is not None else h.borrowed
            h.interest = e.interest if e.interest is not None else h.interest
            if (h.borrowed, h.interest) != before:
                kind = (
                    "BORROW" if h.borrowed > before[0] else "REPAY" if h.borrowed < before[0] else "INTEREST"
                )
                out.extend(
                    self._liability(
                        acc,
                        e.symbol,
                        h.asset,
                        kind,
                        abs(h.borrowed - before[0]),
                        abs(h.interest - before[1]),
                        now,
                    )
                )
        out.append(self._position(acc, e.symbol, [h], now))
        return out

    def _counter(self, acc: AccountState, symbol: str | None) -> Holding:
        if symbol is not None:
            return acc.pairs[symbol].quote
        return acc.cross.setdefault(self.quote, Holding(self.quote))

    def _trade_price(self, asset: str, counter: str, symbol: str | None) -> Decimal:
        price = self.prices[symbol] if symbol is not None else self.price_of(asset)
        if price is None:
            raise KeyError(f"{asset}{counter}")
        return price

    def _liquidate(self, acc: AccountState, symbol: str | None, now: int) -> list[Emission]:
        if symbol is not None:
            pair = acc.pairs[symbol]
            holdings = [pair.base, pair.quote]
            level = self.pair_level(pair)
            quote_asset = pair.quote.asset
        else:
            holdings = list(acc.cross.values())
            level = self.cross_level(acc)
            quote_asset = self.quote
            if quote_asset not in acc.cross:
                acc.cross[quote_asset] = Holding(quote_asset)
                holdings.append(acc.cross[quote_asset])
        equity = q8(max(level.assets - level.liabilities, Decimal(0)))
        out: list[Emission] = []
        notice: list[Emission] = []
        if symbol is None and acc.cross_status != "FORCE_LIQUIDATION":
            # Binance's status says so before it sells: a forced liquidation is FORCE_LIQUIDATION
            acc.cross_status = "FORCE_LIQUIDATION"
            status_payload = {
                "e": "MARGIN_LEVEL_STATUS_CHANGE",
                "E": now,
                "l": fmt(level.reported),
                "s": acc.cross_status,
            }
            notice.append(RiskEvent(acc.name, status_payload))
        for h in holdings:
            if h.debt > 0:
                out.extend(self._liability(acc, symbol, h.asset, "REPAY", h.borrowed, h.interest, now))
            h.free = equity if h.asset == quote_asset else Decimal(0)
            h.locked = h.borrowed = h.interest = Decimal(0)
        return [*notice, self._position(acc, symbol, holdings, now), *out]

    def _position(
        self, acc: AccountState, symbol: str | None, holdings: list[Holding], now: int
    ) -> UserEvent:
        balances = [{"a": h.asset, "f": fmt(h.free), "l": fmt(h.locked)} for h in holdings]
        return UserEvent(
            acc.name, symbol, {"e": "outboundAccountPosition", "E": now, "u": now, "B": balances}
        )

    def _liability(
        self, acc: AccountState, symbol: str | None, asset: str, kind: str, p: Decimal, i: Decimal, now: int
    ) -> list[Emission]:
        if symbol is not None:  # the Risk Data Stream covers cross margin only
            return []
        payload = {"e": "USER_LIABILITY_CHANGE", "E": now, "a": asset, "t": kind, "p": fmt(p), "i": fmt(i)}
        return [RiskEvent(acc.name, payload)]

    def _status_check(self, acc: AccountState) -> list[Emission]:
        level = self.cross_level(acc).margin_level
        new = status(level, acc.spec.effective_bars)
        if new == acc.cross_status:
            return []
        acc.cross_status = new
        shown = self.cross_level(acc).reported
        payload = {"e": "MARGIN_LEVEL_STATUS_CHANGE", "E": self._now_ms(), "l": fmt(shown), "s": new}
        return [RiskEvent(acc.name, payload)]
