"""The loop-lag probe of the crash bench, shared by the daemon's pass (``bench/crash.py``) and the
floor's (``bench/null_daemon.py``), so both are measured by the same code.

A 10 ms sleep in a loop; a sample is how late it wakes: (wake time, lag, the loop thread's CPU
seconds over the sample). For a sample over 5 ms, the callbacks that ran in its late span are
copied out of the ring of every callback at once (``loop_names.Ring``; none without a ring), so
that the late span's composition can be named later (no formatting here).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable

from loop_names import Ran, Ring

STALL = 0.005
PROBE = 0.01

Sample = tuple[float, float, float]  # (wake time, lag, the loop thread's CPU seconds over the sample)
Late = tuple[float, float, list[Ran]]  # (wake time, lag, every callback that ran in the late span)


class LagProbe:
    """Every sample of one process's probe, and the late ones' spans."""

    def __init__(self, ring: Ring | None = None, period: float = PROBE, stall: float = STALL) -> None:
        self.ring = ring
        self.period = period
        self.stall = stall
        self.samples: list[Sample] = []
        self.late: list[Late] = []
        self.runq: dict[float, float] = {}  # a late sample's wake time -> its loop thread's run-queue wait

    def record(self, end: float, lag: float, cpu: float) -> None:
        """One sample, woken at ``end``, ``lag`` s late."""
        self.samples.append((end, lag, cpu))
        if lag > self.stall:
            self.late.append((end, lag, self.ring.since(end - lag) if self.ring is not None else []))

    async def run(self) -> None:
        stat = schedstat()
        while True:
            start, cpu, waited = time.monotonic(), time.thread_time(), stat()
            await asyncio.sleep(self.period)
            end = time.monotonic()
            lag = max(0.0, end - start - self.period)
            self.record(end, lag, time.thread_time() - cpu)
            if lag > self.stall:
                self.runq[end] = stat() - waited


def schedstat() -> Callable[[], float]:
    """A reader of the calling thread's time spent runnable but not running (s): the second field of
    Linux's ``/proc/thread-self/schedstat``, so a late span can be split into the OS's share (the
    thread waited for a CPU) and the rest (it waited for the GIL, or ran). Elsewhere it reads 0."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return lambda: 0.0
    return lambda: int(os.pread(fd, 128, 0).split()[1]) / 1e9


def within(samples: Iterable[Sample], lo: float, hi: float) -> list[Sample]:
    """The samples that woke in [lo, hi)."""
    return [s for s in samples if lo <= s[0] < hi]


def columns(samples: list[Sample], stall: float = STALL) -> dict[str, float | int]:
    """The lag columns of a phase: samples over 5 ms, the worst lag (ms), samples taken."""
    lags = [lag for _, lag, _ in samples]
    return {
        "stalls_over_5ms": sum(1 for lag in lags if lag > stall),
        "lag_max_ms": round(max(lags, default=0.0) * 1000, 1),
        "lag_samples": len(lags),
    }
