"""Why an account cannot be loaded (monitor.exchange.diagnose), from real failures where they can be made."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest
from daemon_harness import Receiver, daemon_config

from monitor.app.components import QUICK_LOAD
from monitor.config.model import load_config
from monitor.exchange.diagnose import diagnose
from monitor.exchange.errors import ExchangeRequestError, ExchangeUnavailable, KeyRejected, RateLimited
from monitor.exchange.rest import RestCaller, RetryPolicy, transport_cause
from monitor.exchange.supervisor import Backoff
from monitor.risk.book import AccountBook
from monitor.sim import Simulator
from monitor.watch.accounts import Endpoints, build_watchers
from monitor.watch.notices import Notice


async def test_refused_connection_is_told_as_refused(refused_port: int) -> None:
    """A real refused TCP connection, through the REST retry loop: cause ``refused``, one clear line."""
    port = refused_port
    async with aiohttp.ClientSession() as session:

        async def request() -> object:
            async with session.get(f"http://127.0.0.1:{port}/api/v3/ping") as reply:
                return await reply.json()

        caller = RestCaller(None, "main", RetryPolicy(attempts=2, backoff=Backoff(0.01, 0.01), quiet=True))
        with pytest.raises(ExchangeUnavailable) as failed:
            await caller.call("ping", request)
    assert failed.value.cause == "refused"
    found = diagnose(failed.value)
    assert found.kind == "refused" and found.reason.startswith("the connection to the exchange is refused")


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (ExchangeUnavailable("ping: gave up", "dns"), "dns", "does not resolve (DNS failure"),
        (ExchangeUnavailable("x: gave up", "server_error"), "server_error", "HTTP 5xx"),
        (ExchangeUnavailable("x: gave up", "clock_skew"), "clock_skew", "clock is too far from Binance's"),
        (ExchangeUnavailable("x: gave up", "timeout"), "timeout", "does not answer in time"),
        (RateLimited("margin/account", 300), "rate_limited", "rate-limits or bans this IP"),
        (KeyRejected("main", -2015, "Invalid API-key, IP, or permissions for action."), "key_rejected",
         "IP is not on the key's IP whitelist"),
        (KeyRejected("main", -1022, "Signature for this request is not valid."), "key_1022",
         "api_secret does not match"),
        (ExchangeRequestError("margin/account", 400, -1121, "Invalid symbol."), "request_1121",
         "Binance refused a request"),
    ],
)  # fmt: skip
def test_each_problem_has_a_stable_kind_and_a_plain_reason(error: Exception, kind: str, words: str) -> None:
    """The kind is what decides "already told"; the reason names the problem and what to check."""
    found = diagnose(error)
    assert found.kind == kind and words in found.reason
    assert "\n" not in found.reason


def test_timeouts_are_timeouts() -> None:
    """A timeout below HTTP is sorted as such (the other transport causes need a live network)."""
    assert transport_cause(TimeoutError()) == "timeout"
    assert transport_cause(aiohttp.ClientPayloadError("x")) == "network"


async def test_dns_failure_is_told_as_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host name that does not resolve (the resolver is the one thing faked: a real lookup would need
    the network), through a real aiohttp session and the REST retry loop: cause ``dns``."""
    real = socket.getaddrinfo

    def no_such_host(host: object, *args: object, **kwargs: object) -> object:
        if host == "api.binance.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    async with aiohttp.ClientSession() as session:

        async def request() -> object:
            async with session.get("http://api.binance.invalid/api/v3/ping") as reply:
                return await reply.json()

        caller = RestCaller(None, "main", RetryPolicy(attempts=1, quiet=True))
        with pytest.raises(ExchangeUnavailable) as failed:
            await caller.call("ping", request)
    found = diagnose(failed.value)
    assert (failed.value.cause, found.kind) == ("dns", "dns")
    assert "does not resolve" in found.reason


async def test_a_ban_at_load_is_waited_out_whole(tmp_path: Path, sim: Simulator) -> None:
    """An IP ban longer than one call may wait (418, Retry-After 300 s) while loading: told once as a
    ban, and the next attempt waits the ban out instead of asking again after the short backoff."""
    meter = sim.engine.meter
    meter._banned_until["127.0.0.1"] = meter.now_ms() + 300_000
    rx = Receiver()
    path = daemon_config(tmp_path, sim, rx)
    config = load_config(path)
    endpoints = Endpoints(sim.base_url, sim.stream_url, sim.ws_api_url, sim.risk_stream_url)
    notices: list[Notice] = []
    (watcher,) = build_watchers(config, path, endpoints, AccountBook(), lambda _: None, notices)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        meter._banned_until.clear()  # the ban is over once waited out

    try:
        assert not await watcher.load(QUICK_LOAD)
        assert watcher.problem is not None and watcher.problem.kind == "rate_limited"
        assert await watcher.load_until_loaded(Backoff(initial=0.01, maximum=0.01), QUICK_LOAD, sleep=sleep)
    finally:
        await watcher.close()
    assert len(waits) == 1 and waits[0] >= 290
    assert [n.rule for n in notices] == ["account_unreachable", "account_loaded"]
