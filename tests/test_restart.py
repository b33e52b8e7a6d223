"""State across restarts, at the daemon level: the real daemon on the simulator, stopped and started again.

The account used throughout (as in test_e2e): cross, BTC held 1.0, USDT borrowed 18,750, so
level(p) = p / 18,750: 1.6 at 30,000; 1.5 at 28,125, 1.3 at 24,375, 1.1 at 20,625.
At 23,000 the level is 1.2267: below 1.5 and 1.3, above 1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Receiver, daemon_config, one_long_account, wait_until

import monitor.service
from monitor.config.model import load_config
from monitor.service import EXIT_STATE, Service
from monitor.sim import Simulator
from monitor.store import FILENAME, Store

# short_drain (conftest.py): shutdown waits at most 0.5 s for a dead receiver (10 s in production)
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("short_drain")]

REPO = Path(__file__).resolve().parent.parent
UNIT = "cross:demo"
DOWN = "while the monitor was down"
LADDER = [{"bar": "normal"}, {"bar": "margin_call", "repeat": "1h"}, {"bar": "liquidation"}]


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """One cross account, BTC collateral against a USDT loan, level 1.6 at the start."""
    return one_long_account()


@contextlib.asynccontextmanager
async def daemon(config_path: Path, clock: Callable[[], float] = time.time) -> AsyncIterator[Service]:
    """A started daemon whose alert clock is ``clock``, ready (every account fresh), shut down at exit."""
    service = Service(load_config(config_path), config_path, clock=clock)
    try:
        await service.startup()
        await wait_until(service.ready, what="daemon ready")
        yield service
    finally:
        await service.shutdown()


def titles(receiver: Receiver) -> list[str]:
    return receiver.titles()


def bodies(receiver: Receiver) -> list[str]:
    return [str(m.get("message", "")) for m in receiver.messages]


async def settle(service: Service, seconds: float = 1.1) -> None:
    """Let the daemon evaluate fresh ticks and run its per-second timers for a while."""
    ticks = service.engine.ticks if service.engine else 0
    await wait_until(lambda: service.engine is not None and service.engine.ticks > ticks, what="a tick")
    await asyncio.sleep(seconds)


def open_rows(state_dir: Path) -> list[tuple[str, str]]:
    """(kind, title) of the outbox rows still queued or held, read from the state file."""
    with Store(state_dir) as store:
        return [(row.kind, row.title) for row in store.open_outbox()]


async def test_restart_below_a_bar_does_not_resend_its_crossing(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Restarted while below 1.5 and 1.3 (repeat not yet due), the daemon sends nothing again."""
    config = daemon_config(tmp_path, sim, receiver, levels=LADDER)
    async with daemon(config) as first:
        await sim.set_price("BTCUSDT", "23000")
        await receiver.wait_for(lambda m: len(m) >= 2)
        assert first.policy is not None
        before = first.policy.export_state([UNIT])[UNIT]["rules"]
    assert "1.5" in titles(receiver)[0] and "1.3" in titles(receiver)[1], titles(receiver)

    async with daemon(config) as again:
        await sim.set_price("BTCUSDT", "22900")  # a fresh tick, still between 1.3 and 1.1
        await settle(again)
        assert again.policy is not None
        assert again.policy.firing(UNIT) == {"normal": "firing", "margin_call": "firing"}
        after = again.policy.export_state([UNIT])[UNIT]["rules"]
    # the crossings continue (same crossing number, breach time and last send), none started anew
    for rule in ("normal", "margin_call"):
        kept = ("crossing", "since", "last_sent")
        assert {k: after[rule][k] for k in kept} == {k: before[rule][k] for k in kept}, (before, after)
    assert len(receiver.messages) == 2, titles(receiver)


