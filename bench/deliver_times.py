"""What a price batch costs the loop thread: applying it, and each slice of its due units.

``bench/crash.py`` hooks this in (two lines): :meth:`DeliverTimes.install` before the daemon
starts (after ``latency.record_evaluations``, so these wrappers are the outer ones),
:meth:`DeliverTimes.report` per phase window (the ``"deliver"`` key of each phase). Measured with
the loop thread's CPU clock (``time.thread_time``), so a descheduled thread does not count:

- ``apply``: ``Engine.apply_prices`` per batch: its prices, the units it made due, CPU ms;
- ``first_slice`` / ``slices``: ``Engine.evaluate_due`` right after a batch, and every other call:
  units evaluated, alerts queued, CPU ms; ``per_unit_us``: slice CPU over units evaluated;
- ``step``: apply + first slice, the most a tree that runs both in one task step can hold the loop
  for (``MarketConnection._deliver``); whether it does is in crash.py's ``cpu_stalls_by_callback``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

Apply = tuple[float, int, int, float]  # (monotonic at, prices, due after, CPU ms)
Slice = tuple[
    float, int, int, float, bool
]  # (at, units evaluated, alerts queued, CPU ms, first after a batch)


def _dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
    }


class DeliverTimes:
    def __init__(self) -> None:
        self.applies: list[Apply] = []
        self.slices: list[Slice] = []
        self._fresh = False  # a batch was applied and its first slice has not run yet

    @classmethod
    def install(cls) -> DeliverTimes:
        from monitor.watch.engine import Engine

        times = cls()
        apply, more = Engine.apply_prices, Engine.evaluate_due

        def applied(self: Any, prices: Any, *args: Any, **kwargs: Any) -> Any:
            at, cpu = time.monotonic(), time.thread_time()
            result = apply(self, prices, *args, **kwargs)
            times.applies.append((at, len(prices), len(self.due), (time.thread_time() - cpu) * 1000))
            times._fresh = True
            return result

        def sliced(self: Any, *args: Any, **kwargs: Any) -> Any:
            at, cpu, due, queued = time.monotonic(), time.thread_time(), len(self.due), self.outbox.qsize()
            result = more(self, *args, **kwargs)
            ms = (time.thread_time() - cpu) * 1000
            times.slices.append((at, due - len(self.due), self.outbox.qsize() - queued, ms, times._fresh))
            times._fresh = False
            return result

        Engine.apply_prices = applied  # type: ignore[method-assign]
        Engine.evaluate_due = sliced  # type: ignore[method-assign]
        return times

    def report(self, lo: float, hi: float) -> dict[str, Any]:
        applies = [a for a in self.applies if lo <= a[0] < hi]
        slices = [s for s in self.slices if lo <= s[0] < hi]
        first = [s for s in slices if s[4]]
        rest = [s for s in slices if not s[4]]
        steps = [a[3] + s[3] for a, s in zip(applies, first, strict=False)]  # a batch, then its first slice
        per_unit = [s[3] * 1000 / s[1] for s in slices if s[1]]
        return {
            "batches": len(applies),
            "prices_per_batch": _dist([float(a[1]) for a in applies]),
            "due_per_batch": _dist([float(a[2]) for a in applies]),
            "apply_ms": _dist([a[3] for a in applies]),
            "first_slice_ms": _dist([s[3] for s in first]),
            "slice_ms": _dist([s[3] for s in rest]),
            "slice_units": _dist([float(s[1]) for s in slices]),
            "per_unit_us": _dist(per_unit),
            "step_ms": _dist(steps),
            "worst_steps": sorted(
                (
                    [round(a[3], 2), a[1], a[2], round(s[3], 2), s[1], s[2]]
                    for a, s in zip(applies, first, strict=False)
                ),
                key=lambda x: -(x[0] + x[3]),
            )[:5],  # apply ms, prices, due, first-slice ms, units, alerts
        }
