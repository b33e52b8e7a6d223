"""The event-loop thread's CPU per signed REST call, and what the shared connection pool costs it.

``python bench/rest_cost.py --accounts 1000 --seconds 40`` starts the bench simulator
(``bench/latency_sim.py``, its own process, on 127.0.0.1), makes a ``BinanceRest`` per account on
the shared transport (``monitor/exchange/rest.py``), then, as the daemon does:

- start-up's burst: every account's cross snapshot (``GET /sapi/v1/margin/account``) at once,
  which opens up to ``REST_CONNECTIONS`` keep-alive connections;
- for ``--seconds``: the key checks (``GET /sapi/v1/account/apiRestrictions``), one every
  ``--key-interval / accounts`` seconds round the accounts (``monitor/watch/key_checks.py``'s
  spread: 250 s / 1,000 = one every 0.25 s), and, with ``--snapshot-interval``, one snapshot every
  ``snapshot-interval / accounts`` seconds (evenly spread: the daemon's own rounds are a few
  workers back to back, ``monitor/app/periodic.py``); each call its own task;
- then ``--back-to-back`` key checks in a row (the loop never idle between them: what a call costs
  with warm caches, against the spread ones after 0.25 s of an idle loop).

Measured on this (the loop's) thread, ``time.thread_time``: each call's CPU (the sum of its
coroutine's steps) and its costliest single step (what the loop runs without a break); the HTTP
connections opened and closed (``connection_made`` / ``_call_connection_lost``), the closes that
ran back to back (within 1 ms: one loop turn's batch) and their CPU; the collections (CPU, count per
generation) in the window, the heap frozen after the burst as the daemon freezes it at ready.
Whatever ``monitor`` is importable is measured: put a base tree first on ``PYTHONPATH`` for a
baseline. Prints JSON. Not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path as FsPath
from typing import Any

from aiohttp.client_proto import ResponseHandler
from crash import crash_path
from latency import machine, pct, start_sim
from latency_workload import make_workload

import monitor
from monitor.exchange.rest import BinanceRest, RetryPolicy
from monitor.logs import configure_logging


class GcClock:
    """This thread's CPU in garbage collections, in all and per generation (seconds)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.by_generation = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
            return
        spent = time.thread_time() - self._started
        self.total += spent
        self.by_generation[info["generation"]] += spent
        self.count[info["generation"]] += 1


GC = GcClock()


class Timed:
    """Awaits a coroutine step by step, noting each step's CPU on this thread (seconds), and of it
    what no garbage collection took (``bare``)."""

    def __init__(self, coro: Any) -> None:
        self.coro = coro
        self.steps: list[float] = []
        self.bare: list[float] = []

    def __await__(self) -> Generator[Any, Any, Any]:
        value: Any = None
        error: BaseException | None = None
        while True:
            t0, gc0 = time.thread_time(), GC.total
            try:
                future = self.coro.throw(error) if error is not None else self.coro.send(value)
            except StopIteration as stop:
                self._note(t0, gc0)
                return stop.value
            self._note(t0, gc0)
            try:
                value, error = (yield future), None
            except BaseException as exc:  # handed on to the coroutine, as a task does
                value, error = None, exc

    def _note(self, t0: float, gc0: float) -> None:
        spent = time.thread_time() - t0
        self.steps.append(spent)
        self.bare.append(spent - (GC.total - gc0))


