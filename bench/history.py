"""History file size and status-page load time with 1,000 units over 24 simulated hours; prints JSON.

1. **Fill**: a fresh :class:`monitor.ops.history.History` (its defaults: 10 min at full resolution,
   24 h of minutes) receives 24 simulated hours for 1,000 units whose levels walk randomly
   between 1.05 and 3: one pass a minute up to the last 11 minutes, then one pass every 5 s (the
   daemon's ``HISTORY_EVERY``), so the file ends exactly as the daemon's would; each pass also
   writes 50 symbols' prices, and 1 % of the units fire an alert each hour. Reported: the time of
   one full-rate pass (1,000 units, in the worker thread the daemon uses: p50 / p99 / max), the
   file's size and row counts after 24 h, and again after one more simulated hour (bounded: the
   same).
2. **Page**: the daemon's real HTTP app (``monitor.ops.http`` + ``monitor.ops.page``) over an
   :class:`~monitor.risk.book.AccountBook` of the same 1,000 units (BTC and ETH against a USDT loan,
   exact reports with positions and stress table) and that history file. Reported: ``/page/units``
   and one ``/page/history`` (server time and bytes, median of 5: for ``/page/units`` the first
   load, every unit's exact report), the time the daemon's loop spends on one later poll of
   ``/page/units`` (live levels, ``refresh_budget`` = 100 full reports; median of 5), and the
   page's load time in headless Chromium: navigation start → the first complete render of all
   1,000 cards and of the first 24 charts (the page's own ``performance.now()`` mark,
   ``body.dataset.renderedMs``), for ``--loads`` navigations in one browser.

Usage: ``python bench/history.py [--units 1000] [--loads 3] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser import chromium, chromium_binary

from monitor.ops.history import Event, History
from monitor.ops.http import start_http
from monitor.ops.metrics import Metrics
from monitor.ops.page import Feed, page_routes
from monitor.ops.status_extras import enrich
from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars, Position

DAY = 86_400.0
FULL_EVERY = 5.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fill(history: History, units: list[str], rng: random.Random, start: float, hours: float) -> list[float]:
    """Write ``hours`` of samples from ``start``; returns the seconds of each full-rate pass."""
    levels = {u: rng.uniform(1.3, 2.5) for u in units}
    symbols = [f"S{i}USDT" for i in range(50)]
    end = start + hours * 3600
    t = start
    full_rate: list[float] = []
    while t < end:
        for u in units:
            levels[u] = min(3.0, max(1.05, levels[u] * (1 + rng.gauss(0, 0.002))))
        events = []
        if t % 3600 == 0:
            alerted = rng.sample(units, len(units) // 100)
            events = [Event(u, t, "firing", "normal", 1.5, levels[u]) for u in alerted]
        prices = {s: 100 + rng.random() for s in symbols}
        began = time.perf_counter()
        history.record(t, dict(levels), events, prices)
        took = time.perf_counter() - began
        step = FULL_EVERY if end - t <= 660 else 60.0
        if step == FULL_EVERY:
            full_rate.append(took)
        t += step
    return full_rate


def book_of(units: int) -> AccountBook:
    book = AccountBook(quote="USDT")
    bars = Bars.classic()
    rng = random.Random(2)
    for i in range(units):
        book.upsert_cross(
            f"acct{i:04d}",
            {
                "BTC": Position(free=Decimal(str(round(rng.uniform(0.1, 2), 4)))),
                "ETH": Position(free=Decimal(str(round(rng.uniform(1, 20), 3)))),
                "USDT": Position(borrowed=Decimal(rng.randint(5_000, 40_000))),
            },
            bars,
        )
    book.on_price("BTCUSDT", 30_000.0)
    book.on_price("ETHUSDT", 2_000.0)
    return book


async def page(history: History, units: int, now: float, loads: int) -> dict[str, Any]:
    book = book_of(units)
    feed = Feed(
        unit_ids=book.units,
        status_of=lambda u: enrich(book, u, book.report(u).to_json(), {}),
        firing=lambda u: {},
        blind=set,
        age=lambda u: 0.5,
        history=history,
        clock=lambda: now,
        cache_seconds=0.0,
        live=lambda u: (book.is_priced(u), book.level(u)),
    )
    server = await start_http(
        metrics=Metrics(version="bench"), status=lambda: [], ready=lambda: True, routes=page_routes(feed)
    )
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for name, path in (("units", "/page/units"), ("history", "/page/history?unit=cross:acct0001")):
                times, size = [], 0
                for _ in range(5):
                    feed._details.clear()  # every run a first load
                    began = time.perf_counter()
                    async with session.get(server.url + path) as r:
                        size = len(await r.read())
                    times.append(time.perf_counter() - began)
                out[f"{name}_ms"] = round(statistics.median(times) * 1000, 1)
                out[f"{name}_bytes"] = size
        polls = []
        await feed.units()
        for _ in range(5):
            began = time.perf_counter()
            await feed.units()
            polls.append(time.perf_counter() - began)
        out["poll_units_ms"] = round(statistics.median(polls) * 1000, 1)
        if chromium_binary() is None:
            out["load_ms"] = "chromium not installed"
            return out
        loads_ms: list[float] = []
        with tempfile.TemporaryDirectory() as profile:
            async with chromium(Path(profile)) as browser:
                await browser.viewport(1280, 900)
                for _ in range(loads):
                    await browser.goto("about:blank")
                    await browser.goto(server.url + "/")
                    ms = await browser.wait_for("document.body?.dataset.renderedMs", within=120)
                    cards = await browser.eval("document.querySelectorAll('section.unit').length")
                    charts = await browser.eval("document.querySelectorAll('svg.chart polyline').length")
                    assert cards == units, cards
                    loads_ms.append(float(ms))
                out["charts_drawn_at_load"] = charts
        out["load_ms_runs"] = loads_ms
        out["load_ms_median"] = statistics.median(loads_ms)
    finally:
        await server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    units = [f"cross:acct{i:04d}" for i in range(args.units)]
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "units": args.units,
    }
    with tempfile.TemporaryDirectory() as tmp:
        history = History(Path(tmp) / "history.sqlite")
        began = time.perf_counter()
        passes = fill(history, units, rng, T0, 24)
        result["fill_seconds"] = round(time.perf_counter() - began, 1)
        result["full_rate_pass_ms"] = {
            "p50": round(pct(passes, 0.5) * 1000, 1),
            "p99": round(pct(passes, 0.99) * 1000, 1),
            "max": round(max(passes) * 1000, 1),
            "passes": len(passes),
        }
        history._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        result["after_24h"] = {"bytes": history.size(), "rows": history.counts()}
        fill(history, units, rng, T0 + DAY, 1)
        history._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        result["after_25h"] = {"bytes": history.size(), "rows": history.counts()}
        result["page"] = asyncio.run(page(history, args.units, T0 + DAY + 3600, args.loads))
        history.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
