"""The key checks of many accounts on a quiet daemon: how they come due, and the loop lag they cost.

``python bench/key_checks.py --accounts 1000 --interval 30 --seconds 65`` starts the daemon on the
bench simulator (``bench/latency_sim.py``, its own process) with every account, the connection
budget lifted (as ``steady_service``) and the key-check interval set to ``--interval`` (the
daemon's own default is ``max(5 s, accounts / 4)``: 250 s at 1,000 accounts, too long to wait
for here). From ``--settle`` seconds after ready (start-up's own work done) it records, for
``--seconds``:

- every key check started (``BinanceRest.key_permissions`` wrapped: its start time), and from them
  the most checks started within any 100 ms and within any 1 s;
- the loop lag: a 10 ms timer's lateness (wall clock), samples over 5 ms and the maximum.

``GC_SIZES=1`` (environment) also counts the objects each collection of the window walked
(generations 0 and 1), with their top types (by allocation site under ``python -X tracemalloc=8``,
which slows the daemon so much that its timeline bunches up); ``GC_SIZES=2`` names them by what
they hold and what holds them (a tuple by its items' types, a timer by its callback, one
example's referrers three steps up; a full collection's generation 2 too), without tracemalloc.
Both slow every collection: their lag figures are not timings.

Prices do not move (the simulator resends the quotes once a second): what is measured is the
daemon's own housekeeping. Whatever ``monitor`` is importable is measured: put a base tree first
on ``PYTHONPATH`` for a baseline in the same run. Prints JSON. Not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import threading
import time
import tracemalloc
import types
from collections import Counter
from pathlib import Path as FsPath
from typing import Any

import yaml
from crash import crash_path, scheduled_job
from gc_census import _site
from lag_probe import STALL, LagProbe
from latency import daemon_config, machine, pct, start_sim, warm_until_ready
from latency_workload import make_workload
from loop_names import Ring, compose, key_of, snapshot

import monitor
from monitor.config.model import load_config
from monitor.exchange.rest import BinanceRest
from monitor.logs import configure_logging
from monitor.service import Service


def record_key_checks() -> list[float]:
    """Wrap ``BinanceRest.key_permissions`` to note each call's start (monotonic seconds)."""
    started: list[float] = []
    original = BinanceRest.key_permissions

    async def key_permissions(self: BinanceRest, *args: Any, **kwargs: Any) -> Any:
        started.append(time.monotonic())
        return await original(self, *args, **kwargs)

    BinanceRest.key_permissions = key_permissions  # type: ignore[method-assign]
    return started


def time_callbacks(ring: Ring) -> None:
    """Every loop callback into ``ring`` (wall start, wall end, thread CPU, what ran), so that a late
    lag sample can name what filled its span (as ``bench/crash.py --time-callbacks``; ~1.4 µs each)."""
    run = asyncio.events.Handle._run

    def timed(handle: Any) -> None:
        snap = snapshot(handle._callback, handle._args)
        key, job = key_of(snap), scheduled_job(snap.task)
        if job:  # which periodic job (they all step the one coroutine run_coroutine_job)
            key = (key[0], f"{key[1].co_qualname if hasattr(key[1], 'co_qualname') else key[1]} ({job})")
        wall, cpu = time.monotonic(), time.thread_time()
        run(handle)
        ring.add((wall, time.monotonic(), time.thread_time() - cpu, key))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]


Collection = tuple[float, float, int, str]  # (wall start, wall end, generation, thread name)
SIZES: list[tuple[float, int, int, list[tuple[str, int]]]] = []  # GC_SIZES=1: gens 0-1 at each start


