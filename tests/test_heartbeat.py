"""The dead man's switch: the real daemon on the simulator pings a local healthchecks-style receiver
while every account is fresh, stops when the market feed stalls (the account goes blind), and
resumes when prices flow again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from daemon_harness import Receiver, daemon_config, one_long_account, running_daemon, wait_until

from monitor.config.model import ConfigError, load_config
from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(90)


class PingReceiver:
    """Counts GETs to /ping/<uuid>, like hc-ping.com or an Uptime Kuma push URL."""

    def __init__(self) -> None:
        self.pings = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _ping(self, request: web.Request) -> web.Response:
        self.pings += 1
        return web.Response(text="OK")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ping/{uuid}", self._ping)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    return one_long_account()


@pytest.fixture
async def pinged() -> AsyncIterator[PingReceiver]:
    rx = PingReceiver()
    await rx.start()
    yield rx
    assert rx.runner is not None
    await rx.runner.cleanup()


@pytest.mark.slow
async def test_pings_while_fresh_and_stop_when_a_feed_goes_stale(
    tmp_path: Path, sim: Simulator, receiver: Receiver, pinged: PingReceiver
) -> None:
    """Pings arrive while the account is fresh; none while its prices are stale; they resume after."""
    path = daemon_config(tmp_path, sim, receiver, stale_after="2s")
    data = yaml.safe_load(path.read_text())
    data["heartbeat"] = {"url": pinged.url, "every": "200ms", "timeout": "2s"}
    path.write_text(yaml.safe_dump(data))
    async with running_daemon(path) as daemon:
        stats = daemon.heartbeat
        await wait_until(lambda: pinged.pings >= 3, what="three pings while fresh")
        assert stats.sent == pinged.pings or stats.sent == pinged.pings - 1  # one may be in flight

        engine = daemon.engine
        assert engine is not None
        await sim.inject_fault({"kind": "stall", "target": "streams", "duration": 3600})
        await wait_until(lambda: bool(engine.stale), within=20, what="the account blind")
        skipped = stats.skipped
        await wait_until(lambda: stats.skipped > skipped, what="the heartbeat withheld")
        at_stale = pinged.pings  # from here on every beat sees the blind account
        skipped = stats.skipped
        await wait_until(lambda: stats.skipped >= skipped + 5, what="five more withheld beats")
        assert pinged.pings == at_stale and not daemon.ready()
        unit = daemon.status()[0]  # /status says the same: blind, and why
        assert unit["blind"] and unit["state"] == "blind" and "no price for BTCUSDT" in unit["reason"]

        await sim.clear_faults()
        await wait_until(lambda: pinged.pings > at_stale + 2, within=20, what="pings again once fresh")


def test_heartbeat_config_is_checked(tmp_path: Path) -> None:
    """A heartbeat URL that is not http(s) is a one-line config error that does not echo the URL."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "accounts": [{"name": "a", "api_key": "k", "api_secret": "s"}],
        "notify": {"routes": {"c": {"urls": ["console://"]}}},
        "heartbeat": {"url": "hc-ping.com/secret-uuid"},
    }))  # fmt: skip
    with pytest.raises(ConfigError, match=r"heartbeat\.url: expected an http\(s\) URL") as info:
        load_config(path)
    assert "secret-uuid" not in str(info.value)
