"""Benchmark of the account book's hot path; prints one JSON document.

Workload (issue 2): 1,000 cross accounts each holding 8 of 50 assets (5 of them priced through
BTC), a USDT loan and a short in one of its assets; 100,000 ticks of a random walk (0.1 % steps)
over the 50 symbols. Each account has the band of its current rung of the 1.5 / 1.3 / 1.1 ladder,
as the alert policy would set it; a unit reported out of its band gets its new rung's band (outside
the timing). Measured in the same run:

- ``engine``: ``AccountBook.on_price``: ticks/s over whole runs without per-tick timers, and
  per-tick latency p50/p99/max timed around each call (band check included), each the median of
  ``--runs`` runs on a fresh book;
- ``naive``: the straightforward loop that recomputes every account's level in Python on every tick
  and checks its band, on fewer ticks (``--naive-ticks``), as ticks/s;
- ``dense_numpy``: a stronger baseline that recomputes every account on every tick as two dense
  matrix-vector products (1,000 x 50) plus the band check;
- ``narrow_bands``: the engine again with bands of +-1 % around each level, so that units leave
  their band thousands of times and get re-banded (the reporting path exercised, one run);
- ``small``: one account with ten assets (a personal deployment), per-tick latency.

Usage: ``python bench/engine.py [--runs 5] [--ticks 100000] [--seed 1]``. Runs in well under 60 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars, Position

INF = math.inf
LADDER = (1.1, 1.3, 1.5)
BARS = Bars.classic()


def band_for(level: float | None) -> tuple[float, float]:
    """The rung of the ladder the level sits on (no debt: [1.5, inf])."""
    if level is None:
        return (LADDER[-1], INF)
    lo, hi = 0.0, INF
    for bar in LADDER:
        if level >= bar:
            lo = bar
        elif hi == INF:
            hi = bar
    return (lo, hi)


class Market:
    """``n_assets`` assets, the last ``bridged`` priced only through BTC; a seeded random walk of ticks."""

    def __init__(self, n_assets: int, seed: int, bridged_count: int) -> None:
        self.rng = random.Random(seed)
        self.assets = ["BTC"] + [f"A{i:02d}" for i in range(1, n_assets)]
        bridged = set(self.assets[n_assets - bridged_count :])
        self.catalog: dict[str, tuple[str, str]] = {}
        for a in self.assets:
            if a in bridged:
                self.catalog[a + "BTC"] = (a, "BTC")
            else:
                self.catalog[a + "USDT"] = (a, "USDT")
        self.symbols = sorted(self.catalog)
        self.start = {s: (60000.0 if s == "BTCUSDT" else self.rng.uniform(0.5, 500.0)) for s in self.symbols}
        for a in bridged:
            self.start[a + "BTC"] = self.rng.uniform(1e-6, 1e-3)

    def usdt(self, asset: str, prices: dict[str, float]) -> float:
        if asset + "USDT" in prices:
            return prices[asset + "USDT"]
        return prices[asset + "BTC"] * prices["BTCUSDT"]

    def ticks(self, n: int, seed: int, symbols: Sequence[str] | None = None) -> list[tuple[str, float]]:
        rng = np.random.default_rng(seed)
        names = list(symbols or self.symbols)
        which = rng.integers(0, len(names), n)
        steps = np.exp(rng.normal(0.0, 1e-3, n))
        price = dict(self.start)
        out: list[tuple[str, float]] = []
        for k, step in zip(which.tolist(), steps.tolist(), strict=True):
            s = names[k]
            price[s] = float(f"{price[s] * step:.8g}")
            out.append((s, price[s]))
        return out


def accounts(market: Market, n: int, per: int, seed: int) -> list[dict[str, Position]]:
    """Accounts holding ``per`` assets worth 1,000-10,000 USDT each, a USDT loan for a level of 1.6-3,
    and a short worth 20 % of the collateral in one of their assets."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chosen = rng.sample(market.assets, per)
        rows: dict[str, Position] = {}
        total = 0.0
        for a in chosen:
            value = rng.uniform(1000, 10000)
            total += value
            qty = value / market.usdt(a, market.start)
            rows[a] = Position(free=Decimal(f"{qty:.8f}"))
        short = chosen[0]
        debt = total * 0.2 / market.usdt(short, market.start)
        rows[short] = Position(free=rows[short].free, borrowed=Decimal(f"{debt:.8f}"))
        loan = total / rng.uniform(1.6, 3.0) - total * 0.2
        rows["USDT"] = Position(borrowed=Decimal(f"{max(loan, 1.0):.2f}"))
        out.append(rows)
    return out


