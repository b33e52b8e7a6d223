"""The market stream's protocol without I/O: frames in, prices and frames to send out.

In the manner of websockets' own ``Protocol``: nothing here reads a socket, sleeps or reads a clock.
The I/O layer (``monitor.exchange.streams``) drives one ``MarketProtocol`` per connection:

    path = protocol.begin_connection()          # open stream_url + path; on HTTP refusal:
    protocol.connection_refused(status)         #   (then reconnect)
    protocol.receive(frame, now)                # each frame; True: look at closing / send again
    protocol.prices_received()                  # the conflated batch for on_prices
    protocol.data_to_send(now)                  # SUBSCRIBE/UNSUBSCRIBE frames due now
    protocol.next_send_at()                     # when to call data_to_send again (None: nothing owed)
    protocol.set_symbols(symbols)               # any time; then data_to_send owes the difference

``MarketCore`` spreads symbols over as many such protocols as Binance's ``MAX_STREAMS`` (1,024)
streams per connection needs (``set_symbols`` returns the protocols it added: a connection each).

One connection's protocol:

- **prices** — a bookTicker frame gives the mid ``(b + a) / 2``, aggTrade/trade ``p``, (mini)ticker
  ``c``, each read by ``monitor.exchange.parse.price``; only the newest price of each symbol is kept
  until ``prices_received`` takes them (conflation: a burst never queues stale ticks). Malformed
  frames are counted and skipped, logged at most once a second (``market_frame_skipped``);
- **subscriptions** — the first ``URL_STREAMS`` symbols go in the connection's path, the rest (and
  later changes) in SUBSCRIBE/UNSUBSCRIBE requests of ``SUBSCRIBE_CHUNK`` streams, one per control
  interval (Binance closes a connection sending more than 5 messages a second);
- **replies** — each request is tracked by id until answered. A refused SUBSCRIBE isolates the bad
  symbol: by the stream the error names, else by halving the chunk until the culprit stands alone;
  it is then ``rejected`` (left out, its age growing) while every other symbol streams. A refused
  path (HTTP 4xx) switches the next connections to a bare ``/ws`` and subscribing by message;
- **shutdown** — Binance's ``serverShutdown`` notice sets ``closing``: the I/O layer reconnects.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import orjson
import structlog

from monitor.exchange.errors import ExchangeDataError
from monitor.exchange.parse import price
from monitor.exchange.ratelog import RateLimitedLog

log = structlog.get_logger(__name__)

MAX_STREAMS = 1024  # Binance's limit per connection
URL_STREAMS = 200  # streams put in the connection's path; the rest are subscribed by message
SUBSCRIBE_CHUNK = 200  # streams per SUBSCRIBE/UNSUBSCRIBE message
_INVALID_STREAM = re.compile(r"invalid stream (\S+)", re.IGNORECASE)
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_NAN = math.nan
_INF = math.inf


def _sample(raw: str | bytes) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return repr(text[:80])


class MarketProtocol:
    """One market connection's state: wanted symbols, subscriptions, replies awaited, newest prices.

    Times are plain numbers handed in: ``receive(now=...)`` stamps prices (``ages``,
    ``last_message_at``) and paces the skip log; ``data_to_send(now)`` paces the requests. The two
    may come from different clocks.
    """

    def __init__(
        self, *, channel: str = "bookTicker", control_interval: float = 0.25, now: float = 0.0
    ) -> None:
        self._channel = channel
        self._control_interval = control_interval
        self._started = now
        self._desired: set[str] = set()
        self._subscribed: set[str] = set()
        self._rejected: set[str] = set()
        self._pending: dict[str, float] = {}
        self._updated: dict[str, float] = {}
        self._sent_at: dict[str, int] = {}
        self._replies: dict[int, tuple[str, list[str]]] = {}
        self._next_id = 0
        self._next_send = -_INF
        self._chunk = SUBSCRIBE_CHUNK
        self._subscribe_only = False
        self._bad = RateLimitedLog("market_frame_skipped")
        self.messages = 0
        self.last_message_at: float | None = None
        self.closing: str | None = None

    # -- symbols --------------------------------------------------------------------------------

    def set_symbols(self, symbols: Iterable[str]) -> bool:
        """Want ``symbols`` (at most ``MAX_STREAMS``); True when that changed anything to send."""
        wanted = {s.upper() for s in symbols}
        if len(wanted) > MAX_STREAMS:
            log.error("market_too_many_symbols", count=len(wanted), limit=MAX_STREAMS)
            wanted = set(sorted(wanted)[:MAX_STREAMS])
        if wanted == self._desired:
            return False
        self._desired = wanted
        self._rejected &= wanted
        for gone in set(self._updated) - wanted:
            self._updated.pop(gone, None)
            self._sent_at.pop(gone, None)
        return True

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols wanted."""
        return frozenset(self._desired)

    @property
    def rejected(self) -> frozenset[str]:
        """Wanted symbols the server refused to stream (unknown or delisted)."""
        return frozenset(self._rejected)

    @property
    def subscribed(self) -> frozenset[str]:
        """The symbols the server was asked to stream on this connection (path and requests sent)."""
        return frozenset(self._subscribed)

    @property
    def awaiting_reply(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._replies)

    @property
    def malformed(self) -> int:
        """Frames skipped as malformed."""
        return self._bad.total

    def ages(self, now: float) -> dict[str, float]:
        """Seconds since each wanted symbol's last price (since this protocol was made if none came)."""
        return {s: now - self._updated.get(s, self._started) for s in self._desired}

    def sent_at(self, symbol: str) -> int | None:
        """The sender's event time (ms) of the newest frame for ``symbol``, when the frame had ``E``."""
        return self._sent_at.get(symbol.upper())

    # -- connection -----------------------------------------------------------------------------

    def stream(self, symbol: str) -> str:
        """The stream name of ``symbol`` (``btcusdt@bookTicker``)."""
        return f"{symbol.lower()}@{self._channel}"

    def begin_connection(self) -> str:
        """Begin a connection: the path to open (``/stream?streams=...`` or ``/ws``). What the previous
        connection had subscribed, refused or left unanswered is forgotten."""
        self._rejected.clear()
        self._replies.clear()
        self._chunk = SUBSCRIBE_CHUNK
        self._next_send = -_INF
        self.closing = None
        if self._subscribe_only:
            self._subscribed = set()
            return "/ws"
        first = sorted(self._desired)[:URL_STREAMS]
        self._subscribed = set(first)
        return "/stream?streams=" + "/".join(self.stream(s) for s in first)

    def connection_refused(self, status: int) -> None:
        """The server refused the path with HTTP ``status``: after a 4xx other than a rate limit (an
        unknown symbol in the path), connect bare and subscribe by message from now on."""
        if 400 <= status < 500 and status not in (418, 429) and not self._subscribe_only:
            self._subscribe_only = True
            log.warning("market_url_refused", status=status, streams=len(self._subscribed))

    # -- frames to send -------------------------------------------------------------------------

    def next_send_at(self) -> float | None:
        """When ``data_to_send`` has a request to give (now or later), or None when nothing is owed."""
        if self._subscribed - self._desired or self._desired - self._subscribed - self._rejected:
            return self._next_send
        return None

    def data_to_send(self, now: float) -> list[str]:
        """The request due at ``now`` (UNSUBSCRIBE first, then SUBSCRIBE), at most one per control
        interval; counted as subscribed when handed out."""
        if now < self._next_send:
            return []
        remove = sorted(self._subscribed - self._desired)
        method, symbols = ("UNSUBSCRIBE", remove) if remove else ("SUBSCRIBE", self._missing())
        if not symbols:
            return []
        chunk = symbols[: self._chunk]
        self._next_id += 1
        self._replies[self._next_id] = (method, chunk)
        if method == "SUBSCRIBE":
            self._subscribed.update(chunk)
        else:
            self._subscribed.difference_update(chunk)
        self._next_send = now + self._control_interval
        log.info("market_subscription", method=method, count=len(chunk))
        request = {"method": method, "params": [self.stream(s) for s in chunk], "id": self._next_id}
        return [orjson.dumps(request).decode()]

    def _missing(self) -> list[str]:
        return sorted(self._desired - self._subscribed - self._rejected)

    # -- frames received ------------------------------------------------------------------------

    def receive(self, frame: str | bytes, now: float) -> bool:
        """Handle one frame received at ``now``. True when it changed what to send (a refused
        request) or set ``closing``: the caller then looks at both."""
        try:
            message = _loads(frame)
        except _JSONDecodeError:
            return self._skip(now, "invalid JSON", frame)
        if type(message) is not dict:
            return self._skip(now, "not an object", frame)
        data = message.get("data")
        if data is None:
            if "id" in message:
                return self._reply(message)
            data = message  # a raw-stream payload without the combined-stream wrapper
        acted = False
        for payload in data if type(data) is list else (data,):  # the hot path: inlined, no calls
            if type(payload) is not dict:
                self._skip(now, "payload not an object", frame)
                continue
            kind = payload.get("e")
            try:
                if kind is None or kind == "bookTicker":
                    bid, ask = price(payload["b"]), price(payload["a"])
                    value = (bid + ask) / 2.0 if bid > 0.0 and ask > 0.0 else _NAN
                elif kind == "aggTrade" or kind == "trade":
                    value = price(payload["p"])
                elif kind == "24hrMiniTicker" or kind == "24hrTicker":
                    value = price(payload["c"])
                elif kind == "serverShutdown":
                    self.closing = "server announced shutdown (serverShutdown)"
                    acted = True
                    continue
                else:
                    self._skip(now, "unknown event", frame)
                    continue
            except KeyError:
                self._skip(now, "price field missing", frame)
                continue
            except ExchangeDataError:
                self._skip(now, "price not a number", frame)
                continue
            symbol = payload.get("s")
            if type(symbol) is not str or not (value > 0.0 and value < _INF):
                self._skip(now, "bad symbol or price", frame)
            elif symbol in self._desired:  # else a frame in flight after UNSUBSCRIBE, or unknown
                self._pending[symbol] = value
                self._updated[symbol] = now
                self.messages += 1
                self.last_message_at = now
                sent = payload.get("E")
                if type(sent) is int:
                    self._sent_at[symbol] = sent
        return acted

    def prices_received(self) -> dict[str, float]:
        """The newest price of each symbol priced since the last call (and forget them)."""
        batch, self._pending = self._pending, {}
        return batch

    def _skip(self, now: float, reason: str, frame: str | bytes) -> bool:
        self._bad.at(now, reason=reason, sample=_sample(frame))
        return False

    def _reply(self, message: dict[str, Any]) -> bool:
        key = message["id"]
        request = self._replies.pop(key, None) if type(key) is int else None
        error = message.get("error")
        if error is None:
            return False
        reason = str(error.get("msg", error) if type(error) is dict else error)[:160]
        if request is None or request[0] != "SUBSCRIBE":
            log.warning("market_request_refused", request=request[0] if request else None, reason=reason)
            return False
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
        return True


