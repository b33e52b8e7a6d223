"""Helpers for end-to-end tests: an HTTP receiver for Apprise ``json://`` and a daemon on the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from monitor.alerts.policy import AlertEvent, AlertPolicy, LevelRule, PolicyConfig
from monitor.config.model import Config, load_config
from monitor.notify.dispatcher import Dispatcher
from monitor.notify.messages import Message
from monitor.service import Service
from monitor.sim import Simulator


class Receiver:
    """A local webhook that Apprise's ``json://`` posts to; it can play dead (HTTP 500)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.failing = False
        self.attempts = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook?cto=1&rto=2"

    async def _hook(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.failing:
            return web.Response(status=500, text="down")
        self.messages.append(await request.json())
        self._arrived.set()
        return web.Response(text="ok")

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def titles(self) -> list[str]:
        return [str(m.get("title", "")) for m in self.messages]

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], within: float = 10.0) -> None:
        """Wait until the received messages satisfy ``predicate`` (fails the test after ``within`` s)."""
        deadline = time.monotonic() + within
        while not predicate(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"receiver did not get the expected messages; got {self.titles()}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.2))


def daemon_config(
    tmp_path: Path, sim: Simulator, receiver: Receiver, *, accounts: list[dict[str, Any]] | None = None,
    snapshot_interval: str = "5s", **alerts: Any,
) -> Path:  # fmt: skip
    """Write a config pointing the real clients at ``sim`` and every alert at ``receiver``."""
    data: dict[str, Any] = {
        "exchange": sim.exchange_config(snapshot_interval=snapshot_interval, resync_interval="5s"),
        "accounts": accounts or [{"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}],
        "alerts": {"hysteresis": 0.02, "stale_after": "3s", **alerts},
        "notify": {"routes": {"hook": {"urls": [receiver.url]}}},
        "state_dir": str(tmp_path / "state"),
        "log": {"format": "json", "level": "info"},
        "http": {"enabled": True, "listen": "127.0.0.1:0"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.asynccontextmanager
async def running_daemon(config_path: Path) -> AsyncIterator[Service]:
    """A started daemon (startup done), shut down cleanly at exit."""
    config: Config = load_config(config_path)
    service = Service(config, config_path)
    try:
        await service.startup()
        yield service
    finally:
        await service.shutdown()


async def wait_until(predicate: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 20 ms; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def one_long_account() -> dict[str, Any]:
    """A scenario with one cross account, BTC collateral against a USDT loan, level 1.6 at the start.

    level(p) = 1.0·p / 18,750: 1.6 at p = 30,000; it meets 1.5 at 28,125, 1.3 at 24,375, 1.1 at 20,625.
    """
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "ETHUSDT": "2000"},
        "accounts": [
            {
                "name": "demo",
                "api_key": "demo-key",
                "api_secret": "demo-secret",
                "cross": [
                    {"asset": "BTC", "free": "1", "locked": "0", "borrowed": "0", "interest": "0"},
                    {"asset": "USDT", "free": "0", "locked": "0", "borrowed": "18750", "interest": "0"},
                ],
            }
        ],
    }


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    """The captured log events called ``name``."""
    return [e for e in logs if e.get("event") == name]


def assert_alive(daemon: Service, logs: list[MutableMapping[str, Any]]) -> None:
    """The daemon still runs: no task died, the market task is up, the watchdog would be fed."""
    assert not events(logs, "task_failed"), events(logs, "task_failed")
    assert daemon._market_task is not None and not daemon._market_task.done()
    assert daemon.healthy()


def cross_account(name: str, *assets: tuple[str, str, str]) -> dict[str, Any]:
    """A scenario account ``name`` (key ``name-key``) with cross rows ``(asset, free, borrowed)``."""
    return {
        "name": name,
        "api_key": f"{name}-key",
        "api_secret": f"{name}-secret",
        "cross": [{"asset": a, "free": free, "borrowed": borrowed} for a, free, borrowed in assets],
    }


def crossing(unit: str) -> AlertEvent:
    """``unit`` crossing 1.5 (the normal rung, routed to ``chat``) on one tick."""
    policy = AlertPolicy(PolicyConfig(levels=(LevelRule("normal", 1.5, ("chat",)),)))
    now = time.time()
    policy.evaluate(unit, 1.6, None, now)
    (event,) = policy.evaluate(unit, 1.45, None, now)
    return event


async def deliver_and_stop(dispatcher: Dispatcher, receiver: Receiver, n: int = 10) -> list[AlertEvent]:
    """``n`` crossings through a started ``dispatcher`` (outbox, retry stage, send stage) until
    ``receiver`` has them all; then drain and stop it. The events, for the caller's checks."""
    events = [crossing(f"cross:{i}") for i in range(n)]
    await dispatcher.enqueue_many([(e, Message(e.dedupe_key, "b", "warning")) for e in events])
    await receiver.wait_for(lambda got: len(got) == n)
    await dispatcher.drain(5.0)
    await dispatcher.stop()
    return events
