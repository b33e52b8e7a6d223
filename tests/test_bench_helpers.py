"""The benches' pure helpers (issue 12: the benches say the truth): the exact tick ↔ alert matcher
of ``bench/latency_workload.py`` and the callback names of ``bench/loop_names.py``. No timing."""

from __future__ import annotations

import asyncio
import functools
import math
import sys
import weakref
from pathlib import Path as FsPath
from typing import Any

import numpy as np

sys.path.insert(0, str(FsPath(__file__).resolve().parent.parent / "bench"))

from latency_workload import (
    LOAN,
    Evaluation,
    Expected,
    Path,
    Replay,
    Workload,
    match_evaluations,
    match_latencies,
    pairs_differ,
    title_level,
)
from loop_names import (
    Ring,
    compose,
    composition_kind,
    describe,
    is_harness,
    key_name,
    key_of,
    lag_cause,
    snapshot,
    top_callback,
)

H = 0.005
HERE = str(FsPath(__file__).resolve().parent)


def one_account() -> Workload:
    """One account holding 150 units of X at 100 (level 1.5 at price 100), and Y it does not hold."""
    return Workload(["XUSDT", "YUSDT"], np.array([101.0, 50.0]), ["a0001"], [[(0, 150.0)]])


def path_of(prices: list[tuple[int, float]]) -> Path:
    sym = np.array([s for s, _ in prices], dtype=np.int64)
    mid = np.array([p for _, p in prices])
    return Path(sym, mid, mid)


def title(level: float, kind: str = "firing") -> str:
    if kind == "resolved":
        return f"[resolved 1.5] a0001 (cross): margin level {level:.3f} > 1.5"
    return f"[1.5] a0001 (cross): margin level {level:.3f} ≤ 1.5"


def test_title_level_is_the_printed_level_and_its_rounding() -> None:
    assert title_level(title(1.4987)) == (1.499, 0.0005)
    assert title_level("[resolved margin call] a0001 (cross): margin level 1,234 > 1.5") == (1234.0, 0.5)
    assert title_level("Daemon started") is None


def test_the_exact_matcher_skips_an_excursion_the_daemon_read_with_its_undoing() -> None:
    """Tick 1 takes the level to 1.497 (≤ 1.5) and tick 2, read in the same batch, back to 1.503:
    the daemon never fires there. Ticks 3–5 take it down for good from tick 4 (tick 5 is Y); the
    daemon fires on the batch ending at tick 5. The old matcher pairs the alert with the latest
    expected firing sent before it (tick 4 here too, by luck of the replay), and with tick 1 when the
    replay's event list says so; the exact one pairs it with tick 4 from the daemon's record."""
    work = one_account()
    path = path_of([(0, 101.0), (0, 99.8), (0, 100.2), (0, 100.5), (0, 99.9), (1, 51.0)])
    sent = np.array([0.0, 1.0, 1.001, 2.0, 3.0, 3.001])
    replay = Replay(work, path)
    assert math.isclose(replay.level("a0001", 1), 99.8 * 150 / LOAN)
    evaluations = [
        Evaluation(1.01, {"XUSDT": 100.2}, []),  # ticks 1–2 together: no event
        Evaluation(3.01, {"XUSDT": 99.9, "YUSDT": 51.0}, [("a0001", 1.5, "firing", 99.9 * 150 / LOAN)]),
    ]
    calls = [(3.02, title(99.9 * 150 / LOAN))]
    exact = match_evaluations(calls, evaluations, replay, sent, H)
    assert exact.ticks == [4]
    assert exact.unmatched == exact.level_disagree == exact.replay_disagree == 0
    assert math.isclose(exact.latency[0], 3.02 - 3.0)
    assert exact.batch_ticks == [2, 5]  # the newest tick each batch held
    # the old matcher given a replay that lists the excursion as the newest firing before the call
    old = match_latencies(calls, Expected({("a0001", 1.5, "firing"): [1]}), sent)
    assert old.ticks == [1]
    assert math.isclose(old.latency[0], 3.02 - 1.0)
    assert pairs_differ(exact, old) == 1