def _what(obj: object) -> str:
    """GC_SIZES=2: an object named by what it holds, where its type alone says little (a tuple by
    its items' types, a generator or frame by its code, a cell by its content's type)."""
    kind = type(obj).__qualname__
    if isinstance(obj, tuple):
        inner = ", ".join(_what(x) if isinstance(x, tuple) else type(x).__qualname__ for x in obj[:3])
        return f"tuple({inner}{', ...' if len(obj) > 3 else ''})"
    if isinstance(obj, list):
        size = f"{len(obj)}" if len(obj) <= 10 else "10+"
        return f"list[{type(obj[0]).__qualname__ if obj else ''}] of {size}"
    if isinstance(obj, asyncio.TimerHandle):
        callback = getattr(obj, "_callback", None)
        name = getattr(callback, "__qualname__", type(callback).__qualname__)
        return f"TimerHandle {name}{' cancelled' if obj.cancelled() else ''}"
    code = getattr(obj, "gi_code", None) or getattr(obj, "cr_code", None) or getattr(obj, "f_code", None)
    if code is not None:
        return f"{kind} {code.co_qualname}"
    if kind == "cell":
        try:
            return f"cell({type(obj.cell_contents).__qualname__})"  # type: ignore[attr-defined]
        except ValueError:
            return "cell(empty)"
    return kind


def _holder(obj: object, mine: list[object], depth: int = 3) -> str:
    """What holds ``obj`` (GC_SIZES=2), ``depth`` steps up: each step's first referrer but the
    census's own containers (``mine``) and frames, named by :func:`_what` (a dict by a few keys)."""
    chain = []
    for _ in range(depth):
        refs = [
            r for r in gc.get_referrers(obj)
            if not any(r is m for m in mine) and not isinstance(r, types.FrameType)
        ]  # fmt: skip
        if not refs:
            break
        mine.append(refs)
        obj = refs[0]
        chain.append(f"dict{sorted(map(str, obj))[:3]}" if type(obj) is dict else _what(obj))
    return " < ".join(chain) or "?"


def record_collections() -> list[Collection]:
    """Every garbage collection of this process: when, which generation, in which thread."""
    done: list[Collection] = []
    began = [0.0]

    sizes = os.environ.get("GC_SIZES", "") not in ("", "0")  # slows every collection: not for timings
    label = _what if os.environ.get("GC_SIZES") == "2" else (lambda o: type(o).__qualname__)

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if sizes:
                gen = info["generation"]
                walked = gen + 1 if label is _what else min(gen, 1) + 1  # GC_SIZES=2: a full one's gen 2 too
                young = [o for g in range(walked) for o in gc.get_objects(g)]
                sites = tracemalloc.is_tracing()  # python -X tracemalloc=8: by allocation site too
                labels = [f"{type(o).__qualname__} @ {_site(o)}" if sites else label(o) for o in young]
                top = Counter(labels).most_common(6)
                if label is _what:  # each top kind's holder, from one example (GC_SIZES=2)
                    first = {name: young[i] for i, name in reversed(list(enumerate(labels)))}
                    mine: list[object] = [young, labels, first]
                    top = [(f"{name} in {_holder(first[name], mine)}", n) for name, n in top]
                    del first, mine
                SIZES.append((time.monotonic(), gen, len(young), top))
            began[0] = time.monotonic()
        else:
            done.append((began[0], time.monotonic(), info["generation"], threading.current_thread().name))

    gc.callbacks.append(on_gc)
    return done


def gc_sizes(started: float, since: float, until: float) -> dict[str, Any]:
    """GC_SIZES=1: how many objects the collections of the measured window walked (generation 0,
    or 0 and 1), by generation: count, mean, max, and the largest three with their top types."""
    out: dict[str, Any] = {}
    for gen in (0, 1, 2):
        mine = [(t, n, kinds) for t, g, n, kinds in SIZES if g == gen and since <= t < until]
        if mine:
            big = sorted(mine, key=lambda m: -m[1])[:3]
            out[f"gen{gen}"] = {
                "n": len(mine), "mean_objects": round(sum(m[1] for m in mine) / len(mine)),
                "max_objects": big[0][1],
                "largest": [[round(t - started, 2), n, kinds[:4]] for t, n, kinds in big],
            }  # fmt: skip
    return out


