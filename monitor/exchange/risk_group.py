"""The cross-margin Risk Data Stream: liability and margin-status changes, several accounts a connection.

``POST /sapi/v1/margin/listen-key`` gives each account a key valid 60 minutes. Binance documents a
listen key as a stream, and a connection as able to follow several streams: ``{url}/ws/<key>`` for
one, ``{url}/stream?streams=<key1>/<key2>/...`` for several, each message then wrapped as
``{"stream": <key>, "data": <event>}`` (``shared/reference``). :class:`RiskGroup` is one supervised
connection following the keys of up to :data:`KEYS_PER_CONNECTION` accounts (its *members*); it
routes ``USER_LIABILITY_CHANGE`` (borrow, repay, interest) and ``MARGIN_LEVEL_STATUS_CHANGE`` to the
member whose key named them.

Why several accounts a connection: at 1,000 accounts, one connection each was 1,000 handshakes
against Binance's 300 connection attempts per 5 minutes per IP (after a network break, most
accounts waited minutes for Binance's own word to come back), 1,000 pings every 20 s, and each
connection's parser state made again with every message: most of what the daemon's full garbage
collections walked (``bench/gen2_census.py``, issue #12).

That several *accounts'* keys share one connection is not confirmed by Binance in words for the
margin stream. So a connection following more than one key asks the server which streams it follows
(``LIST_SUBSCRIPTIONS``, the streams' documented request) and goes on only if every key is listed
within :data:`VERIFY_TIMEOUT`; anything else (an error, keys missing, no answer, or :data:`REFUSALS`
shared connections in a row that the server refused at the handshake with an HTTP 4xx or closed with
a close frame before confirming) ends the group with :class:`CombinedRefused`, and
``monitor.app.risk_groups`` gives each account a connection of its own from then on (the documented
``/ws/<key>`` form), saying so once in the log.

Each member's key is extended by ``PUT`` every ``keepalive`` seconds (30 min; the first one at a
random point of the second half, ``first_extension``, so that keys made together do not extend
together); a keepalive refused with -1125 (invalid listen key) or a ``listenKeyExpired`` event for a
key gives that member a new key, and the connection is made again with it; a keepalive failing
otherwise is retried in :data:`KEEPALIVE_RETRY` s (the key has half an hour left). A close, silence,
a ``serverShutdown`` notice or a ping unanswered for ``pong_timeout`` s (``probe`` pings every
``probe_interval``; the connection has no websockets keepalive) reconnect the group. After each
(re)connection every member's ``on_reconnected(account, None)`` lets the daemon re-read that
account by REST.

One account's trouble is its own: a member whose key cannot be had (its REST failing) is reported
down with the reason while the others connect; it is retried with backoff, and the connection is
made again once its key comes. A key revoked (``KeyRejected``) removes that member and tells its
``on_rejected``; a member without ``on_rejected`` (``monitor/exchange/risk_stream.py``'s
``RiskStream``, one account) ends the stream with it instead. Each member's up/down is told to its
own ``on_state`` as ``StreamState("risk:<account>", ...)``, as when every account had a connection
of its own.

Isolated accounts are not served by Binance's risk stream.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from monitor.exchange import frames
from monitor.exchange.errors import (
    ExchangeDataError,
    ExchangeRequestError,
    FatalError,
    KeyRejected,
    Reconnect,
)
from monitor.exchange.events import StreamState
from monitor.exchange.ratelog import RateLimitedLog
from monitor.exchange.rest import BinanceRest
from monitor.exchange.streams import ConnectFactory, probed_connect
from monitor.exchange.supervisor import Backoff, Heartbeat, StateHook, Supervisor, describe, tell_state
from monitor.exchange.userdata import (
    PONG_TIMEOUT,
    EventHook,
    ReconcileHook,
    Reconciles,
    first_error,
    hand_out,
    probe,
)

log = structlog.get_logger(__name__)

INVALID_LISTEN_KEY = -1125
KEY_LIFETIME = 3600.0
KEYS_PER_CONNECTION = 20  # ~1,300 characters of URL (listen keys are 60): under the usual 2,000
VERIFY_TIMEOUT = 10.0  # s for the server to list a combined connection's streams
KEEPALIVE_RETRY = 60.0  # s after a keepalive failed for another reason than -1125
JOIN_DELAY = 0.5  # s: accounts joining a connected group within this are taken in one reconnect
KEY_RETRY = Backoff(initial=1.0, maximum=60.0)  # a member whose key could not be had, retried
REFUSALS = 3  # shared connections in a row the server ended or refused before confirming: not shared

_request_ids = itertools.count(1)


class CombinedRefused(FatalError):
    """The server did not confirm following several listen keys on one connection."""


def first_extension(keepalive: float, renewed: float, now: float, r: float) -> float:
    """Seconds to the first keepalive of a connection: at a random point (``r`` in [0, 1)) of the
    second half of ``keepalive``, and never later than ``keepalive`` after the key was last
    renewed (at ``renewed``; a reconnect may reuse a key renewed a while ago).

    Every stream extending exactly ``keepalive`` after it connected sent all the PUTs of streams
    connected together (1,000 at start-up, 250 a budget window) in one burst every 30 minutes; a
    random first wait spreads them, and the fixed interval after it keeps them spread. A key
    extended at least every ``keepalive`` (30 min) never reaches its 60 minutes.

    Worked example, keepalive 1800 s: a fresh key (renewed now) with r = 0.5 waits 1350 s
    (between 900 and 1800 s for any r); a key renewed 1500 s ago waits at most 300 s.

    >>> first_extension(1800.0, 0.0, 0.0, 0.5), first_extension(1800.0, 0.0, 1500.0, 0.5)
    (1350.0, 300.0)
    >>> first_extension(1800.0, 0.0, 2000.0, 0.9)  # overdue: at once
    0.0
    """
    spread = keepalive * (0.5 + 0.5 * r)
    return max(0.0, min(spread, renewed + keepalive - now))


def combined_confirmed(answer: Any, keys: list[str]) -> str:
    """Why a ``LIST_SUBSCRIPTIONS`` answer does not confirm that a connection follows ``keys``
    ("" when it does). Compared without case: a server that lowercases stream names (it does so for
    market streams) still names each key; two distinct keys never differ only in case.

    >>> combined_confirmed({"result": ["Ab1", "cd2"], "id": 1}, ["ab1", "CD2"])
    ''
    >>> combined_confirmed({"result": ["ab1"], "id": 1}, ["ab1", "cd2"])
    'the server follows 1 of 2 listen keys'
    >>> combined_confirmed({"error": {"code": 2, "msg": "Invalid request"}, "id": 1}, ["ab1", "cd2"])
    "the server refused LIST_SUBSCRIPTIONS: {'code': 2, 'msg': 'Invalid request'}"
    """
    result = answer.get("result") if type(answer) is dict else None
    if type(result) is not list:
        error = answer.get("error") if type(answer) is dict else answer
        return f"the server refused LIST_SUBSCRIPTIONS: {error}"
    listed = {name.casefold() for name in result if type(name) is str}
    followed = sum(1 for key in keys if key.casefold() in listed)
    return "" if followed == len(keys) else f"the server follows {followed} of {len(keys)} listen keys"


class Member:
    """One cross account on a :class:`RiskGroup`'s connection: its REST client (for its own key),
    its hooks, and its key's state."""

    __slots__ = (
        "account", "announced", "due", "group", "key", "on_event", "on_reconnected", "on_rejected",
        "on_state", "renewed", "rest", "trouble",
    )  # fmt: skip

    def __init__(
        self,
        account: str,
        rest: BinanceRest,
        on_event: EventHook,
        *,
        on_reconnected: ReconcileHook | None = None,
        on_state: StateHook | None = None,
        on_rejected: Callable[[KeyRejected], None] | None = None,
    ) -> None:
        self.account = account
        self.rest = rest
        self.on_event = on_event
        self.on_reconnected = on_reconnected
        self.on_state = on_state
        self.on_rejected = on_rejected
        self.key: str | None = None
        self.renewed = 0.0  # clock of the key's last POST or PUT
        self.due = 0.0  # clock of its next keepalive (set when a connection follows it)
        self.trouble = ""  # why it has no key now ("" when none was refused)
        self.announced: bool | None = None  # the last up/down told to on_state
        self.group: RiskGroup | None = None  # the connection following it


