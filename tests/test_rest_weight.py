"""REST weight per account (docs/capacity.md): the next hourly interest rates (weight 100) are read
hourly and on a borrow of a new asset, not on every snapshot; exchangeInfo (weight 20) is read once
per daemon and refreshed periodically, so that a pair halted later reaches the price router.

Real daemon on the simulator; what it asks for is counted on the simulator's side. Accounts:
``held``: BTC 1 + OLD 1,000 against 25,000 USDT (OLD at 10: level (30,000 + 10,000) / 25,000 = 1.6);
``other``: ETH 10 against 12,500 USDT (1.6 at ETH 2,000).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Receiver, cross_account, daemon_config, wait_until

from monitor.config.model import load_config
from monitor.service import Service
from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(90)

INFO = "/api/v3/exchangeInfo"
RATES = "/sapi/v1/margin/next-hourly-interest-rate"
ACCOUNT = "/sapi/v1/margin/account"


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "OLDUSDT": "10", "ETHUSDT": "2000"},
        "accounts": [
            cross_account("held", ("BTC", "1", "0"), ("OLD", "1000", "0"), ("USDT", "0", "25000")),
            cross_account("other", ("ETH", "10", "0"), ("USDT", "0", "12500")),
        ],
    }


def asked(sim: Simulator, path: str) -> int:
    return sum(1 for r in sim.engine.requests if r.path == path and r.status == 200)


def accounts(names: list[str]) -> list[dict[str, Any]]:
    return [{"name": n, "api_key": f"{n}-key", "api_secret": f"{n}-secret"} for n in names]


@pytest.mark.slow
async def test_exchange_info_once_per_daemon_and_rates_hourly_or_on_a_new_borrow(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Two accounts, snapshots every second: one exchangeInfo in all; one rates read per account
    however many snapshots; a borrow of an asset not borrowed before reads that account's rates
    again (once), the other account's not."""
    path = daemon_config(
        tmp_path, sim, receiver, accounts=accounts(["held", "other"]), snapshot_interval="1s"
    )
    daemon = Service(load_config(path), path)
    try:
        await daemon.startup()
        await wait_until(daemon.ready, what="daemon ready")
        start = asked(sim, ACCOUNT)
        await wait_until(lambda: asked(sim, ACCOUNT) >= start + 6, within=20, what="three snapshots each")
        assert asked(sim, INFO) == 1
        assert asked(sim, RATES) == 2
        await sim.apply_event({"type": "borrow", "account": "held", "asset": "BTC", "amount": "0.1"})
        await wait_until(lambda: asked(sim, RATES) == 3, within=20, what="rates re-read after the borrow")
        now = asked(sim, ACCOUNT)
        await wait_until(lambda: asked(sim, ACCOUNT) >= now + 4, within=20, what="two more snapshots each")
        assert asked(sim, RATES) == 3 and asked(sim, INFO) == 1
    finally:
        await daemon.shutdown()


async def test_a_pair_halted_later_is_seen_at_the_catalog_refresh(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """OLDUSDT trades at start (``held`` is known); Binance halts it (``BREAK``): at the next catalog
    refresh the router has no live route for OLD, and the unit is valued from Binance's own level
    (approximate, saying why) instead of from a price that no longer moves."""
    path = daemon_config(tmp_path, sim, receiver, accounts=accounts(["held"]))
    daemon = Service(load_config(path), path, catalog_interval=0.5)
    try:
        await daemon.startup()
        await wait_until(daemon.ready, what="daemon ready")
        [unit] = daemon.status()
        assert unit["state"] == "known", unit
        sim.engine.scenario.symbol_status["OLDUSDT"] = "BREAK"
        await wait_until(lambda: daemon.status()[0]["state"] == "approximate", within=20, what="approximate")
        [unit] = daemon.status()
        assert "OLD" in unit["reason"], unit
        assert asked(sim, INFO) >= 2
        assert daemon.catalog.reads >= 2
    finally:
        await daemon.shutdown()
