"""The margin user-data stream: listen tokens over our own WebSocket API connection.

python-binance's ``margin_socket()`` loses its subscription when the WebSocket API connection drops
and never renews the token; this module owns the whole flow instead. One connection (a session)
carries the subscriptions of many accounts (cross, or one isolated pair each; Binance allows one per
account and 1,000 per session: ``monitor/exchange/userdata_pool.py`` spreads them over sessions):

1. ``POST /sapi/v1/userListenToken`` through each account's ``BinanceRest`` (isolated: ``symbol``
   and ``isIsolated=true``);
2. ``userDataStream.subscribe.listenToken`` → ``subscriptionId``; events arrive as
   ``{"subscriptionId": N, "event": {...}}`` and are routed to their account;
3. before ``expirationTime`` a new token is subscribed (Binance extends the subscription), then the
   old subscription is unsubscribed if the server gave a new id; the renewal comes at a random point
   of the hour before ``renew_before`` (:func:`renew_delay`), so tokens created together do not all
   renew in one burst a day later;
4. after a drop (any error, a normal close, silence) everything is resubscribed on a new
   connection; after ``eventStreamTerminated`` that one subscription is;
5. after every successful subscribe, ``on_reconnected(account, symbol)`` runs so the daemon
   re-reads the account by REST (events may have been missed while unsubscribed);
6. a ``serverShutdown`` notice moves to a new connection at once (then 4 and 5);
7. :meth:`UserDataStream.add` subscribes accounts loaded after start.

Silence: user-data streams are quiet when nothing happens, so a WebSocket ping probes the
connection every ``probe_interval`` (``probe``, its only pinger: the connection is opened without
websockets' keepalive; the event loop's one shared pinger, ``pinger.py``, sends the pings); a ping
unanswered for ``pong_timeout`` seconds, or no frame and no pong for ``silence`` seconds, is a
failure.
A rejected key (-2015...) stops that account's subscription (reported as a fatal ``StreamState``);
the other accounts carry on.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from websockets.asyncio.client import ClientConnection

from monitor.exchange import frames
from monitor.exchange.errors import ExchangeDataError, ExchangeError, FatalError, Reconnect
from monitor.exchange.events import ExchangeEvent, StreamState
from monitor.exchange.parse import ListenToken, expiration_ms
from monitor.exchange.pinger import release, shared_pinger
from monitor.exchange.ratelog import RateLimitedLog
from monitor.exchange.rest import BinanceRest
from monitor.exchange.streams import ConnectFactory, probed_connect
from monitor.exchange.supervisor import Backoff, Heartbeat, StateHook, Supervisor, describe

log = structlog.get_logger(__name__)

EventHook = Callable[[ExchangeEvent], None]
ReconcileHook = Callable[[str, str | None], Awaitable[None] | None]
INVALID_TOKEN = -1209
PONG_TIMEOUT = 20.0  # s a ping may wait for its pong (what websockets' keepalive allowed)


@dataclass(eq=False)
class UserSubscription:
    """One account (``symbol`` None) or one isolated pair of it, subscribed on the stream."""

    account: str
    rest: BinanceRest
    symbol: str | None = None
    token: ListenToken | None = field(default=None, repr=False)
    subscription_id: int | None = None
    up: bool = False
    failed: str = ""
    resubscribe: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def label(self) -> str:
        """``account`` or ``account:SYMBOL``, used in logs and stream names."""
        return self.account if self.symbol is None else f"{self.account}:{self.symbol}"


class SubscribeRefused(ExchangeError):
    """The WebSocket API answered a request with an error."""

    def __init__(self, method: str, code: int, message: str) -> None:
        self.code = code
        super().__init__(f"{method} refused: code {code}: {message}")


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error in a task group's exceptions (nested groups flattened)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


def hand_out(events: list[ExchangeEvent], hook: EventHook, failed: str, **fields: Any) -> None:
    """Each of ``events`` to ``hook``; one that raises is logged as ``failed`` (with ``fields`` and the
    error) and the others still go: a hook's bug never ends a stream (user data, risk)."""
    for event in events:
        try:
            hook(event)
        except Exception as exc:
            log.error(failed, **fields, error=describe(exc))


class Reconciles:
    """Calls a stream's ``on_reconnected`` hooks (user data, risk): a coroutine a hook returns runs in
    a task kept here until it ends; a hook that raises, at once or in its task, is logged as
    ``failed`` and is never the stream's failure."""

    def __init__(self, failed: str) -> None:
        self._failed = failed
        self._tasks: set[asyncio.Future[Any]] = set()

    def __call__(
        self, hook: ReconcileHook | None, account: str, symbol: str | None, /, **fields: Any
    ) -> None:
        if hook is None:
            return
        try:
            result = hook(account, symbol)
        except Exception as exc:
            log.error(self._failed, **fields, error=describe(exc))
            return
        if result is not None:
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(self._failed, error=describe(task.exception()))  # type: ignore[arg-type]


