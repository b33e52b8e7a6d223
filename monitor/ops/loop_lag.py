"""Event-loop lag, measured continuously: how late a short periodic timer fires.

A coroutine sleeps ``interval`` seconds and records how much later than asked it woke up. Any
callback that holds the loop for longer than ``interval`` delays the next wake-up by about that long,
so every stall over ``interval`` (+1 ms of epoll rounding) is seen. Each sample goes to
``observe`` (the ``margin_monitor_loop_lag_seconds`` histogram); :attr:`LoopLag.worst` keeps the
worst lag of the last second-long window for the systemd watchdog (``Service.healthy``).

Worked example (a fake clock and sleep, as the tests drive it)::

    >>> import asyncio
    >>> now = [0.0]
    >>> async def sleep(s: float) -> None:
    ...     now[0] += s + 0.004  # every wake-up 4 ms late
    >>> seen: list[float] = []
    >>> probe = LoopLag(seen.append, interval=0.01, clock=lambda: now[0], sleep=sleep)
    >>> asyncio.run(probe.run(samples=3))
    >>> [round(s, 6) for s in seen], round(probe.worst, 6)
    ([0.004, 0.004, 0.004], 0.004)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# bucket bounds, seconds: from 1 ms (the loop's timer resolution) up to the watchdog's 5 s
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PROBE_INTERVAL = 0.01  # 100 wake-ups a second: ~0.3 % of one core
WORST_WINDOW = 1.0


class LoopLag:
    """Samples the lag of the running loop every ``interval`` s; ``run()`` until cancelled."""

    def __init__(
        self,
        observe: Callable[[float], None],
        *,
        interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._observe = observe
        self.interval = interval
        self._clock, self._sleep = clock, sleep
        self.worst = 0.0  # worst lag of the last complete window
        self.samples = 0

    async def run(self, samples: int | None = None) -> None:
        """Probe forever (or ``samples`` times, for tests)."""
        clock, interval = self._clock, self.interval
        window_start, window_worst = clock(), 0.0
        while samples is None or self.samples < samples:
            start = clock()
            await self._sleep(interval)
            end = clock()
            lag = max(0.0, end - start - interval)
            self.samples += 1
            self._observe(lag)
            window_worst = max(window_worst, lag)
            if end - window_start >= WORST_WINDOW or samples is not None:
                self.worst, window_start, window_worst = window_worst, end, 0.0
