"""Price paths from files and inline ramps, turned into ticks on the simulated time axis.

- tick CSV: ``timestamp_ms,symbol,price`` per line (header, blank lines and ``#`` comments
  skipped); times are relative to the file's first tick.
- Binance kline CSV (as from data.binance.vision): ``open_time,open,high,low,close[,volume,
  close_time,...]``; open times in ms or µs. Each candle is replayed as four ticks inside the
  candle, in an order consistent with it: open, low, high, close for a rising candle and open,
  high, low, close for a falling one.
- ramp: straight lines between ``[seconds, price]`` points, one tick every ``every`` seconds.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.sim.scenario import PricePath

_QUANTUM = Decimal("0.00000001")


class TimelineSourceError(ValueError):
    """A price source that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Tick:
    """A price of one symbol at a simulated time (seconds from the start of the timeline)."""

    t: float
    symbol: str
    price: Decimal


def load_path(path: PricePath, base_dir: Path) -> list[Tick]:
    """The ticks of one price source, shifted by its ``offset``."""
    if path.csv is not None:
        ticks = _tick_csv(base_dir / path.csv, path.csv)
    elif path.klines is not None:
        assert path.symbol is not None
        ticks = _kline_csv(base_dir / path.klines, path.klines, path.symbol)
    else:
        assert path.ramp is not None and path.points is not None
        ticks = _ramp(path.ramp, path.points, path.every)
    if path.offset:
        ticks = [Tick(t.t + path.offset, t.symbol, t.price) for t in ticks]
    return ticks


def kline_ticks(file: Path, symbol: str) -> tuple[Decimal, list[Tick]]:
    """The ticks of one kline CSV with the first candle's open time in ms (for ``margin-monitor
    replay``, which reports wall-clock minutes); same parsing and errors as a scenario's ``klines``."""
    rows = _rows(file, str(file))
    line, first = rows[0]
    return _millis(_number(first[0], str(file), line, "open time")), _kline_csv(file, str(file), symbol)


def _rows(file: Path, name: str) -> list[tuple[int, list[str]]]:
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            rows = [
                (n, [cell.strip() for cell in row])
                for n, row in enumerate(csv.reader(handle), start=1)
                if row and any(row) and not row[0].lstrip().startswith("#")
            ]
    except OSError as exc:
        raise TimelineSourceError(f"cannot read {name}: {exc.strerror or exc}") from None
    if rows and not _is_number(rows[0][1][0]):
        rows = rows[1:]  # header
    if not rows:
        raise TimelineSourceError(f"{name} has no rows")
    return rows


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return True


def _number(text: str, name: str, line: int, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise TimelineSourceError(f"{name} line {line}: bad {what} {text!r}") from None
    if not value.is_finite():
        raise TimelineSourceError(f"{name} line {line}: bad {what} {text!r}")
    return value


def _millis(raw: Decimal) -> Decimal:
    """Binance writes times in ms, and in µs in newer spot files: normalise to ms."""
    return raw / _unit(raw)


def _unit(raw: Decimal) -> int:
    """Units per millisecond of a raw Binance time (1000 for µs)."""
    return 1000 if raw > Decimal(10) ** 14 else 1


def _tick_csv(file: Path, name: str) -> list[Tick]:
    rows: list[tuple[Decimal, str, Decimal]] = []
    for line, row in _rows(file, name):
        if len(row) < 3:
            raise TimelineSourceError(f"{name} line {line}: expected timestamp_ms,symbol,price")
        ms = _millis(_number(row[0], name, line, "timestamp"))
        price = _number(row[2], name, line, "price")
        if price <= 0:
            raise TimelineSourceError(f"{name} line {line}: price must be > 0")
        rows.append((ms, row[1].upper(), price))
    first = min(ms for ms, _, _ in rows)
    return [Tick(float(ms - first) / 1000.0, symbol, price) for ms, symbol, price in rows]


def _kline_csv(file: Path, name: str, symbol: str) -> list[Tick]:
    candles: list[tuple[int, Decimal, Decimal | None, list[Decimal]]] = []
    for line, row in _rows(file, name):
        if len(row) < 5:
            raise TimelineSourceError(f"{name} line {line}: expected open_time,open,high,low,close,...")
        raw_open = _number(row[0], name, line, "open time")
        fields = ("open", "high", "low", "close")
        o, h, low, c = (_number(row[i], name, line, what) for i, what in enumerate(fields, 1))
        if min(o, h, low, c) <= 0 or low > min(o, c) or h < max(o, c):
            raise TimelineSourceError(f"{name} line {line}: inconsistent candle (low <= open, close <= high)")
        span = None
        if len(row) > 6:  # the close time is the candle's last unit (ms or µs)
            span = (_number(row[6], name, line, "close time") - raw_open + 1) / _unit(raw_open)
        candles.append((line, _millis(raw_open), span, [o, h, low, c]))
    start = candles[0][1]
    ticks: list[Tick] = []
    for k, (line, opened, given, (o, h, low, c)) in enumerate(candles):
        if given is not None:
            span = given
        elif k + 1 < len(candles):
            span = candles[k + 1][1] - opened
        else:
            span = Decimal(60_000) if k == 0 else opened - candles[k - 1][1]
        if span <= 0:
            raise TimelineSourceError(f"{name} line {line}: candle times out of order")
        path = (o, low, h, c) if c >= o else (o, h, low, c)
        for step, price in enumerate(path):
            ms = opened - start + span * step / 4
            ticks.append(Tick(float(ms) / 1000.0, symbol, price))
    return ticks


def _ramp(symbol: str, points: list[tuple[float, Decimal]], every: float) -> list[Tick]:
    points = sorted(points, key=lambda p: p[0])
    ticks = [Tick(points[0][0], symbol, points[0][1])]
    for (t0, p0), (t1, p1) in itertools.pairwise(points):
        span = t1 - t0
        steps = max(1, round(span / every)) if span > 0 else 0
        for i in range(1, steps + 1):
            frac = Decimal(i) / Decimal(steps)
            price = (p0 + (p1 - p0) * frac).quantize(_QUANTUM)
            ticks.append(Tick(t0 + span * i / steps, symbol, price))
        if steps == 0:
            ticks.append(Tick(t1, symbol, p1))
    return ticks
