"""The command line as a user runs it: simulate, check, status --json, test-alert, and config errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from daemon_harness import Receiver

from monitor.config.model import EXIT_CONFIG

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "monitor.cli"]
STATUS_KEYS = {
    "account",
    "kind",
    "symbol",
    "margin_level",
    "bars",
    "liquidation_distance",
    "distances",
    "liquidation_prices",
    "total_asset_value",
    "total_liability_value",
    "quote",
}


def sim_config(tmp_path: Path, **extra: Any) -> Path:
    """The default config on the bundled crash scenario, HTTP off, state in ``tmp_path``."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["state_dir"] = str(tmp_path / "state")
    data["http"] = {"enabled": False}
    data.update(extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [*CLI, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)


@pytest.fixture
def simulator() -> Iterator[str]:
    """``margin-monitor simulate`` in a subprocess; yields the base URL it printed."""
    proc = subprocess.Popen(
        [*CLI, "simulate", "--scenario", "crash", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    try:
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield line.removeprefix("listening on ")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


async def test_simulate_prints_its_url_and_serves_binance_paths(simulator: str) -> None:
    """`simulate` prints one `listening on` line; the REST base answers ping and server time."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{simulator}/api/v3/ping") as reply:
            assert reply.status == 200 and await reply.json() == {}
        async with session.get(f"{simulator}/api/v3/time") as reply:
            assert "serverTime" in await reply.json()


def test_simulate_rejects_a_bad_scenario_in_one_line(tmp_path: Path) -> None:
    """A broken scenario file fails with one line naming the file, and the config exit code."""
    bad = tmp_path / "bad.yaml"
    bad.write_text('quote: USDT\nprices: {BTCUSDT: "1"}\naccounts: 3\n')
    result = run_cli("simulate", "--scenario", str(bad))
    assert result.returncode == EXIT_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "accounts" in lines[0], result.stderr


def test_check_reports_key_permissions(tmp_path: Path) -> None:
    """`check` connects to the (embedded) exchange and reports the demo key as read-only."""
    result = run_cli("check", "-c", str(sim_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "demo: OK read-only key" in result.stdout


def test_check_says_what_is_wrong_when_the_exchange_is_unreachable(tmp_path: Path, refused_port: int) -> None:
    """`check` against an exchange nothing listens on: one FAIL line with the daemon's diagnosis
    (not a raw aiohttp error), exit non-zero, within a few quick tries."""
    port = refused_port  # bound, never listening: connections are refused
    config = tmp_path / "down.yaml"
    ws = f"ws://127.0.0.1:{port}"
    exchange = {"kind": "binance", "rest_url": f"http://127.0.0.1:{port}", "stream_url": ws,
                "ws_api_url": f"{ws}/ws-api/v3", "risk_stream_url": ws}  # fmt: skip
    config.write_text(yaml.safe_dump({
        "exchange": exchange, "accounts": [{"name": "main", "api_key": "k", "api_secret": "s"}],
        "notify": {"routes": {"console": {"urls": ["console://"]}}},
        "state_dir": str(tmp_path / "state"), "http": {"enabled": False},
    }))  # fmt: skip
    config.chmod(0o600)
    result = run_cli("check", "-c", str(config))
    assert result.returncode != 0
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("main: ")]
    assert line.startswith("main: FAIL: the connection to the exchange is refused"), line


def test_status_json_has_every_documented_field(tmp_path: Path) -> None:
    """`status --json` (no daemon running) reads the accounts and prints the documented shape."""
    result = run_cli("status", "--json", "-c", str(sim_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    units = json.loads(result.stdout)
    kinds = {(u["kind"], u["symbol"]) for u in units}
    assert ("cross", None) in kinds and ("isolated", "ETHUSDT") in kinds
    for unit in units:
        assert set(unit) >= STATUS_KEYS, STATUS_KEYS - set(unit)
        assert unit["quote"] == "USDT" and unit["margin_level"] > 1.5
        assert unit["liquidation_distance"] < 0  # a drop liquidates these long accounts


def test_status_human_readable(tmp_path: Path) -> None:
    """Plain `status` prints one block per unit with the level and distances."""
    result = run_cli("status", "-c", str(sim_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "demo (cross)" in result.stdout and "to liq." in result.stdout
    assert "from a one-off read (no daemon)" in result.stdout


async def test_test_alert_delivers_through_each_route(tmp_path: Path) -> None:
    """`test-alert` sends one message per URL and says which delivered."""
    receiver = Receiver()
    await receiver.start()
    try:
        config = sim_config(tmp_path, notify={"routes": {"hook": {"urls": [receiver.url]}}})
        data = yaml.safe_load(config.read_text())
        data["alerts"] = {"stale_after": "30s"}
        config.write_text(yaml.safe_dump(data))
        result = await asyncio.to_thread(run_cli, "test-alert", "-c", str(config))
        assert result.returncode == 0, result.stderr
        assert "route hook url #1: delivered" in result.stdout
        assert len(receiver.messages) == 1 and "test" in receiver.messages[0]["title"].lower()
    finally:
        await receiver.stop()


def test_run_with_broken_config_exits_with_one_line(tmp_path: Path) -> None:
    """`run` on a config with an unknown key prints one line with file and key path, exit code 78."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"accounts": [], "notify": {}, "colour": "red"}))
    result = run_cli("run", "-c", str(path))
    assert result.returncode == EXIT_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"margin-monitor: {path}: "), result.stderr
