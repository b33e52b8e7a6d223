"""The simulator delivers the three views of a change late, as a scenario or a test says: checked with
python-binance's margin socket and REST client and a raw websockets client on the Risk Data Stream.

The demo account (conftest): USDT free 500, borrowed 20,000. A borrow of 2,500 makes free 3,000 and
borrowed 22,500.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import open_client
from test_sim_userdata import socket_manager
from websockets.asyncio.client import ClientConnection, connect

from monitor.sim import ScenarioError, Simulator, parse_scenario, run_simulator

BORROW = {"type": "borrow", "account": "demo", "asset": "USDT", "amount": "2500"}


async def usdt(client: Any) -> tuple[str, str]:
    """USDT (free, borrowed) as REST reports them now."""
    account = await client.get_margin_account()
    row = next(a for a in account["userAssets"] if a["asset"] == "USDT")
    return row["free"], row["borrowed"]


async def pending(ws: ClientConnection) -> list[Any]:
    """Whatever the risk stream has sent so far (a short read: nothing due means nothing comes)."""
    out = []
    while True:
        try:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 0.2)))
        except TimeoutError:
            return out


async def test_liability_late_and_rest_lagging_as_the_event_says(sim: Simulator, client: Any) -> None:
    """``delivery: {user_data: 0, risk: 1.5, rest_lag: 0.8}``: the balance at once, REST from 0.8 s, the
    liability change at 1.5 s (simulated)."""
    key = (await client._request_margin_api("post", "margin/listen-key", signed=False, data={}))["listenKey"]
    async with (
        connect(f"{sim.risk_stream_url}/ws/{key}") as risk,
        socket_manager(sim, client).margin_socket() as user,
    ):
        await sim.apply_event({**BORROW, "delivery": {"user_data": 0, "risk": 1.5, "rest_lag": 0.8}})
        position = await asyncio.wait_for(user.recv(), 3)
        assert position["B"] == [{"a": "USDT", "f": "3000.00000000", "l": "0.00000000"}]
        assert await usdt(client) == ("500.00000000", "20000.00000000")  # REST still before the borrow
        assert await pending(risk) == []
        await sim.advance(0.8)
        assert await usdt(client) == ("3000.00000000", "22500.00000000")
        assert await pending(risk) == []
        await sim.advance(0.7)
        changes = [m for m in await pending(risk) if m["e"] == "USER_LIABILITY_CHANGE"]
        assert [(m["t"], m["p"]) for m in changes] == [("BORROW", "2500.00000000")]


async def test_balance_late_by_the_scenario_default_and_order_kept(scenario_data: dict[str, Any]) -> None:
    """A scenario's ``delivery.user_data: 2`` holds every user-data event 2 s; a later event with no delay
    of its own still arrives after an earlier one on the same stream (one websocket never reorders)."""
    scenario_data["delivery"] = {"user_data": "2s"}
    async with run_simulator(parse_scenario(scenario_data), realtime=False) as sim:
        client = await open_client(sim)
        try:
            async with socket_manager(sim, client).margin_socket() as user:
                await sim.apply_event(BORROW)
                await sim.apply_event(
                    {"type": "transfer_in", "account": "demo", "asset": "BTC", "amount": "0.1",
                     "delivery": {"user_data": 0}}
                )  # fmt: skip
                assert await usdt(client) == ("3000.00000000", "22500.00000000")  # REST is not late
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(user.recv(), 0.3)
                await sim.advance(2)
                got = [(await asyncio.wait_for(user.recv(), 3))["e"] for _ in range(3)]
        finally:
            await client.close_connection()
    assert got == ["outboundAccountPosition", "balanceUpdate", "outboundAccountPosition"]


async def test_trade_moves_two_balances_in_one_event(sim: Simulator, client: Any) -> None:
    """A trade buys 0.01 BTC at 30,000 with free USDT: one outboundAccountPosition with both assets."""
    async with socket_manager(sim, client).margin_socket() as user:
        await sim.apply_event(
            {"type": "trade", "account": "demo", "side": "buy", "asset": "BTC", "amount": "0.01"}
        )
        event = await asyncio.wait_for(user.recv(), 3)
    assert event["B"] == [
        {"a": "BTC", "f": "1.21000000", "l": "0.00000000"},
        {"a": "USDT", "f": "200.00000000", "l": "0.00000000"},
    ]


def test_delivery_keys_are_validated(scenario_data: dict[str, Any]) -> None:
    """A bad delay is one clear line naming the key."""
    scenario_data["delivery"] = {"risk": "soon"}
    with pytest.raises(ScenarioError, match=r"delivery\.risk: .*duration"):
        parse_scenario(scenario_data, source="s.yaml")
