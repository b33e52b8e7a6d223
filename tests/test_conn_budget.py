"""Binance's 300 WebSocket connection attempts per 5 minutes per IP: the simulator enforces it, the
daemon keeps one shared budget under it (``monitor/exchange/conn_slots.py``, ``conn_budget.py``).

The end-to-end tests shrink both: the simulator allows 10 attempts per 3 s, the daemon 8 per 3 s,
with more cross accounts (each its own Risk Data Stream) than either. Nothing here times anything:
every wait is on a condition with a generous bound.
"""

from __future__ import annotations

import asyncio
import doctest
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import DEMO_SCENARIO
from daemon_harness import Receiver, cross_account, daemon_config, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import monitor.exchange.conn_budget
import monitor.exchange.conn_slots
from monitor.cli.status_view import risk_stream_note
from monitor.config.model import load_config
from monitor.exchange.conn_budget import WAIT_REASON
from monitor.exchange.conn_slots import Priority, SlotWindow
from monitor.exchange.rest import BinanceRest
from monitor.exchange.risk_stream import RiskStream
from monitor.exchange.streams import probed_connect
from monitor.service import Service
from monitor.sim import Simulator
from monitor.sim.conn_limit import TOO_MANY_CONNECTIONS

pytestmark = pytest.mark.timeout(180)

# cross accounts: 20 Risk Data Streams + a market stream + a WebSocket API session (the daemons here
# give each account a connection of its own, as after a server refused shared ones: many attempts)
ACCOUNTS = 20
SIM_LIMIT, SIM_WINDOW = 10, 3.0


def test_doctests() -> None:
    for module in (monitor.exchange.conn_slots, monitor.exchange.conn_budget):
        assert doctest.testmod(module).failed == 0


# -- the sans-I/O core: the window is never exceeded, whatever the interleaving ------------------------

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("ask"), st.integers(0, 11), st.sampled_from(list(Priority))),
        st.tuples(st.just("cancel"), st.integers(0, 11), st.just(Priority.RISK)),
        st.tuples(st.just("done"), st.integers(0, 3), st.just(Priority.RISK)),
        st.tuples(st.just("refused"), st.integers(0, 3), st.just(Priority.RISK)),
        st.tuples(st.just("wait"), st.integers(0, 40), st.just(Priority.RISK)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 5), window=st.sampled_from([1.0, 2.5, 10.0]), steps=_steps)
def test_window_never_exceeded_and_every_waiter_served(
    limit: int, window: float, steps: list[tuple[str, int, Priority]]
) -> None:
    """Any interleaving of requests, cancellations, handshakes ending (at once or much later),
    refusals (with or without Retry-After) and time: however the server places an attempt between
    its grant and the end of its handshake, no sliding window holds more than ``limit``; nothing is
    granted while blocked after a refusal; the first in line are served, in order; and once time runs
    on, every waiter is served exactly when ``waiting`` said it would be."""
    w = SlotWindow(limit, window)
    now = 0.0
    flying: list[float] = []  # grant times of the attempts in flight, oldest first
    attempts: list[tuple[float, float]] = []  # (granted, handshake ended)
    blocked: list[tuple[float, float]] = []

    def finish(count: int) -> None:
        for _ in range(min(count, len(flying))):
            w.done(now)
            attempts.append((flying.pop(0), now))

    for op, n, priority in steps:
        if op == "ask":
            w.request(f"c{n}", priority)
        elif op == "cancel":
            w.cancel(f"c{n}")
        elif op == "done":
            finish(n)
        elif op == "refused":
            w.refused(now, float(n) or None)
            blocked.append((now, w.blocked_until))
        else:
            now += n / 10
        waiting = w.waiting(now)
        granted = w.grant(now)
        for name in granted:
            assert waiting[name].eta == now  # each one served when it was told
        assert [waiting[name].ahead for name in granted] == list(range(len(granted)))
        flying += [now] * len(granted)
    # drain: handshakes end at once, time follows next_at; the ETAs said beforehand must hold
    finish(len(flying))
    promised = w.waiting(now)
    while (at := w.next_at(now)) is not None:
        assert now <= at < float("inf")
        now = at
        for name in w.grant(now):
            assert promised[name].eta == now
            flying.append(now)
        finish(len(flying))
    assert not w.order()
    for t, _ in attempts:  # the count only grows at a grant: check every grant time
        assert sum(1 for g, d in attempts if g <= t < d + window) <= limit  # (the budget's arithmetic)
    for since, until in blocked:
        assert not [g for g, _ in attempts if since < g < until]


