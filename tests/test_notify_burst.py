"""The Dispatcher under a burst: a whole crash written in one transaction, several sends in flight
per URL (never two of one unit), a failure holding back later rows, and every alert exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.alerts.policy import AlertEvent, AlertPolicy, LevelRule, PolicyConfig
from monitor.notify.apprise_sink import AppriseSender
from monitor.notify.dispatcher import Dispatcher, NotifyRoute
from monitor.notify.messages import Message
from monitor.store import Store

pytestmark = pytest.mark.timeout(30)


def crossing(unit: str) -> list[AlertEvent]:
    """A unit falling from 1.6 to 1.0: its 1.5, 1.3 and 1.1 events, in that order."""
    rules = tuple(
        LevelRule(name, bar, ("chat",))
        for name, bar in (("normal", 1.5), ("margin_call", 1.3), ("liquidation", 1.1))
    )
    policy = AlertPolicy(PolicyConfig(levels=rules))
    policy.evaluate(unit, 1.6, None, time.time())
    return policy.evaluate(unit, 1.0, None, time.time())


def message(event: AlertEvent) -> Message:
    return Message(f"{event.unit} {event.rule}", f"body of {event.dedupe_key}", "warning")


class Gate:
    """A sender that records each call and holds it until released; ``fail`` answers False once."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.in_flight: dict[str, int] = {}
        self.most = 0
        self.fail = set(fail or ())
        self.release = asyncio.Event()
        self.hold: set[str] = set()  # titles (prefix match) that wait for ``release``

    async def __call__(self, url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        unit = title.split()[0]
        self.calls.append(title)
        self.in_flight[unit] = self.in_flight.get(unit, 0) + 1
        assert self.in_flight[unit] == 1, f"two sends of {unit} at once"
        self.most = max(self.most, sum(self.in_flight.values()))
        try:
            if title in self.fail:
                self.fail.discard(title)
                return False
            if any(title.startswith(h) for h in self.hold):
                await self.release.wait()
            await asyncio.sleep(0)
            return True
        finally:
            self.in_flight[unit] -= 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    with Store(tmp_path) as s:
        yield s


def dispatcher(store: Store, gate: Gate, limit: int) -> Dispatcher:
    route = NotifyRoute("chat", ("json://127.0.0.1:9/hook",))
    return Dispatcher(
        {"chat": route}, store, sender=gate, backoff=lambda attempt: 0.0, concurrency=lambda url: limit
    )


async def until(condition: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_enqueue_many_writes_each_event_once_with_the_state(store: Store) -> None:
    """A burst (and a repeat of it) is stored once per event, with the alert state, and sent once."""
    gate = Gate()
    d = dispatcher(store, gate, 4)
    await d.start()
    events = [e for unit in ("cross:a", "cross:b", "cross:c") for e in crossing(unit)]
    await d.enqueue_many([(e, message(e)) for e in events], alert_state={"cross:a": {"x": 1}})
    await d.enqueue_many([(e, message(e)) for e in events[:4]])  # the same crossings again
    await until(lambda: d.stats()["chat"].sent == 9)
    await d.stop()
    assert sorted(gate.calls) == sorted(f"{e.unit} {e.rule}" for e in events)
    assert store.load_alert_state() == {"cross:a": {"x": 1}}
    assert store.open_outbox() == []
    assert store.outbox_counts() == {("chat", "sent"): 9}


async def test_sends_overlap_up_to_the_limit_but_never_within_a_unit(store: Store) -> None:
    """Six units crossing: three sends in flight at once (the limit), each unit's three in order."""
    gate = Gate()
    gate.hold = {"cross:"}
    d = dispatcher(store, gate, 3)
    await d.start()
    units = [f"cross:u{i}" for i in range(6)]
    events = [e for unit in units for e in crossing(unit)]
    await d.enqueue_many([(e, message(e)) for e in events])
    await until(lambda: len(gate.calls) == 3)
    await asyncio.sleep(0.05)
    assert len(gate.calls) == 3 and gate.most == 3  # full: nothing more starts
    assert {c.split()[0] for c in gate.calls} == set(units[:3])  # three units, not one unit's three
    gate.release.set()
    await until(lambda: d.stats()["chat"].sent == 18)
    await d.stop()
    assert gate.most == 3 and len(gate.calls) == 18
    for unit in units:
        assert [c.split()[1] for c in gate.calls if c.startswith(unit + " ")] == [
            "normal",
            "margin_call",
            "liquidation",
        ]


async def test_a_failure_holds_later_rows_until_its_retry_succeeds(store: Store) -> None:
    """A fails while B is in flight: nothing new starts; after B, A is retried, then C and D go."""
    gate = Gate(fail={"cross:a normal"})
    gate.hold = {"cross:b"}
    d = dispatcher(store, gate, 2)
    await d.start()
    events = [crossing(u)[0] for u in ("cross:a", "cross:b", "cross:c", "cross:d")]
    await d.enqueue_many([(e, message(e)) for e in events])
    await until(lambda: len(gate.calls) == 2)
    await asyncio.sleep(0.05)
    assert gate.calls == ["cross:a normal", "cross:b normal"]  # A failed; C waits behind it
    gate.release.set()
    await until(lambda: d.stats()["chat"].sent == 4)
    await d.stop()
    assert gate.calls[:3] == ["cross:a normal", "cross:b normal", "cross:a normal"]
    assert sorted(gate.calls[3:]) == ["cross:c normal", "cross:d normal"]
    assert d.stats()["chat"].failed == 1 and store.open_outbox() == []


def test_apprise_sends_in_parallel_only_where_the_service_sets_no_spacing() -> None:
    """json:// (no spacing) gets the parallel limit; ntfy:// (5.5 s spacing) and a bad URL get one."""
    sender = AppriseSender()
    assert sender.concurrency("json://127.0.0.1:9/hook", 4) == 4
    assert sender.concurrency("ntfy://topic", 4) == 1
    assert sender.concurrency("nonsense://x", 4) == 1
