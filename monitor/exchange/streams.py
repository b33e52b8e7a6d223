"""Market data: combined Binance streams for a set of symbols, conflated, supervised.

``MarketStream`` spreads the symbols over as many connections as Binance's limit of
``MAX_STREAMS`` (1,024) streams per connection needs, each a ``MarketConnection``: a symbol keeps
its connection while wanted, new symbols fill the connections with room first, and a new
connection opens only when all are full.

Each ``MarketConnection`` connects to ``{stream_url}/stream?streams=btcusdt@bookTicker/...`` and
turns each frame into a price (bookTicker mid ``(b + a) / 2``; aggTrade/trade ``p``; miniTicker ``c``). The
reader only stores the newest price per symbol and wakes a consumer; the consumer hands everything
collected since its last run to ``on_prices`` — a burst never builds a queue of stale ticks.

The connection runs under ``Supervisor``: reconnect on errors *and* on a normal close (Binance's
1001 24-hour disconnect ends ``async for`` without an exception), on a ``serverShutdown`` notice,
and when no frame arrives for ``silence`` seconds. ``set_symbols`` changes the subscription at
runtime with SUBSCRIBE/UNSUBSCRIBE, at most ``control_rate`` messages a second (Binance closes a
connection sending more than 5). A symbol the server refuses (unknown, delisted) is isolated — by
the error's stream name, else by halving the refused SUBSCRIBE — and left out (``rejected``; its
age keeps growing, so its accounts go blind) while every other symbol streams; a refused URL
switches to connecting bare (``/ws``) and subscribing by message. Malformed frames are skipped,
logged at most once a second.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from monitor.exchange.errors import Reconnect
from monitor.exchange.supervisor import Backoff, Heartbeat, StateHook, Supervisor, describe

log = structlog.get_logger(__name__)

ConnectFactory = Callable[[str], AbstractAsyncContextManager[ClientConnection]]
PricesHook = Callable[[dict[str, float]], None]

MAX_STREAMS = 1024  # Binance's limit per connection
URL_STREAMS = 200  # streams put in the URL; the rest are subscribed by message
SUBSCRIBE_CHUNK = 200  # streams per SUBSCRIBE/UNSUBSCRIBE message
YIELD_EVERY = 500  # frames handled before giving the event loop a turn during a burst
_INVALID_STREAM = re.compile(r"invalid stream (\S+)", re.IGNORECASE)
_PRICE = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")


def _price(value: Any) -> float:
    """A price field as Binance writes it, a plain decimal string; anything else (a JSON number or
    boolean, an exponent, a sign, ``NaN``, blanks, ``1_000``) raises ValueError: ``float()`` alone
    would take ``true`` as 1.0 and ``"1_000"`` as 1000.0."""
    if type(value) is not str or _PRICE.fullmatch(value) is None:
        raise ValueError("not a plain decimal string")
    return float(value)


def default_connect(url: str) -> AbstractAsyncContextManager[ClientConnection]:
    """websockets' client with Binance-friendly limits (pings every 20 s, 1 MiB frames), without
    permessage-deflate (Binance does not require it): 1,000 risk streams would each keep zlib
    buffers, and every market frame would be inflated on the event loop."""
    return connect(
        url,
        open_timeout=10,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
        max_queue=1024,
        compression=None,
    )


class RateLimitedLog:
    """Log an event at most once per ``interval`` seconds, counting what was suppressed."""

    def __init__(
        self, event: str, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._event = event
        self._interval = interval
        self._clock = clock
        self._next = -math.inf
        self.suppressed = 0
        self.total = 0

    def __call__(self, **fields: Any) -> None:
        self.total += 1
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return
        log.warning(self._event, suppressed=self.suppressed, **fields)
        self.suppressed = 0
        self._next = now + self._interval


@dataclass(frozen=True, slots=True)
class FeedStats:
    """Counters for metrics: frames handled, frames skipped, reconnects, connection state."""

    messages: int
    malformed: int
    reconnects: int
    connected: bool
    last_message_at: float | None


def _sample(raw: str | bytes) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return repr(text[:80])


class MarketConnection:
    """One supervised, conflated market connection (at most ``MAX_STREAMS`` symbols)."""

    def __init__(
        self,
        stream_url: str,
        symbols: Iterable[str],
        on_prices: PricesHook,
        *,
        channel: str = "bookTicker",
        name: str = "market",
        backoff: Backoff | None = None,
        silence: float = 30.0,
        connect: ConnectFactory = default_connect,
        clock: Callable[[], float] = time.monotonic,
        control_rate: float = 4.0,
        on_state: StateHook | None = None,
    ) -> None:
        self._base = stream_url.rstrip("/")
        self._channel = channel
        self._on_prices = on_prices
        self._connect = connect
        self._clock = clock
        self._control_interval = 1.0 / control_rate
        self._desired: set[str] = set()
        self._subscribed: set[str] = set()
        self._pending: dict[str, float] = {}
        self._updated: dict[str, float] = {}
        self._sent_at: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._next_id = 0
        self._replies: dict[int, tuple[str, list[str]]] = {}
        self._rejected: set[str] = set()
        self._chunk = SUBSCRIBE_CHUNK
        self._subscribe_only = False
        self._messages = 0
        self._last_message_at: float | None = None
        self._bad = RateLimitedLog("market_frame_skipped", clock=clock)
        self._started = clock()
        self.supervisor = Supervisor(
            name, self._session, backoff=backoff, silence=silence, clock=clock, on_state=on_state
        )
        self.set_symbols(symbols)

    # -- public ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read and deliver prices until cancelled (never returns on its own)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._deliver(), name=f"{self.supervisor.name}-deliver")
            group.create_task(self.supervisor.run(), name=f"{self.supervisor.name}-read")

    def set_symbols(self, symbols: Iterable[str]) -> None:
        """Change the symbol set; applied by SUBSCRIBE/UNSUBSCRIBE on the live connection."""
        wanted = {s.upper() for s in symbols}
        if len(wanted) > MAX_STREAMS:
            log.error("market_too_many_symbols", count=len(wanted), limit=MAX_STREAMS)
            wanted = set(sorted(wanted)[:MAX_STREAMS])
        if wanted == self._desired:
            return
        self._desired = wanted
        self._rejected &= wanted
        for gone in set(self._updated) - wanted:
            self._updated.pop(gone, None)
            self._sent_at.pop(gone, None)
        self._changed.set()

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols currently wanted."""
        return frozenset(self._desired)

    @property
    def rejected(self) -> frozenset[str]:
        """Wanted symbols the server refused to stream (unknown or delisted); their age keeps growing."""
        return frozenset(self._rejected)

    def ages(self, now: float | None = None) -> dict[str, float]:
        """Seconds since each wanted symbol's last price (since start if none came yet)."""
        at = self._clock() if now is None else now
        return {s: at - self._updated.get(s, self._started) for s in self._desired}

    def sent_at(self, symbol: str) -> int | None:
        """The sender's event time (ms) of the newest frame for ``symbol``, when the frame had ``E``."""
        return self._sent_at.get(symbol.upper())

    def stats(self) -> FeedStats:
        """Counters for metrics."""
        return FeedStats(
            self._messages,
            self._bad.total,
            self.supervisor.retries,
            self.supervisor.up,
            self._last_message_at,
        )

    # -- connection -----------------------------------------------------------------------------

    def _stream(self, symbol: str) -> str:
        return f"{symbol.lower()}@{self._channel}"

    async def _session(self, heartbeat: Heartbeat) -> str | None:
        while not self._desired:
            heartbeat.pause()
            self._changed.clear()
            await self._changed.wait()
        heartbeat.resume()
        self._rejected.clear()
        self._chunk = SUBSCRIBE_CHUNK
        if self._subscribe_only:  # the URL was refused once: connect bare, subscribe by message
            first: list[str] = []
            url = f"{self._base}/ws"
        else:
            first = sorted(self._desired)[:URL_STREAMS]
            url = f"{self._base}/stream?streams=" + "/".join(self._stream(s) for s in first)
        try:
            async with self._connect(url) as ws:
                return await self._read(ws, heartbeat, first)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500 and status not in (418, 429) and not self._subscribe_only:
                self._subscribe_only = True  # e.g. an unknown symbol in the URL: find it by SUBSCRIBE
                log.warning("market_url_refused", status=status, streams=len(first))
            raise

    async def _read(self, ws: ClientConnection, heartbeat: Heartbeat, first: list[str]) -> str:
        self._ws = ws
        self._subscribed = set(first)
        self._replies.clear()
        self._changed.set()  # subscribe whatever did not fit in the URL
        heartbeat.connected()
        control = asyncio.create_task(self._control(ws), name=f"{self.supervisor.name}-control")
        try:
            handled = 0
            async for raw in ws:
                heartbeat.beat()
                self._on_frame(raw)
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            self._ws = None
            control.cancel()
            await asyncio.gather(control, return_exceptions=True)
        return f"closed by server (code {ws.close_code}, {ws.close_reason or 'no reason'})"

    async def _control(self, ws: ClientConnection) -> None:
        """Bring the server's subscriptions to the wanted set, rate-limited."""
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                remove = sorted(self._subscribed - self._desired)
                add = sorted(self._desired - self._subscribed - self._rejected)
                for method, symbols in (("UNSUBSCRIBE", remove), ("SUBSCRIBE", add)):
                    size = self._chunk
                    for i in range(0, len(symbols), size):
                        chunk = symbols[i : i + size]
                        self._next_id += 1
                        self._replies[self._next_id] = (method, chunk)
                        request = {
                            "method": method,
                            "params": [self._stream(s) for s in chunk],
                            "id": self._next_id,
                        }
                        await ws.send(orjson.dumps(request).decode())
                        if method == "SUBSCRIBE":
                            self._subscribed.update(chunk)
                        else:
                            self._subscribed.difference_update(chunk)
                        log.info("market_subscription", method=method, count=len(chunk))
                        await asyncio.sleep(self._control_interval)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("market_control_failed", error=describe(exc))
            await ws.close(1011, "control failed")

    # -- frames ---------------------------------------------------------------------------------

    def _on_frame(self, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._bad(reason="invalid JSON", sample=_sample(raw))
            return
        if type(message) is not dict:
            self._bad(reason="not an object", sample=_sample(raw))
            return
        data = message.get("data")
        if data is None:
            if "id" in message:
                self._on_reply(message)
                return
            data = message  # a raw-stream payload without the combined-stream wrapper
        if type(data) is list:
            for item in data:
                self._on_payload(item, raw)
        else:
            self._on_payload(data, raw)

    def _on_payload(self, data: Any, raw: str | bytes) -> None:
        if type(data) is not dict:
            self._bad(reason="payload not an object", sample=_sample(raw))
            return
        kind = data.get("e")
        try:
            if kind is None or kind == "bookTicker":
                bid, ask = _price(data["b"]), _price(data["a"])
                price = (bid + ask) / 2.0 if bid > 0.0 and ask > 0.0 else math.nan
            elif kind == "aggTrade" or kind == "trade":
                price = _price(data["p"])
            elif kind == "24hrMiniTicker" or kind == "24hrTicker":
                price = _price(data["c"])
            elif kind == "serverShutdown":
                raise Reconnect("server announced shutdown (serverShutdown)")
            else:
                self._bad(reason="unknown event", sample=_sample(raw))
                return
        except KeyError:
            self._bad(reason="price field missing", sample=_sample(raw))
            return
        except (TypeError, ValueError):
            self._bad(reason="price not a number", sample=_sample(raw))
            return
        symbol = data.get("s")
        if type(symbol) is not str or not (price > 0.0 and price < math.inf):
            self._bad(reason="bad symbol or price", sample=_sample(raw))
            return
        if symbol not in self._desired:
            return  # a frame in flight after UNSUBSCRIBE, or an unknown symbol
        now = self._clock()
        self._pending[symbol] = price
        self._updated[symbol] = now
        self._messages += 1
        self._last_message_at = now
        sent = data.get("E")
        if type(sent) is int:
            self._sent_at[symbol] = sent
        self._wakeup.set()

    def _on_reply(self, message: dict[str, Any]) -> None:
        request = self._replies.pop(message["id"], None) if type(message["id"]) is int else None
        error = message.get("error")
        if error is None:
            return
        reason = str(error.get("msg", error) if type(error) is dict else error)[:160]
        if request is None or request[0] != "SUBSCRIBE":
            log.warning("market_request_refused", request=request[0] if request else None, reason=reason)
            return
        chunk = request[1]
        self._subscribed.difference_update(chunk)
        named = _INVALID_STREAM.search(reason)
        symbol = named.group(1).partition("@")[0].upper() if named else ""
        if symbol in chunk:
            bad = [symbol]
        elif len(chunk) == 1:
            bad = chunk
        else:  # the server did not say which: retry in halves until the culprit stands alone
            bad = []
            self._chunk = max(1, len(chunk) // 2)
        for item in bad:
            self._rejected.add(item)
            log.error("market_symbol_rejected", symbol=item, reason=reason)
        self._changed.set()

    # -- delivery -------------------------------------------------------------------------------

    async def _deliver(self) -> None:
        failed = RateLimitedLog("market_on_prices_failed", interval=5.0, clock=self._clock)
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                continue
            batch, self._pending = self._pending, {}
            try:
                self._on_prices(batch)
            except Exception as exc:
                failed(error=describe(exc))


class MarketStream:
    """The price feed for any number of symbols: ``MarketConnection``\\ s of at most ``max_streams``.

    The first connection is named ``name`` (``market``), the next ``market-2``, ``market-3``...;
    their states reach ``on_state`` under those names. Connections are only added, never closed:
    one whose symbols all went away idles (no socket) until symbols come back to it.
    """

    def __init__(
        self,
        stream_url: str,
        symbols: Iterable[str],
        on_prices: PricesHook,
        *,
        channel: str = "bookTicker",
        name: str = "market",
        backoff: Backoff | None = None,
        silence: float = 30.0,
        connect: ConnectFactory = default_connect,
        clock: Callable[[], float] = time.monotonic,
        control_rate: float = 4.0,
        on_state: StateHook | None = None,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        if not 1 <= max_streams <= MAX_STREAMS:
            raise ValueError(f"max_streams must be 1..{MAX_STREAMS}")
        self._max = max_streams
        self._name = name
        self._clock = clock
        self._make = functools.partial(
            MarketConnection,
            stream_url,
            (),
            on_prices,
            channel=channel,
            backoff=backoff,
            silence=silence,
            connect=connect,
            clock=clock,
            control_rate=control_rate,
            on_state=on_state,
        )
        self.connections: list[MarketConnection] = [self._new_connection(0)]
        self._grown = asyncio.Event()
        self.set_symbols(symbols)

    def _new_connection(self, index: int) -> MarketConnection:
        return self._make(name=self._name if index == 0 else f"{self._name}-{index + 1}")

    async def run(self) -> None:
        """Run every connection, starting those added later, until cancelled."""
        started = 0
        async with asyncio.TaskGroup() as group:
            while True:
                while started < len(self.connections):
                    connection = self.connections[started]
                    group.create_task(connection.run(), name=f"{connection.supervisor.name}-run")
                    started += 1
                self._grown.clear()
                await self._grown.wait()

    def set_symbols(self, symbols: Iterable[str]) -> None:
        """Change the symbol set: symbols stay on their connection; new ones fill free room first."""
        wanted = {s.upper() for s in symbols}
        kept = [set(c.symbols & wanted) for c in self.connections]
        placed = frozenset().union(*kept)
        new = sorted(wanted - placed)
        for held in kept:
            room = self._max - len(held)
            if room > 0 and new:
                held |= set(new[:room])
                new = new[room:]
        while new:
            self.connections.append(self._new_connection(len(self.connections)))
            kept.append(set(new[: self._max]))
            new = new[self._max :]
            log.info("market_connection_added", connections=len(self.connections), limit=self._max)
            self._grown.set()
        for connection, held in zip(self.connections, kept, strict=True):
            connection.set_symbols(held)

    @property
    def supervisor(self) -> Supervisor:
        """The first connection's supervisor (the only one below ``max_streams`` symbols)."""
        return self.connections[0].supervisor

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols currently wanted, over all connections."""
        return frozenset().union(*(c.symbols for c in self.connections))

    @property
    def rejected(self) -> frozenset[str]:
        """Wanted symbols the server refused to stream, over all connections."""
        return frozenset().union(*(c.rejected for c in self.connections))

    def ages(self, now: float | None = None) -> dict[str, float]:
        """Seconds since each wanted symbol's last price, over all connections."""
        at = self._clock() if now is None else now
        ages: dict[str, float] = {}
        for connection in self.connections:
            ages.update(connection.ages(at))
        return ages

    def sent_at(self, symbol: str) -> int | None:
        """The sender's event time (ms) of the newest frame for ``symbol``."""
        for connection in self.connections:
            if symbol.upper() in connection.symbols:
                return connection.sent_at(symbol)
        return None

    def stats(self) -> FeedStats:
        """Counters summed over the connections; connected only when every busy one is, and the
        last message time of the most silent busy connection (so one wedged connection shows)."""
        parts = [c.stats() for c in self.connections]
        busy = [p for c, p in zip(self.connections, parts, strict=True) if c.symbols] or parts[:1]
        lasts = [p.last_message_at for p in busy]
        return FeedStats(
            sum(p.messages for p in parts),
            sum(p.malformed for p in parts),
            sum(p.reconnects for p in parts),
            all(p.connected for p in busy),
            None if any(t is None for t in lasts) else min(t for t in lasts if t is not None),
        )