# -- the simulator: the 301st attempt is refused at the handshake -------------------------------------


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """The usual scenario plus ``ACCOUNTS`` cross accounts, and the connection limit shrunk."""
    data: dict[str, Any] = orjson.loads(orjson.dumps(DEMO_SCENARIO))
    data["accounts"] = [
        cross_account(f"acct{i:02d}", ("BTC", "1", "0"), ("USDT", "100", "15000")) for i in range(ACCOUNTS)
    ]
    data["limits"] = {"ws_connections": SIM_LIMIT, "ws_connection_window": SIM_WINDOW}
    return data


async def test_sim_refuses_the_attempt_past_the_limit_with_429(sim: Simulator) -> None:
    """Ten attempts on any of the WebSocket endpoints pass; the eleventh is refused at the handshake
    with HTTP 429, Binance's -1034 text and a Retry-After; refused attempts are counted apart."""
    paths = [f"{sim.stream_url}/ws/btcusdt@bookTicker", f"{sim.stream_url}/stream?streams=ethusdt@trade",
             sim.ws_api_url]  # fmt: skip
    for i in range(SIM_LIMIT):
        async with connect(paths[i % 3]):
            pass
    with pytest.raises(InvalidStatus) as refused:
        async with connect(sim.ws_api_url):
            pass
    response = refused.value.response
    assert response.status_code == 429
    body = orjson.loads(response.body or b"{}")
    assert body["code"] == TOO_MANY_CONNECTIONS
    assert body["msg"] == "Too many connection attempts from IP; current limit is 10 per '3 seconds'."
    assert 1 <= int(response.headers["Retry-After"]) <= 3
    assert (sim.connections.admitted, sim.connections.refused) == (SIM_LIMIT, 1)


# -- the daemon: more accounts than the limit, cold start and reconnect storm ----------------------------


def _risk_connections(sim: Simulator) -> int:
    return sum(
        1 for sc in sim.engine.streams.connections if any(sim.engine.streams.route(n) == ("listenKey", None)
                                                          for n in sc.streams)
    )  # fmt: skip


def _waiting_seen(daemon: Service, seen: dict[str, Any]) -> bool:
    """Record a cross unit shown waiting in ``status`` together with ``/metrics`` at that moment."""
    for unit in daemon.status():
        if unit.get("risk_stream") == "waiting":
            seen["unit"] = unit
            seen["metrics"] = daemon.parts.metrics.render()[0].decode()
            return True
    return False


def _all_connected(daemon: Service, sim: Simulator) -> bool:
    return _risk_connections(sim) == ACCOUNTS and all(
        w.risk is not None and w.risk.group is not None and w.risk.group.member_state(w.name)[0]
        for w in daemon.watchers
    )


async def _daemon(tmp_path: Path, sim: Simulator, receiver: Receiver, budget: tuple[int, float]) -> Service:
    accounts = [{"name": f"acct{i:02d}", "api_key": f"acct{i:02d}-key", "api_secret": f"acct{i:02d}-secret"}
                for i in range(ACCOUNTS)]  # fmt: skip
    path = daemon_config(
        tmp_path, sim, receiver, accounts=accounts, snapshot_interval="60s", stale_after="60s"
    )
    daemon = Service(load_config(path), path, connections=budget, risk_per_connection=1)
    await daemon.startup()
    return daemon


def _assert_waiting_visible(seen: dict[str, Any], *, evaluated: bool) -> None:
    unit = seen["unit"]
    assert unit["risk_stream_reason"].startswith(WAIT_REASON)
    assert "ahead, slot in ~" in unit["risk_stream_reason"]
    assert unit["risk_stream_wait"]["ahead"] >= 0 and unit["risk_stream_wait"]["eta"] >= 0
    assert risk_stream_note(unit).startswith("Binance's Risk Data Stream not connected: waiting")
    if evaluated:  # once priced, still evaluated on prices, balances and REST meanwhile
        assert unit["state"] != "blind" and unit["margin_level"] is not None
    metrics = seen["metrics"]
    waiting = [
        line
        for line in metrics.splitlines()
        if line.startswith('margin_monitor_ws_connections_waiting{kind="risk"}')
    ]
    assert waiting and float(waiting[0].split()[-1]) >= 1
    account = unit["account"]
    assert f'margin_monitor_feed_connected{{feed="risk:{account}"}} 0.0' in metrics


