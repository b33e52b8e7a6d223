"""The shared watchdog's schedule (``monitor.exchange.silence_heap``), driven as the loop drives it:
a take at each earliest deadline. Whatever is registered, beaten, paused, resumed or removed, exactly
the heartbeats a plain model calls silent are handed out, each at its deadline ``last + silence``;
a re-check leaves nothing for the GC to track."""

from __future__ import annotations

import doctest
import gc
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import monitor.exchange.silence_heap
from monitor.exchange.silence_heap import SilenceHeap, Watch


@dataclass
class Beat:
    """A heartbeat as the watchdog reads it."""

    last: float
    paused: bool = False


@dataclass
class Ref:
    """The model's own record of one registration."""

    silence: float
    last: float
    paused: bool = False
    gone: bool = False  # removed, or found silent


add = st.tuples(st.just("add"), st.floats(0.5, 20.0))
touch = st.tuples(st.sampled_from(["beat", "pause", "resume", "remove"]), st.integers(0, 30))
advance = st.tuples(st.just("advance"), st.floats(0.0, 25.0))
ops = st.lists(st.one_of(add, touch, advance), min_size=1, max_size=80)


def test_doctests() -> None:
    """The module's example runs."""
    assert doctest.testmod(monitor.exchange.silence_heap).failed == 0


@settings(max_examples=300, deadline=None)
@given(ops)
def test_exactly_the_silent_are_handed_out_at_their_deadlines(steps: list[tuple[str, float]]) -> None:
    """Against a model that, on every advance, calls silent each live, unpaused registration whose
    ``last + silence`` has passed, at that time: the heap hands out the same ones at the same times,
    never a removed or paused one, and counts the rest as live."""
    heap: SilenceHeap[int] = SilenceHeap()
    beats: list[Beat] = []
    refs: list[Ref] = []
    watches: list[Watch[int]] = []
    now = 0.0
    found: list[tuple[int, float]] = []
    expected: list[tuple[int, float]] = []
    for op, arg in steps:
        if op == "add":
            beats.append(Beat(now))
            refs.append(Ref(arg, now))
            watches.append(heap.add(len(watches), beats[-1], silence=arg))
        elif op == "advance":
            end = now + arg
            for i, ref in enumerate(refs):
                if not ref.gone and not ref.paused and ref.last + ref.silence <= end:
                    ref.gone = True
                    expected.append((i, ref.last + ref.silence))
            while (due := heap.next_due()) is not None and due <= end:
                now = max(now, due)  # the one timer fires
                found += [(watch.item, now) for watch in heap.take(now)]
            now = end
        elif refs:
            i = int(arg) % len(refs)
            ref, beat = refs[i], beats[i]
            if op == "beat":
                beat.last = ref.last = now
            elif op == "pause":
                beat.paused = ref.paused = True
            elif op == "resume":
                beat.paused = ref.paused = False
                beat.last = ref.last = now
            else:
                heap.remove(watches[i])
                ref.gone = True
        assert heap.size == sum(not ref.gone for ref in refs)
    assert sorted(found) == sorted(expected)


def test_a_paused_heartbeat_is_rechecked_and_gets_the_whole_limit_after_resume() -> None:
    """Paused, it is looked at again each ``silence`` and never handed out; resumed, it is silent
    ``silence`` after the resume."""
    heap: SilenceHeap[str] = SilenceHeap()
    beat = Beat(0.0, paused=True)
    heap.add("a", beat, silence=10.0)
    assert heap.take(10.0) == [] and heap.next_due() == 20.0
    assert heap.take(20.0) == [] and heap.next_due() == 30.0
    beat.paused, beat.last = False, 25.0
    assert heap.take(30.0) == [] and heap.next_due() == 35.0
    assert [w.item for w in heap.take(35.0)] == ["a"]


def test_recheck_entries_are_untracked_by_a_young_collection() -> None:
    """A re-queued entry is a tuple of a float and an int: CPython stops tracking it at its first
    young collection, so the entries never reach the generation full collections walk."""
    heap: SilenceHeap[int] = SilenceHeap()
    beats = [Beat(0.0) for _ in range(100)]
    for i, beat in enumerate(beats):
        heap.add(i, beat, silence=5.0)
    for beat in beats:
        beat.last = 3.0
    assert heap.take(5.0) == [] and heap.size == 100
    gc.collect(0)
    assert not any(gc.is_tracked(entry) for entry in heap._heap)


def test_remove_is_idempotent_and_compacts() -> None:
    """A removed watch is never handed out; stale entries are dropped once they outnumber live ones."""
    heap: SilenceHeap[int] = SilenceHeap()
    watches = [heap.add(i, Beat(i / 10), silence=1.0) for i in range(100)]
    for watch in watches[:90]:
        heap.remove(watch)
        heap.remove(watch)
    assert heap.size == 10
    assert len(heap._heap) <= max(64, 2 * heap.size)
    assert [w.item for w in heap.take(100.0)] == list(range(90, 100))
    assert heap.size == 0 and heap.next_due() is None


def test_clear_hands_out_every_live_watch() -> None:
    """``clear`` (the driver's way out when it fails) returns every registered watch, removes them all."""
    heap: SilenceHeap[int] = SilenceHeap()
    watches = [heap.add(i, Beat(0.0), silence=1.0) for i in range(3)]
    heap.remove(watches[1])
    assert [w.item for w in heap.clear()] == [0, 2]
    assert heap.size == 0 and heap.next_due() is None and heap.take(10.0) == []


@pytest.mark.parametrize("silence", [0.0, -1.0, float("nan")])
def test_a_silence_limit_must_be_positive(silence: float) -> None:
    """A limit of zero (or less, or NaN) would re-check a paused heartbeat for ever in one turn."""
    with pytest.raises(ValueError, match="silence must be positive"):
        SilenceHeap[int]().add(0, Beat(0.0), silence=silence)
