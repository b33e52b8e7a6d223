"""Scenario files: loading, one-line errors, price sources, the timeline cursor and bundled scenarios."""

from __future__ import annotations

import asyncio
import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import DEMO_SCENARIO
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config.duration import parse_duration
from monitor.sim import ScenarioError, bundled_scenarios, load_scenario, parse_scenario, serve
from monitor.sim.engine import SimExchange
from monitor.sim.timeline import INTEREST, Cursor


def write(tmp_path: Path, data: Any, name: str = "s.yaml") -> Path:
    """Write ``data`` as YAML (or text as is) and return the path."""
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def demo(**changes: Any) -> dict[str, Any]:
    """A deep copy of the demo scenario with top-level keys replaced."""
    return {**copy.deepcopy(DEMO_SCENARIO), **changes}


def error_of(tmp_path: Path, data: Any) -> str:
    """The ScenarioError text for a scenario file holding ``data``."""
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    return text.removeprefix(f"{path}: ")


def test_bundled_scenarios_load_with_the_demo_account() -> None:
    """crash, flash_wick and interest_bleed load; each has demo-key/demo-secret and an isolated pair."""
    assert set(bundled_scenarios()) >= {"crash", "flash_wick", "interest_bleed"}
    for name in ("crash", "flash_wick", "interest_bleed"):
        scenario = load_scenario(name)
        account = scenario.account("demo")
        assert (account.api_key, account.api_secret.get_secret_value()) == ("demo-key", "demo-secret")
        assert account.isolated


def test_crash_walks_through_the_bars_and_recovers() -> None:
    """crash.yaml takes the demo cross level below 1.5, 1.3 and 1.1 within 2 minutes, then back above 1.5."""
    engine = SimExchange(load_scenario("crash"), realtime=False)
    crossed: dict[float, float] = {}
    recovered_at = None
    for second in range(0, 180):
        engine.run_until(second)
        acc = engine.state.accounts["demo"]
        level = engine.state.cross_level(acc).margin_level
        assert level is not None
        for bar in (1.5, 1.3, 1.1):
            if level < Decimal(str(bar)):
                crossed.setdefault(bar, second)
        if 1.1 in crossed and level > Decimal("1.5") and recovered_at is None:
            recovered_at = second
    assert sorted(crossed) == [1.1, 1.3, 1.5] and max(crossed.values()) <= 120
    assert recovered_at is not None and recovered_at < 180


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"accounts": []}, "prices: required key missing"),
        (demo(prices={"BTCUSDT": "-1"}), "prices.BTCUSDT: expected a number > 0, got '-1'"),
        (demo(bogus=1), "bogus: unknown key"),
        (demo(prices={"ETHUSDT": "2000"}), "prices: needs BTCUSDT: account totals are reported in BTC"),
        (demo(prices={"BTCUSDT": "1", "XYZ": "1"}), "prices.XYZ: invalid name 'XYZ'"),
        (demo(timeline={"speed": 0}), "timeline.speed: Input should be greater than 0"),
        (
            demo(timeline={"events": [{"at": "soon", "type": "borrow", "account": "demo"}]}),
            "timeline.events[0].at: expected a duration such as 30, '90s', '2m' or '1h', got 'soon'",
        ),
        (
            demo(timeline={"events": [{"type": "borrow", "account": "demo"}]}),
            "timeline.events[0]: borrow needs asset and amount",
        ),
        (
            demo(timeline={"events": [{"type": "liquidation", "account": "ghost"}]}),
            "timeline.events[0].account: unknown account 'ghost'",
        ),
        (demo(timeline={"faults": [{"kind": "stall"}]}), "timeline.faults[0]: stall needs duration > 0"),
        (demo(timeline={"faults": [{"kind": "melt"}]}), "timeline.faults[0].kind: expected one of"),
        (
            demo(timeline={"paths": [{"csv": "a.csv", "ramp": "BTCUSDT"}]}),
            "timeline.paths[0]: expected exactly one of csv, klines or ramp",
        ),
        (
            demo(timeline={"paths": [{"ramp": "DOGEUSDT", "points": [[0, "1"]]}]}),
            "timeline.paths[0].ramp: unknown symbol DOGEUSDT (not in prices)",
        ),
        (
            demo(timeline={"paths": [{"csv": "missing.csv"}]}),
            "timeline.paths[0].csv: cannot read missing.csv",
        ),
        ("prices: {BTCUSDT: 1\naccounts: [", "line 2: YAML syntax error"),
        ("- 1\n- 2\n", "(top): expected a mapping with prices, accounts and timeline"),
    ],
)
def test_invalid_scenarios_fail_with_one_line(tmp_path: Path, data: Any, expected: str) -> None:
    """Each problem is reported as one line ``FILE: key.path: problem``."""
    assert error_of(tmp_path, data).startswith(expected)


def test_account_level_problems_name_the_key(tmp_path: Path) -> None:
    """Amounts, duplicate keys and mismatched isolated assets are named by their key path."""
    data = demo()
    data["accounts"][0]["cross"][0]["free"] = "lots"
    assert error_of(tmp_path, data).startswith("accounts[0].cross[0].free: expected a decimal number")
    data = demo()
    data["accounts"][1]["api_key"] = "demo-key"
    assert error_of(tmp_path, data) == "accounts[1].api_key: duplicate api_key"
    data = demo()
    data["accounts"][0]["isolated"][0]["base"]["asset"] = "ETH"
    assert error_of(tmp_path, data) == "accounts[0].isolated[0].base.asset: expected BTC for BTCUSDT"
    data = demo()
    data["accounts"][0]["cross"].append({"asset": "DOGE", "free": "1"})
    assert error_of(tmp_path, data) == "accounts[0].cross[2].asset: no price for DOGEUSDT"


