"""``margin-monitor replay`` against an exact recomputation of the same kline file.

The kline files here are SYNTHETIC (a deterministic walk written by the test), in Binance's public
1-minute kline CSV format; they are not market data.

Account (as in tests/daemon_harness.one_long_account): 1 BTC held, 18,750 USDT owed, BTC at 30,000
today: level(p) = p / 18,750, so 1.5 at 28,125, 1.3 at 24,375, 1.1 at 20,625.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import Receiver, daemon_config, one_long_account, running_daemon, wait_until

from monitor.cli import main
from monitor.config.model import AlertsConfig
from monitor.replay.engine import ReplayError, Start, minute, prices_from_klines, replay
from monitor.sim import Simulator
from monitor.watch.ladder import policy_for_unit

DAY0_MS = 1_722_816_000_000  # 2024-08-05 00:00 UTC (only a date for the synthetic file)
OWED = Decimal(18_750)
UNIT: dict[str, Any] = {
    "unit": "cross:demo",
    "account": "demo",
    "kind": "cross",
    "symbol": None,
    "quote": "USDT",
    "bars": {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1},
    "liquidation_bar": "liquidation",
    "positions": {
        "BTC": {"free": "1", "borrowed": "0", "price": "30000", "fixed": False},
        "USDT": {"free": "0", "borrowed": "18750", "price": "1", "fixed": True},
    },
}


def synthetic_day(path: Path, first_open: str = "60000.00", seed: int = 7) -> None:
    """A 24 h walk that falls ~40 % by 07:00 with wicks, then recovers; Binance's 12 columns."""
    rng = random.Random(seed)
    price = Decimal(first_open)
    rows = []
    for m in range(1440):
        drift = Decimal("-0.0013") if m < 420 else Decimal("0.0009")
        step = drift + Decimal(rng.randint(-30, 30)) / 10_000
        close = (price * (1 + step)).quantize(Decimal("0.01"))
        wick = Decimal(rng.choice([0, 0, 0, 0, 0, 15, 40])) / 1000
        low = (min(price, close) * (1 - wick)).quantize(Decimal("0.01"))
        high = (max(price, close) * Decimal("1.001")).quantize(Decimal("0.01"))
        t = DAY0_MS + 60_000 * m
        rows.append([t, price, high, low, close, "12.5", t + 59_999, "750000", 100, "6", "360000", "0"])
        price = close
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def exact_candles(path: Path, today: Decimal) -> list[tuple[float, Decimal]]:
    """Per candle: its minute and the exact level at its low (today's price × low / first open)."""
    with path.open() as f:
        rows = list(csv.reader(f))
    first = Decimal(rows[0][1])
    out = []
    for row in rows:
        low = (today * Decimal(row[3]) / first).quantize(Decimal("0.00000001"))
        out.append((int(row[0]) / 1000, low / OWED))
    return out


def run(path: Path, unit: dict[str, Any] = UNIT) -> Any:
    start = Start.from_status(unit)
    policy = policy_for_unit(AlertsConfig(), {k: float(v) for k, v in unit["bars"].items()}, ("r",))
    return replay(start, prices_from_klines(start, {"BTCUSDT": path}), policy)


def test_crossing_minutes_and_worst_match_exact_recomputation(tmp_path: Path) -> None:
    """Each bar fires in the first minute whose low puts the exact level at or under it, and the worst
    level is the lowest low's, in its minute; restore amounts hold over the rest of the day."""
    path = tmp_path / "BTCUSDT-1m-synthetic.csv"
    synthetic_day(path)
    result = run(path)
    candles = exact_candles(path, Decimal(30_000))
    fired = {c.rule: c for c in reversed(result.crossings)}  # each rule's first firing
    bars = {"normal": Decimal("1.5"), "margin_call": Decimal("1.3"), "liquidation": Decimal("1.1")}
    for name, bar in bars.items():
        expected = next((t for t, level in candles if level <= bar), None)
        assert expected is not None, f"the synthetic day must cross {name}"
        assert minute(fired[name].fired_at) == minute(expected), name
    worst_t, worst_level = min(candles, key=lambda c: (c[1], c[0]))
    assert result.worst is not None
    assert result.worst.level == worst_level and minute(result.worst.t) == minute(worst_t)
    restore = result.restore()
    assert restore is not None
    rest = [s for s in result.samples if s.t >= restore.acting_at]
    assert all((s.assets + restore.deposit_to_target) / s.liabilities >= Decimal("1.5") for s in rest)
    assert any((s.assets + restore.deposit_to_target) / s.liabilities == Decimal("1.5") for s in rest)


