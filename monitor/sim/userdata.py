"""User data: listenTokens and the WebSocket API (``/ws-api/v3``), and Risk Data Stream listen keys.

WebSocket API methods served: ``userDataStream.subscribe.listenToken`` (reply ``{"subscriptionId",
"expirationTime"}``, expiration in µs as in Binance's example; -1209 for a bad or expired token),
``userDataStream.unsubscribe`` (one ``subscriptionId`` or all), ``ping``, ``time``. Subscribing
again on the same connection for the same account extends the existing subscription (same id).
Binance's limits per connection are enforced (developers.binance.com, WebSocket API "User Data
Stream subscription": "only one active subscription for a given account on a given connection";
"up to 1,000 active subscriptions" per session, "a maximum of 65,535 total subscriptions over its
lifetime"): a second subscription of the same account (another scope: its cross and its isolated
pairs are one account), a 1,001st active one or a 65,536th in all is refused with status 400 and
:data:`LIMIT_CODE` (Binance documents that "an error" results, not its code or text; the message
quotes the limit). Lower :attr:`ApiHub.active_limit` / ``lifetime_limit`` in a test to reach them.
Events arrive as ``{"subscriptionId": N, "event": {...}}``; when a subscription's token expires
(or is expired by a fault) the server sends ``eventStreamTerminated`` and drops it. Answers use the
WS-API envelope ``{"id", "status", "result" | "error", "rateLimits"}``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web

from monitor.sim.faults import FaultBoard
from monitor.sim.scenario import Scenario
from monitor.sim.wsconn import Connection

log = structlog.get_logger(__name__)
ACTIVE_LIMIT = 1_000  # active subscriptions per connection
LIFETIME_LIMIT = 65_535  # subscriptions over a connection's lifetime
LIMIT_CODE = -1000  # Binance gives no code for these refusals: -1000 is its generic "UNKNOWN"


@dataclass(slots=True)
class Token:
    """A listenToken for one account's cross account (scope None) or isolated pair."""

    token: str
    account: str
    scope: str | None
    expires_ms: int


class TokenBook:
    """Issued listenTokens."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}

    def create(self, account: str, scope: str | None, expires_ms: int) -> Token:
        """A new token valid until ``expires_ms``."""
        token = Token(secrets.token_urlsafe(48), account, scope, expires_ms)
        self._tokens[token.token] = token
        return token

    def valid(self, token: str, now_ms: int) -> Token | None:
        """The token if it exists and has not expired."""
        found = self._tokens.get(token)
        return found if found is not None and found.expires_ms > now_ms else None

    def expire(self, now_ms: int, account: str | None = None) -> None:
        """Expire every token (of ``account``) now."""
        for token in self._tokens.values():
            if account is None or token.account == account:
                token.expires_ms = min(token.expires_ms, now_ms)


@dataclass(slots=True)
class ListenKey:
    """A Risk Data Stream listen key (cross margin)."""

    key: str
    account: str
    expires_ms: int


class ListenKeyBook:
    """Risk Data Stream listen keys: one active key per account, valid for ``validity_ms``."""

    def __init__(self, validity_ms: int) -> None:
        self.validity_ms = validity_ms
        self._keys: dict[str, ListenKey] = {}

    def open(self, account: str, now_ms: int) -> ListenKey:
        """The account's active key (extended), or a new one."""
        for key in self._keys.values():
            if key.account == account:
                key.expires_ms = now_ms + self.validity_ms
                return key
        key = ListenKey(secrets.token_urlsafe(48), account, now_ms + self.validity_ms)
        self._keys[key.key] = key
        return key

    def get(self, key: str, account: str | None = None) -> ListenKey | None:
        """An active key (of ``account`` when given)."""
        found = self._keys.get(key)
        return found if found is not None and (account is None or found.account == account) else None

    def close(self, key: str) -> None:
        """Invalidate a key."""
        self._keys.pop(key, None)

    def pop_expired(self, now_ms: int) -> list[ListenKey]:
        """Remove and return the keys past their validity."""
        gone = [k for k in self._keys.values() if k.expires_ms <= now_ms]
        for key in gone:
            del self._keys[key.key]
        return gone


@dataclass(slots=True)
class Subscription:
    """A user-data subscription on one WS-API connection."""

    id: int
    account: str
    scope: str | None
    expires_ms: int


@dataclass(eq=False)
class ApiConnection:
    """A WS-API connection and its subscriptions."""

    conn: Connection
    subs: dict[int, Subscription] = field(default_factory=dict)
    next_id: int = 0
    weight: int = 0
    total: int = 0  # subscriptions started on this connection, ever


