"""REST endpoints with Binance's paths, weights, security types, answers and error bodies.

Every request goes through: REST fault window (5xx / hang / 429) → key → weight (429 → 418 on
``/api``) → signature and timestamp (signed endpoints) → the endpoint. The retired listenKey
endpoints (``/sapi/v1/userDataStream[/isolated]``, ``/api/v3/userDataStream``) answer the way
Binance has since 2026-02-20: HTTP 410 with nginx's HTML "410 Gone" page (python-binance raises
``BinanceAPIException`` with status 410 and code 0). Unknown paths: 404 with an empty body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from monitor.sim import views
from monitor.sim.auth import ApiError, bad_key, check_key, check_signed, missing
from monitor.sim.engine import RequestRecord, SimExchange
from monitor.sim.levels import fmt
from monitor.sim.state import AccountState

Security = Literal["NONE", "MARKET_DATA", "USER_STREAM", "USER_DATA"]
GONE = (
    "<html>\r\n<head><title>410 Gone</title></head>\r\n<body>\r\n<center><h1>410 Gone</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
TIMEOUT_HANG_CAP = 120.0
DAY_MS = 86_400_000
_SERVER_ERRORS = {
    503: (-1008, "Server is currently overloaded with other requests. Please try again in a few minutes."),
    504: (
        -1007,
        "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
    ),
}


@dataclass(slots=True)
class Call:
    """One request as an endpoint sees it."""

    engine: SimExchange
    params: dict[str, str]
    account: AccountState | None
    method: str

    @property
    def acc(self) -> AccountState:
        """The caller's account (keyed endpoints only)."""
        assert self.account is not None
        return self.account

    def need(self, name: str) -> str:
        """A mandatory parameter (-1102 if absent)."""
        value = self.params.get(name)
        if not value:
            raise missing(name)
        return value

    def symbol(self, name: str = "symbol") -> str:
        """A mandatory simulated symbol (-1121 if unknown)."""
        value = self.need(name).upper()
        if value not in self.engine.state.prices:
            raise ApiError(400, -1121, "Invalid symbol.")
        return value


