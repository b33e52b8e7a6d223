"""The status page in a real headless Chromium, served by a real daemon on the simulator.

Scenario (tests/conftest.py DEMO_SCENARIO), BTC at 30,000:
    cross:demo      BTC 1.2 held, USDT 500 held, 20,003.1 owed: (36,000 + 500) / 20,003.1 = 1.8247
    isolated:demo:BTCUSDT  BTC 0.5, USDT 100 held, 9,000.4 owed: 15,100 / 9,000.4 = 1.6777
    cross:other     ETH 3 held, nothing owed: no debt
At BTC 24,000 cross:demo is (28,800 + 500) / 20,003.1 = 1.4648: under the 1.5 bar, an alert fires.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from browser import chromium, chromium_binary
from daemon_harness import Receiver, daemon_config, running_daemon, wait_until

import monitor.app.periodic
from monitor.sim import Simulator

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (deploy/ci-setup.sh)"),
]

ACCOUNTS = [
    {"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret", "isolated": "all"},
    {"name": "other", "api_key": "other-key", "api_secret": "other-secret"},
]
SCREENSHOT = Path("/tmp/margin-monitor-page.png")
PHONE_SCREENSHOT = Path("/tmp/margin-monitor-page-phone.png")


def card(unit: str, selector: str = "") -> str:
    """JS for the element matching ``selector`` inside the card of ``unit`` (the card itself if empty)."""
    return f"document.querySelector('[data-unit=\"{unit}\"] {selector}'.trim())"


def level(unit: str) -> str:
    return card(unit, ".level") + "?.textContent"


@pytest.mark.slow
async def test_page_shows_units_levels_charts_and_follows_a_price_move(
    tmp_path: Path, sim: Simulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every unit is named with its level as a number, the chart has the bar lines, a price move shows
    up without a reload, and the alert it fires is marked on the chart."""
    monkeypatch.setattr(monitor.app.periodic, "HISTORY_EVERY", 0.2)
    config = daemon_config(tmp_path, sim, receiver, accounts=ACCOUNTS)
    async with running_daemon(config) as daemon, chromium(tmp_path / "profile") as page:
        await wait_until(daemon.ready, what="daemon ready")
        assert daemon.http is not None
        await page.viewport(1280, 900)
        await page.goto(daemon.http.url + "/")
        await page.wait_for("document.querySelectorAll('section.unit').length === 3")
        names = await page.eval("[...document.querySelectorAll('.unit .name')].map(e => e.textContent)")
        assert sorted(names) == ["demo (cross)", "demo BTCUSDT (isolated)", "other (cross)"], names
        assert await page.eval(level("cross:demo")) == "1.825"
        assert await page.eval(level("isolated:demo:BTCUSDT")) == "1.678"
        assert await page.eval(level("cross:other")) == "no debt"
        assert "1.825" in await page.eval(card("cross:demo", ".exchange") + ".textContent")

        chart = card("cross:demo", "svg.chart")
        lines = f"[...{chart}.querySelectorAll('line.bar')]"
        bars = await page.wait_for(f"{lines}.length >= 3 && {lines}.map(l => l.dataset.bar)")
        assert sorted(bars) == ["liquidation", "margin_call", "normal"]
        await page.wait_for(f"{chart}.querySelector('polyline.line') !== null")
        stress = await page.eval(card("cross:demo", "table.stress") + ".textContent")
        assert "-5 %" in stress and "-30 %" in stress

        await sim.set_price("BTCUSDT", "24000")
        await wait_until(lambda: (daemon.book.level("cross:demo") or 0) < 1.5, what="level under 1.5")
        # the page polls: the new level appears without a reload
        await page.wait_for(f"{level('cross:demo')} === '1.465'")
        assert await page.eval("document.body.dataset.polls > 1")
        assert await page.eval(card("cross:demo") + ".className.includes('s-warn')")
        await page.wait_for(card("cross:demo", ".firing") + "?.textContent.includes('firing')")
        # the firing alert reaches the history and its marker the chart (charts refresh every 15 s)
        await wait_until(
            lambda: (
                daemon.recorder is not None
                and bool(daemon.recorder.history.events("cross:demo", daemon.clock()))
            ),
            what="alert recorded",
        )
        await page.eval("for (const c of cards.values()) c.chartAt = 0; poll()")
        await page.wait_for(f"{chart}.querySelector('path.event.fired') !== null")
        assert int(await page.eval(f"{chart}.dataset.points")) >= 2
        await page.screenshot(SCREENSHOT)
        await page.viewport(390, 844, mobile=True)
        await asyncio.sleep(0.3)
        width = await page.eval("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone: {width} px"
        await page.screenshot(PHONE_SCREENSHOT)
    assert await asyncio.to_thread(lambda: SCREENSHOT.stat().st_size) > 10_000


async def test_page_and_its_data_need_the_token_like_status(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """With an HTTP token, /, /page/units and /page/history answer 401 without it, like /status."""
    path = daemon_config(tmp_path, sim, receiver, accounts=ACCOUNTS)
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data["http"]["token"] = "page-token-123"
    path.write_text(yaml.safe_dump(data))
    async with running_daemon(path) as daemon, aiohttp.ClientSession() as session:
        assert daemon.http is not None
        base = daemon.http.url
        for route in ("/", "/page/units", "/page/history?unit=cross:demo", "/static/page.js", "/status"):
            async with session.get(base + route) as r:
                assert r.status == 401, route
            async with session.get(base + route, headers={"Authorization": "Bearer page-token-123"}) as r:
                assert r.status == 200, route
        auth = {"Authorization": "Bearer page-token-123"}
        async with session.get(base + "/page/history", headers=auth) as r:
            assert r.status == 400
            assert "unit is required" in (await r.json())["error"]


@pytest.mark.slow
async def test_a_blind_unit_is_shown_blind_never_safe(
    tmp_path: Path, sim: Simulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the price feed stalls past ``stale_after`` the cards turn grey, say "blind" with the
    reason, and the level is marked as not current; the summary counts them."""
    monkeypatch.setattr(monitor.app.periodic, "HISTORY_EVERY", 0.2)
    config = daemon_config(tmp_path, sim, receiver, accounts=ACCOUNTS)
    async with running_daemon(config) as daemon, chromium(tmp_path / "profile") as page:
        await wait_until(daemon.ready, what="daemon ready")
        assert daemon.http is not None
        await page.goto(daemon.http.url + "/")
        await page.wait_for(f"{level('cross:demo')} === '1.825'")
        await sim.inject_fault({"kind": "stall", "target": "streams", "duration": 3600})
        await wait_until(lambda: daemon.engine is not None and "cross:demo" in daemon.engine.stale,
                         within=20, what="unit blind")  # fmt: skip
        await page.wait_for(card("cross:demo") + ".className.includes('s-blind')")
        badge = await page.eval(card("cross:demo", ".badge.blind") + ".textContent")
        assert badge.startswith("blind")
        assert await page.eval(level("cross:demo")) == "1.825?"  # the last level, marked as not current
        assert "blind" in await page.eval("document.getElementById('summary').textContent")