def build(market: Market, accts: list[dict[str, Position]]) -> tuple[AccountBook, list[str]]:
    book = AccountBook()
    book.set_catalog(market.catalog)
    ids = [book.upsert_cross(f"acct{i}", a, BARS) for i, a in enumerate(accts)]
    for s in market.symbols:
        book.on_price(s, market.start[s])
    for uid in ids:
        book.set_band(uid, *band_for(book.level(uid)))
    book.drain_pending()
    return book, ids


def rebands(book: AccountBook, out: Sequence[str], width: float | None = None) -> None:
    """What the alert policy does with a reported unit: give it the band around its new level."""
    for uid in out:
        level = book.level(uid)
        if width is None or level is None:
            book.set_band(uid, *band_for(level))
        else:
            book.set_band(uid, level * (1 - width), level * (1 + width))
    book.drain_pending()


def run_engine(
    book: AccountBook, ticks: list[tuple[str, float]], width: float | None = None
) -> tuple[float, int]:
    """Whole-run throughput (ticks/s, re-banding included), band exits."""
    on_price = book.on_price
    exits = 0
    t0 = time.perf_counter()
    for s, p in ticks:
        out = on_price(s, p)
        if out:
            exits += len(out)
            rebands(book, out, width)
    return len(ticks) / (time.perf_counter() - t0), exits


def latencies(book: AccountBook, ticks: list[tuple[str, float]]) -> list[int]:
    on_price = book.on_price
    clock = time.perf_counter_ns
    lat = [0] * len(ticks)
    for k, (s, p) in enumerate(ticks):
        t0 = clock()
        out = on_price(s, p)
        lat[k] = clock() - t0
        if out:
            rebands(book, out)
    return lat


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def timer_overhead_us() -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(20000):
        t0 = clock()
        samples.append(clock() - t0)
    return statistics.median(samples) / 1000.0


class Naive:
    """Every account recomputed in plain Python on every tick."""

    def __init__(self, market: Market, accts: list[dict[str, Position]]) -> None:
        self.market = market
        self.prices = dict(market.start)
        self.rows = []
        for a in accts:
            fixed_a = float(sum((p.held for x, p in a.items() if x == "USDT"), Decimal(0)))
            fixed_l = float(sum((p.owed for x, p in a.items() if x == "USDT"), Decimal(0)))
            terms = [(x, float(p.held), float(p.owed)) for x, p in a.items() if x != "USDT"]
            self.rows.append((fixed_a, fixed_l, terms))
        self.bands = [band_for(self.level(i)) for i in range(len(self.rows))]

    def level(self, i: int) -> float | None:
        fa, fl, terms = self.rows[i]
        usdt = self.market.usdt
        a, lia = fa, fl
        for x, h, o in terms:
            p = usdt(x, self.prices)
            a += h * p
            lia += o * p
        return a / lia if lia > 0 else None

    def tick(self, symbol: str, price: float) -> list[int]:
        self.prices[symbol] = price
        out = []
        for i in range(len(self.rows)):
            lv = self.level(i)
            lo, hi = self.bands[i]
            v = INF if lv is None else lv
            if v < lo or v > hi:
                out.append(i)
                self.bands[i] = band_for(lv)
        return out


class Dense:
    """Every account recomputed on every tick as dense matrix-vector products (numpy)."""

    def __init__(self, market: Market, accts: list[dict[str, Position]]) -> None:
        self.market = market
        self.col = {a: k for k, a in enumerate(market.assets)}
        n, m = len(accts), len(market.assets)
        self.h = np.zeros((n, m))
        self.o = np.zeros((n, m))
        self.fa = np.zeros(n)
        self.fl = np.zeros(n)
        for i, a in enumerate(accts):
            for x, p in a.items():
                if x == "USDT":
                    self.fa[i] += float(p.held)
                    self.fl[i] += float(p.owed)
                else:
                    self.h[i, self.col[x]] = float(p.held)
                    self.o[i, self.col[x]] = float(p.owed)
        self.prices = dict(market.start)
        self.p = np.array([market.usdt(a, self.prices) for a in market.assets])
        lv = (self.fa + self.h @ self.p) / (self.fl + self.o @ self.p)
        bands = [band_for(float(v)) for v in lv]
        self.lo = np.array([b[0] for b in bands])
        self.hi = np.array([b[1] for b in bands])

    def tick(self, symbol: str, price: float) -> Sequence[int]:
        self.prices[symbol] = price
        base = symbol[:-4] if symbol.endswith("USDT") else symbol[:-3]
        moved = (
            [base]
            if symbol != "BTCUSDT"
            else [a for a in self.market.assets if a == "BTC" or a + "BTC" in self.prices]
        )
        for a in moved:
            self.p[self.col[a]] = self.market.usdt(a, self.prices)
        lv = (self.fa + self.h @ self.p) / (self.fl + self.o @ self.p)
        out = np.flatnonzero((lv < self.lo) | (lv > self.hi))
        for i in out.tolist():
            self.lo[i], self.hi[i] = band_for(float(lv[i]))
        found: list[int] = out.tolist()
        return found


