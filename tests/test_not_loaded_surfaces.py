"""An account that is not loaded is blind, with its reason, on every surface (issue 10, "never
silent"): ``status --json``, the console table, ``/metrics`` (``unit_state{state="blind"}`` = 1, so the
Prometheus rule MarginUnitBlind fires) and the status page (a blind card in real headless Chromium).

Two ways an account is not loaded, each end to end on the simulator: the exchange is unreachable at
start (nothing listens where it should), and the key is revoked mid-run (-2015). Accounts as in
tests/test_faults_opinion.py: ``demo`` 1 BTC against 18,750 USDT (1.6 at 30,000); ``other`` 10 ETH
against 12,500 USDT (1.6 at 2,000).
"""

from __future__ import annotations

import socket
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from browser import chromium, chromium_binary
from daemon_harness import Receiver, daemon_config, one_long_account, wait_until
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from test_faults_opinion import OTHER, both, service, stop

from monitor.cli.status_view import StatusResult, render
from monitor.service import Service
from monitor.sim import Simulator, parse_scenario, run_simulator

pytestmark = pytest.mark.timeout(120)

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    data = one_long_account()
    data["accounts"].append(OTHER)
    return data


async def get_json(daemon: Service, path: str) -> Any:
    assert daemon.http is not None
    async with aiohttp.ClientSession() as http, http.get(daemon.http.url + path) as reply:
        assert reply.status == 200, path
        return await reply.json()


async def scrape(daemon: Service) -> Samples:
    assert daemon.http is not None
    samples: Samples = defaultdict(list)
    async with aiohttp.ClientSession() as http, http.get(daemon.http.url + "/metrics") as reply:
        for family in text_string_to_metric_families(await reply.text()):
            for s in family.samples:
                samples[s.name].append((dict(s.labels), float(s.value)))
    return samples


def states(samples: Samples, account: str) -> dict[str, float]:
    """``unit_state`` of ``account``'s cross unit: state → value (one series per state, never two)."""
    rows = [
        (labels["state"], v)
        for labels, v in samples.get("margin_monitor_unit_state", [])
        if labels["account"] == account
    ]
    assert len(rows) == len({s for s, _ in rows}), rows  # not two units for one account
    return dict(rows)


async def assert_blind_everywhere(daemon: Service, account: str, why: str) -> None:
    """``account`` is blind with a reason containing ``why`` on status (in-process and HTTP), the
    console table, /metrics and /page/units."""
    shown = next(u for u in daemon.status() if u["account"] == account)
    assert shown["state"] == "blind" and why in shown["reason"], shown
    assert shown["margin_level"] is None and shown["loaded"] is False
    over_http = next(u for u in await get_json(daemon, "/status") if u["account"] == account)
    assert over_http["state"] == "blind" and why in over_http["reason"]
    console = Console(width=250, record=True)  # the `status` view (monitor/cli/status_view.py)
    console.print(render(StatusResult(daemon.status(), "test")))
    lines = console.export_text().splitlines()
    row = next(x for x in lines if x.startswith("│") and f" {account} (" in x)  # its table row
    assert "BLIND" in row and "unknown" in row, row
    assert any(x.strip().startswith(f"{account} (cross): ") and why in x for x in lines), lines
    assert states(await scrape(daemon), account) == {
        "known": 0.0, "approximate": 0.0, "blind": 1.0, "no_debt": 0.0
    }  # fmt: skip
    samples = await scrape(daemon)
    levels = samples.get("margin_monitor_margin_level", [])
    assert not [v for labels, v in levels if labels["account"] == account]
    card = next(u for u in await get_json(daemon, "/page/units") if u["account"] == account)
    assert card["state"] == "blind" and why in card["reason"], card
    assert card["unit"] == f"cross:{account}" and card["firing"] == {}


async def test_exchange_down_at_start_is_blind_on_every_surface_then_known(
    tmp_path: Path, receiver: Receiver, scenario_data: dict[str, Any], refused_socket: socket.socket
) -> None:
    """Nothing listens where the exchange should be: both accounts are blind with "refused" on every
    surface; once the exchange is up they are known on every surface (the blind series goes to 0)."""
    port = refused_socket.getsockname()[1]  # refused until the simulator listens on it
    scenario = parse_scenario(scenario_data, source="<test>")
    placeholder = Simulator(scenario, realtime=False)
    placeholder.port = port
    daemon = service(both(tmp_path, placeholder, receiver))
    try:
        await daemon.startup()
        await receiver.wait_for(lambda m: len(m) >= 2)
        for account in ("demo", "other"):
            await assert_blind_everywhere(daemon, account, "refused")
        async with run_simulator(scenario, sock=refused_socket, realtime=False):
            await wait_until(daemon.ready, within=20, what="ready once the exchange is back")
            await wait_until(lambda: [u["state"] for u in daemon.status()] == ["known"] * 2, what="known")
            for account in ("demo", "other"):
                shown = next(u for u in daemon.status() if u["account"] == account)
                assert shown["state"] == "known" and "loaded" not in shown
                card = next(u for u in await get_json(daemon, "/page/units") if u["account"] == account)
                assert card["state"] == "known"
            await daemon._every_second()  # the per-second sweep has observed every unit's report
            samples = await scrape(daemon)
            for account in ("demo", "other"):
                assert states(samples, account) == {
                    "known": 1.0, "approximate": 0.0, "blind": 0.0, "no_debt": 0.0
                }  # fmt: skip
    finally:
        await stop(daemon)


