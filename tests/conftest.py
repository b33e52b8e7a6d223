"""Shared fixtures: the Binance simulator on 127.0.0.1 (manual time) and real python-binance clients.

- ``scenario_data``: the plain scenario (override this fixture in a test module to change it);
- ``scenario``: it, validated;
- ``sim``: a running :class:`~monitor.sim.Simulator` in manual mode (time moves only by
  ``await sim.advance(seconds)``), with ``sim.base_url``, ``sim.stream_url``, ``sim.ws_api_url``;
- ``binance_client``: ``await binance_client(key, secret)`` gives a real ``AsyncClient`` pointed at
  the simulator (closed at teardown); ``client`` is one for the demo account;
- ``refused_port``: a loopback port that refuses connections for the whole test;
  ``refused_socket``: its socket, for a server to listen on later (``run_simulator(sock=...)``).
"""

from __future__ import annotations

import asyncio
import copy
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from binance import AsyncClient
from daemon_harness import Receiver
from hypothesis import settings
from ops_harness import refused_port as held_refused_port
from ops_harness import refused_socket as held_refused_socket

import monitor.service
from monitor.sim import Scenario, Simulator, parse_scenario, run_simulator

# CI (.ci/run sets HYPOTHESIS_PROFILE=ci) replays the same examples on every run, so a landing never
# hangs on a never-seen example; a developer's run explores new ones (and keeps failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` first (stable order otherwise): under ``pytest -n`` (pytest-xdist) the
    longest tests start at once on their own workers while the others share the rest, instead of one
    starting last and setting the suite's wall time alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


DEMO_KEY = "demo-key"
DEMO_SECRET = "demo-secret"
DEMO_SCENARIO: dict[str, Any] = {
    "quote": "USDT",
    "prices": {"BTCUSDT": "30000", "ETHUSDT": "2000"},
    "interest_rates": {"USDT": "0.0001"},
    "accounts": [
        {
            "name": "demo",
            "api_key": DEMO_KEY,
            "api_secret": DEMO_SECRET,
            "account_type": "MARGIN_1",
            "cross": [
                {"asset": "BTC", "free": "1.2", "locked": "0", "borrowed": "0", "interest": "0"},
                {"asset": "USDT", "free": "500", "locked": "0", "borrowed": "20000", "interest": "3.1"},
            ],
            "isolated": [
                {
                    "symbol": "BTCUSDT",
                    "base": {"asset": "BTC", "free": "0.5", "locked": "0", "borrowed": "0", "interest": "0"},
                    "quote": {
                        "asset": "USDT",
                        "free": "100",
                        "locked": "0",
                        "borrowed": "9000",
                        "interest": "0.4",
                    },
                }
            ],
        },
        {
            "name": "other",
            "api_key": "other-key",
            "api_secret": "other-secret",
            "cross": [{"asset": "ETH", "free": "3"}],
        },
    ],
    "timeline": {
        "paths": [{"ramp": "BTCUSDT", "points": [[0, "30000"], [10, "25000"]], "every": 1}],
    },
}

ClientFactory = Callable[..., Awaitable[Any]]


def client_class(sim: Simulator) -> Any:
    """An ``AsyncClient`` subclass whose URLs are the simulator's (literal URLs survive ``format``)."""
    attrs = {
        "API_URL": sim.base_url + "/api",
        "MARGIN_API_URL": sim.base_url + "/sapi",
        "WS_API_URL": sim.ws_api_url,
    }
    return type("SimAsyncClient", (AsyncClient,), attrs)


async def open_client(
    sim: Simulator, api_key: str = DEMO_KEY, api_secret: str = DEMO_SECRET, **kwargs: Any
) -> Any:
    """A real ``AsyncClient`` on ``sim`` (``create()``: ping + time); close it with ``close_connection()``.

    Its WebSocket API read loop polls every 0.25 s instead of 10 s, so closing it is quick
    (python-binance only notices a close request between two reads).
    """
    client = await client_class(sim).create(api_key, api_secret, **kwargs)
    client.ws_api.TIMEOUT = 0.25
    return client


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound for the whole test but never listening: connections to it are refused,
    and no other test or xdist worker can take it meanwhile (as one could a port freed at once)."""
    with held_refused_port() as port:
        yield port


@pytest.fixture
def refused_socket() -> Iterator[socket.socket]:
    """A loopback socket bound for the whole test but not listening until a server takes it
    (``run_simulator(sock=...)``): the exchange "down, then up" on one port no one else can take."""
    with held_refused_socket() as sock:
        yield sock


@pytest.fixture
def short_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shutdown waits at most 0.5 s for a dead receiver (10 s in production)."""
    monkeypatch.setattr(monitor.service, "DRAIN_SECONDS", 0.5)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on 127.0.0.1 for Apprise's json:// posts."""
    rx = Receiver()
    await rx.start()
    yield rx
    await rx.stop()


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """The test scenario as plain data (a deep copy: tests may change it)."""
    return copy.deepcopy(DEMO_SCENARIO)


@pytest.fixture
def scenario(scenario_data: dict[str, Any]) -> Scenario:
    """The test scenario, validated."""
    return parse_scenario(scenario_data, source="<test>")


@pytest.fixture
async def sim(scenario: Scenario) -> AsyncIterator[Simulator]:
    """A simulator on 127.0.0.1:0 in manual mode: time moves only by ``await sim.advance(s)``."""
    async with run_simulator(scenario, realtime=False) as running:
        yield running


@pytest.fixture
async def binance_client(sim: Simulator) -> AsyncIterator[ClientFactory]:
    """A factory of real ``AsyncClient``s on ``sim`` (``create()``: ping + time), closed at teardown."""
    made: list[Any] = []

    async def make(api_key: str = DEMO_KEY, api_secret: str = DEMO_SECRET, **kwargs: Any) -> Any:
        client = await open_client(sim, api_key, api_secret, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close_connection()


@pytest.fixture
async def client(binance_client: ClientFactory) -> Any:
    """A real ``AsyncClient`` for the demo account."""
    return await binance_client()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port on 127.0.0.1 that accepts a connection and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()