class Connections:
    """Counts HTTP connections opened and closed in this process; times each close's callback."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed: list[tuple[float, float]] = []  # (monotonic, CPU s) per connection_lost callback
        made = ResponseHandler.connection_made
        lost = asyncio.selector_events._SelectorTransport._call_connection_lost  # type: ignore[attr-defined]

        def connection_made(proto: Any, transport: Any) -> None:
            self.opened += 1
            made(proto, transport)

        def call_connection_lost(transport: Any, exc: BaseException | None) -> None:
            t0 = time.thread_time()
            lost(transport, exc)
            self.closed.append((time.monotonic(), time.thread_time() - t0))

        ResponseHandler.connection_made = connection_made  # type: ignore[method-assign,assignment]
        asyncio.selector_events._SelectorTransport._call_connection_lost = call_connection_lost  # type: ignore[attr-defined]

    def batches(self, since: float, until: float) -> list[tuple[int, float]]:
        """The closes from ``since`` to ``until`` in runs less than 1 ms apart: (count, CPU s) per run."""
        runs: list[tuple[int, float]] = []
        last = -1.0
        for at, cpu in self.closed:
            if not since <= at < until:
                continue
            if runs and at - last < 0.001:
                n, c = runs[-1]
                runs[-1] = (n + 1, c + cpu)
            else:
                runs.append((1, cpu))
            last = at
        return runs


class Calls:
    """Each call's CPU and its costliest step, by operation."""

    def __init__(self) -> None:
        self.cpu: dict[str, list[float]] = {}
        self.step: dict[str, list[float]] = {}
        self.bare: dict[str, list[float]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    def start(self, name: str, call: Callable[[], Awaitable[Any]]) -> None:
        async def run() -> None:
            timed = Timed(call())
            await timed
            self.cpu.setdefault(name, []).append(sum(timed.steps))
            self.step.setdefault(name, []).append(max(timed.steps))
            self.bare.setdefault(name, []).append(max(timed.bare))

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, cpu in self.cpu.items():
            steps = self.step[name]
            out[name] = {
                "calls": len(cpu),
                "cpu_ms_p50": pct(cpu, 50),
                "cpu_ms_p99": pct(cpu, 99),
                "cpu_ms_max": round(max(cpu) * 1000, 3),
                "step_ms_p99": pct(steps, 99),
                "step_ms_max": round(max(steps) * 1000, 3),
                "step_without_gc_ms_max": round(max(self.bare[name]) * 1000, 3),
            }
        return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("json", "warning")
    conns = Connections()
    work = make_workload(args.accounts, 20, 3, args.seed, levels=(1.7, 1.9))
    path, _ = crash_path(work.prices, [1000], 1.0, 0.0, args.seed)
    policy = RetryPolicy(attempts=1)
    with tempfile.TemporaryDirectory(prefix="rest-cost-bench-") as tmp_name:
        sim, url = await start_sim(FsPath(tmp_name), work, path)
        rests: list[BinanceRest] = []
        try:
            for name in work.names:
                rests.append(
                    await BinanceRest.connect(name, f"key-{name}", f"secret-{name}", url, policy=policy)
                )
            calls = Calls()
            burst = Calls()
            for rest in rests:  # start-up: every account's snapshot at once
                burst.start("burst_snapshot", rest.cross_account)
            await asyncio.gather(*burst.tasks)
            gc.freeze()  # as the daemon's settle() at ready (monitor/ops/heap.py)
            opened_at_start = conns.opened
            gc_before, gc_count = GC.total, list(GC.count)
            since = time.monotonic()
            cpu0 = time.thread_time()
            key_step = args.key_interval / len(rests)
            snap_step = args.snapshot_interval / len(rests) if args.snapshot_interval else 0.0
            next_key, next_snap = since + key_step, since + (snap_step or args.seconds * 2)
            k = s = 0
            while (now := time.monotonic()) < since + args.seconds:
                if now >= next_key:
                    calls.start("key_check", rests[k % len(rests)].key_permissions)
                    k, next_key = k + 1, next_key + key_step
                if now >= next_snap:
                    calls.start("snapshot", rests[s % len(rests)].cross_account)
                    s, next_snap = s + 1, next_snap + snap_step
                await asyncio.sleep(max(0.0, min(next_key, next_snap) - time.monotonic()))
            await asyncio.gather(*calls.tasks)
            loop_cpu = time.thread_time() - cpu0
            gc_ms = round((GC.total - gc_before) * 1000, 3)
            gc_runs = [n - n0 for n, n0 in zip(GC.count, gc_count, strict=True)]
            until = time.monotonic()
            open_at_end = conns.opened - len(conns.closed)
            warm = Calls()  # the same call back to back, the loop never idle between: warm caches
            for i in range(args.back_to_back):
                warm.start("key_check_back_to_back", rests[i % 10].key_permissions)
                await asyncio.gather(*warm.tasks)
        finally:
            for rest in rests:
                await rest.close()
            await sim.stop()
    batches = conns.batches(since, until)
    biggest = max(batches, default=(0, 0.0))
    summary = calls.summary()
    return {
        "benchmark": "loop CPU per signed REST call",
        "tree": os.path.dirname(os.path.dirname(monitor.__file__)),
        "machine": machine(),
        "accounts": args.accounts,
        "seconds": args.seconds,
        "key_interval_s": args.key_interval,
        "snapshot_interval_s": args.snapshot_interval,
        "burst": burst.summary()["burst_snapshot"],
        "connections_after_burst": opened_at_start,
        **summary,
        **warm.summary(),
        "gc_ms": gc_ms,
        "gc_runs_by_generation": gc_runs,
        "loop_cpu_ms_per_call": round(loop_cpu * 1000 / max(1, sum(len(v) for v in calls.cpu.values())), 3),
        "connections_opened": conns.opened - opened_at_start,
        "connections_open_at_end": open_at_end,
        "connections_closed": sum(n for n, _ in batches),
        "close_batches": len(batches),
        "close_batch_max": biggest[0],
        "close_batch_max_cpu_ms": round(biggest[1] * 1000, 3),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--key-interval", type=float, default=250.0, help="each key's check interval, s")
    parser.add_argument("--snapshot-interval", type=float, default=0.0, help="each account's, s (0: none)")
    parser.add_argument("--back-to-back", type=int, default=200, help="key checks in a row, after the window")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=1))
