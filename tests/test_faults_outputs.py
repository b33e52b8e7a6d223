"""Fault matrix, outputs: a notification target down for minutes, and the state file locked,
unwritable or corrupt (at start: one line and exit code 3; mid-run: degraded, loud, still alerting).

The account (derived by hand): cross, BTC held 1.0 against 18,750 USDT borrowed, no interest.
level(p) = p / 18,750: 1.6 at 30,000; it meets 1.5 at 28,125, 1.3 at 24,375 and 1.1 at 20,625.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from daemon_harness import (
    Receiver,
    assert_alive,
    daemon_config,
    events,
    one_long_account,
    running_daemon,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from structlog.testing import capture_logs

from monitor.app.state_health import FAILING_TITLE, WORKS_TITLE
from monitor.cli.status_view import StatusResult, render
from monitor.config.model import load_config
from monitor.service import Service, StartupError
from monitor.sim import Simulator
from monitor.store import FILENAME, Store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """One cross account, BTC collateral against a USDT loan, level 1.6 at the start."""
    return one_long_account()


@contextlib.asynccontextmanager
async def fast_retry_daemon(config_path: Path) -> AsyncIterator[Service]:
    """A started daemon whose notification retries come every 50 ms instead of 1 s .. 5 min."""
    service = Service(load_config(config_path), config_path, notify_backoff=lambda attempt: 0.05)
    await service.startup()
    try:
        yield service
    finally:
        await service.shutdown()


async def test_notification_target_down_for_minutes_delivers_everything_in_order_once(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """The webhook answers 500 for 40 delivery attempts (minutes at the real backoff): monitoring goes on,
    and when it is back every alert arrives once, in order, and the next crossing follows."""
    receiver.failing = True
    with capture_logs() as logs:
        async with fast_retry_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            await sim.set_price("BTCUSDT", "27000")
            await asyncio.sleep(0.2)
            await sim.set_price("BTCUSDT", "23000")
            await wait_until(lambda: receiver.attempts >= 40, what="40 failed attempts")
            assert daemon.ready() and daemon.healthy()  # a dead notifier is no reason to restart
            receiver.failing = False
            await receiver.wait_for(lambda m: len(m) >= 2)
            await sim.set_price("BTCUSDT", "20000")
            await receiver.wait_for(lambda m: len(m) >= 3)
            await asyncio.sleep(0.3)
            assert_alive(daemon, logs)
            stats = daemon.dispatcher.stats()["hook"] if daemon.dispatcher else None
    titles = receiver.titles()
    assert len(titles) == 3 and "1.5" in titles[0] and "1.3" in titles[1] and "1.1" in titles[2], titles
    assert len(events(logs, "notify_retry")) >= 39
    assert stats is not None and stats.failed >= 40 and stats.sent == 3


def alerts_and_notices(receiver: Receiver) -> tuple[list[str], list[str]]:
    """The titles received: the margin alerts, and the daemon's notices (``margin-monitor: …``)."""
    titles = receiver.titles()
    return [t for t in titles if t.startswith("[")], [t for t in titles if t.startswith("margin-monitor:")]


async def scrape_state_file(daemon: Service) -> dict[str, float]:
    """The state-file samples of the daemon's ``/metrics``, over HTTP."""
    assert daemon.http is not None
    async with aiohttp.ClientSession() as session, session.get(daemon.http.url + "/metrics") as reply:
        body = await reply.text()
    return {
        s.name: s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if s.name.startswith("margin_monitor_state_file")
    }


