"""What the collector's oldest generation holds in a quiet daemon, what holds it, and what a full
collection of it costs.

``python bench/gen2_census.py --accounts 1000`` starts the daemon on the bench simulator
(``bench/latency_sim.py``, its own process; prices resent once a second, not moving) with every
account and the connection budget lifted (as ``bench/key_checks.py``; the key-check interval the
daemon's own), waits ``--after`` seconds past ready, then:

1. runs one full collection (``first``: timed, with the generation-2 objects it walked). It is
   the daemon's first since ready unless one came already; it also fires start-up's one-shot
   freeze of its survivors (``monitor.ops.heap``), as the daemon's own first one would;
2. ``--collections`` times: waits ``--spacing`` seconds, counts what a full collection would walk
   by kind (a tuple by its items' types, a timer by its callback, a coroutine by its code:
   ``bench/key_checks.py``'s names) with the references each kind holds, over generations 0-2
   and over generation 2 alone, then times a full collection (``steady``). A full collection
   walks the young generations too, and they are not small: CPython counts a generation-0
   collection due by allocations minus deallocations, so objects that replace older ones (a
   message's parser state, a re-armed timer) pile up there uncounted (5,000-12,000 at a time);
3. after one more ``--spacing``, names the top kinds' holders (one step up, over every live
   object: start-up's frozen heap is unfrozen for this, so it comes last and nothing is timed
   after it).

Full collections are what the stall goal of issue #12 met last: CPython 3.11 runs one at every 10th
generation-1 collection once generation 2 has grown by a quarter, and with start-up frozen
(``monitor.ops.heap``) that is every 35-70 s under load; each walks generation 2. Whatever
``monitor`` is importable is measured: put a base tree first on ``PYTHONPATH`` for a baseline in
the same run. Prints JSON. Not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path as FsPath
from typing import Any

import yaml
from crash import crash_path
from key_checks import _what
from latency import daemon_config, machine, start_sim, warm_until_ready
from latency_workload import make_workload

import monitor
from monitor.config.model import load_config
from monitor.logs import configure_logging
from monitor.service import Service


def timed_full_collection() -> dict[str, float | int]:
    """One ``gc.collect(2)``: the objects it walked (generations 0-2), wall and thread-CPU ms."""
    objects = sum(len(gc.get_objects(gen)) for gen in (0, 1, 2))
    wall, cpu = time.perf_counter(), time.thread_time()
    gc.collect(2)
    return {
        "walked_objects": objects,
        "wall_ms": round((time.perf_counter() - wall) * 1000, 2),
        "cpu_ms": round((time.thread_time() - cpu) * 1000, 2),
    }


def _named() -> tuple[list[Any], list[str], Counter[str], Counter[str]]:
    """Generation 2's objects, each one's name, and per name: objects and references."""
    objects = gc.get_objects(2)
    names = [_what(o) for o in objects]
    refs: Counter[str] = Counter()
    for obj, name in zip(objects, names, strict=True):
        refs[name] += len(gc.get_referents(obj))
    return objects, names, Counter(names), refs


def kinds(top: int) -> dict[str, Any]:
    """What a full collection now walks, generations 0, 1 and 2: objects per generation, then the
    ``top`` kinds of all three by objects (with their references), and of generation 2 alone."""
    objects, _, counts, refs = _named()
    young = [o for gen in (0, 1) for o in gc.get_objects(gen)]
    names = [_what(o) for o in young]
    walked, walked_refs = Counter(names) + counts, Counter(refs)
    for obj, name in zip(young, names, strict=True):
        walked_refs[name] += len(gc.get_referents(obj))
    return {
        "objects_by_generation": [len(gc.get_objects(gen)) for gen in (0, 1)] + [len(objects)],
        "walked_references": sum(walked_refs.values()),
        "walked_kinds": [[name, n, walked_refs[name]] for name, n in walked.most_common(top)],
        "gen2_kinds": [[name, n, refs[name]] for name, n in counts.most_common(top)],
    }


def holders(top: int) -> dict[str, Any]:
    """Generation 2's ``top`` kinds (count, references) with their holders one step up."""
    objects, names, counts, refs = _named()
    kinds = [name for name, _ in counts.most_common(top)]
    wanted = {id(o): n for o, n in zip(objects, names, strict=True) if n in kinds}
    mine = {id(objects), id(names), id(wanted)}
    gc.unfreeze()  # holders may be start-up's frozen objects: gc.get_objects() lists them only now
    held: dict[str, Counter[str]] = {name: Counter() for name in kinds}
    for holder in gc.get_objects():
        if id(holder) in mine:
            continue
        for ref in gc.get_referents(holder):
            kind = wanted.get(id(ref))
            if kind is not None:
                what = f"dict{sorted(map(str, holder))[:3]}" if type(holder) is dict else _what(holder)
                held[kind][what] += 1
    listed = [[name, counts[name], refs[name], held[name].most_common(3)] for name in kinds]
    return {"gen2_objects": len(objects), "gen2_references": sum(refs.values()), "kinds": listed}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("json", "warning")
    work = make_workload(args.accounts, args.symbols, 3, args.seed, levels=(1.7, 1.9))
    path, _ = crash_path(work.prices, [1000], 1.0, 0.0, args.seed)
    with tempfile.TemporaryDirectory(prefix="gen2-census-") as tmp_name:
        tmp = FsPath(tmp_name)
        sim, url = await start_sim(tmp, work, path)
        try:
            config_path = daemon_config(tmp, url, work)
            config = yaml.safe_load(config_path.read_text())
            config["alerts"]["stale_after"] = "600s"  # prices resent, not moved: no stream reconnects
            config_path.write_text(yaml.safe_dump(config))
            service = Service(load_config(config_path), config_path, connections=(10_000_000, 300.0))
            started = time.monotonic()
            await service.startup()
            try:
                ready_s = await warm_until_ready(service, sim, started)
                await asyncio.sleep(args.after)
                first = timed_full_collection()
                steady = []
                for _ in range(args.collections):
                    await asyncio.sleep(args.spacing)
                    counted = kinds(args.top)
                    steady.append({**counted, **timed_full_collection()})
                await asyncio.sleep(args.spacing)
                frozen = gc.get_freeze_count()
                held = holders(args.top)
            finally:
                await service.shutdown()
        finally:
            await sim.stop()
    return {
        "benchmark": "the oldest generation of a quiet daemon",
        "tree": os.path.dirname(os.path.dirname(monitor.__file__)),
        "machine": machine(),
        "accounts": args.accounts,
        "ready_s": round(ready_s, 2),
        "after_s": args.after,
        "spacing_s": args.spacing,
        "frozen_objects": frozen,
        "first": first,
        "steady": steady,
        "last": held,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--after", type=float, default=40.0, help="seconds after ready")
    parser.add_argument("--collections", type=int, default=2, help="steady-state collections")
    parser.add_argument("--spacing", type=float, default=45.0, help="seconds of steady state each")
    parser.add_argument("--top", type=int, default=16, help="kinds listed with their holders")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=1))
