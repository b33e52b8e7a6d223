"""Binance's WebSocket API user-data limits, enforced by the simulator and respected by the daemon.

Binance (WebSocket API, "User Data Stream subscription"): one active subscription per account per
connection; up to 1,000 active subscriptions per session; 65,535 over a session's lifetime. The
simulator refuses past each (``monitor/sim/userdata.py``); the daemon spreads its
subscriptions over as many sessions as needed (``monitor/exchange/userdata_pool.py``), an account's
cross and isolated pairs each on a different session.
"""

from __future__ import annotations

import copy
import doctest
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import DEMO_SCENARIO
from daemon_harness import Receiver, daemon_config, wait_until
from websockets.asyncio.client import ClientConnection, connect

import monitor.exchange.userdata_pool
from monitor.config.model import load_config
from monitor.exchange.userdata_pool import plan
from monitor.service import Service
from monitor.sim import Simulator
from monitor.sim.userdata import LIMIT_CODE

pytestmark = pytest.mark.timeout(120)
_ids = itertools.count()


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """tests/conftest.py's scenario, ``demo`` with a second isolated pair (ETHUSDT), and ``third``."""
    data = copy.deepcopy(DEMO_SCENARIO)
    demo = data["accounts"][0]
    demo["isolated"].append(
        {
            "symbol": "ETHUSDT",
            "base": {"asset": "ETH", "free": "1"},
            "quote": {"asset": "USDT", "borrowed": "500"},
        }
    )
    data["accounts"].append({"name": "third", "api_key": "third-key", "api_secret": "third-secret",
                             "cross": [{"asset": "ETH", "free": "1"}]})  # fmt: skip
    return data


async def call(ws: ClientConnection, method: str, **params: Any) -> dict[str, Any]:
    request_id = next(_ids)
    await ws.send(orjson.dumps({"id": request_id, "method": method, "params": params}).decode())
    while True:
        reply = orjson.loads(await ws.recv())
        if reply.get("id") == request_id:
            return dict(reply)


def token(sim: Simulator, account: str, scope: str | None = None) -> str:
    return sim.engine.tokens.create(account, scope, sim.engine.now_ms() + 3_600_000).token


async def subscribe(ws: ClientConnection, listen_token: str) -> dict[str, Any]:
    return await call(ws, "userDataStream.subscribe.listenToken", listenToken=listen_token)


async def test_sim_refuses_the_1001st_subscription_on_a_session(sim: Simulator) -> None:
    """1,000 accounts subscribe on one connection; the 1,001st is refused (status 400, the limit
    quoted) and subscribes fine on a second connection."""
    async with connect(sim.ws_api_url) as ws, connect(sim.ws_api_url) as second:
        for i in range(1000):
            reply = await subscribe(ws, token(sim, f"acct-{i}"))
            assert reply["status"] == 200, (i, reply)
        refused = await subscribe(ws, token(sim, "acct-1000"))
        assert refused["status"] == 400
        assert refused["error"]["code"] == LIMIT_CODE
        assert "up to 1000 active subscriptions" in refused["error"]["msg"]
        assert (await subscribe(second, token(sim, "acct-1000")))["status"] == 200
    assert sim.engine.api.refused == 1


async def test_sim_one_subscription_per_account_per_connection(sim: Simulator) -> None:
    """An account's cross subscription, then its isolated pair on the same connection: refused;
    the same scope again is a renewal (same id); the pair on another connection is fine."""
    async with connect(sim.ws_api_url) as ws, connect(sim.ws_api_url) as second:
        first = await subscribe(ws, token(sim, "demo"))
        assert first["status"] == 200
        pair = await subscribe(ws, token(sim, "demo", "BTCUSDT"))
        assert pair["status"] == 400 and pair["error"]["code"] == LIMIT_CODE
        assert "only one active subscription for a given account" in pair["error"]["msg"]
        again = await subscribe(ws, token(sim, "demo"))
        assert again["result"]["subscriptionId"] == first["result"]["subscriptionId"]
        assert (await subscribe(second, token(sim, "demo", "BTCUSDT")))["status"] == 200


