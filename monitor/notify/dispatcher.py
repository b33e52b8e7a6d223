"""The Dispatcher: the delivery stages composed for the daemon.

route → silence → flood control → outbox → retry → send (:mod:`monitor.notify.stages` has the
shape, each stage its own module). ``enqueue*`` runs a batch through the first four in one go:
the routes' URLs are resolved, silenced letters dropped, the ones over a route's flood limit marked
held, and every letter × URL written to the SQLite outbox with the alert state in one transaction
(a duplicate is left out, so a crossing is never sent twice, also across restarts). The new rows
go to the retry stage's queue for their URL, whose worker sends them (the send stage) until each
goes through; held rows go out as one summary when the window allows. What is still open at start
is sent. ``test-alert`` (:mod:`monitor.notify.send_check`) uses only the route and send stages.

Logs name the route and the URL scheme only: URLs (which carry tokens) never reach a log line,
an exception message or the state file (the outbox stores a fingerprint of the URL).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from monitor.alerts.policy import AlertEvent
from monitor.notify.apprise_sink import AppriseSender, Sender, check_url, url_scheme
from monitor.notify.checkpoint import QuietCheckpoint
from monitor.notify.flood import FloodGate, FloodStage
from monitor.notify.messages import Message
from monitor.notify.outbox import OutboxStage
from monitor.notify.retry import RetryStage, default_backoff
from monitor.notify.route import NotifyRoute, RouteStage
from monitor.notify.send import Delivery, RouteStats, SendStage, Tally
from monitor.notify.stages import Batch, Letter, Target
from monitor.store import OutboxItem, Store

if TYPE_CHECKING:  # the daemon passes one; a dispatcher alone loads no prometheus_client
    from monitor.notify.silence_stage import SilenceStage

log = structlog.get_logger(__name__)

__all__ = [
    "Delivery",
    "Dispatcher",
    "FloodGate",
    "NotifyRoute",
    "RouteStats",
    "check_url",
    "default_backoff",
    "url_scheme",
]
DEFAULT_CONCURRENCY = 8  # at most, per URL where the service sets no spacing (notify/pace.py keeps fewer)


class Dispatcher:
    """Delivers alert events to their routes' URLs from a persistent outbox.

    ``silence``: the silence stage, for :meth:`enqueue_letters` (alert messages, each marked
    ``protected`` or not); the other ``enqueue*`` skip it: notices (a refused key…) are never
    silenced, and a caller may have applied silences itself."""

    def __init__(
        self,
        routes: Mapping[str, NotifyRoute],
        store: Store,
        *,
        timeout: float = 10.0,
        backoff: Callable[[int], float] = default_backoff,
        clock: Callable[[], float] = time.time,
        sender: Sender | None = None,
        on_sent: Callable[[Delivery], None] | None = None,
        on_failed: Callable[[Delivery], None] | None = None,
        concurrency: Callable[[str], int] | None = None,
        silence: SilenceStage | None = None,
        apprise: AppriseSender | None = None,
    ) -> None:
        self._apprise: AppriseSender | None = None
        if sender is None:  # Apprise knows each service's spacing; another sender: one at a time
            apprise_sender = self._apprise = apprise or AppriseSender()
            sender = apprise_sender
            concurrency = concurrency or (lambda url: apprise_sender.concurrency(url, DEFAULT_CONCURRENCY))
        self._clock = clock
        self._timeout = timeout
        self.route = RouteStage(routes)
        self.silence = silence
        self.flood = FloodStage(self.route.routes.values(), clock=clock)
        self.outbox = OutboxStage(store)
        self.checkpoint = QuietCheckpoint(store)  # the WAL copied back when no alert is on its way
        self.retry = RetryStage(
            self.route.all_targets(), self._deliver, backoff=backoff, limit=concurrency or (lambda url: 1)
        )
        self.send = SendStage(sender, timeout=timeout, clock=clock)
        self.tally = Tally(self.route.routes, on_sent=on_sent, on_failed=on_failed)
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load what is still queued or held in the outbox and start one worker per URL."""
        if self._started:
            return
        self._started = True
        for row in self.outbox.recover(self.retry):
            self._accept(row)
        self.retry.start()
        self.flood.start(self._flush)
        self.checkpoint.start()
        if self._apprise is not None:  # a worker process, if that is how it sends, warmed with the URLs
            await self._apprise.start(t.url for t in self.route.all_targets())

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (a bound, not a cancel scope)
        """Shutdown: flush held summaries, retry at once, wait up to ``timeout`` s; the rest stays queued."""
        self.flood.cancel_timers()
        for route in self.flood.routes():
            self._flush(route)
        left = await self.retry.drain(timeout)
        self.outbox.flush_sent()
        if left:
            log.warning("notify_drain_incomplete", queued=left)
        else:
            log.info("notify_drained")

    async def stop(self) -> None:
        """Stop the workers: a send in flight may finish (bounded by the timeout), so a delivered
        alert is marked sent; then cancel. Queued rows stay in the outbox for the next start."""
        self.flood.cancel_timers()
        self.checkpoint.stop()
        await self.retry.stop(self._timeout + 1.0)
        self.outbox.flush_sent()
        await self.flood.stop()
        if self._apprise is not None:
            await self._apprise.aclose()  # its threads (or worker) end with their sends; a restart: new
        self._started = False

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
        self._intake([Letter(event, Message(title, body, notify_type or ""))], alert_state, silence=False)

    async def enqueue_message(
        self, event: AlertEvent, message: Message, *, alert_state: Mapping[str, Any] | None = None
    ) -> None:
        """:meth:`enqueue` with a :class:`monitor.notify.messages.Message`."""
        self._intake([Letter(event, message)], alert_state, silence=False)

    async def enqueue_many(
        self,
        messages: Sequence[tuple[AlertEvent, Message]],
        *,
        alert_state: Mapping[str, Any] | None = None,
    ) -> None:
        """:meth:`enqueue_message` for a burst: every row and ``alert_state`` in one transaction
        (one commit for 200 crossings instead of 200), each event still once per URL."""
        self._intake([Letter(e, m) for e, m in messages], alert_state, silence=False)

    async def enqueue_letters(
        self, letters: Sequence[Letter], *, alert_state: Mapping[str, Any] | None = None
    ) -> None:
        """:meth:`enqueue_many` through the silence stage (if any): letters no silence holds back."""
        self._intake(letters, alert_state, silence=True)

    def stats(self) -> dict[str, RouteStats]:
        """Per-route counters (a copy)."""
        queued = self.retry.queued()
        return {
            name: replace(s, queued=queued.get(name, 0), held=self.flood.held(name))
            for name, s in self.tally.stats.items()
        }

    # -- the composition -----------------------------------------------------------------------
    def _intake(
        self, letters: Sequence[Letter], alert_state: Mapping[str, Any] | None, *, silence: bool
    ) -> None:
        batch = Batch(self._clock(), alert_state)
        routed = self.route.exec(batch, letters)
        heard = self.silence.exec(batch, routed) if silence and self.silence is not None else routed
        gated = self.flood.exec(batch, heard)
        added = self.outbox.exec(batch, gated)
        self.flood.refund(batch, added)  # a duplicate does not use up the window
        for item in added:
            self._accept(item)

    def _accept(self, item: OutboxItem) -> None:
        self.outbox.remember(item)
        if item.status == "held":
            self.flood.hold(item)
        else:
            self.retry.put(item)

    def _flush(self, route: str) -> None:
        held_ids, summaries = self.flood.release(route)
        if summaries:
            for item in self.outbox.coalesce(held_ids, summaries):
                self._accept(item)

    async def _deliver(self, target: Target, item: OutboxItem) -> bool | None:
        attempt = await self.send.attempt(target, item.title, item.body, item.notify_type)
        attempts = item.attempts + 1
        if attempt.status == "dropped":
            self.outbox.mark_dropped(item, attempt.error)
        elif attempt.ok:
            self.outbox.mark_sent(item, attempt.finished)
        else:
            self.outbox.mark_failed(replace(item, attempts=attempts), attempt.error)
        self.tally.record(attempt, item.dedupe_key, item.unit, item.kind, item.event_at, attempts)
        return None if attempt.status == "dropped" else attempt.ok
