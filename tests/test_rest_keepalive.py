"""The shared REST connection pool keeps idle connections for ``REST_KEEPALIVE``: spread-out calls
(the key checks) reuse the connections start-up opened instead of opening new ones.

Connections are counted by a TCP relay on 127.0.0.1 in front of the simulator (each accepted
connection is one the client opened), through the real python-binance client and aiohttp. Nothing
is timed: the waits are far from the keep-alive on either side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from conftest import DEMO_KEY, DEMO_SECRET

import monitor.exchange.rest as rest
from monitor.app.components import KEY_CHECKS_PER_SECOND
from monitor.exchange.rest import REST_CONNECTIONS, REST_KEEPALIVE, BinanceRest
from monitor.sim import Simulator


class Relay:
    """Forwards every connection to ``target`` (host, port); counts those accepted."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.accepted = 0
        self._pipes: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for pipe in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.close()
            for task in list(self._pipes):
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)
            await server.wait_closed()


@pytest.fixture
async def relay(sim: Simulator) -> AsyncIterator[tuple[Relay, str]]:
    host, port = sim.base_url.removeprefix("http://").split(":")
    relay = Relay((host, int(port)))
    async with relay.running() as url:
        yield relay, url


async def burst_then_idle(url: str, idle: float) -> BinanceRest:
    """A client whose four concurrent key checks opened a pool of connections, idle ``idle`` s."""
    client = await BinanceRest.connect("demo", DEMO_KEY, DEMO_SECRET, url)
    await asyncio.gather(*(client.key_permissions() for _ in range(4)))
    await asyncio.sleep(idle)
    return client


def test_keepalive_outlasts_a_round_of_key_checks_over_a_full_pool() -> None:
    """aiohttp reuses the longest-idle connection first: at the key checks' full rate, one round
    over a pool of ``REST_CONNECTIONS`` takes 25 s, and no pooled connection expires within it."""
    assert REST_CONNECTIONS / KEY_CHECKS_PER_SECOND < REST_KEEPALIVE


async def test_spread_calls_reuse_the_pool_start_up_opened(relay: tuple[Relay, str]) -> None:
    """Calls one at a time, after an idle second, go over the connections a burst opened: none new."""
    counter, url = relay
    client = await burst_then_idle(url, 1.0)
    try:
        opened = counter.accepted
        assert opened >= 2  # the burst needed more than one connection
        for _ in range(3 * opened):
            await client.key_permissions()
            await asyncio.sleep(0.05)
        assert counter.accepted == opened
    finally:
        await client.close()


async def test_idle_connections_expire_after_rest_keepalive(
    relay: tuple[Relay, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's keep-alive is ``REST_KEEPALIVE``: shrunk to 0.1 s, a call after an idle second
    finds every pooled connection expired and opens one."""
    monkeypatch.setattr(rest, "REST_KEEPALIVE", 0.1)
    counter, url = relay
    client = await burst_then_idle(url, 1.0)
    try:
        opened = counter.accepted
        await client.key_permissions()
        assert counter.accepted == opened + 1
    finally:
        await client.close()
