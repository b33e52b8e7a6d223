"""The outbox stage: persist and deduplicate. One SQLite row per letter × target, unique on
(dedupe key, target), so a crossing is never sent twice, also across restarts; a whole batch and
the alert state go in one transaction. The rows still open at start are what the next run sends.

A row delivered is marked sent in one transaction with the others delivered in the same turn of
the event loop (:meth:`OutboxStage.mark_sent`; a burst's sends complete together): a crash between
a delivery and that commit resends the row at the next start, as a crash between the receiver's
answer and the commit always did.

When the state file is unusable, delivery goes on from memory: rows get negative ids (never
written) and the last :data:`MEMORY_KEYS` (dedupe key, target) pairs seen keep deduplicating.
Every write failure is logged; none stops delivery.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog

from monitor.notify.stages import Batch, Letter
from monitor.store import OutboxItem, OutboxStatus, StateError, Store

log = structlog.get_logger(__name__)

__all__ = ["MEMORY_KEYS", "NOTIFY_TYPES", "OutboxStage"]

NOTIFY_TYPES = {"firing": "warning", "repeat": "warning", "blind": "warning", "summary": "warning"}
MEMORY_KEYS = 10_000  # dedupe keys remembered in memory (for when the state file is unusable)


class OutboxStage:
    """Writes letters as outbox rows and returns the rows that are new (with their ids)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._fallback_ids = itertools.count(-1, -1)
        self._sent: list[tuple[int, float]] = []  # (row id, time) delivered, to mark in one transaction
        self.sent_writes = 0  # transactions that marked rows sent

    def exec(self, batch: Batch, items: Sequence[Letter]) -> list[OutboxItem]:
        """One row per letter × target (``held`` on the routes flood control held), stored with
        ``batch.alert_state`` in one transaction; the duplicates are left out of the result."""
        rows: list[OutboxItem] = []
        for letter in items:
            event, message = letter.event, letter.message
            notify_type = message.notify_type or NOTIFY_TYPES.get(event.kind, "success")
            for target in letter.targets:
                status: OutboxStatus = "held" if target.route in letter.held else "queued"
                rows.append(
                    OutboxItem(event.dedupe_key, target.id, target.route, event.unit, event.kind,
                               message.title, message.body, notify_type, event.at, status)
                )  # fmt: skip
        return self._persist(rows, batch.alert_state)

    def save_state(self, alert_state: Mapping[str, Any] | None) -> None:
        """Alert state alone, in a transaction of its own (a failing file is logged, as any write)."""
        self._persist([], alert_state)

    def recover(self, targets: Container[str]) -> list[OutboxItem]:
        """The rows still queued or held, oldest first, except those already known here; a row whose
        target (route or URL) left the config is marked dropped."""
        try:
            rows = self._store.open_outbox()
        except StateError as exc:
            log.error("outbox_read_failed", error=str(exc))
            return []
        out: list[OutboxItem] = []
        for row in rows:
            if (row.dedupe_key, row.target) in self._known:
                continue
            if row.target not in targets:
                log.warning("notify_target_gone", route=row.route, dedupe_key=row.dedupe_key)
                self.mark_dropped(row, "route or URL no longer configured")
                continue
            out.append(row)
        if out:
            log.info("outbox_recovered", items=len(out))
        return out

    def remember(self, item: OutboxItem) -> None:
        """Note a row as on its way (deduplicates in memory when the state file fails)."""
        self._known[(item.dedupe_key, item.target)] = None
        while len(self._known) > MEMORY_KEYS:
            self._known.popitem(last=False)

    def coalesce(self, held_ids: Sequence[int], summaries: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Store flood control's summary rows in place of the held rows (one transaction)."""
        try:
            return self._store.coalesce(held_ids, summaries)
        except StateError as exc:
            log.error("outbox_write_failed", error=str(exc), items=len(summaries), fallback="memory")
            return [replace(s, id=next(self._fallback_ids)) for s in summaries]

    def mark_sent(self, item: OutboxItem, at: float) -> None:
        """Mark ``item`` sent: at the end of this turn of the event loop, in one transaction with the
        rows delivered in the same turn (at once when no loop runs)."""
        if item.id <= 0:
            return
        self._sent.append((item.id, at))
        if len(self._sent) > 1:
            return  # a flush is already scheduled
        try:
            asyncio.get_running_loop().call_soon(self.flush_sent)
        except RuntimeError:  # no event loop: nothing to batch with
            self.flush_sent()

    def flush_sent(self) -> None:
        """Write the rows marked sent so far (the dispatcher calls it at stop and drain too)."""
        if not self._sent:
            return
        sent, self._sent = self._sent, []
        self.sent_writes += 1
        self._call(self._store.mark_sent_many, sent)

    def mark_failed(self, item: OutboxItem, error: str) -> None:
        """``item.attempts`` counts the attempt that failed; ``error`` holds no secret (stored)."""
        if item.id > 0:
            self._call(self._store.mark_failed, item.id, item.attempts, error)

    def mark_dropped(self, item: OutboxItem, reason: str) -> None:
        if item.id > 0:
            self._call(self._store.mark_dropped, item.id, reason)

    def _persist(self, items: list[OutboxItem], alert_state: Mapping[str, Any] | None) -> list[OutboxItem]:
        if not items and not alert_state:
            return []
        try:
            return self._store.add_outbox(items, alert_state=alert_state)
        except StateError as exc:
            log.error("outbox_write_failed", error=str(exc), items=len(items), fallback="memory")
            fresh = [i for i in items if (i.dedupe_key, i.target) not in self._known]
            return [replace(i, id=next(self._fallback_ids)) for i in fresh]

    @staticmethod
    def _call(method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except StateError as exc:
            log.error("outbox_update_failed", error=str(exc))
