"""What the trader receives when an account cannot be priced live, or a stablecoin moves (issue 10).

Real daemon path: simulator → python-binance and websockets → book → alerts → Apprise json:// → a
local receiver; ``status`` and ``/metrics`` over HTTP.

Accounts (derived by hand, bars 1.5 / 1.3 / 1.1):

- ``held``: BTC 1 + OLD 1,000 against a USDT loan of 25,000. OLDUSDT is halted (``BREAK``): it
  streams no price, and Binance values OLD at its standing 10 USDT. Binance's level at BTC p is
  (p + 10,000) / 25,000: 1.6 at 30,000; 1.48 at 27,000; 1.28 at 22,000; 1.08 at 17,000. Our book
  cannot price OLD live, so it values it at what Binance's level implies (V = 1.6 x 25,000 −
  30,000 = 10,000 at the read) and carries BTC live: the unit is *approximate*.
- ``stable``: USDC 20,000 + BTC 0.1 against a USDT loan of 16,000, USDC valued at market (USDCUSDT).
  At USDC 1 and BTC 30,000: 23,000 / 16,000 = 1.4375 (below the normal bar: one NORMAL alert).
  At USDC 0.90: 21,000 / 16,000 = 1.3125 (above margin call). At USDC 0.87 (March 2023):
  (17,400 + 3,000) / 16,000 = 1.275 ≤ 1.3: MARGIN CALL. Pinned at 1 it would stay at 1.4375.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from daemon_harness import Receiver, cross_account, daemon_config, running_daemon, wait_until
from prometheus_client.parser import text_string_to_metric_families

from monitor.service import Service
from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(120)

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """The two accounts of the module docstring; OLDUSDT halted, USDCUSDT trading at 1."""
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "OLDUSDT": "10", "USDCUSDT": "1"},
        "symbol_status": {"OLDUSDT": "BREAK"},
        "accounts": [
            cross_account("held", ("BTC", "1", "0"), ("OLD", "1000", "0"), ("USDT", "0", "25000")),
            cross_account("stable", ("USDC", "20000", "0"), ("BTC", "0.1", "0"), ("USDT", "0", "16000")),
        ],
    }


def watch(name: str) -> list[dict[str, Any]]:
    return [{"name": name, "api_key": f"{name}-key", "api_secret": f"{name}-secret"}]


def parse(text: str) -> Samples:
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), float(sample.value)))
    return samples


def series(samples: Samples, name: str, **labels: str) -> list[float]:
    return [v for got, v in samples.get(name, []) if all(got.get(k) == w for k, w in labels.items())]


async def scrape(daemon: Service) -> Samples:
    assert daemon.http is not None
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.http.url}/metrics") as r:
        return parse(await r.text())


async def scrape_when(daemon: Service, done: Callable[[Samples], bool], within: float = 10.0) -> Samples:
    """/metrics once ``done`` holds of it: the once-a-second job, late on a loaded machine, is waited
    for rather than slept on."""
    deadline = time.monotonic() + within
    while not done(samples := await scrape(daemon)):
        assert time.monotonic() < deadline, "the metrics never showed the expected series"
        await asyncio.sleep(0.05)
    return samples


def titles(receiver: Receiver) -> list[str]:
    return receiver.titles()


@pytest.mark.slow
async def test_halted_pair_account_is_approximate_and_alerted_from_binance_level(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """An account holding an asset whose only pair is halted is never silent: it is approximate
    everywhere (status, /metrics, every message says why) and its NORMAL, MARGIN CALL and
    LIQUIDATION alerts come as BTC falls, from Binance's reported level carried with BTC."""
    config = daemon_config(tmp_path, sim, receiver, accounts=watch("held"))
    async with running_daemon(config) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        [unit] = daemon.status()
        assert unit["state"] == "approximate", unit
        assert unit["reason"] == "priced by Binance's own level: no live price for OLD (OLDUSDT BREAK)"
        assert unit["margin_level"] == pytest.approx(1.6, rel=1e-9)
        assert unit["unpriced_assets"] == ["OLD"] and unit["implied_value"] == pytest.approx(10_000)
        assert "OLDUSDT" not in daemon.book.symbols_needed()
        samples = await scrape_when(  # the per-second job records the unit for /metrics
            daemon,
            lambda s: series(s, "margin_monitor_unit_state", account="held", state="approximate") == [1.0],
        )
        assert series(samples, "margin_monitor_unit_state", account="held", state="approximate") == [1.0]
        assert series(samples, "margin_monitor_unit_approximate", account="held") == [1.0]
        assert series(samples, "margin_monitor_margin_level", account="held") == [pytest.approx(1.6)]

        for price, count in (("27000", 1), ("22000", 2), ("17000", 3)):
            await sim.set_price("BTCUSDT", price)
            await receiver.wait_for(lambda m, n=count: len(m) >= n)  # type: ignore[misc]
        got = titles(receiver)
        assert got[0].startswith("[NORMAL] held (cross): margin level 1.480 ≤ 1.5"), got
        assert got[1].startswith("[MARGIN CALL] held (cross): margin level 1.280 ≤ 1.3"), got
        assert got[2].startswith("[LIQUIDATION] held (cross): margin level 1.080 ≤ 1.1"), got
        assert all(t.endswith("(approximate)") for t in got), got
        body = receiver.messages[2]["message"]
        assert (
            "APPROXIMATE: priced by Binance's own level: no live price for OLD (OLDUSDT BREAK); "
            "Binance reported" in body
        ), body
        # the next REST read re-implies OLD's value from Binance's level: nothing moves, nothing resent
        await wait_until(
            lambda: daemon.status()[0]["exchange_margin_level"] == pytest.approx(1.08), what="re-read"
        )
        assert daemon.status()[0]["margin_level"] == pytest.approx(1.08, rel=1e-9)
        await asyncio.sleep(0.5)
        assert len(receiver.messages) == 3, titles(receiver)


