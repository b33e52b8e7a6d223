"""An account's re-reads: one timer while a re-read is pending, one short-lived task while reading,
nothing at all while idle (monitor/watch/rereads.py, issue #12).

The schedule is driven on virtual time (:class:`VirtualTime` as ``call_later``; the re-read tasks
stepped by :class:`Runner`) and checked against a model of the ``refresh_loop`` it replaced: same
reads at the same times. Then on a real loop: an idle watcher leaves no task or timer handle of its
own, a failing re-read is logged as ``task_failed`` and a daemon's accounts are idle between reads.
Nothing here waits for a time to assert on it.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from enum import Enum
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from daemon_harness import Receiver, daemon_config, running_daemon, wait_until
from hypothesis import given
from structlog.testing import capture_logs
from test_watcher import FakeReads, watcher
from virtual_time import VirtualTime

from monitor.app.loading import Tasks
from monitor.service import Service
from monitor.sim import Simulator
from monitor.watch.rereads import AGAIN, DEBOUNCE, REREAD_BACKOFF, Rereads

T0 = 1000.0


class Pause:
    """What a fake re-read awaits: :class:`Runner` resumes it ``seconds`` later."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __await__(self) -> Generator[Pause, None, None]:
        yield self


class Runner:
    """``spawn`` on virtual time: a task's first step is the next thing due now, as with
    ``create_task``; it is resumed when the :class:`Pause` it awaits has passed."""

    def __init__(self, time: VirtualTime) -> None:
        self.time = time
        self.running = 0
        self.started: list[str] = []
        self.failed: list[BaseException] = []

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        assert self.running == 0, "two re-read tasks at once"
        self.running += 1
        self.started.append(name)
        self.time.call_later(0.0, lambda: self._step(coro))

    def _step(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            pause = coro.send(None)
        except StopIteration:
            self.running -= 1
            return
        except Exception as exc:  # what Tasks would log as task_failed
            self.running -= 1
            self.failed.append(exc)
            return
        self.time.call_later(pause.seconds, lambda: self._step(coro))


class Outcome(Enum):
    AGREED = "agreed"
    DISAGREED = "disagreed"
    FAILED = "failed"


Read = tuple[float, Outcome]  # how long a read takes, and what it says
OK: Read = (0.05, Outcome.AGREED)  # once the drawn reads are used up


class Account:
    """A :class:`Rereads` running on virtual time whose reads take the times and answers given."""

    def __init__(self, reads: list[Read] | None = None, seed: int = 0) -> None:
        self.time = VirtualTime(T0)
        self.runner = Runner(self.time)
        self.reads = reads or []
        self.starts: list[float] = []
        self.broken = False  # the next read raises (a bug)
        self.rereads = Rereads(
            self.time.clock, random.Random(seed).random, read=self.read, name="reread-a",
            call_later=self.time.call_later,
        )  # fmt: skip
        self.rereads.run(self.runner.spawn)

    async def read(self) -> None:
        if self.broken:
            self.broken = False
            raise RuntimeError("bug")
        k = len(self.starts)
        self.starts.append(self.time.now)
        seconds, outcome = self.reads[k] if k < len(self.reads) else OK
        await Pause(seconds)
        if outcome is Outcome.FAILED:
            self.rereads.failed()
        else:
            self.rereads.answered(disagreed=outcome is Outcome.DISAGREED)

    def idle(self) -> bool:
        """Nothing pending, nothing armed, nothing running."""
        r = self.rereads
        return r.at is None and r.timer_at is None and not r.reading and self.runner.running == 0


def refresh_loop_model(requests: list[tuple[float, float]], reads: list[Read], seed: int) -> list[float]:
    """When the per-account ``refresh_loop`` this replaced read (its semantics on exact time): it
    waited until the time asked (an earlier request woke it earlier, a later one changed nothing),
    read, applied the answer (a disagreement asks again, a failure retries with backoff), and read
    again at once if one was due by then. What is asked at an instant comes before what is due at it."""
    rand = random.Random(seed).random
    pending = deque(requests)
    at: float | None = None
    failures = 0
    busy_until: float | None = None
    starts: list[float] = []

    def request(now: float, delay: float) -> None:
        nonlocal at
        if at is None or now + delay < at:
            at = now + delay

    while True:
        due = busy_until if busy_until is not None else at
        if pending and (due is None or pending[0][0] <= due):
            request(*pending.popleft())
            continue
        if due is None:
            return starts
        if busy_until is not None:  # the read under way ends
            now, busy_until = busy_until, None
            _, outcome = reads[len(starts) - 1] if len(starts) <= len(reads) else OK
            if outcome is Outcome.FAILED:
                retry = REREAD_BACKOFF.delay(failures, rand)
                failures += 1
                request(now, retry)
            else:
                failures = 0
                if outcome is Outcome.DISAGREED:
                    request(now, AGAIN * (0.8 + 0.4 * rand()))
            if at is None or at > now:
                continue
        else:
            now = due
        at = None
        starts.append(now)
        busy_until = now + (reads[len(starts) - 1] if len(starts) <= len(reads) else OK)[0]


# -- the schedule on virtual time -----------------------------------------------------------------


def test_a_pending_reread_arms_one_timer_moved_earlier_never_later() -> None:
    """An earlier request moves the one timer earlier; a later one leaves it; a burst is one read."""
    a = Account()
    a.rereads.request(1.0)
    assert a.rereads.timer_at == T0 + 1.0 and a.time.pending() == 1
    a.rereads.request()  # sooner: DEBOUNCE
    a.rereads.request(5.0)  # later: left
    assert a.rereads.timer_at == T0 + DEBOUNCE and a.time.pending() == 1
    a.time.run_all()
    assert a.starts == [T0 + DEBOUNCE] and a.runner.started == ["reread-a"] and a.idle()


def test_without_run_nothing_is_armed_and_due_reads_are_taken_by_hand() -> None:
    """Not running (a watcher on manual time): a request only notes the time; ``take_due`` takes it."""
    time = VirtualTime(T0)
    rereads = Rereads(time.clock, lambda: 0.5, call_later=time.call_later)
    rereads.request()
    assert rereads.timer_at is None and time.pending() == 0 and not rereads.take_due()
    time.now += DEBOUNCE
    assert rereads.take_due() and rereads.at is None


def test_a_request_during_a_read_is_taken_by_that_task_or_armed_when_it_ends() -> None:
    """While a read runs no timer is armed: one due by its end is read by the same task at once; one
    due later arms the timer as the task ends (a second task then)."""
    a = Account(reads=[(1.0, Outcome.AGREED), (1.0, Outcome.AGREED), (1.0, Outcome.AGREED)])
    a.rereads.request(0.0)
    a.time.run_until(T0 + 0.5)  # the first read under way
    a.rereads.request(0.2)  # due before it ends
    assert a.rereads.reading and a.rereads.timer_at is None
    a.time.run_until(T0 + 1.5)  # the second read, by the same task, under way
    assert a.starts == [T0, T0 + 1.0] and len(a.runner.started) == 1
    a.rereads.request(3.0)  # due after it ends
    a.time.run_until(T0 + 2.5)
    assert a.starts == [T0, T0 + 1.0] and a.runner.running == 0 and a.rereads.timer_at == T0 + 4.5
    a.time.run_all()
    assert a.starts == [T0, T0 + 1.0, T0 + 4.5] and len(a.runner.started) == 2 and a.idle()


def test_a_disagreement_reads_again_and_a_failure_retries_with_backoff() -> None:
    """AGAIN after a disagreeing answer, jittered backoff after failures, then idle once agreed."""
    a = Account(reads=[(0.0, Outcome.DISAGREED), (0.0, Outcome.FAILED), (0.0, Outcome.FAILED)])
    a.rereads.rand = lambda: 0.5
    a.rereads.request(0.0)
    a.time.run_all()
    again = AGAIN * (0.8 + 0.4 * 0.5)
    first, second = REREAD_BACKOFF.delay(0, lambda: 0.5), REREAD_BACKOFF.delay(1, lambda: 0.5)
    assert a.starts == pytest.approx([T0, T0 + again, T0 + again + first, T0 + again + first + second])
    assert a.rereads.failures == 0 and a.idle()


def test_a_timer_early_by_the_accounts_clock_arms_again_instead_of_starting_an_empty_task() -> None:
    """The loop's clock is not the account's: a timer that fires before ``at`` by the account's clock
    arms the rest of the wait, and one task reads once due."""
    a = Account()
    skew = [0.0]
    a.rereads.clock = lambda: a.time.now - skew[0]
    a.rereads.request(1.0)
    skew[0] = 0.25  # the account's clock fell behind the loop's
    a.time.run_until(T0 + 1.1)
    assert a.runner.started == [] and a.rereads.timer_at == T0 + 1.0
    a.time.run_all()
    assert a.starts == [T0 + 1.25] and a.runner.started == ["reread-a"] and a.idle()


def test_stop_cancels_the_timer_and_a_running_task_arms_none() -> None:
    """After ``stop`` (shutdown) no timer is left and nothing more is started."""
    a = Account(reads=[(1.0, Outcome.DISAGREED)])
    a.rereads.request(5.0)
    a.rereads.stop()
    assert a.rereads.timer_at is None and a.time.pending() == 0
    a.rereads.run(a.runner.spawn)  # armed again
    a.rereads.request(0.0)
    a.time.run_until(T0 + 0.5)  # reading; its disagreement will ask again
    a.rereads.stop()
    a.time.run_all()
    assert a.starts == [T0] and a.rereads.at is not None and a.rereads.timer_at is None
    assert a.runner.running == 0 and a.time.pending() == 0 and a.runner.started == ["reread-a"]


def test_a_read_that_raises_ends_its_task_and_the_next_request_is_read() -> None:
    """A bug in a read fails its task (logged by ``Tasks`` as task_failed); re-reads go on."""
    a = Account()
    a.broken = True
    a.rereads.request(0.0)
    a.time.run_all()
    assert [str(e) for e in a.runner.failed] == ["bug"] and a.starts == [] and a.idle()
    a.rereads.request()
    a.time.run_all()
    assert a.starts == [T0 + DEBOUNCE] and a.idle()


times = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)
requests_st = st.lists(
    st.tuples(times, st.one_of(st.sampled_from([0.0, DEBOUNCE, AGAIN]), times)), max_size=20
)  # (seconds after the previous request, delay asked)
reads_st = st.lists(st.tuples(st.floats(0.0, 1.0), st.sampled_from(Outcome)), max_size=20)


