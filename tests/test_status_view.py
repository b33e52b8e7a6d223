"""`status` as a trader sees it: `status --watch` in a real terminal (tmux: send-keys, capture-pane)
redrawing when the level moves; `status` with the network down; `test-alert` beside a running daemon.

Account (as in test_restart): level(p) = p / 18,750: 1.6 at 30,000, 1.44 at 27,000 (below 1.5).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import Receiver, one_long_account, running_daemon, wait_until
from ops_harness import ROOT, cli, ops_config, refused_port

from monitor.cli.status_view import StatusResult, render, unit_state
from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    return one_long_account()


class Tmux:
    """A tmux server of its own (``-S`` socket in tmp) with one detached 120x30 session."""

    def __init__(self, socket: Path) -> None:
        self.socket = str(socket)

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=10,
                              check=True)  # fmt: skip
        return done.stdout

    def pane(self, *, escapes: bool = False) -> str:
        return self("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "mm")

    async def wait_for(self, *texts: str, within: float = 20.0) -> str:
        """The pane once it shows every one of ``texts`` (fails after ``within`` s, with the pane)."""
        seen = ""

        def shows() -> bool:
            nonlocal seen
            seen = self.pane()
            return all(t in seen for t in texts)

        try:
            await wait_until(shows, within=within, what=f"{texts} in the terminal")
        except AssertionError:
            raise AssertionError(f"terminal never showed {texts}; it shows:\n{seen}") from None
        return seen


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (deploy/ci-setup.sh installs it)")
    term = Tmux(tmp_path / "tmux.sock")
    term("new-session", "-d", "-s", "mm", "-x", "120", "-y", "30", "-c", str(ROOT))
    yield term
    subprocess.run(["tmux", "-S", term.socket, "kill-server"], capture_output=True, timeout=10, check=False)


async def test_status_watch_redraws_in_a_real_terminal(
    tmp_path: Path, sim: Simulator, receiver: Receiver, tmux: Tmux
) -> None:
    """`status --watch` draws the table from the daemon, redraws it in place when the level crosses 1.5
    (state NORMAL, in colour, the alert listed as firing), and Ctrl-C leaves it with exit code 0."""
    path = ops_config(tmp_path, sim, receiver)
    async with running_daemon(path) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        command = f"{sys.executable} -m monitor.cli status --watch --interval 0.3 -c {path}"
        tmux("send-keys", "-t", "mm", command, "Enter")
        first = await tmux.wait_for("demo (cross)", "1.600", "OK", "from the daemon at http://127.0.0.1")
        assert first.count("margin-monitor status") == 1

        await sim.set_price("BTCUSDT", "27000")
        shown = await tmux.wait_for("NORMAL", "1.440", "normal")
        print(shown)
        assert shown.count("margin-monitor status") == 1  # redrawn in place, not printed again
        assert "1.600" not in shown
        coloured = tmux.pane(escapes=True)
        assert "\x1b[" in coloured.split("NORMAL")[0].rsplit("│", 1)[-1]  # the state cell carries a colour

        tmux("send-keys", "-t", "mm", "C-c", "")
        tmux("send-keys", "-t", "mm", "echo watch-exit=$?", "Enter")
        await tmux.wait_for("watch-exit=0")


@pytest.mark.slow
async def test_status_with_the_network_down_says_why_and_fails(tmp_path: Path) -> None:
    """No daemon and no exchange: `status` exits 1 and names both reasons, instead of "no accounts"."""
    with refused_port() as port:  # held refused for the whole run: no other worker can answer on it
        dead = f"127.0.0.1:{port}"
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({
            "exchange": {"kind": "binance", "rest_url": f"http://{dead}", "stream_url": f"ws://{dead}",
                         "ws_api_url": f"ws://{dead}", "risk_stream_url": f"ws://{dead}"},
            "accounts": [{"name": "demo", "api_key": "k", "api_secret": "s"}],
            "notify": {"routes": {"c": {"urls": ["console://"]}}},
            "state_dir": str(tmp_path / "state"),
            "http": {"listen": dead},
        }))  # fmt: skip
        result = await cli("status", "-c", path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("margin-monitor: No accounts could be read: no daemon at http://")
    assert "one-off read failed" in last and "demo" in last and "Connect" in last
    assert "BLIND" in result.stdout and "demo (cross)" in result.stdout  # the account, shown not watched


async def test_test_alert_beside_a_running_daemon(tmp_path: Path, sim: Simulator, receiver: Receiver) -> None:
    """With the daemon holding the state file, `test-alert` still sends, and for a failing URL prints
    the reason Apprise gave, with the URL's password masked."""
    dead = Receiver()
    await dead.start()
    dead.failing = True
    try:
        path = ops_config(tmp_path, sim, receiver)
        data = yaml.safe_load(path.read_text())
        secret_url = dead.url.replace("json://", "json://alice:hunter2secret@")
        data["notify"] = {"routes": {"hook": {"urls": [receiver.url]}, "broken": {"urls": [secret_url]}}}
        path.write_text(yaml.safe_dump(data))
        async with running_daemon(path) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            before = len(receiver.messages)
            result = await cli("test-alert", "-c", path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "locked" not in result.stdout + result.stderr
        assert "route hook url #1: delivered" in result.stdout and len(receiver.messages) == before + 1
        failed = next(line for line in result.stdout.splitlines() if line.startswith("route broken url #1"))
        assert "FAILED" in failed and "500" in failed and "alice:****@" in failed
        assert "hunter2secret" not in result.stdout + result.stderr
    finally:
        await dead.stop()


def test_state_words() -> None:
    """The state column: level against the unit's bars; the daemon's own state word wins when given."""
    bars = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}
    assert [unit_state({"margin_level": lv, "bars": bars}) for lv in (1.6, 1.5, 1.2, 1.05)] == [
        "OK", "NORMAL", "MARGIN CALL", "LIQUIDATION"]  # fmt: skip
    assert unit_state({"margin_level": None, "total_liability_value": 0}) == "NO DEBT"
    assert unit_state({"margin_level": 1.6, "bars": bars, "blind": True}) == "BLIND"
    assert unit_state({"margin_level": None, "unpriced_assets": ["XYZ"]}) == "APPROXIMATE"
    assert unit_state({"margin_level": 1.6, "bars": bars, "state": "approximate"}) == "APPROXIMATE"
    assert (
        unit_state({"margin_level": 1.2, "bars": bars, "state": "approximate"}) == "MARGIN CALL (APPROXIMATE)"
    )
    assert unit_state({"margin_level": 1.6, "bars": bars, "settling": True}) == "SETTLING"
    assert unit_state({"margin_level": 1.2, "bars": bars, "settling": True}) == "MARGIN CALL"
    assert unit_state({"margin_level": None, "state": "no_debt"}) == "NO DEBT"


def test_render_shows_reasons_and_survives_odd_units() -> None:
    """Unknown or missing keys never break the view; a reason from the daemon is printed."""
    from rich.console import Console

    console = Console(width=120, record=True)
    units = [{"account": "a", "state": "blind", "reason": "no price for BTCUSDT for 31 s"}, {}]
    console.print(render(StatusResult(units, "the daemon at x", at=0.0)))
    text = console.export_text()
    assert "BLIND" in text and "no price for BTCUSDT for 31 s" in text
    assert "unknown" in text and "UNKNOWN" in text and "∞" not in text  # no level never reads as safe
    row = next(x for x in text.splitlines() if x.startswith("│") and " a " in x)
    assert row.count("unknown") == 2 and "none" not in row  # nor an unknown distance as "no liquidation"


def test_a_failed_read_is_one_line_whatever_the_exception_holds() -> None:
    """python-binance can put a response's headers on later lines of its error: `status` still
    prints one line (the examples in ``supervisor.describe``, which it uses)."""
    import doctest

    import monitor.exchange.supervisor

    assert doctest.testmod(monitor.exchange.supervisor).attempted >= 1
    assert doctest.testmod(monitor.exchange.supervisor).failed == 0
