"""The Dispatcher: alert events → SQLite outbox → Apprise, per URL, with retries and flood control.

``enqueue`` writes one outbox row per event × URL first (unique on dedupe key + URL, so a crossing
is never sent twice, also across restarts; :meth:`Dispatcher.enqueue_many` writes a whole burst in
one transaction), then a worker per URL sends rows through Apprise with a timeout. Up to
``concurrency`` sends per URL are in flight at once (``DEFAULT_CONCURRENCY`` where Apprise declares
no spacing between requests for the service, else one: Apprise's own throttle then spaces them),
never two of the same unit, so each account's alerts arrive in order while a crash of 200 accounts
does not queue behind one slow send. A failure is retried with exponential backoff and jitter and
stops new sends to that URL until it goes through (head of line: later alerts wait, in order); a
success is marked in the outbox, and whatever is still queued at start is sent. Flood control admits
at most ``max_per_window`` events per route per ``window``; the rest are held and go out as one
summary when the window allows.

Logs name the route and the URL scheme only: URLs (which carry tokens) never reach a log line,
an exception message or the state file (the outbox stores a fingerprint of the URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from monitor.alerts.policy import AlertEvent
from monitor.notify.apprise_sink import (
    AppriseSender,
    PermanentFailure,
    Sender,
    check_url,
    fingerprint,
    url_scheme,
)
from monitor.notify.flood import FloodGate
from monitor.notify.messages import Message, summary
from monitor.store import OutboxItem, OutboxStatus, StateError, Store

log = structlog.get_logger(__name__)

__all__ = [
    "Delivery",
    "Dispatcher",
    "FloodGate",
    "Route",
    "RouteStats",
    "check_url",
    "default_backoff",
    "url_scheme",
]
NOTIFY_TYPES = {"firing": "warning", "repeat": "warning", "blind": "warning", "summary": "warning"}
MEMORY_KEYS = 10_000  # dedupe keys remembered in memory (for when the state file is unusable)
DEFAULT_CONCURRENCY = 4  # sends in flight per URL where the service sets no spacing
SCAN_AHEAD = 64  # queued rows looked at for one whose unit is not already being sent


def default_backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1, 2, …): 1, 2, 4 … capped at 5 min, times a 0.5–1 jitter."""
    return min(300.0, 2.0 ** min(attempt - 1, 20)) * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Route:
    """A named list of Apprise URLs (hidden from repr) and its flood limit."""

    name: str
    urls: tuple[str, ...] = field(repr=False)
    max_per_window: int | None = None
    window: float = 60.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One send attempt's outcome, for metrics: ``latency`` is seconds from the event to the result."""

    route: str
    scheme: str
    dedupe_key: str
    unit: str
    kind: str
    event_at: float
    started: float
    finished: float
    attempts: int
    ok: bool

    @property
    def latency(self) -> float:
        return self.finished - self.event_at


