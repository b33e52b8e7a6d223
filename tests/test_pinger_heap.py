"""The shared pinger's schedule (``monitor.exchange.ping_heap``), driven as the loop drives it:
a turn at the earliest due time (or the very next turn while more is due), each turn taking
``TURN`` s. Whatever is registered, removed or left unanswered: every connection whose pongs come
is pinged within its interval plus the turns the others take; a turn never sends more pings than
its cap; a silent connection is found dead once, ``timeout`` after its only ping; a removed one is
never handed out again."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.exchange.ping_heap import BEHIND, CAP_BEHIND, Action, PingHeap, Slot

TURN = 0.001  # s a loop turn takes in the model


@dataclass
class Conn:
    answers: bool
    added: float
    first: float
    pings: list[float] = field(default_factory=list)
    dead: list[float] = field(default_factory=list)
    removed: float | None = None


add = st.tuples(
    st.just("add"),
    st.floats(1.0, 30.0),  # interval
    st.floats(1.0, 30.0),  # pong timeout
    st.floats(0.0, 1.0, exclude_max=True),  # the random part of the interval before the first ping
    st.booleans(),  # its pongs come
)
remove = st.tuples(st.just("remove"), st.integers(0, 50))
advance = st.tuples(st.just("advance"), st.floats(0.0, 40.0))
ops = st.lists(st.one_of(add, remove, advance), min_size=1, max_size=60)


class Model:
    def __init__(self) -> None:
        self.heap: PingHeap[Conn] = PingHeap()
        self.now = 0.0
        self.slots: list[Slot[Conn]] = []

    def run_until(self, end: float) -> None:
        while True:
            due = self.heap.next_due()
            if due is None or due > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, due)  # the timer fires, or the next turn comes
            cap = CAP_BEHIND if self.now - due > BEHIND else 1
            taken = self.heap.take(self.now)
            assert len([a for _, a in taken if a is Action.PING]) <= cap
            assert len(taken) <= cap
            for slot, action in taken:
                conn = slot.item
                assert conn.removed is None and not conn.dead  # never handed out once gone
                if action is Action.PING:
                    conn.pings.append(self.now)
                    if conn.answers:
                        self.heap.answered(slot)  # the pong, before the next turn
                else:
                    conn.dead.append(self.now)
            self.now += TURN


@settings(max_examples=200, deadline=None)
@given(ops)
def test_every_connection_is_pinged_in_time_and_never_in_bunches(steps: list[tuple[object, ...]]) -> None:
    model = Model()
    for step in steps:
        if step[0] == "add":
            _, interval, timeout, part, answers = step
            assert isinstance(interval, float) and isinstance(timeout, float) and isinstance(part, float)
            conn = Conn(bool(answers), model.now, part * interval)
            model.slots.append(
                model.heap.add(conn, interval=interval, timeout=timeout, now=model.now, first=part * interval)
            )
        elif step[0] == "remove" and model.slots:
            slot = model.slots[int(step[1]) % len(model.slots)]  # type: ignore[call-overload]
            model.heap.remove(slot)
            if slot.item.removed is None and not slot.item.dead:
                slot.item.removed = model.now
        elif step[0] == "advance":
            model.run_until(model.now + float(step[1]))  # type: ignore[arg-type]
    model.run_until(model.now + 31.0)
    slack = (len(model.slots) + 1) * TURN
    assert model.heap.size == sum(s.item.removed is None and not s.item.dead for s in model.slots)
    for slot in model.slots:
        conn = slot.item
        end = conn.removed if conn.removed is not None else model.now
        if conn.answers:
            assert not conn.dead
            if not conn.pings:
                assert end - conn.added <= conn.first + slack  # removed (or ended) before its first
                continue
            assert conn.pings[0] <= conn.added + conn.first + slack  # the first within the interval
            for before, after in pairwise(conn.pings):
                assert after - before <= slot.interval + slack  # never later than the turns ahead of it
            assert end - conn.pings[-1] <= slot.interval + slack
        else:
            assert len(conn.pings) <= 1  # no second ping while the first is unanswered
            if conn.dead:
                assert len(conn.dead) == 1 and len(conn.pings) == 1
                assert slot.timeout - 1e-9 <= conn.dead[0] - conn.pings[0] <= slot.timeout + slack
            elif conn.pings:
                assert end - conn.pings[0] <= slot.timeout + slack  # removed before its timeout


def test_remove_is_idempotent_and_compacts() -> None:
    heap: PingHeap[int] = PingHeap()
    slots = [heap.add(i, interval=20.0, timeout=20.0, now=0.0, first=i / 10) for i in range(100)]
    for slot in slots[:90]:
        heap.remove(slot)
        heap.remove(slot)
    assert heap.size == 10
    assert len(heap._heap) <= 2 * heap.size + 64
    assert [s.item for s, _ in heap.take(100.0)] == list(range(90, 94))  # late: four a turn


def test_between_pings_the_heap_holds_only_the_slots_themselves() -> None:
    """What lives a ping interval in the heap is the registered slot, not a fresh ``(due, order,
    slot)`` tuple per ping: such a tuple holds a slot, so CPython keeps tracking it, and at 1,000
    connections ~520 of them sat in the collector's oldest generation. Order is kept: equal
    due times go first come, first served."""
    heap: PingHeap[int] = PingHeap()
    slots = [heap.add(i, interval=20.0, timeout=20.0, now=0.0, first=1.0) for i in range(5)]
    assert [s.item for s, _ in heap.take(1.0 + BEHIND + 1)] == [0, 1, 2, 3]  # late: four a turn
    for slot in slots:
        heap.answered(slot)
    assert sorted(map(id, heap._heap)) == sorted(map(id, slots))
    assert [s.item for s, _ in heap.take(3.0 + BEHIND)] == [4]
