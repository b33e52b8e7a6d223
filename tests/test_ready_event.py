"""Start-up readiness is decided on the event that makes it true, not at the next housekeeping tick;
the config file is parsed once at start. Structural: nothing here measures time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import Receiver, daemon_config, one_long_account, wait_until
from test_sdnotify import NotifySocket

from monitor.app.first_prices import FirstPrices
from monitor.config import model
from monitor.config.model import exposed_files, load_config
from monitor.service import Service
from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(60)
NEVER = 3600.0  # a housekeeping tick that does not come within a test


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    return one_long_account()


def test_first_prices_tells_once_when_the_last_wanted_symbol_is_priced() -> None:
    said: list[str] = []
    first = FirstPrices()
    first.on_complete = lambda: said.append("complete")
    first.expect({"BTCUSDT", "ETHUSDT", "BNBUSDT"}, {"BNBUSDT": 600.0})  # BNB priced already
    first.seen({"BTCUSDT": 30_000.0})
    assert said == [] and first.awaiting == {"ETHUSDT"}
    first.seen({"ETHUSDT": 2_000.0, "XRPUSDT": 0.5})
    assert said == ["complete"] and not first.awaiting
    first.seen({"ETHUSDT": 2_001.0})  # later batches: nothing awaited, nothing said
    assert said == ["complete"]


async def test_ready_on_the_event_with_a_tick_that_never_comes(
    tmp_path: Path, sim: Simulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the housekeeping job scheduled only an hour out, the daemon still becomes ready: the job
    ran out of turn once every account was loaded and every wanted symbol priced, with every check
    of its tick (READY=1 exactly once, the units fresh)."""
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", sock.address)
    path = daemon_config(tmp_path, sim, receiver)
    daemon = Service(load_config(path), path, tick=NEVER)
    try:
        await daemon.startup()
        assert daemon.scheduler.get_job("timers").trigger.interval.total_seconds() == NEVER
        await wait_until(daemon.ready, what="ready without a tick")
        assert not daemon.parts.first_prices.awaiting  # decided after the first prices, not before
        assert all(w.loaded for w in daemon.watchers) and not daemon.engine.stale
        await asyncio.sleep(0.1)  # any second run out of turn would have said READY=1 again by now
        assert sum(d.startswith("READY=1") for d in sock.drain()) == 1
    finally:
        await daemon.shutdown()
        sock.close()


def test_a_config_only_its_owner_reads_is_parsed_once(
    tmp_path: Path, sim: Simulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up reads the config file once: the second look (does the file hold a secret?) is taken
    only when other users can read it, the case it warns about."""
    parsed: list[str] = []
    parse = model._load_yaml

    def counting(text: str) -> Any:
        parsed.append(text)
        return parse(text)

    monkeypatch.setattr(model, "_load_yaml", counting)
    path = daemon_config(tmp_path, sim, receiver)
    path.chmod(0o600)
    assert exposed_files(load_config(path), path) == []
    assert len(parsed) == 1
    data = yaml.safe_load(path.read_text())
    data["notify"]["routes"]["hook"]["urls"] = ["tgram://123456:ABCdef/987"]  # a secret in the file
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o644)
    assert exposed_files(load_config(path), path) == [path]  # still warned about
