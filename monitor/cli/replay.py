"""The ``margin-monitor replay`` command: read today's positions, replay klines, print and plot."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor.config.model import AlertsConfig, Config, load_config
from monitor.replay.engine import ReplayError, Start, prices_from_klines, replay
from monitor.replay.view import render, svg
from monitor.watch.ladder import policy_for_unit

__all__ = ["EXIT_INPUT", "run"]

EXIT_INPUT = 2


def _klines(specs: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        symbol, sep, file = spec.partition("=")
        if not sep or not symbol.strip() or not file.strip():
            raise ReplayError(f"--klines {spec!r}: expected SYMBOL=FILE.csv, e.g. BTCUSDT=BTCUSDT-1m.csv")
        out[symbol.strip().upper()] = Path(file.strip())
    if not out:
        raise ReplayError("give at least one --klines SYMBOL=FILE.csv")
    return out


def _positions_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReplayError(f"--positions {path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ReplayError(f"--positions {path}: not JSON ({exc})") from None
    units = data if isinstance(data, list) else [data]
    if not all(isinstance(u, dict) for u in units):
        raise ReplayError(f"--positions {path}: expected the output of `margin-monitor status --json`")
    return units


async def _live_units(config: Config, config_path: Path) -> list[dict[str, Any]]:
    from monitor.cli import commands

    units, _ = await commands._from_daemon(config)  # (units or None, where or why)
    if units is None:  # no daemon: one read of the accounts and the tickers
        units = await commands.one_shot_status(config, config_path)
    return units


def _plot_path(base: Path, unit: str, many: bool) -> Path:
    if not many:
        return base
    return base.with_name(f"{base.stem}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', unit)}{base.suffix or '.svg'}")


def run(
    klines: Sequence[str],
    *,
    config_path: Path,
    account: str | None = None,
    positions: Path | None = None,
    plot: Path | None = None,
    absolute: bool = False,
) -> int:
    """Replay every chosen unit; 0 on success, :data:`EXIT_INPUT` on unusable input (one line)."""
    try:
        files = _klines(klines)
        config = load_config(config_path) if positions is None or config_path.exists() else None
        if positions is not None:
            units = _positions_file(positions)
        else:
            assert config is not None
            units = asyncio.run(_live_units(config, config_path))
        if account is not None:
            units = [u for u in units if u.get("account") == account]
            if not units:
                raise ReplayError(f"--account {account}: no such account in the status data")
        alerts = config.alerts if config is not None else AlertsConfig()
        routes = config.route_names() if config is not None else ("replay",)
        chosen = []
        for unit in units:
            start = Start.from_status(unit)
            if any(start.symbol_of(a) in files for a in start.prices):
                chosen.append(start)
        if not chosen:
            raise ReplayError(f"no unit holds an asset priced by {', '.join(files)}")
        for done, start in enumerate(chosen):
            wanted = {s: p for s, p in files.items() if any(start.symbol_of(a) == s for a in start.prices)}
            ticks = prices_from_klines(start, wanted, absolute=absolute)
            bars = {name: float(v) for name, v in start.bars.levels.items()}
            policy = policy_for_unit(
                alerts, bars, routes or ("replay",), liquidation_bar=float(start.bars.liquidation_level)
            )
            result = replay(start, ticks, policy, alerts.restore_target, absolute=absolute)
            if done:
                print()
            print(render(result))
            if plot is not None:
                target = _plot_path(plot, start.unit, len(chosen) > 1)
                target.write_text(svg(result), encoding="utf-8")
                print(f"plot written to {target}")
    except ReplayError as exc:
        print(f"margin-monitor replay: {exc}", file=sys.stderr)
        return EXIT_INPUT
    return 0
