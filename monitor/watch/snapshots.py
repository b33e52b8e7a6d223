"""REST snapshots of one account into the book, reconciled with what the streams said.

A snapshot reads the cross account and each isolated pair (with their bars) and puts every unit
into the book unless the ledger says REST is behind or ahead of the streams (then the unit keeps
settling and ``disagreed`` asks for another read soon). The drift between our level and the
exchange's is logged and kept for ``/metrics``; Binance's own word on each unit goes to ``word``.
Interest rates (weight 100) are read only when due. The reads go through :class:`AccountReads`,
which ``BinanceRest`` is (tests pass plain values through a small fake).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Protocol

import structlog

from monitor.config.model import AccountConfig
from monitor.exchange.errors import ExchangeError
from monitor.exchange.parse import CrossAccount, IsolatedPair
from monitor.risk.book import AccountBook, kept
from monitor.risk.margin import Bars, Position
from monitor.risk.report import unit_id
from monitor.watch.settling import Settling

log = structlog.get_logger(__name__)
# (unit, Binance's marginLevelStatus or "" to derive it from the level, its level, source)
ExchangeWordHook = Callable[[str, str, Decimal | None, str], None]
RATES_EVERY = 3600.0  # s: next-hourly interest rates change at most hourly (weight 100 a read)
RATES_RETRY = 60.0  # s: a failed rates read is tried again after this


class AccountReads(Protocol):
    """The REST reads a snapshot makes (``monitor.exchange.rest.BinanceRest``)."""

    async def cross_bars(self) -> Bars: ...
    async def cross_account(self) -> CrossAccount: ...
    async def isolated_pairs(self, symbols: Sequence[str] | None = None) -> list[IsolatedPair]: ...
    async def isolated_bars(self, symbol: str, pair: IsolatedPair | None = None) -> Bars: ...
    async def next_hourly_rates(
        self, assets: Sequence[str], *, isolated: bool = False
    ) -> dict[str, Decimal] | None: ...


class Snapshots:
    """The REST view of account ``cfg``: its units, their bars, when last read, and the drift."""

    def __init__(
        self,
        cfg: AccountConfig,
        book: AccountBook,
        settling: Settling,
        clock: Callable[[], float],
        word: ExchangeWordHook,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.book = book
        self.settling = settling
        self.clock = clock
        self.word = word
        self.units: set[str] = set()
        self.bars: dict[str, Bars] = {}  # "" (cross) or an isolated symbol → its bars
        self.last_snapshot = 0.0
        self.drift: dict[str, float] = {}
        self.disagreed = False  # the last read disagreed with the streams for some unit: read again soon
        self._rates_read: dict[str, tuple[float, frozenset[str]]] = {}  # unit → (read at, borrowed)

    async def read(self, rest: AccountReads, *, full: bool = True) -> None:
        """Read the account (cross and isolated) and put it into the book. ``full=False`` (a settle
        re-read, maybe every 0.25 s) skips the cross bars; an isolated pair's tier is re-read
        always (weight 1), as a borrow can move it. Interest rates (weight 100) only when due
        (:meth:`_rates`: hourly, or a newly borrowed asset)."""
        units: set[str] = set()
        self.disagreed = False
        if self.cfg.cross:
            known = self.bars.get("")
            bars = known if known is not None and not full else await rest.cross_bars()
            cross = await rest.cross_account()
            units.add(self.apply_cross(cross, bars))
            await self._rates(rest, unit_id(self.name), cross.positions.items(), isolated=False)
        if self.cfg.isolated:
            symbols = None if self.cfg.isolated == "all" else list(self.cfg.isolated)
            for pair in await rest.isolated_pairs(symbols):
                if not pair.enabled and self.cfg.isolated == "all":
                    continue
                # the tier (and so the bars) follows what the pair has borrowed: re-read each time
                bars = kept(self.bars.get(pair.symbol), await rest.isolated_bars(pair.symbol, pair))
                self.bars[pair.symbol] = bars
                units.add(self.apply_isolated(pair, bars))
                items = ((pair.base_asset, pair.base), (pair.quote_asset, pair.quote))
                await self._rates(rest, unit_id(self.name, pair.symbol), items, isolated=True)
        for gone in self.units - units:
            self.book.remove_unit(gone)
            self.settling.drop(gone)
        self.units = kept(self.units, units)
        self.last_snapshot = self.clock()

    def apply_cross(self, cross: CrossAccount, bars: Bars) -> str:
        """Put the cross account into the book unless REST disagrees with the streams; its unit."""
        uid = unit_id(self.name)
        bars = self.bars[""] = kept(self.bars.get(""), bars)
        if not self._admit(uid, cross.positions):
            return uid
        approximate = cross.account_type == "MARGIN_2"
        before = self.book.level(uid) if uid in self.units else None
        self.book.upsert_cross(
            self.name, cross.positions, bars, approximate=approximate, exchange_level=cross.margin_level
        )
        self.settling.settled(uid)
        self._record_drift(uid, cross.margin_level, before)
        self.word(uid, cross.margin_level_status, cross.margin_level, "rest")
        return uid

    def apply_isolated(self, pair: IsolatedPair, bars: Bars) -> str:
        """Put one isolated pair into the book unless REST disagrees with the streams; its unit."""
        uid = unit_id(self.name, pair.symbol)
        if not self._admit(uid, {pair.base_asset: pair.base, pair.quote_asset: pair.quote}):
            return uid
        uid = self.book.upsert_isolated(
            self.name, pair.symbol, pair.base_asset, pair.quote_asset, pair.base, pair.quote, bars,
            exchange_level=pair.margin_level,
        )  # fmt: skip
        self.settling.settled(uid)
        self._record_drift(uid, pair.margin_level, None)
        self.word(uid, pair.margin_level_status, pair.margin_level, "rest")
        return uid

    def bars_of(self, uid: str) -> Bars | None:
        """The bars of unit ``uid`` (an isolated pair's own, else the cross account's)."""
        symbol = uid.split(":", 2)[2] if uid.startswith("isolated:") else ""
        return self.bars.get(symbol) or self.bars.get("")

    def remove_all(self) -> None:
        """Every unit leaves the book (the account is no longer watched)."""
        for uid in self.units:
            self.book.remove_unit(uid)
            self.settling.drop(uid)
        self.units = set()

    def _admit(self, uid: str, positions: dict[str, Position]) -> bool:
        if self.settling.admit(uid, positions):
            return True
        self.disagreed = True
        return False

    async def _rates(
        self, rest: AccountReads, uid: str, positions: Iterable[tuple[str, Position]], *, isolated: bool
    ) -> None:
        """Read the unit's next hourly interest rates (weight 100) when due: never read, an hour
        old (Binance changes them at most hourly), or an asset borrowed that was not at the last
        read. A failed read keeps the rates in use and is tried again after :data:`RATES_RETRY`."""
        borrowed = frozenset(asset for asset, pos in positions if pos.borrowed > 0)
        now = self.clock()
        last = self._rates_read.get(uid)
        if last is not None and now - last[0] < RATES_EVERY and borrowed <= last[1]:
            return
        try:
            rates = await rest.next_hourly_rates(sorted(borrowed), isolated=isolated)
        except ExchangeError as exc:
            log.warning("interest_rates_unavailable", account=self.name, error=str(exc))
            self._rates_read[uid] = (now - RATES_EVERY + RATES_RETRY, borrowed)
            return
        if rates is None:  # this IP's share of the endpoint's weight is spent: the next snapshot asks
            return
        self._rates_read[uid] = (now, borrowed)
        self.book.set_interest_rates(uid, rates)

    def _record_drift(self, uid: str, exchange_level: Decimal, before: float | None) -> None:
        ours = self.book.level(uid) if self.book.is_priced(uid) else before
        if ours is None or exchange_level <= 0 or exchange_level >= 999:
            return
        drift = ours / float(exchange_level) - 1.0
        self.drift[uid] = drift
        level = "warning" if abs(drift) > 0.01 else "info"
        getattr(log, level)(
            "level_reconciled", unit=uid, ours=round(ours, 6), exchange=float(exchange_level), drift=drift
        )
