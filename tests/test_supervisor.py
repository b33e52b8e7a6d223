"""The one reconnect shape: retry sorting, backoff with reset, watchdog, state hooks."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from monitor.exchange.errors import KeyRejected
from monitor.exchange.events import StreamState
from monitor.exchange.supervisor import Backoff, Heartbeat, Supervisor, watchdog_paused


class Sleeps:
    """A sleep that records the requested delay and only yields to the loop."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@given(attempt=st.integers(min_value=0, max_value=10_000), r=st.floats(min_value=0, max_value=1))
def test_backoff_delay_is_bounded_and_jittered(attempt: int, r: float) -> None:
    """Every delay lies in [base * (1 - jitter), base] with base = min(max, initial * 2**attempt)."""
    backoff = Backoff(initial=0.25, maximum=30.0, jitter=0.5)
    base = min(30.0, 0.25 * 2.0 ** min(attempt, 64))
    assert base * 0.5 <= backoff.delay(attempt, lambda: r) <= base


def test_backoff_grows_then_caps() -> None:
    """Without jitter the schedule doubles from the initial delay up to the cap."""
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.0)
    assert [backoff.delay(i) for i in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


async def test_retries_errors_and_normal_closes_forever() -> None:
    """Errors and normal returns are both retried, each reason logged once, with growing delays."""
    outcomes: list[BaseException | str | None] = [OSError("refused"), "closed (1001)", None] * 7
    calls = 0
    done = asyncio.Event()

    async def session(heartbeat: Heartbeat) -> str | None:
        nonlocal calls
        calls += 1
        if calls > len(outcomes):
            done.set()
            await asyncio.Event().wait()
        outcome = outcomes[calls - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    sleeps = Sleeps()
    supervisor = Supervisor("t", session, backoff=Backoff(initial=1, maximum=16, jitter=0), sleep=sleeps)
    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.run())
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    retries = [e for e in logs if e["event"] == "stream_retry"]
    assert len(retries) == 21 == supervisor.retries
    assert [e["reason"] for e in retries[:3]] == ["OSError: refused", "closed (1001)", "connection closed"]
    assert sleeps.waits[:6] == [1, 2, 4, 8, 16, 16]


async def test_backoff_resets_after_a_healthy_period() -> None:
    """A connection that stayed up past reset_after starts the schedule again from the first delay."""
    clock = Clock()
    calls = 0
    done = asyncio.Event()

    async def session(heartbeat: Heartbeat) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 4:
            heartbeat.connected()
            clock.now += 60.0  # healthy for a minute, then dropped
        if calls == 6:
            done.set()
            await asyncio.Event().wait()
        raise ConnectionResetError("reset")

    sleeps = Sleeps()
    backoff = Backoff(initial=1, maximum=30, jitter=0, reset_after=30)
    supervisor = Supervisor("t", session, backoff=backoff, sleep=sleeps, clock=clock)
    task = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sleeps.waits == [1, 2, 4, 1, 2]


async def test_fatal_error_stops_and_reports() -> None:
    """A fatal error (revoked key) is not retried: run() raises it and on_state hears fatal=True."""
    states: list[StreamState] = []

    async def session(heartbeat: Heartbeat) -> str | None:
        heartbeat.connected()
        raise KeyRejected("main", -2015, "Invalid API-key")

    supervisor = Supervisor("user:main", session, sleep=Sleeps(), on_state=states.append)
    with pytest.raises(KeyRejected):
        await supervisor.run()
    assert [(s.up, s.fatal) for s in states] == [(True, False), (False, True)]
    assert "-2015" in states[-1].reason


async def test_silence_ends_the_session_and_reconnects() -> None:
    """A connection that goes quiet is cut after `silence` seconds and retried, with that reason."""
    calls = 0
    second = asyncio.Event()

    async def session(heartbeat: Heartbeat) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            second.set()
        heartbeat.connected()
        for _ in range(5):  # alive for a while: beats keep the watchdog quiet
            await asyncio.sleep(0.03)
            heartbeat.beat()
        await asyncio.Event().wait()  # open but silent
        return None

    supervisor = Supervisor("t", session, silence=0.1, sleep=Sleeps())
    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.run())
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(second.wait(), 5)
        elapsed = asyncio.get_running_loop().time() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    retry = next(e for e in logs if e["event"] == "stream_retry")
    assert retry["reason"] == "silent for 0.1 s"
    assert 0.2 < elapsed < 1.0  # 5 × 30 ms of beats, then 0.1 s of silence


