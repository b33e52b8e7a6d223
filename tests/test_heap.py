"""Settling the heap at ready: what is alive is frozen (out of the collector's walks), free pages
handed back."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from monitor.exchange.conn_budget import ConnectionBudget, Priority
from monitor.ops import heap


@pytest.fixture(autouse=True)
def _alone() -> Iterator[None]:
    """Each test sees only its own heap callbacks: a daemon that became ready earlier in this worker
    left its own (a tail window of 3 s, a freeze after the next full collection)."""
    saved = gc.callbacks[:]
    gc.callbacks[:] = [c for c in saved if getattr(c, "__module__", "") != heap.__name__]
    try:
        yield
    finally:
        gc.callbacks[:] = saved


def test_settle_freezes_what_is_alive_and_reports_what_it_did() -> None:
    """After ``settle`` an object alive before it is no longer in any generation the collector walks."""

    class Node:
        other: object = None

    keep = Node()
    keep.other = keep  # tracked by the collector
    try:
        assert any(o is keep for o in gc.get_objects())
        done = heap.settle()
        assert done["frozen"] == gc.get_freeze_count() > 0
        assert done["trimmed"] in (0.0, 1.0) and done["seconds"] >= 0
        assert not any(o is keep for o in gc.get_objects())  # frozen: out of every generation
        later = Node()
        later.other = later
        assert any(o is later for o in gc.get_objects())  # what comes after is collected as usual
    finally:
        gc.callbacks[:] = [c for c in gc.callbacks if getattr(c, "__module__", "") != heap.__name__]
        gc.unfreeze()


def test_survivors_of_the_next_full_collection_are_frozen_once() -> None:
    """An object made after ``settle`` is frozen by the next full collection, one made after that is not."""

    class Node:
        other: object = None

    callback = heap.freeze_after_next_full_collection()
    try:
        tail = Node()
        tail.other = tail  # start-up's tail: made after ready, alive for good
        gc.collect(1)  # a younger collection does not trigger it
        assert any(o is tail for o in gc.get_objects())
        gc.collect()  # the first full collection: its survivors are frozen
        assert not any(o is tail for o in gc.get_objects())
        steady = Node()
        steady.other = steady
        gc.collect()  # later full collections walk what is new, as usual
        assert any(o is steady for o in gc.get_objects())
    finally:
        gc.callbacks.remove(callback)
        gc.unfreeze()


def test_survivors_of_young_collections_are_frozen_for_the_tail_window_only() -> None:
    """For the window after ready, what survives a generation-1 collection is frozen (never walked by
    a full collection); a generation-0 collection freezes nothing; after the window nothing is."""

    class Node:
        other: object = None

    now = [0.0]
    callback = heap.freeze_young_survivors(3.0, clock=lambda: now[0])
    try:
        tail = Node()
        tail.other = tail
        gc.collect(0)
        assert any(o is tail for o in gc.get_objects())
        gc.collect(1)  # within the window: its survivors frozen
        assert not any(o is tail for o in gc.get_objects())
        now[0] = 3.0
        steady = Node()
        steady.other = steady
        gc.collect(1)
        gc.collect()
        assert any(o is steady for o in gc.get_objects())  # after the window: collected as usual
    finally:
        gc.callbacks.remove(callback)
        gc.unfreeze()


def test_set_aside_freezes_what_is_alive_without_a_collection() -> None:
    """A start-up milestone: what is alive leaves the collector's walks, with no collection (the walk
    of the whole heap is what it saves) and no callback left behind."""

    class Node:
        other: object = None

    keep = Node()
    keep.other = keep
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    callbacks = len(gc.callbacks)
    try:
        frozen = heap.set_aside()
        assert frozen == gc.get_freeze_count() > 0
        assert not any(o is keep for o in gc.get_objects())
        assert collections == [] and len(gc.callbacks) == callbacks
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()


def test_hold_collections_until_resumed_once() -> None:
    """Start-up's hold: the collector off until resumed (at ready by ``settle``); resuming twice, or
    without a hold, changes nothing; a collector someone else turned off is left off."""
    assert gc.isenabled()
    try:
        heap.hold_collections()
        assert not gc.isenabled()
        heap.resume_collections()
        assert gc.isenabled()
        heap.resume_collections()
        assert gc.isenabled()
        gc.disable()  # someone else's choice
        heap.hold_collections()
        heap.resume_collections()
        assert not gc.isenabled()
        gc.enable()
        heap.hold_collections()
        heap.settle()  # ready: collections resume
        assert gc.isenabled()
    finally:
        heap.resume_collections()
        gc.enable()
        gc.callbacks[:] = [c for c in gc.callbacks if getattr(c, "__module__", "") != heap.__name__]
        gc.unfreeze()


def test_settle_runs_the_ready_hooks_once() -> None:
    """A hook given to ``at_ready`` runs at the next ``settle`` (ready), after the freeze, and never again."""
    calls: list[int] = []
    heap.at_ready(lambda: calls.append(gc.get_freeze_count()))
    try:
        heap.settle()
        assert len(calls) == 1 and calls[0] > 0  # the heap was frozen first
        heap.settle()
        assert len(calls) == 1
    finally:
        gc.callbacks[:] = [c for c in gc.callbacks if getattr(c, "__module__", "") != heap.__name__]
        gc.unfreeze()


async def test_late_connections_survivors_are_frozen_once_the_budget_drains() -> None:
    """At ready with connection attempts still waiting for a slot (a real budget): nothing more is
    frozen until the last of them has its slot; then the survivors of the next generation-1
    collection are, once (a later young collection's are not, and the hook leaves ``gc.callbacks``)."""

    class Node:
        other: object = None

    budget = ConnectionBudget(1, 60.0)
    await budget.acquire("market", Priority.MARKET)  # the one slot of the window, taken
    budget.done()
    waiting = asyncio.create_task(budget.acquire("risk:a", Priority.RISK))
    await asyncio.sleep(0)
    assert budget.wait_of("risk:a") is not None
    settled = heap.ConnectionsSettled(budget)
    try:
        settled()  # at ready (settle runs it)
        early = Node()
        early.other = early
        gc.collect(1)
        assert settled.hook is None and any(o is early for o in gc.get_objects())
        waiting.cancel()  # the last waiter leaves the queue: drained
        await asyncio.gather(waiting, return_exceptions=True)
        assert settled.hook is not None and settled.hook in gc.callbacks
        late = Node()  # a late connection's objects
        late.other = late
        gc.collect(0)
        assert any(o is late for o in gc.get_objects())  # a generation-0 collection freezes nothing
        gc.collect(1)
        assert not any(o is late for o in gc.get_objects())  # frozen
        assert settled.hook not in gc.callbacks
        steady = Node()
        steady.other = steady
        gc.collect(1)
        assert any(o is steady for o in gc.get_objects())  # once: collected as usual after
    finally:
        budget.close()
        gc.unfreeze()
