"""Key restrictions and file permissions at start: the daemon and ``margin-monitor check`` on the simulator.

A key that can trade, withdraw or transfer is refused (a loud log line and an alert to every route)
unless the account says ``allow_trading_keys: true`` (then a warning and an alert, and the account is
watched). A config or secret file readable by other users is warned about, naming the file only.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import Receiver, daemon_config, running_daemon, wait_until
from structlog.testing import capture_logs

from monitor.config.model import HttpConfig, load_config
from monitor.service import Service, StartupError
from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent

READER = {"name": "reader", "api_key": "reader-key", "api_secret": "reader-secret"}
TRADER = {"name": "trader", "api_key": "trader-key", "api_secret": "trader-secret"}
TRADING = {"enableReading": True, "enableSpotAndMarginTrading": True, "enableWithdrawals": True}
TRANSFER = {"enableReading": True, "permitsUniversalTransfer": True}


def scenario_accounts(trader_restrictions: dict[str, bool]) -> list[dict[str, Any]]:
    """A read-only account and one whose key has ``trader_restrictions``, both with a loan."""
    cross = [{"asset": "BTC", "free": "1"}, {"asset": "USDT", "borrowed": "18750"}]
    return [
        {**READER, "cross": cross},
        {**TRADER, "cross": cross, "restrictions": trader_restrictions},
    ]


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """The simulator's scenario: a reader and a trading key."""
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "ETHUSDT": "2000"},
        "accounts": scenario_accounts(TRADING),
    }


def config_for(tmp_path: Path, sim: Simulator, receiver: Receiver, *accounts: dict[str, Any]) -> Path:
    path = daemon_config(tmp_path, sim, receiver, accounts=list(accounts))
    path.chmod(0o600)
    return path


