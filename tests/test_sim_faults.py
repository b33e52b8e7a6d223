"""Every fault kind of the simulator, observed from a real client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from binance import BinanceSocketManager
from binance.exceptions import BinanceAPIException
from binance.ws.constants import WSListenerState
from conftest import ClientFactory, open_client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from monitor.sim import Simulator, parse_scenario, run_simulator

STREAMING = WSListenerState.STREAMING


def socket_manager(sim: Simulator, client: Any) -> Any:
    """A ``BinanceSocketManager`` whose stream URL is the simulator's."""
    attrs = {"STREAM_URL": sim.stream_url + "/"}
    return type("SimSocketManager", (BinanceSocketManager,), attrs)(client)


async def next_text(ws: ClientConnection, within: float = 2.0) -> str:
    """The next text frame."""
    data = await asyncio.wait_for(ws.recv(), within)
    assert isinstance(data, str)
    return data


async def nothing_within(ws: ClientConnection, seconds: float) -> bool:
    """True when no frame arrives within ``seconds``."""
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


async def test_drop_breaks_the_connection_without_close_frame(sim: Simulator) -> None:
    """``drop`` aborts market connections: the client sees an abnormal closure (1006)."""
    async with connect(f"{sim.stream_url}/ws/btcusdt@trade") as ws:
        await sim.inject_fault({"kind": "drop"})
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 2)
        assert ws.close_code == 1006


async def test_close_1001_ends_the_stream_normally(sim: Simulator) -> None:
    """``close_1001`` closes like Binance's 24 h disconnect: iteration just ends, code 1001."""
    async with connect(f"{sim.stream_url}/ws/btcusdt@trade") as ws:
        await sim.inject_fault({"kind": "close_1001"})
        received = [m async for m in ws]
        assert received == [] and ws.close_code == 1001


async def test_stall_silences_data_and_pongs_then_resumes(sim: Simulator) -> None:
    """``stall`` keeps the socket open but silent (no data, no pongs) for its window, then resumes."""
    async with connect(f"{sim.stream_url}/ws/btcusdt@trade", ping_interval=None) as ws:
        await sim.inject_fault({"kind": "stall", "duration": 5})
        await sim.advance(2)  # two ticks happen during the stall
        pong = asyncio.ensure_future(await ws.ping())
        assert await nothing_within(ws, 0.3)
        assert not pong.done()
        pong.cancel()
        await sim.advance(3)  # window over; the tick at t = 5 is sent
        assert json.loads(await next_text(ws))["p"] == "27500.00000000"
        await asyncio.wait_for(await ws.ping(), 2)


async def test_stall_of_one_symbol_leaves_the_others_flowing(sim: Simulator) -> None:
    """A stall with ``symbol`` silences that symbol only; the connection and other symbols go on."""
    url = f"{sim.stream_url}/stream?streams=btcusdt@trade/ethusdt@trade"
    async with connect(url) as ws:
        await sim.inject_fault({"kind": "stall", "symbol": "BTCUSDT", "duration": 60})
        await sim.set_price("BTCUSDT", "29000")
        await sim.set_price("ETHUSDT", "1900")
        assert json.loads(await next_text(ws))["stream"] == "ethusdt@trade"
        await asyncio.wait_for(await ws.ping(), 2)


async def test_malformed_frame_fails_json_parsing(sim: Simulator) -> None:
    """``malformed_frame`` sends a truncated JSON text frame."""
    async with connect(f"{sim.stream_url}/ws/btcusdt@trade") as ws:
        await sim.inject_fault({"kind": "malformed_frame"})
        with pytest.raises(json.JSONDecodeError):
            json.loads(await next_text(ws))


async def test_drop_ws_api_reaches_python_binance_and_ends_subscriptions(sim: Simulator, client: Any) -> None:
    """A dropped WebSocket API shows as an error event; python-binance reconnects without resubscribing."""
    client.ws_api._get_reconnect_wait = lambda attempts: 0  # reconnect at once instead of after 1-2 s
    async with socket_manager(sim, client).margin_socket() as stream:
        assert sim.subscriptions("demo") == 1
        await sim.inject_fault({"kind": "drop", "target": "ws_api"})
        event = await asyncio.wait_for(stream.recv(), 3)
        assert event["e"] == "error"
        await sim.wait_for(
            lambda: len(sim.engine.api.connections) == 1 and client.ws_api.ws_state == STREAMING
        )
        assert sim.subscriptions("demo") == 0  # silent from now on: the pitfall a daemon must handle
        stream._subscription_id = None  # nothing left to unsubscribe


