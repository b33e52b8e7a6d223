"""Configuration of pricing: ``exchange.pinned`` fixes an asset at 1 on purpose; ``exchange.stablecoins``
(which used to pin) still loads and now only names price bridges, valued at market."""

from __future__ import annotations

from pathlib import Path

import yaml

from monitor.config import load_config
from monitor.service_tools import _state_level


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
    """The console's level column names the state: a number, approximate with why, no debt, or
    unknown with why (and the stale number only as 'last computed')."""
    assert _state_level({"state": "known", "margin_level": 1.75}) == "1.750"
    assert _state_level({"state": "no_debt", "margin_level": None}) == "∞ (no debt)"
    approx = {"state": "approximate", "margin_level": 1.08, "reason": "priced by Binance's own level"}
    assert _state_level(approx) == "1.080 (APPROXIMATE: priced by Binance's own level)"
    blind = {"state": "blind", "margin_level": None, "reason": "no price yet for BTCUSDT"}
    assert _state_level(blind) == "unknown (BLIND: no price yet for BTCUSDT)"
    stale = {"state": "blind", "margin_level": 1.5, "reason": "feed silent"}
    assert _state_level(stale) == "unknown (BLIND: feed silent; last computed 1.500)"
