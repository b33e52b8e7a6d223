"""The simulator's REST API through the real python-binance ``AsyncClient`` and raw aiohttp."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from binance.exceptions import BinanceAPIException
from conftest import DEMO_KEY, DEMO_SECRET, ClientFactory, client_class, open_client

from monitor.sim import Simulator, parse_scenario, run_simulator, sign


async def test_async_client_reads_cross_margin_account(client: Any) -> None:
    """The real AsyncClient reads the demo cross account with Binance's field names and levels."""
    account = await client.get_margin_account()
    assets = {a["asset"]: a for a in account["userAssets"]}
    assert assets["USDT"] == {
        "asset": "USDT",
        "borrowed": "20000.00000000",
        "free": "500.00000000",
        "interest": "3.10000000",
        "locked": "0.00000000",
        "netAsset": "-19503.10000000",
    }
    expected = (Decimal("1.2") * 30000 + 500) / (Decimal("20003.1"))
    assert Decimal(account["marginLevel"]) == expected.quantize(Decimal("0.00000001"))
    assert account["accountType"] == "MARGIN_1"
    assert Decimal(account["totalAssetOfBtc"]) == (Decimal(36500) / 30000).quantize(Decimal("0.00000001"))


async def test_async_client_reads_isolated_accounts_all_and_filtered(client: Any) -> None:
    """Isolated pairs come back in full (with totals) and filtered by ``symbols=`` (assets only)."""
    everything = await client.get_isolated_margin_account()
    assert [a["symbol"] for a in everything["assets"]] == ["BTCUSDT"]
    assert "totalAssetOfBtc" in everything
    filtered = await client.get_isolated_margin_account(symbols="BTCUSDT,ETHUSDT")
    assert set(filtered) == {"assets"}
    pair = filtered["assets"][0]
    level = (Decimal("0.5") * 30000 + 100) / Decimal("9000.4")
    assert Decimal(pair["marginLevel"]) == level.quantize(Decimal("0.00000001"))
    assert pair["marginLevelStatus"] == "EXCESSIVE"
    liq = (Decimal("1.05") * Decimal("9000.4") - 100) / Decimal("0.5")
    assert Decimal(pair["liquidatePrice"]) == liq.quantize(Decimal("0.00000001"))


async def test_bars_tiers_rates_index_and_restrictions(client: Any) -> None:
    """tradeCoeff, tiers, next hourly rates, price index and key restrictions answer as Binance does."""
    assert await client.margin_v1_get_margin_trade_coeff() == {
        "normalBar": "1.5",
        "marginCallBar": "1.3",
        "forceLiquidationBar": "1.1",
    }
    tiers = await client.get_isolated_margin_tier_data(symbol="BTCUSDT")
    assert tiers[0]["liquidationRiskRatio"] == "1.05" and tiers[0]["tier"] == 1
    rates = await client.get_future_hourly_interest_rate(assets="USDT,BTC", isIsolated="FALSE")
    assert rates == [
        {"asset": "USDT", "nextHourlyInterestRate": "0.00010000"},
        {"asset": "BTC", "nextHourlyInterestRate": "0.00000000"},
    ]
    index = await client.get_margin_price_index(symbol="BTCUSDT")
    assert index["price"] == "30000.00000000"
    restrictions = await client.get_account_api_permissions()
    assert restrictions["enableReading"] is True and restrictions["enableMargin"] is False


async def test_unknown_key_is_rejected_with_2015(binance_client: ClientFactory) -> None:
    """A key the exchange does not know gets -2015."""
    client = await binance_client("no-such-key", "whatever")
    with pytest.raises(BinanceAPIException) as err:
        await client.get_margin_account()
    assert err.value.code == -2015


async def test_wrong_secret_is_rejected_with_1022(binance_client: ClientFactory) -> None:
    """A request signed with the wrong secret gets -1022."""
    client = await binance_client(DEMO_KEY, "wrong-secret")
    with pytest.raises(BinanceAPIException) as err:
        await client.get_margin_account()
    assert err.value.code == -1022


async def test_skewed_client_clock_is_rejected_with_1021(client: Any) -> None:
    """Timestamps behind by more than recvWindow, or over 1 s ahead, get -1021."""
    client.timestamp_offset = -20_000
    with pytest.raises(BinanceAPIException) as behind:
        await client.get_margin_account()
    client.timestamp_offset = 5_000
    with pytest.raises(BinanceAPIException) as ahead:
        await client.get_margin_account()
    assert (behind.value.code, ahead.value.code) == (-1021, -1021)
    assert "recvWindow" in behind.value.message and "ahead" in ahead.value.message


async def test_skewed_server_clock_is_rejected_after_create(scenario_data: dict[str, Any]) -> None:
    """A client whose offset went stale while the server clock moved 30 s gets -1021."""
    offset = [0.0]
    scenario = parse_scenario(scenario_data)
    async with run_simulator(scenario, realtime=False, clock=lambda: time.time() + offset[0]) as sim:
        client = await open_client(sim)
        try:
            await client.get_margin_account()
            offset[0] = 30.0
            with pytest.raises(BinanceAPIException) as err:
                await client.get_margin_account()
            assert err.value.code == -1021
        finally:
            await client.close_connection()


