"""``bench/machine_gauge.py`` driven from a bench, and its readings set beside the lag samples.

One gauge process per CPU the daemon may run on (the ``--cpus`` daemon side, else every CPU of
this process), each pinned to its CPU. For a lag sample over 5 ms, the machine during its span
(the sample's whole interval: from the probe's sleep to its late wake) is read on each CPU: the
slowest unit there against that CPU's 10th percentile (``slow``) and the latest wake (µs). With
the daemon on one CPU (``--cpus 1:0``) that is the daemon's CPU; unpinned, the daemon's thread may
be on either, so the *least* slow CPU is taken (a sample is never excused by a CPU the daemon may
not have been on).

A late sample is put down to the machine when its span had ``slow`` over :data:`SLOW` or a wake
over :data:`LATE_US` late; else it is counted as the daemon's own (``own``): an upper bound, since
the gauge does not see every slowdown the daemon's thread sees (docs/benchmarks.md, session 14).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from latency import BENCH, SimProcess
from placement import pin

SLOW = 1.5  # a unit taking 1.5× its best: the machine is slow
LATE_US = 1000.0  # a real-time thread woken 1 ms late: the vCPU was not running
PERIOD_MS = 5.0
WORK_US = 100.0

Readings = np.ndarray  # columns: wake time (monotonic s), late µs, unit µs


class Gauge(SimProcess):
    """One ``bench/machine_gauge.py`` on one CPU."""

    cpu: int | None  # the CPU it is pinned to (None: unpinned)
    started: dict[str, Any]  # its first line: the unit's calibrated rounds, real-time priority or not

    @classmethod
    async def launch(cls, cpu: int | None) -> Gauge:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / "machine_gauge.py"),
            "--period-ms",
            str(PERIOD_MS),
            "--work-us",
            str(WORK_US),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        pin(proc.pid, None if cpu is None else frozenset({cpu}))
        gauge = cls(proc)
        gauge.cpu = cpu
        gauge.started = await gauge.reply()
        return gauge

    async def readings(self, out: Path) -> Readings:
        await self.call(cmd="dump", out=str(out))
        rows = json.loads(await asyncio.to_thread(out.read_text))
        return np.array(rows, dtype=np.float64).reshape(-1, 3)


async def launch(cpus: frozenset[int] | None) -> list[Gauge]:
    """A gauge on each of ``cpus`` (every CPU this process may use when None)."""
    return [await Gauge.launch(cpu) for cpu in sorted(cpus if cpus else os.sched_getaffinity(0))]


def described(gauges: list[Gauge]) -> list[dict[str, Any]]:
    """Each gauge's CPU and what it said at start (``realtime``: whether SCHED_FIFO was granted)."""
    return [{"cpu": g.cpu, **g.started} for g in gauges]


def best(readings: Readings) -> float:
    """A CPU's normal unit time: the 10th percentile of the run (µs)."""
    return float(np.percentile(readings[:, 2], 10)) if len(readings) else float("nan")


def during(readings: list[Readings], lo: float, hi: float) -> tuple[float, float]:
    """The machine in [lo, hi]: ``(slow, late µs)``, the least slow of the CPUs (see the module)."""
    out: list[tuple[float, float]] = []
    for r in readings:
        if not len(r):
            continue
        norm = best(r)
        # a reading's unit ran just after its wake: it tells about [wake, wake + unit]
        inside = r[(r[:, 0] + r[:, 2] / 1e6 >= lo) & (r[:, 0] - r[:, 1] / 1e6 <= hi)]
        if len(inside):
            out.append((float(inside[:, 2].max()) / norm, float(inside[:, 1].max())))
        else:
            out.append((float("nan"), float("nan")))
    known = [o for o in out if o[0] == o[0]]
    return min(known) if known else (float("nan"), float("nan"))


def is_machine(slow: float, late_us: float) -> bool:
    return slow > SLOW or late_us > LATE_US


def phase_report(
    readings: list[Readings], lags: list[tuple[float, float, float]], lo: float, hi: float, period: float
) -> dict[str, Any]:
    """The machine over one phase ([lo, hi]) per CPU, and each lag sample over 5 ms beside it."""
    cpus: list[dict[str, Any]] = []
    for r in readings:
        inside = r[(r[:, 0] >= lo) & (r[:, 0] < hi)] if len(r) else r
        if not len(inside):
            cpus.append({})
            continue
        ratio = inside[:, 2] / best(r)
        cpus.append({
            "readings": len(inside),
            "unit_us_best": round(best(r), 1),
            "slow_p50": round(float(np.percentile(ratio, 50)), 2),
            "slow_p99": round(float(np.percentile(ratio, 99)), 2),
            "slow_max": round(float(ratio.max()), 2),
            "share_slow": round(float((ratio > SLOW).mean()), 4),
            "late_wake_max_us": round(float(inside[:, 1].max()), 1),
            "late_wakes_over_1ms": int((inside[:, 1] > LATE_US).sum()),
        })  # fmt: skip
    late = []
    for at, lag, _ in lags:
        if lag > 0.005:
            slow, late_us = during(readings, at - lag - period, at)
            late.append((round(lag * 1000, 1), round(slow, 2), round(late_us), at))
    own = [x for x in late if not is_machine(x[1], x[2])]
    return {
        "own_at": [x[3] for x in own],  # for the bench's own use (popped before printing)
        "cpus": cpus,
        "stalls_over_5ms_machine_slow": len(late) - len(own),
        "stalls_over_5ms_own": len(own),
        "own_lag_max_ms": max((x[0] for x in own), default=0.0),
        "late_samples": [x[:3] for x in sorted(late, key=lambda x: -x[0])[:12]],  # (lag ms, slow, late µs)
    }
