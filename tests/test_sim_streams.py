"""Market streams and the Risk Data Stream, read with a real ``websockets`` client."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from conftest import open_client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from monitor.sim import Simulator, parse_scenario, run_simulator


async def recv_json(ws: ClientConnection, within: float = 2.0) -> Any:
    """The next message, parsed."""
    return json.loads(await asyncio.wait_for(ws.recv(), within))


async def test_combined_stream_ticks_follow_the_scenario_path(sim: Simulator) -> None:
    """A combined stream delivers bookTicker and aggTrade for every tick of the ramp, in order."""
    url = f"{sim.stream_url}/stream?streams=btcusdt@bookTicker/btcusdt@aggTrade"
    async with connect(url) as ws:
        await sim.advance(10)
        books: list[Decimal] = []
        trades: list[Decimal] = []
        while len(trades) < 10:
            msg = await recv_json(ws)
            if msg["stream"] == "btcusdt@bookTicker":
                data = msg["data"]
                assert set(data) == {"u", "s", "b", "B", "a", "A"}
                books.append((Decimal(data["b"]) + Decimal(data["a"])) / 2)
            else:
                assert msg["stream"] == "btcusdt@aggTrade" and msg["data"]["e"] == "aggTrade"
                trades.append(Decimal(msg["data"]["p"]))
    assert trades == [Decimal(30000 - 500 * i) for i in range(1, 11)]
    assert [round(b) for b in books] == [30000 - 500 * i for i in range(1, 11)]


async def test_raw_stream_and_live_subscribe_unsubscribe_list(sim: Simulator) -> None:
    """``/ws/<stream>`` sends unwrapped payloads; SUBSCRIBE, LIST_SUBSCRIPTIONS and UNSUBSCRIBE work."""
    async with connect(f"{sim.stream_url}/ws/btcusdt@trade") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1}))
        assert await recv_json(ws) == {"result": None, "id": 1}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert await recv_json(ws) == {"result": ["btcusdt@trade", "ethusdt@trade"], "id": 2}
        await sim.set_price("ETHUSDT", "1999.5")
        trade = await recv_json(ws)
        assert (trade["e"], trade["s"], trade["p"]) == ("trade", "ETHUSDT", "1999.50000000")
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 3}))
        assert await recv_json(ws) == {"result": None, "id": 3}
        await sim.set_price("ETHUSDT", "1998")
        await sim.set_price("BTCUSDT", "29999")
        assert (await recv_json(ws))["s"] == "BTCUSDT"


async def test_bad_requests_get_binance_error_shapes(sim: Simulator) -> None:
    """Unknown streams, methods and broken JSON are answered with Binance's error objects."""
    async with connect(f"{sim.stream_url}/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 7}))
        assert (await recv_json(ws))["error"]["code"] == 2
        await ws.send(json.dumps({"method": "FOO", "id": 8}))
        assert (await recv_json(ws))["error"]["code"] == 2
        await ws.send("{not json")
        assert (await recv_json(ws))["error"]["code"] == 3
    with pytest.raises(InvalidStatus):
        async with connect(f"{sim.stream_url}/ws/dogeusdt@trade"):
            pass


async def test_mini_tickers_once_per_interval_for_changed_symbols(sim: Simulator) -> None:
    """``!miniTicker@arr@1000ms`` and ``@miniTicker`` come once per simulated second, changed symbols only."""
    url = f"{sim.stream_url}/stream?streams=!miniTicker@arr@1000ms/btcusdt@miniTicker"
    async with connect(url) as ws:
        await sim.advance(1)
        first = {(await recv_json(ws))["stream"] for _ in range(2)}
        assert first == {"!miniTicker@arr@1000ms", "btcusdt@miniTicker"}
        await sim.set_price("ETHUSDT", "2100")
        await sim.advance(0.5)
        await sim.advance(0.5)
        msgs = [await recv_json(ws) for _ in range(2)]
    arr = next(m["data"] for m in msgs if m["stream"] == "!miniTicker@arr@1000ms")
    assert {t["s"]: t["c"] for t in arr} == {"BTCUSDT": "29000.00000000", "ETHUSDT": "2100.00000000"}
    mini = next(m["data"] for m in msgs if m["stream"] == "btcusdt@miniTicker")
    assert (mini["e"], mini["o"], mini["h"], mini["l"]) == (
        "24hrMiniTicker",
        "30000.00000000",
        "30000.00000000",
        "29000.00000000",
    )


async def test_server_pings_and_closes_silent_clients(scenario_data: dict[str, Any]) -> None:
    """The server pings every ping_interval; a client answering keeps the line, a silent one is closed."""
    scenario_data["streams"] = {"ping_interval": 0.05, "pong_timeout": 0.2, "max_incoming_per_second": 100}
    async with (
        run_simulator(parse_scenario(scenario_data), realtime=False) as sim,
        connect(f"{sim.stream_url}/ws/btcusdt@trade") as answering,
    ):
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{sim.stream_url}/ws/btcusdt@trade", autoping=False) as silent,
        ):
            first = await silent.receive(timeout=2)
            assert first.type == aiohttp.WSMsgType.PING
            while (await silent.receive(timeout=2)).type == aiohttp.WSMsgType.PING:
                pass
            assert silent.closed and silent.close_code == 1008
        await sim.set_price("BTCUSDT", "29990")
        assert (await recv_json(answering))["p"] == "29990.00000000"


