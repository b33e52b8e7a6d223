"""Silences through the command line against the real daemon on the simulator: silence, status, the
messages held back (liquidation still sent), /metrics, a restart, unsilence; and the clear errors.

Account (as in test_restart): level(p) = p / 18,750: 1.5 at 28,125, 1.3 at 24,375, 1.1 at 20,625.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from daemon_harness import Receiver, events, one_long_account, running_daemon, wait_until
from ops_harness import TOKEN, cli, ops_config

from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    return one_long_account()


@pytest.mark.slow
async def test_silence_holds_back_all_but_liquidation_and_survives_a_restart(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """`silence demo --for 2h` holds back NORMAL and MARGIN CALL (logged, counted, shown in status) but
    not LIQUIDATION; after a restart `silences` still lists it; `unsilence` ends it."""
    path = ops_config(tmp_path, sim, receiver)
    with structlog.testing.capture_logs() as logs:
        async with running_daemon(path) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            made = await cli("silence", "demo", "--for", "2h", "--comment", "rebalancing", "-c", path)
            assert made.returncode == 0, made.stderr
            match = re.search(r"unsilence (\w+)", made.stdout)
            assert match, made.stdout
            sid = match.group(1)

            await sim.set_price("BTCUSDT", "23000")  # level 1.227: normal and margin_call fire
            assert daemon.silences is not None
            silences = daemon.silences
            await wait_until(lambda: silences.held.get("firing", 0) >= 2, what="two silenced firings")
            status = await cli("status", "--json", "-c", path)
            unit = json.loads(status.stdout)[0]
            assert unit["source"] == "daemon" and set(unit["firing"]) == {"normal", "margin_call"}
            assert set(unit["silenced"]) == {"normal", "margin_call"} and unit["silences"] == [sid]

            await sim.set_price("BTCUSDT", "20000")  # level 1.067: liquidation is never silenced
            await receiver.wait_for(lambda ms: any("[LIQUIDATION]" in m["title"] for m in ms))
            assert not any("NORMAL" in t or "MARGIN CALL" in t for t in receiver.titles())
            base = daemon.http.url if daemon.http else ""
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp,
            ):
                text = await resp.text()
            assert "margin_monitor_silences_active 1.0" in text
            assert 'margin_monitor_alerts_silenced_total{kind="firing"} 2.0' in text
    silenced = events(logs, "alert_silenced")
    assert {e["rule"] for e in silenced} == {"normal", "margin_call"}
    assert all(e["silences"] == [sid] and e["title"] for e in silenced)

    async with running_daemon(path) as daemon:
        listed = await cli("silences", "-c", path)
        assert listed.returncode == 0 and sid in listed.stdout and "rebalancing" in listed.stdout
        ended = await cli("unsilence", sid, "-c", path)
        assert ended.returncode == 0 and sid in ended.stdout, ended.stderr
        again = await cli("unsilence", sid, "-c", path)
        assert again.returncode == 1 and "no active silence" in again.stderr
        assert "no silences in force" in (await cli("silences", "-c", path)).stdout
        assert sid in (await cli("silences", "--all", "-c", path)).stdout


@pytest.mark.slow
async def test_acknowledge_until_resolved_sends_the_recovery(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """`--until-resolved` refuses when nothing fires; on a firing alert it holds back the repeats and
    ends with the recovery, whose RESOLVED message is sent."""
    path = ops_config(tmp_path, sim, receiver)
    async with running_daemon(path) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        early = await cli("silence", "demo", "--until-resolved", "-c", path)
        assert early.returncode == 1 and "nothing is firing" in early.stderr
        await sim.set_price("BTCUSDT", "27000")  # level 1.44: normal fires (and is sent)
        await receiver.wait_for(lambda ms: any("[NORMAL]" in m["title"] for m in ms))
        ack = await cli("silence", "demo:cross", "--until-resolved", "-c", path)
        assert ack.returncode == 0, ack.stderr
        await sim.set_price("BTCUSDT", "30000")
        await receiver.wait_for(lambda ms: any("resolved" in m["title"].lower() for m in ms))
        assert "no silences in force" in (await cli("silences", "-c", path)).stdout


@pytest.mark.slow
async def test_silence_commands_say_what_is_missing(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Without http.token, or with no daemon running, each command says so in one line and exits 1."""
    no_token = ops_config(tmp_path, sim, receiver, token=None)
    result = await cli("silence", "demo", "--for", "1h", "-c", no_token)
    assert result.returncode == 1 and "http.token" in result.stderr
    (tmp_path / "b").mkdir()
    nobody = ops_config(tmp_path / "b", sim, receiver)
    result = await cli("silences", "-c", nobody)
    assert result.returncode == 1 and "no daemon is running" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    bad = await cli("silence", "demo", "--for", "soon", "-c", nobody)
    assert bad.returncode == 1
