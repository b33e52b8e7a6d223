"""The cross-margin Risk Data Stream: liability and margin-status changes of one account.

``POST /sapi/v1/margin/listen-key`` gives a key valid 60 minutes; ``{risk_stream_url}/ws/<key>``
streams ``USER_LIABILITY_CHANGE`` (borrow, repay, interest) and ``MARGIN_LEVEL_STATUS_CHANGE``.
The key is extended by ``PUT`` every ``keepalive`` seconds (30 min; the first one at a random
point of the second half, ``first_extension``, so that streams connected together do not extend
together); a refused keepalive (-1125 invalid listen key), a ``listenKeyExpired`` event, a close
or silence make a new key and a
new connection, as does a ``serverShutdown`` notice or a ping unanswered for ``pong_timeout`` s
(``probe`` pings every ``probe_interval``; the connection has no websockets keepalive). After each
(re)connection ``on_reconnected(account, None)`` lets the daemon re-read the account by REST.
Isolated accounts are not served by Binance's risk stream.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from websockets.asyncio.client import ClientConnection

from monitor.exchange import frames
from monitor.exchange.errors import ExchangeDataError, ExchangeRequestError, Reconnect
from monitor.exchange.ratelog import RateLimitedLog
from monitor.exchange.rest import BinanceRest
from monitor.exchange.streams import ConnectFactory, probed_connect
from monitor.exchange.supervisor import Backoff, Heartbeat, StateHook, Supervisor, describe
from monitor.exchange.userdata import PONG_TIMEOUT, EventHook, ReconcileHook, first_error, probe

log = structlog.get_logger(__name__)

INVALID_LISTEN_KEY = -1125
KEY_LIFETIME = 3600.0


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


class RiskStream:
    """Supervised Risk Data Stream of one cross margin account; see the module docstring."""

    def __init__(
        self,
        risk_stream_url: str,
        rest: BinanceRest,
        account: str,
        on_event: EventHook,
        *,
        on_reconnected: ReconcileHook | None = None,
        on_state: StateHook | None = None,
        keepalive: float = 1800.0,
        backoff: Backoff | None = None,
        silence: float = 60.0,
        probe_interval: float | None = None,
        pong_timeout: float = PONG_TIMEOUT,
        connect: ConnectFactory = probed_connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = risk_stream_url.rstrip("/")
        self._rest = rest
        self.account = account
        self._on_event = on_event
        self._on_reconnected = on_reconnected
        self._keepalive = keepalive
        self._probe_interval = probe_interval or silence / 3
        self._pong_timeout = pong_timeout
        self._connect = connect
        self._clock = clock
        self._key: str | None = None
        self._key_renewed = 0.0
        self._tasks: set[asyncio.Future[Any]] = set()
        self._bad = RateLimitedLog("risk_frame_skipped")
        self.events = 0
        self.supervisor = Supervisor(
            f"risk:{account}", self._session, backoff=backoff, silence=silence, on_state=on_state
        )

    async def run(self) -> None:
        """Keep the stream alive until cancelled (raises ``KeyRejected`` if the key is revoked)."""
        await self.supervisor.run()

    async def _session(self, heartbeat: Heartbeat) -> str | None:
        if self._key is None or self._clock() - self._key_renewed > KEY_LIFETIME * 0.9:
            self._key = await self._rest.risk_listen_key()
            self._key_renewed = self._clock()
        key = self._key
        connected = False
        try:
            async with self._connect(f"{self._base}/ws/{key}") as ws:
                connected = True
                heartbeat.connected()
                self._reconcile()
                async with asyncio.TaskGroup() as group:
                    reader = group.create_task(self._read(ws, heartbeat))
                    group.create_task(probe(ws, heartbeat, self._probe_interval, self._pong_timeout))
                    group.create_task(self._extend(key))
                    await reader
                    raise Reconnect(
                        f"closed by server (code {ws.close_code}, {ws.close_reason or 'no reason'})"
                    )
        except BaseExceptionGroup as failed:
            error = first_error(failed)
            if isinstance(error, Reconnect) and "listen key" in str(error):
                self._key = None
            raise error from None
        finally:
            if not connected:
                self._key = None  # the handshake failed: the key may be the reason
        return None  # pragma: no cover - the task group always exits by raising

    async def _read(self, ws: ClientConnection, heartbeat: Heartbeat) -> None:
        async for raw in ws:
            heartbeat.beat()
            self._on_frame(raw)

    def _on_frame(self, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._bad(reason="invalid JSON", account=self.account)
            self._reconcile()  # it may have been a liability change: re-read the account
            return
        payload = message.get("data", message) if type(message) is dict else message
        if type(payload) is dict and payload.get("e") == "listenKeyExpired":
            raise Reconnect("listen key expired")
        if type(payload) is dict and payload.get("e") == "serverShutdown":
            log.info("risk_server_shutdown", account=self.account)
            raise Reconnect("server announced shutdown (serverShutdown)")
        try:
            events = frames.risk_events(self.account, payload)
        except ExchangeDataError as exc:
            self._bad(reason=str(exc), account=self.account)
            self._reconcile()
            return
        for event in events:
            self.events += 1
            try:
                self._on_event(event)
            except Exception as exc:
                log.error("risk_hook_failed", account=self.account, error=describe(exc))

    async def _extend(self, key: str) -> None:
        delay = first_extension(self._keepalive, self._key_renewed, self._clock(), random.random())
        while True:
            await asyncio.sleep(delay)
            delay = self._keepalive
            try:
                await self._rest.risk_keepalive(key)
            except ExchangeRequestError as exc:
                if exc.code == INVALID_LISTEN_KEY:
                    raise Reconnect("listen key refused by keepalive (-1125)") from None
                raise
            self._key_renewed = self._clock()
            log.debug("risk_key_extended", account=self.account)

    def _reconcile(self) -> None:
        if self._on_reconnected is None:
            return
        try:
            result = self._on_reconnected(self.account, None)
        except Exception as exc:
            log.error("risk_reconcile_failed", account=self.account, error=describe(exc))
            return
        if result is not None:
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