async def test_missing_parameter_and_invalid_symbol(client: Any) -> None:
    """A missing mandatory parameter gets -1102, an unknown symbol -1121."""
    with pytest.raises(BinanceAPIException) as missing:
        await client.get_future_hourly_interest_rate(assets="USDT")
    with pytest.raises(BinanceAPIException) as invalid:
        await client.get_margin_price_index(symbol="DOGEUSDT")
    assert (missing.value.code, invalid.value.code) == (-1102, -1121)


async def test_ticker_prices_and_exchange_info_follow_the_timeline(sim: Simulator, client: Any) -> None:
    """Ticker prices move with the scenario's price path; exchangeInfo lists the simulated symbols."""
    await sim.advance(4)
    ticker = await client.get_symbol_ticker(symbol="BTCUSDT")
    assert ticker == {"symbol": "BTCUSDT", "price": "28000.00000000"}
    info = await client.get_exchange_info()
    assert {s["symbol"]: s["baseAsset"] for s in info["symbols"]} == {"BTCUSDT": "BTC", "ETHUSDT": "ETH"}


async def test_weight_headers_on_api_and_sapi(sim: Simulator) -> None:
    """Responses carry X-MBX-USED-WEIGHT-1M (/api) and X-SAPI-USED-IP-WEIGHT-1M (/sapi)."""
    async with aiohttp.ClientSession() as http:
        for expected in ("1", "2"):
            async with http.get(f"{sim.base_url}/api/v3/ping") as resp:
                assert resp.headers["X-MBX-USED-WEIGHT-1M"] == expected
        url = f"{sim.base_url}/sapi/v1/margin/priceIndex?symbol=BTCUSDT"
        async with http.get(url, headers={"X-MBX-APIKEY": DEMO_KEY}) as resp:
            assert resp.status == 200 and resp.headers["X-SAPI-USED-IP-WEIGHT-1M"] == "10"


async def test_rate_limit_429_with_retry_after_then_418(scenario_data: dict[str, Any]) -> None:
    """Past the weight limit the client gets 429 with Retry-After, and 418 when it keeps going."""
    scenario_data["limits"] = {"api_weight_per_minute": 5, "ban_seconds": 30}
    frozen = 1_800_000_000.0  # a fixed wall clock: no minute boundary can reset the count mid-test
    async with run_simulator(parse_scenario(scenario_data), realtime=False, clock=lambda: frozen) as sim:
        client = client_class(sim)(DEMO_KEY, DEMO_SECRET)
        try:
            for _ in range(5):
                await client.ping()
            with pytest.raises(BinanceAPIException) as limited:
                await client.ping()
            assert (limited.value.status_code, limited.value.code) == (429, -1003)
            assert limited.value.response.headers["Retry-After"] == "60"
            with pytest.raises(BinanceAPIException) as banned:
                await client.ping()
            assert banned.value.status_code == 418
            assert banned.value.response.headers["Retry-After"] == "30"
        finally:
            await client.close_connection()


async def test_raw_signature_check_matches_binance_rule(sim: Simulator) -> None:
    """A hand-signed request (HMAC of query string + body) is accepted; a tampered one is not."""
    ts = int(time.time() * 1000)
    query = f"timestamp={ts}&recvWindow=5000"
    signature = sign(DEMO_SECRET, query)
    async with aiohttp.ClientSession(headers={"X-MBX-APIKEY": DEMO_KEY}) as http:
        url = f"{sim.base_url}/sapi/v1/margin/tradeCoeff?{query}&signature={signature}"
        async with http.get(url) as ok:
            assert ok.status == 200
        tampered = (
            f"{sim.base_url}/sapi/v1/margin/tradeCoeff?timestamp={ts}&recvWindow=6000&signature={signature}"
        )
        async with http.get(tampered) as bad:
            assert bad.status == 400 and (await bad.json())["code"] == -1022
        async with http.get(f"{sim.base_url}/sapi/v1/margin/tradeCoeff?{query}") as unsigned:
            assert (await unsigned.json())["code"] == -1102


async def test_retired_user_data_stream_answers_410(client: Any) -> None:
    """The retired margin listenKey endpoint answers 410 Gone like Binance (HTML body, code 0)."""
    with pytest.raises(BinanceAPIException) as err:
        await client._request_margin_api("post", "userDataStream", signed=False, data={})
    assert err.value.status_code == 410 and err.value.code == 0


