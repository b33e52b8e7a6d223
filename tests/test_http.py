"""The HTTP surface on a real loopback port, through a real aiohttp client."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from monitor.notify.silence_stage import SilenceApi, SilenceRegistry
from monitor.ops.http import HttpServer, start_http
from monitor.ops.metrics import Metrics
from monitor.risk.report import UnitReport, unit_id

TOKEN = "s3cret-token-for-tests"


def make_report() -> UnitReport:
    """A cross account at level 1.42."""
    return UnitReport(
        unit=unit_id("main"),
        account="main",
        kind="cross",
        symbol=None,
        quote="USDT",
        margin_level=1.42,
        bars={"margin_call": 1.3, "liquidation": 1.1},
        liquidation_bar="liquidation",
        distances={"margin_call": -0.06, "liquidation": -0.2},
        liquidation_prices={"BTC": 52000.0},
        total_asset_value=14200.0,
        total_liability_value=10000.0,
        restore_target=1.5,
    )


class State:
    """What the daemon would expose: a readiness flag and unit snapshots."""

    def __init__(self) -> None:
        self.ready = False
        self.units: list[dict[str, Any]] = [make_report().to_json()]

    def status(self) -> list[dict[str, Any]]:
        return self.units

    def is_ready(self) -> bool:
        return self.ready


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def serve(state: State, token: str | None = None) -> tuple[HttpServer, Metrics]:
    metrics = Metrics(process_metrics=False)
    metrics.observe_unit(make_report())
    server = await start_http(metrics=metrics, status=state.status, ready=state.is_ready, token=token)
    return server, metrics


async def get(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str]:
    async with session.get(url, headers=headers) as response:
        return response.status, await response.text()


async def test_endpoints_without_token(session: aiohttp.ClientSession) -> None:
    """healthz is 200, readyz follows the callable, status returns the units, metrics the exposition."""
    state = State()
    server, _ = await serve(state)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        assert await get(session, server.url + "/healthz") == (200, '{"status":"ok"}')
        assert await get(session, server.url + "/readyz") == (503, '{"ready":false}')
        state.ready = True
        assert await get(session, server.url + "/readyz") == (200, '{"ready":true}')

        async with session.get(server.url + "/status") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            assert await response.json() == state.units

        async with session.get(server.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = await response.text()
        assert 'margin_monitor_margin_level{account="main",kind="cross",symbol=""} 1.42' in body

        async with session.get(server.url + "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert await response.text() == body
    finally:
        await server.stop()


async def test_token_guards_metrics_and_status(session: aiohttp.ClientSession) -> None:
    """With a token, /metrics and /status answer 401 unless the right bearer token is sent."""
    state = State()
    server, _ = await serve(state, token=TOKEN)
    try:
        for path in ("/metrics", "/status"):
            status, body = await get(session, server.url + path)
            assert status == 401 and "margin_monitor" not in body and "main" not in body
            assert (await get(session, server.url + path, Authorization="Bearer wrong"))[0] == 401
            assert (await get(session, server.url + path, Authorization=f"Basic {TOKEN}"))[0] == 401
            assert (await get(session, server.url + path, Authorization=f"Bearer {TOKEN}x"))[0] == 401
            assert (await get(session, server.url + path, Authorization=f"Bearer {TOKEN}"))[0] == 200
            assert (await get(session, server.url + path, Authorization=f"bearer  {TOKEN}"))[0] == 200
        async with session.get(server.url + "/status") as response:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        await server.stop()


async def test_probes_stay_open_with_a_token(session: aiohttp.ClientSession) -> None:
    """/healthz and /readyz need no token, so container and orchestrator probes carry no secret."""
    state = State()
    state.ready = True
    server, _ = await serve(state, token=TOKEN)
    try:
        assert (await get(session, server.url + "/healthz"))[0] == 200
        assert (await get(session, server.url + "/readyz"))[0] == 200
    finally:
        await server.stop()


async def test_tokens_never_reach_the_logs(session: aiohttp.ClientSession) -> None:
    """Neither the configured token nor a wrong one a client sends appears in any log event."""
    server, _ = await serve(State(), token=TOKEN)
    try:
        with capture_logs() as events:
            await get(session, server.url + "/status", Authorization="Bearer attacker-guess-123")
        assert any(event["event"] == "http_unauthorized" for event in events)
        assert TOKEN not in repr(events) and "attacker-guess-123" not in repr(events)
        assert TOKEN not in repr(server)
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/readyz", (503, '{"ready":false}')), ("/status", (500, '{"error":"status unavailable"}'))],
)
async def test_failing_callables_are_reported_not_raised(
    session: aiohttp.ClientSession, path: str, expected: tuple[int, str]
) -> None:
    """A readiness or status callable that raises yields 503 / 500 with a JSON body, logged once."""

    def broken() -> Any:
        raise RuntimeError("book not loaded")

    fail: Callable[[], Any] = broken
    server = await start_http(metrics=Metrics(process_metrics=False), status=fail, ready=fail)
    try:
        with capture_logs() as events:
            assert await get(session, server.url + path) == expected
        assert [e["error"] for e in events if e["log_level"] == "error"] == ["book not loaded"]
    finally:
        await server.stop()


async def test_stop_releases_the_port(session: aiohttp.ClientSession) -> None:
    """After stop() the port refuses connections, and the same port can be bound again."""
    server, metrics = await serve(State())
    port = server.port
    await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(session, f"http://127.0.0.1:{port}/healthz")
    again = await start_http("127.0.0.1", port, metrics=metrics, status=list, ready=lambda: True)
    try:
        assert again.port == port
        assert (await get(session, again.url + "/readyz"))[0] == 200
    finally:
        await again.stop()


async def test_non_loopback_without_token_is_warned() -> None:
    """Binding a non-loopback address without a token logs a warning naming the host."""
    with capture_logs() as events:
        server = await start_http("0.0.0.0", 0, metrics=Metrics(), status=list, ready=lambda: True)
        await server.stop()
    assert any(e["event"] == "http_exposed_without_token" and e["host"] == "0.0.0.0" for e in events)


async def test_port_in_use_raises_oserror() -> None:
    """A port that is already taken raises OSError, which the daemon turns into a startup error."""
    first = await start_http(metrics=Metrics(), status=list, ready=lambda: True)
    try:
        with pytest.raises(OSError):
            await start_http(port=first.port, metrics=Metrics(), status=list, ready=lambda: True)
    finally:
        await first.stop()


def this_hosts_address() -> str:
    """A non-loopback address of this machine (UDP connect sends nothing); skip when there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("no non-loopback interface")
        address = str(probe.getsockname()[0])
    if ipaddress.ip_address(address).is_loopback:
        pytest.skip("no non-loopback interface")
    return address


