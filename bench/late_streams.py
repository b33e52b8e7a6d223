"""Streams that connect after ready: what they leave in the oldest GC generation, and the first full
collection's cost once they are all up.

With more accounts than the connection budget lets connect before ready (Binance's 300 attempts per
5 min per IP), Risk Data Streams keep connecting long after ready, after start-up's heap was frozen
(``monitor.ops.heap.settle``). ``python bench/late_streams.py --accounts 200`` starts the daemon on
the bench simulator (``bench/latency_sim.py``, its own process) with every account and the budget at
``--budget`` attempts per ``--window`` seconds (default 50 per 20 s: ~200 connections take four
windows, the streams connect late), waits until every account's risk stream is up, then
``--settle`` seconds and until the daemon's next generation-1 collection has run (on its own, within
``--young-within`` seconds; else one is run: ``first_young_gc_after_up_s`` says when), and reports:

- ``gen2_unfrozen``: the objects in generation 2 (what a full collection walks; frozen ones are
  not), counted then, and the commonest types among them (``gen2_top``);
- ``full_gc_cpu_ms``: the CPU (``thread_time``) of a full collection run then, the first one after
  every stream is up (``natural_full_gcs``: any full collection the collector ran on its own between
  the last stream up and then, with its CPU ms, listed too).

Whatever ``monitor`` is importable is measured: ``--trees A B`` runs this script once per tree
(``PYTHONPATH`` set to it), interleaved over ``--runs``, and prints every run. Prices do not move.
Prints JSON. Not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path as FsPath
from typing import Any

BENCH = FsPath(__file__).resolve().parent


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import yaml
    from crash import crash_path
    from latency import daemon_config, machine, start_sim, warm_until_ready
    from latency_workload import make_workload

    import monitor
    from monitor.config.model import load_config
    from monitor.logs import configure_logging
    from monitor.service import Service

    configure_logging("json", "warning")
    work = make_workload(args.accounts, args.symbols, 3, args.seed, levels=(1.7, 1.9))
    path, _ = crash_path(work.prices, [1000], 1.0, 0.0, args.seed)
    full: list[tuple[float, float]] = []  # (monotonic at start, CPU s) of each full collection
    young: list[float] = []  # when each generation-1 collection started
    started_gc = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info.get("generation") == 1 and phase == "start":
            young.append(time.monotonic())
        if info.get("generation") != 2:
            return
        if phase == "start":
            started_gc[:] = [time.monotonic(), time.thread_time()]
        else:
            full.append((started_gc[0], time.thread_time() - started_gc[1]))

    with tempfile.TemporaryDirectory(prefix="late-streams-bench-") as tmp_name:
        tmp = FsPath(tmp_name)
        sim, url = await start_sim(tmp, work, path)
        try:
            config_path = daemon_config(tmp, url, work)
            config = yaml.safe_load(config_path.read_text())
            config["alerts"]["stale_after"] = "600s"  # the simulator sends prices only when told
            config_path.write_text(yaml.safe_dump(config))
            service = Service(load_config(config_path), config_path, connections=(args.budget, args.window))
            started = time.monotonic()
            await service.startup()
            try:
                ready_s = await warm_until_ready(service, sim, started)
                up_at_ready = sum(_up(w) for w in service.watchers)
                gc.callbacks.append(on_gc)
                while sum(_up(w) for w in service.watchers) < len(service.watchers):
                    if time.monotonic() - started > 600:
                        raise RuntimeError("the risk streams did not all connect")
                    await asyncio.sleep(0.1)
                all_up = time.monotonic()
                await asyncio.sleep(args.settle)
                # the daemon's next young (generation-1) collection, as it comes on its own
                while not [t for t in young if t >= all_up] and not [t for t, _ in full if t >= all_up]:
                    if time.monotonic() - all_up > args.young_within:
                        gc.collect(1)  # none came: one run here, as the collector would later
                        break
                    await asyncio.sleep(0.1)
                first_young = min([t for t in young if t >= all_up], default=time.monotonic())
                gc.callbacks.remove(on_gc)
                gen2_objects = gc.get_objects(2)
                gen2 = len(gen2_objects)
                top = Counter(type(o).__qualname__ for o in gen2_objects).most_common(args.top)
                del gen2_objects
                cpu = time.thread_time()
                gc.collect()
                forced_ms = (time.thread_time() - cpu) * 1000
            finally:
                await service.shutdown()
        finally:
            await sim.stop()
    natural = [round(c * 1000, 2) for at, c in full if at >= all_up]
    return {
        "benchmark": "streams connecting after ready: oldest generation, first full GC",
        "tree": os.path.dirname(os.path.dirname(monitor.__file__)),
        "machine": machine(),
        "accounts": args.accounts,
        "budget": f"{args.budget} per {args.window:g} s",
        "ready_s": round(ready_s, 2),
        "risk_streams_up_at_ready": up_at_ready,
        "all_up_s": round(all_up - started, 2),
        "settle_s": args.settle,
        "first_young_gc_after_up_s": round(first_young - all_up, 2),
        "gen2_unfrozen": gen2,
        "gen2_top": top,
        "full_gc_cpu_ms": round(forced_ms, 2),
        "natural_full_gcs_cpu_ms": natural,
        "frozen": gc.get_freeze_count(),
    }


def _up(watcher: Any) -> bool:
    state = watcher.risk_stream_state()
    return state is not None and state[0] == "up"


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """This script once per tree in ``args.trees``, interleaved, ``args.runs`` times each."""
    runs: list[dict[str, Any]] = []
    flags = [
        f"--accounts={args.accounts}", f"--symbols={args.symbols}", f"--budget={args.budget}",
        f"--window={args.window}", f"--settle={args.settle}", f"--seed={args.seed}", f"--top={args.top}",
        f"--young-within={args.young_within}",
    ]  # fmt: skip
    for n in range(args.runs):
        for tree in args.trees:
            env = {
                **os.environ,
                "PYTHONPATH": str(FsPath(tree).resolve()),
                "BENCH_SIM_PATH": str(BENCH.parent),
            }
            out = subprocess.run(
                [sys.executable, str(BENCH / "late_streams.py"), *flags],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            run = json.loads(out.stdout)
            run["run"] = n + 1
            runs.append(run)
            print(
                json.dumps({k: run[k] for k in ("tree", "run", "gen2_unfrozen", "full_gc_cpu_ms")}),
                file=sys.stderr,
            )
    return {"command": " ".join(sys.argv), "runs": runs}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--budget", type=int, default=50, help="connection attempts per window")
    parser.add_argument("--window", type=float, default=20.0, help="the budget's window, seconds")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the last stream is up")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--young-within", type=float, default=60.0, help="s to wait for a generation-1 collection after up"
    )
    parser.add_argument("--top", type=int, default=12, help="the commonest types among the gen-2 objects")
    parser.add_argument("--trees", nargs="+", help="run once per tree (interleaved), as separate processes")
    parser.add_argument("--runs", type=int, default=2, help="with --trees: runs per tree")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    result = compare(arguments) if arguments.trees else asyncio.run(measure(arguments))
    print(json.dumps(result, indent=1))