def test_csv_problems_name_file_and_line(tmp_path: Path) -> None:
    """A bad tick or candle is reported with the CSV file's name and line."""
    (tmp_path / "t.csv").write_text("timestamp_ms,symbol,price\n1000,BTCUSDT,abc\n")
    data = demo(timeline={"paths": [{"csv": "t.csv"}]})
    assert error_of(tmp_path, data) == "timeline.paths[0].csv: t.csv line 2: bad price 'abc'"
    (tmp_path / "k.csv").write_text("0,100,90,95,99\n")
    data = demo(timeline={"paths": [{"klines": "k.csv", "symbol": "BTCUSDT"}]})
    assert "k.csv line 1: inconsistent candle" in error_of(tmp_path, data)


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))]
    return [path]


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=6), st.lists(st.integers(), max_size=2)
)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_corruption_fails_with_one_line_or_loads(data: st.DataObject) -> None:
    """Any value of a valid scenario replaced by junk still loads or fails as one ScenarioError line."""
    scenario = copy.deepcopy(DEMO_SCENARIO)
    leaves = _leaves(scenario)
    path = data.draw(st.sampled_from(leaves))
    target = scenario
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(JUNK)
    try:
        parse_scenario(scenario, source="fuzz.yaml")
    except ScenarioError as exc:
        text = str(exc)
        assert text.startswith("fuzz.yaml: ") and "\n" not in text and text.count(": ") >= 2


def test_tick_csv_is_relative_sorted_and_offset(tmp_path: Path) -> None:
    """Tick CSV times are relative to the first tick, shifted by ``offset``; header and comments skipped."""
    (tmp_path / "t.csv").write_text(
        "timestamp_ms,symbol,price\n# a comment\n1700000001000,btcusdt,30100\n1700000000000,BTCUSDT,30000\n"
    )
    scenario = parse_scenario(demo(timeline={"paths": [{"csv": "t.csv", "offset": "1m"}]}), base_dir=tmp_path)
    assert [(t.t, t.symbol, t.price) for t in scenario.ticks()] == [
        (60.0, "BTCUSDT", Decimal(30000)),
        (61.0, "BTCUSDT", Decimal(30100)),
    ]


def test_kline_candles_replay_in_an_order_consistent_with_them(tmp_path: Path) -> None:
    """A rising candle plays open, low, high, close; a falling one open, high, low, close; µs times work."""
    (tmp_path / "k.csv").write_text(
        "1700000000000000,100,110,95,105,1,1700000000999999\n1700000001000000,105,106,90,92,1,1700000001999999\n"
    )
    scenario = parse_scenario(
        demo(timeline={"paths": [{"klines": "k.csv", "symbol": "BTCUSDT"}]}), base_dir=tmp_path
    )
    ticks = scenario.ticks()
    assert [int(t.price) for t in ticks] == [100, 95, 110, 105, 105, 106, 90, 92]
    assert [t.t for t in ticks] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def test_durations() -> None:
    """Durations accept seconds and unit strings."""
    assert [parse_duration(v) for v in (5, "2.5", "90s", "2m", "1h30m", "250ms", "1d")] == [
        5.0,
        2.5,
        90.0,
        120.0,
        5400.0,
        0.25,
        86400.0,
    ]
    with pytest.raises(ValueError):
        parse_duration("1 fortnight")


def test_cursor_loops_and_yields_hourly_interest() -> None:
    """With ``loop`` the timeline repeats every ``duration``; interest markers come every 3600 s."""
    scenario = parse_scenario(
        demo(timeline={"loop": True, "duration": 2000, "paths": DEMO_SCENARIO["timeline"]["paths"]})
    )
    cursor = Cursor(scenario)
    items = list(cursor.due(4010))
    prices = [(t, item.price) for t, item in items if hasattr(item, "price")]
    assert (2000.0, Decimal(30000)) in prices and (4010.0, Decimal(25000)) in prices
    assert [t for t, item in items if item is INTEREST] == [3600.0]


async def test_hourly_interest_accrues_in_simulated_time(sim: Any) -> None:
    """Each simulated hour adds borrowed x hourly rate to interest, cross and isolated."""
    await sim.advance(2 * 3600)
    demo_acc = sim.account("demo")
    assert demo_acc.cross["USDT"].interest == Decimal("3.1") + 2 * Decimal(20000) * Decimal("0.0001")
    assert demo_acc.pairs["BTCUSDT"].quote.interest == Decimal("0.4") + 2 * Decimal(9000) * Decimal("0.0001")


async def test_serve_announces_its_url_and_stops_on_cancel() -> None:
    """``serve`` runs a bundled scenario, calls on_ready with the base URL, and stops when cancelled."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve("crash", "127.0.0.1", 0, ready.set_result))
    url = await asyncio.wait_for(ready, 5)
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v3/ping") as resp:
        assert resp.status == 200 and await resp.json() == {}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_tick_csv_with_an_unknown_symbol_is_refused(tmp_path: Path) -> None:
    """Ticks for a symbol missing from ``prices`` are refused at load time."""
    (tmp_path / "t.csv").write_text("0,DOGEUSDT,0.1\n")
    data = demo(timeline={"paths": [{"csv": "t.csv"}]})
    assert error_of(tmp_path, data) == "timeline.paths[0].csv: unknown symbol DOGEUSDT (not in prices)"
