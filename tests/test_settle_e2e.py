"""What the trader receives around a repay, a borrow, and a borrow during a REST outage: the real daemon
(python-binance, websockets, the Risk Data Stream) on the simulator, Apprise posting to a local receiver.

The account of issue #10 (derived by hand): 10 ETH + 10,000 USDT against a 28,889 USDT loan at ETH
2,900: level (29,000 + 10,000) / 28,889 = 1.350, NORMAL (1.5) firing from the start.

- Repay 10,000 USDT: true level 29,000 / 18,889 = 1.535 (NORMAL resolves). Half-applied (free gone,
  loan not yet): 29,000 / 28,889 = 1.004, which used to send MARGIN CALL and LIQUIDATION.
- Borrow 5,000 USDT: true level 44,000 / 33,889 = 1.298 (MARGIN CALL fires). Half-applied (free
  in, loan not yet): 44,000 / 28,889 = 1.523, which used to send "resolved NORMAL".
- Isolated BTCUSDT at 5x (bars 1.25 / 1.19 / 1.15; no Risk Data Stream for isolated pairs, so only
  REST can confirm): 1 BTC + 10,000 USDT against 30,000 USDT at 30,000: level 1.333. Repay 10,000:
  30,000 / 20,000 = 1.5. Half-applied: 30,000 / 30,000 = 1.0, a false LIQUIDATION.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Receiver, assert_alive, daemon_config, events, running_daemon, wait_until
from structlog.testing import capture_logs

from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(90)
UNIT = "cross:demo"  # the isolated test passes its own unit
REPAY = {"type": "repay", "account": "demo", "asset": "USDT", "amount": "10000"}
BORROW = {"type": "borrow", "account": "demo", "asset": "USDT", "amount": "5000"}
ORDERS: dict[str, dict[str, float]] = {  # which view is late, in simulated seconds
    "at once": {"user_data": 0, "risk": 0, "rest_lag": 0},
    "liability late": {"user_data": 0, "risk": 1.5, "rest_lag": 0.8},
    "balance late": {"user_data": 1.5, "risk": 0, "rest_lag": 0.8},
}


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """The issue's account (see the module docstring)."""
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "ETHUSDT": "2900"},
        "accounts": [
            {
                "name": "demo",
                "api_key": "demo-key",
                "api_secret": "demo-secret",
                "cross": [
                    {"asset": "ETH", "free": "10"},
                    {"asset": "USDT", "free": "10000", "borrowed": "28889"},
                ],
                "isolated": [
                    {
                        "symbol": "BTCUSDT",
                        "leverage": 5,
                        "base": {"asset": "BTC", "free": "1"},
                        "quote": {"asset": "USDT", "free": "10000", "borrowed": "30000"},
                    }
                ],
            }
        ],
    }


def titles(rx: Receiver) -> list[str]:
    return rx.titles()


async def play_out(sim: Simulator, daemon: Any, seconds: float, unit: str = UNIT) -> None:
    """Let ``seconds`` of simulated time pass in 0.1 s steps, giving the daemon a moment each step to
    read what was delivered (pacing only: the assertions hold for any interleaving)."""
    for _ in range(round(seconds / 0.1)):
        await sim.advance(0.1)
        await asyncio.sleep(0.05)
    await wait_until(lambda: unit not in daemon.engine.settling, what="the unit settled")


@pytest.mark.parametrize("order", list(ORDERS))
async def test_repay_sends_no_false_margin_call(
    tmp_path: Path, sim: Simulator, receiver: Receiver, order: str
) -> None:
    """A repay whose views arrive in any order: the trader gets ``[resolved NORMAL] … 1.535`` and never a
    MARGIN CALL or LIQUIDATION from the half-applied 1.004."""
    seen_settling: list[dict[str, Any]] = []
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
            assert daemon.engine is not None
            engine = daemon.engine
            await wait_until(daemon.ready, what="daemon ready")
            await receiver.wait_for(lambda m: any(t.startswith("[NORMAL]") for t in titles(receiver)))
            sim.set_delivery(**ORDERS[order])
            await sim.apply_event(REPAY)
            if order != "at once":
                await wait_until(lambda: UNIT in engine.settling, what="settling")
                seen_settling.extend(u for u in daemon.status() if u["unit"] == UNIT)
            await play_out(sim, daemon, 2.0)
            await receiver.wait_for(lambda m: any("[resolved NORMAL]" in t for t in titles(receiver)))
            assert daemon.status()[0]["settling"] is False
            assert_alive(daemon, logs)
    got = titles(receiver)
    assert not [t for t in got if "MARGIN CALL" in t or "LIQUIDATION" in t or "BLIND" in t], got
    resolved = [t for t in got if t.startswith("[resolved NORMAL]")]
    assert len(resolved) == 1 and "1.535" in resolved[0], got
    if order != "at once":
        assert seen_settling and seen_settling[0]["settling"] is True  # shown while it lasted


