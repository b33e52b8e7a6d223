"""The daemon end to end: simulator → real python-binance and websockets → book → alerts → Apprise → HTTP.

The account used throughout (derived by hand):
    cross: BTC held 1.0, USDT borrowed 18,750 (no interest, no other assets).
    level(p) = 1.0·p / 18,750, so level 1.6 at p = 30,000;
    it meets 1.5 at p = 28,125, 1.3 at p = 24,375 and 1.1 at p = 20,625.
    At p = 20,000 the level is 20,000 / 18,750 = 1.0667, and the uniform move to the
    liquidation bar is 20,625 / 20,000 − 1 = +3.125 % (already below it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Receiver, daemon_config, one_long_account, running_daemon, wait_until

from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """One cross account, BTC collateral against a USDT loan, level 1.6 at the start."""
    return one_long_account()


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [str(m["title"]) for m in messages]


def ours(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our own alerts, without Binance's second opinion (its FORCE_LIQUIDATION status at 1.067)."""
    return [m for m in messages if "BINANCE" not in str(m["title"])]


async def test_crash_alerts_arrive_in_order_with_numbers(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A crash through 1.5, 1.3 and 1.1 sends three alerts in order, then three resolved on recovery."""
    async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        for price in ("27000", "23000", "20000"):
            await sim.set_price("BTCUSDT", price)
            await asyncio.sleep(0.3)
        await receiver.wait_for(lambda m: len(ours(m)) >= 3)
        titles = kinds(ours(receiver.messages))
        assert "1.5" in titles[0] and "1.3" in titles[1] and "1.1" in titles[2], titles
        body = ours(receiver.messages)[2]["message"]
        assert "1.067" in body  # 20,000 / 18,750
        assert "20,625" in body  # BTC liquidation price at 1.1
        await sim.set_price("BTCUSDT", "30000")
        await receiver.wait_for(lambda m: len(ours(m)) >= 6)
        resolved = kinds(ours(receiver.messages)[3:6])
        assert all("resolved" in t.lower() or "recovered" in t.lower() for t in resolved), resolved
        status = daemon.status()
        assert status[0]["account"] == "demo" and status[0]["margin_level"] == pytest.approx(1.6, rel=1e-6)
        await asyncio.sleep(0.5)
        assert len(ours(receiver.messages)) == 6  # nothing sent twice
        binance = kinds(receiver.messages)
        assert len(binance) - 6 <= 2 and all(binance.count(t) == 1 for t in binance)


async def test_market_stream_drop_mid_crash_loses_no_crossing(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A market-stream drop during the crash is survived: the crossing after it still alerts."""
    async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        await sim.set_price("BTCUSDT", "27000")
        await receiver.wait_for(lambda m: len(m) >= 1)
        await sim.inject_fault({"kind": "drop", "target": "streams"})
        await sim.set_price("BTCUSDT", "23000")
        await receiver.wait_for(lambda m: len(m) >= 2, within=15)
        assert "1.3" in kinds(receiver.messages)[1]


@pytest.mark.slow
@pytest.mark.usefixtures("short_drain")  # the receiver is dead at the first shutdown: no 10 s drain
async def test_dead_receiver_delays_but_loses_nothing_across_restart(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Alerts queued while the receiver is down survive a daemon restart and arrive exactly once."""
    receiver.failing = True
    config = daemon_config(tmp_path, sim, receiver)
    async with running_daemon(config) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        await sim.set_price("BTCUSDT", "23000")
        await wait_until(lambda: receiver.attempts >= 2, what="delivery attempts")
    assert receiver.messages == []
    receiver.failing = False
    async with running_daemon(config) as daemon:
        await receiver.wait_for(lambda m: len(m) >= 2, within=20)
        await wait_until(daemon.ready, what="daemon ready again")
        await asyncio.sleep(1.0)
    titles = kinds(receiver.messages)
    assert len(titles) == 2 and "1.5" in titles[0] and "1.3" in titles[1], titles


@pytest.mark.slow
async def test_stale_feed_raises_blind_not_resolved(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A silent market stream makes the account 'blind'; it is never reported as recovered meanwhile."""
    async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        await sim.set_price("BTCUSDT", "23000")
        await receiver.wait_for(lambda m: len(m) >= 2)
        await sim.inject_fault({"kind": "stall", "target": "streams", "duration": 3600})
        await receiver.wait_for(lambda m: any("blind" in t.lower() for t in kinds(m)), within=15)
        assert not any("resolved" in t.lower() for t in kinds(receiver.messages))
