"""What the history job's disk pass costs the event loop while it runs in its worker thread.

``History.record`` runs in a worker thread (``asyncio.to_thread``), but whatever Python code it runs
there holds the GIL, and the event loop, woken meanwhile, waits for it: up to the switch interval
(5 ms) each time the thread does not let go by itself. ``python bench/history_gil.py --units 1000``
records ``--passes`` sampling passes of ``--units`` units (every 5 s of history time, one pass
every ``--gap`` wall seconds) into a fresh history file, each from the loop through
``asyncio.to_thread`` as the daemon's recorder does, while a probe on the loop wakes every 1 ms and
notes how late it is. Prints JSON: the probe's lag p50 / p99 / max and samples over 1 / 2 / 5 ms
during the passes; the thread's CPU per pass (``time.thread_time``: SQLite's share included) and the
pass's wall time.

Whatever ``monitor`` is importable is measured: put a base tree first on ``PYTHONPATH`` for a
baseline in the same run. Not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import monitor
from monitor.ops.history import History

PROBE = 0.001


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        start = time.monotonic()
        await asyncio.sleep(PROBE)
        lags.append(max(0.0, time.monotonic() - start - PROBE))


def record(history: History, now: float, levels: Mapping[str, float | None], cpu: list[float]) -> None:
    start = time.thread_time()
    history.record(now, levels, (), {"BTCUSDT": 30_000.0 + now % 7, "ETHUSDT": 2_000.0})
    cpu.append(time.thread_time() - start)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    units = [f"acct{i}:cross" for i in range(args.units)]
    with tempfile.TemporaryDirectory(prefix="history-gil-") as tmp:
        history = History(Path(tmp) / "history.sqlite")
        t0 = 1_800_000_000.0
        levels = {u: 1.2 + (i % 97) / 100 for i, u in enumerate(units)}
        record(history, t0, levels, [])  # units get their ids (first pass only)
        lags: list[float] = []
        cpu: list[float] = []
        walls: list[float] = []
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(lags, stop))
        for n in range(1, args.passes + 1):
            await asyncio.sleep(args.gap)
            now = t0 + 5.0 * n
            levels = {u: 1.2 + ((i + n) % 97) / 100 for i, u in enumerate(units)}
            start = time.monotonic()
            await asyncio.to_thread(record, history, now, levels, cpu)
            walls.append(time.monotonic() - start)
        stop.set()
        await prober
        history.close()
    ms = sorted(x * 1000 for x in lags)
    return {
        "benchmark": "history pass in its worker thread: loop lag",
        "tree": os.path.dirname(os.path.dirname(monitor.__file__)),
        "units": args.units,
        "passes": args.passes,
        "probe_samples": len(ms),
        "lag_p50_ms": round(ms[len(ms) // 2], 3),
        "lag_p99_ms": round(ms[int(len(ms) * 0.99)], 3),
        "lag_max_ms": round(ms[-1], 3),
        "lag_over_1ms": sum(x > 1 for x in ms),
        "lag_over_2ms": sum(x > 2 for x in ms),
        "lag_over_5ms": sum(x > 5 for x in ms),
        "pass_cpu_ms_median": round(statistics.median(cpu) * 1000, 2),
        "pass_cpu_ms_max": round(max(cpu) * 1000, 2),
        "pass_wall_ms_median": round(statistics.median(walls) * 1000, 2),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.05, help="wall seconds between passes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=1))
