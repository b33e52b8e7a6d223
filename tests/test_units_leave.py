"""A unit that is no longer monitored leaves no trace behind (issue 13: the bug the dead
``Metrics.forget_unit`` / ``AlertPolicy.forget`` hid).

- ``/metrics``: an isolated pair disabled on the exchange (or closed) leaves the book at the next REST
  read, and every series of it leaves ``/metrics`` with it (it used to show its last level forever).
- The state file: the alert state of an account removed from the config is dropped at the next start;
  an account still configured but not loaded (blind: its key revoked) keeps its state.

Real daemon on the simulator, real HTTP scrape, the real SQLite state file.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest
import yaml
from daemon_harness import Receiver, daemon_config, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_faults_opinion import both, service, stop

from monitor.config.model import Config
from monitor.service import Service
from monitor.sim import Simulator
from monitor.store import Store

pytestmark = pytest.mark.timeout(60)

PAIR = "isolated:demo:BTCUSDT"
UNIT_FAMILIES = ("margin_monitor_margin_level", "margin_monitor_unit_state", "margin_monitor_bar_level")


async def scrape(daemon: Service) -> list[tuple[str, dict[str, str]]]:
    """(name, labels) of every sample ``GET /metrics`` returns."""
    assert daemon.http is not None
    async with aiohttp.ClientSession() as http, http.get(daemon.http.url + "/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    return [(s.name, dict(s.labels)) for f in text_string_to_metric_families(text) for s in f.samples]


def unit_series(samples: list[tuple[str, dict[str, str]]]) -> dict[str, set[str]]:
    """kind:symbol → the unit families it has a series in."""
    out: dict[str, set[str]] = defaultdict(set)
    for name, labels in samples:
        if name in UNIT_FAMILIES:
            out[f"{labels['kind']}:{labels['symbol']}"].add(name)
    return out


async def test_a_pair_disabled_on_the_exchange_leaves_metrics(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """demo watches ``isolated: all``; its BTCUSDT pair is disabled on the exchange: once the daemon
    has re-read the account, the pair has no series left in /metrics; the cross unit keeps its own."""
    accounts = [{"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret", "isolated": "all"}]
    daemon = service(daemon_config(tmp_path, sim, receiver, accounts=accounts))
    try:
        await daemon.startup()
        await wait_until(daemon.ready, what="daemon ready")
        await daemon._every_second()  # the per-second sweep observes every unit's report
        before = unit_series(await scrape(daemon))
        assert before["isolated:BTCUSDT"] == set(UNIT_FAMILIES) == before["cross:"]
        pair = sim.account("demo").pairs["BTCUSDT"]
        pair.spec = pair.spec.model_copy(update={"enabled": False})
        daemon.watchers[0].request_refresh(0)
        await wait_until(lambda: PAIR not in daemon.book.units(), what="the pair out of the book")
        await daemon._every_second()
        after = unit_series(await scrape(daemon))
        assert "isolated:BTCUSDT" not in after, after
        assert after["cross:"] == set(UNIT_FAMILIES)
    finally:
        await stop(daemon)


def saved_units(tmp_path: Path) -> set[str]:
    with Store(tmp_path / "state") as store:
        return set(store.load_alert_state())


async def run_once(path: Path, *, ready: bool = True) -> None:
    """Start the daemon on ``path`` (until ready, if asked), then stop it (saving its alert state)."""
    daemon = service(path)
    try:
        await daemon.startup()
        if ready:
            await wait_until(daemon.ready, what="daemon ready")
    finally:
        await stop(daemon)


async def test_alert_state_of_an_account_removed_from_the_config_is_dropped_not_of_a_blind_one(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Both accounts leave their alert state in the state file. With other's key revoked (other
    configured but blind) a restart keeps other's state; with other removed from the config a restart
    drops it (demo's stays)."""
    path = both(tmp_path, sim, receiver)
    await run_once(path)
    assert saved_units(tmp_path) == {"cross:demo", "cross:other"}

    sim.engine.state.revoke("other")  # merely blind: still configured, not loaded
    await run_once(path, ready=False)
    assert saved_units(tmp_path) == {"cross:demo", "cross:other"}

    sim.engine.state.revoke("other", revoked=False)
    data = yaml.safe_load(path.read_text())
    data["accounts"] = [a for a in data["accounts"] if a["name"] != "other"]
    path.write_text(yaml.safe_dump(data))
    await run_once(path)
    assert saved_units(tmp_path) == {"cross:demo"}


def test_configures_names_the_units_a_config_can_watch() -> None:
    """An account's cross unit while ``cross`` is on; a pair listed in ``isolated`` (any pair under
    ``all``); nothing of an account not in the config."""
    route = {"r": {"urls": ["json://127.0.0.1/x"]}}
    accounts = [
        {"name": "a", "api_key": "k", "api_secret": "s", "isolated": ["BTCUSDT"]},
        {"name": "b", "api_key": "k", "api_secret": "s", "cross": False, "isolated": "all"},
    ]
    config = Config.model_validate({"accounts": accounts, "notify": {"routes": route}})
    assert config.configures("cross:a") and config.configures("isolated:a:BTCUSDT")
    assert not config.configures("isolated:a:ETHUSDT")
    assert not config.configures("cross:b") and config.configures("isolated:b:ANYUSDT")
    assert not config.configures("cross:gone") and not config.configures("isolated:gone:BTCUSDT")
