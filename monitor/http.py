"""The daemon's HTTP surface: ``/metrics``, ``/healthz``, ``/readyz`` and ``/status``.

- ``/healthz`` — liveness: 200 whenever the event loop is running (it answers from that loop).
- ``/readyz`` — readiness: 200 only while ``ready()`` is true (every account fresh), else 503.
- ``/metrics`` — Prometheus exposition of :class:`monitor.metrics.Metrics` (OpenMetrics on request).
- ``/status`` — JSON list of unit dicts, the same as ``margin-monitor status --json``.
- ``/`` and ``/page/*`` — the status page (``monitor.page``), when the caller passes its ``routes``;
  they sit behind the same token rule as ``/status``.

Binds 127.0.0.1 unless told otherwise. With a ``token``, ``/metrics`` and ``/status`` (which reveal
positions) need ``Authorization: Bearer <token>``, compared in constant time; anything else gets 401.
``/healthz`` and ``/readyz`` stay open so container and orchestrator probes need no secret: they
reveal only a yes/no. Binding a non-loopback address without a token is logged as a warning.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from monitor.metrics import Metrics

log = structlog.get_logger(__name__)

__all__ = ["OPEN_PATHS", "HttpServer", "start_http"]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
JSON = "application/json"


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json(data: object, status: int = 200) -> web.Response:
    body = orjson.dumps(data, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type=JSON)


def _auth_middleware(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            header = request.headers.get("Authorization", "")
            scheme, _, value = header.partition(" ")
            given = f"Bearer {value.strip()}".encode() if scheme.lower() == "bearer" else b""
            if not hmac.compare_digest(given, expected):
                log.warning("http_unauthorized", path=request.path, remote=request.remote)
                raise web.HTTPUnauthorized(
                    text='{"error": "unauthorized"}',
                    content_type=JSON,
                    headers={"WWW-Authenticate": 'Bearer realm="margin-monitor"'},
                )
        return await handler(request)

    return require_token


def _build_app(
    metrics: Metrics,
    status: Callable[[], list[dict[str, Any]]],
    ready: Callable[[], bool],
    token: str | None,
    routes: Callable[[web.Application], None] | None = None,
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        try:
            ok = bool(ready())
        except Exception as exc:  # a failing check means "not ready", reported
            log.error("readiness_check_failed", error_type=type(exc).__name__, error=str(exc))
            ok = False
        return _json({"ready": ok}, status=200 if ok else 503)

    async def metrics_handler(request: web.Request) -> web.Response:
        # Rendered off the loop: thousands of units take ~0.1 ms each to format, and ticks must not
        # wait for a scrape. The collectors read immutable reports from dict snapshots, so it is safe.
        body, content_type = await asyncio.to_thread(metrics.render, request.headers.get("Accept", ""))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        response.enable_compression()  # gzip/deflate only when the scraper asks (Prometheus does)
        return response

    async def status_handler(request: web.Request) -> web.Response:
        try:
            units = status()
        except Exception as exc:  # reported to the caller as 500, logged once with its type
            log.error("status_snapshot_failed", error_type=type(exc).__name__, error=str(exc))
            return _json({"error": "status unavailable"}, status=500)
        return _json(units)

    middlewares: list[Middleware] = [_auth_middleware(token)] if token else []
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/status", status_handler)
    if routes is not None:  # the status page (monitor.page): behind the same middlewares as /status
        routes(app)
    return app


class HttpServer:
    """A running HTTP surface: ``host``, the bound ``port`` and :meth:`stop`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:
        return f"HttpServer(url={self.url!r})"

    async def stop(self) -> None:
        """Stop listening and close open connections (waits at most about a second)."""
        await self._runner.cleanup()
        log.info("http_stopped", host=self.host, port=self.port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def start_http(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    metrics: Metrics,
    status: Callable[[], list[dict[str, Any]]],
    ready: Callable[[], bool],
    token: str | None = None,
    routes: Callable[[web.Application], None] | None = None,
) -> HttpServer:
    """Serve the endpoints on ``host:port`` (port 0 picks a free one) and return the running server.

    Raises ``OSError`` when the address cannot be bound (the caller reports it as a startup error).
    """
    if not _is_loopback(host) and not token:
        log.warning("http_exposed_without_token", host=host, port=port)
    app = _build_app(metrics, status, ready, token or None, routes)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    log.info("http_listening", host=host, port=bound_port, auth=bool(token))
    return HttpServer(runner, host, bound_port)
