"""A log line that cannot flood: an event logged at most once per interval, the rest counted."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class RateLimitedLog:
    """Log ``event`` (a warning) at most once per ``interval`` seconds, counting what was suppressed.

    ``log(**fields)`` reads ``clock``; ``log.at(now, **fields)`` takes the time from its caller (the
    sans-I/O cores, which are handed the time).
    """

    def __init__(
        self, event: str, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._event = event
        self._interval = interval
        self._clock = clock
        self._next = -math.inf
        self.suppressed = 0
        self.total = 0

    def __call__(self, **fields: Any) -> None:
        self.at(self._clock(), **fields)

    def at(self, now: float, **fields: Any) -> None:
        """Count one occurrence at ``now``; log it unless one was logged less than ``interval`` ago."""
        self.total += 1
        if now < self._next:
            self.suppressed += 1
            return
        log.warning(self._event, suppressed=self.suppressed, **fields)
        self.suppressed = 0
        self._next = now + self._interval