def late_spans(probe: LagProbe, started: float, collections: list[Collection]) -> list[dict[str, Any]]:
    """Each lag sample over 5 ms: when (s since start-up began), how late, the loop thread's
    run-queue wait, the collections that overlapped it (generation, ms, thread) and the callbacks
    that filled its span by CPU (top 4: name, count, CPU ms)."""
    out = []
    for at, lag, ran in probe.late:
        c = compose(at - lag, at, ran)
        top = sorted(c.by_name.items(), key=lambda kv: -kv[1][1])[:4]
        gcs: list[Any] = [
            [g, round((e - s) * 1000, 2), t] for s, e, g, t in collections if s < at and e > at - lag
        ]
        gcs += [["objects", g, n, top] for t, g, n, top in SIZES if at - lag - 0.02 < t < at]
        out.append({
            "at_s": round(at - started, 2), "lag_ms": round(lag * 1000, 1),
            "runq_ms": round(probe.runq.get(at, 0.0) * 1000, 2), "cpu_ms": c.cpu_ms, "gap_ms": c.gap_ms,
            "gc": gcs, "top": [[name, n, ms] for name, (n, ms) in top],
        })  # fmt: skip
    return out


def most_within(times: list[float], window: float) -> int:
    """The most of ``times`` (sorted) inside any half-open ``window`` of seconds.

    >>> most_within([0.0, 0.05, 0.09, 0.3, 1.0], 0.1), most_within([], 1.0)
    (3, 0)
    """
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("json", "warning")
    checks = record_key_checks()
    work = make_workload(args.accounts, args.symbols, 3, args.seed, levels=(1.7, 1.9))
    path, _ = crash_path(work.prices, [1000], 1.0, 0.0, args.seed)
    ring = Ring() if args.name_late else None
    if ring is not None:
        time_callbacks(ring)
    collections = record_collections()
    probe = LagProbe(ring)  # the crash bench's probe (bench/lag_probe.py): 10 ms timer, lag per wake
    with tempfile.TemporaryDirectory(prefix="key-checks-bench-") as tmp_name:
        tmp = FsPath(tmp_name)
        sim, url = await start_sim(tmp, work, path)
        try:
            config_path = daemon_config(tmp, url, work)
            config = yaml.safe_load(config_path.read_text())
            # the bench simulator sends prices only when told: a 30 s silence limit would reconnect
            # the market stream mid-run, a stall of its own
            config["alerts"]["stale_after"] = "600s"
            config_path.write_text(yaml.safe_dump(config))
            service = Service(
                load_config(config_path), config_path,
                key_check_interval=args.interval, connections=(10_000_000, 300.0),
            )  # fmt: skip
            started = time.monotonic()
            await service.startup()
            try:
                ready_s = await warm_until_ready(service, sim, started)
                await asyncio.sleep(args.settle)
                since = time.monotonic()
                prober = asyncio.create_task(probe.run())
                await asyncio.sleep(args.seconds)
                prober.cancel()
            finally:
                await service.shutdown()
        finally:
            await sim.stop()
    window = [t for t in checks if t >= since]
    late = [lag for _, lag, _ in probe.samples]
    # (seconds since start-up began, ms late)
    stalls = [(round(at - started, 2), round(lag * 1000, 1)) for at, lag, _ in probe.samples if lag > STALL]
    return {
        "benchmark": "key checks on a quiet daemon",
        "tree": os.path.dirname(os.path.dirname(monitor.__file__)),
        "machine": machine(),
        "accounts": args.accounts,
        "interval_s": args.interval,
        "seconds": args.seconds,
        "ready_s": round(ready_s, 2),
        "measured_from_s": round(since - started, 2),
        "checks": len(window),
        "checks_since_start": len(checks),  # (loading an account checks its key too)
        "most_in_100ms": most_within(sorted(window), 0.1),
        "most_in_1s": most_within(sorted(window), 1.0),
        "lag_samples": len(late),
        "lag_p99_ms": pct(late, 99),
        "lag_max_ms": round(max(late) * 1000, 1) if late else None,
        "lag_over_5ms": len(stalls),
        "lag_over_5ms_at": stalls,
        **({"late_spans": late_spans(probe, started, collections)} if args.name_late else {}),
        **({"gc_sizes": gc_sizes(started, since, since + args.seconds)} if SIZES else {}),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--interval", type=float, default=30.0, help="key check interval, seconds")
    parser.add_argument("--seconds", type=float, default=65.0, help="measured after ready + settle")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after ready before measuring")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--name-late", action="store_true", help="time every loop callback (~1.4 µs "
                        "each) to name what filled each lag sample over 5 ms")  # fmt: skip
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=1))
