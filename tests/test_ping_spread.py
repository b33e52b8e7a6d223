"""Connections opened together do not ping together (issue #12, "no event-loop stall over 5 ms"):
``probe``'s first wait is a random part of the interval, never more, then the interval. Found by
``bench/crash.py``'s late-span compositions: ~50 pings of the connections opened at start-up in
one loop turn every 20 s. Structural: the waits ``probe`` asks for, no clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from monitor.exchange.supervisor import Heartbeat
from monitor.exchange.userdata import probe


class Done(Exception):
    pass


class Ws:
    async def ping(self) -> asyncio.Future[float]:
        pong: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        pong.set_result(0.0)
        return pong


def waits(monkeypatch: pytest.MonkeyPatch, n: int) -> list[float]:
    """The first ``n`` waits of one ``probe`` (interval 20 s)."""
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        if len(asked) == n:
            raise Done

    monkeypatch.setattr(asyncio, "sleep", sleep)  # probe calls asyncio.sleep by the module
    heartbeat = Heartbeat(time.time, time.monotonic, lambda: None)
    with pytest.raises(Done):
        asyncio.run(probe(Ws(), heartbeat, 20.0))  # type: ignore[arg-type]
    monkeypatch.undo()
    return asked


def test_first_ping_is_spread_over_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    firsts = []
    for _ in range(20):
        asked = waits(monkeypatch, 3)
        assert 0.0 <= asked[0] <= 20.0  # never later than a ping every interval from the start
        assert asked[1:] == [20.0, 20.0]  # then the interval
        firsts.append(asked[0])
    assert len(set(firsts)) > 1  # connections opened together ping at different turns