async def test_revoked_key_is_blind_on_every_surface_the_other_account_known(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A key revoked mid-run: its account leaves the book, and is shown blind with -2015 on every
    surface (its last "known" series is not left behind in /metrics); the other account stays known."""
    path = both(tmp_path, sim, receiver)
    daemon = service(path, key_check_interval=0.2)
    try:
        await daemon.startup()
        await wait_until(daemon.ready, what="daemon ready")
        await daemon._every_second()
        assert states(await scrape(daemon), "demo")["known"] == 1.0
        await sim.inject_fault({"kind": "revoke_key", "account": "demo"})
        await receiver.wait_for(lambda m: any("NOT being watched" in t for t in receiver.titles()))
        await assert_blind_everywhere(daemon, "demo", "-2015")
        other = next(u for u in daemon.status() if u["account"] == "other")
        assert other["state"] == "known"
        assert states(await scrape(daemon), "other")["known"] == 1.0
    finally:
        await stop(daemon)


@pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (deploy/ci-setup.sh)")
async def test_page_shows_an_account_not_loaded_as_a_blind_card_with_its_reason(
    tmp_path: Path, receiver: Receiver, scenario_data: dict[str, Any], refused_port: int
) -> None:
    """In real headless Chromium: the account the daemon cannot load has a grey card, a "blind" badge
    with the reason, "unknown" for its level and "not loaded" in its details; the summary counts it."""
    placeholder = Simulator(parse_scenario(scenario_data, source="<test>"), realtime=False)
    placeholder.port = refused_port
    config = daemon_config(tmp_path, placeholder, receiver)
    daemon = service(config)
    try:
        await daemon.startup()
        assert daemon.http is not None
        async with chromium(tmp_path / "profile") as page:
            await page.goto(daemon.http.url + "/")
            card = "document.querySelector('[data-unit=\"cross:demo\"]')"
            await page.wait_for(f"{card} !== null && {card}.className.includes('s-blind')")
            badge = await page.eval(f"{card}.querySelector('.badge.blind').textContent")
            assert badge.startswith("blind: ") and "refused" in badge, badge
            assert await page.eval(f"{card}.querySelector('.level').textContent") == "unknown"
            assert "not loaded" in await page.eval(f"{card}.querySelector('dl').textContent")
            summary = await page.eval("document.getElementById('summary').textContent")
            assert "1 blind" in summary, summary
    finally:
        await stop(daemon)


async def test_account_loaded_late_is_adopted_by_a_sharded_daemon(
    tmp_path: Path, receiver: Receiver, scenario_data: dict[str, Any], refused_socket: socket.socket
) -> None:
    """Re-sharding (monitor/watch/reshard.py) with the exchange down at start: the account this shard now
    owns is loaded later by the background retry, and is adopted then like one loaded at start: its
    bar already crossed (BTC at 27,000: level 1.44 ≤ 1.5) fires on the first look, marked and counted
    as a takeover."""
    scenario_data["prices"]["BTCUSDT"] = "27000"
    port = refused_socket.getsockname()[1]  # refused until the simulator listens on it
    scenario = parse_scenario(scenario_data, source="<test>")
    placeholder = Simulator(scenario, realtime=False)
    placeholder.port = port
    path = daemon_config(tmp_path, placeholder, receiver)
    path.write_text(path.read_text() + "shard: 0/1\n")
    daemon = service(path)
    try:
        await daemon.startup()
        assert daemon.handoff.adopted == set()
        async with run_simulator(scenario, sock=refused_socket, realtime=False):
            await receiver.wait_for(lambda m: any("1.5" in t for t in receiver.titles()), within=20)
            assert daemon.handoff.adopted == {"cross:demo"}
    finally:
        await stop(daemon)
    alert = next(m for m in receiver.messages if "1.5" in m["title"])
    assert "Taken over by shard 0/1" in alert["message"]
    takeovers = daemon.metrics.registry.get_sample_value("margin_monitor_shard_takeover_alerts_total")
    assert takeovers == 1.0
