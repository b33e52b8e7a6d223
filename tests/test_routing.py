"""A route the trader adds gets the margin alerts: the shipped config leans on the defaults, and
``check`` prints which route gets which alert, warning about routes and alerts nobody is paged on."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import Receiver, daemon_config, events, one_long_account, running_daemon, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import monitor.watch.routing
from monitor.config.model import Config, load_config
from monitor.sim import Simulator
from monitor.watch.ladder import policy_for_unit
from monitor.watch.routing import route_table

ROOT = Path(__file__).resolve().parent.parent
ISOLATED_10X = {"normal": 1.111, "margin_call": 1.1, "liquidation": 1.05}
CLASSIC = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}


def shipped_plus(tmp_path: Path, **routes: str) -> Path:
    """``config.yaml`` as shipped, plus the named routes under ``notify.routes`` and nothing else."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    for name, url in routes.items():
        data["notify"]["routes"][name] = {"urls": [url]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_routing_examples_in_docstrings() -> None:
    """The worked example in monitor/watch/routing.py holds."""
    assert doctest.testmod(monitor.watch.routing).failed == 0


@pytest.mark.parametrize("bars", [CLASSIC, ISOLATED_10X])
def test_a_route_added_to_the_shipped_config_gets_every_alert(tmp_path: Path, bars: dict[str, float]) -> None:
    """Adding one json:// route to config.yaml, and nothing else, sends it every rung, distance and blind."""
    config = load_config(shipped_plus(tmp_path, phone="json://127.0.0.1:1/hook"))
    policy = policy_for_unit(config.alerts, bars, config.route_names())
    assert all("phone" in rule.routes for rule in policy.levels) and len(policy.levels) == 3
    assert policy.distance is not None and "phone" in policy.distance.routes
    assert "phone" in policy.blind_routes
    table = route_table(config)
    assert table.alerts["phone"] == table.alerts["console"]
    assert table.alerts["phone"] == [
        "normal 1.5", "margin_call 1.3", "liquidation 1.1", "distance 3 %", "blind", "notices",
    ]  # fmt: skip
    assert table.warnings == []


def test_the_shipped_config_alone_warns_that_nobody_is_paged() -> None:
    """With only console:// every alert stays on the terminal, and the table says so in one line."""
    table = route_table(load_config(ROOT / "config.yaml"))
    assert [w for w in table.warnings if "console://" in w] == [
        "every alert reaches only console:// (this terminal; nobody is paged): "
        "add a route under notify.routes (README: Configuration)"
    ]


def test_a_route_left_out_of_every_rung_is_warned_about(tmp_path: Path) -> None:
    """The old shipped shape (routes: [console] on every rung) leaves an added route without margin alerts."""
    path = shipped_plus(tmp_path, phone="json://127.0.0.1:1/hook")
    data = yaml.safe_load(path.read_text())
    for rung in data["alerts"]["levels"]:
        rung["routes"] = ["console"]
    data["alerts"]["distance"]["routes"] = ["console"]
    data["alerts"]["blind_routes"] = ["console"]
    path.write_text(yaml.safe_dump(data))
    table = route_table(load_config(path))
    assert table.alerts["phone"] == ["notices"] and table.silent == ["phone"]
    assert any(w.startswith("route phone gets no margin alert") for w in table.warnings)
    assert "alert normal 1.5 reaches only console:// (nobody is paged)" in table.warnings
    assert "alert blind reaches only console:// (nobody is paged)" in table.warnings
    lines = table.lines()
    assert lines[0].startswith("routing") and any(line.strip().startswith("phone") for line in lines)


def _oracle(explicit: tuple[str, ...], account: tuple[str, ...] | None, default: tuple[str, ...],
            every: tuple[str, ...]) -> set[str]:  # fmt: skip
    """README's rule, written independently: the rung's routes, else the account's, else
    alerts.default_routes, else every route."""
    return set(explicit or account or default or every)


names = st.sampled_from(["console", "phone", "mail", "pager"])
subsets = st.lists(names, unique=True, max_size=3).map(tuple)


@settings(max_examples=200, deadline=None)
@given(
    rung_routes=st.lists(subsets, min_size=1, max_size=3),
    distance=st.none() | subsets,
    blind=st.none() | subsets,
    default=subsets,
    account_routes=st.none() | st.lists(names, unique=True, min_size=1, max_size=2).map(tuple),
)
def test_property_table_agrees_with_the_documented_rule(
    rung_routes: list[tuple[str, ...]],
    distance: tuple[str, ...] | None,
    blind: tuple[str, ...] | None,
    default: tuple[str, ...],
    account_routes: tuple[str, ...] | None,
) -> None:
    """For any ladder, every (route, alert) pair in the table is exactly what the documented rule gives."""
    every = ("console", "phone", "mail", "pager")
    bars = [1.6, 1.4, 1.2]
    data: dict[str, Any] = {
        "accounts": [{"name": "a", "api_key": "k", "api_secret": "s"}],
        "alerts": {
            "levels": [{"bar": bars[i], "routes": list(r)} for i, r in enumerate(rung_routes)],
            "default_routes": list(default),
        },
        "notify": {
            "routes": {n: {"urls": ["console://" if n == "console" else f"json://h/{n}"]} for n in every}
        },
    }
    if distance is not None:
        data["alerts"]["distance"] = {"within": 0.05, "routes": list(distance)}
    if blind is not None:
        data["alerts"]["blind_routes"] = list(blind)
    if account_routes is not None:
        data["accounts"][0]["alerts"] = {"routes": list(account_routes)}
    table = route_table(Config.model_validate(data))
    prefix = "a: " if account_routes is not None else ""
    expected: dict[str, set[str]] = {n: {"notices"} for n in every}
    for i, routes in enumerate(rung_routes):
        for route in _oracle(routes, account_routes, default, every):
            expected[route].add(f"{prefix}level_{bars[i]:g} {bars[i]:g}")
    if distance is not None:
        for route in _oracle(distance, account_routes, default, every):
            expected[route].add(f"{prefix}distance 5 %")
    for route in blind if blind is not None else _oracle((), account_routes, default, every):
        expected[route].add(f"{prefix}blind")
    assert {n: set(a) for n, a in table.alerts.items()} == expected
    for route in every:
        margin = any(not a.endswith(("blind", "notices")) for a in expected[route])
        assert margin == (not any(w.startswith(f"route {route} gets no margin") for w in table.warnings))


def test_check_prints_the_routing_table(tmp_path: Path) -> None:
    """`margin-monitor check` prints one routing line per route; the added route gets every alert."""
    import subprocess

    path = shipped_plus(tmp_path, phone="json://127.0.0.1:1/hook")
    data = yaml.safe_load(path.read_text())
    data["http"] = {"enabled": False}
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "check", "-c", str(path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    phone = next(line for line in lines if line.strip().startswith("phone"))
    assert (
        phone.split(": ", 1)[1]
        == "normal 1.5, margin_call 1.3, liquidation 1.1, distance 3 %, blind, notices"
    )
    assert not [line for line in lines if line.startswith("WARN")], result.stdout


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_added_json_route_receives_the_demo_margin_alerts(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """config.yaml + one json:// route, run on the bundled crash (real time, 4x): the route gets NORMAL,
    then MARGIN CALL, over real Apprise HTTP (the distance rule's routing is checked above, without
    waiting for it); the ready line says what is coming.

    (The copy also moves the HTTP endpoint to a free port, so the test never collides with a running
    daemon, and plays the bundled crash 4 times faster (MARGIN CALL after ~7 s instead of ~29 s); neither
    touches routing.)"""
    path = shipped_plus(tmp_path, phone=receiver.url)
    data = yaml.safe_load(path.read_text())
    data["http"]["listen"] = "127.0.0.1:0"
    crash = yaml.safe_load((ROOT / "monitor" / "sim" / "scenarios" / "crash.yaml").read_text())
    crash["timeline"]["speed"] = 4
    (tmp_path / "crash-4x.yaml").write_text(yaml.safe_dump(crash))
    data["exchange"]["scenario"] = "crash-4x.yaml"
    path.write_text(yaml.safe_dump(data))
    async with running_daemon(path) as daemon:
        await wait_until(daemon.ready, within=30, what="daemon ready")
        await receiver.wait_for(
            lambda m: any("[MARGIN CALL] demo (cross)" in str(x["title"]) for x in m), within=60
        )
    titles = receiver.titles()
    order = [
        next(i for i, t in enumerate(titles) if key in t) for key in ("[NORMAL] demo", "[MARGIN CALL] demo")
    ]
    assert order == sorted(order), titles
    assert "Distance to each bar" in receiver.messages[order[0]]["message"]
    out = capsys.readouterr().out
    assert "replaying a 40 % crash; first alert in ~" in out and "s; Ctrl-C to stop" in out
    assert "[!] [NORMAL] demo (cross)" in out  # the console route still prints it too


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """One cross account, level 1.6 at the start (for the daemon-start test below)."""
    return one_long_account()


async def test_daemon_warns_at_start_about_a_route_without_margin_alerts(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A route no rung or distance reaches is named in one warning at start, with the fix."""
    path = daemon_config(tmp_path, sim, receiver, levels=[{"bar": 1.5, "routes": ["hook"]}])
    data = yaml.safe_load(path.read_text())
    data["notify"]["routes"]["spare"] = {"urls": ["json://127.0.0.1:1/spare"]}
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    with capture_logs() as logs:
        async with running_daemon(path):
            pass
    warned = events(logs, "route_gets_no_margin_alert")
    assert [(e["route"], e["log_level"]) for e in warned] == [("spare", "warning")]
    assert "leave routes out" in warned[0]["fix"]
