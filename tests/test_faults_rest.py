"""Fault matrix, REST: the real daemon on the simulator through 5xx, hanging requests, 429 with
Retry-After, a 418 ban and clock skew (-1021).

The account (derived by hand): cross, BTC held 1.0 against 18,750 USDT borrowed, no interest.
level(p) = p / 18,750: 1.6 at 30,000; it meets 1.5 at 28,125 and 1.3 at 24,375. Snapshots are re-read
every second, so REST faults are felt at once; an account REST cannot re-read for 3 s goes BLIND.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import (
    Receiver,
    assert_alive,
    daemon_config,
    events,
    one_long_account,
    running_daemon,
    wait_until,
)
from structlog.testing import capture_logs

from monitor.sim import Scenario, Simulator, run_simulator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """One cross account, BTC collateral against a USDT loan, level 1.6 at the start."""
    return one_long_account()


class SkewedClock:
    """The simulator's wall clock, ``skew`` seconds off the real one."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew


@pytest.fixture
def clock() -> SkewedClock:
    """The simulator's wall clock (starts in step with ours)."""
    return SkewedClock()


@pytest.fixture
async def sim(scenario: Scenario, clock: SkewedClock) -> AsyncIterator[Simulator]:
    """The conftest simulator (manual time), with a wall clock the test can skew."""
    async with run_simulator(scenario, realtime=False, clock=clock) as running:
        yield running


def config(tmp_path: Path, sim: Simulator, rx: Receiver) -> Path:
    """The harness config with snapshots every second."""
    path = daemon_config(tmp_path, sim, rx)
    data = yaml.safe_load(path.read_text())
    data["exchange"]["snapshot_interval"] = "1s"
    path.write_text(yaml.safe_dump(data))
    return path


def served(sim: Simulator, status: int) -> int:
    """How many REST answers with ``status`` the simulator gave."""
    return sum(r.status == status for r in sim.engine.requests)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rest_5xx", "rest_timeout"])
async def test_rest_outage_keeps_alerting_then_goes_blind_then_recovers(
    kind: str, tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """REST failing (503s, or requests that hang): prices keep alerting; once the account cannot be
    re-read for longer than allowed it is BLIND with the reason; when REST is back, 'restored' and the
    crossing made meanwhile."""
    with capture_logs() as logs:
        async with running_daemon(config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            await sim.inject_fault({"kind": kind, "duration": 3600})
            await sim.set_price("BTCUSDT", "27000")  # the market stream still flows
            await receiver.wait_for(lambda m: len(m) >= 1)
            assert "1.5" in receiver.titles()[0]
            await receiver.wait_for(lambda m: any("BLIND" in t for t in receiver.titles()), within=10)
            await sim.set_price("BTCUSDT", "23000")  # crosses 1.3 while blind: held back, not lost
            await sim.clear_faults()
            await receiver.wait_for(lambda m: any("1.3" in t for t in receiver.titles()), within=15)
            assert_alive(daemon, logs)
    order = receiver.titles()
    assert [i for i, t in enumerate(order) if "restored" in t] == [2], order
    assert "1.3" in order[3], order
    blind = next(m for m in receiver.messages if "BLIND" in m["title"])
    assert "REST failing" in blind["message"]
    if kind == "rest_5xx":  # (hanging requests are still waiting out the client's 10 s timeout)
        assert served(sim, 503) >= 1 and events(logs, "rest_retry")


async def test_429_retry_after_is_honoured_and_nothing_is_lost(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A 429 with Retry-After: the client waits that long before asking again (no hammering, so no 418),
    and a transfer out made during the window is picked up right after it and alerts. (A transfer, unlike
    a borrow, cannot be confirmed by the streams alone: only a REST read settles it, see ledger.py.)"""
    with capture_logs() as logs:
        async with running_daemon(config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            await sim.inject_fault({"kind": "rest_429", "duration": 2})
            await wait_until(lambda: served(sim, 429) >= 1, what="a 429")
            limited_at = time.monotonic()
            await sim.apply_event(
                {"type": "transfer_out", "account": "demo", "asset": "BTC", "amount": "0.1"}
            )  # 0.9 x 30,000 / 18,750 = 1.44
            await sim.advance(2)  # the window ends 2 simulated (= manual) seconds on
            await receiver.wait_for(lambda m: len(m) >= 1, within=10)
            assert "1.5" in receiver.titles()[0]
            assert_alive(daemon, logs)
    retries = [e for e in events(logs, "rest_retry") if "rate limited" in e["reason"]]
    assert retries and "Retry-After 2 s" in retries[0]["reason"]
    assert served(sim, 418) == 0
    assert served(sim, 429) <= 6  # one per caller and Retry-After period, not a retry storm
    assert time.monotonic() - limited_at >= 1.0
    assert not any("BLIND" in t for t in receiver.titles())


async def test_418_ban_at_start_is_waited_out(tmp_path: Path, sim: Simulator, receiver: Receiver) -> None:
    """An IP ban (418, Retry-After 2 s) when the daemon starts: it waits the ban out, loads and alerts."""
    meter = sim.engine.meter
    meter._banned_until["127.0.0.1"] = meter.now_ms() + 2000
    with capture_logs() as logs:
        started = time.monotonic()
        async with running_daemon(config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            took = time.monotonic() - started
            await sim.set_price("BTCUSDT", "27000")
            await receiver.wait_for(lambda m: len(m) >= 1)
            assert_alive(daemon, logs)
    assert 1.5 <= took < 10
    assert served(sim, 418) >= 1
    banned = [e for e in events(logs, "rest_retry") if "HTTP 418" in e["reason"]]
    assert banned and "Retry-After 2 s" in banned[0]["reason"]


async def test_clock_skew_resyncs_and_goes_on(
    tmp_path: Path, sim: Simulator, receiver: Receiver, clock: SkewedClock
) -> None:
    """The exchange's clock jumps 30 s ahead (-1021 outside recvWindow): the client resyncs its time
    offset and goes on; the account never goes blind and the next crossing alerts."""
    with capture_logs() as logs:
        async with running_daemon(config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            clock.skew = 30.0
            await wait_until(lambda: bool(events(logs, "rest_time_synced")[1:]), what="a resync")
            await sim.apply_event({"type": "borrow", "account": "demo", "asset": "USDT", "amount": "5000"})
            await receiver.wait_for(lambda m: len(m) >= 1, within=10)
            assert "1.5" in receiver.titles()[0]
            assert_alive(daemon, logs)
    synced = events(logs, "rest_time_synced")[-1]
    assert 29_000 <= synced["offset_ms"] <= 31_000
    assert any("clock skew" in e["reason"] for e in events(logs, "rest_retry"))
    assert not events(logs, "account_refresh_failed")
    assert not any("BLIND" in t for t in receiver.titles())
