"""Small scriptable Binance-like servers on 127.0.0.1 for the exchange-layer tests.

``FakeRest`` is an aiohttp app answering Binance REST paths from a script of replies per path
(status, JSON body, headers, delay), recording every request. ``FakeWs`` is a ``websockets`` server
whose behaviour per connection is a coroutine the test supplies.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


MARGIN_ACCOUNT = {
    "accountType": "MARGIN_1",
    "marginLevel": "2.5",
    "totalAssetOfBtc": "1.0",
    "totalLiabilityOfBtc": "0.4",
    "userAssets": [
        {"asset": "BTC", "free": "1.5", "locked": "0.1", "borrowed": "0", "interest": "0", "netAsset": "1.6"},
        {
            "asset": "USDT",
            "free": "100",
            "locked": "0",
            "borrowed": "20000",
            "interest": "1.25",
            "netAsset": "-1",
        },
        {"asset": "ETH", "free": "0", "locked": "0", "borrowed": "0", "interest": "0", "netAsset": "0"},
    ],
}


class FakeRest:
    """A scriptable REST server: unscripted paths answer with defaults (ping, time, account)."""

    def __init__(self) -> None:
        self.scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.defaults: dict[str, Reply] = {
            "/api/v3/ping": Reply(body={}),
            "/sapi/v1/margin/account": Reply(body=MARGIN_ACCOUNT),
        }
        self.seen: list[Seen] = []
        self.clock_offset_ms = 0
        self.base_url = ""

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies``, in order, then the default."""
        self.scripts[path].extend(replies)

    def count(self, path: str) -> int:
        """How many requests reached ``path``."""
        return sum(1 for s in self.seen if s.path == path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()} if request.can_read_body else {}
        self.seen.append(Seen(request.method, request.path, dict(request.query), form, dict(request.headers)))
        queue = self.scripts.get(request.path)
        if queue:
            reply = queue.popleft()
        elif request.path == "/api/v3/time":
            reply = Reply(body={"serverTime": int(time.time() * 1000) + self.clock_offset_ms})
        else:
            reply = self.defaults.get(request.path, Reply(404, {"code": -1000, "msg": "unknown path"}))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.body if isinstance(reply.body, bytes) else orjson.dumps(reply.body)
        return web.Response(
            status=reply.status, body=body, headers=reply.headers, content_type="application/json"
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeRest]:
        """Serve on 127.0.0.1, a free port."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            await runner.cleanup()


Handler = Callable[[ServerConnection], Awaitable[None]]


class FakeWs:
    """A websockets server; ``handler`` is swapped by tests; ``paths`` records each connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.paths: list[str] = []
        self.received: list[Any] = []
        self.url = ""

    async def _serve(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.paths.append(ws.request.path)
        await self.handler(ws)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeWs]:
        """Serve on 127.0.0.1, a free port."""
        async with serve(self._serve, "127.0.0.1", 0, close_timeout=0.5) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            yield self


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition()`` holds (polling every 5 ms), or fail the test."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - conditions span several objects; polling is simplest
            await asyncio.sleep(0.005)


def book_ticker(symbol: str, bid: float, ask: float, update: int = 1) -> str:
    """A combined-stream bookTicker frame."""
    data = {"u": update, "s": symbol, "b": f"{bid:.8f}", "B": "1", "a": f"{ask:.8f}", "A": "1"}
    return orjson.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data}).decode()
