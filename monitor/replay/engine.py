"""``margin-monitor replay``: today's positions through a past price path, with the live alert policy.

A unit's balances and prices come from ``status --json`` (the running daemon's ``/status``, a
one-off read, or a saved file); each ``--klines SYMBOL=FILE`` is a Binance 1-minute kline CSV
(data.binance.vision format, parsed by the simulator's own reader,
:func:`monitor.sim.sources.kline_ticks`: four ticks per candle, open → low/high → close).

By default the path is *relative*: each price is today's price × (kline price / the file's first
open), quantized to 1e-8, so a -15 % day is replayed as -15 % from today's level; ``--absolute``
uses the historical prices as they were. Assets without a kline file hold today's price.

The ticks go through the same :class:`monitor.risk.book.AccountBook`, :class:`monitor.watch.engine.Engine` and
:class:`monitor.alerts.policy.AlertPolicy` as the daemon (the config's ladder, hysteresis and ``for``),
on a clock set to each tick's time. Alongside, every tick's level is recomputed exactly
(:func:`monitor.risk.margin.value_positions`) for the worst level and the restore amounts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from monitor.alerts.policy import AlertEvent, AlertPolicy, PolicyConfig
from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars, Position, value_positions
from monitor.sim.sources import TimelineSourceError, kline_ticks
from monitor.watch.engine import Engine

__all__ = [
    "Crossing",
    "Replay",
    "ReplayError",
    "Restore",
    "Sample",
    "Start",
    "minute",
    "prices_from_klines",
    "replay",
]

QUANTUM = Decimal("0.00000001")


class ReplayError(ValueError):
    """Input replay cannot use; the message is one line naming what is wrong."""


@dataclass(frozen=True, slots=True)
class Start:
    """A unit as it is now: balances, exact prices of its moving assets, quote-like assets, bars."""

    unit: str
    account: str
    kind: str
    symbol: str | None
    quote: str
    positions: dict[str, Position]
    prices: dict[str, Decimal]
    fixed: frozenset[str]
    bars: Bars

    @classmethod
    def from_status(cls, data: Mapping[str, Any]) -> Start:
        """From one unit of ``status --json`` (needs its ``positions`` key)."""
        unit = str(data.get("unit", "?"))
        rows = data.get("positions")
        if not isinstance(rows, Mapping) or not rows:
            raise ReplayError(f"{unit}: no positions in the status data (a daemon older than replay?)")
        positions: dict[str, Position] = {}
        prices: dict[str, Decimal] = {}
        fixed: set[str] = set()
        try:
            for asset, row in rows.items():
                positions[asset] = Position.from_binance(row)
                if row.get("fixed"):
                    fixed.add(asset)
                elif row.get("price") is None:
                    raise ReplayError(f"{unit}: {asset} has no price now; replay needs every asset priced")
                else:
                    prices[asset] = Decimal(str(row["price"]))
            bars = Bars(
                {k: Decimal(str(v)) for k, v in data["bars"].items()}, liquidation=data["liquidation_bar"]
            )
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            if isinstance(exc, ReplayError):
                raise
            raise ReplayError(f"{unit}: unreadable status data ({type(exc).__name__}: {exc})") from None
        return cls(
            unit, str(data["account"]), str(data["kind"]), data.get("symbol"), str(data["quote"]),
            positions, prices, frozenset(fixed), bars,
        )  # fmt: skip

    def symbol_of(self, asset: str) -> str:
        """The symbol that prices ``asset`` in this unit (the pair for an isolated unit)."""
        return self.symbol if self.kind == "isolated" and self.symbol else asset + self.quote


@dataclass(frozen=True, slots=True)
class Sample:
    """One tick: time (epoch s), exact asset and liability value, level (None: no debt)."""

    t: float
    assets: Decimal
    liabilities: Decimal
    level: Decimal | None
    prices: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Crossing:
    """An alert of the policy during the replay: fired at ``fired_at`` (level then), resolved or not."""

    rule: str
    bar: float | None
    fired_at: float
    level: float | None
    resolved_at: float | None = None


@dataclass
class Replay:
    """What happened to one unit."""

    start: Start
    samples: list[Sample]
    crossings: list[Crossing]
    restore_bar: tuple[str, Decimal]
    absolute: bool

    @property
    def worst(self) -> Sample | None:
        """The tick with the lowest level (None when the unit never had debt)."""
        levels = [s for s in self.samples if s.level is not None]
        return min(levels, key=lambda s: (s.level, s.t)) if levels else None

    def restore(self) -> Restore | None:
        """What, done at the first alert, would have kept the unit safe to the end (None: no alert)."""
        if not self.crossings:
            return None
        first = min(c.fired_at for c in self.crossings)
        rest = [s for s in self.samples if s.t >= first]
        target = self.restore_bar[1]
        liq = self.start.bars.liquidation_level
        zero = Decimal(0)
        with localcontext() as ctx:
            ctx.prec = 60
            deposit = max(max(target * s.liabilities - s.assets for s in rest), zero)
            deposit_liq = max(max(liq * s.liabilities - s.assets for s in rest), zero)
            repay = max(max(s.liabilities - s.assets / target for s in rest), zero)
        owed = self.start.positions.get(self.start.quote, Position()).owed
        return Restore(first, deposit, deposit_liq, min(repay, owed) if owed > 0 else None, repay <= owed)


@dataclass(frozen=True, slots=True)
class Restore:
    """Acting at ``acting_at`` (the first alert), in the unit's quote: deposit ``deposit_to_target``
    to stay at or above the restore bar to the end, or ``deposit_to_avoid_liquidation`` to stay at
    or above the liquidation bar; or repay ``repay_to_target`` of the quote loan (None: no quote
    loan; ``repay_enough`` False: repaying all of it is not enough)."""

    acting_at: float
    deposit_to_target: Decimal
    deposit_to_avoid_liquidation: Decimal
    repay_to_target: Decimal | None
    repay_enough: bool


def minute(t: float) -> str:
    """``YYYY-MM-DD HH:MM`` UTC of an epoch time (the minute it falls in)."""
    return datetime.fromtimestamp(math.floor(t / 60) * 60, UTC).strftime("%Y-%m-%d %H:%M")


def prices_from_klines(
    start: Start, klines: Mapping[str, Path], *, absolute: bool = False
) -> list[tuple[float, str, Decimal]]:
    """(epoch s, symbol, price) ticks of every kline file, in time order (see the module docstring)."""
    ticks: list[tuple[float, str, Decimal]] = []
    for symbol, path in klines.items():
        asset = next((a for a in start.prices if start.symbol_of(a) == symbol), None)
        if asset is None:
            held = ", ".join(sorted(start.symbol_of(a) for a in start.prices)) or "none"
            raise ReplayError(f"--klines {symbol}: {start.unit} has no asset priced by it (it uses {held})")
        try:
            opened_ms, raw = kline_ticks(path, symbol)
        except TimelineSourceError as exc:
            raise ReplayError(str(exc)) from None
        base = float(opened_ms) / 1000.0
        first = raw[0].price
        with localcontext() as ctx:
            ctx.prec = 60
            today = start.prices[asset]
            for tick in raw:
                price = tick.price if absolute else (today * tick.price / first).quantize(QUANTUM)
                ticks.append((base + tick.t, symbol, price))
    ticks.sort(key=lambda item: item[0])
    return ticks


def _book(start: Start) -> tuple[AccountBook, str]:
    book = AccountBook(quote=start.quote, stablecoins=start.fixed)
    if start.kind == "isolated" and start.symbol:
        base = next(a for a in start.positions if a != start.quote)
        uid = book.upsert_isolated(
            start.account, start.symbol, base, start.quote,
            start.positions[base], start.positions.get(start.quote, Position()), start.bars,
        )  # fmt: skip
    else:
        uid = book.upsert_cross(start.account, start.positions, start.bars)
    for asset, price in start.prices.items():
        book.on_price(start.symbol_of(asset), float(price))
    return book, uid


def _sample(book: AccountBook, uid: str, t: float) -> Sample:
    h = book.holdings(uid)
    totals = value_positions(h.positions, h.prices, h.fixed)
    return Sample(t, totals.assets, totals.liabilities, totals.level(), dict(h.prices))


def replay(
    start: Start,
    ticks: Sequence[tuple[float, str, Decimal]],
    policy: PolicyConfig,
    restore_target: str = "normal",
    *,
    absolute: bool = False,
) -> Replay:
    """Run the ticks through the book, engine and alert policy; record every tick exactly."""
    if not ticks:
        raise ReplayError("no klines to replay")
    now = [ticks[0][0]]
    book, uid = _book(start)
    engine = Engine(book, AlertPolicy(policy, {}), clock=lambda: now[0], restore_target=restore_target)
    events: list[AlertEvent] = []

    def drain() -> None:
        while not engine.outbox.empty():
            events.append(engine.outbox.get_nowait().event)

    engine.evaluate(uid)
    drain()
    samples = [_sample(book, uid, now[0])]
    for t, symbol, price in ticks:
        now[0] = t
        engine.on_prices({symbol: float(price)})
        engine.tick_timers()
        drain()
        samples.append(_sample(book, uid, t))
    crossings: list[Crossing] = []
    open_: dict[str, int] = {}
    for e in events:
        if e.kind == "firing":
            open_[e.rule] = len(crossings)
            crossings.append(Crossing(e.rule, e.bar, e.at, e.level))
        elif e.kind == "resolved" and e.rule in open_:
            i = open_.pop(e.rule)
            c = crossings[i]
            crossings[i] = Crossing(c.rule, c.bar, c.fired_at, c.level, e.at)
    levels = start.bars.levels
    if restore_target in levels:
        target = (restore_target, levels[restore_target])
    else:
        target = ("normal", start.bars.normal_level)
    return Replay(start, samples, crossings, target, absolute)