async def test_restart_after_the_repeat_interval_sends_one_reminder(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Restarted after margin_call's 1 h repeat came due, the daemon sends one reminder, no new crossing."""
    config = daemon_config(tmp_path, sim, receiver, levels=LADDER)
    async with daemon(config):
        await sim.set_price("BTCUSDT", "23000")
        await receiver.wait_for(lambda m: len(m) >= 2)

    later = 3600 + 60  # the daemon comes back 1 h 1 min later (alert clock moved on)
    async with daemon(config, clock=lambda: time.time() + later) as again:
        await receiver.wait_for(lambda m: len(m) >= 3)
        await settle(again)
    new = titles(receiver)[2:]
    assert len(new) == 1 and "1.3" in new[0] and ", still" in new[0], titles(receiver)
    assert "Reminder 1" in bodies(receiver)[2] and DOWN not in bodies(receiver)[2]


@pytest.mark.slow
async def test_outbox_queued_at_shutdown_is_sent_once_after_restart(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Alerts still queued at a clean shutdown are delivered after restart, once, and never again."""
    receiver.failing = True
    config = daemon_config(tmp_path, sim, receiver, levels=LADDER)
    async with daemon(config):
        await sim.set_price("BTCUSDT", "23000")
        await wait_until(lambda: receiver.attempts >= 2, what="failed delivery attempts")
    state_dir = tmp_path / "state"
    queued = open_rows(state_dir)
    assert [kind for kind, _ in queued] == ["firing", "firing"], queued

    receiver.failing = False
    async with daemon(config) as again:
        await receiver.wait_for(lambda m: len(m) >= 2)
        await settle(again)
    assert [t for _, t in queued] == titles(receiver)  # exactly what was queued, in order
    assert open_rows(state_dir) == []

    async with daemon(config) as third:
        await settle(third)
    assert len(receiver.messages) == 2, titles(receiver)


@pytest.mark.slow
async def test_outbox_survives_a_kill_9_and_is_sent_once(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """`margin-monitor run` killed with SIGKILL with alerts undeliverable: after restart, each once."""
    receiver.failing = True
    await sim.set_price("BTCUSDT", "23000")  # below 1.5 and 1.3 from the first snapshot on
    config = daemon_config(tmp_path, sim, receiver, levels=LADDER)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "run", "-c", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_until(lambda: receiver.attempts >= 2, within=30, what="failed delivery attempts")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [kind for kind, _ in open_rows(tmp_path / "state")] == ["firing", "firing"]

    receiver.failing = False
    async with daemon(config) as again:
        await receiver.wait_for(lambda m: len(m) >= 2)
        await settle(again)
    assert len(titles(receiver)) == 2, titles(receiver)
    assert "1.5" in titles(receiver)[0] and "1.3" in titles(receiver)[1], titles(receiver)
    assert not any(DOWN in body for body in bodies(receiver))  # seen live before the kill


@pytest.mark.slow
async def test_crossing_while_down_is_reported_once_as_such(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A crash through 1.5 and 1.3 while the daemon is stopped is reported at restart, saying so, once."""
    config = daemon_config(tmp_path, sim, receiver, levels=LADDER)
    async with daemon(config) as first:
        await settle(first, 0.2)
    assert receiver.messages == []

    await sim.set_price("BTCUSDT", "23000")  # while nothing watches
    async with daemon(config) as again:
        await receiver.wait_for(lambda m: len(m) >= 2)
        await settle(again)
    assert len(titles(receiver)) == 2, titles(receiver)
    assert "1.5" in titles(receiver)[0] and "1.3" in titles(receiver)[1], titles(receiver)
    assert all(DOWN in body for body in bodies(receiver)), bodies(receiver)

    async with daemon(config) as third:
        await settle(third)
    assert len(receiver.messages) == 2, titles(receiver)


@pytest.mark.parametrize("breakage", ["corrupt", "state_dir_is_a_file", "state_file_is_a_directory"])
async def test_unusable_state_file_exits_with_its_own_code_and_one_line(
    tmp_path: Path, sim: Simulator, receiver: Receiver, breakage: str
) -> None:
    """`margin-monitor run` on a corrupt or unwritable state file says why in a line and exits 3 at once."""
    config = daemon_config(tmp_path, sim, receiver)
    state = tmp_path / "state"
    if breakage == "corrupt":
        state.mkdir()
        (state / FILENAME).write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    elif breakage == "state_dir_is_a_file":
        state.write_text("not a directory")
    else:
        (state / FILENAME).mkdir(parents=True)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    elapsed = time.monotonic() - started
    assert proc.returncode == EXIT_STATE == 3, err.decode()
    text = err.decode()
    errors = [json.loads(line) for line in text.splitlines() if json.loads(line)["level"] == "error"]
    assert len(errors) == 1 and errors[0]["event"] == "startup_failed", text
    why = {"corrupt": "is corrupt", "state_dir_is_a_file": "not writable"}.get(breakage, "not writable")
    assert why in errors[0]["error"] and str(state) in errors[0]["error"], errors[0]
    assert "Traceback" not in text and out == b""
    assert elapsed < 15, f"took {elapsed:.1f} s to refuse"
    assert not any(r.path.startswith("/sapi") for r in sim.engine.requests)  # refused before any call


def test_systemd_does_not_restart_on_an_unusable_state_file() -> None:
    """The unit lists exit 3 (state) and 78 (config) in RestartPreventExitStatus, so it cannot crash-loop."""
    unit = (REPO / "deploy" / "systemd" / "margin-monitor.service").read_text()
    match = re.search(r"(?m)^RestartPreventExitStatus=(.*)$", unit)
    assert match is not None, "no RestartPreventExitStatus= in the unit"
    codes = set(match.group(1).split())
    assert {str(EXIT_STATE), "78"} <= codes and str(monitor.service.EXIT_UNAVAILABLE) not in codes
    assert re.search(r"(?m)^Restart=on-failure$", unit) and re.search(r"(?m)^StartLimitBurst=\d+$", unit)