@given(requests=requests_st, reads=reads_st, seed=st.integers(0, 2**32))
def test_reads_happen_when_and_as_often_as_the_refresh_loop_read(
    requests: list[tuple[float, float]], reads: list[Read], seed: int
) -> None:
    """Random requests, answers, disagreements and failures in time order: the timer and the
    short-lived tasks read at the very times the per-account loop did; never two tasks at once
    (:class:`Runner` asserts it); idle at the end, with nothing armed."""
    timed, now = [], T0
    for gap, delay in requests:
        now += gap
        timed.append((now, delay))
    a = Account(reads, seed)
    for at, delay in timed:
        a.time.run_until(at)
        a.rereads.request(delay)
    a.time.run_all()
    assert a.starts == refresh_loop_model(timed, reads, seed)
    assert a.idle() and a.time.pending() == 0 and a.runner.failed == []


# -- on a real loop -------------------------------------------------------------------------------


def live_handles() -> int:
    """Timer handles not cancelled on the running loop."""
    scheduled: list[asyncio.TimerHandle] = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
    return sum(not h.cancelled() for h in scheduled)


async def turns_until(done: Callable[[], bool], most: int = 200) -> None:
    """Give the loop turns (not time) until ``done``."""
    for _ in range(most):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not done after {most} loop turns")


