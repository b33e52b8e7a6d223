"""Binance's WebSocket connection limit: attempts per client IP in a sliding window, refused at the handshake.

Binance, web-socket-streams.md "Websocket Limits": "There is a limit of **300 connections per
attempt every 5 minutes per IP**"; web-socket-api.md "Connection limits": "There is a limit of
**300 connections per attempt every 5 minutes**. The connection is per **IP address**." The
documented refusal is errors.md's -1034 TOO_MANY_CONNECTIONS, "Too many connection attempts from
IP; current limit is %s per '%s'.", and HTTP 429 is "you have exceeded API request rate limit,
please slow down" (web-socket-api.md "Status codes"; rest-api.md: "When a 429 is received, it's
your obligation as an API to back off and not spam the API. Repeatedly violating rate limits
and/or failing to back off after receiving 429s will result in an automated IP ban (HTTP status
418)"). How the handshake itself is refused is not documented: the simulator answers the upgrade
request with HTTP 429, that -1034 body and a ``Retry-After`` (seconds until the oldest attempt
leaves the window; our choice, as on REST 429s).

One budget per client IP over every WebSocket endpoint (``/ws``, ``/ws/<streams or listen key>``,
``/stream``, ``/ws-api/v3``): market streams, the Risk Data Stream and the WebSocket API alike.
Attempts that were let through count; refused ones are counted apart (:attr:`refused`, and each in
:attr:`log` with its time, for tests checking that nobody tried again before ``Retry-After``).
Limit and window come from the scenario (``limits.ws_connections``, ``limits.ws_connection_window``;
300 per 300 s by default), so a test can use 10 per few seconds. Times are the simulator's wall clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

__all__ = ["TOO_MANY_CONNECTIONS", "Attempt", "ConnectionLimit"]

TOO_MANY_CONNECTIONS = -1034  # errors.md: TOO_MANY_CONNECTIONS
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One handshake seen: when (wall seconds), from where, on which path, and whether let through."""

    at: float
    ip: str
    path: str
    admitted: bool
    retry_after: float = 0.0


def _window_words(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} seconds"


@dataclass
class ConnectionLimit:
    """Attempts per IP in a sliding window; see the module docstring."""

    limit: int
    window: float
    clock: Callable[[], float]
    admitted: int = 0
    refused: int = 0
    log: deque[Attempt] = field(default_factory=lambda: deque(maxlen=100_000))
    _times: dict[str, deque[float]] = field(default_factory=dict)

    def check(self, ip: str, path: str) -> float | None:
        """Count an attempt from ``ip``: None when it may connect, else the seconds to wait."""
        now = self.clock()
        times = self._times.setdefault(ip, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            wait = times[len(times) - self.limit] + self.window - now
            self.refused += 1
            self.log.append(Attempt(now, ip, path, False, wait))
            return wait
        times.append(now)
        self.admitted += 1
        self.log.append(Attempt(now, ip, path, True))
        return None

    def guard(self, handler: Handler) -> Handler:
        """``handler`` behind the limit: past it, HTTP 429 with the -1034 body and ``Retry-After``."""

        async def limited(request: web.Request) -> web.StreamResponse:
            wait = self.check(request.remote or "?", request.path)
            if wait is None:
                return await handler(request)
            msg = (
                f"Too many connection attempts from IP; current limit is {self.limit} per "
                f"'{_window_words(self.window)}'."
            )
            return web.Response(
                status=429,
                body=orjson.dumps({"code": TOO_MANY_CONNECTIONS, "msg": msg}),
                content_type="application/json",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

        return limited