def test_the_exact_matcher_pairs_by_the_printed_level_and_says_what_it_cannot_pair() -> None:
    work = one_account()
    path = path_of([(0, 99.0), (0, 101.0), (0, 99.5)])
    sent = np.array([0.0, 1.0, 2.0])
    replay = Replay(work, path)
    lv0, lv1, lv2 = (p * 150 / LOAN for p in (99.0, 101.0, 99.5))
    evaluations = [
        Evaluation(0.01, {"XUSDT": 99.0}, [("a0001", 1.5, "firing", lv0)]),
        Evaluation(1.01, {"XUSDT": 101.0}, [("a0001", 1.5, "resolved", lv1)]),
        Evaluation(2.01, {"XUSDT": 99.5}, [("a0001", 1.5, "firing", lv2)]),
    ]
    # the second firing's call comes first in the list, and the first firing's call is late
    calls = [(2.5, title(lv2)), (2.6, title(lv0)), (1.5, title(lv1, "resolved")), (0.5, "Daemon started")]
    exact = match_evaluations(calls, evaluations, replay, sent, H)
    assert sorted(exact.ticks) == [0, 1, 2]
    assert exact.unmatched == 1 and exact.samples == ["Daemon started"]
    assert exact.level_disagree == 0
    by_tick = dict(zip(exact.ticks, exact.latency, strict=True))
    assert math.isclose(by_tick[0], 2.6) and math.isclose(by_tick[2], 0.5)


def test_the_replay_says_when_it_disagrees_with_the_daemon() -> None:
    work = one_account()
    path = path_of([(0, 101.0)])
    evaluations = [Evaluation(0.01, {"XUSDT": 101.0}, [("a0001", 1.5, "firing", 1.49)])]
    exact = match_evaluations([(0.5, title(1.49))], evaluations, Replay(work, path), np.array([0.0]), H)
    assert exact.replay_disagree == 1 and exact.unmatched == 1 and exact.latency == []


async def test_callbacks_are_named_by_owner_and_function_never_a_question_mark() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    run = asyncio.events.Handle._run

    def timed(handle: Any) -> None:
        snap = snapshot(handle._callback, handle._args)
        run(handle)
        seen.append(describe(snap))

    class Wakeup:
        def wakeup(self) -> None:
            pass

    async def stepper() -> None:
        await asyncio.sleep(0)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
    try:
        loop.call_soon(functools.partial(Wakeup().wakeup))
        future = loop.create_future()
        future.add_done_callback(functools.partial(print, end=""))
        future.set_result(None)
        await asyncio.create_task(stepper())
        await loop.run_in_executor(None, sum, [1, 2])
        await asyncio.sleep(0)
    finally:
        asyncio.events.Handle._run = run  # type: ignore[method-assign]
    assert "?" not in seen
    assert any(s.startswith("partial(") and s.endswith("<locals>.Wakeup.wakeup)") for s in seen)
    assert "partial(print) ← done of Future" in seen
    assert any(".<locals>.stepper:" in s for s in seen)  # a task step: its coroutine and line
    chained = [s for s in seen if "_chain_future" in s]
    assert chained and "call_soon_threadsafe from an executor thread" in chained[0]
    assert "→ wakes task_wakeup of task test_callbacks" in chained[0]


async def test_the_bench_s_own_tasks_are_the_harness() -> None:
    async def mine() -> None:
        await asyncio.sleep(0)

    task = asyncio.create_task(mine())
    here = HERE
    snap = snapshot(getattr(task, "_Task__step", None) or task.cancel, ())
    snap.task = task
    assert is_harness(snap, here)
    assert not is_harness(snap, "/elsewhere")
    assert is_harness(
        snapshot(functools.partial(test_title_level_is_the_printed_level_and_its_rounding), ()), here
    )
    await task


def test_a_late_sample_is_put_down_to_what_overlapped_it() -> None:
    late = (1.0, 1.008)
    assert lag_cause(late, 0.0, [(1.004, 1.006)], [(0.99, 1.01, "X.y")], []) == "gc"
    assert lag_cause(late, 0.0, [], [(0.99, 1.01, "X.y"), (1.0, 1.002, "X.y")], []) == "callback X.y"
    assert lag_cause(late, 0.006, [], [], [(0.9, 1.1)]).startswith("loop busy")
    assert lag_cause(late, 0.001, [], [], [(0.9, 1.1)]).startswith("send in flight")
    assert lag_cause(late, 0.001, [], [], []).startswith("waiting")


