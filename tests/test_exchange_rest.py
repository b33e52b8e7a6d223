"""REST through the real python-binance AsyncClient against a scripted server on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from binance import AsyncClient
from binance.ws.websocket_api import WebsocketAPI
from exchange_fakes import FakeRest, Reply
from structlog.testing import capture_logs

from monitor.exchange.errors import (
    ExchangeDataError,
    ExchangeRequestError,
    ExchangeUnavailable,
    KeyRejected,
    RateLimited,
)
from monitor.exchange.rest import BinanceRest, RetryPolicy, make_client
from monitor.exchange.supervisor import Backoff
from monitor.sim import Simulator

KEY = "test-api-key-0123456789"
SECRET = "test-api-secret-ABCDEFGHIJ"
FAST = RetryPolicy(attempts=4, backoff=Backoff(initial=0.01, maximum=0.02), max_wait=60.0)


class Sleeps:
    """A sleep that records the requested waits and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRest]:
    async with FakeRest().running() as server:
        yield server


async def connect(fake: FakeRest, sleeps: Sleeps | None = None, limit: float = 2.0) -> BinanceRest:
    client = await make_client(
        KEY, SECRET, fake.base_url, "ws://127.0.0.1:9/ws-api/v3", request_timeout=limit, account="main"
    )
    return BinanceRest(client, "main", FAST, sleep=sleeps or Sleeps())


async def test_make_client_pings_and_syncs_time(fake: FakeRest) -> None:
    """make_client pings, reads the server time and stores the offset like AsyncClient.create."""
    fake.clock_offset_ms = 5_000
    client = await make_client(KEY, SECRET, fake.base_url, "ws://127.0.0.1:9/ws-api/v3")
    try:
        assert fake.count("/api/v3/ping") == 1
        assert fake.count("/api/v3/time") == 1
        assert 4_000 < client.timestamp_offset < 6_000
    finally:
        await client.close_connection()


