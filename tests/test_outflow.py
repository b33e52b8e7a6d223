"""The pump (monitor/app/outflow.py) on the daemon's real parts (simulator, SQLite outbox, webhook):
a batch is rendered in one turn of the event loop and written in the next, and nothing is lost,
doubled or reordered, at shutdown too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Receiver, daemon_config
from test_periodic import Turns

from monitor.alerts.policy import AlertEvent
from monitor.app import outflow as outflow_module
from monitor.app.components import Components, Options, resolve
from monitor.app.outflow import PUMP_BATCH, Outflow
from monitor.config.model import load_config
from monitor.notify.stages import Letter
from monitor.sim import Simulator
from monitor.watch.engine import Outgoing

UNIT = "cross:demo"


@pytest.fixture
async def parts(tmp_path: Path, sim: Simulator, receiver: Receiver) -> AsyncIterator[Components]:
    path = daemon_config(tmp_path, sim, receiver)
    async with contextlib.AsyncExitStack() as stack:
        yield await resolve(load_config(path), path, Options(), stack, stopping=lambda: False)


def outflow_of(parts: Components) -> Outflow:
    return Outflow(
        parts.engine, parts.dispatcher, book=parts.book, handoff=parts.handoff,
        silences=parts.silences, recorder=parts.recorder, metrics=parts.metrics,
        notices=parts.notices, config=parts.config, clock=parts.clock,
    )  # fmt: skip


def queue(parts: Components, first: int, count: int) -> list[str]:
    """``count`` repeat reminders of one unit onto the engine's outbox, in order; their dedupe keys."""
    report = parts.engine.report(UNIT)
    keys = []
    for n in range(first, first + count):
        key = f"{UNIT}|margin_call|1|repeat|{n}"
        event = AlertEvent(
            kind="repeat", unit=UNIT, rule="margin_call", bar=1.3, level=1.2, distance=-0.05,
            at=1_000.0 + n, since=1_000.0, routes=("hook",), dedupe_key=key, crossing=1, severity=1,
            repeat_n=n,
        )  # fmt: skip
        parts.engine.outbox.put_nowait(Outgoing(event, report, tick_time=None))
        keys.append(key)
    return keys


class Seen:
    """What the pump renders and writes, with the turn of the event loop of each."""

    def __init__(self, outflow: Outflow, turns: Turns) -> None:
        self.rendered: list[int] = []
        self.written: list[tuple[int, list[str]]] = []
        letter, enqueue = outflow.letter, outflow.dispatcher.enqueue_letters

        def rendered(item: Outgoing) -> Letter:
            self.rendered.append(turns.count)
            return letter(item)

        async def written(letters: Sequence[Letter], **kw: Any) -> None:
            self.written.append((turns.count, [one.event.dedupe_key for one in letters]))
            await enqueue(letters, **kw)

        outflow.letter = rendered  # type: ignore[method-assign]
        outflow.dispatcher.enqueue_letters = written  # type: ignore[method-assign]

    def keys(self) -> list[str]:
        return [key for _, keys in self.written for key in keys]


async def settle(until: Any) -> None:
    for _ in range(1_000):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("the pump did not get there")


async def test_a_batch_is_rendered_in_one_turn_and_written_in_the_next(parts: Components) -> None:
    """Rendering and the outbox transaction each hold the loop alone (under a crash the two together
    held it 5-28 ms): a batch's letters all in one turn, written together in a later one."""
    outflow = outflow_of(parts)
    keys = queue(parts, 1, PUMP_BATCH + 3)
    with Turns() as turns:
        seen = Seen(outflow, turns)
        pump = asyncio.create_task(outflow.pump())
        await settle(lambda: len(seen.keys()) == len(keys))
        pump.cancel()
    assert seen.keys() == keys  # in the engine's order, each once
    (first_turn, first), (second_turn, second) = seen.written
    assert len(first) == PUMP_BATCH and len(second) == 3
    assert set(seen.rendered[:PUMP_BATCH]) == {seen.rendered[0]}  # the batch rendered in one turn
    assert seen.rendered[0] < first_turn < seen.rendered[PUMP_BATCH] < second_turn
    assert first_turn not in seen.rendered and second_turn not in seen.rendered  # a write renders nothing


async def test_flush_writes_what_the_pump_rendered_first_and_nothing_twice(parts: Components) -> None:
    """Shutdown between the pump's render and its write: flush writes the rendered letters, then what
    the engine still holds, in the engine's order; the pump, resumed, writes nothing again."""
    outflow = outflow_of(parts)
    keys = queue(parts, 1, 3)
    with Turns() as turns:
        seen = Seen(outflow, turns)
        pump = asyncio.create_task(outflow.pump())
        await settle(lambda: len(seen.rendered) == 3)
        assert seen.written == []  # rendered, not written yet
        keys += queue(parts, 4, 2)
        await outflow.flush()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        pump.cancel()
    assert seen.keys() == keys


async def test_a_large_state_is_saved_in_slices_each_in_a_turn_of_its_own(
    parts: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every unit's changed alert state at once (1,000 after start-up held the loop 15 ms) is saved
    STATE_BATCH units a write: with the letters while any come, the rest in turns of its own once
    the engine queued nothing; every unit's state ends up in the file, none twice."""
    monkeypatch.setattr(outflow_module, "STATE_BATCH", 1)
    policy = parts.engine.policy
    units = [UNIT, *(f"cross:other{n}" for n in range(4))]
    for unit in units:
        policy._state(unit)  # as after start-up: every unit has a state, changed and unsaved
    policy._dirty.update(units)
    outflow = outflow_of(parts)
    saved: list[tuple[int, list[str], int]] = []  # (turn, units, letters) of each transaction
    add = parts.store.add_outbox

    def recorded(items: Any, *, alert_state: Any = None) -> Any:
        saved.append((turns.count, sorted(alert_state or {}), len(items)))
        return add(items, alert_state=alert_state)

    parts.store.add_outbox = recorded  # type: ignore[method-assign]
    keys = queue(parts, 1, 1)
    with Turns() as turns:
        seen = Seen(outflow, turns)
        pump = asyncio.create_task(outflow.pump())
        await settle(lambda: sum(len(u) for _, u, _ in saved) == len(units))
        for _ in range(5):
            await asyncio.sleep(0)
        pump.cancel()
    assert seen.keys() == keys
    assert sorted(u for _, one, _ in saved for u in one) == sorted(units)  # each unit once
    assert parts.store.load_alert_state().keys() == set(units)
    assert all(len(one) <= 1 for _, one, _ in saved)
    assert saved[0][2] == 1  # the letter's transaction carries the first slice
    assert len({turn for turn, _, _ in saved}) == len(saved)  # each write in a turn of its own