async def test_an_idle_watcher_holds_no_task_and_no_timer_of_its_own() -> None:
    """A requested re-read arms one handle, runs in one task and reads REST; afterwards the loop
    holds as many tasks and timer handles as before the watcher ran."""
    rest = FakeReads()
    w, _, _ = watcher(rest)
    await w.refresh()
    tasks = Tasks()
    tasks_before, handles_before = asyncio.all_tasks(), live_handles()
    w.run_rereads(tasks.spawn)
    assert asyncio.all_tasks() == tasks_before and live_handles() == handles_before
    reads = rest.calls.count("cross_account")
    w.request_refresh(0)
    assert live_handles() == handles_before + 1 and not tasks.running
    await turns_until(lambda: rest.calls.count("cross_account") == reads + 1 and not tasks.running)
    assert [t.get_name() for t in tasks.running] == [] and not w.rereads.reading
    assert asyncio.all_tasks() == tasks_before and live_handles() == handles_before
    w.request_refresh(5.0)  # pending at shutdown: stopping cancels its timer
    w.stop_rereads()
    await tasks.cancel_all()
    assert live_handles() == handles_before and asyncio.all_tasks() == tasks_before


async def test_a_reread_running_at_shutdown_is_cancelled_and_arms_nothing() -> None:
    """Stopped, then cancelled as the service does: the task ends, no handle is left behind."""
    hold = asyncio.Event()

    async def read() -> None:
        await hold.wait()

    rereads = Rereads(lambda: T0, lambda: 0.5, read=read)
    tasks = Tasks()
    handles_before = live_handles()
    rereads.run(tasks.spawn)
    rereads.request(0.0)
    await turns_until(lambda: bool(tasks.running) and rereads.at is None)
    rereads.request(0.0)  # asked while reading: the task would take it
    rereads.stop()
    await tasks.cancel_all()
    assert not tasks.running and not rereads.reading and rereads.timer_at is None
    assert live_handles() == handles_before