async def test_stablecoin_depeg_crosses_margin_call_and_is_alerted(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """USDC is valued at market: its drop to 0.87 takes 20,000 USDC + 0.1 BTC against 16,000 USDT
    through the margin-call bar, and the trader is told (pinned at 1 it would have stayed silent)."""
    config = daemon_config(tmp_path, sim, receiver, accounts=watch("stable"))
    async with running_daemon(config) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        [unit] = daemon.status()
        assert unit["state"] == "known" and unit["reason"] == ""
        assert unit["margin_level"] == pytest.approx(1.4375, rel=1e-9)
        assert "USDCUSDT" in daemon.book.symbols_needed()
        await receiver.wait_for(lambda m: len(m) >= 1)
        assert titles(receiver)[0].startswith("[NORMAL] stable (cross): margin level 1.438 ≤ 1.5")
        await sim.set_price("USDCUSDT", "0.90")
        await wait_until(
            lambda: daemon.status()[0]["margin_level"] == pytest.approx(1.3125, rel=1e-9), what="USDC 0.90"
        )
        await sim.set_price("USDCUSDT", "0.87")
        await receiver.wait_for(lambda m: len(m) >= 2)
        got = titles(receiver)
        assert got[1].startswith("[MARGIN CALL] stable (cross): margin level 1.275 ≤ 1.3"), got
        assert "(approximate)" not in got[1]
        # USDC has its own liquidation price: (1.1 x 16,000 - 3,000) / 20,000 = 0.73
        assert "USDC 0.73 USDT" in receiver.messages[1]["message"]
        await asyncio.sleep(0.5)
        assert len(receiver.messages) == 2, got


@pytest.mark.slow
async def test_blind_unit_is_unknown_in_status_and_metrics_never_inf(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A unit whose feed goes silent is blind: status says so with the reason and no level,
    /metrics exports no level for it (never +Inf) and unit_state{state="blind"} = 1."""
    config = daemon_config(tmp_path, sim, receiver, accounts=watch("stable"))
    async with running_daemon(config) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        await sim.inject_fault({"kind": "stall", "target": "streams", "duration": 3600})
        await receiver.wait_for(lambda m: any(t.startswith("[BLIND]") for t in titles(receiver)), within=20)
        [unit] = daemon.status()
        assert unit["state"] == "blind" and "no price for" in unit["reason"], unit
        assert not daemon.ready()
        samples = await scrape_when(
            daemon, lambda s: series(s, "margin_monitor_unit_state", account="stable", state="blind") == [1.0]
        )
        assert series(samples, "margin_monitor_unit_state", account="stable", state="blind") == [1.0]
        assert series(samples, "margin_monitor_unit_state", account="stable", state="no_debt") == [0.0]
        assert series(samples, "margin_monitor_margin_level", account="stable") == []
        assert not [v for v in series(samples, "margin_monitor_margin_level") if math.isinf(v)]
