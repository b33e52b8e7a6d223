"""The demo is quick and says what is coming: the bundled crash alerts within seconds of ready, runs
the whole ladder within 90 s, and the ready line is derived from the scenario, not written out."""

from __future__ import annotations

import doctest
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

import monitor.demo
from monitor.config.model import Config, load_config
from monitor.demo import deepest_fall, describe_move, first_alerts, preview
from monitor.sim import load_scenario, parse_scenario
from monitor.sim.engine import SimExchange

ROOT = Path(__file__).resolve().parent.parent
READY_AFTER = 1.0  # the daemon is typically ready about a second after the simulator starts


def test_preview_examples_in_docstrings() -> None:
    """The worked examples in monitor/demo.py hold."""
    assert doctest.testmod(monitor.demo).failed == 0


def test_the_crash_runs_the_whole_ladder_within_90_seconds() -> None:
    """Replayed in the simulator's own engine: 1.5, 1.3, distance (3 %), 1.1 on the way down, then the
    resolved levels (bar + hysteresis 0.02) on the way up, all before t = 80 s; the first by t = 12 s."""
    engine = SimExchange(load_scenario("crash"), realtime=True, clock=lambda: 0.0)
    account = engine.state.accounts["demo"]
    order: list[tuple[str, int]] = []
    seen: set[str] = set()
    for second in range(91):
        engine.run_until(second)
        level = engine.state.cross_level(account).margin_level
        assert level is not None
        # a uniform fall x of every non-USDT asset liquidates where (A·(1-x) + usdt) / L = 1.1
        held = {h.asset: h.held * (engine.state.price_of(h.asset) or 0) for h in account.cross.values()}
        debt = sum(h.debt * (engine.state.price_of(h.asset) or 0) for h in account.cross.values())
        others = sum(v for a, v in held.items() if a != "USDT")
        fall = 1 - (Decimal("1.1") * debt - held["USDT"]) / others
        marks = {
            "normal": level <= Decimal("1.5"),
            "margin_call": level <= Decimal("1.3"),
            "distance": Decimal(0) < fall <= Decimal("0.03"),
            "liquidation": level <= Decimal("1.1"),
            "resolved liquidation": "liquidation" in seen and level > Decimal("1.12"),
            "resolved margin_call": "margin_call" in seen and level > Decimal("1.32"),
            "resolved normal": "normal" in seen and level > Decimal("1.52"),
        }
        for mark, hit in marks.items():
            if hit and mark not in seen:
                seen.add(mark)
                order.append((mark, second))
    names = [m for m, _ in order]
    down = ["normal", "margin_call", "liquidation"]
    assert names == [
        "normal",
        "margin_call",
        "distance",
        "liquidation",
        *(f"resolved {m}" for m in reversed(down)),
    ]
    assert order[0][1] <= 12 and order[-1][1] <= 80


def test_the_crash_preview_names_a_40_percent_crash_and_a_first_alert_within_15_s() -> None:
    """From the scenario: a 40 % fall, and the first alert ~10 s after the daemon is ready."""
    config = load_config(ROOT / "config.yaml")
    ahead = preview(config, ROOT / "config.yaml")
    assert ahead is not None and ahead.move == "a 40 % crash"
    assert READY_AFTER < ahead.alerts_at[0] <= READY_AFTER + 15
    line = ahead.line(READY_AFTER)
    assert line.startswith("replaying a 40 % crash; first alert in ~") and line.endswith("s; Ctrl-C to stop")
    seconds = int(line.split("~")[1].split(" ")[0])
    assert 5 <= seconds <= 15


def _one_pair_scenario(points: list[list[Any]]) -> dict[str, Any]:
    return {
        "prices": {"BTCUSDT": "30000"},
        "accounts": [
            {
                "name": "demo",
                "api_key": "demo-key",
                "api_secret": "demo-secret",
                # level(p) = p / 18,750: 1.6 at 30,000, meets 1.5 at 28,125
                "cross": [
                    {"asset": "BTC", "free": "1"},
                    {"asset": "USDT", "free": "0", "borrowed": "18750"},
                ],
            }
        ],
        "timeline": {"speed": 2, "paths": [{"ramp": "BTCUSDT", "every": 1, "points": points}]},
    }


def _config(**alerts: Any) -> Config:
    return Config.model_validate(
        {
            "accounts": [{"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}],
            "alerts": alerts,
            "notify": {"routes": {"c": {"urls": ["console://"]}}},
        }
    )


def test_first_alert_follows_the_scenario_the_speed_and_the_ladder() -> None:
    """p(t) = 30,000 - 375 t (simulated s), replayed at speed 2: the 1.5 bar (p = 28,125, t = 5)
    alerts 2.5 s after start; a ladder topped by 1.2 (p = 22,500, t = 20) at 10 s; ``for: 5s`` adds 5 s."""
    scenario = parse_scenario(_one_pair_scenario([[0, "30000"], [40, "15000"]]), source="<test>")
    assert first_alerts(_config(), scenario)[0] == pytest.approx(2.5, abs=0.5)
    assert first_alerts(_config(levels=[{"bar": 1.2}]), scenario)[0] == pytest.approx(10.0, abs=0.5)
    assert first_alerts(_config(**{"for": "5s", "levels": [{"bar": 1.2}]}), scenario)[0] == pytest.approx(
        15.0, abs=0.5
    )
    assert describe_move(scenario) == "a 50 % crash"
    assert deepest_fall(scenario) == ("BTCUSDT", Decimal("0.5"))


def test_no_alert_and_small_moves_are_said_plainly() -> None:
    """A flat scenario says so; a 10 % dip is a drop, not a crash."""
    flat = parse_scenario(_one_pair_scenario([[0, "30000"], [10, "30000"]]), source="<test>")
    assert describe_move(flat) == "prices standing" and first_alerts(_config(), flat) == ()
    dip = parse_scenario(_one_pair_scenario([[0, "30000"], [10, "27000"], [20, "30000"]]), source="<test>")
    assert describe_move(dip) == "a 10 % drop"


def test_no_preview_on_a_real_exchange(tmp_path: Path) -> None:
    """With exchange.kind binance there is nothing to replay, so no ready line."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["exchange"] = {"kind": "binance"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert preview(load_config(path), path) is None


@pytest.mark.parametrize("name", ["flash_wick", "interest_bleed"])
def test_every_bundled_scenario_has_a_preview(tmp_path: Path, name: str) -> None:
    """Each bundled scenario yields a line with a first alert (each crosses at least the normal bar)."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["exchange"]["scenario"] = name
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    with capture_logs() as logs:
        ahead = preview(load_config(path), path)
    assert logs == []  # the replay is quiet: no simulator event appears in the daemon's log
    assert ahead is not None and ahead.alerts_at
    assert "first alert in ~" in ahead.line(0.0)