async def probe(
    ws: ClientConnection, heartbeat: Heartbeat, interval: float, pong_timeout: float = PONG_TIMEOUT
) -> None:
    """Ping every ``interval`` seconds: the connection's only pinger (it is opened by
    ``probed_connect``, without websockets' keepalive). Each pong is a heartbeat; a ping still
    unanswered ``pong_timeout`` seconds after it ends the session with ``Reconnect`` (no second ping
    meanwhile): with the defaults (20 s, 20 s) a dead connection goes ~20 s after its unanswered
    ping, as websockets' keepalive (``ping_timeout=20``) did. A failed ping (the connection closed)
    ends it with that error.

    The pinging is the loop's one shared pinger's (``monitor/exchange/pinger.py``): no timer or
    sleep per connection; this coroutine only registers with it and awaits the registration's
    ``dead`` future until the session ends (or is cancelled). The
    first ping comes after a random part of ``interval`` (never later than before), and the shared
    pinger sends at most one ping per loop turn: the connections opened together at start-up (or
    after a reconnect storm) used to ping in the same event-loop turn every ``interval``, ~50 pings
    back to back at 1,000 accounts: the 6-8 ms "loop busy" lag samples of ``bench/crash.py`` (their
    late span's composition: ``probe > sleep`` ×11-34)."""
    pinger = shared_pinger()
    registration = pinger.register(ws, heartbeat, interval, pong_timeout)
    try:
        await registration.item.dead
    finally:
        release(pinger, registration)


def renew_delay(remaining: float, renew_before: float, r: float) -> float:
    """Seconds until a listen token with ``remaining`` seconds of validity is renewed: at a random
    point (``r`` in [0, 1)) of a window that ends ``renew_before`` before it expires and is at most
    ``renew_before`` wide, never so early that less than ``renew_before`` of the token is used.
    A token with less than ``2 * renew_before`` left (one reused after a reconnect) is renewed
    between a quarter and half of its remaining time (``r`` again: tokens resubscribed together
    do not renew together either), at least 50 ms.

    Renewing exactly ``renew_before`` ahead renewed all the tokens created together (1,000
    accounts at start-up) in one burst once a day: a REST call and a subscribe each, in one loop
    turn. Spread over the window, they stay spread, since each renewal starts a new 24 hours.

    Worked example, 24 h tokens renewed an hour ahead: a fresh token (86,400 s left) with r = 0.5
    is renewed after 86,400 − 3,600 − 0.5 × 3,600 = 81,000 s (any r: after 79,200 s to 82,800 s);
    with 7,300 s left the window is only 100 s wide (3,600 s is used at least); with 600 s left and
    r = 0.5, after 600 × (1/2 − 0.5/4) = 225 s (any r: 150 s to 300 s).

    >>> renew_delay(86400.0, 3600.0, 0.5), renew_delay(86400.0, 3600.0, 0.0)
    (81000.0, 82800.0)
    >>> renew_delay(7300.0, 3600.0, 0.999), renew_delay(600.0, 3600.0, 0.5)
    (3600.1, 225.0)
    """
    if remaining > 2 * renew_before:
        window = min(renew_before, remaining - 2 * renew_before)
        return remaining - renew_before - r * window
    return max(remaining * (0.5 - r / 4), 0.05)