@pytest.mark.parametrize("order", list(ORDERS))
async def test_borrow_sends_no_false_resolved(
    tmp_path: Path, sim: Simulator, receiver: Receiver, order: str
) -> None:
    """The mirror: a borrow never sends ``[resolved NORMAL]`` from the half-applied 1.523; the true
    MARGIN CALL (1.298) arrives once the views agree."""
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
            assert daemon.engine is not None
            await wait_until(daemon.ready, what="daemon ready")
            await receiver.wait_for(lambda m: any(t.startswith("[NORMAL]") for t in titles(receiver)))
            sim.set_delivery(**ORDERS[order])
            await sim.apply_event(BORROW)
            await play_out(sim, daemon, 2.0)
            await receiver.wait_for(lambda m: any(t.startswith("[MARGIN CALL]") for t in titles(receiver)))
            assert_alive(daemon, logs)
    got = titles(receiver)
    assert not [t for t in got if "resolved" in t or "LIQUIDATION" in t or "BLIND" in t], got
    margin_call = [t for t in got if t.startswith("[MARGIN CALL]")]
    assert len(margin_call) == 1 and "1.298" in margin_call[0], got


@pytest.mark.slow
async def test_borrow_during_rest_outage_is_reflected_when_rest_returns(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """User stream stalled and REST answering 503 for 20 s: only the risk stream sees a borrow. The unit
    settles, goes blind after ``stale_after`` (3 s) saying "balances unconfirmed", re-reads with backoff,
    and the MARGIN CALL arrives right after REST returns, not at the next 60 s snapshot."""
    with capture_logs() as logs:
        # snapshots every 60 s: only a retried re-read can see the borrow in time
        async with running_daemon(daemon_config(tmp_path, sim, receiver, snapshot_interval="60s")) as daemon:
            assert daemon.engine is not None
            await wait_until(daemon.ready, what="daemon ready")
            await receiver.wait_for(lambda m: any(t.startswith("[NORMAL]") for t in titles(receiver)))
            await sim.inject_fault({"kind": "stall", "target": "ws_api", "duration": 60})
            await sim.inject_fault({"kind": "rest_5xx", "status": 503, "duration": 20})
            await sim.apply_event(BORROW)  # the balance event is stuck in the stalled user stream
            engine = daemon.engine
            await wait_until(lambda: UNIT in engine.settling, what="settling on the liability")
            await receiver.wait_for(lambda m: any(t.startswith("[BLIND]") for t in titles(receiver)))
            # each re-read already retries inside the REST client (5 tries, ~7 s); once it gives up, the
            # watcher asks again at once with a jittered backoff capped at 2 s, not at the next snapshot
            await wait_until(lambda: bool(events(logs, "account_refresh_failed")), within=20, what="failure")
            assert all(e["retry_in"] <= 2.0 for e in events(logs, "account_refresh_failed"))
            await sim.advance(20)  # the outage ends (20 simulated s)
            returned = time.monotonic()
            await receiver.wait_for(
                lambda m: any(t.startswith("[MARGIN CALL]") for t in titles(receiver)), within=15
            )
            print(f"MEASURE rest_return_to_alert={time.monotonic() - returned:.2f}s")
            assert_alive(daemon, logs)
    got = titles(receiver)
    blind = next(m for m in receiver.messages if m["title"].startswith("[BLIND]"))
    assert "balances unconfirmed" in blind["message"]
    assert not [t for t in got if "resolved NORMAL" in t or "LIQUIDATION" in t], got
    assert "1.298" in next(t for t in got if t.startswith("[MARGIN CALL]"))


async def test_isolated_repay_waits_for_rest_and_sends_nothing(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """An isolated pair's repay, REST 0.8 s behind the user stream: the pair settles only when REST shows
    the repay (1.5), and the half-applied 1.0 sends no LIQUIDATION."""
    pair = "isolated:demo:BTCUSDT"
    accounts = [{"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret", "cross": False,
                 "isolated": ["BTCUSDT"]}]  # fmt: skip
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver, accounts=accounts)) as daemon:
            engine = daemon.engine
            assert engine is not None
            await wait_until(daemon.ready, what="daemon ready")
            sim.set_delivery(user_data=0, risk=0, rest_lag=0.8)
            await sim.apply_event({**REPAY, "symbol": "BTCUSDT"})
            await wait_until(lambda: pair in engine.settling, what="settling")
            shown = next(u for u in daemon.status() if u["unit"] == pair)
            assert shown["settling"] is True and round(shown["margin_level"], 3) == 1.0  # shown, not alerted
            await wait_until(lambda: bool(events(logs, "rest_disagrees_with_stream")), what="REST behind")
            await play_out(sim, daemon, 1.0, pair)
            level = next(u for u in daemon.status() if u["unit"] == pair)["margin_level"]
            assert round(level, 3) == 1.5
            assert_alive(daemon, logs)
    assert titles(receiver) == []