async def test_sim_lifetime_limit_needs_a_new_connection(sim: Simulator) -> None:
    """Past the lifetime count (65,535; lowered to 3 here) a connection starts no subscription, even
    with none active; a new connection does."""
    sim.engine.api.lifetime_limit = 3
    async with connect(sim.ws_api_url) as ws:
        for i in range(3):
            reply = await subscribe(ws, token(sim, f"acct-{i}"))
            await call(ws, "userDataStream.unsubscribe", subscriptionId=reply["result"]["subscriptionId"])
        refused = await subscribe(ws, token(sim, "acct-3"))
        assert refused["status"] == 400 and "maximum of 3 total subscriptions" in refused["error"]["msg"]
    async with connect(sim.ws_api_url) as ws:
        assert (await subscribe(ws, token(sim, "acct-3")))["status"] == 200


def test_plan_never_puts_an_account_twice_on_a_session_nor_more_than_the_limit() -> None:
    """1,001 accounts, one of them with two isolated pairs: two sessions for the crosses (1,000 + 1),
    the pairs of that account on sessions of their own account-wise."""
    keys: list[tuple[str, str | None]] = [(f"a{i}", None) for i in range(1001)]
    keys += [("a0", "BTCUSDT"), ("a0", "ETHUSDT")]
    where = plan(keys)
    sessions: dict[int, list[str]] = {}
    for (account, _), index in zip(keys, where, strict=True):
        sessions.setdefault(index, []).append(account)
    assert all(len(accounts) <= 1000 for accounts in sessions.values())
    assert all(len(set(accounts)) == len(accounts) for accounts in sessions.values())
    assert len(sessions) == 3


async def test_daemon_puts_cross_and_two_isolated_pairs_on_three_sessions(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """``demo`` has a cross account and isolated pairs BTCUSDT and ETHUSDT: the daemon opens three
    sessions, one subscription of ``demo`` on each, none refused."""
    accounts = [{"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret", "isolated": "all"}]
    path = daemon_config(tmp_path, sim, receiver, accounts=accounts)
    daemon = Service(load_config(path), path)
    try:
        await daemon.startup()
        await wait_until(daemon.ready, what="daemon ready")
        pool = daemon.userdata
        assert pool is not None
        await wait_until(lambda: all(s.up for s in pool.subscriptions) and len(pool.subscriptions) == 3,
                         what="three subscriptions up")  # fmt: skip
        assert len(pool.streams) == 3
        per_connection = [[s.account for s in api.subs.values()] for api in sim.engine.api.connections]
        assert sorted(per_connection) == [["demo"], ["demo"], ["demo"]]
        assert sim.engine.api.refused == 0
    finally:
        await daemon.shutdown()


async def test_daemon_opens_a_second_session_past_the_per_session_limit(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """With the session limit lowered to 2 on both sides, 3 cross accounts use two sessions (2 + 1),
    every subscription up, none refused."""
    sim.engine.api.active_limit = 2
    names = ["demo", "other", "third"]
    accounts = [{"name": n, "api_key": f"{n}-key", "api_secret": f"{n}-secret"} for n in names]
    path = daemon_config(tmp_path, sim, receiver, accounts=accounts)
    daemon = Service(load_config(path), path, per_session=2)
    try:
        await daemon.startup()
        await wait_until(daemon.ready, what="daemon ready")
        pool = daemon.userdata
        assert pool is not None
        await wait_until(lambda: sum(s.up for s in pool.subscriptions) == 3, what="all up")
        assert sorted(len(api.subs) for api in sim.engine.api.connections) == [1, 2]
        assert sim.engine.api.refused == 0
    finally:
        await daemon.shutdown()


def test_doctests() -> None:
    """The worked examples of monitor/exchange/userdata_pool.py hold."""
    assert doctest.testmod(monitor.exchange.userdata_pool).failed == 0
