"""The loop's shared pinger (``monitor/exchange/pinger.py``) through ``probe``, on real websockets
connections to a server on 127.0.0.1: pongs beat the heartbeat; a peer that stops answering ends
the session with ``Reconnect``; a cancelled session is unregistered; a failing pinger fails every
session. No timed assertions: waits are on events (beats counted, sessions ended)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from exchange_fakes import until
from structlog.testing import capture_logs
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from monitor.exchange import pinger as pinger_module
from monitor.exchange.errors import Reconnect
from monitor.exchange.pinger import shared_pinger
from monitor.exchange.supervisor import Heartbeat
from monitor.exchange.userdata import probe


class Clock:
    """A heartbeat's clock that counts the beats, and can break."""

    def __init__(self) -> None:
        self.beats = -1  # (Heartbeat reads it once when made)
        self.broken = False

    def __call__(self) -> float:
        if self.broken:
            raise RuntimeError("clock broken")
        self.beats += 1
        return time.monotonic()


async def answering(ws: ServerConnection) -> None:
    await ws.wait_closed()  # websockets answers every ping itself


async def deaf(ws: ServerConnection) -> None:
    ws.transport.pause_reading()  # never reads the pings: no pong ever comes
    await ws.wait_closed()


@asynccontextmanager
async def clients(handler: object, n: int = 1) -> AsyncIterator[list[ClientConnection]]:
    async with serve(handler, "127.0.0.1", 0, ping_interval=None, close_timeout=0.1) as server:  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        opened = [
            await connect(f"ws://127.0.0.1:{port}", ping_interval=None, close_timeout=0.1) for _ in range(n)
        ]
        try:
            yield opened
        finally:
            for ws in opened:
                await ws.close()


def probed(ws: ClientConnection, clock: Clock, interval: float, pong_timeout: float) -> asyncio.Task[None]:
    """A session's probe of ``ws``, its heartbeat on ``clock``."""
    heartbeat = Heartbeat(clock, time.monotonic, lambda: None)
    return asyncio.create_task(probe(ws, heartbeat, interval, pong_timeout))


async def test_pongs_beat_the_heartbeat() -> None:
    """Each connection's pongs are its heartbeat's beats; cancelling the sessions unregisters them
    and drops the pinger with its timer."""
    clocks = [Clock() for _ in range(3)]
    async with clients(answering, 3) as opened:
        sessions = [probed(ws, clock, 0.01, 1.0) for ws, clock in zip(opened, clocks, strict=True)]
        await until(lambda: all(clock.beats >= 5 for clock in clocks))
        pinger = shared_pinger()
        assert pinger.schedule.size == 3
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        assert pinger.schedule.size == 0 and not pinger.wake.pending
        assert asyncio.get_running_loop() not in pinger_module._pingers
        assert not any(task.done() and not task.cancelled() for task in sessions)


async def test_a_peer_that_stops_answering_ends_the_session() -> None:
    """No pong within the pong timeout: ``Reconnect("no pong within …")``; the answering connection
    sharing the pinger goes on being pinged."""
    clock = Clock()
    async with clients(deaf) as (silent,), clients(answering) as (alive,):
        healthy = probed(alive, clock, 0.01, 0.2)
        with pytest.raises(Reconnect, match=r"^no pong within 0.05 s$"):
            async with asyncio.timeout(10):
                await probe(silent, Heartbeat(time.monotonic, time.monotonic, lambda: None), 0.01, 0.05)
        beats = clock.beats
        await until(lambda: clock.beats > beats + 3)
        assert not healthy.done() and shared_pinger().schedule.size == 1
        healthy.cancel()
        await asyncio.gather(healthy, return_exceptions=True)


async def test_a_failing_pinger_fails_every_session_and_logs_once() -> None:
    """An unexpected error in the pinger's callbacks (here a heartbeat whose clock breaks) ends every
    registered session with ``Reconnect`` and is logged once; sessions registered after it are pinged
    again."""
    clocks = [Clock() for _ in range(3)]
    async with clients(answering, 3) as opened:
        sessions = [probed(ws, clock, 0.01, 1.0) for ws, clock in zip(opened, clocks, strict=True)]
        await until(lambda: all(clock.beats >= 1 for clock in clocks))
        with capture_logs() as logs:
            clocks[0].broken = True
            async with asyncio.timeout(10):  # (a bound on the wait, not a timing)
                results = await asyncio.gather(*sessions, return_exceptions=True)
        assert [str(r) for r in results] == ["pinger failed: RuntimeError: clock broken"] * 3
        assert all(isinstance(r, Reconnect) for r in results)
        assert [e["event"] for e in logs if e["event"] == "pinger_failed"] == ["pinger_failed"]
        again = probed(opened[1], clocks[1], 0.01, 1.0)
        beats = clocks[1].beats
        await until(lambda: clocks[1].beats > beats + 2)
        again.cancel()
        await asyncio.gather(again, return_exceptions=True)


async def test_a_closed_connection_ends_its_session_with_the_close() -> None:
    """A ping on a connection closed meanwhile: the session ends with that error, as it did when
    the probe pinged itself."""
    async with clients(answering) as (ws,):
        await ws.close()
        with pytest.raises(Exception, match="sent 1000"):
            async with asyncio.timeout(10):
                await probe(ws, Heartbeat(time.monotonic, time.monotonic, lambda: None), 0.01, 1.0)
        assert asyncio.get_running_loop() not in pinger_module._pingers
