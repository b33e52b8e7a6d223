"""A snapshot round's re-reads, paced (monitor/app/periodic.py ``Snapshots``, ``Pace``): on a fake
clock, structural: starts spaced by the round's spacing (the first at once), none skipped, each
account once; a round already behind its pace (slow REST) waits for nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from monitor.app.periodic import SNAPSHOT_CONCURRENCY, SNAPSHOT_RATE, SNAPSHOT_SPREAD, Pace, Snapshots


class FakeTime:
    """A clock that only moves when someone sleeps on it (or when a re-read takes time)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Wake ``seconds`` after the call, as the loop would (the clock never goes back)."""
        self.sleeps.append(seconds)
        wake = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, wake)


class Watcher:
    def __init__(self, name: str, t: FakeTime, takes: float = 0.0) -> None:
        self.name, self.t, self.takes = name, t, takes
        self.started: list[float] = []

    async def refresh(self) -> None:
        self.started.append(self.t.now)
        self.t.now += self.takes  # REST's round trip and the parse, as the clock sees them
        await asyncio.sleep(0)


def round_of(n: int, period: float, takes: float = 0.0) -> tuple[list[Watcher], FakeTime]:
    t = FakeTime()
    watchers = [Watcher(f"a{i}", t, takes) for i in range(n)]
    job = Snapshots(watchers, period, clock=t.clock, sleep=t.sleep)  # type: ignore[arg-type]
    asyncio.run(job.run())
    return watchers, t


def starts(watchers: list[Watcher]) -> list[float]:
    return sorted(s for w in watchers for s in w.started)


def paced(at: list[float], spacing: float) -> bool:
    """The k-th start is no earlier than the first + k spacings (each waits for a slot of its own)."""
    return all(s >= at[0] + k * spacing - 1e-9 for k, s in enumerate(at))


def test_a_round_of_1000_accounts_starts_one_reread_every_20_ms() -> None:
    watchers, _ = round_of(1000, 60.0)
    assert all(len(w.started) == 1 for w in watchers)
    at = starts(watchers)
    assert paced(at, 1 / SNAPSHOT_RATE)
    assert at[0] == 1_000.0  # the first at once
    assert at[-1] - at[0] < 60.0 * SNAPSHOT_SPREAD  # 20 s of the 60 s period


def test_many_accounts_are_spaced_closer_to_fit_the_period() -> None:
    watchers, _ = round_of(6000, 60.0)
    at = starts(watchers)
    assert at[-1] - at[0] <= 60.0 * SNAPSHOT_SPREAD
    assert paced(at, 60.0 * SNAPSHOT_SPREAD / 6000)


def test_a_round_behind_its_pace_does_not_wait() -> None:
    """REST answering in 100 ms, four at a time: 40 re-reads a second, below the pace of 50: the
    workers never sleep on the pace, and every account is still read once."""
    watchers, t = round_of(40, 60.0, takes=0.1)
    assert all(len(w.started) == 1 for w in watchers)
    assert t.sleeps == [] or max(t.sleeps) <= 1 / SNAPSHOT_RATE


def test_one_account_is_read_at_once() -> None:
    watchers, t = round_of(1, 60.0)
    assert watchers[0].started == [1_000.0] and t.sleeps == []


def test_pace_hands_out_spaced_starts_to_concurrent_workers() -> None:
    t = FakeTime()
    pace = Pace(0.5, t.clock, t.sleep)
    got: list[float] = []

    async def worker() -> None:
        for _ in range(3):
            await pace.turn()
            got.append(t.now)

    async def main() -> Any:
        return await asyncio.gather(*(worker() for _ in range(SNAPSHOT_CONCURRENCY)))

    asyncio.run(main())
    assert len(got) == 3 * SNAPSHOT_CONCURRENCY
    assert got[0] == 1_000.0
    assert paced(sorted(got), 0.5)
