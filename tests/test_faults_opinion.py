"""Fault matrix, Binance's second opinion and start-up: the real daemon on the simulator when Binance's
status disagrees with our level, the exchange is down at start, the WebSocket API announces a shutdown,
a key is revoked mid-run, and the state file is found empty.

Accounts (derived by hand, as in daemon_harness.one_long_account): ``demo``, cross, 1 BTC against
18,750 USDT, level(p) = p / 18,750 = 1.6 at 30,000 (1.5 at 28,125, 1.3 at 24,375, 1.1 at 20,625).
``other``, cross: 10 ETH against 12,500 USDT, level 1.6 at ETH 2,000, crossing 1.5 at 1,875.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from daemon_harness import Receiver, assert_alive, daemon_config, events, one_long_account, wait_until
from rich.console import Console
from structlog.testing import capture_logs

from monitor.cli.status_view import StatusResult, render
from monitor.config.model import load_config
from monitor.exchange.supervisor import Backoff
from monitor.ops.sdnotify import Notifier
from monitor.service import Service
from monitor.sim import Simulator, parse_scenario, run_simulator
from monitor.store import FILENAME

pytestmark = pytest.mark.timeout(60)

OTHER = {
    "name": "other",
    "api_key": "other-key",
    "api_secret": "other-secret",
    "cross": [{"asset": "ETH", "free": "10"}, {"asset": "USDT", "borrowed": "12500"}],
}
FAST_LOAD = Backoff(initial=0.05, maximum=0.2, reset_after=float("inf"))


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """``demo`` (BTC against USDT, level 1.6) and ``other`` (ETH against USDT, level 1.6)."""
    data = one_long_account()
    data["accounts"].append(OTHER)
    return data


def service(path: Path, **kwargs: Any) -> Service:
    """The daemon with time shrunk: loads retried every 0.05-0.2 s, the second opinion's grace 0.3 s."""
    kwargs.setdefault("load_backoff", FAST_LOAD)
    kwargs.setdefault("opinion_grace", 0.3)
    return Service(load_config(path), path, **kwargs)


async def stop(daemon: Service) -> None:
    await daemon.shutdown()


def both(tmp_path: Path, sim: Simulator, rx: Receiver) -> Path:
    return daemon_config(
        tmp_path, sim, rx,
        accounts=[{"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret"},
                  {"name": "other", "api_key": "other-key", "api_secret": "other-secret"}],
    )  # fmt: skip