def test_cli_prints_crossings_and_draws_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`replay --positions saved.json --klines BTCUSDT=FILE --plot out.svg` prints the crossings with
    their minutes and writes an SVG with the level and the three bars."""
    path = tmp_path / "k.csv"
    synthetic_day(path)
    saved = tmp_path / "status.json"
    saved.write_text(json.dumps([UNIT]))
    plot = tmp_path / "replay.svg"
    code = main(["replay", "-c", str(tmp_path / "absent.yaml"), "--positions", str(saved),
                 "--klines", f"BTCUSDT={path}", "--plot", str(plot)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    fired = next(c for c in run(path).crossings if c.rule == "liquidation")  # the first
    assert f"liquidation 1.1: first crossed {minute(fired.fired_at)} UTC" in out
    assert "worst level" in out and "deposit" in out and "Binance would have liquidated" in out
    drawing = plot.read_text()
    assert drawing.count('class="bar"') == 3 and 'class="level"' in drawing and 'class="fired"' in drawing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--klines", "BTCUSDT"], "expected SYMBOL=FILE.csv"),
        (["--klines", "ETHUSDT={k}"], "no unit holds an asset priced by ETHUSDT"),
        (["--klines", "BTCUSDT={tmp}/missing.csv"], "cannot read"),
        (["--klines", "BTCUSDT={k}", "--account", "nobody"], "--account nobody: no such account"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Unusable input: exit 2 and one line on stderr naming what is wrong."""
    k = tmp_path / "k.csv"
    synthetic_day(k)
    saved = tmp_path / "s.json"
    saved.write_text(json.dumps(UNIT))
    argv = ["replay", "-c", str(tmp_path / "none.yaml"), "--positions", str(saved)]
    argv += [a.format(k=k, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_status_without_positions_is_refused() -> None:
    """A status dict from a daemon that does not publish positions: a clear error, no guess."""
    with pytest.raises(ReplayError, match="no positions"):
        Start.from_status({k: v for k, v in UNIT.items() if k != "positions"})


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    return one_long_account()


async def test_replay_reads_positions_from_the_running_daemon(
    tmp_path: Path, sim: Simulator, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a daemon running, replay takes the positions from its /status (exposed in ``positions``,
    beside the stress table)."""
    config = daemon_config(tmp_path, sim, receiver)
    async with running_daemon(config) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        assert daemon.http is not None
        status = daemon.status()[0]
        uniform = [row["level"] for row in status["stress"]["uniform"]]
        assert uniform == [1.52, 1.44, 1.28, 1.12]  # 1.6 x (1 + m)
        assert status["stress"]["btc"]["bars"]["liquidation"]["btc_price"] == 20_625.0
        btc = status["positions"]["BTC"]
        assert Decimal(btc["free"]) == 1 and Decimal(btc["price"]) == 30_000 and not btc["fixed"]
        data = yaml.safe_load(config.read_text())
        data["http"]["listen"] = f"127.0.0.1:{daemon.http.port}"
        config.write_text(yaml.safe_dump(data))
        k = tmp_path / "k.csv"
        synthetic_day(k)
        code = await asyncio.to_thread(main, ["replay", "-c", str(config), "--klines", f"BTCUSDT={k}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "replay cross:demo" in out and "level at the start 1.6000" in out


async def test_replay_without_a_daemon_reads_the_accounts_once(
    tmp_path: Path, sim: Simulator, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """No daemon on the configured port: replay reads the account and the tickers itself (the
    simulator through the real python-binance client), then replays."""
    config = daemon_config(tmp_path, sim, receiver)
    k = tmp_path / "k.csv"
    synthetic_day(k)
    code = await asyncio.to_thread(main, ["replay", "-c", str(config), "--klines", f"BTCUSDT={k}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "replay cross:demo" in out and "level at the start 1.6000" in out
    assert "normal 1.5: first crossed" in out
