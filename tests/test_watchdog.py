"""The loop's shared silence watchdog (``monitor/exchange/watchdog.py``) under real supervisors on a
real loop: every session is watched from one timer (no per-stream handle); a silent session among
beating ones is still cut and reconnected with its reason; a failing watchdog ends every session
and logs once. No timed assertions: waits are on events and states."""

from __future__ import annotations

import asyncio

from exchange_fakes import until
from structlog.testing import capture_logs

from monitor.exchange import watchdog as watchdog_module
from monitor.exchange.supervisor import Heartbeat, Session, Supervisor
from monitor.exchange.watchdog import SharedWatchdog, shared_watchdog


async def no_wait(seconds: float) -> None:
    """The supervisors' backoff sleep: one loop turn."""
    await asyncio.sleep(0)


def timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    """The loop's scheduled timers that are not cancelled."""
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [handle for handle in scheduled if not handle.cancelled()]


def is_wake(handle: asyncio.TimerHandle) -> bool:
    return getattr(handle._callback, "__func__", None) is SharedWatchdog._wake  # type: ignore[attr-defined]


class Streams:
    """``n`` supervised sessions that connect, then wait open; with ``beat``, all but the first beat
    every ``beat`` seconds meanwhile (the first is silent)."""

    def __init__(self, n: int, silence: float, beat: float | None = None) -> None:
        self.calls = [0] * n
        self.supervisors = [
            Supervisor(f"s{i}", self._session(i, beat), silence=silence, sleep=no_wait) for i in range(n)
        ]
        self.tasks: list[asyncio.Task[None]] = []

    def _session(self, i: int, beat: float | None) -> Session:
        async def session(heartbeat: Heartbeat) -> str | None:
            self.calls[i] += 1
            heartbeat.connected()
            while beat is not None and i > 0:
                await asyncio.sleep(beat)
                heartbeat.beat()
            await asyncio.Event().wait()
            return None

        return session

    def start(self) -> None:
        self.tasks = [asyncio.create_task(s.run()) for s in self.supervisors]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_sessions_share_one_watchdog_timer() -> None:
    """50 watched sessions leave exactly one live timer of the watchdog in the loop's heap, and none
    of the supervisor's own; when the last goes, the timer and the watchdog go with it."""
    loop = asyncio.get_running_loop()
    streams = Streams(50, silence=60.0)
    streams.start()
    await until(lambda: all(s.up for s in streams.supervisors))
    live = timers(loop)
    assert len([h for h in live if is_wake(h)]) == 1
    assert not [h for h in live if "Supervisor" in getattr(h._callback, "__qualname__", "")]  # type: ignore[attr-defined]
    watchdog = shared_watchdog()
    assert watchdog.schedule.size == 50
    await streams.stop()
    assert watchdog.schedule.size == 0 and not watchdog.wake.pending
    assert loop not in watchdog_module._watchdogs
    assert not [h for h in timers(loop) if is_wake(h)]


async def test_a_silent_stream_among_beating_ones_is_reconnected() -> None:
    """The one session that stops beating is cut after the limit and retried with the same reason as
    ever; the sessions that beat share the watchdog and are left alone."""
    streams = Streams(3, silence=0.5, beat=0.01)
    with capture_logs() as logs:
        streams.start()
        await until(lambda: streams.calls[0] >= 2)
    retries = [e for e in logs if e["event"] == "stream_retry"]
    assert [(e["stream"], e["reason"]) for e in retries] == [("s0", "silent for 0.5 s")]
    assert [s.retries for s in streams.supervisors] == [1, 0, 0]
    await streams.stop()


class Broken:
    """A registration whose heartbeat cannot be read once due: the watchdog's callback raises."""

    def __init__(self, last: float) -> None:
        self.last = last
        self.ended: list[Exception | None] = []

    @property
    def paused(self) -> bool:
        raise RuntimeError("heartbeat unreadable")


async def test_a_failing_watchdog_ends_every_session_and_logs_once() -> None:
    """An error in the watchdog's callback ends every registered session (none goes on unwatched),
    each with the failure as its reason, and is logged once; the sessions register again and are
    watched from one timer again."""
    loop = asyncio.get_running_loop()
    streams = Streams(3, silence=60.0)
    streams.start()
    await until(lambda: all(s.up for s in streams.supervisors))
    broken = Broken(loop.time())
    with capture_logs() as logs:
        shared_watchdog().watch(broken, 0.01, broken.ended.append)
        await until(lambda: all(calls >= 2 for calls in streams.calls))
    assert [s.last_reason for s in streams.supervisors] == [
        "silence watchdog failed: RuntimeError: heartbeat unreadable"
    ] * 3
    assert len(broken.ended) == 1 and isinstance(broken.ended[0], RuntimeError)
    failed = [e for e in logs if e["event"] == "watchdog_failed"]
    assert [(e["sessions"], e["unended"]) for e in failed] == [(4, 0)]
    await until(lambda: all(s.up for s in streams.supervisors))
    assert shared_watchdog().schedule.size == 3
    assert len([h for h in timers(loop) if is_wake(h)]) == 1
    await streams.stop()
    assert loop not in watchdog_module._watchdogs