async def test_cold_start_with_more_accounts_than_the_limit(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """22 connections against a limit of 10 per 3 s, the daemon keeping 8 per 3 s: the simulator
    never refuses one; the market stream and the WebSocket API session connect first and the daemon
    is ready without waiting for the risk streams; the accounts whose Risk Data Stream waits show it
    in ``status`` (reason, place, ETA) and ``/metrics``; eventually every one is connected."""
    daemon = await _daemon(tmp_path, sim, receiver, (8, SIM_WINDOW))
    try:
        seen: dict[str, Any] = {}
        await wait_until(lambda: _waiting_seen(daemon, seen), within=30, what="a risk stream shown waiting")
        _assert_waiting_visible(seen, evaluated=False)  # (at start-up: maybe before the first prices)
        await wait_until(daemon.ready, within=60, what="ready")
        await wait_until(lambda: _all_connected(daemon, sim), within=90, what="every risk stream connected")
        assert sim.connections.refused == 0
        assert daemon.parts.connections.refusals == 0
        market = [a for a in sim.connections.log if a.path.startswith("/stream")]
        assert market and sim.connections.log[0].path in ("/stream", "/ws-api/v3")  # first served
        assert all(u.get("risk_stream") == "up" for u in daemon.status() if u["unit"].startswith("cross:"))
    finally:
        await daemon.shutdown()


async def test_reconnect_storm_waits_its_turn(tmp_path: Path, sim: Simulator, receiver: Receiver) -> None:
    """Every connection dropped at once (a network blip): all 22 reconnect through the budget, none
    refused, the waiting ones visible, and every risk stream back."""
    daemon = await _daemon(tmp_path, sim, receiver, (8, SIM_WINDOW))
    try:
        await wait_until(lambda: _all_connected(daemon, sim), within=90, what="every risk stream connected")
        before = sim.connections.admitted
        await sim.inject_fault({"kind": "drop", "target": "all"})
        seen: dict[str, Any] = {}
        await wait_until(lambda: _waiting_seen(daemon, seen), within=30, what="a risk stream shown waiting")
        _assert_waiting_visible(seen, evaluated=True)
        await wait_until(
            lambda: sim.connections.admitted >= before + ACCOUNTS + 2 and _all_connected(daemon, sim),
            within=90, what="every connection back",
        )  # fmt: skip
        assert sim.connections.refused == 0
    finally:
        await daemon.shutdown()


async def test_a_refused_handshake_spends_the_budget_instead_of_hammering(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """The daemon allowing itself more than the simulator (30 against 10 per 3 s, as when another
    process shares the IP): the simulator refuses some handshakes with 429; the daemon hears each,
    holds every attempt until Retry-After, and gets everything connected with few refusals: each
    connection at most refused once per round, never retried in a loop."""
    daemon = await _daemon(tmp_path, sim, receiver, (30, SIM_WINDOW))
    try:
        await wait_until(lambda: _all_connected(daemon, sim), within=120, what="every risk stream connected")
        refused = sim.connections.refused
        assert refused >= 1
        assert daemon.parts.connections.refusals == refused
        # without the budget each refused stream would retry after 0.25 s, 0.5 s, 1 s...: a dozen
        # refusals per window; with it, a refusal stops every attempt until the window frees
        assert refused <= 2 * (ACCOUNTS + 2 - SIM_LIMIT)
    finally:
        await daemon.shutdown()


async def test_a_stream_queued_past_its_silence_limit_keeps_its_place(sim: Simulator) -> None:
    """Three Risk Data Streams behind a budget of one attempt per 4 s, each with a silence limit of
    2 s (pinged every 0.5 s once connected: the simulator allows 5 messages a second): the last one
    waits some 8 s for its slot, four times its silence limit. Waiting is not silence (there is no
    socket yet): no stream is ended "silent", none retries, and the budget grants exactly the three
    attempts. Before the fix each queued stream was ended after 2 s, logged ``stream_retry`` and
    rejoined the queue at the back."""
    budget = monitor.exchange.conn_budget.ConnectionBudget(1, 4.0)
    clients = [
        await BinanceRest.connect(f"acct{i:02d}", f"acct{i:02d}-key", f"acct{i:02d}-secret", sim.base_url,
                                  sim.ws_api_url)
        for i in range(3)
    ]  # fmt: skip
    streams = [
        RiskStream(sim.risk_stream_url, client, client.account, lambda event: None, silence=2.0,
                   probe_interval=0.5,
                   connect=budget.connect_factory(probed_connect, f"risk:{client.account}", Priority.RISK))
        for client in clients
    ]  # fmt: skip
    with capture_logs() as logs:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(stream.run()) for stream in streams]
            try:
                await wait_until(
                    lambda: all(s.supervisor.up for s in streams), within=60, what="all three up"
                )
            finally:
                for task in tasks:
                    task.cancel()
    for client in clients:
        await client.close()
    budget.close()
    assert [s.supervisor.retries for s in streams] == [0, 0, 0]
    assert not [e for e in logs if e["event"] == "stream_retry"]
    assert budget.granted == 3
