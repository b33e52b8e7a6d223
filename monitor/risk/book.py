"""The account book: every risk unit's balances, its live level on each tick, and exact reports.

A *unit* is a cross margin account or one isolated pair (ids from ``monitor.risk.report.unit_id``).
Balances are kept exactly (``Position``, Decimal); the hot path (``on_price``) keeps float sums
per unit, moving only the units exposed to the ticked price (``monitor.risk._fanout``). ``report``
(``monitor.risk.unit``) and ``resync`` recompute exactly with ``monitor.risk.margin``.

Bands. The caller (the alert policy) gives each unit a band [lo, hi] of levels it does not need to
hear about; ``on_price`` returns the units a tick left outside their band, and every other change
(balances, bands, a unit becoming priced) queues the unit for the next ``on_price`` or
``drain_pending``. A new unit's band is empty, so it is reported as soon as it is priced. A unit
with no debt has an infinite level: a band with ``hi = inf`` contains it.

Unpriced units. Until every asset of a unit has a price, ``is_priced`` is False, ``level`` is None,
the unit is never reported by a tick, and its report lists ``unpriced_assets`` with no level or
distances and the state ``blind``: it is never shown as safe.

States. Every report carries one state (``monitor.risk.report.UnitState``): ``known``, ``approximate``,
``blind`` (``set_blind`` by the engine for stale data, or unpriced) or ``no_debt``.

Unrouted assets (no live route: a halted pair). With Binance's level from the last REST read, the
unit is valued at what that level implies for them (``monitor.risk.unit.implied_totals``), a fixed part
of the sums while the other prices move live: the unit is priced and ``approximate``. Without a
level it stays unpriced; ``unvalued`` says why (the daemon marks it blind and says so).

Cross Margin Pro (``approximate=True``). Its formula is not published; the level shown is the
exchange's ``marginLevel`` (``exchange_level``), carried forward with prices: the classic level is
scaled by exchange / classic at the first moment both are known. Distances, liquidation prices,
restore amounts and interest hours are solved against the bars divided by that scale, and the
report is flagged ``approximate``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TypeVar

import structlog

from monitor.risk._fanout import Fanout
from monitor.risk.holdings import Holdings
from monitor.risk.margin import Bars, Position, Totals
from monitor.risk.prices import KNOWN_STABLECOINS, PriceBook, Route, Router, symbols_of
from monitor.risk.report import UnitKind, UnitReport, UnitState, unit_id
from monitor.risk.unit import Unit, build_report, implied_totals, liquidation_distance, unit_state, valuation

__all__ = ["AccountBook"]

log = structlog.get_logger(__name__)
INF = math.inf
ONE = Decimal(1)
_T = TypeVar("_T")


class AccountBook:
    """Risk units, their incremental levels and their exact reports (see the module docstring)."""

    def __init__(
        self,
        quote: str = "USDT",
        stablecoins: Iterable[str] = KNOWN_STABLECOINS,
        bridge: str = "BTC",
        *,
        pinned: Iterable[str] = (),
        fanout_threshold: int = 8,
        prices: PriceBook | None = None,
    ) -> None:
        """``stablecoins``: bridges tried after BTC, ETH and BNB (priced at market); ``pinned``:
        assets counted at exactly 1 on purpose (see ``monitor.risk.prices``)."""
        self.router = Router(quote, stablecoins, bridge, pinned=pinned)
        self.prices = prices if prices is not None else PriceBook()
        self._fanout = Fanout(self.prices.prices, threshold=fanout_threshold, on_priced=self._on_priced)
        self._units: dict[str, Unit] = {}
        self._by_index: dict[int, Unit] = {}
        self._pending: dict[str, None] = {}
        self._awaiting: set[str] = set()  # units with unrouted assets waiting to compute their implied value
        self._unrouted: set[str] = set()  # units with an asset no live route prices (``why_unrouted``)
        self._ids: tuple[str, ...] | None = None  # unit_ids(), until a unit comes or goes

    @property
    def quote(self) -> str:
        """The asset cross units are valued in."""
        return self.router.quote

    @property
    def updates(self) -> int:
        """Unit updates done by ticks so far (a tick adds its fan-out)."""
        return self._fanout.updates

    # --- units --------------------------------------------------------------------------------

    def set_catalog(self, symbols: Mapping[str, Sequence[str]]) -> None:
        """symbol -> (base, quote[, status]) from exchangeInfo; re-routes every unit's prices."""
        self.router.set_catalog(symbols)
        for unit in self._units.values():
            unit.implied = None
            self._restructure(unit)

    def upsert_cross(
        self,
        account: str,
        positions: Mapping[str, Position],
        bars: Bars,
        *,
        approximate: bool = False,
        exchange_level: Decimal | None = None,
    ) -> str:
        """Add or replace a cross account (``approximate`` for MARGIN_2); returns its unit id."""
        uid = unit_id(account)
        unit = self._unit(uid, account, "cross", None, self.quote, positions, bars)
        unit.approximate, unit.exchange_level = approximate, exchange_level
        unit.scale, unit.calibrated = ONE, False  # recalibrated on this snapshot's level
        unit.implied = None  # re-implied from this snapshot's level
        self._restructure(unit)
        return uid

    def upsert_isolated(
        self,
        account: str,
        symbol: str,
        base_asset: str,
        quote_asset: str,
        base: Position,
        quote: Position,
        bars: Bars,
        *,
        exchange_level: Decimal | None = None,
    ) -> str:
        """Add or replace an isolated pair, valued in its own quote at the pair's price."""
        if base_asset == quote_asset:
            raise ValueError(f"isolated pair {symbol}: base and quote are both {base_asset}")
        uid = unit_id(account, symbol)
        positions = {base_asset: base, quote_asset: quote}
        unit = self._unit(uid, account, "isolated", symbol, quote_asset, positions, bars)
        unit.base_asset, unit.exchange_level = base_asset, exchange_level
        unit.implied = None
        self._restructure(unit)
        return uid

    def _unit(
        self,
        uid: str,
        account: str,
        kind: UnitKind,
        symbol: str | None,
        quote: str,
        positions: Mapping[str, Position],
        bars: Bars,
    ) -> Unit:
        unit = self._units.get(uid)
        if unit is None:
            unit = Unit(uid, self._fanout.add(uid), account, kind, symbol, quote, dict(positions), bars)
            self._units[uid] = unit
            self._ids = None
            self._by_index[unit.index] = unit
        else:
            unit.positions, unit.bars = _kept_positions(unit.positions, positions), kept(unit.bars, bars)
        return unit

    def set_position(self, unit: str, asset: str, position: Position) -> None:
        """One balance change of one unit (an isolated pair accepts only its two assets)."""
        u = self._units[unit]
        if u.kind == "isolated" and asset not in u.positions:
            raise ValueError(f"{unit} holds only {sorted(u.positions)}, not {asset}")
        u.positions[asset] = position
        self._restructure(u)

    def position(self, unit: str, asset: str) -> Position | None:
        """The unit's current balance of ``asset`` (None if it has no row for it)."""
        return self._units[unit].positions.get(asset)

    def set_interest_rates(self, unit: str, hourly: Mapping[str, Decimal]) -> None:
        """The next hourly interest rate per borrowed asset (for ``hours_to_bars``)."""
        self._units[unit].rates = dict(hourly)

    def remove_unit(self, unit: str) -> None:
        """Forget a unit."""
        u = self._units.pop(unit)
        self._ids = None
        del self._by_index[u.index]
        self._fanout.remove(u.index)
        self._pending.pop(unit, None)
        self._awaiting.discard(unit)
        self._unrouted.discard(unit)

    def units(self) -> list[str]:
        """All unit ids."""
        return list(self._units)

    def has_unit(self, unit: str) -> bool:
        """Whether ``unit`` is in the book: a dict lookup, not a copy of every id (``units()``)."""
        return unit in self._units

    def unit_ids(self) -> tuple[str, ...]:
        """All unit ids, the same tuple until a unit comes or goes: for the periodic jobs, which a
        copy of every id each second costs ms of the loop on a busy machine (bench/crash.py)."""
        if self._ids is None:
            self._ids = tuple(self._units)
        return self._ids

    def set_band(self, unit: str, lo: float, hi: float) -> None:
        """Report ``unit`` when its level leaves [lo, hi] (lo > hi: always; hi = inf holds "no debt")."""
        u = self._units[unit]
        u.band = (lo, hi)
        self._push_band(u)

    def _push_band(self, u: Unit) -> None:
        lo, hi = u.band
        if u.scale != ONE:
            s = float(u.scale)
            lo, hi = lo / s, hi / s
        self._fanout.set_band(u.index, lo, hi)
        self._queue_if_outside(u)

    def _queue_if_outside(self, u: Unit) -> None:
        if self._fanout.outside(u.index):
            self._pending[u.id] = None
        else:
            self._pending.pop(u.id, None)

    def _route(self, u: Unit, asset: str) -> Route | None:
        if u.kind == "cross":
            return self.router.route(asset)
        assert u.symbol is not None
        if asset != u.base_asset:
            return Route(asset, ())
        return Route(asset, (u.symbol,)) if self.router.live(u.symbol) else None

    def _why(self, u: Unit, unrouted: list[str]) -> str:
        """``OLD (OLDUSDT BREAK)``: the unrouted assets and their listed, not trading, symbols."""
        parts = []
        for asset in unrouted:
            if u.kind == "isolated" and u.symbol:
                listed = [f"{u.symbol} {self.router.status(u.symbol) or 'not listed'}"]
            else:
                listed = self.router.halted(asset) or ["no pair listed"]
            parts.append(f"{asset} ({', '.join(listed)})")
        return ", ".join(parts)

    def _restructure(self, u: Unit) -> None:
        """Recompute the unit's routes, fixed values and leg coefficients after any change."""
        fa = fl = Decimal(0)
        exposure: dict[tuple[str, ...], tuple[float, float]] = {}
        routes: dict[str, Route | None] = {}
        unrouted: list[str] = []
        for asset, p in u.positions.items():
            if p.is_empty:
                continue
            route = routes[asset] = kept(u.routes.get(asset), self._route(u, asset))
            if route is None:
                unrouted.append(asset)
            elif route.fixed:
                fa += p.held
                fl += p.owed
            else:
                exposure[route.symbols] = (float(p.held), float(p.owed))
        if routes != u.routes:  # equal: the old dict stays (its Route objects are the same ones)
            u.routes = routes
        u.why_unrouted = self._why(u, sorted(unrouted)) if unrouted else ""
        if unrouted:
            self._unrouted.add(u.id)
        else:
            self._unrouted.discard(u.id)
        unroutable = len(unrouted)
        self._awaiting.discard(u.id)
        if unrouted and u.fallback:
            if u.implied is None:
                u.implied = implied_totals(u, self.prices.exact)
            if u.implied is None:
                self._awaiting.add(u.id)  # computed at the first tick that prices the routed assets
            else:
                fa, fl, unroutable = fa + u.implied[0], fl + u.implied[1], 0
        elif not unrouted:
            u.implied = None
        self._fanout.set_exposure(u.index, exposure, float(fa), float(fl), unroutable)
        if self._fanout.priced(u.index):
            self._calibrate(u)
        self._push_band(u)

    def _on_priced(self, index: int) -> None:
        u = self._by_index[index]
        if u.approximate and not u.calibrated:
            self._calibrate(u)
            lo, hi = u.band
            s = float(u.scale)
            self._fanout.set_band(index, lo / s, hi / s)

    def _calibrate(self, u: Unit) -> None:
        """Scale a Cross Margin Pro unit's classic level onto the exchange's (once, when priced)."""
        if not u.approximate or u.calibrated or u.exchange_level is None:
            return
        totals = self._totals(u)
        classic = None if totals is None else totals.level()
        u.scale = u.exchange_level / classic if classic else ONE
        u.calibrated = True

    # --- prices and levels --------------------------------------------------------------------

    def symbols_needed(self) -> set[str]:
        """Symbols to stream so that every held or owed asset of every unit is priced."""
        return symbols_of(self._fanout.symbols())

    def unit_symbols(self, unit: str) -> set[str]:
        """The symbols whose prices the unit's level depends on (for staleness)."""
        routes = self._units[unit].routes.values()
        return symbols_of(s for route in routes if route is not None for s in route.symbols)

    def set_blind(self, unit: str, reason: str | None) -> None:
        """The engine's word on a unit: blind (stale data) with ``reason``, or fresh again (None)."""
        u = self._units.get(unit)
        if u is not None:
            u.blind = reason

    def state(self, unit: str) -> tuple[UnitState, str]:
        """The unit's one state and its reason now (as in ``report``)."""
        u = self._units[unit]
        return unit_state(u, valuation(u, self.prices.exact))

    def unvalued(self, unit: str) -> str | None:
        """Why the unit cannot be valued at all (an asset with no live price route and no level from
        Binance to stand in, while it owes something), or None. The daemon marks such a unit blind."""
        u = self._units[unit]
        if not u.why_unrouted or not u.owes or u.implied is not None or u.id in self._awaiting:
            return None
        return f"no live price for {u.why_unrouted} and no level from Binance to stand in"

    def unvalued_units(self) -> list[str]:
        """Every unit :meth:`unvalued` gives a reason for; only units with an unrouted asset are looked
        at (the once-a-second staleness step asked each of 1,000 units: ~1 ms of the loop)."""
        return [unit for unit in self._unrouted if self.unvalued(unit)]

    def _retry_implied(self) -> None:
        """Units waiting for the prices their implied value is computed at: compute it now if they came."""
        for uid in list(self._awaiting):
            u = self._units[uid]
            if implied_totals(u, self.prices.exact) is not None:
                self._restructure(u)

    def on_price(self, symbol: str, price: float) -> Sequence[str]:
        """HOT PATH. Record a price; return the units now outside their band (plus queued ones)."""
        if not 0.0 < price < INF and (price != 0.0 or self._fanout.inverted(symbol)):
            log.warning("price_rejected", symbol=symbol, price=repr(price))  # 1/0: keep the last price
            return self.drain_pending() if self._pending else ()
        self.prices.prices[symbol] = price
        self.prices.stamps[symbol] = self.prices.clock()
        found = self._fanout.apply(symbol, price)
        if self._awaiting:
            self._retry_implied()
        if self._pending:
            merged = dict.fromkeys(self.drain_pending())
            merged.update(dict.fromkeys(self._fanout.unit_ids(found)))
            return list(merged)
        if not found:
            return ()
        return self._fanout.unit_ids(found)

    def stats(self) -> dict[str, float]:
        """Counters for metrics: unit updates by ticks, full float recomputations (drift bound),
        legs with units, their mean fan-out, and how many run vectorised."""
        return self._fanout.stats()

    def drain_pending(self) -> list[str]:
        """Units queued by non-tick changes (balances, bands, pricing) that are outside their band."""
        pending = list(self._pending)
        self._pending.clear()
        return pending

    def is_priced(self, unit: str) -> bool:
        """Every asset the unit holds or owes has a price."""
        return self._fanout.priced(self._units[unit].index)

    def level(self, unit: str) -> float | None:
        """The live level (float): None when unpriced (see ``is_priced``) or when there is no debt."""
        u = self._units[unit]
        lv = self._fanout.level(u.index)
        if lv != lv or lv == INF:
            return None
        return lv * float(u.scale) if u.scale != ONE else lv

    def liquidation_distance(self, unit: str) -> float | None:
        """The signed uniform move to the liquidation bar, computed exactly now (as in ``report``);
        None while unpriced, with no debt, or when no uniform move gets there."""
        u = self._units[unit]
        return liquidation_distance(u, valuation(u, self.prices.exact))

    def exact_asset_price(self, asset: str) -> Decimal | None:
        """An asset's exact price in the book's quote (1 for quote-like assets; None if unpriced)."""
        route = self.router.route(asset)
        if route is None:
            return None
        return self.prices.exact(route.symbols)

    def _totals(self, u: Unit) -> Totals | None:
        v = valuation(u, self.prices.exact)
        return v.totals(u) if v.complete else None

    def resync(self, units: Iterable[str] | None = None) -> float:
        """Exact recomputation of every priced unit's sums (or only ``units``, for a sweep in slices);
        returns the largest relative level drift it erased (0.0 when none)."""
        by_index = self._by_index

        def exact(i: int) -> tuple[float, float] | None:
            totals = self._totals(by_index[i])
            return None if totals is None else (float(totals.assets), float(totals.liabilities))

        if units is None:
            return self._fanout.resync(exact)
        return self._fanout.resync(exact, [self._units[u].index for u in units if u in self._units])

    def holdings(self, unit: str) -> Holdings:
        """A frozen copy of the unit's balances and exact prices (for stress and replay)."""
        u = self._units[unit]
        v = valuation(u, self.prices.exact)
        active = {a: p for a, p in u.positions.items() if not p.is_empty}
        return Holdings(
            u.id, u.quote, active, dict(v.prices), frozenset(v.fixed), u.bars, u.scale, tuple(v.unpriced)
        )

    # --- reports ------------------------------------------------------------------------------

    def report(self, unit: str, restore_target: str | None = None) -> UnitReport:
        """Everything about ``unit``, computed exactly now (``monitor.risk.unit.build_report``).
        ``restore_target`` names a bar (default: the normal bar, else the highest)."""
        u = self._units[unit]
        return build_report(u, valuation(u, self.prices.exact), restore_target)


def kept(old: _T | None, new: _T) -> _T:
    """``old`` when ``new`` is the same value written the same way (Decimals compare 1.0 == 1, so
    ``repr`` decides), else ``new``.

    A periodic REST snapshot re-reads every account (1,000 accounts a minute): keeping the objects
    already held when nothing changed lets the fresh copies die young, instead of every snapshot
    promoting a unit's positions, routes and bars (here) and the snapshot's own units set and bars
    (``monitor.watch.snapshots``) into the collector's oldest generation, whose full collections
    then walk them (docs/benchmarks.md, "Loop stalls" and session 12)."""
    return old if old is not None and old == new and repr(old) == repr(new) else new


def _kept_positions(old: dict[str, Position], new: Mapping[str, Position]) -> dict[str, Position]:
    """The unit's new positions, reusing each unchanged :class:`Position` (and the whole dict when
    nothing changed; see :func:`kept`)."""
    merged = {asset: p if (was := old.get(asset)) is None else kept(was, p) for asset, p in new.items()}
    return old if merged.keys() == old.keys() and all(merged[a] is old[a] for a in merged) else merged
