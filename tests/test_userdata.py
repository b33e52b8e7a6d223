"""User-data (listen token over the WebSocket API) and Risk Data Stream against the simulator.

Every test drives the real simulator (``sim`` fixture, manual time) through our own streams and
the real python-binance REST client: events routed per account and pair, and each fault — drop,
1001 close, stall, expired token, expired listen key, revoked key, malformed frame — survived.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from exchange_fakes import until
from structlog.testing import capture_logs

from monitor.exchange.errors import KeyRejected
from monitor.exchange.events import (
    BalanceDelta,
    BalanceUpdate,
    ExchangeEvent,
    LiabilityChange,
    MarginStatus,
    StreamState,
)
from monitor.exchange.rest import BinanceRest, RetryPolicy
from monitor.exchange.risk_stream import RiskStream
from monitor.exchange.supervisor import Backoff
from monitor.exchange.userdata import UserDataStream, UserSubscription
from monitor.sim import Simulator

FAST = Backoff(initial=0.01, maximum=0.05, reset_after=1.0)
POLICY = RetryPolicy(attempts=3, backoff=FAST)
KEYS = {"demo": ("demo-key", "demo-secret"), "other": ("other-key", "other-secret")}


class Recorder:
    """Collects events, states and reconcile calls."""

    def __init__(self) -> None:
        self.events: list[ExchangeEvent] = []
        self.states: list[StreamState] = []
        self.reconciled: list[tuple[str, str | None]] = []

    async def reconcile(self, account: str, symbol: str | None) -> None:
        self.reconciled.append((account, symbol))

    def of(self, kind: type[Any], account: str = "demo") -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and e.account == account]


async def rest(sim: Simulator, account: str = "demo") -> BinanceRest:
    key, secret = KEYS[account]
    return await BinanceRest.connect(account, key, secret, sim.base_url, sim.ws_api_url, policy=POLICY)


@asynccontextmanager
async def user_stream(
    sim: Simulator, subs: list[tuple[str, str | None]], **kwargs: Any
) -> AsyncIterator[tuple[UserDataStream, Recorder]]:
    """A UserDataStream on ``sim`` for (account, symbol) pairs, running in the background."""
    recorder = Recorder()
    clients = {account: await rest(sim, account) for account in dict.fromkeys(a for a, _ in subs)}
    stream = UserDataStream(
        sim.ws_api_url,
        [UserSubscription(account, clients[account], symbol) for account, symbol in subs],
        recorder.events.append,
        on_reconnected=recorder.reconcile,
        on_state=recorder.states.append,
        backoff=FAST,
        **kwargs,
    )
    task = asyncio.create_task(stream.run())
    try:
        await until(lambda: all(s.up for s in stream.subscriptions))
        yield stream, recorder
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for client in clients.values():
            await client.close()


async def deposit(sim: Simulator, amount: str, account: str = "demo", symbol: str | None = None) -> None:
    event: dict[str, Any] = {"type": "transfer_in", "account": account, "asset": "USDT", "amount": amount}
    if symbol:
        event["symbol"] = symbol
    await sim.apply_event(event)


async def test_events_are_routed_per_account_and_pair(sim: Simulator) -> None:
    """Cross subscriptions of two accounts share one connection; demo's isolated pair is on a second
    one (Binance: one subscription per account per connection, see monitor/exchange/userdata_pool.py);
    events carry their scope."""
    async with (
        user_stream(sim, [("demo", None), ("other", None)]) as (_, rec),
        user_stream(sim, [("demo", "BTCUSDT")]) as (_, pair_rec),
    ):
        assert sim.subscriptions() == 3
        assert sorted(rec.reconciled, key=str) == sorted([("demo", None), ("other", None)], key=str)
        assert pair_rec.reconciled == [("demo", "BTCUSDT")]  # subscribe, then reconcile
        await deposit(sim, "10")
        await deposit(sim, "7", symbol="BTCUSDT")
        await until(lambda: bool(rec.of(BalanceUpdate)) and bool(pair_rec.of(BalanceUpdate)))
    cross = [e for e in rec.of(BalanceUpdate) if e.unit_scope is None and e.asset == "USDT"]
    pair = [e for e in pair_rec.of(BalanceUpdate) if e.unit_scope == "BTCUSDT" and e.asset == "USDT"]
    assert cross[-1].free == Decimal("510") and pair[-1].free == Decimal("107")
    assert any(isinstance(e, BalanceDelta) and e.delta == Decimal(10) for e in rec.events)
    assert rec.of(BalanceUpdate, "other") == []
    assert not [e for e in rec.of(BalanceUpdate) if e.unit_scope == "BTCUSDT"]


@pytest.mark.parametrize("kind", ["drop", "close_1001"])
async def test_lost_connection_resubscribes_and_reconciles(sim: Simulator, kind: str) -> None:
    """After a dropped or 1001-closed WebSocket API connection every subscription comes back, reconciled."""
    async with user_stream(sim, [("demo", None), ("other", None)]) as (stream, rec):
        await sim.inject_fault({"kind": kind, "target": "ws_api"})
        await until(lambda: len(rec.reconciled) == 4 and all(s.up for s in stream.subscriptions))
        assert sim.subscriptions() == 2
        await deposit(sim, "1")
        await until(lambda: bool(rec.of(BalanceUpdate)))
    assert stream.supervisor.retries == 1
    downs = [s for s in rec.states if not s.up and s.name.startswith("userdata:")]
    assert {s.name for s in downs} == {"userdata:demo", "userdata:other"}


async def test_expired_token_resubscribes_that_account(sim: Simulator) -> None:
    """eventStreamTerminated (token expired) makes a new token and subscription for that account only."""
    async with user_stream(sim, [("demo", None), ("other", None)]) as (stream, rec):
        first = stream.subscriptions[0].token
        await sim.inject_fault({"kind": "expire_listen_token", "target": "ws_api", "account": "demo"})
        await until(lambda: rec.reconciled.count(("demo", None)) == 2 and stream.subscriptions[0].up)
        assert stream.subscriptions[0].token != first
        await deposit(sim, "2")
        await until(lambda: bool(rec.of(BalanceUpdate)))
    assert rec.reconciled.count(("other", None)) == 1
    assert stream.supervisor.retries == 0, "one expired token must not cost the connection"


async def test_stalled_connection_is_detected_by_silence(sim: Simulator) -> None:
    """A WebSocket API connection that stops answering (pongs included) is replaced after `silence`."""
    with capture_logs() as logs:
        async with user_stream(sim, [("demo", None)], silence=0.3, probe_interval=0.05) as (stream, rec):
            await sim.inject_fault({"kind": "stall", "target": "ws_api", "duration": 1000})
            await until(lambda: stream.supervisor.retries >= 1)
            await sim.clear_faults()
            await until(lambda: rec.reconciled.count(("demo", None)) >= 2 and stream.subscriptions[0].up)
            await deposit(sim, "4")
            await until(lambda: bool(rec.of(BalanceUpdate)))
    assert any(e["event"] == "stream_retry" and e["reason"] == "silent for 0.3 s" for e in logs)


async def test_revoked_key_stops_only_that_account(sim: Simulator) -> None:
    """A key revoked mid-run is reported fatal for its account; the other account keeps streaming."""
    async with user_stream(sim, [("demo", None), ("other", None)]) as (stream, rec):
        await sim.inject_fault({"kind": "revoke_key", "account": "other"})
        await sim.inject_fault({"kind": "expire_listen_token", "target": "ws_api", "account": "other"})
        await until(lambda: bool(stream.subscriptions[1].failed))
        await deposit(sim, "5")
        await until(lambda: bool(rec.of(BalanceUpdate)))
        assert stream.subscriptions[0].up and stream.supervisor.retries == 0
    fatal = [s for s in rec.states if s.fatal]
    assert [s.name for s in fatal] == ["userdata:other"] and "-2015" in fatal[0].reason


async def test_malformed_frame_is_skipped(sim: Simulator) -> None:
    """A garbage frame on the WebSocket API is logged and skipped; the connection stays."""
    with capture_logs() as logs:
        async with user_stream(sim, [("demo", None)]) as (stream, rec):
            await sim.inject_fault({"kind": "malformed_frame", "target": "ws_api"})
            await deposit(sim, "6")
            await until(lambda: bool(rec.of(BalanceUpdate)))
    assert any(e["event"] == "userdata_frame_skipped" for e in logs)
    assert stream.supervisor.retries == 0


@asynccontextmanager
async def risk_stream(
    sim: Simulator, **kwargs: Any
) -> AsyncIterator[tuple[RiskStream, Recorder, BinanceRest]]:
    """A RiskStream for the demo account, running in the background."""
    recorder = Recorder()
    client = await rest(sim)
    stream = RiskStream(
        sim.risk_stream_url,
        client,
        "demo",
        recorder.events.append,
        on_reconnected=recorder.reconcile,
        on_state=recorder.states.append,
        backoff=FAST,
        **kwargs,
    )
    task = asyncio.create_task(stream.run())
    try:
        await until(lambda: stream.supervisor.up)
        yield stream, recorder, client
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_risk_stream_delivers_liability_and_status(sim: Simulator) -> None:
    """A borrow arrives as LiabilityChange and a price crash as MarginStatus, both typed."""
    async with risk_stream(sim, keepalive=0.2) as (_, rec, _):
        await sim.apply_event({"type": "borrow", "account": "demo", "asset": "USDT", "amount": "100"})
        await until(lambda: bool(rec.of(LiabilityChange)))
        await sim.set_price("BTCUSDT", "18000")
        await until(lambda: bool(rec.of(MarginStatus)))
    change = rec.of(LiabilityChange)[0]
    assert change.asset == "USDT" and isinstance(change.principal, Decimal)
    assert rec.of(MarginStatus)[-1].status in {"MARGIN_CALL", "PRE_LIQUIDATION", "FORCE_LIQUIDATION"}
    assert rec.reconciled == [("demo", None)]


async def test_risk_stream_survives_drop(sim: Simulator) -> None:
    """A dropped risk connection reconnects (reusing the live key) and reconciles."""
    async with risk_stream(sim, keepalive=0.2) as (stream, rec, _):
        await sim.inject_fault({"kind": "drop", "target": "streams"})
        await until(lambda: len(rec.reconciled) == 2 and stream.supervisor.up)
        await sim.apply_event({"type": "borrow", "account": "demo", "asset": "USDT", "amount": "1"})
        await until(lambda: bool(rec.of(LiabilityChange)))


async def test_risk_stream_revoked_key_is_fatal(sim: Simulator) -> None:
    """A revoked key ends the risk stream with KeyRejected instead of retrying forever."""
    client = await rest(sim)
    states: list[StreamState] = []
    sim.engine.state.revoke("demo")
    stream = RiskStream(
        sim.risk_stream_url, client, "demo", lambda e: None, on_state=states.append, backoff=FAST
    )
    try:
        with pytest.raises(KeyRejected):
            await asyncio.wait_for(stream.run(), 5)
    finally:
        await client.close()
    assert states[-1].fatal


class TestShortLifetimes:
    """Tokens and listen keys that live one second, so renewal happens within a test."""

    @pytest.fixture
    def scenario_data(self, scenario_data: dict[str, Any]) -> dict[str, Any]:
        """Short token and listen-key lifetimes so renewals happen within a test."""
        scenario_data["limits"] = {"listen_token_validity": 1.0, "listen_key_validity": 1.0}
        return scenario_data

    async def test_token_is_renewed_before_it_expires(self, sim: Simulator) -> None:
        """With 1-second tokens the stream renews ahead of expiry: never terminated nor reconciled again."""
        with capture_logs() as logs:
            async with user_stream(sim, [("demo", None)]) as (stream, rec):
                await asyncio.sleep(2.5)
                await deposit(sim, "3")
                await until(lambda: bool(rec.of(BalanceUpdate)))
                assert stream.subscriptions[0].up and sim.subscriptions("demo") == 1
        renewals = [e for e in logs if e["event"] == "userdata_subscribed" and e["renewed"]]
        assert len(renewals) >= 3
        assert not any(e["event"] == "userdata_terminated" for e in logs)
        assert rec.reconciled == [("demo", None)]

    async def test_risk_keepalive_keeps_the_key(self, sim: Simulator) -> None:
        """With keepalive faster than the 1-second key lifetime the key never expires."""
        async with risk_stream(sim, keepalive=0.2) as (stream, rec, _):
            await asyncio.sleep(2.0)
            await sim.apply_event({"type": "borrow", "account": "demo", "asset": "USDT", "amount": "1"})
            await until(lambda: bool(rec.of(LiabilityChange)))
        assert stream.supervisor.retries == 0

    async def test_risk_expired_key_is_replaced(self, sim: Simulator) -> None:
        """listenKeyExpired (no keepalive) makes a new key and connection, and events flow again."""
        with capture_logs() as logs:
            async with risk_stream(sim, keepalive=60) as (stream, rec, _):
                await until(lambda: stream.supervisor.retries >= 1, within=5)
                await until(lambda: stream.supervisor.up)
                await sim.apply_event({"type": "borrow", "account": "demo", "asset": "USDT", "amount": "1"})
                await until(lambda: bool(rec.of(LiabilityChange)))
        assert any(e["event"] == "stream_retry" and "expired" in e["reason"] for e in logs)
        assert len(rec.reconciled) >= 2


async def test_server_shutdown_notice_moves_to_a_new_connection(sim: Simulator) -> None:
    """``serverShutdown`` on the WebSocket API: a new connection at once, every subscription back and
    reconciled, logged as such (not as an event for an unknown subscription)."""
    with capture_logs() as logs:
        async with user_stream(sim, [("demo", None), ("other", None)]) as (stream, rec):
            await sim.inject_fault({"kind": "server_shutdown", "target": "ws_api"})
            await until(lambda: len(rec.reconciled) == 4 and all(s.up for s in stream.subscriptions))
            await deposit(sim, "1")
            await until(lambda: bool(rec.of(BalanceUpdate)))
    assert stream.supervisor.retries == 1
    assert [e["event"] for e in logs if e["event"] == "userdata_server_shutdown"] == [
        "userdata_server_shutdown"
    ]
    assert not [e for e in logs if e["event"] == "userdata_frame_skipped"]


async def test_subscriptions_added_to_a_running_stream_are_subscribed(sim: Simulator) -> None:
    """An account loaded after start joins the running connection: subscribed, reconciled, its events
    routed, without a reconnect."""
    async with user_stream(sim, [("demo", None)]) as (stream, rec):
        late = await rest(sim, "other")
        try:
            stream.add([UserSubscription("other", late)])
            await until(lambda: all(s.up for s in stream.subscriptions) and ("other", None) in rec.reconciled)
            await deposit(sim, "3", account="other")
            await until(lambda: bool(rec.of(BalanceUpdate, "other")))
        finally:
            await late.close()
    assert stream.supervisor.retries == 0


async def test_a_stream_started_with_nothing_waits_for_its_first_subscription(sim: Simulator) -> None:
    """With no account loaded yet the stream stays idle (no connection); the first one added connects."""
    recorder = Recorder()
    stream = UserDataStream(sim.ws_api_url, [], recorder.events.append, on_reconnected=recorder.reconcile,
                            backoff=FAST)  # fmt: skip
    task = asyncio.create_task(stream.run())
    client = await rest(sim)
    try:
        await asyncio.sleep(0.05)
        assert sim.subscriptions() == 0 and stream.supervisor.retries == 0
        stream.add([UserSubscription("demo", client)])
        await until(lambda: sim.subscriptions("demo") == 1 and recorder.reconciled == [("demo", None)])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