def test_a_busy_sample_names_the_callback_with_the_most_cpu_in_it() -> None:
    busy = [(1.0, 1.002, "A.a", 2.0, 0.0), (1.002, 1.004, "B.b", 1.5, 0.0), (1.004, 1.006, "B.b", 1.5, 0.0)]
    assert top_callback(busy, 1.0, 1.01) == "B.b"
    assert top_callback(busy, 1.0, 1.0015) == "A.a"
    assert top_callback(busy, 2.0, 2.01) == "none over 1 ms"


def test_aiohttp_s_weakref_timer_is_named_by_the_method_it_calls() -> None:
    from aiohttp.helpers import _weakref_handle

    class Connector:
        def _cleanup(self) -> None:
            pass

    held = Connector()
    name = describe(snapshot(_weakref_handle, ((weakref.ref(held), "_cleanup"),)))
    assert name.startswith("aiohttp.helpers._weakref_handle → ")
    assert name.endswith("<locals>.Connector._cleanup")


def test_the_evaluation_hook_sees_a_batch_evaluated_in_slices_once(monkeypatch: Any) -> None:
    """The market feed applies a batch and evaluates its units a slice per loop turn
    (``Engine.evaluate_due``): every alert is recorded once, with the batch that caused it; an
    ``on_prices`` call (both at once) is not recorded twice."""
    from decimal import Decimal as D

    from latency import record_evaluations

    from monitor.alerts.policy import AlertPolicy, LevelRule, PolicyConfig
    from monitor.risk.book import AccountBook
    from monitor.risk.margin import Bars, Position
    from monitor.watch.engine import Engine

    for name in ("on_prices", "apply_prices", "evaluate_due"):
        monkeypatch.setattr(Engine, name, getattr(Engine, name))  # restored after the test
    records = record_evaluations()
    assert records is not None
    book = AccountBook()
    book.set_catalog({"XUSDT": ("X", "USDT")})
    for i in range(10):
        held = {"X": Position(D(1), D(0), D(0), D(0)), "USDT": Position(D(0), D(0), D(40000), D(0))}
        book.upsert_cross(f"a{i:04d}", held, Bars.classic())
    ladder = (LevelRule("normal", 1.5, ("hook",)), LevelRule("liquidation", 1.1, ("hook",)))
    engine = Engine(book, AlertPolicy(PolicyConfig(levels=ladder), {}))
    engine.apply_prices({"XUSDT": 50000.0})  # 1.25: each account fires "normal"
    while engine.evaluate_due():
        pass
    assert sum(len(r.events) for r in records) == 10 and len(records) > 1
    assert all(r.prices == {"XUSDT": 50000.0} for r in records)
    records.clear()
    engine.on_prices({"XUSDT": 80000.0})  # 2.0: each resolves
    assert sum(len(r.events) for r in records) == 10


def test_a_late_span_is_composed_of_the_callbacks_in_it_and_the_gap() -> None:
    """The ring keeps the last callbacks; a late span [1.0, 1.010] takes those that ended inside it,
    each clipped (CPU in proportion), by name; the wall no callback covered is the gap."""

    def tick() -> None:
        pass

    def other() -> None:
        pass

    ring = Ring(size=4)
    ring.add((0.90, 0.95, 0.05, key_of(snapshot(other, ()))))  # before the span: not taken
    ring.add((0.998, 1.002, 0.004, key_of(snapshot(tick, ()))))  # half inside
    ring.add((1.003, 1.004, 0.001, key_of(snapshot(tick, ()))))
    ring.add((1.005, 1.006, 0.0005, key_of(snapshot(other, ()))))
    ran = ring.since(1.0)
    assert [r[0] for r in ran] == [0.998, 1.003, 1.005]
    c = compose(1.0, 1.010, ran)
    assert c.callbacks == 3 and c.span_ms == 10.0
    assert c.callbacks_ms == 4.0 and c.gap_ms == 6.0
    name = key_name(key_of(snapshot(tick, ())))
    assert name.endswith("tick")
    assert c.by_name[name] == (2, 3.0)  # 2 ms of the first (half its 4 ms) + 1 ms
    assert composition_kind(c) == "gap (no callback running: selector/GIL/OS)"
    ring.add((1.006, 1.010, 0.004, key_of(snapshot(tick, ()))))  # overwrites the oldest
    assert len(ring.since(0.0)) == 4
    assert composition_kind(compose(1.0, 1.010, ring.since(1.0))).startswith("mostly ")
