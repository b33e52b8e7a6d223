"""From the engine's outbox to the dispatcher: messages rendered, silences applied, notices sent.

The pump is the one consumer of the engine's outbox while the daemon runs; :meth:`Outflow.flush`
empties it at shutdown. Notices (keys refused or revoked, accounts not watched, state lost) go to
every route, or to the blind routes when they say an account is not watched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from monitor.alerts.policy import AlertPolicy
from monitor.config.model import Config
from monitor.notify.dispatcher import Dispatcher
from monitor.notify.messages import render
from monitor.notify.silence_stage import STORE_KEY as SILENCES_KEY
from monitor.notify.silence_stage import SilenceCollector, SilenceRegistry
from monitor.notify.stages import Letter
from monitor.ops.metrics import Metrics
from monitor.ops.recorder import Recorder
from monitor.ops.status_data import liquidation_bar, rule_protected
from monitor.risk.book import AccountBook
from monitor.store import StateError, Store
from monitor.watch.engine import Engine, Outgoing
from monitor.watch.notices import Notice
from monitor.watch.reshard import Handoff

log = structlog.get_logger("monitor.service")

PUMP_BATCH = 8  # alert events written to the outbox in one transaction, at most: 32 held the loop for up
# to 24 ms in a crash (bench/crash.py stall list). Rendering one is ~40 µs on a quiet machine (~120 µs
# under the crash); the transaction costs more (docs/benchmarks.md, "pump and once-a-second job"),
# so the pump renders a batch in one turn of the loop and writes it in the next
STATE_BATCH = 64  # units whose alert state is saved in one write, at most: every unit's state at once
# (1,000 after start-up) held the loop 15 ms (export 4.6 + upsert 9.3 ms of CPU, bench/pump_turns.py);
# the rest is saved in the next writes, or in turns of its own once the engine's outbox is empty


def blind_routes(config: Config) -> tuple[str, ...]:
    """Where "not watched" goes: ``alerts.blind_routes``, else the default routes, else every route."""
    alerts = config.alerts
    return alerts.blind_routes or alerts.default_routes or config.route_names()


async def send_notices(
    notices: list[Notice], dispatcher: Dispatcher, config: Config, clock: Callable[[], float]
) -> None:
    """Key refusals, revocations and risky keys go to every route (drains ``notices``)."""
    while notices:
        notice = notices.pop(0)
        event = notice.event(blind_routes(config) if notice.blind else config.route_names(), clock())
        await dispatcher.enqueue(event, notice.title, notice.body, notify_type="failure")


def silence_registry(store: Store, metrics: Metrics, clock: Callable[[], float]) -> SilenceRegistry:
    """The silences, kept in the state file (a failing file is logged; they are kept in memory)."""

    def load() -> Any:
        try:
            return store.get_json(SILENCES_KEY)
        except StateError as exc:
            log.error("silences_load_failed", error=str(exc))
            return []

    def save(value: Any) -> None:
        try:
            store.put_json(SILENCES_KEY, value)
        except StateError as exc:  # kept in memory; said once per change
            log.error("silences_save_failed", error=str(exc))

    registry = SilenceRegistry(load, save, clock=clock)
    metrics.registry.register(SilenceCollector(registry))
    return registry


class Outflow:
    """The engine's events, rendered and silenced, into the dispatcher's outbox."""

    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        *,
        book: AccountBook,
        handoff: Handoff,
        silences: SilenceRegistry,
        recorder: Recorder,
        metrics: Metrics,
        notices: list[Notice],
        config: Config,
        clock: Callable[[], float],
    ) -> None:
        self.engine, self.dispatcher, self.book, self.handoff = engine, dispatcher, book, handoff
        self.silences, self.recorder, self.metrics = silences, recorder, metrics
        self.notices, self.config, self.clock = notices, config, clock
        # taken from the engine and rendered, not yet in the outbox (the pump's turn between the two);
        # :meth:`flush` writes them first at shutdown, so one unit's alerts keep their order
        self._rendered: list[tuple[Outgoing, Letter]] = []
        # units whose changed alert state is not saved yet (taken from the policy, saved STATE_BATCH
        # a write); lagging the outbox is safe, a unit's state is only ever saved with none of its
        # events still queued (a crash re-fires their dedupe keys, which the outbox ignores)
        self._unsaved: set[str] = set()

    @property
    def policy(self) -> AlertPolicy:
        return self.engine.policy

    async def pump(self) -> None:
        """Hand the engine's events to the dispatcher, with a message each trader can act on."""
        outbox = self.engine.outbox
        while True:
            if self._unsaved and outbox.empty():  # the rest of a large state, a slice a turn
                self.dispatcher.outbox.save_state(self._state_slice())
                await asyncio.sleep(0)
                continue
            # a burst (a crash crossing hundreds of units) goes to the outbox in transactions of up to
            # PUMP_BATCH events; a batch is rendered in one turn of the event loop and written in the
            # next, with ticks and sends between them (a turn holds one of the two, never both)
            batch = [await outbox.get()]
            while len(batch) < PUMP_BATCH and not outbox.empty():
                batch.append(outbox.get_nowait())
            self._rendered += [(item, self.letter(item)) for item in batch]
            await asyncio.sleep(0)
            await self._write_rendered()
            await self.send_notices()
            await asyncio.sleep(0)

    async def _write_rendered(self) -> None:
        """The rendered letters into the outbox in one transaction (none if :meth:`flush` took them)."""
        taken, self._rendered = self._rendered, []
        if not taken:
            return
        state = self._state_slice()
        # the dispatcher's silence stage drops what a silence holds back (logged, never enqueued)
        await self.dispatcher.enqueue_letters([letter for _, letter in taken], alert_state=state)
        now = time.time()
        for item, _ in taken:
            self.recorder.note(item.event)  # an append; written by the history job (silenced or not)
            if item.tick_time is not None:
                self.metrics.observe_latency(now - item.tick_time)

    def _state_slice(self) -> dict[str, Any] | None:
        """The alert state of up to :data:`STATE_BATCH` changed units, if the engine queued nothing.

        State saved only once every queued event is in the outbox: a state that lags the outbox
        re-fires the same dedupe key after a crash (ignored), one that leads it would lose alerts.
        Checked in the turn of the write: what the engine queued since the render waits."""
        if not self.engine.outbox.empty():
            return None
        policy = self.policy
        self._unsaved |= policy.take_dirty()
        if not self._unsaved:
            return None
        chosen = [self._unsaved.pop() for _ in range(min(STATE_BATCH, len(self._unsaved)))]
        return policy.export_state(chosen)

    async def flush(self) -> None:
        """At shutdown: what the pump rendered and did not write, then what the engine queued and the
        pump did not take, into the outbox (in that order: one unit's alerts keep theirs)."""
        await self._write_rendered()
        while not self.engine.outbox.empty():
            await self.dispatcher.enqueue_letters([self.letter(self.engine.outbox.get_nowait())])
        await self.send_notices()

    async def send_notices(self) -> None:
        await send_notices(self.notices, self.dispatcher, self.config, self.clock)

    def letter(self, item: Outgoing) -> Letter:
        """An engine event as the dispatcher's letter: the trader's message (annotated when the unit
        changed shard) and whether a silence must name the rule to hold it back (the liquidation rung)."""
        event, report = item.event, item.report
        protected = rule_protected(self.policy, event.unit, event.rule, liquidation_bar(report))
        return Letter(event, self.handoff.annotate(event, render(event, report)), protected)