class UserDataStream:
    """Supervised user-data subscriptions of several accounts on one WebSocket API connection."""

    def __init__(
        self,
        ws_api_url: str,
        subscriptions: Sequence[UserSubscription],
        on_event: EventHook,
        *,
        on_reconnected: ReconcileHook | None = None,
        on_state: StateHook | None = None,
        name: str = "userdata",
        backoff: Backoff | None = None,
        silence: float = 60.0,
        probe_interval: float | None = None,
        pong_timeout: float = PONG_TIMEOUT,
        renew_before: float = 3600.0,
        request_timeout: float = 10.0,
        connect: ConnectFactory = probed_connect,
        wall_clock: Callable[[], float] = time.time,
        session: str | None = None,
        lifetime: int = 65_535,
        spread: Callable[[], float] = random.random,
    ) -> None:
        self._url = ws_api_url
        # Binance: "A single session can handle a maximum of 65,535 total subscriptions over its
        # lifetime ... must re-establish a new connection" (monitor/exchange/userdata_pool.py)
        self._lifetime = lifetime
        self._subscribes = 0  # subscribe requests sent on the current connection
        self.subscriptions = list(subscriptions)
        self._on_event = on_event
        self._on_reconnected = on_reconnected
        self._on_state = on_state
        self._name = name
        self._backoff = backoff or Backoff()
        self._probe_interval = probe_interval or silence / 3
        self._pong_timeout = pong_timeout
        self._renew_before = renew_before
        self._spread = spread  # r in [0, 1) for renew_delay: where in its window a token is renewed
        self._request_timeout = request_timeout
        self._connect = connect
        self._wall = wall_clock
        self._ws: ClientConnection | None = None
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._by_id: dict[int, UserSubscription] = {}
        self._retired: set[int] = set()  # ids we unsubscribed: their last frames are expected
        self._reconciles = Reconciles("userdata_reconcile_failed")
        self._group: asyncio.TaskGroup | None = None
        self._more = asyncio.Event()
        self._bad = RateLimitedLog("userdata_frame_skipped")
        self.events = 0
        self.supervisor = Supervisor(
            session or name, self._session, backoff=backoff, silence=silence, on_state=on_state
        )  # a session's own name (userdata-2…); its subscriptions' states stay "<name>:<label>"

    async def run(self) -> None:
        """Keep every subscription alive until cancelled."""
        await self.supervisor.run()

    def add(self, subscriptions: Sequence[UserSubscription]) -> None:
        """Subscribe more (an account loaded after start): on the running connection, else the next."""
        for sub in subscriptions:
            self.subscriptions.append(sub)
            if self._group is not None:
                self._group.create_task(self._keep(sub), name=f"{self._name}-{sub.label}")
        self._more.set()

    # -- connection -----------------------------------------------------------------------------

    async def _session(self, heartbeat: Heartbeat) -> str | None:
        active = [s for s in self.subscriptions if not s.failed]
        while not active:  # every key was rejected, or no account loaded yet: wait for one
            heartbeat.pause()
            self._more.clear()
            await self._more.wait()
            heartbeat.resume()
            active = [s for s in self.subscriptions if not s.failed]
        async with self._connect(self._url) as ws:
            self._ws = ws
            self._subscribes = 0
            self._by_id.clear()
            self._retired.clear()
            heartbeat.connected()
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group  # from here on add() starts its subscriptions itself
                    reader = group.create_task(self._read(ws, heartbeat))
                    group.create_task(probe(ws, heartbeat, self._probe_interval, self._pong_timeout))
                    for sub in [s for s in self.subscriptions if not s.failed]:  # incl. added meanwhile
                        group.create_task(self._keep(sub), name=f"{self._name}-{sub.label}")
                    await reader
                    raise Reconnect(
                        f"closed by server (code {ws.close_code}, {ws.close_reason or 'no reason'})"
                    )
            except BaseExceptionGroup as failed:
                raise first_error(failed) from None
            finally:
                self._group = None
        return None  # pragma: no cover - the task group always exits by raising

    async def _read(self, ws: ClientConnection, heartbeat: Heartbeat) -> None:
        try:
            async for raw in ws:
                heartbeat.beat()
                self._on_frame(raw)
        finally:
            self._ws = None
            for sub in self.subscriptions:
                self._set_up(sub, False, "connection lost")
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(Reconnect("connection lost"))
            self._waiting.clear()

    def _on_frame(self, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._bad(reason="invalid JSON")
            return
        if type(message) is not dict:
            self._bad(reason="not an object")
            return
        if "id" in message and ("status" in message or "result" in message or "error" in message):
            waiter = self._waiting.pop(message["id"], None) if type(message["id"]) is int else None
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            return
        sub_id = message.get("subscriptionId")
        sub = self._by_id.get(sub_id) if type(sub_id) is int else None
        event = message.get("event")
        if type(event) is dict and event.get("e") == "serverShutdown":
            # the server is about to go away: move to a new connection now; the resubscribe that
            # follows re-reads every account by REST, so nothing sent meanwhile is missed
            log.info("userdata_server_shutdown", at=event.get("E"))
            raise Reconnect("server announced shutdown (serverShutdown)")
        if sub is None and type(sub_id) is int and sub_id in self._retired:  # (a list id is unhashable)
            return
        if sub is None or type(event) is not dict:
            self._bad(reason="event for an unknown subscription")
            return
        kind = event.get("e")
        if kind == "eventStreamTerminated":
            log.warning("userdata_terminated", subscription=sub.label)
            self._set_up(sub, False, "eventStreamTerminated")
            self._by_id.pop(message["subscriptionId"], None)
            sub.token = None
            sub.resubscribe.set()
            return
        try:
            events = frames.user_events(sub.account, sub.symbol, event)
        except ExchangeDataError as exc:
            self._bad(reason=str(exc), subscription=sub.label)
            self._reconcile(sub)  # a skipped balance change: re-read the account
            return
        self.events += len(events)
        hand_out(events, self._on_event, "userdata_hook_failed", subscription=sub.label)

    async def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws
        if ws is None:
            raise Reconnect("not connected")
        self._next_id += 1
        request_id = self._next_id
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        await ws.send(orjson.dumps({"id": request_id, "method": method, "params": params}).decode())
        try:
            async with asyncio.timeout(self._request_timeout):
                reply: dict[str, Any] = await waiter
        except TimeoutError:
            raise Reconnect(f"{method}: no reply within {self._request_timeout:g} s") from None
        finally:
            self._waiting.pop(request_id, None)
        if reply.get("status") != 200:
            error = reply.get("error")
            details: dict[str, Any] = error if type(error) is dict else {}
            code = details.get("code")
            raise SubscribeRefused(
                method, code if type(code) is int else 0, str(details.get("msg", ""))[:120]
            )
        return reply

    # -- one subscription -----------------------------------------------------------------------

    async def _keep(self, sub: UserSubscription) -> None:
        """Subscribe, renew before expiry, resubscribe on termination; for as long as the connection."""
        attempt = 0
        while True:
            try:
                await self._subscribe(sub)
                attempt = 0
                sub.resubscribe.clear()
                async with asyncio.timeout(self._renew_delay(sub)):
                    await sub.resubscribe.wait()
                continue  # terminated: subscribe again at once
            except TimeoutError:
                continue  # time to renew: the loop subscribes with a new token
            except FatalError as exc:
                sub.failed = describe(exc)
                self._set_up(sub, False, sub.failed, fatal=True)
                log.error("userdata_subscription_stopped", subscription=sub.label, reason=sub.failed)
                return
            except Reconnect:
                raise
            except ExchangeError as exc:
                if isinstance(exc, SubscribeRefused) and exc.code == INVALID_TOKEN:
                    sub.token = None
                delay = self._backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "userdata_subscribe_retry", subscription=sub.label, reason=describe(exc), delay=delay
                )
                if self._by_id.get(sub.subscription_id) is not sub:  # type: ignore[arg-type]
                    self._set_up(sub, False, describe(exc))
                await asyncio.sleep(delay)

    def _renew_delay(self, sub: UserSubscription) -> float:
        assert sub.token is not None
        remaining = sub.token.expires_at_ms / 1000 - self._wall()
        return renew_delay(remaining, self._renew_before, self._spread())

    async def _subscribe(self, sub: UserSubscription) -> None:
        active = self._by_id.get(sub.subscription_id) is sub  # type: ignore[arg-type]
        was_up = sub.up
        token = sub.token
        if token is None or active or token.expires_at_ms / 1000 - self._wall() < self._renew_before / 2:
            token = await sub.rest.create_listen_token(sub.symbol)
        if self._subscribes >= self._lifetime:
            raise Reconnect(f"{self._lifetime} subscriptions on this session: a new one is needed")
        self._subscribes += 1
        reply = await self._request("userDataStream.subscribe.listenToken", {"listenToken": token.token})
        result = reply.get("result")
        new_id = result.get("subscriptionId") if type(result) is dict else None
        if type(new_id) is not int:
            raise ExchangeDataError("userDataStream.subscribe.listenToken: expected result.subscriptionId")
        if type(result) is dict and "expirationTime" in result:
            token = ListenToken(
                token.token, expiration_ms(result["expirationTime"], "subscribe.expirationTime")
            )
        old = sub.subscription_id if active else None
        sub.token = token
        sub.subscription_id = new_id
        self._by_id[new_id] = sub
        if old is not None and old != new_id:
            self._by_id.pop(old, None)
            self._retired.add(old)
            try:
                await self._request("userDataStream.unsubscribe", {"subscriptionId": old})
            except SubscribeRefused as exc:
                log.info("userdata_unsubscribe_refused", subscription=sub.label, reason=str(exc))
        self._set_up(sub, True, "renewed" if active else "subscribed")
        log.info("userdata_subscribed", subscription=sub.label, id=new_id, renewed=active)
        if not was_up:
            self._reconcile(sub)

    # -- hooks ----------------------------------------------------------------------------------

    def _set_up(self, sub: UserSubscription, up: bool, reason: str, *, fatal: bool = False) -> None:
        changed = sub.up != up
        sub.up = up
        if (changed or fatal) and self._on_state is not None:
            try:
                self._on_state(StreamState(f"{self._name}:{sub.label}", up, reason, fatal))
            except Exception as exc:
                log.error("userdata_state_hook_failed", error=describe(exc))

    def _reconcile(self, sub: UserSubscription) -> None:
        self._reconciles(self._on_reconnected, sub.account, sub.symbol, subscription=sub.label)
