"""Garbage collections by generation per bench phase, and what survives young collections.

``bench/crash.py`` hooks this in (two lines): :meth:`Census.install` before the daemon starts,
:meth:`Census.report` with its phases at the end (the ``"gc"`` key of its JSON). Per phase
window, and per gap between phases (``quiet``: the loop idle but for its periodic jobs), every
collection by generation: count, total and max CPU ms and wall ms, objects collected.

Two environment variables widen it (both off by default: they slow the daemon they measure, so the
timing runs stay without them):

- ``GC_CENSUS=1``: at the start of every collection of generation 1 or 2, the objects then in
  generation 1 (those that survived a young collection since the last generation-1 one) and, for a
  full collection, in generation 2 (survived two; ``gc.freeze()``'s objects are not listed) are
  counted by type, and by allocation site when tracemalloc traces (``python -X tracemalloc=8``:
  the innermost frame in ``monitor/``, else the innermost frame; at 1,000 accounts it slows
  start-up past its handshake timeouts, so use it with fewer ``--accounts``). The top per window.
- ``GC_QUIET_SECONDS=N``: the daemon runs N more seconds after the last phase before it shuts
  down (the simulator idle), a window of its own (``after``): the collections of a quiet minute.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import tracemalloc
from collections import Counter
from typing import Any

Event = tuple[float, int, float, float, int]  # (start, generation, wall s, CPU s, collected)


def _site(obj: object) -> str:
    trace = tracemalloc.get_object_traceback(obj) if tracemalloc.is_tracing() else None
    if trace is None:
        return "?"
    frames = list(trace)[::-1]  # tracemalloc lists the oldest frame first
    for frame in frames:
        if "/monitor/" in frame.filename:
            return f"{frame.filename.rsplit('/monitor/', 1)[1]}:{frame.lineno}"
    frame = frames[0]
    return f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}"


class Census:
    """Every collection of this process (a ``gc.callbacks`` entry), and optionally its survivors."""

    def __init__(self, survivors: bool) -> None:
        self.events: list[Event] = []
        self.survivors = survivors
        # (time, generation collected, kind, Counter) kind: "gen1" | "gen2"
        self.censuses: list[tuple[float, str, Counter[str]]] = []
        self._start = (0.0, 0.0)
        self.weights: list[tuple[float, int, int, int, list[tuple[int, str]]]] = []

    @classmethod
    def install(cls) -> Census:
        census = cls(os.environ.get("GC_CENSUS", "") not in ("", "0"))
        gc.callbacks.append(census.on_gc)
        quiet = float(os.environ.get("GC_QUIET_SECONDS", "0") or 0)
        if quiet > 0:
            from monitor.service import Service

            shutdown = Service.shutdown

            async def later(self: Any, *args: Any, **kwargs: Any) -> Any:
                census.after_from = time.monotonic()
                await asyncio.sleep(quiet)
                census.after_to = time.monotonic()
                return await shutdown(self, *args, **kwargs)

            Service.shutdown = later  # type: ignore[method-assign]
        census.after_from = census.after_to = 0.0
        return census

    after_from: float
    after_to: float

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        gen = info["generation"]
        if phase == "start":
            if self.survivors:
                self._weigh(gen)
                if gen >= 1:
                    self._count(gen)
            self._start = time.monotonic(), time.thread_time()
            return
        at, cpu = self._start
        self.events.append((at, gen, time.monotonic() - at, time.thread_time() - cpu, info["collected"]))

    def _weigh(self, gen: int) -> None:
        """What this collection will walk: objects and their references in generations 0..gen, and
        the three biggest containers (a collection's cost is its objects plus their references)."""
        objects = [o for g in range(gen + 1) for o in gc.get_objects(g)]
        refs = [(len(gc.get_referents(o)), type(o).__qualname__) for o in objects]
        big = sorted(refs, reverse=True)[:3]
        self.weights.append((time.monotonic(), gen, len(objects), sum(n for n, _ in refs), big))

    def _count(self, gen: int) -> None:
        now, sites = time.monotonic(), tracemalloc.is_tracing()
        for g in (1, 2) if gen == 2 else (1,):
            counts: Counter[str] = Counter()
            for obj in gc.get_objects(g):
                counts[f"{type(obj).__qualname__} @ {_site(obj)}" if sites else type(obj).__qualname__] += 1
            self.censuses.append((now, f"gen{g}", counts))

    def window(self, lo: float, hi: float) -> dict[str, Any]:
        mine = [e for e in self.events if lo <= e[0] < hi]
        out: dict[str, Any] = {"seconds": round(hi - lo, 1)}
        for gen in (0, 1, 2):
            es = [e for e in mine if e[1] == gen]
            out[f"gen{gen}"] = {
                "n": len(es),
                "cpu_ms_total": round(sum(e[3] for e in es) * 1000, 1),
                "cpu_ms_max": round(max((e[3] for e in es), default=0.0) * 1000, 2),
                "wall_ms_max": round(max((e[2] for e in es), default=0.0) * 1000, 2),
                "collected": sum(e[4] for e in es),
            }
        out["over_5ms_wall"] = [
            [e[1], round(e[2] * 1000, 1), round(e[3] * 1000, 1)] for e in mine if e[2] > 0.005
        ]
        if self.survivors:
            slow = [e for e in mine if e[3] > 0.002]
            out["over_2ms_cpu_weighed"] = [
                [
                    e[1],
                    round(e[3] * 1000, 1),
                    *next((w[2:] for w in reversed(self.weights) if w[0] <= e[0]), ()),
                ]
                for e in slow
            ]
            for kind in ("gen1", "gen2"):
                got = [c for t, k, c in self.censuses if k == kind and lo <= t < hi]
                total: Counter[str] = Counter()
                for c in got:
                    total.update(c)
                out[f"{kind}_censuses"] = len(got)
                out[f"{kind}_objects_mean"] = round(sum(total.values()) / len(got)) if got else 0
                out[f"{kind}_top"] = [[k, round(n / len(got), 1)] for k, n in total.most_common(25)]
        return out

    def report(self, phases: list[dict[str, Any]]) -> dict[str, Any]:
        """Per phase (its ``window``) and the gaps between phases; ``after``: the quiet seconds."""
        out: dict[str, Any] = {}
        previous = None
        for p in phases:
            lo, hi = p["window"]
            if previous is not None:
                out[f"quiet before {p['rate']}"] = self.window(previous, lo)
            out[f"phase {p['rate']}"] = self.window(lo, hi)
            previous = hi
        if self.after_to:
            out["after"] = self.window(self.after_from, self.after_to)
        return out
