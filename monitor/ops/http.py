"""The daemon's HTTP surface: ``/metrics``, ``/healthz``, ``/readyz`` and ``/status``.

- ``/healthz`` — liveness: 200 whenever the event loop is running (it answers from that loop).
- ``/readyz`` — readiness: 200 only while ``ready()`` is true (every account fresh), else 503.
- ``/metrics`` — Prometheus exposition of :class:`monitor.ops.metrics.Metrics` (OpenMetrics on request).
- ``/status`` — JSON list of unit dicts, the same as ``margin-monitor status --json``.
- ``/`` and ``/page/*`` — the status page (``monitor.ops.page``), when the caller passes its ``routes``;
  they sit behind the same token rule as ``/status``.

- ``/silences`` — ``GET``: the active silences (``?all=1``: also those ended within a week);
  ``POST`` a JSON ``{"target": "demo:BTCUSDT", "bar": "margin_call", "for": "2h" | "until_resolved":
  true, "comment": "…"}`` → 201 and the silence; ``DELETE /silences/ID`` ends one.

Binds 127.0.0.1 unless told otherwise. With a ``token``, everything but ``/healthz`` and ``/readyz``
needs ``Authorization: Bearer <token>``, compared in constant time; anything else gets 401. The probes
stay open so container and orchestrator probes need no secret: they reveal only a yes/no.

The rules without a token (:func:`serves_private`, :func:`serves_writes`):

- anything that changes state (``POST``/``DELETE /silences``) is not served at all;
- on a loopback address, ``/status`` and ``GET /silences`` are served (only local users reach them);
- on any other address (``0.0.0.0``) other hosts get only ``/healthz``, ``/readyz`` and ``/metrics``:
  ``/status`` and ``/silences``, which list balances and accounts, answer them 403 saying a token is
  needed (and the start-up log warns); clients on the same host (a loopback peer, e.g. the CLI or a
  probe inside the container) are still served. Pages that show balances follow the same rule
  (:func:`serves_private`, then :func:`private_allowed` per request).
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

from monitor.config.duration import parse_duration
from monitor.notify.silence_stage import SilenceApi
from monitor.notify.silences import SilenceError
from monitor.ops.metrics import Metrics

log = structlog.get_logger(__name__)

__all__ = ["OPEN_PATHS", "HttpServer", "private_allowed", "serves_private", "serves_writes", "start_http"]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
PUBLIC_PATHS = OPEN_PATHS | {"/metrics"}  # served to the network without a token
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


def serves_private(host: str, token: str | None) -> bool:
    """Whether endpoints that reveal balances or accounts are served: with a token, or on loopback."""
    return bool(token) or _is_loopback(host)


def serves_writes(token: str | None) -> bool:
    """Whether endpoints that change state are served: only with a token, always."""
    return bool(token)


def private_allowed(request: web.Request, private: bool) -> bool:
    """Per request: a balance-revealing endpoint is served when :func:`serves_private` held at start,
    or the peer is on this host (loopback)."""
    return private or _is_loopback(request.remote or "")


def _private_middleware(private: bool) -> Middleware:
    """Without a token: everything but :data:`PUBLIC_PATHS` (so /status, /silences, the page) only
    where :func:`private_allowed`."""

    @web.middleware
    async def refuse_network(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in PUBLIC_PATHS and not private_allowed(request, private):
            log.warning("http_private_refused", path=request.path, remote=request.remote)
            return _private_refused(request)
        return await handler(request)

    return refuse_network


def _private_refused(request: web.Request) -> web.Response:
    why = f"{request.path} is not served on a non-loopback address without http.token"
    return _json({"error": f"{why}; set http.token or listen on 127.0.0.1"}, status=403)


def _silence_routes(app: web.Application, api: SilenceApi, *, writes: bool) -> None:
    async def list_silences(request: web.Request) -> web.Response:
        ended = request.query.get("all", "") in ("1", "true", "yes")
        return _json([s.to_dict() for s in api.listing(include_ended=ended)])

    async def add_silence(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise SilenceError("expected a JSON object")
            target, bar, comment = body.get("target"), body.get("bar"), body.get("comment", "")
            if not isinstance(target, str) or not isinstance(comment, str):
                raise SilenceError("'target' (ACCOUNT or ACCOUNT:PAIR) and 'comment' must be strings")
            if bar is not None and not isinstance(bar, str):
                raise SilenceError("'bar' must be a rule name such as margin_call")
            until_resolved, duration = bool(body.get("until_resolved")), body.get("for")
            if until_resolved == (duration is not None):
                raise SilenceError("give exactly one of 'for' (a duration such as 2h) or 'until_resolved'")
            seconds = None if duration is None else parse_duration(duration)
            silence = api.add(target, bar=bar, duration=seconds, comment=comment)
        except (SilenceError, ValueError) as exc:  # ValueError: bad JSON or duration
            return _json({"error": str(exc).splitlines()[0]}, status=400)
        return _json(silence.to_dict(), status=201)

    async def lift_silence(request: web.Request) -> web.Response:
        silence = api.lift(request.match_info["id"])
        if silence is None:
            return _json({"error": f"no active silence {request.match_info['id']!r}"}, status=404)
        return _json(silence.to_dict())

    app.router.add_get("/silences", list_silences)
    if writes:
        app.router.add_post("/silences", add_silence)
        app.router.add_delete("/silences/{id}", lift_silence)


def _build_app(
    metrics: Metrics,
    status: Callable[[], list[dict[str, Any]]],
    ready: Callable[[], bool],
    token: str | None,
    routes: Callable[[web.Application], None] | None = None,
    *,
    private: bool = True,
    silences: SilenceApi | None = None,
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

    middlewares: list[Middleware] = [_auth_middleware(token)] if token else [_private_middleware(private)]
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/status", status_handler)
    if silences is not None:
        _silence_routes(app, silences, writes=serves_writes(token))
    if routes is not None:  # the status page (monitor.ops.page): behind the same middlewares as /status
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
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


async def start_http(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    metrics: Metrics,
    status: Callable[[], list[dict[str, Any]]],
    ready: Callable[[], bool],
    token: str | None = None,
    routes: Callable[[web.Application], None] | None = None,
    silences: SilenceApi | None = None,
) -> HttpServer:
    """Serve the endpoints on ``host:port`` (port 0 picks a free one) and return the running server.

    Raises ``OSError`` when the address cannot be bound (the caller reports it as a startup error).
    """
    if not _is_loopback(host) and not token:
        served = "/healthz /readyz /metrics only: /status and the page need http.token beyond loopback"
        log.warning("http_exposed_without_token", host=host, port=port, served=served)
    private = serves_private(host, token or None)
    app = _build_app(metrics, status, ready, token or None, routes, private=private, silences=silences)
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
