"""CPU of APScheduler's own work on the event loop, with the daemon's job set (issue 12).

The daemon's periodic jobs (``monitor.app.periodic``) are scheduled exactly as the daemon does
(:func:`monitor.app.periodic.scheduler` and :func:`monitor.app.periodic.schedule`), with the
periods of the default configuration, but each job's ``run`` does nothing: what is measured is the
scheduler's part only. Every event-loop callback is timed in CPU time of this thread (what other
processes do is not counted) and sorted by what it is:

- ``wakeup``: ``partial(AsyncIOScheduler.wakeup)``: due jobs found, submitted, their triggers'
  next fire times, the next timer;
- ``timer``: the ``call_later`` that asks for that wake-up (``call_soon_threadsafe``);
- ``job start``: a job task's first step (APScheduler's ``run_coroutine_job`` around ``run``);
- ``job done``: the executor's done callback (the job's events dispatched to listeners).

The periods are scaled by ``--scale`` (0.02: the once-a-second job every 20 ms) so that a few
thousand wake-ups take seconds; the cost of one wake-up does not depend on the period, only on
how many jobs are due in it, which the scaling keeps. ``--heap`` keeps that many small objects
alive (a crashing daemon's heap) so that collections inside the callbacks cost what they cost
there; the CPU of any collection inside a callback is listed apart.

    .venv/bin/python bench/sched_cpu.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import statistics
import time
from typing import Any

from monitor.app import periodic
from monitor.config.model import ExchangeConfig
from monitor.watch.catalog import CATALOG_MAX_AGE


class Idle:
    """A job of the daemon's name and period that does nothing."""

    def __init__(self, name: str, period: float) -> None:
        self.name, self.period = name, period
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1


def daemon_jobs(scale: float) -> list[Idle]:
    """The daemon's job set (``Service.startup``: the once-a-second job, then ``slower_jobs``)."""
    exchange = ExchangeConfig()
    periods = {
        "timers": 1.0,
        "snapshots": exchange.snapshot_interval,
        "resync": exchange.resync_interval,
        "catalog": CATALOG_MAX_AGE,
        "history": periodic.HISTORY_EVERY,
        "outbox_prune": periodic.OUTBOX_PRUNE_EVERY,
    }
    return [Idle(name, period * scale) for name, period in periods.items()]


def kind(callback: Any) -> str:
    """Which part of the scheduler's work a loop callback is, or "" (not the scheduler's)."""
    if isinstance(callback, functools.partial):  # run_in_event_loop's call_soon_threadsafe
        name = getattr(callback.func, "__qualname__", "")
        return "wakeup" if name == "AsyncIOScheduler.wakeup" else ""
    name = getattr(callback, "__qualname__", "") or ""
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro_name = getattr(owner.get_coro(), "__qualname__", "")
        return "job start" if coro_name == "run_coroutine_job" else ""
    if name == "AsyncIOScheduler.wakeup":  # the timer's call of the wrapper (functools.wraps names it so)
        return "timer"
    if "_do_submit_job" in name:
        return "job done"
    return ""


async def measure(seconds: float, scale: float) -> tuple[dict[str, list[tuple[float, float]]], list[Idle]]:
    times: dict[str, list[tuple[float, float]]] = {}
    gc_cpu: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, _: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.thread_time())
        elif started:
            gc_cpu.append(time.thread_time() - started.pop())

    gc.callbacks.append(on_gc)
    run = asyncio.events.Handle._run

    def timed(handle: Any) -> None:
        what = kind(handle._callback)
        if not what:
            run(handle)
            return
        before = len(gc_cpu)
        start = time.thread_time()
        run(handle)
        took = time.thread_time() - start
        times.setdefault(what, []).append((took, sum(gc_cpu[before:])))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
    jobs = daemon_jobs(scale)
    scheduler = periodic.scheduler()
    try:
        periodic.schedule(scheduler, jobs)
        scheduler.start()
        await asyncio.sleep(seconds)
        scheduler.shutdown(wait=False)
    finally:
        asyncio.events.Handle._run = run  # type: ignore[method-assign]
        gc.callbacks.remove(on_gc)
    return times, jobs


def summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    cpu = sorted(t * 1000 for t, _ in samples)
    gcs = [g * 1000 for _, g in samples if g]
    return {
        "count": len(cpu),
        "p50_ms": round(statistics.median(cpu), 3),
        "p90_ms": round(cpu[int(0.9 * (len(cpu) - 1))], 3),
        "p99_ms": round(cpu[int(0.99 * (len(cpu) - 1))], 3),
        "max_ms": round(cpu[-1], 3),
        "total_ms": round(sum(cpu), 1),
        "with_gc": len(gcs),
        "gc_max_ms": round(max(gcs), 3) if gcs else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--scale", type=float, default=0.02, help="periods × this (0.02: 1 s → 20 ms)")
    parser.add_argument(
        "--heap", type=int, default=300_000, help="small objects kept alive (a daemon's heap)"
    )
    args = parser.parse_args()
    heap = [{"i": i} for i in range(args.heap)]  # noqa: F841  (kept alive: collections scan it)
    wall, cpu = time.monotonic(), time.process_time()
    times, jobs = asyncio.run(measure(args.seconds, args.scale))
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    simulated = args.seconds / args.scale  # daemon seconds the run stands for
    report = {
        "seconds": args.seconds,
        "scale": args.scale,
        "daemon_seconds": round(simulated),
        "runs": {job.name: job.runs for job in jobs},
        "callbacks": {what: summary(samples) for what, samples in sorted(times.items())},
        "scheduler_cpu_ms_per_daemon_second": round(
            sum(t for samples in times.values() for t, _ in samples) * 1000 / simulated, 3
        ),
        "process_cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
