"""User data over the WebSocket API: python-binance's own margin sockets and a raw websockets client."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from binance import BinanceSocketManager
from binance.exceptions import BinanceAPIException
from conftest import open_client
from websockets.asyncio.client import ClientConnection, connect

from monitor.sim import Simulator, parse_scenario, run_simulator


def socket_manager(sim: Simulator, client: Any) -> Any:
    """A ``BinanceSocketManager`` whose stream URL is the simulator's."""
    manager_class: Any = type(
        "SimSocketManager", (BinanceSocketManager,), {"STREAM_URL": sim.stream_url + "/"}
    )
    return manager_class(client)


async def recv_json(ws: ClientConnection, within: float = 2.0) -> Any:
    """The next message, parsed."""
    return json.loads(await asyncio.wait_for(ws.recv(), within))


async def test_margin_socket_receives_events_of_a_scenario_borrow(scenario_data: dict[str, Any]) -> None:
    """python-binance's margin_socket() gets outboundAccountPosition for a borrow on the timeline."""
    scenario_data["timeline"]["events"] = [
        {"at": 5, "type": "borrow", "account": "demo", "asset": "USDT", "amount": "2500"}
    ]
    async with run_simulator(parse_scenario(scenario_data), realtime=False) as sim:
        client = await open_client(sim)
        try:
            async with socket_manager(sim, client).margin_socket() as stream:
                await sim.advance(5)
                event = await asyncio.wait_for(stream.recv(), 3)
                assert event["e"] == "outboundAccountPosition"
                assert event["B"] == [{"a": "USDT", "f": "3000.00000000", "l": "0.00000000"}]
                account = await client.get_margin_account()
                usdt = next(a for a in account["userAssets"] if a["asset"] == "USDT")
                assert (usdt["free"], usdt["borrowed"]) == ("3000.00000000", "22500.00000000")
        finally:
            await client.close_connection()


async def test_isolated_margin_socket_gets_only_its_pair(sim: Simulator, client: Any) -> None:
    """isolated_margin_socket(symbol) receives its pair's events and not the cross account's."""
    async with socket_manager(sim, client).isolated_margin_socket("BTCUSDT") as stream:
        await sim.apply_event({"type": "deposit", "account": "demo", "asset": "USDT", "amount": "1"})
        await sim.apply_event(
            {"type": "transfer_in", "account": "demo", "asset": "BTC", "amount": "0.1", "symbol": "BTCUSDT"}
        )
        update = await asyncio.wait_for(stream.recv(), 3)
        position = await asyncio.wait_for(stream.recv(), 3)
    assert update == {"e": "balanceUpdate", "E": update["E"], "a": "BTC", "d": "0.10000000", "T": update["T"]}
    assert position["B"] == [{"a": "BTC", "f": "0.60000000", "l": "0.00000000"}]


async def test_token_expiry_terminates_the_subscription(scenario_data: dict[str, Any]) -> None:
    """When the listenToken expires the socket receives eventStreamTerminated and events stop."""
    scenario_data["limits"] = {"listen_token_validity": 0.3}
    async with run_simulator(parse_scenario(scenario_data), realtime=False) as sim:
        client = await open_client(sim)
        try:
            with pytest.raises(BinanceAPIException) as on_exit:
                async with socket_manager(sim, client).margin_socket() as stream:
                    assert sim.subscriptions("demo") == 1
                    event = await asyncio.wait_for(stream.recv(), 3)
                    assert event["e"] == "eventStreamTerminated"
                    assert sim.subscriptions("demo") == 0
            assert on_exit.value.code == -1130  # unsubscribing a terminated subscription is an error
        finally:
            await client.close_connection()


async def test_ws_api_subscribe_resubscribe_unsubscribe_and_bad_token(sim: Simulator, client: Any) -> None:
    """Raw WS-API flow: -1209 for a bad token, same id on renewal, eventStreamTerminated on unsubscribe."""
    token = (await client.margin_create_listen_token())["token"]
    renewed = await client.margin_create_listen_token()
    async with connect(sim.ws_api_url) as ws:
        await ws.send(
            json.dumps(
                {
                    "id": "a",
                    "method": "userDataStream.subscribe.listenToken",
                    "params": {"listenToken": "nope"},
                }
            )
        )
        bad = await recv_json(ws)
        assert (bad["id"], bad["status"], bad["error"]["code"]) == ("a", 400, -1209)
        await ws.send(
            json.dumps(
                {
                    "id": "b",
                    "method": "userDataStream.subscribe.listenToken",
                    "params": {"listenToken": token},
                }
            )
        )
        ok = await recv_json(ws)
        assert ok["status"] == 200 and ok["result"]["subscriptionId"] == 0
        assert (
            ok["result"]["expirationTime"] > time.time() * 1_000_000
        )  # microseconds, as in Binance's example
        assert ok["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
        await ws.send(
            json.dumps(
                {
                    "id": "c",
                    "method": "userDataStream.subscribe.listenToken",
                    "params": {"listenToken": renewed["token"]},
                }
            )
        )
        assert (await recv_json(ws))["result"]["subscriptionId"] == 0
        await sim.apply_event({"type": "withdraw", "account": "demo", "asset": "USDT", "amount": "10"})
        balance = await recv_json(ws)
        assert balance["subscriptionId"] == 0 and balance["event"]["d"] == "-10.00000000"
        await recv_json(ws)  # outboundAccountPosition
        await ws.send(
            json.dumps({"id": "d", "method": "userDataStream.unsubscribe", "params": {"subscriptionId": 0}})
        )
        assert (await recv_json(ws))["result"] == {}
        terminated = await recv_json(ws)
        assert terminated["event"]["e"] == "eventStreamTerminated"
        assert sim.subscriptions() == 0


async def test_risk_events_on_ws_api_when_enabled(scenario_data: dict[str, Any]) -> None:
    """With streams.risk_events_on_ws_api the cross subscription also carries USER_LIABILITY_CHANGE."""
    scenario_data["streams"] = {"risk_events_on_ws_api": True}
    async with run_simulator(parse_scenario(scenario_data), realtime=False) as sim:
        client = await open_client(sim)
        try:
            async with socket_manager(sim, client).margin_socket() as stream:
                await sim.apply_event({"type": "repay", "account": "demo", "asset": "USDT", "amount": "100"})
                kinds = {(await asyncio.wait_for(stream.recv(), 3))["e"] for _ in range(2)}
            assert kinds == {"outboundAccountPosition", "USER_LIABILITY_CHANGE"}
        finally:
            await client.close_connection()


async def test_liquidation_event_clears_debt_consistently(sim: Simulator, client: Any) -> None:
    """A liquidation by the exchange sells everything to repay all debt; REST and events agree."""
    async with socket_manager(sim, client).margin_socket() as stream:
        await sim.apply_event({"type": "liquidation", "account": "demo"})
        event = await asyncio.wait_for(stream.recv(), 3)
    account = await client.get_margin_account()
    rest = {a["asset"]: (a["free"], a["locked"]) for a in account["userAssets"]}
    assert {b["a"]: (b["f"], b["l"]) for b in event["B"]} == rest
    assert rest["USDT"] == ("16496.90000000", "0.00000000")  # 36000 + 500 - 20003.1
    assert account["marginLevel"] == "999.00000000"
    assert all(a["borrowed"] == a["interest"] == "0.00000000" for a in account["userAssets"])
