"""One pinger per probed connection (issue #12): risk and user-data streams are opened without
websockets' keepalive, and ``probe`` alone pings them: a peer that stops answering pings is
replaced with the reason "no pong", a healthy quiet stream is not. Real simulator on 127.0.0.1;
no timed assertions (waits are on events: reconnects, pongs counted)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from exchange_fakes import until
from structlog.testing import capture_logs
from test_userdata import deposit, risk_stream, user_stream
from websockets.asyncio.client import ClientConnection

from monitor.exchange.events import BalanceUpdate
from monitor.exchange.risk_stream import RiskStream
from monitor.exchange.streams import MarketStream, default_connect, probed_connect
from monitor.exchange.userdata import UserDataStream
from monitor.sim import Simulator


@pytest.fixture
def scenario_data(scenario_data: dict[str, Any]) -> dict[str, Any]:
    """The demo scenario, allowing the fast probes here (Binance allows 5 messages/s, pings
    included: the simulator closes a faster client)."""
    scenario_data.setdefault("streams", {})["max_incoming_per_second"] = 1000
    return scenario_data


class Opened:
    """A connect factory around ``probed_connect`` that keeps every connection and counts pongs."""

    def __init__(self) -> None:
        self.connections: list[ClientConnection] = []
        self.pongs = 0

    @asynccontextmanager
    async def __call__(self, url: str) -> AsyncIterator[ClientConnection]:
        async with probed_connect(url) as ws:
            acknowledge = ws.acknowledge_pings

            def counted(data: bytes) -> None:
                self.pongs += 1
                acknowledge(data)

            ws.acknowledge_pings = counted  # type: ignore[method-assign]
            self.connections.append(ws)
            yield ws


def test_probed_streams_default_to_probed_connect() -> None:
    """Risk and user-data streams open their connections with ``probed_connect``; market streams
    (no probe) keep websockets' keepalive."""
    assert inspect.signature(RiskStream).parameters["connect"].default is probed_connect
    assert inspect.signature(UserDataStream).parameters["connect"].default is probed_connect
    assert inspect.signature(MarketStream).parameters["connect"].default is default_connect


async def test_user_data_connection_has_no_keepalive(sim: Simulator) -> None:
    """The user-data stream's own connection runs no websockets keepalive task."""
    async with user_stream(sim, [("demo", None)]) as (stream, _):
        assert stream._ws is not None and stream._ws.keepalive_task is None
    async with default_connect(sim.ws_api_url) as ws:  # the contrast: what the check would see
        assert ws.keepalive_task is not None


async def test_risk_connection_has_no_keepalive_and_is_pinged_by_probe(sim: Simulator) -> None:
    """A healthy quiet risk stream: no keepalive task, the probe's pings are answered, no reconnect
    (over more than three `silence` periods, counted in pongs)."""
    opened = Opened()
    async with risk_stream(sim, silence=0.5, probe_interval=0.05, pong_timeout=0.25, connect=opened) as (
        stream,
        rec,
        _,
    ):
        await until(lambda: opened.pongs >= 40, within=60.0)
        assert stream.supervisor.retries == 0
    assert [ws.keepalive_task for ws in opened.connections] == [None]
    assert rec.reconciled == [("demo", None)]


async def test_risk_stream_without_pongs_reconnects(sim: Simulator) -> None:
    """A risk connection whose peer stops answering pings is replaced for "no pong", long before
    the silence watchdog would, and works again once the peer answers."""
    opened = Opened()
    with capture_logs() as logs:
        async with risk_stream(sim, silence=60, probe_interval=0.02, pong_timeout=0.1, connect=opened) as (
            stream,
            rec,
            _,
        ):
            await sim.inject_fault({"kind": "stall", "target": "streams", "duration": 1000})
            await until(lambda: stream.supervisor.retries >= 1)
            await sim.clear_faults()
            await until(lambda: len(rec.reconciled) >= 2 and stream.supervisor.up)
    retries = [e for e in logs if e["event"] == "stream_retry"]
    assert retries[0]["reason"] == "Reconnect: no pong within 0.1 s"
    assert all(ws.keepalive_task is None for ws in opened.connections)


async def test_user_data_stream_without_pongs_reconnects(sim: Simulator) -> None:
    """The same on a WebSocket API connection: "no pong", then resubscribed and delivering."""
    with capture_logs() as logs:
        async with user_stream(sim, [("demo", None)], silence=60, probe_interval=0.02, pong_timeout=0.1) as (
            stream,
            rec,
        ):
            await sim.inject_fault({"kind": "stall", "target": "ws_api", "duration": 1000})
            await until(lambda: stream.supervisor.retries >= 1)
            await sim.clear_faults()
            await until(lambda: rec.reconciled.count(("demo", None)) >= 2 and stream.subscriptions[0].up)
            await deposit(sim, "7")
            await until(lambda: bool(rec.of(BalanceUpdate)))
    retries = [e for e in logs if e["event"] == "stream_retry"]
    assert retries[0]["reason"] == "Reconnect: no pong within 0.1 s"
