"""One server-side websocket the way Binance runs it: queued sends, pings, pong deadline, faults.

Each connection has a writer task draining a bounded queue (a consumer too slow to keep up is
disconnected, as Binance does) and a pinger: a ping every ``ping_interval`` s, the connection
closed when no pong arrives within ``pong_timeout`` s. While its target is stalled, the
connection sends nothing and answers no pings, yet stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
import structlog
from aiohttp import WSMsgType, web

from monitor.sim.faults import FaultBoard

log = structlog.get_logger(__name__)
Target = Literal["streams", "ws_api"]
QUEUE_SIZE = 10_000


def dumps(payload: Any) -> str:
    """Compact JSON, as Binance sends it."""
    return orjson.dumps(payload).decode()


class Connection:
    """A websocket with an outgoing queue; subclasses add what is subscribed on it."""

    def __init__(
        self,
        request: web.Request,
        target: Target,
        board: FaultBoard,
        *,
        ping_interval: float,
        pong_timeout: float,
        max_incoming_per_second: int | None = None,
    ) -> None:
        self.ws = web.WebSocketResponse(autoping=False, timeout=1.0, max_msg_size=1 << 20)
        self.target = target
        self._request = request
        self._board = board
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._max_incoming = max_incoming_per_second
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_SIZE)
        self._last_pong = time.monotonic()
        self._incoming: list[float] = []
        self._close: tuple[int, str] = (1000, "")

    def send(self, payload: Any, symbol: str | None = None) -> None:
        """Queue a JSON message (dropped while stalled for ``symbol``)."""
        self.send_text(dumps(payload), symbol)

    def send_text(self, text: str, symbol: str | None = None) -> None:
        """Queue a text frame as is (dropped while stalled)."""
        if self.ws.closed or self._board.stalled(self.target, symbol):
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("sim_ws_slow_consumer", target=self.target)
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (the client sees code 1006)."""
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    def close_soon(self, code: int, reason: str = "") -> None:
        """Queue a close frame after the messages already queued."""
        self._close = (code, reason)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def _writer(self) -> None:
        while True:
            text = await self._queue.get()
            if text is None:
                code, reason = self._close
                await self.ws.close(code=code, message=reason.encode())
                return
            await self.ws.send_str(text)

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            if self._board.stalled(self.target):
                continue
            if time.monotonic() - self._last_pong > self._pong_timeout + self._ping_interval:
                log.info("sim_ws_pong_timeout", target=self.target)
                self.close_soon(1008, "Pong timeout")
                return
            await self.ws.ping(str(int(time.time() * 1000)).encode())

    def _too_many(self) -> bool:
        if self._max_incoming is None:
            return False
        now = time.monotonic()
        self._incoming = [t for t in self._incoming if now - t < 1.0]
        self._incoming.append(now)
        return len(self._incoming) > self._max_incoming

    async def run(self, on_text: Callable[[str], Awaitable[None]]) -> web.WebSocketResponse:
        """Serve the connection until either side closes it."""
        await self.ws.prepare(self._request)
        tasks = [asyncio.create_task(self._writer()), asyncio.create_task(self._pinger())]
        try:
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG) and self._too_many():
                    log.info("sim_ws_too_many_messages", target=self.target)
                    self.close_soon(1008, "Too many requests")
                    continue
                if msg.type == WSMsgType.TEXT:
                    await on_text(msg.data)
                elif msg.type == WSMsgType.PING and not self._board.stalled(self.target):
                    await self.ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    self._last_pong = time.monotonic()
        except ConnectionResetError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close()
        return self.ws
