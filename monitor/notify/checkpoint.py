"""When the state file's write-ahead log is checkpointed: once the outbox has been quiet a while, on a
worker thread of its own.

A checkpoint copies the pages written since the last one back into the file and fsyncs it: 5–15 ms
of CPU for a crash's worth of outbox rows (measured in ``bench/crash.py``). Left to SQLite it runs
inside whichever commit crosses the threshold, which in a crash is the outbox write of the next
alerts (measured: 6–10 ms commits instead of 0.2 ms, holding the whole batch and every send behind
it). Here it is decided on the event loop and run on a worker thread: when no transaction was
committed for ``quiet`` seconds (0.25: alerts that trickle leave such gaps; a crash's burst is
checkpointed once, after it), or after ``longest`` seconds of writes without a pause. The thread
uses a connection of its own (:meth:`monitor.store.Store.checkpoint`) and ``sqlite3`` lets go of
the GIL while SQLite copies and fsyncs, so the loop's commits and sends go on beside it; never two
at once, and :meth:`~monitor.store.Store.close` waits for the one running. SQLite's own threshold
stays as a cap (:data:`monitor.store.WAL_CAP_PAGES`). Durability is unchanged: every commit is in
the log before its alert is sent, and the log is part of the state file until it is checkpointed.
A failing checkpoint is logged (``state_checkpoint_failed``, once until one succeeds), never raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from monitor.store import StateError, Store

log = structlog.get_logger(__name__)

__all__ = ["QuietCheckpoint"]


class QuietCheckpoint:
    """Checkpoints ``store`` on a worker thread, looking every ``quiet`` seconds: if it was written to
    since the last checkpoint but not in the last ``quiet`` seconds, or if its last checkpoint is
    ``longest`` seconds old."""

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
        self._worker: ThreadPoolExecutor | None = None  # one thread: never two checkpoints at once
        self._running: asyncio.Future[str | None] | None = None
        self._failing = False  # the last checkpoint failed (said once)

    def start(self) -> None:
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.quiet, self._look)
        if self._worker is None:  # its thread started now, not in the first look of a crash
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="state-checkpoint")
            self._worker.submit(int)

    def stop(self) -> None:
        """No more looks; a checkpoint running finishes on its thread (``Store.close`` waits for it)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._worker is not None:
            self._worker.shutdown(wait=False)
            self._worker = None

    def due(self) -> bool:
        """Written to since the last checkpoint, and quiet since the last look (or long overdue)."""
        writes = self._store.writes
        quiet, self._seen = writes == self._seen, writes
        return writes != self._done and (quiet or self._clock() - self._last >= self.longest)

    def _look(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.quiet, self._look)
        if self._worker is None or self._running is not None or not self._begin():
            return
        self._running = loop.run_in_executor(self._worker, self._checkpoint)
        self._running.add_done_callback(self._finished)

    def look(self) -> bool:
        """Checkpoint in the caller's thread if :meth:`due`; says whether it did (the loop's looks
        run the checkpoint on the worker thread instead)."""
        if not self._begin():
            return False
        self._said(self._checkpoint())
        return True

    def _begin(self) -> bool:
        """:meth:`due`, and if so the checkpoint counts from now: writes after this are the next one's."""
        if not self.due():
            return False
        self._done = self._seen = self._store.writes
        self._last = self._clock()
        return True

    def _checkpoint(self) -> str | None:
        """On the worker thread: the error, if any (the commits are in the log all the same)."""
        try:
            self._store.checkpoint()
        except StateError as exc:
            return str(exc)
        return None

    def _finished(self, future: asyncio.Future[str | None]) -> None:
        self._running = None
        if not future.cancelled():
            self._said(future.result())

    def _said(self, error: str | None) -> None:
        if error is not None and not self._failing:
            log.error("state_checkpoint_failed", error=error)
        self._failing = error is not None