Handler = Callable[[Call], Any]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A route: method, path, Binance security type, weight, weight kind and handler."""

    method: str
    path: str
    security: Security
    weight: int
    handler: Handler
    uid: bool = False


def _ping(call: Call) -> Any:
    return {}


def _time(call: Call) -> Any:
    return {"serverTime": call.engine.now_ms()}


def _symbol_list(call: Call) -> list[str] | None:
    if "symbol" in call.params:
        return [call.symbol()]
    raw = call.params.get("symbols")
    if raw is None:
        return None
    try:
        names = orjson.loads(raw) if raw.startswith("[") else raw.split(",")
    except orjson.JSONDecodeError:
        raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
    found = [str(n).upper() for n in names]
    if not found or any(n not in call.engine.state.prices for n in found):
        raise ApiError(400, -1121, "Invalid symbol.")
    return found


def _exchange_info(call: Call) -> Any:
    engine = call.engine
    wanted = _symbol_list(call) or list(engine.state.prices)
    limits = engine.scenario.limits
    symbols = []
    for name in wanted:
        info = engine.scenario.symbol_info(name)
        symbols.append(
            {
                "symbol": name,
                "status": engine.scenario.symbol_status.get(name, "TRADING"),
                "baseAsset": info.base,
                "baseAssetPrecision": 8,
                "quoteAsset": info.quote,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True,
                "ocoAllowed": True,
                "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": True,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": "0.00000001",
                        "maxPrice": "1000000.00000000",
                        "tickSize": "0.00000001",
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": "0.00001000",
                        "maxQty": "9000.00000000",
                        "stepSize": "0.00001000",
                    },
                ],
                "permissions": [],
                "permissionSets": [["SPOT", "MARGIN"]],
            }
        )
    return {
        "timezone": "UTC",
        "serverTime": engine.now_ms(),
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": limits.api_weight_per_minute,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    }


def _ticker_price(call: Call) -> Any:
    prices = call.engine.state.prices
    if "symbol" in call.params:
        name = call.symbol()
        return {"symbol": name, "price": fmt(prices[name])}
    return [{"symbol": s, "price": fmt(prices[s])} for s in _symbol_list(call) or list(prices)]


def _margin_account(call: Call) -> Any:
    return views.cross_account(call.engine.state, call.engine.rest_view(call.acc))


def _isolated_account(call: Call) -> Any:
    symbols = [s.strip().upper() for s in call.params.get("symbols", "").split(",") if s.strip()] or None
    if symbols and len(symbols) > 5:
        raise ApiError(400, -1102, "Parameter 'symbols' can hold at most 5 symbols.")
    return views.isolated_account(call.engine.state, call.engine.rest_view(call.acc), symbols)


def _trade_coeff(call: Call) -> Any:
    bars = call.acc.spec.effective_bars
    return {
        "normalBar": f"{bars.normal:f}",
        "marginCallBar": f"{bars.margin_call:f}",
        "forceLiquidationBar": f"{bars.liquidation:f}",
    }


def _tiers(call: Call) -> Any:
    symbol = call.symbol()
    pair = call.acc.pairs.get(symbol)
    if pair is None:
        raise ApiError(400, -11001, "Isolated margin account does not exist.")
    rows = views.tiers(pair)
    tier = call.params.get("tier")
    return [r for r in rows if tier is None or str(r["tier"]) == tier]


def _next_rates(call: Call) -> Any:
    assets = [a.strip().upper() for a in call.need("assets").split(",") if a.strip()]
    isolated = call.need("isIsolated").upper()
    if isolated not in ("TRUE", "FALSE") or not assets:
        raise ApiError(400, -1130, "Data sent for parameter 'isIsolated' is not valid.")
    acc, scenario = call.acc, call.engine.scenario
    symbols = list(acc.pairs) if isolated == "TRUE" else []
    rows = []
    for asset in assets:
        rate = next(
            (
                scenario.hourly_rate(acc.spec, asset, s)
                for s in symbols
                if asset in acc.pairs[s].spec.interest_rates
            ),
            scenario.hourly_rate(acc.spec, asset),
        )
        rows.append({"asset": asset, "nextHourlyInterestRate": fmt(rate)})
    return rows


def _price_index(call: Call) -> Any:
    symbol = call.symbol()
    return {
        "calcTime": call.engine.now_ms(),
        "price": fmt(call.engine.state.prices[symbol]),
        "symbol": symbol,
    }


def _restrictions(call: Call) -> Any:
    return {**call.acc.spec.restrictions.model_dump(), "createTime": 1_700_000_000_000}


def _listen_token(call: Call) -> Any:
    engine, acc = call.engine, call.acc
    scope = None
    if call.params.get("isIsolated", "false").lower() == "true":
        scope = call.symbol()
        if scope not in acc.pairs:
            raise ApiError(400, -11001, "Isolated margin account does not exist.")
    default = int(engine.scenario.limits.listen_token_validity * 1000)
    try:
        validity = min(int(call.params.get("validity", default)), DAY_MS)
    except ValueError:
        raise ApiError(400, -1130, "Data sent for parameter 'validity' is not valid.") from None
    if validity <= 0:
        raise ApiError(400, -1130, "Data sent for parameter 'validity' is not valid.")
    token = engine.tokens.create(acc.name, scope, engine.now_ms() + validity)
    return {"token": token.token, "expirationTime": token.expires_ms}


def _listen_key(call: Call) -> Any:
    engine, acc = call.engine, call.acc
    if call.method == "POST":
        return {"listenKey": engine.listen_keys.open(acc.name, engine.now_ms()).key}
    key = engine.listen_keys.get(call.need("listenKey"), acc.name)
    if key is None:
        raise ApiError(400, -1125, "This listenKey does not exist.")
    if call.method == "PUT":
        key.expires_ms = engine.now_ms() + engine.listen_keys.validity_ms
    else:
        engine.listen_keys.close(key.key)
        engine.streams.expire_keys([key], engine.now_ms())
    return {}


ENDPOINTS = (
    Endpoint("GET", "/api/v3/ping", "NONE", 1, _ping),
    Endpoint("GET", "/api/v3/time", "NONE", 1, _time),
    Endpoint("GET", "/api/v3/exchangeInfo", "NONE", 20, _exchange_info),
    Endpoint("GET", "/api/v3/ticker/price", "NONE", 2, _ticker_price),
    Endpoint("GET", "/sapi/v1/margin/account", "USER_DATA", 10, _margin_account),
    Endpoint("GET", "/sapi/v1/margin/isolated/account", "USER_DATA", 10, _isolated_account),
    Endpoint("GET", "/sapi/v1/margin/tradeCoeff", "USER_DATA", 10, _trade_coeff),
    Endpoint("GET", "/sapi/v1/margin/isolatedMarginTier", "USER_DATA", 1, _tiers),
    Endpoint("GET", "/sapi/v1/margin/next-hourly-interest-rate", "USER_DATA", 100, _next_rates),
    Endpoint("GET", "/sapi/v1/margin/priceIndex", "MARKET_DATA", 10, _price_index),
    Endpoint("GET", "/sapi/v1/account/apiRestrictions", "USER_DATA", 1, _restrictions),
    Endpoint("POST", "/sapi/v1/userListenToken", "USER_STREAM", 1, _listen_token, uid=True),
    Endpoint("POST", "/sapi/v1/margin/listen-key", "USER_STREAM", 1, _listen_key, uid=True),
    Endpoint("PUT", "/sapi/v1/margin/listen-key", "USER_STREAM", 1, _listen_key, uid=True),
    Endpoint("DELETE", "/sapi/v1/margin/listen-key", "USER_STREAM", 1, _listen_key, uid=True),
)
RETIRED = ("/sapi/v1/userDataStream", "/sapi/v1/userDataStream/isolated", "/api/v3/userDataStream")


def _error_response(exc: ApiError, headers: dict[str, str]) -> web.Response:
    body = orjson.dumps({"code": exc.code, "msg": exc.msg})
    return web.Response(
        status=exc.status, body=body, content_type="application/json", headers={**headers, **exc.headers}
    )


async def _rest_fault(engine: SimExchange) -> None:
    window = engine.board.rest()
    if window is None:
        return
    fault = window.fault
    if fault.kind == "rest_timeout":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(window.done.wait(), TIMEOUT_HANG_CAP)
        return
    if fault.kind == "rest_429":
        retry = max(1, round(engine.real_seconds(window.end - engine.sim_time)))
        raise ApiError(
            429,
            -1003,
            "Too many requests; current limit is exceeded. Please use WebSocket Streams for live updates.",
            {"Retry-After": str(retry)},
        )
    code, msg = _SERVER_ERRORS.get(
        fault.status, (-1001, "Internal error; unable to process your request. Please try again.")
    )
    raise ApiError(fault.status, code, msg)


def _handler(engine: SimExchange, ep: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        headers: dict[str, str] = {}
        api_key = request.headers.get("X-MBX-APIKEY")
        status = 200
        try:
            await _rest_fault(engine)
            raw_body = await request.text() if request.can_read_body else ""
            params = {**dict(request.query), **dict(parse_qsl(raw_body, keep_blank_values=True))}
            account = None
            ip = request.remote or "127.0.0.1"
            if ep.path.startswith("/api/"):
                headers.update(engine.meter.charge_api(ip, ep.weight))
            if ep.security != "NONE":
                account = check_key(engine.state.by_key, api_key)
            if ep.path.startswith("/sapi/"):
                who = account.name if ep.uid and account is not None else ip
                headers.update(engine.meter.charge_sapi(who, ep.path, ep.weight, ep.uid))
            if account is not None and (ep.security == "USER_DATA" or "signature" in params):
                check_signed(account, params, request.rel_url.raw_query_string, raw_body, engine.now_ms())
                if not account.spec.restrictions.enableReading:
                    raise bad_key()
            result = ep.handler(Call(engine, params, account, request.method))
            return web.Response(body=orjson.dumps(result), content_type="application/json", headers=headers)
        except ApiError as exc:
            status = exc.status
            return _error_response(exc, headers)
        finally:
            engine.requests.append(RequestRecord(request.method, request.path, status, api_key))

    return handle


async def _gone(request: web.Request) -> web.StreamResponse:
    return web.Response(status=410, text=GONE, content_type="text/html")


async def _not_found(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404)


def add_routes(app: web.Application, engine: SimExchange) -> None:
    """Register every REST route (and the retired and catch-all ones) on ``app``."""
    for ep in ENDPOINTS:
        app.router.add_route(ep.method, ep.path, _handler(engine, ep))
    for path in RETIRED:
        app.router.add_route("*", path, _gone)
    app.router.add_route("*", "/api/{tail:.*}", _not_found)
    app.router.add_route("*", "/sapi/{tail:.*}", _not_found)