async def test_a_failing_reread_is_logged_as_task_failed() -> None:
    """A re-read that raises is the task's failure: ``Tasks`` logs it by the task's name."""

    async def read() -> None:
        raise RuntimeError("bug in a re-read")

    rereads = Rereads(lambda: T0, lambda: 0.5, read=read, name="reread-alice")
    tasks = Tasks()
    rereads.run(tasks.spawn)
    with capture_logs() as logs:
        rereads.request(0.0)
        await turns_until(lambda: any(e["event"] == "task_failed" for e in logs))
    (failed,) = [e for e in logs if e["event"] == "task_failed"]
    assert failed["task"] == "reread-alice" and "bug in a re-read" in failed["error"]
    assert not rereads.reading and rereads.timer_at is None
    rereads.stop()


def idle(daemon: Service) -> bool:
    """No re-read pending, armed or running for any account."""
    running = [t.get_name() for t in daemon.tasks.running]
    return not any(n.startswith("reread-") for n in running) and all(
        w.rereads.at is None and w.rereads.timer_at is None for w in daemon.watchers
    )


async def test_a_daemons_accounts_are_idle_between_rereads(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Once start-up's re-reads are done no account holds a re-read task or timer; one requested is
    still read (a task named for the account) and the account is idle again after it."""
    async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        await wait_until(lambda: idle(daemon), what="every account idle")
        assert not any(t.get_name().startswith("refresh-") for t in daemon.tasks.running)
        w = daemon.watchers[0]
        before = w.last_snapshot
        w.request_refresh()
        assert w.rereads.timer_at is not None
        await wait_until(lambda: w.last_snapshot > before, what="the requested re-read")
        await wait_until(lambda: idle(daemon), what="idle again")
        watchers = daemon.watchers
    assert all(w.rereads.timer_at is None and not w.rereads.reading for w in watchers)
