"""When the state file's write-ahead log is checkpointed: once the outbox has been quiet a while.

A checkpoint copies the pages written since the last one back into the file and fsyncs it: several
ms on the event loop for a crash's worth of outbox rows. Left to SQLite it runs inside whichever
commit crosses the threshold, which in a crash is the outbox write of the next alerts (measured:
6–10 ms commits instead of 0.2 ms, holding the whole batch and every send behind it). Here it runs
in the pauses: when no transaction was committed for ``quiet`` seconds (0.25: alerts that trickle
leave such gaps, so each checkpoint has a few pages, ~1 ms; a crash's burst is checkpointed once,
after it), or after ``longest`` seconds of writes without a pause; SQLite's own threshold stays as a cap
(:data:`monitor.store.WAL_CAP_PAGES`). Durability is unchanged: every commit is in the log, and the
log is part of the state file until it is checkpointed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from monitor.store import StateError, Store

log = structlog.get_logger(__name__)

__all__ = ["QuietCheckpoint"]


class QuietCheckpoint:
    """Asks ``store`` for a checkpoint every ``quiet`` seconds if it was written to since the last
    one but not in the last ``quiet`` seconds, or if its last checkpoint is ``longest`` seconds old."""

    def __init__(
        self,
        store: Store,
        *,
        quiet: float = 0.25,
        longest: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.quiet, self.longest = quiet, longest
        self._clock = clock
        self._seen = self._done = store.writes  # writes at the last look, at the last checkpoint
        self._last = clock()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.quiet, self._look)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def due(self) -> bool:
        """Written to since the last checkpoint, and quiet since the last look (or long overdue)."""
        writes = self._store.writes
        quiet, self._seen = writes == self._seen, writes
        return writes != self._done and (quiet or self._clock() - self._last >= self.longest)

    def _look(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self.quiet, self._look)
        self.look()

    def look(self) -> bool:
        """Checkpoint if :meth:`due`; says whether it did."""
        if not self.due():
            return False
        try:
            self._store.checkpoint()
        except StateError as exc:  # the commits are in the log all the same; said, never raised
            log.error("state_checkpoint_failed", error=str(exc))
        self._done = self._seen = self._store.writes
        self._last = self._clock()
        return True