class RiskGroup:
    """One supervised Risk Data Stream connection for the keys of several accounts; see the module
    docstring. ``name`` names the connection (the connection budget, the supervisor's log); each
    member's state is told as ``risk:<account>``."""

    def __init__(
        self,
        risk_stream_url: str,
        name: str,
        *,
        keepalive: float = 1800.0,
        backoff: Backoff | None = None,
        silence: float = 60.0,
        probe_interval: float | None = None,
        pong_timeout: float = PONG_TIMEOUT,
        verify_timeout: float = VERIFY_TIMEOUT,
        key_retry: Backoff = KEY_RETRY,
        connect: ConnectFactory = probed_connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = risk_stream_url
        self._base = risk_stream_url.rstrip("/")
        self.name = name
        self._keepalive = keepalive
        self._probe_interval = probe_interval or silence / 3
        self._pong_timeout = pong_timeout
        self._verify_timeout = verify_timeout
        self._key_retry = key_retry
        self._connect = connect
        self._clock = clock
        self.members: dict[str, Member] = {}
        # key (casefolded: a server may lowercase stream names) → member, on the connection now
        self._following: dict[str, Member] = {}
        self._combined = False  # the connection now is the ``/stream?streams=`` form
        self._joined = asyncio.Event()  # a member joined after the connection was made
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._reconciles = Reconciles("risk_reconcile_failed")
        self._bad = RateLimitedLog("risk_frame_skipped")
        self.confirmed = False  # the server listed every key of this connection (several keys)
        self._refusals = 0  # shared connections in a row the server ended or refused unconfirmed
        self.on_left: Callable[[Member], None] | None = None  # told when a revoked key takes a member off
        self.supervisor = Supervisor(
            name, self._session, backoff=backoff, silence=silence, on_state=self._group_state
        )

    # -- membership -------------------------------------------------------------------------------
    def add(self, member: Member) -> None:
        """Follow ``member``'s account too (the connection is made again to include it)."""
        self.members[member.account] = member
        member.group = self
        self._joined.set()  # a session running now took the members it found at its start

    def remove(self, account: str) -> Member | None:
        """Stop following ``account`` (its key stays on the connection until the next one, unread)."""
        member = self.members.pop(account, None)
        if member is None:
            return None
        if member.key is not None:
            self._following.pop(member.key.casefold(), None)
        if member.group is self:
            member.group = None
        return member

    def follow(self, members: list[Member]) -> None:
        """The connection now follows these members' keys (messages are routed by them)."""
        self._following = {m.key.casefold(): m for m in members if m.key is not None}

    def __len__(self) -> int:
        return len(self.members)

    def member_state(self, account: str) -> tuple[bool, str]:
        """``(up, reason)`` of ``account``'s stream: up when the connection is and follows its key."""
        member = self.members.get(account)
        if member is None:
            return False, "not followed"
        if self.supervisor.up and member.key is not None and member.key.casefold() in self._following:
            return True, ""
        if member.trouble:
            return False, f"no listen key: {member.trouble}"
        return False, self.supervisor.last_reason

    async def run(self) -> None:
        """Keep the connection alive until cancelled (raises ``CombinedRefused``, or ``KeyRejected``
        for a member without ``on_rejected``)."""
        await self.supervisor.run()

    # -- one connection ---------------------------------------------------------------------------
    async def _session(self, heartbeat: Heartbeat) -> str | None:
        self._joined.clear()
        await self._fetch_keys([m for m in self.members.values() if self._needs_key(m)])
        keyed = [m for m in self.members.values() if m.key is not None]
        if not keyed:
            troubles = [m.trouble for m in self.members.values() if m.trouble]
            raise Reconnect(f"no listen key: {troubles[0]}" if troubles else "no account to follow")
        keys = [m.key for m in keyed if m.key is not None]
        self._combined = len(keys) > 1
        joined = "/".join(keys)
        url = f"{self._base}/stream?streams={joined}" if self._combined else f"{self._base}/ws/{joined}"
        connected = False
        self.confirmed = False
        closed_by: int | None = None  # the close code of a close the server began
        try:
            async with self._connect(url) as ws:
                connected = True
                self.follow(keyed)
                heartbeat.connected()
                for member in keyed:
                    self._reconcile(member)  # events may have been missed while it was not followed
                for member in self.members.values():
                    if member.key is None and member.trouble:
                        self._tell(member, False, f"no listen key: {member.trouble}")
                async with asyncio.TaskGroup() as group:
                    reader = group.create_task(self._read(ws, heartbeat))
                    group.create_task(probe(ws, heartbeat, self._probe_interval, self._pong_timeout))
                    group.create_task(self._extend(keyed))
                    group.create_task(self._rejoin())
                    if self._combined:
                        group.create_task(self._verify(ws, keys))
                    if len(keyed) < len(self.members):
                        group.create_task(self._retry_keys())
                    await reader
                    closed_by = ws.close_code  # the reader ended: the server closed (ours comes later)
                    raise Reconnect(
                        f"closed by server (code {ws.close_code}, {ws.close_reason or 'no reason'})"
                    )
        except BaseExceptionGroup as failed:
            error = first_error(failed)
            self._unconfirmed_end(error, closed_by)
            raise error from None
        except Exception as exc:
            self._unconfirmed_end(exc, closed_by)
            raise
        finally:
            self._following = {}
            for answer in self._answers.values():
                answer.cancel()
            self._answers.clear()
            if not connected:
                for member in keyed:
                    member.key = None  # the handshake failed: a key may be the reason
        return None  # pragma: no cover - the task group always exits by raising

    def _unconfirmed_end(self, error: BaseException, closed_by: int | None) -> None:
        """A shared connection ended before the server confirmed it: counted when the server itself
        refused it (an HTTP 4xx at the handshake, but 429/418: the connection budget's) or began
        closing it (``closed_by``, or a close frame it sent first; not a network loss, 1006, nor a
        close of ours: a member joining, a lapsed key); :data:`REFUSALS` in a row end the group with
        :class:`CombinedRefused` (a server that will not have several keys on a connection would
        otherwise be retried for ever, Binance's word on those accounts missing meanwhile)."""
        if not self._combined or self.confirmed or isinstance(error, CombinedRefused):
            return
        code = closed_by
        if code is None and isinstance(error, ConnectionClosed) and error.rcvd is not None:
            code = error.rcvd.code if error.rcvd_then_sent is not False else None
        if isinstance(error, InvalidStatus):
            status = error.response.status_code
            refused = 400 <= status < 500 and status not in (429, 418)
            why = f"refused at the handshake with HTTP {status}" if refused else ""
        elif code is not None and code != 1006:
            why = f"closed by the server (code {code}) before answering LIST_SUBSCRIPTIONS"
        else:
            why = ""
        if not why:
            return
        self._refusals += 1
        if self._refusals >= REFUSALS:
            self._refusals = 0
            raise CombinedRefused(
                f"several listen keys on one connection not confirmed: {REFUSALS} shared connections "
                f"in a row {why}"
            ) from error

    def _needs_key(self, member: Member) -> bool:
        return member.key is None or self._clock() - member.renewed > KEY_LIFETIME * 0.9

    async def _fetch_keys(self, members: list[Member]) -> None:
        """A key for each of ``members``, concurrently; a failure is that member's ``trouble``."""
        if not members:
            return
        results = await asyncio.gather(*(m.rest.risk_listen_key() for m in members), return_exceptions=True)
        for member, result in zip(members, results, strict=True):
            if isinstance(result, str):
                member.key, member.renewed, member.trouble = result, self._clock(), ""
            elif isinstance(result, KeyRejected):
                member.key = None
                self._rejected(member, result)
            elif isinstance(result, Exception):
                member.key, member.trouble = None, describe(result)
                log.warning("risk_listen_key_failed", account=member.account, error=member.trouble)
            else:
                raise result

    def _rejected(self, member: Member, exc: KeyRejected) -> None:
        if member.on_rejected is None:
            raise exc
        self.remove(member.account)
        self._tell(member, False, describe(exc), fatal=True)
        if self.on_left is not None:
            self.on_left(member)
        member.on_rejected(exc)

    async def _retry_keys(self) -> None:
        """While some member has no key: ask again with backoff; once one comes, reconnect with it."""
        for attempt in itertools.count():
            await asyncio.sleep(self._key_retry.delay(attempt))
            waiting = [m for m in self.members.values() if m.key is None]
            if not waiting:
                continue
            await self._fetch_keys(waiting)
            joined = [m.account for m in waiting if m.key is not None]
            if joined:
                raise Reconnect(f"listen key obtained for {', '.join(joined)}: reconnecting to follow it")

    async def _rejoin(self) -> None:
        await self._joined.wait()
        await asyncio.sleep(JOIN_DELAY)
        raise Reconnect("accounts joined the connection")

    async def _verify(self, ws: ClientConnection, keys: list[str]) -> None:
        request_id = next(_request_ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[request_id] = answer
        await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": request_id}).decode())
        try:
            async with asyncio.timeout(self._verify_timeout):
                reply = await answer
        except TimeoutError:
            reason = f"no answer to LIST_SUBSCRIPTIONS within {self._verify_timeout:g} s"
        else:
            reason = combined_confirmed(reply, keys)
        finally:
            self._answers.pop(request_id, None)
        if reason:
            raise CombinedRefused(f"several listen keys on one connection not confirmed: {reason}")
        self.confirmed, self._refusals = True, 0

    async def _read(self, ws: ClientConnection, heartbeat: Heartbeat) -> None:
        """Each message in a loop turn of its own: in a crash Binance pushes a margin call for many
        accounts at once, and messages already received are handed out without a wait, so 20
        accounts' events read in one go would hold the loop for all of them (they came on 20
        connections before, each read in its own callback)."""
        async for raw in ws:
            heartbeat.beat()
            self._on_frame(raw)
            await asyncio.sleep(0)

    def _on_frame(self, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._bad(reason="invalid JSON", group=self.name)
            for followed in self._on_connection():
                self._reconcile(followed)  # it may have been a liability change: re-read them all
            return
        if type(message) is dict and "id" in message and ("result" in message or "error" in message):
            answer = self._answers.get(message["id"]) if type(message["id"]) is int else None
            if answer is not None and not answer.done():
                answer.set_result(message)
            return
        payload = message.get("data", message) if type(message) is dict else message
        if type(payload) is dict and payload.get("e") == "serverShutdown":
            log.info("risk_server_shutdown", group=self.name)
            raise Reconnect("server announced shutdown (serverShutdown)")
        member = self._member_of(message)
        if member is None:
            self._bad(reason="a stream this connection does not follow", group=self.name)
            return
        if type(payload) is dict and payload.get("e") == "listenKeyExpired":
            member.key = None
            raise Reconnect(f"listen key of {member.account} expired")
        try:
            events = frames.risk_events(member.account, payload)
        except ExchangeDataError as exc:
            self._bad(reason=str(exc), account=member.account)
            self._reconcile(member)
            return
        hand_out(events, member.on_event, "risk_hook_failed", account=member.account)

    def _member_of(self, message: Any) -> Member | None:
        """The member a message is for: named by its ``stream`` on a combined connection."""
        if not self._combined:
            sole = self._on_connection()
            return sole[0] if len(sole) == 1 else None
        stream = message.get("stream") if type(message) is dict else None
        return self._following.get(stream.casefold()) if type(stream) is str else None

    def _on_connection(self) -> list[Member]:
        """The members the connection follows (a lone member when none is known: a frame handed in
        outside a session)."""
        if self._following:
            return list(self._following.values())
        return list(self.members.values()) if len(self.members) == 1 else []

    async def _extend(self, keyed: list[Member]) -> None:
        """Each followed key's keepalive, from one task: sleep until the earliest is due."""
        now = self._clock()
        for member in keyed:
            member.due = now + first_extension(self._keepalive, member.renewed, now, random.random())
        while True:
            followed = [m for m in keyed if m.account in self.members and m.key is not None]
            if not followed:
                await asyncio.Event().wait()  # nothing to extend until the next connection
            await asyncio.sleep(max(0.0, min(m.due for m in followed) - self._clock()))
            now = self._clock()
            for member in [m for m in followed if m.due <= now]:
                await self._extend_one(member)

    async def _extend_one(self, member: Member) -> None:
        key = member.key
        if key is None:
            return
        try:
            await member.rest.risk_keepalive(key)
        except ExchangeRequestError as exc:
            if exc.code == INVALID_LISTEN_KEY:
                member.key = None
                raise Reconnect(f"listen key of {member.account} refused by keepalive (-1125)") from None
            self._keepalive_failed(member, exc)
        except KeyRejected as exc:
            self._rejected(member, exc)
        except Exception as exc:
            self._keepalive_failed(member, exc)
        else:
            member.renewed = self._clock()
            member.due = member.renewed + self._keepalive
            log.debug("risk_key_extended", account=member.account)

    def _keepalive_failed(self, member: Member, exc: Exception) -> None:
        member.due = self._clock() + KEEPALIVE_RETRY
        log.warning(
            "risk_keepalive_failed", account=member.account, error=describe(exc), retry_in=KEEPALIVE_RETRY
        )

    # -- states -----------------------------------------------------------------------------------
    def _group_state(self, state: StreamState) -> None:
        """The connection went up or down: each member's state follows (a member without a key
        stays down with its own reason)."""
        for member in list(self.members.values()):
            if state.up and member.key is None:
                continue
            self._tell(member, state.up, state.reason, fatal=state.fatal)

    def _tell(self, member: Member, up: bool, reason: str, *, fatal: bool = False) -> None:
        if member.announced is up and not fatal:
            return
        member.announced = up
        tell_state(member.on_state, StreamState(f"risk:{member.account}", up, reason, fatal))

    def _reconcile(self, member: Member) -> None:
        self._reconciles(member.on_reconnected, member.account, None, account=member.account)