async def test_listen_token_and_risk_listen_key_endpoints(client: Any) -> None:
    """userListenToken returns a token; margin/listen-key POST/PUT/DELETE manage one key."""
    token = await client.margin_create_listen_token()
    assert token["token"] and token["expirationTime"] > time.time() * 1000 + 86_000_000
    isolated = await client.margin_create_listen_token(symbol="BTCUSDT", is_isolated=True)
    assert isolated["token"] != token["token"]
    with pytest.raises(BinanceAPIException) as no_pair:
        await client.margin_create_listen_token(symbol="ETHUSDT", is_isolated=True)
    assert no_pair.value.code == -11001
    key = (await client._request_margin_api("post", "margin/listen-key", signed=False, data={}))["listenKey"]
    again = await client._request_margin_api("post", "margin/listen-key", signed=False, data={})
    assert again["listenKey"] == key
    data = {"listenKey": key}
    assert await client._request_margin_api("put", "margin/listen-key", signed=False, data=dict(data)) == {}
    assert (
        await client._request_margin_api("delete", "margin/listen-key", signed=False, data=dict(data)) == {}
    )
    with pytest.raises(BinanceAPIException) as gone:
        await client._request_margin_api("put", "margin/listen-key", signed=False, data=dict(data))
    assert gone.value.code == -1125


async def test_rest_state_matches_events_after_borrow_and_repay(sim: Simulator, client: Any) -> None:
    """After a borrow and a repay, REST shows exactly the balances the events imply (interest first)."""
    await sim.apply_event({"type": "borrow", "account": "demo", "asset": "USDT", "amount": "1000"})
    await sim.apply_event({"type": "repay", "account": "demo", "asset": "USDT", "amount": "103.2"})
    assets = {a["asset"]: a for a in (await client.get_margin_account())["userAssets"]}
    # borrow: free 1500, borrowed 21000, interest 3.1 + 0.1 (first hour at 0.0001)
    # repay 103.2: the 3.2 of interest first, then 100 of principal
    assert (assets["USDT"]["free"], assets["USDT"]["borrowed"], assets["USDT"]["interest"]) == (
        "1396.80000000",
        "20900.00000000",
        "0.00000000",
    )


async def test_revoked_read_permission_gets_2015(scenario_data: dict[str, Any]) -> None:
    """A key without enableReading is refused (-2015) on USER_DATA endpoints."""
    scenario_data["accounts"][1]["restrictions"] = {"enableReading": False}
    async with run_simulator(parse_scenario(scenario_data), realtime=False) as sim:
        client = await open_client(sim, "other-key", "other-secret")
        try:
            with pytest.raises(BinanceAPIException) as err:
                await client.get_margin_account()
            assert err.value.code == -2015
        finally:
            await client.close_connection()


async def test_sapi_endpoint_limit_answers_429_without_ban(scenario_data: dict[str, Any]) -> None:
    """A /sapi endpoint past its own IP budget answers 429 with Retry-After, never 418."""
    scenario_data["limits"] = {"sapi_ip_weight_per_minute": 150}
    frozen = 1_800_000_000.0
    async with run_simulator(parse_scenario(scenario_data), realtime=False, clock=lambda: frozen) as sim:
        client = client_class(sim)(DEMO_KEY, DEMO_SECRET)
        client.timestamp_offset = int(frozen * 1000) - int(time.time() * 1000)
        try:
            await client.get_future_hourly_interest_rate(assets="USDT", isIsolated="FALSE")
            for _ in range(2):
                with pytest.raises(BinanceAPIException) as err:
                    await client.get_future_hourly_interest_rate(assets="USDT", isIsolated="FALSE")
                assert err.value.status_code == 429 and err.value.response.headers["Retry-After"] == "60"
            assert (await client.get_margin_account())[
                "accountType"
            ] == "MARGIN_1"  # other endpoints unaffected
        finally:
            await client.close_connection()


async def test_handle_rejects_events_for_unknown_accounts_and_pairs(sim: Simulator) -> None:
    """The fixture handle refuses events naming an unknown account or pair, before touching the books."""
    with pytest.raises(ValueError, match="unknown account"):
        await sim.apply_event({"type": "deposit", "account": "ghost", "asset": "USDT", "amount": "1"})
    with pytest.raises(ValueError, match="no isolated pair ETHUSDT"):
        await sim.apply_event(
            {"type": "deposit", "account": "demo", "asset": "ETH", "amount": "1", "symbol": "ETHUSDT"}
        )


async def test_isolated_tiers_for_a_3x_pair(scenario_data: dict[str, Any]) -> None:
    """A 3x pair's generated tiers stay at 2x or more: no division by zero, no HTTP 500."""
    scenario_data["accounts"][0]["isolated"][0]["leverage"] = 3
    async with run_simulator(parse_scenario(scenario_data, source="<test>"), realtime=False) as sim3:
        client = await open_client(sim3)
        try:
            rows = await client.get_isolated_margin_tier_data(symbol="BTCUSDT")
        finally:
            await client.close_connection()
    assert [r["tier"] for r in rows] == [1, 2, 3]
    assert all(Decimal(r["effectiveMultiple"]) >= 2 for r in rows)