async def test_paused_heartbeat_is_not_silence() -> None:
    """A session waiting for work on purpose (paused) is not cut by the watchdog."""
    calls = 0

    async def session(heartbeat: Heartbeat) -> str | None:
        nonlocal calls
        calls += 1
        heartbeat.pause()
        await asyncio.sleep(0.3)
        return "done waiting"

    supervisor = Supervisor("t", session, silence=0.05, sleep=Sleeps())
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert calls == 1


async def test_watchdog_paused_deep_in_a_session_then_rearmed() -> None:
    """Code the session calls (a connection attempt queued in the budget) pauses the session's
    watchdog without holding its heartbeat: 0.3 s queued under a 0.05 s silence limit ends nothing;
    the watchdog is re-armed at the block's end, so the silence that follows still ends the
    session. Outside any session, and inside an already paused one, it changes nothing."""
    seen: list[tuple[bool, bool]] = []

    async def queued() -> None:
        with watchdog_paused():
            await asyncio.sleep(0.3)

    async def session(heartbeat: Heartbeat) -> str | None:
        await queued()
        seen.append((heartbeat.paused, True))
        heartbeat.pause()
        with watchdog_paused():
            pass
        seen.append((heartbeat.paused, False))  # the session's own pause is left alone
        heartbeat.resume()
        await asyncio.sleep(10)
        return None

    with watchdog_paused():  # no session here: nothing to pause, no error
        pass
    ended = asyncio.Event()

    def on_state(state: StreamState) -> None:
        if not state.up:
            ended.set()

    supervisor = Supervisor("t", session, silence=0.05, sleep=Sleeps(), on_state=on_state)
    task = asyncio.create_task(supervisor.run())
    with capture_logs() as logs:
        await asyncio.wait_for(ended.wait(), 30)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen[:2] == [(False, True), (True, False)]
    assert next(e for e in logs if e["event"] == "stream_retry")["reason"] == "silent for 0.05 s"


async def test_state_hook_hears_each_transition_once() -> None:
    """on_state hears up once per connection and down once per drop, not once per failed attempt."""
    states: list[StreamState] = []
    calls = 0
    done = asyncio.Event()

    async def session(heartbeat: Heartbeat) -> str | None:
        nonlocal calls
        calls += 1
        if calls in (1, 4):
            heartbeat.connected()
        if calls == 5:
            done.set()
            await asyncio.Event().wait()
        raise OSError(f"fail {calls}")

    supervisor = Supervisor("feed", session, sleep=Sleeps(), on_state=states.append)
    task = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [(s.up, s.reason) for s in states] == [
        (True, "connected"),
        (False, "OSError: fail 1"),
        (True, "connected"),
        (False, "OSError: fail 4"),
    ]


async def test_cancellation_propagates_and_marks_down() -> None:
    """Cancelling run() cancels the session and leaves the supervisor down."""
    started = asyncio.Event()

    async def session(heartbeat: Heartbeat) -> str | None:
        heartbeat.connected()
        started.set()
        await asyncio.Event().wait()
        return None

    supervisor = Supervisor("t", session, silence=10)
    task = asyncio.create_task(supervisor.run())
    await started.wait()
    assert supervisor.up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not supervisor.up and supervisor.last_reason == "stopped"


async def test_cancel_reported_as_an_error_still_stops() -> None:
    """A cancel that surfaces as an ordinary error (as a TaskGroup may report it) still stops the loop."""
    started = asyncio.Event()

    async def session(heartbeat: Heartbeat) -> str | None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise OSError("connection closed while cancelling") from None
        return None

    task = asyncio.create_task(Supervisor("t", session, sleep=Sleeps()).run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
