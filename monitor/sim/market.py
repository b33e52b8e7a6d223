"""Market streams (``/ws/<streams>``, ``/stream?streams=a/b``) and the Risk Data Stream on the same base.

Streams: ``<symbol>@bookTicker`` (no ``e``/``E``, as on Binance), ``<symbol>@aggTrade``,
``<symbol>@trade`` (one message per price tick), ``<symbol>@miniTicker`` and ``!miniTicker@arr``
(also ``!miniTicker@arr@1000ms``; once per ticker interval, only symbols that changed). A listen
key of the Risk Data Stream is a stream name too (``/ws/<listenKey>``), carrying
``USER_LIABILITY_CHANGE`` and ``MARGIN_LEVEL_STATUS_CHANGE``, then ``listenKeyExpired`` when the
key lapses. Combined connections wrap each message as ``{"stream": name, "data": payload}``.
``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``/``SET_PROPERTY``/``GET_PROPERTY`` follow
Binance's request and error shapes. A connection URL naming an unknown stream is refused with
HTTP 400 (our choice; Binance's exact answer is not documented).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from monitor.sim.faults import FaultBoard
from monitor.sim.levels import fmt
from monitor.sim.scenario import Scenario
from monitor.sim.userdata import ListenKey, ListenKeyBook
from monitor.sim.wsconn import Connection

PER_TICK = ("bookTicker", "aggTrade", "trade")
ALL_MINI = ("!miniTicker@arr", "!miniTicker@arr@1000ms")
MAX_STREAMS = 1024


@dataclass(slots=True)
class Tape:
    """Running market statistics of one symbol (since the simulator started)."""

    symbol: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    trade_id: int = 0
    update_id: int = 0
    dirty: bool = False

    def mini(self, now: int) -> dict[str, Any]:
        """The ``24hrMiniTicker`` payload."""
        return {
            "e": "24hrMiniTicker",
            "E": now,
            "s": self.symbol,
            "c": fmt(self.close),
            "o": fmt(self.open),
            "h": fmt(self.high),
            "l": fmt(self.low),
            "v": fmt(self.volume),
            "q": fmt(self.quote_volume),
        }


@dataclass(eq=False)
class StreamConnection:
    """A market-stream connection and the streams subscribed on it."""

    conn: Connection
    combined: bool
    streams: list[str] = field(default_factory=list)

    def push(self, name: str, payload: Any, symbol: str | None = None) -> None:
        """Send one stream message, wrapped when the connection is combined."""
        self.conn.send({"stream": name, "data": payload} if self.combined else payload, symbol)


class StreamHub:
    """Every market/risk stream connection, and the market tapes feeding them."""

    def __init__(
        self, scenario: Scenario, board: FaultBoard, listen_keys: ListenKeyBook, now_ms: Callable[[], int]
    ) -> None:
        self._scenario = scenario
        self._board = board
        self._keys = listen_keys
        self._now_ms = now_ms
        self._spread = scenario.streams.spread
        self.tapes = {s: Tape(s, p, p, p, p) for s, p in scenario.prices.items()}
        self.connections: set[StreamConnection] = set()

    # --- names ---------------------------------------------------------------------------

    def route(self, name: str) -> tuple[str, str | None] | None:
        """``(kind, SYMBOL)`` of a stream name, ``("listenKey", None)`` for a risk key, else None."""
        if name in ALL_MINI:
            return "!miniTicker@arr", None
        symbol, _, kind = name.partition("@")
        if kind in (*PER_TICK, "miniTicker") and symbol.upper() in self.tapes:
            return kind, symbol.upper()
        if "@" not in name and self._keys.get(name) is not None:
            return "listenKey", None
        return None

    # --- connections ---------------------------------------------------------------------

    async def handle_raw(self, request: web.Request) -> web.StreamResponse:
        """``GET /ws`` and ``/ws/<stream>[/<stream>...]``: raw (unwrapped) messages."""
        names = [n for n in request.match_info.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=False)

    async def handle_combined(self, request: web.Request) -> web.StreamResponse:
        """``GET /stream?streams=a/b``: messages wrapped with their stream name."""
        names = [n for n in request.query.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=True)

    async def _serve(self, request: web.Request, names: list[str], combined: bool) -> web.StreamResponse:
        bad = [n for n in names if self.route(n) is None]
        if bad or len(names) > MAX_STREAMS:
            body = orjson.dumps({"code": 2, "msg": f"Invalid request: invalid stream {(bad or names)[0]}"})
            return web.Response(status=400, body=body, content_type="application/json")
        opts = self._scenario.streams
        conn = Connection(
            request,
            "streams",
            self._board,
            ping_interval=opts.ping_interval,
            pong_timeout=opts.pong_timeout,
            max_incoming_per_second=opts.max_incoming_per_second,
        )
        sc = StreamConnection(conn, combined, list(dict.fromkeys(names)))
        self.connections.add(sc)
        try:
            return await conn.run(lambda text: self._on_text(sc, text))
        finally:
            self.connections.discard(sc)

    async def _on_text(self, sc: StreamConnection, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            sc.conn.send({"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}})
            return
        if not isinstance(req, dict):
            sc.conn.send({"error": {"code": 2, "msg": "Invalid request: expected an object"}})
            return
        req_id = req.get("id")
        method, params = req.get("method"), req.get("params", [])
        if not (req_id is None or isinstance(req_id, int | str)) or isinstance(req_id, bool):
            sc.conn.send(
                {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}}
            )
            return
        if not isinstance(params, list) or not all(isinstance(p, str | bool) for p in params):
            sc.conn.send({"error": {"code": 2, "msg": "Invalid request: invalid params"}, "id": req_id})
            return
        names = [p for p in params if isinstance(p, str)]
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            bad = [n for n in names if self.route(n) is None]
            if bad:
                sc.conn.send(
                    {"error": {"code": 2, "msg": f"Invalid request: invalid stream {bad[0]}"}, "id": req_id}
                )
                return
            if method == "SUBSCRIBE" and len(set(sc.streams) | set(names)) > MAX_STREAMS:
                # Binance documents the limit (1,024 streams per connection), not its answer: ours
                sc.conn.send(
                    {
                        "error": {"code": 2, "msg": f"Invalid request: more than {MAX_STREAMS} streams"},
                        "id": req_id,
                    }
                )
                return
            if method == "SUBSCRIBE":
                sc.streams.extend(n for n in names if n not in sc.streams)
            else:
                sc.streams[:] = [n for n in sc.streams if n not in names]
            sc.conn.send({"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            sc.conn.send({"result": list(sc.streams), "id": req_id})
        elif method == "SET_PROPERTY" and len(params) == 2 and params[0] == "combined":
            sc.combined = bool(params[1])
            sc.conn.send({"result": None, "id": req_id})
        elif method == "GET_PROPERTY" and params == ["combined"]:
            sc.conn.send({"result": sc.combined, "id": req_id})
        else:
            msg = (
                f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
                "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
            )
            sc.conn.send({"error": {"code": 2, "msg": msg}, "id": req_id})

    # --- data ----------------------------------------------------------------------------

    def refresh_quotes(self) -> None:
        """Resend the bookTicker of every subscribed symbol at its standing price (no trade)."""
        half = self._spread / 2
        for sc in self.connections:
            for name in sc.streams:
                head, _, kind = name.partition("@")
                tape = self.tapes.get(head.upper())
                if kind != "bookTicker" or tape is None or not self._scenario.trading(tape.symbol):
                    continue
                tape.update_id += 1
                sc.push(name, self._book_ticker(tape, tape.close, half), tape.symbol)

    def _book_ticker(self, tape: Tape, price: Decimal, half: Decimal) -> dict[str, Any]:
        return {
            "u": tape.update_id,
            "s": tape.symbol,
            "b": fmt(price * (1 - half)),
            "B": fmt(Decimal(tape.update_id % 13 + 1) / 10),
            "a": fmt(price * (1 + half)),
            "A": fmt(Decimal(tape.update_id % 11 + 1) / 10),
        }

    def tick(self, symbol: str, price: Decimal) -> None:
        """A trade at ``price``: per-tick streams now, miniTickers at the next flush (nothing for a
        symbol whose ``symbol_status`` is not TRADING: a halted pair streams no price)."""
        if not self._scenario.trading(symbol):
            return
        tape = self.tapes[symbol]
        now = self._now_ms()
        buyer_maker = price < tape.close
        tape.trade_id += 1
        tape.update_id += 1
        qty = Decimal(tape.trade_id % 97 + 1) / 1000
        tape.close, tape.high, tape.low = price, max(tape.high, price), min(tape.low, price)
        tape.volume += qty
        tape.quote_volume += qty * price
        tape.dirty = True
        lower = symbol.lower()
        half = self._spread / 2
        payloads = {
            "bookTicker": self._book_ticker(tape, price, half),
            "aggTrade": {
                "e": "aggTrade",
                "E": now,
                "s": symbol,
                "a": tape.trade_id,
                "p": fmt(price),
                "q": fmt(qty),
                "f": tape.trade_id,
                "l": tape.trade_id,
                "T": now,
                "m": buyer_maker,
                "M": True,
            },
            "trade": {
                "e": "trade",
                "E": now,
                "s": symbol,
                "t": tape.trade_id,
                "p": fmt(price),
                "q": fmt(qty),
                "T": now,
                "m": buyer_maker,
                "M": True,
            },
        }
        for sc in self.connections:
            for name in sc.streams:
                head, _, kind = name.partition("@")
                if kind in payloads and head.lower() == lower:
                    sc.push(name, payloads[kind], symbol)

    def flush_tickers(self) -> None:
        """Send miniTickers of the symbols that changed since the last flush."""
        dirty = [t for t in self.tapes.values() if t.dirty]
        if not dirty:
            return
        now = self._now_ms()
        minis = {t.symbol: t.mini(now) for t in dirty}
        for tape in dirty:
            tape.dirty = False
        for sc in self.connections:
            for name in sc.streams:
                route = self.route(name)
                if route is None:
                    continue
                kind, symbol = route
                if kind == "miniTicker" and symbol in minis:
                    sc.push(name, minis[symbol], symbol)
                elif kind == "!miniTicker@arr":
                    shown = [m for s, m in minis.items() if not self._board.stalled("streams", s)]
                    if shown:
                        sc.push(name, shown)

    def deliver_risk(self, account: str, payload: dict[str, Any]) -> None:
        """Send a Risk Data Stream event to the connections following one of the account's keys."""
        for sc in self.connections:
            for name in sc.streams:
                key = self._keys.get(name, account) if "@" not in name else None
                if key is not None:
                    sc.push(name, payload)

    def expire_keys(self, keys: list[ListenKey], now_ms: int) -> None:
        """Tell followers of lapsed listen keys (``listenKeyExpired``) and drop those streams."""
        names = {k.key for k in keys}
        for sc in self.connections:
            for name in [n for n in sc.streams if n in names]:
                sc.push(name, {"e": "listenKeyExpired", "E": now_ms, "listenKey": name})
                sc.streams.remove(name)