async def test_beyond_loopback_without_token_only_probes_and_metrics(session: aiohttp.ClientSession) -> None:
    """On 0.0.0.0 without a token, a client from the network gets 403 (saying why) for /status and
    /silences and 200 for the probes and /metrics; a client on this host (loopback) is still served."""
    server = await start_http("0.0.0.0", 0, metrics=Metrics(), status=State().status, ready=lambda: True,
                              silences=silence_api())  # fmt: skip
    try:
        remote = f"http://{this_hosts_address()}:{server.port}"
        for path in ("/status", "/silences"):
            status, body = await get(session, remote + path)
            assert status == 403 and "http.token" in body and "main" not in body
            assert (await get(session, f"http://127.0.0.1:{server.port}{path}"))[0] == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await get(session, remote + path))[0] == 200
    finally:
        await server.stop()


def silence_api() -> SilenceApi:
    registry = SilenceRegistry(lambda: [], lambda _: None)
    return SilenceApi(
        registry, dict, lambda: [unit_id("main")], lambda: {"margin_call", "liquidation", "blind"}
    )


async def test_silences_change_only_with_the_token(session: aiohttp.ClientSession) -> None:
    """Without a token no endpoint changes state; with one, POST/DELETE need it, and bad input is a 400
    with one line."""
    api = silence_api()
    open_server = await start_http(metrics=Metrics(), status=list, ready=lambda: True, silences=api)
    try:
        url = f"{open_server.url}/silences"
        async with session.post(url, json={"target": "main", "for": "1h"}) as response:
            assert response.status in (404, 405)
        async with session.delete(f"{url}/abc") as response:
            assert response.status in (404, 405)
        assert api.listing() == []
    finally:
        await open_server.stop()
    server = await start_http(metrics=Metrics(), status=list, ready=lambda: True, silences=api, token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        url = f"{server.url}/silences"
        async with session.post(url, json={"target": "main", "for": "1h"}) as response:
            assert response.status == 401
        for bad, why in (({"target": "main"}, "exactly one of"), ({"target": "main", "for": "x"}, "duration"),
                         ({"target": "main", "for": "1h", "bar": "margin-call"}, "no such rule"),
                         ({"target": "nobody", "for": "1h"}, "no such account")):  # fmt: skip
            async with session.post(url, json=bad, headers=auth) as response:
                assert response.status == 400 and why in (await response.json())["error"]
        async with session.post(
            url, json={"target": "main", "for": "1h", "bar": "margin_call"}, headers=auth
        ) as r:
            assert r.status == 201
            made = await r.json()
        async with session.get(url, headers=auth) as response:
            assert [s["id"] for s in await response.json()] == [made["id"]]
        async with session.delete(f"{url}/{made['id']}", headers=auth) as response:
            assert response.status == 200 and (await response.json())["expired_at"] is not None
        assert api.listing() == []
    finally:
        await server.stop()
