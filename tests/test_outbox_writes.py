"""How many times the state file is written and checkpointed while alerts go out (counted, never
timed): rows delivered in one turn of the event loop are marked sent in one transaction, and the
write-ahead log is checkpointed when the outbox is quiet, not inside a crash's commits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.alerts.policy import AlertEvent, AlertPolicy, LevelRule, PolicyConfig
from monitor.notify.checkpoint import QuietCheckpoint
from monitor.notify.dispatcher import Dispatcher, NotifyRoute
from monitor.notify.messages import Message
from monitor.notify.outbox import OutboxStage
from monitor.store import WAL_CAP_PAGES, OutboxItem, Store

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    with Store(tmp_path) as s:
        yield s


def rows(store: Store, n: int) -> list[OutboxItem]:
    items = [
        OutboxItem(f"u{i}|1", "chat#x", "chat", f"u{i}", "firing", f"t{i}", "b", "warning", 1.0)
        for i in range(n)
    ]
    return store.add_outbox(items)


def crash(units: int) -> list[AlertEvent]:
    """``units`` units crossing 1.5 at once: one event each."""
    policy = AlertPolicy(PolicyConfig(levels=(LevelRule("normal", 1.5, ("chat",)),)))
    now = time.time()
    events: list[AlertEvent] = []
    for i in range(units):
        policy.evaluate(f"cross:u{i}", 1.6, None, now)
        events += policy.evaluate(f"cross:u{i}", 1.4, None, now)
    return events


async def test_rows_delivered_in_one_loop_turn_are_marked_sent_in_one_transaction(store: Store) -> None:
    stage = OutboxStage(store)
    added = rows(store, 5)
    before = store.writes
    for item in added:
        stage.mark_sent(item, 2.0)
    assert store.writes == before  # written at the end of the turn, not per row
    await asyncio.sleep(0)
    assert (store.writes, stage.sent_writes) == (before + 1, 1)
    assert store.open_outbox() == []
    assert store.outbox_counts() == {("chat", "sent"): 5}


def test_without_an_event_loop_a_row_is_marked_sent_at_once(store: Store) -> None:
    stage = OutboxStage(store)
    (item,) = rows(store, 1)
    stage.mark_sent(item, 2.0)
    assert store.outbox_counts() == {("chat", "sent"): 1}


async def test_a_burst_through_the_dispatcher_is_marked_sent_in_fewer_transactions_than_rows(
    store: Store,
) -> None:
    """40 alerts to a sender that answers at once, 8 in flight: every row sent exactly once, marked
    in fewer commits than rows; stop() writes what the last turn delivered."""
    sent: list[str] = []

    async def sender(url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        sent.append(title)
        return True

    d = Dispatcher(
        {"chat": NotifyRoute("chat", ("json://127.0.0.1:9/hook",))},
        store,
        sender=sender,
        concurrency=lambda url: 8,
    )
    await d.start()
    events = crash(40)
    await d.enqueue_many([(e, Message(e.unit, "b", "warning")) for e in events])
    deadline = time.monotonic() + 10
    while len(sent) < 40:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    await d.stop()
    assert sorted(sent) == sorted(e.unit for e in events)
    assert store.outbox_counts() == {("chat", "sent"): 40}
    assert 1 <= d.outbox.sent_writes < 40


def test_the_state_file_checkpoints_by_itself_only_past_the_cap(store: Store) -> None:
    assert store._conn is not None
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_CAP_PAGES


def test_checkpoint_waits_for_a_quiet_look_or_the_longest_interval(store: Store) -> None:
    """Looks (once a ``quiet`` interval): no checkpoint while every look finds new writes, one at the
    first look after none, none when nothing was written since; after ``longest``, one anyway."""
    now = [0.0]
    cp = QuietCheckpoint(store, quiet=1.0, longest=30.0, clock=lambda: now[0])
    assert not cp.due()  # nothing written
    for second in range(1, 5):  # a crash: writes between every look
        now[0] = second
        rows(store, 1) if second == 1 else store.put_json("k", second)
        assert not cp.due()
    now[0] = 5
    assert cp.look()  # quiet since the last look
    assert store.checkpoints == 1
    now[0] = 6
    assert not cp.due()  # nothing new
    for second in range(7, 40):  # writes without a pause
        now[0] = second
        store.put_json("k", second)
        if cp.look():
            break
    assert (now[0], store.checkpoints) == (35, 2)  # the longest interval (30 s) after the checkpoint at 5


async def test_the_dispatcher_checkpoints_once_the_outbox_is_quiet(store: Store) -> None:
    async def sender(url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        return True

    d = Dispatcher({"chat": NotifyRoute("chat", ("json://127.0.0.1:9/hook",))}, store, sender=sender)
    d.checkpoint.quiet = 0.05
    await d.start()
    await d.enqueue_many([(e, Message(e.unit, "b", "warning")) for e in crash(3)])
    deadline = time.monotonic() + 10
    while store.checkpoints == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await d.stop()
    assert store.outbox_counts() == {("chat", "sent"): 3}
