"""Fault matrix, user data and keys: the real daemon on the simulator when the WebSocket API dies
silently, a listen token expires, or a key is revoked mid-run.

Accounts (derived by hand):
- ``demo``, isolated BTCUSDT at 5x (tier 1 bars 1.25 / 1.19 / 1.15): 1 BTC against 18,750 USDT
  borrowed, level 1.6 at 30,000. Borrowing 30,000 USDT more (kept as quote) gives 60,000 / 48,750 =
  1.231, below 1.25 (still tier 1). Isolated pairs get no Risk Data Stream events (as on Binance),
  so only the user-data stream or a REST re-read can see that borrow; the periodic snapshot is set to
  60 s so it cannot be what finds it.
- ``other``, cross: 10 ETH against 12,500 USDT, level 1.6 at ETH 2,000, crossing 1.5 at 1,875.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import Receiver, assert_alive, daemon_config, events, running_daemon, wait_until
from structlog.testing import capture_logs

from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(60)

DEMO_PAIR = {
    "symbol": "BTCUSDT",
    "leverage": 5,
    "base": {"asset": "BTC", "free": "1"},
    "quote": {"asset": "USDT", "free": "0", "borrowed": "18750"},
}
BORROW = {"type": "borrow", "account": "demo", "asset": "USDT", "amount": "30000", "symbol": "BTCUSDT"}


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """``demo`` with one isolated pair and ``other`` with a cross account (see the module docstring)."""
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "ETHUSDT": "2000"},
        "accounts": [
            {"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret", "isolated": [DEMO_PAIR]},
            {
                "name": "other",
                "api_key": "other-key",
                "api_secret": "other-secret",
                "cross": [{"asset": "ETH", "free": "10"}, {"asset": "USDT", "borrowed": "12500"}],
            },
        ],
    }


def config(tmp_path: Path, sim: Simulator, rx: Receiver, *, other: bool = False) -> Path:
    """The harness config with ``demo`` isolated-only (and ``other`` if asked), snapshots every 60 s."""
    accounts: list[dict[str, Any]] = [
        {"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret", "cross": False,
         "isolated": ["BTCUSDT"]},
    ]  # fmt: skip
    if other:
        accounts.append({"name": "other", "api_key": "other-key", "api_secret": "other-secret"})
    path = daemon_config(tmp_path, sim, rx, accounts=accounts)
    data = yaml.safe_load(path.read_text())
    data["exchange"]["snapshot_interval"] = "60s"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_ws_api_drop_resubscribes_and_reconciles_a_missed_borrow(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """The WebSocket API connection dies (python-binance's silent death): the daemon resubscribes, and a
    borrow made while nothing was subscribed is found by the REST re-read after it and alerts."""
    with capture_logs() as logs:
        async with running_daemon(config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            await wait_until(lambda: sim.subscriptions("demo") == 1, what="user-data subscription")
            await sim.inject_fault({"kind": "drop", "target": "ws_api"})
            await sim.apply_event(BORROW)  # emitted to no one: the connection is gone
            await receiver.wait_for(lambda m: len(m) >= 1, within=10)
            assert sim.subscriptions("demo") == 1
            assert "1.25" in receiver.titles()[0] and "BTCUSDT" in receiver.titles()[0]
            assert_alive(daemon, logs)
    down = [e for e in events(logs, "feed_down") if e["feed"] == "userdata:demo:BTCUSDT"]
    assert down and down[0]["reason"] == "connection lost" and not down[0]["fatal"]
    assert len(events(logs, "userdata_subscribed")) >= 2
    assert daemon.userdata is not None and daemon.userdata.supervisor.retries >= 1


async def test_expired_listen_token_is_renewed_and_events_flow_again(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A listen token expiring (eventStreamTerminated) is replaced by a new subscription on the same
    connection; a borrow after it reaches the daemon and alerts."""
    with capture_logs() as logs:
        async with running_daemon(config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            await wait_until(lambda: sim.subscriptions("demo") == 1, what="user-data subscription")
            await sim.inject_fault({"kind": "expire_listen_token", "account": "demo"})
            await wait_until(lambda: bool(events(logs, "userdata_terminated")), what="termination seen")
            await wait_until(lambda: sim.subscriptions("demo") == 1, what="resubscribed")
            await sim.apply_event(BORROW)
            await receiver.wait_for(lambda m: len(m) >= 1, within=10)
            assert "1.25" in receiver.titles()[0]
            assert daemon.userdata is not None and daemon.userdata.supervisor.retries == 0  # no reconnect
            assert_alive(daemon, logs)
    assert len(events(logs, "userdata_subscribed")) >= 2
    assert not any("BLIND" in t for t in receiver.titles())


async def test_revoked_key_is_said_loudly_and_other_accounts_stay_watched(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A key revoked mid-run (-2015) disables only its account, with an error log and a notice on every
    route; the other account keeps being watched and its crossing alerts."""
    with capture_logs() as logs:
        async with running_daemon(config(tmp_path, sim, receiver, other=True)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            await sim.inject_fault({"kind": "revoke_key", "account": "demo"})
            await sim.apply_event(BORROW)  # the balance event makes the daemon re-read demo: -2015
            await receiver.wait_for(lambda m: any("NOT being watched" in t for t in receiver.titles()))
            await sim.set_price("ETHUSDT", "1800")
            await receiver.wait_for(lambda m: any("other" in t and "1.5" in t for t in receiver.titles()))
            assert [u["account"] for u in daemon.status() if u["unit"] in daemon.book.units()] == ["other"]
            (demo,) = [u for u in daemon.status() if u["account"] == "demo"]
            assert demo["state"] == "blind" and "-2015" in demo["reason"]
            assert_alive(daemon, logs)
    notice = next(m for m in receiver.messages if "NOT being watched" in m["title"])
    assert "demo" in notice["title"] and "-2015" in notice["message"]
    assert "other accounts are still watched" in notice["message"]
    disabled = events(logs, "account_disabled")
    assert [e["account"] for e in disabled] == ["demo"] and disabled[0]["log_level"] == "error"
    assert not any("demo" in t and "1.25" in t for t in receiver.titles())  # no alert from a dead account