async def test_too_many_incoming_messages_disconnect(sim: Simulator) -> None:
    """More than 5 incoming messages in a second closes the connection, as Binance does."""
    async with connect(f"{sim.stream_url}/ws") as ws:
        for i in range(7):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        replies = 0
        with pytest.raises(ConnectionClosedError):
            async for _ in ws:
                replies += 1
        assert ws.close_code == 1008 and replies <= 5


async def test_risk_stream_delivers_liability_and_level_status(sim: Simulator, client: Any) -> None:
    """``/ws/<listenKey>`` carries USER_LIABILITY_CHANGE (borrow) and MARGIN_LEVEL_STATUS_CHANGE (drop)."""
    key = (await client._request_margin_api("post", "margin/listen-key", signed=False, data={}))["listenKey"]
    async with connect(f"{sim.risk_stream_url}/ws/{key}") as ws:
        await sim.apply_event({"type": "borrow", "account": "demo", "asset": "USDT", "amount": "1000"})
        change = await recv_json(ws)
        assert {k: change[k] for k in ("e", "a", "t", "p", "i")} == {
            "e": "USER_LIABILITY_CHANGE",
            "a": "USDT",
            "t": "BORROW",
            "p": "1000.00000000",
            "i": "0.10000000",
        }
        await sim.set_price("BTCUSDT", "24000")  # level (28800 + 1500) / 21003.2 = 1.44 < 1.5
        status = await recv_json(ws)
    assert (status["e"], status["s"]) == ("MARGIN_LEVEL_STATUS_CHANGE", "NORMAL")
    level = (Decimal("1.2") * 24000 + 1500) / Decimal("21003.2")
    assert Decimal(status["l"]) == level.quantize(Decimal("0.00000001"))


async def test_risk_listen_key_expiry_sends_listen_key_expired(scenario_data: dict[str, Any]) -> None:
    """A listen key that is not kept alive lapses: followers get listenKeyExpired."""
    scenario_data["limits"] = {"listen_key_validity": 0.3}
    async with run_simulator(parse_scenario(scenario_data), realtime=False) as sim:
        client = await open_client(sim)
        try:
            key = (await client._request_margin_api("post", "margin/listen-key", signed=False, data={}))[
                "listenKey"
            ]
            async with connect(f"{sim.stream_url}/stream?streams={key}") as ws:
                msg = await recv_json(ws, within=3)
            assert msg == {
                "stream": key,
                "data": {"e": "listenKeyExpired", "E": msg["data"]["E"], "listenKey": key},
            }
        finally:
            await client.close_connection()


async def test_long_advance_delivers_every_tick_in_order(scenario_data: dict[str, Any]) -> None:
    """A long manual advance (5,000 ticks) reaches a reading client in full and in order."""
    scenario_data["timeline"]["paths"] = [
        {"ramp": "BTCUSDT", "points": [[0, "30000"], [50, "25000"]], "every": 0.01}
    ]
    async with (
        run_simulator(parse_scenario(scenario_data), realtime=False) as sim,
        connect(f"{sim.stream_url}/ws/btcusdt@aggTrade") as ws,
    ):
        reader = asyncio.create_task(_collect(ws, 5000))
        await sim.advance(50)
        prices = await asyncio.wait_for(reader, 10)
    assert prices[0] == Decimal(29999) and prices[-1] == Decimal(25000)
    assert prices == sorted(prices, reverse=True) and len(set(prices)) == 5000


async def _collect(ws: ClientConnection, count: int) -> list[Decimal]:
    prices: list[Decimal] = []
    while len(prices) < count:
        prices.append(Decimal(json.loads(await ws.recv())["p"]))
    return prices