class MarketCore:
    """Symbols spread over ``MarketProtocol``\\ s of at most ``max_streams`` each.

    A symbol keeps its connection while wanted; new symbols fill the connections with room first,
    and a connection is added only when all are full. Connections are never removed: one whose
    symbols all went away idles until symbols come back to it.
    """

    def __init__(
        self, *, max_streams: int = MAX_STREAMS, channel: str = "bookTicker", control_interval: float = 0.25
    ) -> None:
        if not 1 <= max_streams <= MAX_STREAMS:
            raise ValueError(f"max_streams must be 1..{MAX_STREAMS}")
        self._max = max_streams
        self._channel = channel
        self._control_interval = control_interval
        self.connections: list[MarketProtocol] = []

    def set_symbols(self, symbols: Iterable[str], now: float) -> list[MarketProtocol]:
        """Place ``symbols``; the connections this added (made at ``now``), at least the first."""
        wanted = {s.upper() for s in symbols}
        kept = [set(c.symbols & wanted) for c in self.connections]
        placed = frozenset().union(*kept)
        new = sorted(wanted - placed)
        for held in kept:
            room = self._max - len(held)
            if room > 0 and new:
                held |= set(new[:room])
                new = new[room:]
        added: list[MarketProtocol] = []
        while new or not self.connections:
            protocol = MarketProtocol(channel=self._channel, control_interval=self._control_interval, now=now)
            self.connections.append(protocol)
            added.append(protocol)
            kept.append(set(new[: self._max]))
            new = new[self._max :]
            if len(self.connections) > 1:
                log.info("market_connection_added", connections=len(self.connections), limit=self._max)
        for protocol, held in zip(self.connections, kept, strict=True):
            protocol.set_symbols(held)
        return added

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols wanted, over all connections."""
        return frozenset().union(*(c.symbols for c in self.connections))

    @property
    def rejected(self) -> frozenset[str]:
        """Wanted symbols the server refused to stream, over all connections."""
        return frozenset().union(*(c.rejected for c in self.connections))

    def ages(self, now: float) -> dict[str, float]:
        """Seconds since each wanted symbol's last price, over all connections."""
        ages: dict[str, float] = {}
        for protocol in self.connections:
            ages.update(protocol.ages(now))
        return ages

    def sent_at(self, symbol: str) -> int | None:
        """The sender's event time (ms) of the newest frame for ``symbol``."""
        for protocol in self.connections:
            if symbol.upper() in protocol.symbols:
                return protocol.sent_at(symbol)
        return None
