"""The retry stage: a queue and a worker per target, so every stored row is sent, in order, however
long the URL fails.

Up to ``limit(url)`` sends per target are in flight at once, never two of the same unit, so each
account's alerts arrive in order while a crash of 200 accounts does not queue behind one slow send.
Within that ceiling the target's :class:`~monitor.notify.pace.Pace` keeps only as many as its
measured time per send needs (a fast webhook 2, a distant service up to the ceiling).
A failure is retried with exponential backoff and jitter (:func:`default_backoff`) and stops new
sends to that target until it goes through (head of line: later rows wait, in order). The send
itself is ``deliver(target, row)``: True sent, False failed (retry), None dropped for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from monitor.notify.pace import Pace
from monitor.notify.stages import Batch, Target
from monitor.store import OutboxItem

log = structlog.get_logger(__name__)

__all__ = ["SCAN_AHEAD", "RetryStage", "default_backoff"]

SCAN_AHEAD = 64  # queued rows looked at for one whose unit is not already being sent

Deliver = Callable[[Target, OutboxItem], Awaitable[bool | None]]


def default_backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1, 2, …): 1, 2, 4 … capped at 5 min, times a 0.5–1 jitter."""
    return min(300.0, 2.0 ** min(attempt - 1, 20)) * random.uniform(0.5, 1.0)


@dataclass(eq=False)
class _Job:
    """A queued row; ``sending`` while an attempt is in flight."""

    item: OutboxItem
    sending: bool = False


@dataclass(eq=False)
class _Queue:
    target: Target
    pace: Pace  # sends in flight at most (``pace.limit``, within the URL's ceiling)
    jobs: deque[_Job] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    hurry: asyncio.Event = field(default_factory=asyncio.Event)
    busy: set[str] = field(default_factory=set)  # units with a send in flight
    failing: _Job | None = None  # a failed row: retried alone, later rows wait
    retry_in: float | None = None  # seconds until the failing row's next attempt


class RetryStage:
    """Takes stored rows (``exec``/``put``) and sends each through ``deliver`` until it is done."""

    def __init__(
        self,
        targets: Iterable[Target],
        deliver: Deliver,
        *,
        backoff: Callable[[int], float] = default_backoff,
        limit: Callable[[str], int] = lambda url: 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deliver = deliver
        self._backoff = backoff
        self._clock = clock
        self._queues = {t.id: _Queue(t, Pace(limit(t.url))) for t in targets}
        self._tasks: set[asyncio.Task[None]] = set()
        self._progress = asyncio.Event()
        self._stopping = False

    def __contains__(self, target_id: object) -> bool:
        return target_id in self._queues

    def exec(self, batch: Batch, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Queue each row on its target; nothing goes on (the workers send them)."""
        for item in items:
            self.put(item)
        return []

    def put(self, item: OutboxItem) -> None:
        queue = self._queues[item.target]
        queue.jobs.append(_Job(item))
        queue.wake.set()

    def queued(self) -> dict[str, int]:
        """Route → rows waiting or in flight."""
        out: dict[str, int] = {}
        for queue in self._queues.values():
            out[queue.target.route] = out.get(queue.target.route, 0) + len(queue.jobs)
        return out

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """One worker per target."""
        for queue in self._queues.values():
            self._spawn(self._work(queue), f"notify-{queue.target.route}-{queue.target.scheme}")

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 (a bound, not a cancel scope)
        """Retry at once and wait up to ``timeout`` s for the queues to empty; returns rows left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for queue in self._queues.values():
            queue.hurry.set()
        while (left := sum(len(q.jobs) for q in self._queues.values())) and loop.time() < deadline:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), deadline - loop.time())
        return left

    async def stop(self, grace: float) -> None:
        """Stop the workers: a send in flight may finish within ``grace`` s (so a delivered row is
        marked sent); then cancel. Queued rows stay where they are stored, for the next start."""
        self._stopping = True
        for queue in self._queues.values():
            queue.wake.set()
            queue.hurry.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stopping = False

    # -- workers -------------------------------------------------------------------------------
    async def _work(self, queue: _Queue) -> None:
        """Start sends while there is room; after a failure, only the failed row, after its backoff."""
        in_flight = 0
        target = queue.target

        async def send(job: _Job) -> None:
            nonlocal in_flight
            started = self._clock()
            try:
                ok = await self._deliver(target, job.item)
                if ok is True:
                    queue.pace.observe(self._clock() - started)
            finally:
                in_flight -= 1
                job.sending = False
                queue.busy.discard(job.item.unit)
                queue.wake.set()
            if ok is False:
                job.item = replace(job.item, attempts=job.item.attempts + 1)
                queue.failing = job
                queue.retry_in = self._backoff(job.item.attempts)
                log.warning("notify_retry", route=target.route, scheme=target.scheme,
                            dedupe_key=job.item.dedupe_key, attempts=job.item.attempts,
                            retry_in=round(queue.retry_in, 3))  # fmt: skip
                return
            if job is queue.failing:
                queue.failing = None
            queue.jobs.remove(job)
            self._progress.set()

        while not self._stopping:
            if queue.failing is not None and queue.retry_in is not None and not queue.failing.sending:
                delay, queue.retry_in = queue.retry_in, None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.hurry.wait(), delay)
                queue.hurry.clear()
                continue
            job = self._next_job(queue, in_flight)
            if job is None:  # woken by a new row, a finished send, or stop()
                queue.wake.clear()
                await queue.wake.wait()
                continue
            in_flight += 1
            job.sending = True
            queue.busy.add(job.item.unit)
            self._spawn(send(job), f"notify-send-{target.route}-{target.scheme}")

    @staticmethod
    def _next_job(queue: _Queue, in_flight: int) -> _Job | None:
        """The oldest row that may start now: none while full; only the failed row while one failed;
        else the first within :data:`SCAN_AHEAD` whose unit has nothing in flight or before it."""
        if in_flight >= queue.pace.limit:
            return None
        if queue.failing is not None:
            job = queue.failing
            return job if not job.sending and in_flight == 0 else None
        waiting: set[str] = set()
        for job in itertools.islice(queue.jobs, SCAN_AHEAD):
            unit = job.item.unit
            if not job.sending and unit not in queue.busy and unit not in waiting:
                return job
            waiting.add(unit)
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