async def test_state_file_unusable_mid_run_degrades_loudly_and_keeps_alerting(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """The state file fails while running (its SQLite handle dies, as on a vanished disk): every write is
    logged as an error, alerts go on from memory, each sent once, and the trader is told once, on the
    route, that the state file fails and alerts are not saved."""
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            assert daemon.store is not None and daemon.store._conn is not None
            daemon.store._conn.close()
            await sim.set_price("BTCUSDT", "27000")
            await receiver.wait_for(lambda m: len(m) >= 2)
            await sim.set_price("BTCUSDT", "23000")
            await receiver.wait_for(lambda m: len(m) >= 3)
            await asyncio.sleep(0.3)
            assert_alive(daemon, logs)
            assert (await scrape_state_file(daemon))["margin_monitor_state_file_failing"] == 1.0
    alerts, notices = alerts_and_notices(receiver)
    assert [t[:6] for t in alerts] == ["[NORMA", "[MARGI"], receiver.titles()
    assert notices == [FAILING_TITLE], receiver.titles()
    body = next(str(m["message"]) for m in receiver.messages if m["title"] == FAILING_TITLE)
    assert str(tmp_path / "state" / FILENAME) in body and "closed database" in body
    assert len(events(logs, "state_file_failing")) == 1
    failed = events(logs, "outbox_write_failed")
    assert failed and failed[0]["log_level"] == "error" and failed[0]["fallback"] == "memory"
    assert str(tmp_path / "state" / FILENAME) in failed[0]["error"]


async def test_state_file_read_only_then_writable_again_is_told_both_ways(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """The state file turns read-only mid-run (SQLite's "attempt to write a readonly database", as
    after a read-only remount), then writable again: "failing" once on the route while alerts go on,
    /metrics says 1 and counts the failed writes; "works again" once writes have worked for the
    hold (shrunk to 0.3 s), /metrics says 0; the next alert is saved again."""
    config_path = daemon_config(tmp_path, sim, receiver)
    service = Service(load_config(config_path), config_path, state_recovery_hold=0.3)
    with capture_logs() as logs:
        await service.startup()
        try:
            await wait_until(service.ready, what="daemon ready")
            conn = service.store._conn
            assert conn is not None
            conn.execute("PRAGMA query_only = ON")
            await sim.set_price("BTCUSDT", "27000")
            await receiver.wait_for(lambda m: FAILING_TITLE in receiver.titles() and len(m) >= 2)
            scraped = await scrape_state_file(service)
            assert scraped["margin_monitor_state_file_failing"] == 1.0
            assert scraped["margin_monitor_state_file_write_failures_total"] >= 1.0
            assert "state file failing, alerts not saved: " in await shown_on_surfaces(service)
            conn.execute("PRAGMA query_only = OFF")
            await receiver.wait_for(lambda m: WORKS_TITLE in receiver.titles())
            scraped = await scrape_state_file(service)
            assert scraped["margin_monitor_state_file_failing"] == 0.0
            await asyncio.wait_for(cleared_on_surfaces(service), 10)  # (the page reuses its list 1 s)
            await sim.set_price("BTCUSDT", "23000")
            await receiver.wait_for(lambda m: len(alerts_and_notices(receiver)[0]) >= 2)
            assert_alive(service, logs)
        finally:
            await service.shutdown()
    alerts, notices = alerts_and_notices(receiver)
    assert [t[:6] for t in alerts] == ["[NORMA", "[MARGI"], receiver.titles()
    assert notices == [FAILING_TITLE, WORKS_TITLE], receiver.titles()
    body = next(str(m["message"]) for m in receiver.messages if m["title"] == FAILING_TITLE)
    assert "is not writable (attempt to write a readonly database)" in body
    assert str(tmp_path / "state" / FILENAME) in body
    with Store(tmp_path / "state") as store:  # the alert of after the recovery was saved, the first not
        saved = [title for (title,) in store._query("SELECT title FROM outbox")]
    assert [t[:6] for t in saved if t.startswith("[")] == ["[MARGI"], saved


async def cleared_on_surfaces(daemon: Service) -> None:
    """Return once neither ``status`` nor the page's cards carry the state file's failure (the page
    reuses its unit list for a second, so the two may disagree that long), then check that neither
    says anything of it."""
    while True:
        units, cards = await surfaces(daemon)
        if not any(entry.get("state_file_failing") for entry in (*units, *cards)):
            break
        await asyncio.sleep(0.2)
    assert await shown_on_surfaces(daemon) == ""


async def surfaces(daemon: Service) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``status``'s units and the page's cards, over HTTP."""
    assert daemon.http is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(daemon.http.url + "/status") as reply:
            units = await reply.json()
        async with session.get(daemon.http.url + "/page/units") as reply:
            cards = await reply.json()
    return units, cards


async def shown_on_surfaces(daemon: Service) -> str:
    """What ``status`` (over HTTP, drawn as the table) and the page's cards say of the state file:
    the same line on both, or "" when neither says anything."""
    units, cards = await surfaces(daemon)
    console = Console(width=300, record=True)
    console.print(render(StatusResult(units, "test")))
    lines = [x for x in console.export_text().splitlines() if x.startswith("state file failing")]
    on_cards = {card.get("state_file_failing") for card in cards}
    if not lines:
        assert on_cards == {None}, cards
        return ""
    assert len(lines) == 1 and len(on_cards) == 1, (lines, on_cards)
    (reason,) = on_cards
    assert "is not writable (attempt to write a readonly database)" in str(reason)
    assert lines[0] == f"state file failing, alerts not saved: {reason}"
    return lines[0]


def corrupt(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / FILENAME).write_bytes(b"this is not an SQLite database\n" * 100)


async def test_state_file_corrupt_locked_or_unwritable_refuses_to_start(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A corrupt, locked (another daemon) or unwritable state file stops startup with one line naming the
    file and the fix, before any exchange connection."""
    config = daemon_config(tmp_path, sim, receiver)
    state = tmp_path / "state"
    corrupt(state)
    with pytest.raises(StartupError) as bad:
        async with running_daemon(config):
            pass
    (state / FILENAME).unlink()
    with Store(state), pytest.raises(StartupError) as locked:  # a first daemon holds the lock
        async with running_daemon(config):
            pass
    state.rename(tmp_path / "elsewhere")
    state.write_text("a file where the state directory should be")
    with pytest.raises(StartupError) as unwritable:
        async with running_daemon(config):
            pass
    cases = ((bad, "is corrupt"), (locked, "is locked by another process"), (unwritable, "not writable"))
    for exc, why in cases:
        message = str(exc.value)
        assert why in message and str(state) in message and "\n" not in message, message
    assert not any(r.path.startswith("/sapi") for r in sim.engine.requests)


async def test_cli_run_with_corrupt_state_exits_3_with_one_line(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """``margin-monitor run`` on a corrupt state file prints one error line and exits 3 (no crash loop:
    systemd's RestartPreventExitStatus can stop on it)."""
    config = daemon_config(tmp_path, sim, receiver)
    corrupt(tmp_path / "state")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3, err.decode()
    errors = [json.loads(line) for line in err.decode().splitlines() if '"error"' in line]
    failed = [e for e in errors if e.get("event") == "startup_failed"]
    assert len(failed) == 1 and "is corrupt" in failed[0]["error"], err.decode()
    assert "Traceback" not in err.decode()
    with pytest.raises(sqlite3.DatabaseError):  # the file was left as it was, for inspection
        sqlite3.connect(tmp_path / "state" / FILENAME).execute("PRAGMA quick_check").fetchall()