async def test_trading_key_is_refused_and_the_others_are_watched(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A key that can trade and withdraw is refused with an error line and an alert; the reader runs on."""
    config = config_for(tmp_path, sim, receiver, READER, TRADER)
    with capture_logs() as events:
        async with running_daemon(config) as daemon:
            await receiver.wait_for(lambda m: len(m) >= 1)
            watched = {u["account"] for u in daemon.status() if u["unit"] in daemon.book.units()}
            assert watched == {"reader"}
            (shown,) = [u for u in daemon.status() if u["account"] == "trader"]
            assert shown["state"] == "blind" and "key refused" in shown["reason"]
            await wait_until(daemon.ready, what="ready with the reader only")
    refused = [e for e in events if e["event"] == "account_key_refused"]
    assert refused == [
        {
            "event": "account_key_refused",
            "account": "trader",
            "permissions": "trade, withdraw",
            "log_level": "error",
        }
    ]
    (message,) = receiver.messages
    assert "key of trader refused" in message["title"]
    assert "can trade, withdraw" in message["message"] and "NOT being watched" in message["message"]
    assert "allow_trading_keys" in message["message"]


@pytest.mark.parametrize("scenario_data", [{"quote": "USDT", "prices": {"BTCUSDT": "30000"},
                                             "accounts": scenario_accounts(TRANSFER)}])  # fmt: skip
async def test_allowed_trading_key_is_watched_with_a_warning(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """With allow_trading_keys the transfer-capable key is used: a warning line and a warning alert."""
    config = config_for(tmp_path, sim, receiver, READER, {**TRADER, "allow_trading_keys": True})
    with capture_logs() as events:
        async with running_daemon(config) as daemon:
            await receiver.wait_for(lambda m: len(m) >= 1)
            await wait_until(daemon.ready, what="ready with both accounts")
            assert {u["account"] for u in daemon.status()} == {"reader", "trader"}
    warned = [e for e in events if e["event"] == "account_key_not_read_only"]
    assert warned == [
        {
            "event": "account_key_not_read_only",
            "account": "trader",
            "permissions": "transfer",
            "log_level": "warning",
        }
    ]
    assert not any(e["event"] in ("account_key_refused", "account_disabled") for e in events)
    (message,) = receiver.messages
    assert "key of trader can transfer" in message["title"]


async def test_only_account_refused_still_alerts_then_exits(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """When the only account's key is refused the daemon does not start, but the alert is delivered first."""
    config = config_for(tmp_path, sim, receiver, TRADER)
    service = Service(load_config(config), config)
    try:
        with pytest.raises(StartupError, match="no account could be loaded"):
            await service.startup()
    finally:
        await service.shutdown()
    assert [m["title"] for m in receiver.messages] == ["margin-monitor: key of trader refused"]


def simulator_config(tmp_path: Path, trader: dict[str, Any], restrictions: dict[str, bool]) -> Path:
    """A config running the embedded simulator on a scenario file next to it."""
    scenario = {"quote": "USDT", "prices": {"BTCUSDT": "30000"}, "accounts": scenario_accounts(restrictions)}
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump(scenario))
    data = {
        "exchange": {"kind": "simulator", "scenario": "keys.yaml"},
        "accounts": [READER, trader],
        "notify": {"routes": {"log": {"urls": ["json://127.0.0.1:9/none"]}}},
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


async def check(config: Path) -> tuple[int, str]:
    """``python -m monitor.cli check -c CONFIG``: exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "check", "-c", str(config), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.parametrize(
    ("trader", "restrictions", "code", "line"),
    [
        (TRADER, TRADING, 1,
         "trader: FAIL key is not read-only (reading, trade, withdraw); make a read-only key"),
        ({**TRADER, "allow_trading_keys": True}, TRADING, 0,
         "trader: WARN key is not read-only (reading, trade, withdraw); allowed by config"),
        (TRADER, TRANSFER, 1, "trader: FAIL key is not read-only (reading, transfer); make a read-only key"),
        (TRADER, {"enableReading": True, "enableMargin": True}, 0,
         "trader: OK read-only key (reading, margin)"),
    ],
)  # fmt: skip
async def test_check_reports_each_keys_permissions(
    tmp_path: Path, trader: dict[str, Any], restrictions: dict[str, bool], code: int, line: str
) -> None:
    """`check` prints one line per account (OK / WARN / FAIL) and fails only on a refused key."""
    got, out = await check(simulator_config(tmp_path, trader, restrictions))
    lines = out.splitlines()
    assert got == code, out
    assert "reader: OK read-only key (reading)" in lines and line in lines, out
    assert "readable by other users" not in out


async def test_check_warns_about_readable_files(tmp_path: Path) -> None:
    """`check` names a config or secret file other users can read, never its content."""
    config = simulator_config(tmp_path, {"name": "trader", "api_key": "trader-key",
                                         "api_secret_file": "trader.secret"}, {})  # fmt: skip
    (tmp_path / "trader.secret").write_text("trader-secret\n")
    for path in (config, tmp_path / "trader.secret"):
        path.chmod(0o644)
    code, out = await check(config)
    assert code == 0, out
    assert f"WARN {config} is readable by other users: chmod 600 {config}" in out.splitlines()
    assert f"WARN {tmp_path / 'trader.secret'} is readable by other users" in out
    assert "trader-secret" not in out


async def test_daemon_warns_about_readable_config_and_secret_files(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """At start the daemon logs one warning per file other users can read, naming the file only."""
    (tmp_path / "reader.secret").write_text("reader-secret\n")
    reader = {"name": "reader", "api_key": "reader-key", "api_secret_file": str(tmp_path / "reader.secret")}
    config = config_for(tmp_path, sim, receiver, reader)
    (tmp_path / "reader.secret").chmod(0o600)
    with capture_logs() as quiet:
        async with running_daemon(config):
            pass
    assert not any(e["event"] == "file_readable_by_others" for e in quiet)
    for path in (config, tmp_path / "reader.secret"):
        path.chmod(0o644)
    with capture_logs() as events:
        async with running_daemon(config):
            pass
    warned = [e for e in events if e["event"] == "file_readable_by_others"]
    assert [e["file"] for e in warned] == [str(config), str(tmp_path / "reader.secret")]
    assert all(e["log_level"] == "warning" for e in warned)
    assert "reader-secret" not in repr(events)


def test_http_binds_loopback_by_default() -> None:
    """Unless told otherwise the HTTP endpoint listens on 127.0.0.1 only, and has no token by default."""
    http = HttpConfig()
    assert http.host == "127.0.0.1" and http.token is None