@pytest.mark.slow
async def test_binance_margin_call_while_our_level_disagrees(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Binance's Risk Data Stream says MARGIN_CALL (its index prices are not ours) while our level reads
    1.6: after the grace the trader is told exactly that, the disagreement is counted (metric, warning
    log); when Binance's next word (the REST snapshot) agrees with ours, the resolved counterpart."""
    with capture_logs() as logs:
        daemon = service(both(tmp_path, sim, receiver))
        try:
            await daemon.startup()
            await wait_until(daemon.ready, what="daemon ready")
            await wait_until(lambda: sim.engine.streams.connections != set(), what="risk stream")
            payload = {
                "e": "MARGIN_LEVEL_STATUS_CHANGE",
                "E": sim.engine.now_ms(),
                "l": "1.28",
                "s": "MARGIN_CALL",
            }
            sim.engine.streams.deliver_risk("demo", payload)
            await receiver.wait_for(lambda m: any("BINANCE DISAGREES" in t for t in receiver.titles()))
            await receiver.wait_for(
                lambda m: any("resolved BINANCE DISAGREES" in t for t in receiver.titles())
            )
            scraped = daemon.metrics.render()[0].decode()
            assert_alive(daemon, logs)
        finally:
            await stop(daemon)
    alert = next(m for m in receiver.messages if m["title"].startswith("[BINANCE DISAGREES]"))
    title = "[BINANCE DISAGREES] demo (cross): Binance reports MARGIN_CALL, our own level reads 1.600"
    assert alert["title"] == title
    said = "Binance reports MARGIN_CALL for demo (cross) (its level 1.280); our own level reads 1.600"
    assert f"{said}: prices or balances disagree." in alert["message"]
    assert not any("other" in t for t in receiver.titles())
    labels = 'account="demo",kind="cross",status="MARGIN_CALL",symbol=""'
    assert f"margin_monitor_exchange_disagreements_total{{{labels}}} 1.0" in scraped
    (warned,) = events(logs, "exchange_disagrees")
    assert warned["log_level"] == "warning" and warned["status"] == "MARGIN_CALL"


async def test_exchange_liquidation_reaches_the_liquidation_routes(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Binance force-liquidates ``demo`` at a level our own bars do not call liquidation (1.6): the
    liquidation rung's route (only ``pager`` here) gets the BINANCE FORCE LIQUIDATION alert."""
    pager = Receiver()
    await pager.start()
    try:
        path = both(tmp_path, sim, receiver)
        data = yaml.safe_load(path.read_text())
        data["notify"]["routes"]["pager"] = {"urls": [pager.url]}
        data["alerts"]["levels"] = [
            {"bar": "normal", "routes": ["hook"]},
            {"bar": "margin_call", "routes": ["hook"]},
            {"bar": "liquidation", "routes": ["pager"]},
        ]
        path.write_text(yaml.safe_dump(data))
        daemon = service(path)
        try:
            await daemon.startup()
            await wait_until(daemon.ready, what="daemon ready")
            await wait_until(lambda: sim.engine.streams.connections != set(), what="risk stream")
            await sim.apply_event({"type": "liquidation", "account": "demo"})
            await pager.wait_for(lambda m: any("resolved BINANCE" in str(x["title"]) for x in m))
        finally:
            await stop(daemon)
    finally:
        await pager.stop()
    binance = [m for m in pager.messages if "BINANCE" in m["title"]]
    assert [m["title"] for m in binance] == [
        "[BINANCE FORCE LIQUIDATION] demo (cross): Binance reports FORCE_LIQUIDATION",
        "[resolved BINANCE FORCE LIQUIDATION] demo (cross): Binance now reports EXCESSIVE",
    ]
    assert "Binance is liquidating this account" in binance[0]["message"]
    assert not any("BINANCE" in t for t in receiver.titles())  # the liquidation rung's route only
    assert not any("0.000" in t for t in pager.titles()), pager.titles()  # no half-applied liquidation


class NotifySocket:
    """The datagram socket systemd would bind for ``Type=notify`` (collects what the daemon says)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.seen: list[str] = []

    def drain(self) -> list[str]:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.seen.append(self.sock.recv(4096).decode())
        return self.seen


async def readyz(daemon: Service) -> int:
    """The HTTP status of the daemon's ``/readyz``."""
    assert daemon.http is not None
    async with aiohttp.ClientSession() as session, session.get(daemon.http.url + "/readyz") as reply:
        return reply.status


async def test_start_with_the_exchange_down_then_back(
    tmp_path: Path, receiver: Receiver, scenario_data: dict[str, Any], refused_socket: socket.socket
) -> None:
    """Nothing listens where the exchange should be: the daemon starts anyway (no exit), not ready,
    says once what is wrong (connection refused) on the blind routes and in the log, shows the account
    as blind in ``status``, and keeps systemd waiting (``EXTEND_TIMEOUT_USEC``, no ``READY=1``); when
    the exchange comes up, the account loads, is watched (market symbols added) and the daemon
    becomes ready (``READY=1``) — no restart."""
    port = refused_socket.getsockname()[1]  # refused until the simulator listens on it
    scenario = parse_scenario(scenario_data, source="<test>")
    placeholder = Simulator(scenario, realtime=False)
    placeholder.port = port
    systemd = NotifySocket(tmp_path / "notify.sock")
    with capture_logs() as logs:
        daemon = service(daemon_config(tmp_path, placeholder, receiver))
        daemon.notifier = Notifier(systemd.path)
        try:
            await daemon.startup()
            await receiver.wait_for(lambda m: len(m) >= 1)
            await wait_until(lambda: len(events(logs, "account_still_unreachable")) >= 3, what="retries")
            await wait_until(lambda: any("EXTEND_TIMEOUT_USEC" in d for d in systemd.drain()), what="extend")
            assert not daemon.ready() and not any("READY=1" in d for d in systemd.drain())
            assert await readyz(daemon) == 503
            assert any("STATUS=waiting for the exchange (demo: refused)" in d for d in systemd.drain())
            (shown,) = daemon.status()
            assert shown["state"] == "blind" and "refused" in shown["reason"]
            console = Console(width=200, record=True)
            console.print(render(StatusResult(daemon.status(), "test")))
            shown_text = console.export_text()
            assert "BLIND" in shown_text and "unknown" in shown_text
            assert "demo (cross): the connection to the exchange is refused" in shown_text
            async with run_simulator(scenario, sock=refused_socket, realtime=False) as sim:
                await wait_until(daemon.ready, what="ready once the exchange is back")
                await wait_until(lambda: any("READY=1" in d for d in systemd.drain()), what="READY=1")
                assert await readyz(daemon) == 200
                await sim.set_price("BTCUSDT", "27000")
                await receiver.wait_for(lambda m: any("1.5" in t for t in receiver.titles()))
                assert [u["account"] for u in daemon.status()] == ["demo"]
                assert_alive(daemon, logs)
        finally:
            await stop(daemon)
            systemd.sock.close()
    first, back = receiver.messages[0], receiver.messages[1]
    assert first["title"] == "margin-monitor: demo is NOT being watched"
    assert "connection to the exchange is refused" in first["message"] and "no restart" in first["message"]
    assert back["title"] == "margin-monitor: demo is watched again"
    assert sum("NOT being watched" in t for t in receiver.titles()) == 1  # once, not once per retry
    assert not any("BLIND" in t for t in receiver.titles())  # its first prices were not "stale"
    (told,) = events(logs, "account_unreachable")
    assert told["kind"] == "refused" and told["log_level"] == "error"


async def test_cli_run_with_the_exchange_down_keeps_running_and_stops_cleanly(
    tmp_path: Path, receiver: Receiver, scenario_data: dict[str, Any], refused_port: int
) -> None:
    """`margin-monitor run` with nothing where the exchange should be: no exit (it used to exit 69
    saying "Fix the key and restart"), one error line naming the real cause; SIGTERM stops it with 0."""
    placeholder = Simulator(parse_scenario(scenario_data, source="<test>"), realtime=False)
    placeholder.port = refused_port
    config = daemon_config(tmp_path, placeholder, receiver)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await receiver.wait_for(lambda m: len(m) >= 1, within=30)
        assert proc.returncode is None  # still running
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in err.decode().splitlines()]
    errors = [e for e in lines if e["level"] == "error"]
    assert [e["event"] for e in errors] == ["account_unreachable"], errors
    assert errors[0]["kind"] == "refused" and "Fix the key" not in err.decode()
    assert "margin-monitor: demo is NOT being watched" in receiver.titles()


async def test_start_during_a_rest_outage_says_5xx_then_loads(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """The exchange answers 503 to everything at start: the reason told is "server errors (HTTP 5xx)",
    once; when the outage ends the account loads without a restart."""
    await sim.inject_fault({"kind": "rest_5xx", "duration": 3600})
    with capture_logs() as logs:
        daemon = service(daemon_config(tmp_path, sim, receiver))
        try:
            await daemon.startup()
            await receiver.wait_for(lambda m: len(m) >= 1)
            await wait_until(lambda: len(events(logs, "account_still_unreachable")) >= 2, what="retries")
            assert not daemon.ready()
            await sim.clear_faults()
            await wait_until(daemon.ready, what="ready after the outage")
            assert_alive(daemon, logs)
        finally:
            await stop(daemon)
    assert receiver.titles()[:2] == [
        "margin-monitor: demo is NOT being watched",
        "margin-monitor: demo is watched again",
    ]
    assert "server errors (HTTP 5xx" in receiver.messages[0]["message"]
    assert [e["kind"] for e in events(logs, "account_unreachable")] == ["server_error"]


async def test_server_shutdown_on_the_ws_api_reconnects_and_misses_nothing(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """The WebSocket API (and the market and risk streams) announce ``serverShutdown``: the daemon
    moves to new connections at once (no "unknown subscription"), resubscribes, and a borrow made
    right after the notice still alerts."""
    with capture_logs() as logs:
        daemon = service(daemon_config(tmp_path, sim, receiver))
        try:
            await daemon.startup()
            await wait_until(daemon.ready, what="daemon ready")
            await wait_until(lambda: sim.subscriptions("demo") == 1, what="user-data subscription")
            await sim.inject_fault({"kind": "server_shutdown", "target": "all"})
            await sim.apply_event({"type": "borrow", "account": "demo", "asset": "USDT", "amount": "5000"})
            await receiver.wait_for(lambda m: any("1.5" in t for t in receiver.titles()))  # 35,000/23,750
            await wait_until(lambda: len(events(logs, "userdata_subscribed")) >= 2, what="resubscribed")
            assert_alive(daemon, logs)
        finally:
            await stop(daemon)
    assert events(logs, "userdata_server_shutdown")
    skipped = [e for e in events(logs, "userdata_frame_skipped") if "unknown" in str(e.get("reason"))]
    assert not skipped
    assert daemon.userdata is not None and daemon.userdata.supervisor.retries >= 1
    assert daemon.market is not None and daemon.market.supervisor.retries >= 1  # the market stream too
    assert events(logs, "risk_server_shutdown")  # and the Risk Data Stream
    assert not any("BLIND" in t for t in receiver.titles())


async def test_revoked_key_is_flagged_within_seconds(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A key revoked mid-run, with nothing else happening on the account: the key check (one weight-1
    call per interval) flags it without waiting for the 60 s snapshot; the other account stays watched;
    when the key works again the account is watched again, without a restart."""
    path = both(tmp_path, sim, receiver)
    data = yaml.safe_load(path.read_text())
    data["exchange"]["snapshot_interval"] = "60s"
    path.write_text(yaml.safe_dump(data))
    with capture_logs() as logs:
        daemon = service(path, key_check_interval=0.2)
        try:
            await daemon.startup()
            await wait_until(daemon.ready, what="daemon ready")
            await sim.inject_fault({"kind": "revoke_key", "account": "demo"})
            await receiver.wait_for(lambda m: any("NOT being watched" in t for t in receiver.titles()))
            await sim.set_price("ETHUSDT", "1800")
            await receiver.wait_for(lambda m: any("other" in t and "1.5" in t for t in receiver.titles()))
            sim.restore_key("demo")
            await receiver.wait_for(lambda m: any("watched again" in t for t in receiver.titles()))
            await wait_until(lambda: "cross:demo" in daemon.book.units(), what="demo back in the book")
            assert_alive(daemon, logs)
        finally:
            await stop(daemon)
    notice = next(m for m in receiver.messages if "NOT being watched" in m["title"])
    assert "demo" in notice["title"] and "-2015" in notice["message"]
    assert sum("NOT being watched" in t for t in receiver.titles()) == 1  # its retries say nothing new
    snapshots = [r for r in sim.engine.requests if r.path == "/sapi/v1/margin/account" and r.status == 401]
    assert not snapshots  # found by the key check, not by a snapshot
    (disabled,) = events(logs, "account_disabled")
    assert disabled["account"] == "demo"


async def test_empty_state_file_is_set_aside_and_said(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A zero-byte state file (a bad copy, a full disk): moved aside, an "alert history lost" notice
    first, then what holds now is sent again once; the daemon runs."""
    path = daemon_config(tmp_path, sim, receiver)
    state = tmp_path / "state"
    state.mkdir()
    (state / FILENAME).write_bytes(b"")
    await sim.set_price("BTCUSDT", "27000")
    with capture_logs() as logs:
        daemon = service(path)
        try:
            await daemon.startup()
            await receiver.wait_for(lambda m: len(m) >= 2)
            assert_alive(daemon, logs)
        finally:
            await stop(daemon)
    assert receiver.titles()[0] == "margin-monitor: alert history lost"
    assert "was empty (0 bytes)" in receiver.messages[0]["message"]
    assert "1.5" in receiver.titles()[1]
    assert [p.name.startswith(FILENAME + ".corrupt-") for p in state.iterdir() if p.name != FILENAME]
    (lost,) = events(logs, "alert_state_lost")
    assert lost["log_level"] == "error"


APPRISE_LOG = """
import logging, sys
from monitor.logs import configure_logging
configure_logging("json", "info", stream=sys.stdout)
logging.getLogger("apprise").warning("Failed to send JSON notification: HTTP 500")
"""


async def test_apprise_log_lines_are_structured_events() -> None:
    """Apprise's own log records become ``event="apprise"`` with the text in ``message`` (a child
    process: logging is configured once per process)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", APPRISE_LOG, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    line: Mapping[str, Any] = json.loads(out.decode().splitlines()[-1])
    assert line["event"] == "apprise" and line["message"] == "Failed to send JSON notification: HTTP 500"
    assert line["level"] == "warning" and line["logger"] == "apprise"