@dataclass(slots=True)
class RouteStats:
    """Per route: ``sent``/``failed``/``dropped`` attempts since start, ``queued``/``held`` now."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    held: int = 0


_Entry = tuple[AlertEvent, str, str, str | None]  # event, title, body, notify type


@dataclass(eq=False)
class _Job:
    """A queued row; ``sending`` while an attempt is in flight."""

    item: OutboxItem
    sending: bool = False


@dataclass(eq=False)
class _Target:
    id: str
    route: str
    url: str = field(repr=False)
    scheme: str
    queue: deque[_Job] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    hurry: asyncio.Event = field(default_factory=asyncio.Event)
    limit: int = 1  # sends in flight at most
    busy: set[str] = field(default_factory=set)  # units with a send in flight
    failing: _Job | None = None  # a failed row: retried alone, later rows wait
    retry_in: float | None = None  # seconds until the failing row's next attempt


@dataclass(eq=False)
class _Flood:
    gate: FloodGate
    window: float
    held: list[OutboxItem] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None


class Dispatcher:
    """Delivers alert events to their routes' URLs from a persistent outbox."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        store: Store,
        *,
        timeout: float = 10.0,
        backoff: Callable[[int], float] = default_backoff,
        clock: Callable[[], float] = time.time,
        sender: Sender | None = None,
        on_sent: Callable[[Delivery], None] | None = None,
        on_failed: Callable[[Delivery], None] | None = None,
        concurrency: Callable[[str], int] | None = None,
    ) -> None:
        self._routes = dict(routes)
        self._store = store
        self._timeout = timeout
        self._backoff = backoff
        self._clock = clock
        if sender is None:  # Apprise knows each service's spacing; another sender: one at a time
            apprise_sender = AppriseSender()
            sender = apprise_sender
            concurrency = concurrency or (lambda url: apprise_sender.concurrency(url, DEFAULT_CONCURRENCY))
        self._sender: Sender = sender
        concurrency = concurrency or (lambda url: 1)
        self._on_sent, self._on_failed = on_sent, on_failed
        self._targets: dict[str, _Target] = {}
        for route in self._routes.values():
            for url in route.urls:
                tid = f"{route.name}#{fingerprint(url)}"
                if tid not in self._targets:
                    limit = concurrency(url)
                    self._targets[tid] = _Target(tid, route.name, url, url_scheme(url), limit=limit)
        self._floods = {
            n: _Flood(FloodGate(r.max_per_window, r.window), r.window) for n, r in self._routes.items()
        }
        self._stats = {name: RouteStats() for name in self._routes}
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._fallback_ids = itertools.count(-1, -1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._progress = asyncio.Event()
        self._started = self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load what is still queued or held in the outbox and start one worker per URL."""
        if self._started:
            return
        self._started = True
        try:
            rows = self._store.open_outbox()
        except StateError as exc:
            log.error("outbox_read_failed", error=str(exc))
            rows = []
        recovered = 0
        for row in rows:
            if (row.dedupe_key, row.target) in self._known:
                continue
            if row.target not in self._targets:
                log.warning("notify_target_gone", route=row.route, dedupe_key=row.dedupe_key)
                self._store_call(self._store.mark_dropped, row.id, "route or URL no longer configured")
                continue
            self._accept(row)
            recovered += 1
        if recovered:
            log.info("outbox_recovered", items=recovered)
        for target in self._targets.values():
            self._spawn(self._work(target), f"notify-{target.route}-{target.scheme}")
        for route, flood in self._floods.items():
            if flood.held:
                self._schedule_flush(route)

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (a bound, not a cancel scope)
        """Shutdown: flush held summaries, retry at once, wait up to ``timeout`` s; the rest stays queued."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for route, flood in self._floods.items():
            if flood.timer is not None:
                flood.timer.cancel()
            self._flush(route)
        for target in self._targets.values():
            target.hurry.set()
        while (left := sum(len(t.queue) for t in self._targets.values())) and loop.time() < deadline:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), deadline - loop.time())
        if left:
            log.warning("notify_drain_incomplete", queued=left)
        else:
            log.info("notify_drained")

    async def stop(self) -> None:
        """Stop the workers: a send in flight may finish (bounded by the timeout), so a delivered
        alert is marked sent; then cancel. Queued rows stay in the outbox for the next start."""
        self._stopping = True
        for flood in self._floods.values():
            if flood.timer is not None:
                flood.timer.cancel()
        for target in self._targets.values():
            target.wake.set()
            target.hurry.set()
        workers = [t for t in self._tasks if t.get_name().startswith("notify-")]
        if workers:
            await asyncio.wait(workers, timeout=self._timeout + 1.0)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stopping = self._started = False

    # -- input ---------------------------------------------------------------------------------
    async def enqueue(
        self,
        event: AlertEvent,
        title: str,
        body: str,
        *,
        notify_type: str | None = None,
        alert_state: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist ``event`` for each URL of its routes (``alert_state`` in the same transaction)."""
        self._enqueue_batch([(event, title, body, notify_type)], alert_state)

    async def enqueue_message(
        self, event: AlertEvent, message: Message, *, alert_state: Mapping[str, Any] | None = None
    ) -> None:
        """:meth:`enqueue` with a :class:`monitor.notify.messages.Message`."""
        await self.enqueue(
            event, message.title, message.body, notify_type=message.notify_type, alert_state=alert_state
        )

    async def enqueue_many(
        self,
        messages: Sequence[tuple[AlertEvent, Message]],
        *,
        alert_state: Mapping[str, Any] | None = None,
    ) -> None:
        """:meth:`enqueue_message` for a burst: every row and ``alert_state`` in one transaction
        (one commit for 200 crossings instead of 200), each event still once per URL."""
        self._enqueue_batch([(e, m.title, m.body, m.notify_type) for e, m in messages], alert_state)

    async def send_direct(self, message: Message) -> dict[str, list[bool]]:
        """Send ``message`` once to every URL now, bypassing the outbox (``test-alert``)."""
        results: dict[str, list[bool]] = {}
        for name, route in self._routes.items():
            results[name] = []
            for url in route.urls:
                try:
                    ok = await asyncio.wait_for(
                        self._sender(url, message.title, message.body, message.notify_type, self._timeout),
                        self._timeout + 1.0,
                    )
                except Exception as exc:  # report, per URL, whatever stopped the send
                    log.warning(
                        "notify_test_failed", route=name, scheme=url_scheme(url), error=type(exc).__name__
                    )
                    ok = False
                results[name].append(ok)
        return results

    def stats(self) -> dict[str, RouteStats]:
        """Per-route counters (a copy)."""
        out = {
            name: replace(s, queued=0, held=len(self._floods[name].held)) for name, s in self._stats.items()
        }
        for target in self._targets.values():
            out[target.route].queued += len(target.queue)
        return out

    # -- internals -----------------------------------------------------------------------------
    def _enqueue_batch(self, entries: Sequence[_Entry], alert_state: Mapping[str, Any] | None) -> None:
        now = self._clock()
        items: list[OutboxItem] = []
        admitted: list[tuple[str, str]] = []  # (dedupe key, route) that used up a flood-window slot
        for event, title, body, notify_type in entries:
            kind_type = notify_type or NOTIFY_TYPES.get(event.kind, "success")
            routed = len(items)
            for name in dict.fromkeys(event.routes):
                route = self._routes.get(name)
                if route is None:
                    log.error("notify_route_unknown", route=name, dedupe_key=event.dedupe_key)
                    continue
                status: OutboxStatus = "queued" if self._floods[name].gate.admit(now) else "held"
                if status == "queued":
                    admitted.append((event.dedupe_key, name))
                items += [
                    OutboxItem(event.dedupe_key, f"{name}#{fingerprint(url)}", name, event.unit, event.kind,
                               title, body, kind_type, event.at, status)
                    for url in route.urls
                ]  # fmt: skip
            if len(items) == routed:
                log.warning("notify_no_route", dedupe_key=event.dedupe_key, routes=list(event.routes))
        added = self._persist(items, alert_state)
        added_keys = {(item.dedupe_key, item.route) for item in added}
        for key, name in admitted:
            if (key, name) not in added_keys:
                self._floods[name].gate.refund()  # a duplicate does not use up the window
        for item in added:
            self._accept(item)

    def _persist(self, items: list[OutboxItem], alert_state: Mapping[str, Any] | None) -> list[OutboxItem]:
        if not items and not alert_state:
            return []
        try:
            return self._store.add_outbox(items, alert_state=alert_state)
        except StateError as exc:
            log.error("outbox_write_failed", error=str(exc), items=len(items), fallback="memory")
            fresh = [i for i in items if (i.dedupe_key, i.target) not in self._known]
            return [replace(i, id=next(self._fallback_ids)) for i in fresh]

    def _accept(self, item: OutboxItem) -> None:
        self._known[(item.dedupe_key, item.target)] = None
        while len(self._known) > MEMORY_KEYS:
            self._known.popitem(last=False)
        if item.status == "held":
            self._floods[item.route].held.append(item)
            log.info("notify_flood_held", route=item.route, dedupe_key=item.dedupe_key)
            self._schedule_flush(item.route)
            return
        target = self._targets[item.target]
        target.queue.append(_Job(item))
        target.wake.set()

    def _schedule_flush(self, route: str) -> None:
        flood = self._floods[route]
        if self._started and (flood.timer is None or flood.timer.done()):
            flood.timer = self._spawn(self._flush_later(route), f"flood-{route}")

    async def _flush_later(self, route: str) -> None:
        flood = self._floods[route]
        while flood.held:
            now = self._clock()
            delay = flood.gate.next_free(now) - now
            if delay > 0:
                await asyncio.sleep(delay)
            self._flush(route)

    def _flush(self, route: str) -> None:
        flood = self._floods[route]
        held, flood.held = flood.held, []
        if not held:
            return
        flood.gate.force(self._clock())
        key = f"summary|{route}|{held[0].dedupe_key}"
        summaries = []
        for tid in dict.fromkeys(item.target for item in held):
            mine = [item for item in held if item.target == tid]
            msg = summary(route, [item.title for item in mine], flood.window)
            summaries.append(
                OutboxItem(key, tid, route, "*", "summary", msg.title, msg.body, msg.notify_type,
                           min(item.event_at for item in mine))
            )  # fmt: skip
        try:
            added = self._store.coalesce([item.id for item in held if item.id > 0], summaries)
        except StateError as exc:
            log.error("outbox_write_failed", error=str(exc), items=len(summaries), fallback="memory")
            added = [replace(s, id=next(self._fallback_ids)) for s in summaries]
        log.info("notify_flood_summary", route=route, coalesced=len({item.dedupe_key for item in held}))
        for item in added:
            self._accept(item)

    async def _work(self, target: _Target) -> None:
        """Start sends while there is room; after a failure, only the failed row, after its backoff."""
        in_flight = 0

        async def send(job: _Job) -> None:
            nonlocal in_flight
            try:
                ok = await self._attempt(target, job)
            finally:
                in_flight -= 1
                job.sending = False
                target.busy.discard(job.item.unit)
                target.wake.set()
            if ok is False:
                target.failing = job
                target.retry_in = self._backoff(job.item.attempts)
                log.warning("notify_retry", route=target.route, scheme=target.scheme,
                            dedupe_key=job.item.dedupe_key, attempts=job.item.attempts,
                            retry_in=round(target.retry_in, 3))  # fmt: skip
                return
            if job is target.failing:
                target.failing = None
            target.queue.remove(job)
            self._progress.set()

        while not self._stopping:
            if target.failing is not None and target.retry_in is not None and not target.failing.sending:
                delay, target.retry_in = target.retry_in, None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(target.hurry.wait(), delay)
                target.hurry.clear()
                continue
            job = self._next_job(target, in_flight)
            if job is None:  # woken by a new row, a finished send, or stop()
                target.wake.clear()
                await target.wake.wait()
                continue
            in_flight += 1
            job.sending = True
            target.busy.add(job.item.unit)
            self._spawn(send(job), f"notify-send-{target.route}-{target.scheme}")

    @staticmethod
    def _next_job(target: _Target, in_flight: int) -> _Job | None:
        """The oldest row that may start now: none while full; only the failed row while one failed;
        else the first within :data:`SCAN_AHEAD` whose unit has nothing in flight or before it."""
        if in_flight >= target.limit:
            return None
        if target.failing is not None:
            job = target.failing
            return job if not job.sending and in_flight == 0 else None
        waiting: set[str] = set()
        for job in itertools.islice(target.queue, SCAN_AHEAD):
            unit = job.item.unit
            if not job.sending and unit not in target.busy and unit not in waiting:
                return job
            waiting.add(unit)
        return None

    async def _attempt(self, target: _Target, job: _Job) -> bool | None:
        """True: sent; False: failed (retry); None: dropped for good."""
        item = job.item
        stats = self._stats[target.route]
        started = self._clock()
        error = "not delivered"
        try:
            ok = await asyncio.wait_for(
                self._sender(target.url, item.title, item.body, item.notify_type, self._timeout),
                self._timeout + 1.0,
            )
        except PermanentFailure as exc:
            stats.dropped += 1
            log.error("notify_dropped", route=target.route, scheme=target.scheme, reason=str(exc))
            if item.id > 0:
                self._store_call(self._store.mark_dropped, item.id, str(exc))
            return None
        except TimeoutError:
            ok, error = False, f"timed out after {self._timeout:g} s"
        except Exception as exc:  # a plugin's bug must not stop the worker; its text may hold the URL
            ok, error = False, type(exc).__name__
        finished = self._clock()
        item = replace(item, attempts=item.attempts + 1)
        delivery = Delivery(target.route, target.scheme, item.dedupe_key, item.unit, item.kind,
                            item.event_at, started, finished, item.attempts, ok)  # fmt: skip
        if ok:
            stats.sent += 1
            if item.id > 0:
                self._store_call(self._store.mark_sent, item.id, finished)
            log.info("notify_sent", route=target.route, scheme=target.scheme, dedupe_key=item.dedupe_key,
                     attempts=item.attempts, latency=round(delivery.latency, 4))  # fmt: skip
            self._callback(self._on_sent, delivery)
            return True
        stats.failed += 1
        job.item = item
        if item.id > 0:
            self._store_call(self._store.mark_failed, item.id, item.attempts, error)
        self._callback(self._on_failed, delivery)
        return False

    def _store_call(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except StateError as exc:
            log.error("outbox_update_failed", error=str(exc))

    @staticmethod
    def _callback(callback: Callable[[Delivery], None] | None, delivery: Delivery) -> None:
        if callback is None:
            return
        try:
            callback(delivery)
        except Exception as exc:  # a metrics hook must not stop deliveries
            log.error("notify_callback_failed", error=f"{type(exc).__name__}: {exc}")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