class ApiHub:
    """Every WS-API connection; routes user-data events to matching subscriptions."""

    def __init__(
        self, scenario: Scenario, board: FaultBoard, tokens: TokenBook, now_ms: Callable[[], int]
    ) -> None:
        self._scenario = scenario
        self._board = board
        self._tokens = tokens
        self._now_ms = now_ms
        self.connections: set[ApiConnection] = set()
        self.active_limit = ACTIVE_LIMIT
        self.lifetime_limit = LIFETIME_LIMIT
        self.refused = 0  # subscriptions refused for a limit (tests)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /ws-api/v3``: the WebSocket API."""
        opts = self._scenario.streams
        conn = Connection(
            request, "ws_api", self._board, ping_interval=opts.ping_interval, pong_timeout=opts.pong_timeout
        )
        api = ApiConnection(conn)
        self.connections.add(api)
        try:
            return await conn.run(lambda text: self._on_text(api, text))
        finally:
            self.connections.discard(api)

    def subscriptions(self, account: str | None = None) -> list[Subscription]:
        """Active subscriptions (of ``account``) across connections."""
        return [
            s for a in self.connections for s in a.subs.values() if account is None or s.account == account
        ]

    def deliver(self, account: str, scope: str | None, payload: dict[str, Any]) -> None:
        """Send an event to every subscription of ``account``/``scope``."""
        for api in self.connections:
            for sub in api.subs.values():
                if sub.account == account and sub.scope == scope:
                    api.conn.send({"subscriptionId": sub.id, "event": payload}, scope)

    def cut(self, now_ms: int, account: str | None = None) -> None:
        """End the subscriptions (of ``account``) now, as if their token had expired."""
        for sub in self.subscriptions(account):
            sub.expires_ms = min(sub.expires_ms, now_ms)
        self.expire(now_ms)

    def expire(self, now_ms: int) -> None:
        """Terminate the subscriptions whose token has expired."""
        for api in self.connections:
            for sub in [s for s in api.subs.values() if s.expires_ms <= now_ms]:
                del api.subs[sub.id]
                log.info("sim_subscription_expired", account=sub.account, subscription=sub.id)
                event = {"e": "eventStreamTerminated", "E": now_ms}
                api.conn.send({"subscriptionId": sub.id, "event": event})

    def _reply(self, api: ApiConnection, req_id: Any, status: int, body: dict[str, Any]) -> None:
        limit = self._scenario.limits.api_weight_per_minute
        rate = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limit}]
        api.conn.send(
            {"id": req_id, "status": status, **body, "rateLimits": [{**rate[0], "count": api.weight}]}
        )

    def _error(self, api: ApiConnection, req_id: Any, code: int, msg: str, status: int = 400) -> None:
        self._reply(api, req_id, status, {"error": {"code": code, "msg": msg}})

    async def _on_text(self, api: ApiConnection, text: str) -> None:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error(api, None, -1000, "Invalid JSON request.")
            return
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            self._error(
                api, request.get("id") if isinstance(request, dict) else None, -1000, "Invalid request."
            )
            return
        req_id, method = request.get("id"), request["method"]
        params = request.get("params") or {}
        if not isinstance(params, dict):
            self._error(api, req_id, -1000, "Invalid request: params must be an object.")
            return
        api.weight += 2
        now = self._now_ms()
        if method == "userDataStream.subscribe.listenToken":
            self._subscribe(api, req_id, params, now)
        elif method == "userDataStream.unsubscribe":
            self._unsubscribe(api, req_id, params, now)
        elif method == "ping":
            self._reply(api, req_id, 200, {"result": {}})
        elif method == "time":
            self._reply(api, req_id, 200, {"result": {"serverTime": now}})
        else:
            self._error(api, req_id, -1020, "This operation is not supported.")

    def _subscribe(self, api: ApiConnection, req_id: Any, params: dict[str, Any], now: int) -> None:
        raw = params.get("listenToken")
        if not isinstance(raw, str) or not raw:
            self._error(
                api,
                req_id,
                -1102,
                "Mandatory parameter 'listenToken' was not sent, was empty/null, or malformed.",
            )
            return
        token = self._tokens.valid(raw, now)
        if token is None:
            self._error(api, req_id, -1209, "Invalid listenToken.")
            return
        sub = next(
            (s for s in api.subs.values() if (s.account, s.scope) == (token.account, token.scope)), None
        )
        if sub is None:
            refusal = self._limit(api, token.account)
            if refusal:
                self.refused += 1
                log.info("sim_subscription_refused", account=token.account, scope=token.scope, why=refusal)
                self._error(api, req_id, LIMIT_CODE, refusal)
                return
            api.total += 1
            sub = Subscription(api.next_id, token.account, token.scope, token.expires_ms)
            api.subs[sub.id] = sub
            api.next_id += 1
        sub.expires_ms = max(sub.expires_ms, token.expires_ms)
        log.info("sim_subscribed", account=sub.account, scope=sub.scope, subscription=sub.id)
        self._reply(
            api, req_id, 200, {"result": {"subscriptionId": sub.id, "expirationTime": sub.expires_ms * 1000}}
        )

    def _limit(self, api: ApiConnection, account: str) -> str:
        """Why a new subscription of ``account`` may not start on ``api`` ("" when it may)."""
        if any(s.account == account for s in api.subs.values()):
            return "You can have only one active subscription for a given account on a given connection."
        if len(api.subs) >= self.active_limit:
            return f"A single session supports up to {self.active_limit} active subscriptions."
        if api.total >= self.lifetime_limit:
            return (
                f"A single session can handle a maximum of {self.lifetime_limit} total subscriptions over "
                "its lifetime: establish a new connection."
            )
        return ""

    def _unsubscribe(self, api: ApiConnection, req_id: Any, params: dict[str, Any], now: int) -> None:
        wanted = params.get("subscriptionId")
        if wanted is None:
            ids = list(api.subs)
        elif isinstance(wanted, int) and wanted in api.subs:
            ids = [wanted]
        else:
            self._error(api, req_id, -1130, "Data sent for parameter 'subscriptionId' is not valid.")
            return
        self._reply(api, req_id, 200, {"result": {}})
        for sub_id in ids:
            del api.subs[sub_id]
            api.conn.send({"subscriptionId": sub_id, "event": {"e": "eventStreamTerminated", "E": now}})
