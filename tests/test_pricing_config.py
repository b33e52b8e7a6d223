"""Configuration of pricing: ``exchange.pinned`` fixes an asset at 1 on purpose; ``exchange.stablecoins``
(which used to pin) still loads and now only names price bridges, valued at market."""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.console import Console

from monitor.cli.status_view import StatusResult, render
from monitor.config.model import load_config


def write(tmp_path: Path, exchange: dict[str, object]) -> Path:
    path = tmp_path / "config.yaml"
    data = {
        "exchange": {"kind": "simulator", **exchange},
        "accounts": [{"name": "demo", "api_key": "k", "api_secret": "s"}],
        "notify": {"routes": {"console": {"urls": ["console://"]}}},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_old_stablecoins_key_loads_and_pins_nothing(tmp_path: Path) -> None:
    """A config written when ``stablecoins`` meant "pinned at 1" loads; nothing is pinned."""
    config = load_config(write(tmp_path, {"stablecoins": ["USDT", "USDC"]}))
    assert config.exchange.stablecoins == ("USDT", "USDC") and config.exchange.pinned == ()


def test_pinned_key_loads(tmp_path: Path) -> None:
    """``exchange.pinned`` is a list of assets."""
    assert load_config(write(tmp_path, {"pinned": ["DAI"]})).exchange.pinned == ("DAI",)


def test_console_never_shows_unknown_as_a_level_or_as_no_debt() -> None:
    """The console (`status` table) names the state: a number, approximate with why, no debt, or
    unknown with why (and the stale number only marked 'last')."""
    bars = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}
    cases = [
        ({"state": "known", "margin_level": 1.75}, ["1.750", "OK"]),
        ({"state": "no_debt", "margin_level": None}, ["∞ (no debt)", "NO DEBT"]),
        ({"state": "approximate", "margin_level": 1.08, "reason": "priced by Binance's own level"},
         ["1.080", "LIQUIDATION (APPROXIMATE)", "priced by Binance's own level"]),
        ({"state": "blind", "margin_level": None, "reason": "no price yet for BTCUSDT"},
         ["unknown", "BLIND", "no price yet for BTCUSDT"]),
        ({"state": "blind", "margin_level": 1.5, "reason": "feed silent"},
         ["1.500 (last)", "BLIND", "feed silent"]),
    ]  # fmt: skip
    for unit, shown in cases:
        assert isinstance(unit, dict) and isinstance(shown, list)
        console = Console(width=160, record=True)
        console.print(render(StatusResult([{"account": "demo", "bars": bars, **unit}], "test", at=0.0)))
        text = console.export_text()
        assert all(part in text for part in shown), (unit, text)
        if unit["state"] != "no_debt":
            assert "∞" not in text and "NO DEBT" not in text