def rate(fn: Callable[[str, float], object], ticks: list[tuple[str, float]]) -> float:
    t0 = time.perf_counter()
    for s, p in ticks:
        fn(s, p)
    return len(ticks) / (time.perf_counter() - t0)


def small_case(n_ticks: int, seed: int) -> dict[str, float]:
    """One account, ten assets (one borrowed, one priced through BTC), ticks over its ten symbols."""
    market = Market(10, seed, 1)
    acct = accounts(market, 1, 10, seed)[0]
    book, _ = build(market, [acct])
    ticks = market.ticks(n_ticks, seed + 7)
    lat = latencies(book, ticks)
    bridge = [v for (s, _), v in zip(ticks, lat, strict=True) if s == "BTCUSDT"]
    return {
        "ticks": n_ticks,
        "p50_us": pct(lat, 0.5),
        "p99_us": pct(lat, 0.99),
        "mean_us": statistics.fmean(lat) / 1000.0,
        "bridge_symbol_p50_us": pct(bridge, 0.5),
        "ticks_per_s": run_engine(book, ticks)[0],
    }


def machine() -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--assets", type=int, default=50)
    ap.add_argument("--per-account", type=int, default=8)
    ap.add_argument("--bridged", type=int, default=5, help="assets priced only through BTC")
    ap.add_argument("--ticks", type=int, default=100_000)
    ap.add_argument("--naive-ticks", type=int, default=300)
    ap.add_argument("--dense-ticks", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    market = Market(args.assets, args.seed, args.bridged)
    accts = accounts(market, args.accounts, args.per_account, args.seed)
    ticks = market.ticks(args.ticks, args.seed + 1)

    rates, exits, p50s, p99s, maxes, drifts, bridge_p50s = [], [], [], [], [], [], []
    for _ in range(args.runs):  # each run: a fresh book for throughput, another for latencies
        book, _ids = build(market, accts)
        r, e = run_engine(book, ticks)
        rates.append(r)
        exits.append(e)
        drifts.append(book.resync())
        book, _ids = build(market, accts)
        lat = latencies(book, ticks)
        bridge_p50s.append(pct([v for (s, _), v in zip(ticks, lat, strict=True) if s == "BTCUSDT"], 0.5))
        p50s.append(pct(lat, 0.5))
        p99s.append(pct(lat, 0.99))
        maxes.append(max(lat) / 1000.0)
    stats = book.stats()
    narrow, _ids = build(market, accts)
    rebands(narrow, narrow.units(), 0.01)
    narrow_rate, narrow_exits = run_engine(narrow, ticks, 0.01)

    naive = Naive(market, accts)
    naive_rate = rate(naive.tick, ticks[: args.naive_ticks])
    dense = Dense(market, accts)
    dense_rate = rate(dense.tick, ticks[: args.dense_ticks])
    engine_rate = statistics.median(rates)
    result = {
        "machine": machine(),
        "workload": {
            "accounts": args.accounts,
            "assets": args.assets,
            "assets_per_account": args.per_account,
            "ticks": args.ticks,
            "runs": args.runs,
            "bridged_assets": args.bridged,
            "mean_fanout_per_leg": stats["mean_fanout"],
            "band_exits_per_run": statistics.median(exits),
        },
        "engine": {
            "ticks_per_s": engine_rate,
            "ticks_per_s_runs": rates,
            "p50_us": statistics.median(p50s),
            "p99_us": statistics.median(p99s),
            "max_us": statistics.median(maxes),
            "bridge_symbol_p50_us": statistics.median(bridge_p50s),
            "full_recomputes_per_run": stats["full_recomputes"],
            "timer_overhead_us": timer_overhead_us(),
            "max_resync_drift": max(drifts),
        },
        "narrow_bands": {"band_width": 0.01, "ticks_per_s": narrow_rate, "band_exits": narrow_exits},
        "naive": {"ticks": args.naive_ticks, "ticks_per_s": naive_rate, "speedup": engine_rate / naive_rate},
        "dense_numpy": {
            "ticks": args.dense_ticks,
            "ticks_per_s": dense_rate,
            "speedup": engine_rate / dense_rate,
        },
        "small": small_case(args.ticks, args.seed),
        "seconds": 0.0,
    }
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