async def test_expire_listen_token_terminates_and_invalidates(sim: Simulator, client: Any) -> None:
    """``expire_listen_token`` sends eventStreamTerminated and the old token is refused (-1209)."""
    token = (await client.margin_create_listen_token())["token"]
    async with connect(sim.ws_api_url) as ws:
        subscribe = {
            "id": 1,
            "method": "userDataStream.subscribe.listenToken",
            "params": {"listenToken": token},
        }
        await ws.send(json.dumps(subscribe))
        assert json.loads(await next_text(ws))["status"] == 200
        await sim.inject_fault({"kind": "expire_listen_token", "account": "demo"})
        terminated = json.loads(await next_text(ws))
        assert terminated["event"]["e"] == "eventStreamTerminated"
        await ws.send(json.dumps({**subscribe, "id": 2}))
        assert json.loads(await next_text(ws))["error"]["code"] == -1209


async def test_rest_5xx_for_a_window(sim: Simulator, client: Any) -> None:
    """``rest_5xx`` answers every REST call with the status for its window, then recovers."""
    await sim.inject_fault({"kind": "rest_5xx", "status": 503, "duration": 10})
    with pytest.raises(BinanceAPIException) as err:
        await client.get_margin_account()
    assert (err.value.status_code, err.value.code) == (503, -1008)
    await sim.advance(10)
    assert (await client.get_margin_account())["accountType"] == "MARGIN_1"


async def test_rest_timeout_hangs_requests(sim: Simulator, binance_client: ClientFactory) -> None:
    """``rest_timeout`` makes REST calls hang: the client's own timeout fires."""
    client = await binance_client(requests_params={"timeout": 0.2})
    await sim.inject_fault({"kind": "rest_timeout", "duration": 30})
    with pytest.raises(TimeoutError):
        await client.get_margin_account()
    await sim.clear_faults()
    assert (await client.get_margin_account())["accountType"] == "MARGIN_1"


async def test_rest_429_for_a_window(sim: Simulator, client: Any) -> None:
    """``rest_429`` answers 429 with Retry-After (the window's remaining seconds) and -1003."""
    await sim.inject_fault({"kind": "rest_429", "duration": 42})
    with pytest.raises(BinanceAPIException) as err:
        await client.get_margin_account()
    assert (err.value.status_code, err.value.code) == (429, -1003)
    assert err.value.response.headers["Retry-After"] == "42"


async def test_revoke_key_gets_2015_from_then_on(sim: Simulator, client: Any) -> None:
    """``revoke_key`` makes every keyed call of that account fail with -2015."""
    await client.get_margin_account()
    await sim.inject_fault({"kind": "revoke_key", "account": "demo"})
    for call in (client.get_margin_account, client.margin_create_listen_token):
        with pytest.raises(BinanceAPIException) as err:
            await call()
        assert err.value.code == -2015
    assert await client.ping() == {}
    sim.restore_key("demo")
    await client.get_margin_account()


async def test_timeline_faults_fire_at_their_time(scenario_data: dict[str, Any]) -> None:
    """Faults written in the scenario timeline start at ``at`` and end after ``duration``."""
    scenario_data["timeline"]["faults"] = [{"at": 2, "kind": "rest_5xx", "status": 500, "duration": 3}]
    async with run_simulator(parse_scenario(scenario_data), realtime=False) as sim:
        client = await open_client(sim)
        try:
            statuses = []
            for _ in range(6):
                try:
                    await client.get_margin_account()
                    statuses.append(200)
                except BinanceAPIException as exc:
                    statuses.append(exc.status_code)
                await sim.advance(1)
            assert statuses == [200, 200, 500, 500, 500, 200]
        finally:
            await client.close_connection()