async def test_make_client_makes_no_websocket_api_clients(
    fake: FakeRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """python-binance's two WebSocket-API clients per client are never made (the daemon's user data
    is monitor.exchange.userdata's); a client made by python-binance itself afterwards still has them."""
    made: list[str] = []
    real_init = WebsocketAPI.__init__

    def counting_init(self: WebsocketAPI, *args: Any, **kwargs: Any) -> None:
        made.append(kwargs.get("url", ""))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(WebsocketAPI, "__init__", counting_init)
    client = await make_client(KEY, SECRET, fake.base_url, "ws://127.0.0.1:9/ws-api/v3")
    try:
        assert made == [] and client.ws_api is None and client.ws_future is None
    finally:
        await client.close_connection()
    plain = AsyncClient(KEY, SECRET)
    try:
        assert len(made) == 2 and isinstance(plain.ws_api, WebsocketAPI)
    finally:
        await plain.close_connection()


async def test_cross_account_is_signed_and_typed(fake: FakeRest) -> None:
    """The cross account arrives signed with the key header and parses to Decimal positions."""
    rest = await connect(fake)
    try:
        account = await rest.cross_account()
    finally:
        await rest.close()
    assert account.account_type == "MARGIN_1"
    assert account.margin_level == Decimal("2.5")
    assert set(account.positions) == {"BTC", "USDT"}  # the all-zero ETH row is dropped
    assert account.positions["USDT"].interest == Decimal("1.25")
    seen = next(s for s in fake.seen if s.path == "/sapi/v1/margin/account")
    assert seen.headers["X-MBX-APIKEY"] == KEY
    assert {"timestamp", "recvWindow", "signature"} <= set(seen.query)


async def test_5xx_is_retried_with_backoff(fake: FakeRest) -> None:
    """Two 503s are retried with backoff and the third answer is used."""
    fake.script("/sapi/v1/margin/account", Reply(503, {"code": -1001, "msg": "busy"}), Reply(502, b"<html>"))
    sleeps = Sleeps()
    rest = await connect(fake, sleeps)
    try:
        with capture_logs() as logs:
            account = await rest.cross_account()
    finally:
        await rest.close()
    assert account.margin_level == Decimal("2.5")
    assert fake.count("/sapi/v1/margin/account") == 3
    retries = [e for e in logs if e["event"] == "rest_retry"]
    assert [e["reason"].split(":")[0] for e in retries] == ["HTTP 503", "HTTP 502"]
    assert len(sleeps.waits) == 2 and all(0 < w <= 0.02 for w in sleeps.waits)


async def test_timeout_is_retried(fake: FakeRest) -> None:
    """A server that hangs past the request timeout is retried and the next answer used."""
    fake.script("/sapi/v1/margin/account", Reply(body={}, delay=1.0))
    rest = await connect(fake, limit=0.2)
    try:
        started = time.monotonic()
        account = await rest.cross_account()
    finally:
        await rest.close()
    assert account.positions
    assert time.monotonic() - started < 1.0
    assert fake.count("/sapi/v1/margin/account") == 2


@pytest.mark.parametrize("status", [429, 418])
async def test_retry_after_is_honoured(fake: FakeRest, status: int) -> None:
    """429 and 418 make the client wait exactly Retry-After before the next attempt."""
    fake.script(
        "/sapi/v1/margin/account",
        Reply(status, {"code": -1003, "msg": "Too many requests"}, headers={"Retry-After": "7"}),
    )
    sleeps = Sleeps()
    rest = await connect(fake, sleeps)
    try:
        await rest.cross_account()
    finally:
        await rest.close()
    assert len(sleeps.waits) == 1 and 6.5 < sleeps.waits[0] <= 7.0
    assert rest.caller.blocked_until > 0


async def test_long_retry_after_raises_rate_limited(fake: FakeRest) -> None:
    """A Retry-After beyond the call's budget raises RateLimited, and later calls wait for it too."""
    fake.script(
        "/sapi/v1/margin/account", Reply(418, {"code": -1003, "msg": "banned"}, {"Retry-After": "600"})
    )
    rest = await connect(fake)
    try:
        with pytest.raises(RateLimited, match="retry after 600 s"):
            await rest.cross_account()
        with pytest.raises(RateLimited):
            await rest.cross_bars()
    finally:
        await rest.close()
    assert fake.count("/sapi/v1/margin/account") == 1
    assert fake.count("/sapi/v1/margin/tradeCoeff") == 0


async def test_a_retry_after_holds_every_account_on_the_ip(fake: FakeRest) -> None:
    """Binance counts weight per IP: after one account's 429/418 the other accounts' clients (one
    shared transport) wait for the same Retry-After instead of hammering on towards an IP ban."""
    fake.script(
        "/sapi/v1/margin/account", Reply(418, {"code": -1003, "msg": "banned"}, {"Retry-After": "600"})
    )
    first, second = await connect(fake), await connect(fake)
    try:
        assert first.caller.shared is not None and first.caller.shared is second.caller.shared
        with pytest.raises(RateLimited):
            await first.cross_account()
        with pytest.raises(RateLimited):
            await second.cross_bars()
    finally:
        await first.close()
        await second.close()
    assert fake.count("/sapi/v1/margin/tradeCoeff") == 0


async def test_interest_rate_reads_are_paced_per_ip(fake: FakeRest) -> None:
    """next-hourly-interest-rate weighs 100 of its 12,000 a minute per IP: past this IP's share a
    read is not sent and says so (None: the next snapshot asks again); the window's examples hold."""
    import doctest

    import monitor.exchange.rest as rest_module
    import monitor.rate_window

    assert doctest.testmod(monitor.rate_window).failed == 0
    rate = Reply(body=[{"asset": "USDT", "nextHourlyInterestRate": "0.0001"}])
    fake.script(
        "/sapi/v1/margin/next-hourly-interest-rate", *[rate] * (rest_module.RATES_READS_PER_MINUTE + 5)
    )
    clients = [await connect(fake) for _ in range(2)]
    try:
        answers = [
            await clients[n % 2].next_hourly_rates(["USDT"])
            for n in range(rest_module.RATES_READS_PER_MINUTE + 5)
        ]
    finally:
        for client in clients:
            await client.close()
    sent = fake.count("/sapi/v1/margin/next-hourly-interest-rate")
    assert sent == rest_module.RATES_READS_PER_MINUTE
    assert answers.count(None) == 5 and None not in answers[:sent]


async def test_clock_skew_resyncs_and_retries(fake: FakeRest) -> None:
    """-1021 resyncs the time offset from /api/v3/time and the retried call succeeds."""
    rest = await connect(fake)
    fake.clock_offset_ms = 30_000
    fake.script("/sapi/v1/margin/account", Reply(400, {"code": -1021, "msg": "Timestamp outside recvWindow"}))
    try:
        await rest.cross_account()
    finally:
        await rest.close()
    assert fake.count("/api/v3/time") == 2
    assert rest.caller.time_resyncs == 1
    assert 29_000 < rest.client.timestamp_offset < 31_000
    last = [s for s in fake.seen if s.path == "/sapi/v1/margin/account"][-1]
    assert int(last.query["timestamp"]) > time.time() * 1000 + 25_000


@pytest.mark.parametrize("code", [-2015, -2014, -1022])
async def test_rejected_key_is_fatal_at_once(fake: FakeRest, code: int) -> None:
    """-2015/-2014/-1022 raise KeyRejected after one request, naming the account but not the key."""
    fake.script(
        "/sapi/v1/margin/account", Reply(401, {"code": code, "msg": "Invalid API-key, IP, or permissions"})
    )
    rest = await connect(fake)
    try:
        with pytest.raises(KeyRejected) as caught:
            await rest.cross_account()
    finally:
        await rest.close()
    assert fake.count("/sapi/v1/margin/account") == 1
    message = str(caught.value)
    assert "'main'" in message and str(code) in message
    assert KEY not in message and SECRET not in message and "\n" not in message


async def test_client_error_is_not_retried(fake: FakeRest) -> None:
    """An ordinary 4xx (-1121 invalid symbol) raises ExchangeRequestError without retrying."""
    fake.script("/sapi/v1/margin/isolatedMarginTier", Reply(400, {"code": -1121, "msg": "Invalid symbol."}))
    rest = await connect(fake)
    try:
        with pytest.raises(ExchangeRequestError, match="-1121"):
            await rest.isolated_bars("NOPEUSDT")
    finally:
        await rest.close()
    assert fake.count("/sapi/v1/margin/isolatedMarginTier") == 1


async def test_unreachable_server_gives_up_with_one_line() -> None:
    """A refused connection is retried `attempts` times, then ExchangeUnavailable says why."""
    async with FakeRest().running() as server:
        rest = await connect(server)
    try:
        with pytest.raises(ExchangeUnavailable, match="gave up after 4 attempts") as caught:
            await rest.cross_account()
    finally:
        await rest.close()
    assert "\n" not in str(caught.value)


async def test_hostile_body_raises_data_error(fake: FakeRest) -> None:
    """A 200 whose body has the wrong shape raises ExchangeDataError naming the field."""
    fake.script(
        "/sapi/v1/margin/account",
        Reply(body={"marginLevel": "1e3", "userAssets": []}),
    )
    rest = await connect(fake)
    try:
        with pytest.raises(ExchangeDataError, match=r"margin/account\.marginLevel"):
            await rest.cross_account()
    finally:
        await rest.close()


async def test_isolated_pairs_are_fetched_five_per_call(fake: FakeRest) -> None:
    """Seven isolated symbols become two calls (5 + 2), each listing its symbols."""
    fake.defaults["/sapi/v1/margin/isolated/account"] = Reply(body={"assets": []})
    rest = await connect(fake)
    try:
        pairs = await rest.isolated_pairs([f"S{i}USDT" for i in range(7)])
    finally:
        await rest.close()
    assert pairs == []
    calls = [s.query["symbols"] for s in fake.seen if s.path == "/sapi/v1/margin/isolated/account"]
    assert [len(c.split(",")) for c in calls] == [5, 2]


async def test_listen_token_and_risk_key(fake: FakeRest) -> None:
    """Token creation sends isIsolated/symbol for a pair; the risk key is created and extended."""
    fake.defaults["/sapi/v1/userListenToken"] = Reply(
        body={"token": "tok-1", "expirationTime": 1_900_000_000_000}
    )
    fake.defaults["/sapi/v1/margin/listen-key"] = Reply(body={"listenKey": "risk-key-1"})
    rest = await connect(fake)
    try:
        token = await rest.create_listen_token("BTCUSDT")
        key = await rest.risk_listen_key()
        await rest.risk_keepalive(key)
    finally:
        await rest.close()
    assert token.token == "tok-1" and token.expires_at_ms == 1_900_000_000_000
    assert "tok-1" not in repr(token)
    posted = next(s for s in fake.seen if s.path == "/sapi/v1/userListenToken")
    assert posted.form["symbol"] == "BTCUSDT" and posted.form["isIsolated"] == "true"
    assert key == "risk-key-1"
    assert [s.method for s in fake.seen if s.path == "/sapi/v1/margin/listen-key"] == ["POST", "PUT"]


# -- against the simulator ---------------------------------------------------------------------


async def sim_rest(sim: Simulator, sleeps: Sleeps | None = None, limit: float = 2.0) -> BinanceRest:
    client = await make_client(
        "demo-key", "demo-secret", sim.base_url, sim.ws_api_url, request_timeout=limit, account="demo"
    )
    return BinanceRest(client, "demo", FAST, sleep=sleeps or Sleeps())


async def test_simulator_snapshot_reads(sim: Simulator) -> None:
    """Every typed read works against the simulator through the real AsyncClient."""
    rest = await sim_rest(sim)
    try:
        cross = await rest.cross_account()
        pairs = await rest.isolated_pairs(["BTCUSDT"])
        bars = await rest.cross_bars()
        pair_bars = await rest.isolated_bars("BTCUSDT", pairs[0])
        rates = await rest.next_hourly_rates(["USDT"])
        catalog = await rest.symbol_catalog()
        permissions = await rest.key_permissions()
    finally:
        await rest.close()
    assert cross.positions["USDT"].borrowed == Decimal(20000) and cross.positions["BTC"].free == Decimal(
        "1.2"
    )
    assert [p.symbol for p in pairs] == ["BTCUSDT"] and pairs[0].quote.borrowed == Decimal(9000)
    assert bars.liquidation_level < bars.normal_level
    assert pair_bars.liquidation_level < pair_bars.levels["margin_call"] < pair_bars.normal_level
    assert rates == {"USDT": Decimal("0.0001")}
    assert catalog["BTCUSDT"] == ("BTC", "USDT")
    assert permissions.read_only


async def test_simulator_5xx_window_then_recovery(sim: Simulator) -> None:
    """A 5xx window exhausts the retries with one clear line; once it ends, reads work again."""
    rest = await sim_rest(sim)
    try:
        await sim.inject_fault({"kind": "rest_5xx", "duration": 1000, "status": 503})
        with pytest.raises(ExchangeUnavailable, match="HTTP 503"):
            await rest.cross_account()
        await sim.clear_faults()
        assert (await rest.cross_account()).positions
    finally:
        await rest.close()


async def test_simulator_timeout_window(sim: Simulator) -> None:
    """Requests hanging in a timeout window are cut at the request timeout and retried until it ends."""
    rest = await sim_rest(sim, limit=0.2)
    try:
        await sim.inject_fault({"kind": "rest_timeout", "duration": 1000})
        with pytest.raises(ExchangeUnavailable, match="gave up after 4 attempts"):
            await rest.cross_account()
        await sim.clear_faults()
        assert (await rest.cross_account()).positions
    finally:
        await rest.close()


async def test_simulator_429_retry_after(sim: Simulator) -> None:
    """A 429 window answers Retry-After; the client waits that long (recorded) before trying again."""
    sleeps = Sleeps()
    rest = await sim_rest(sim, sleeps)

    async def end_window_on_sleep(seconds: float) -> None:
        sleeps.waits.append(seconds)
        await sim.clear_faults()

    rest.caller._sleep = end_window_on_sleep
    try:
        await sim.inject_fault({"kind": "rest_429", "duration": 30})
        assert (await rest.cross_account()).positions
    finally:
        await rest.close()
    assert len(sleeps.waits) == 1 and 25 <= sleeps.waits[0] <= 30


async def test_simulator_clock_skew_resync(sim: Simulator) -> None:
    """A local clock a minute behind gets -1021; the client resyncs from /api/v3/time and goes on."""
    rest = await sim_rest(sim)
    try:
        rest.client.timestamp_offset = -60_000
        assert (await rest.cross_account()).positions
        assert abs(rest.client.timestamp_offset) < 5_000 and rest.caller.time_resyncs == 1
    finally:
        await rest.close()


async def test_simulator_revoked_key(sim: Simulator) -> None:
    """A key revoked mid-run raises KeyRejected (-2015) at once, for that account only."""
    rest = await sim_rest(sim)
    try:
        await sim.inject_fault({"kind": "revoke_key", "account": "demo"})
        with pytest.raises(KeyRejected, match="-2015"):
            await rest.cross_account()
    finally:
        await rest.close()
