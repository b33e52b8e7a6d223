"""Binance REST through python-binance's ``AsyncClient``: URLs, retries, typed results.

``make_client`` builds an ``AsyncClient`` whose URLs point anywhere (``https://api.binance.com``, a
proxy, or the simulator on 127.0.0.1) and syncs the time offset like ``AsyncClient.create``.
``BinanceRest`` wraps it: every call goes through one retry policy —

- 5xx, timeouts, refused or reset connections, unreadable bodies: jittered backoff, then
  ``ExchangeUnavailable`` after ``attempts`` tries;
- 429 / 418 (and -1003): wait ``Retry-After`` (shared by every client on the same REST URL: the
  limit is the IP's), or raise
  ``RateLimited`` when the wait is longer than ``max_wait``;
- -1021 (timestamp outside recvWindow): resync the offset from ``GET /api/v3/time`` and retry;
- -2015 / -2014 / -1022: ``KeyRejected`` at once (fatal: the daemon says so and goes on with the
  other accounts); any other 4xx: ``ExchangeRequestError``.

and returns typed values from ``monitor.exchange.parse`` (Decimal at the boundary).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.machinery
import importlib.util
import sys
import time
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import aiohttp
import structlog

import monitor.requests_lean  # noqa: F401  # before python-binance: requests without charset_normalizer


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module imported at the top of python-binance's modules and used
    only inside functions this daemon never calls: ``dateparser`` (with ``regex``, ~4 MiB of RSS) and
    ``pytz``, for ``binance.helpers.date_to_milliseconds`` (kline date strings). The first read of an
    attribute it lacks imports the real module, which replaces it, and hands its attributes on (so a
    call that needs it works as before). ``importlib.util.LazyLoader`` cannot do this on Python 3.11:
    ``import name`` reads ``__spec__``, which loads it."""

    def __init__(self, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(spec.name)
        self.__spec__ = spec

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def _defer(name: str) -> None:
    if name not in sys.modules and (spec := importlib.util.find_spec(name)) is not None:
        sys.modules[name] = _Deferred(spec)


for _name in ("dateparser", "pytz"):
    _defer(_name)

import binance.base_client as _base_client  # noqa: E402
from binance import AsyncClient  # noqa: E402
from binance.exceptions import BinanceAPIException, BinanceRequestException  # noqa: E402

from monitor.exchange import parse  # noqa: E402
from monitor.exchange.errors import (  # noqa: E402
    ExchangeRequestError,
    ExchangeUnavailable,
    KeyRejected,
    RateLimited,
)
from monitor.exchange.supervisor import Backoff, describe  # noqa: E402
from monitor.rate_window import SlidingWindow  # noqa: E402
from monitor.risk.margin import Bars  # noqa: E402

log = structlog.get_logger(__name__)

DEFAULT_REST_URL = "https://api.binance.com"
DEFAULT_WS_API_URL = "wss://ws-api.binance.com:443/ws-api/v3"
DEFAULT_STREAM_URL = "wss://stream.binance.com:9443"
DEFAULT_RISK_STREAM_URL = "wss://margin-stream.binance.com"

KEY_REJECTED_CODES = frozenset({-2015, -2014, -1022})
CLOCK_SKEW_CODE = -1021
TOO_MANY_REQUESTS_CODE = -1003
ISOLATED_SYMBOLS_PER_CALL = 5


REST_CONNECTIONS = 100  # at most this many HTTP connections at once to the REST URL, for all accounts
# s an idle pooled connection is kept for reuse (aiohttp's default: 15 s). aiohttp (3.14) reuses the
# longest-idle connection first, so the key checks (one every 0.25 s at 1,000 accounts) go round the
# whole pool: start-up's burst leaves up to REST_CONNECTIONS open, one round takes up to 25 s, and
# with 15 s the ~40 the checks had not reached yet expired together: aiohttp's cleanup timer closed
# them in one loop turn (~41 ``connection_lost`` callbacks, ~1.5 ms of the loop's CPU), and a check
# finding its connection expired opened a new one (a TLS handshake on Binance). Longer than a round:
# none expires while the checks run; a connection the server closed meanwhile is not reused, and
# aiohttp resends an idempotent request once when a reused connection turns out closed.
REST_KEEPALIVE = 60.0
TIME_SYNC_REUSE = 60.0  # s: a client made this soon after a ping + time read takes its offset


class KeyedSession:
    """One account's view of the shared ``ClientSession``: what python-binance calls on
    ``client.session`` (``get`` / ``post`` / ``put`` / ``delete``, ``close``), each request sent with
    the account's headers (its API key) merged under the request's own, as a session of its own
    would have. Closing it closes nothing: the shared session closes with its last client."""

    __slots__ = ("_headers", "_session")

    def __init__(self, session: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        self._session = session
        self._headers = headers

    def _request(self, method: str, url: Any, *, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self._session.request(method, url, headers={**self._headers, **(headers or {})}, **kwargs)

    def get(self, url: Any, **kwargs: Any) -> Any:
        return self._request("GET", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> Any:
        return self._request("POST", url, **kwargs)

    def put(self, url: Any, **kwargs: Any) -> Any:
        return self._request("PUT", url, **kwargs)

    def delete(self, url: Any, **kwargs: Any) -> Any:
        return self._request("DELETE", url, **kwargs)

    async def close(self) -> None:
        """Nothing of its own to close."""

    @property
    def closed(self) -> bool:
        return self._session.closed


# GET /sapi/v1/margin/next-hourly-interest-rate weighs 100 against its own 12,000 a minute per IP
# (Binance's CAAS rate-limit page; shared/reference/binance-margin-api.md §5): 120 reads a minute at
# most. We take half, leaving room for anything else on the IP; a cold start of 1,000 accounts gets
# every rate within ~17 minutes instead of ~880 HTTP 429s (and an IP ban if ignored).
RATES_READS_PER_MINUTE = 60


class SharedTransport:
    """What every account's client on one REST URL shares, in one event loop: one aiohttp
    ``ClientSession`` on one connector (a pool of at most ``REST_CONNECTIONS`` keep-alive
    connections; no cookies: Binance's REST API uses none), each client seeing it through a
    :class:`KeyedSession` that adds its key header; and the server's time offset from one ping +
    ``GET /api/v3/time`` (the same for every key: neither is signed).

    Before, each of 1,000 accounts had its own session, cookie jar, connector and keep-alive
    connection (~8-10 MiB in all), a cold start opened 1,000 TCP (TLS, on Binance) connections, and
    made 2,000 ping and time requests. The session is closed when the last client using it closes."""

    _open: ClassVar[dict[tuple[asyncio.AbstractEventLoop, str], SharedTransport]] = {}

    def __init__(self, key: tuple[asyncio.AbstractEventLoop, str]) -> None:
        self.key = key
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=REST_CONNECTIONS, keepalive_timeout=REST_KEEPALIVE),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self.users = 0
        self.offset_ms: int | None = None
        self.synced_at = 0.0
        self._sync: asyncio.Task[int] | None = None
        self.blocked_until = 0.0  # a 429/418 Retry-After holds every client on this IP, not only its own
        self.rates_window = SlidingWindow(RATES_READS_PER_MINUTE, 60.0)  # heavy reads, paced per IP

    @classmethod
    def acquire(cls, rest_url: str) -> SharedTransport:
        """The transport of ``rest_url`` in the running loop (made at its first user), one user more."""
        key = (asyncio.get_running_loop(), rest_url)
        shared = cls._open.get(key)
        if shared is None:
            shared = cls._open[key] = cls(key)
        shared.users += 1
        return shared

    async def release(self) -> None:
        """One user less; the last one closes the session and its connector."""
        self.users -= 1
        if self.users <= 0 and self._open.get(self.key) is self:
            del self._open[self.key]
            await self.session.close()

    async def offset(self, caller: RestCaller) -> int:
        """The server's time offset (ms), read through ``caller`` (ping, then time, each under its
        retry policy) unless read less than ``TIME_SYNC_REUSE`` s ago. Clients asking while a read
        is under way wait for that one; when it fails, each of them raises what it raised."""
        if self.offset_ms is not None and time.monotonic() - self.synced_at < TIME_SYNC_REUSE:
            return self.offset_ms
        if self._sync is None or self._sync.done():
            self._sync = asyncio.ensure_future(self._read(caller))
        return await asyncio.shield(self._sync)

    async def _read(self, caller: RestCaller) -> int:
        await caller.call("ping", caller.client.ping)
        await caller.call("time", caller.sync_time)
        self.offset_ms = int(caller.client.timestamp_offset)
        self.synced_at = time.monotonic()
        return self.offset_ms


def _no_websocket_api(**_: Any) -> None:
    """Stands in for python-binance's ``WebsocketAPI`` while a client of :func:`client_class` is made."""
    return None


@functools.cache
def client_class(rest_url: str, ws_api_url: str, timeout: float) -> Any:
    """An ``AsyncClient`` subclass with literal URLs (python-binance formats only ``{}`` templates);
    one class per set of URLs, shared by every account's client (a class each cost ~1 KiB). Made
    with ``session_params={"shared": SharedTransport}``, its session is a :class:`KeyedSession` on
    the shared one, let go of by ``close_connection``; it keeps no WebSocket-API clients."""
    base = rest_url.rstrip("/")

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # python-binance makes two WebSocket-API clients per client (spot and futures, each with an
        # asyncio.Queue: ~7.7 KiB, 7.5 MiB at 1,000 accounts) that this daemon never connects: its
        # user-data streams are monitor.exchange.userdata's. Not made at all (making and dropping
        # them was ~70 ms of start-up's CPU at 1,000 accounts), None so that a use fails loudly. The
        # name is swapped only while this constructor runs (synchronously: no other client sees it).
        made = _base_client.WebsocketAPI
        _base_client.WebsocketAPI = _no_websocket_api
        try:
            AsyncClient.__init__(self, *args, **kwargs)
        finally:
            _base_client.WebsocketAPI = made
        self.ws_api = self.ws_future = None

    def _init_session(self: Any) -> Any:
        shared: SharedTransport | None = self._session_params.get("shared")
        if shared is None:
            return AsyncClient._init_session(self)
        return KeyedSession(shared.session, self._get_headers())

    async def close_connection(self: Any) -> None:
        try:
            await AsyncClient.close_connection(self)
        finally:
            shared = self._session_params.pop("shared", None)
            if shared is not None:
                await shared.release()

    attributes = {
        "API_URL": f"{base}/api",
        "MARGIN_API_URL": f"{base}/sapi",
        "WS_API_URL": ws_api_url,
        "REQUEST_TIMEOUT": timeout,
        "__init__": __init__,
        "_init_session": _init_session,
        "close_connection": close_connection,
    }
    return type("MonitorAsyncClient", (AsyncClient,), attributes)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one REST call tries before giving up."""

    attempts: int = 5
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=30.0))
    max_wait: float = 120.0  # the longest Retry-After one call sleeps through
    quiet: bool = False  # retries logged at info, not warning (the caller says what is wrong once)


def _retry_after(exc: BinanceAPIException) -> float | None:
    headers = getattr(exc.response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 10**7 else None


def transport_cause(exc: BaseException) -> str:
    """``dns``, ``refused``, ``timeout`` or ``network`` for a failure below HTTP."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)
    if dns_error is not None and isinstance(exc, dns_error):
        return "dns"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return "refused"
        if isinstance(os_error, OSError) and "name" in str(os_error).lower():
            return "dns"  # "Name or service not known", "Temporary failure in name resolution"
    return "network"


class RestCaller:
    """The retry loop shared by every call on one client; keeps the Retry-After block."""

    def __init__(
        self,
        client: Any,
        account: str,
        policy: RetryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.account = account
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self.blocked_until = 0.0
        session_params = getattr(client, "_session_params", None)
        self.shared: SharedTransport | None = (
            session_params.get("shared") if isinstance(session_params, dict) else None
        )
        self.retries = 0
        self.time_resyncs = 0

    async def call(self, operation: str, request: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``request`` under the retry policy; see the module docstring."""
        policy = self.policy
        last = "no attempt"
        cause = ""
        resync = False
        for attempt in range(policy.attempts):
            shared_block = self.shared.blocked_until if self.shared is not None else 0.0
            wait = max(self.blocked_until, shared_block) - self._clock()
            if wait > 0:
                if wait > policy.max_wait:
                    raise RateLimited(operation, wait)
                await self._sleep(wait)
            delay = policy.backoff.delay(attempt)
            try:
                if resync:
                    await self.sync_time()
                    resync = False
                return await request()
            except BinanceAPIException as exc:
                code = int(exc.code or 0)
                status = int(exc.status_code)
                message = str(exc.message or "")[:200]
                if code in KEY_REJECTED_CODES:
                    log.error("rest_key_rejected", account=self.account, operation=operation, code=code)
                    raise KeyRejected(self.account, code, message) from None
                if code == CLOCK_SKEW_CODE:
                    resync, delay = True, 0.0
                    last, cause = f"clock skew (code {code})", "clock_skew"
                elif status in (429, 418) or code == TOO_MANY_REQUESTS_CODE:
                    delay = _retry_after(exc) or delay
                    self.blocked_until = self._clock() + delay
                    if self.shared is not None:  # the limit is the IP's: every account waits
                        self.shared.blocked_until = max(self.shared.blocked_until, self.blocked_until)
                    last, cause = f"rate limited (HTTP {status}), Retry-After {delay:g} s", "rate_limited"
                    if delay > policy.max_wait:
                        log.error("rest_rate_limited", account=self.account, operation=operation, wait=delay)
                        raise RateLimited(operation, delay) from None
                    delay = 0.0  # the block above makes the next attempt wait
                elif status >= 500:
                    last, cause = f"HTTP {status}: {message}", "server_error"
                else:
                    raise ExchangeRequestError(operation, status, code, message) from None
            except (TimeoutError, aiohttp.ClientError, BinanceRequestException) as exc:
                last = describe(exc) if str(exc) else f"{type(exc).__name__} (timeout or connection)"
                cause = transport_cause(exc)
            finally:
                # python-binance keeps each client's last response (headers, parser, buffers: ~5 KiB;
                # 5 MiB for 1,000 accounts) and never reads it again; an error carries its own
                if getattr(self.client, "response", None) is not None:
                    self.client.response = None
            self.retries += 1
            (log.info if policy.quiet else log.warning)(
                "rest_retry",
                account=self.account,
                operation=operation,
                reason=last,
                attempt=attempt + 1,
                delay=round(delay, 3),
            )
            if delay > 0 and attempt + 1 < policy.attempts:
                await self._sleep(delay)
        raise ExchangeUnavailable(f"{operation}: gave up after {policy.attempts} attempts: {last}", cause)

    async def sync_time(self) -> None:
        """Set the client's timestamp offset from ``GET /api/v3/time`` (no retry of its own)."""
        reply = await self.client.get_server_time()
        server_ms = parse.server_time(reply)
        self.client.timestamp_offset = server_ms - int(time.time() * 1000)
        self.time_resyncs += 1
        log.info("rest_time_synced", account=self.account, offset_ms=self.client.timestamp_offset)


async def make_client(
    api_key: str | None,
    api_secret: str | None,
    rest_url: str = DEFAULT_REST_URL,
    ws_api_url: str = DEFAULT_WS_API_URL,
    *,
    request_timeout: float = 10.0,
    policy: RetryPolicy | None = None,
    account: str = "",
) -> Any:
    """An ``AsyncClient`` on these URLs, pinged and time-synced (``AsyncClient.create`` with retries;
    the ping and time read are shared by the clients made at once, see :class:`SharedTransport`).

    Call inside the running loop (the aiohttp session is made in the constructor). On failure the
    session is closed and the error raised (``KeyRejected``, ``ExchangeUnavailable``...).
    """
    shared = SharedTransport.acquire(rest_url)
    try:
        client = client_class(rest_url, ws_api_url, request_timeout)(
            api_key, api_secret, session_params={"shared": shared}
        )
    except BaseException:
        await shared.release()
        raise
    caller = RestCaller(client, account, policy)
    try:
        client.timestamp_offset = await shared.offset(caller)
    except BaseException:
        await client.close_connection()
        raise
    return client


class BinanceRest:
    """Typed REST reads for one account's key; every call retried per ``RetryPolicy``."""

    def __init__(
        self,
        client: Any,
        account: str,
        policy: RetryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.account = account
        self.caller = RestCaller(client, account, policy, clock=clock, sleep=sleep)

    @classmethod
    async def connect(
        cls,
        account: str,
        api_key: str | None,
        api_secret: str | None,
        rest_url: str = DEFAULT_REST_URL,
        ws_api_url: str = DEFAULT_WS_API_URL,
        *,
        request_timeout: float = 10.0,
        policy: RetryPolicy | None = None,
    ) -> BinanceRest:
        """``make_client`` and wrap it."""
        client = await make_client(
            api_key,
            api_secret,
            rest_url,
            ws_api_url,
            request_timeout=request_timeout,
            policy=policy,
            account=account,
        )
        return cls(client, account, policy)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.client.close_connection()

    def __repr__(self) -> str:
        return f"BinanceRest(account={self.account!r})"

    async def _get(self, operation: str, request: Callable[[], Awaitable[Any]]) -> Any:
        return await self.caller.call(operation, request)

    async def cross_account(self) -> parse.CrossAccount:
        """``GET /sapi/v1/margin/account``."""
        body = await self._get("margin/account", self.client.get_margin_account)
        return parse.cross_account(body)

    async def isolated_pairs(self, symbols: Sequence[str] | None = None) -> list[parse.IsolatedPair]:
        """``GET /sapi/v1/margin/isolated/account`` (all pairs, or ``symbols`` 5 per call)."""
        if not symbols:
            body = await self._get("margin/isolated/account", self.client.get_isolated_margin_account)
            return parse.isolated_account(body)
        pairs: list[parse.IsolatedPair] = []
        wanted = sorted({s.upper() for s in symbols})
        for i in range(0, len(wanted), ISOLATED_SYMBOLS_PER_CALL):
            chunk = ",".join(wanted[i : i + ISOLATED_SYMBOLS_PER_CALL])

            async def request(chunk: str = chunk) -> Any:
                return await self.client.get_isolated_margin_account(symbols=chunk)

            pairs.extend(parse.isolated_account(await self._get("margin/isolated/account", request)))
        return pairs

    async def cross_bars(self) -> Bars:
        """``GET /sapi/v1/margin/tradeCoeff`` → normal / margin_call / liquidation bars."""
        body = await self._get("margin/tradeCoeff", self.client.margin_v1_get_margin_trade_coeff)
        return parse.trade_coeff(body)

    async def isolated_bars(self, symbol: str, pair: parse.IsolatedPair | None = None) -> Bars:
        """``GET /sapi/v1/margin/isolatedMarginTier`` → the pair's bars (see ``parse.isolated_tiers``).

        Pass the pair's snapshot to pick the tier its current borrowing falls in (tier 1 otherwise).
        """

        async def request() -> Any:
            return await self.client.get_isolated_margin_tier_data(symbol=symbol.upper())

        body = await self._get("margin/isolatedMarginTier", request)
        if pair is None:
            return parse.isolated_tiers(symbol.upper(), body)
        return parse.isolated_tiers(symbol.upper(), body, pair.base.borrowed, pair.quote.borrowed)

    async def next_hourly_rates(
        self, assets: Sequence[str], *, isolated: bool = False
    ) -> dict[str, Decimal] | None:
        """``GET /sapi/v1/margin/next-hourly-interest-rate`` → {asset: hourly rate}; None, without a
        request, when this IP's share of the endpoint's budget is spent this minute
        (:data:`RATES_READS_PER_MINUTE`): ask again at the next snapshot."""
        if not assets:
            return {}
        shared = self.caller.shared
        if shared is not None and not shared.rates_window.admit(time.monotonic()):
            return None

        async def request() -> Any:
            return await self.client.get_future_hourly_interest_rate(
                assets=",".join(sorted({a.upper() for a in assets})),
                isIsolated="TRUE" if isolated else "FALSE",
            )

        return parse.hourly_rates(await self._get("margin/next-hourly-interest-rate", request))

    async def symbol_catalog(self) -> dict[str, tuple[str, str]]:
        """``GET /api/v3/exchangeInfo`` → {symbol: (base, quote)} of trading symbols."""
        return parse.symbol_catalog(await self._get("exchangeInfo", self.client.get_exchange_info))

    async def symbol_listings(self) -> dict[str, tuple[str, str, str]]:
        """``GET /api/v3/exchangeInfo`` → {symbol: (base, quote, status)} of every listed symbol."""
        return parse.symbol_listings(await self._get("exchangeInfo", self.client.get_exchange_info))

    async def key_permissions(self) -> parse.KeyPermissions:
        """``GET /sapi/v1/account/apiRestrictions`` → what this key may do."""
        body = await self._get("account/apiRestrictions", self.client.get_account_api_permissions)
        return parse.api_restrictions(body)

    async def create_listen_token(self, symbol: str | None = None) -> parse.ListenToken:
        """``POST /sapi/v1/userListenToken`` (isolated: ``symbol`` and ``isIsolated=true``)."""

        async def request() -> Any:
            if symbol is None:
                return await self.client.margin_create_listen_token()
            return await self.client.margin_create_listen_token(symbol=symbol.upper(), is_isolated=True)

        return parse.listen_token(await self._get("userListenToken", request))

    async def risk_listen_key(self) -> str:
        """``POST /sapi/v1/margin/listen-key`` → a Risk Data Stream key (valid 60 min)."""

        async def request() -> Any:
            return await self.client._request_margin_api("post", "margin/listen-key", signed=False, data={})

        return parse.listen_key(await self._get("margin/listen-key", request))

    async def risk_keepalive(self, listen_key: str) -> None:
        """``PUT /sapi/v1/margin/listen-key`` extends the key by 60 min."""

        async def request() -> Any:
            return await self.client._request_margin_api(
                "put", "margin/listen-key", signed=False, data={"listenKey": listen_key}
            )

        await self._get("margin/listen-key keepalive", request)

    async def risk_close(self, listen_key: str) -> None:
        """``DELETE /sapi/v1/margin/listen-key``."""

        async def request() -> Any:
            return await self.client._request_margin_api(
                "delete", "margin/listen-key", signed=False, data={"listenKey": listen_key}
            )

        await self._get("margin/listen-key close", request)
