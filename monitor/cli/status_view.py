"""The terminal view of ``margin-monitor status``: one row per unit, drawn with ``rich``.

Columns: the unit; its state, coloured (OK, NORMAL, MARGIN CALL, LIQUIDATION by level against the
unit's own bars; BLIND, APPROXIMATE, NO DEBT, SETTLING when the daemon says so, UNKNOWN when
nothing says); the margin level;
the distance to liquidation (a signed uniform move of every non-quote asset); the alerts firing
and those a silence holds back; the age of its prices; and, under the table, where the numbers came
from (the running daemon, or a one-off read) and when. Unit dicts are read defensively (``.get``):
keys added by newer daemons are shown when present, and missing ones never break the view.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from monitor.notify.messages import fmt_level, fmt_pct

STYLES = {
    "OK": "bold green",
    "NO DEBT": "green",
    "NORMAL": "bold yellow",
    "MARGIN CALL": "bold dark_orange",
    "LIQUIDATION": "bold white on red",
    "BLIND": "bold white on magenta",
    "UNKNOWN": "bold white on magenta",
    "APPROXIMATE": "bold yellow on grey23",
    "SETTLING": "cyan",
}


@dataclass(frozen=True, slots=True)
class StatusResult:
    """What a status read gave: the units (None = nothing could be read), where they came from,
    and, when the daemon was not reachable, why."""

    units: list[dict[str, Any]] | None
    source: str
    problem: str | None = None
    at: float = 0.0
    failed: bool = False  # nothing could be read (``units`` then lists only accounts not loaded, if any)


def make_console() -> Console:
    """A console for stdout: the terminal's width, or 120 columns into a pipe or file."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def unit_state(unit: Mapping[str, Any]) -> str:
    """The state word shown for a unit (see the module docstring).

    >>> unit_state({"margin_level": 1.29, "bars": {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}})
    'MARGIN CALL'
    >>> unit_state({"state": "blind", "margin_level": 2.0})
    'BLIND'
    """
    state = unit.get("state")
    if state == "blind" or unit.get("blind"):
        return "BLIND"
    approximate = state == "approximate" or (
        state is None and bool(unit.get("approximate") or unit.get("unpriced_assets"))
    )
    level = _num(unit.get("margin_level"))
    if level is None or level == math.inf:
        if approximate:
            return "APPROXIMATE"
        no_debt = state == "no_debt" or (state is None and unit.get("total_liability_value") == 0)
        return "NO DEBT" if no_debt else "UNKNOWN"  # nothing says it is safe: never shown as such
    word = _level_word(level, unit.get("bars") or {})
    if approximate:  # Binance's level stands in: still say how bad it is
        return "APPROXIMATE" if word == "OK" else f"{word} (APPROXIMATE)"
    if unit.get("settling") and word == "OK":
        return "SETTLING"
    return word


def _level_word(level: float, bars: Mapping[str, Any]) -> str:
    for name, word in (("liquidation", "LIQUIDATION"), ("margin_call", "MARGIN CALL"), ("normal", "NORMAL")):
        bar = _num(bars.get(name))
        if bar is not None and level <= bar:
            return word
    return "OK"


def fmt_age(seconds: Any) -> str:
    """``0.4 s``, ``12 s``, ``3 min``, ``2.1 h``; ``-`` when unknown."""
    value = _num(seconds)
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"


def unit_name(unit: Mapping[str, Any]) -> str:
    """``demo (cross)`` or ``demo BTCUSDT``."""
    symbol = unit.get("symbol")
    return f"{unit.get('account', '?')} {symbol}" if symbol else f"{unit.get('account', '?')} (cross)"


def _names(values: Any) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, list) and values else "-"


def risk_stream_note(unit: Mapping[str, Any]) -> str:
    """A line for a cross unit whose Risk Data Stream (Binance's own word, pushed) is not up, else "".

    >>> risk_stream_note({"risk_stream": "waiting", "risk_stream_reason": "waiting for a connection slot"})
    "Binance's Risk Data Stream not connected: waiting for a connection slot"
    >>> risk_stream_note({"risk_stream": "up"})
    ''
    """
    state = unit.get("risk_stream")
    if state not in ("waiting", "down"):
        return ""
    return f"Binance's Risk Data Stream not connected: {unit.get('risk_stream_reason') or state}"


def state_file_note(units: list[dict[str, Any]]) -> str:
    """One line when the daemon says its state file fails (each unit carries it), else "".

    >>> state_file_note([{"state_file_failing": "state file s.sqlite3 cannot be written: the disk is full"}])
    'state file failing, alerts not saved: state file s.sqlite3 cannot be written: the disk is full'
    >>> state_file_note([{"account": "demo"}])
    ''
    """
    reason = next((u["state_file_failing"] for u in units if u.get("state_file_failing")), None)
    return f"state file failing, alerts not saved: {reason}" if reason else ""


def render(result: StatusResult) -> RenderableType:
    """The table and the line saying where the numbers came from."""
    table = Table(title="margin-monitor status", title_justify="left", expand=False)
    table.add_column("unit", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("level", justify="right", no_wrap=True)
    table.add_column("to liq.", justify="right", no_wrap=True)
    table.add_column("firing", overflow="fold")
    table.add_column("silenced", overflow="fold")
    table.add_column("age", justify="right", no_wrap=True)
    notes = []
    for unit in result.units or []:
        state = unit_state(unit)
        level = _num(unit.get("margin_level"))
        if state == "NO DEBT":
            shown_level = fmt_level(math.inf)
        elif level is None:
            shown_level = "unknown"  # never "∞": unknown must not read as safe
        else:
            shown_level = fmt_level(level) + (" (last)" if state == "BLIND" else "")
        silenced = _names(unit.get("silenced"))
        if unit.get("silences") and silenced == "-":
            silenced = f"({len(unit['silences'])} silence{'s' if len(unit['silences']) > 1 else ''})"
        table.add_row(
            unit_name(unit),
            Text(state, style=STYLES.get(state.split(" (")[0], "")),
            shown_level,
            "unknown"
            if level is None and state != "NO DEBT"
            else fmt_pct(_num(unit.get("liquidation_distance"))),
            _names(unit.get("firing")),
            silenced,
            fmt_age(unit.get("age")),
        )
        reason = unit.get("reason") or unit.get("blind_reason")
        if isinstance(reason, str) and reason:
            notes.append(Text(f"{unit_name(unit)}: {reason}", style=STYLES.get(state.split(" (")[0], "")))
        risk = risk_stream_note(unit)
        if risk:
            notes.append(Text(f"{unit_name(unit)}: {risk}", style="yellow"))
    state_file = state_file_note(result.units or [])
    if state_file:
        notes.append(Text(state_file, style="bold red"))
    when = time.strftime("%H:%M:%S", time.localtime(result.at or time.time()))
    source = Text(f"from {result.source} at {when}", style="dim")
    parts: list[RenderableType] = [table, *notes, source]
    if result.problem:
        parts.append(Text(result.problem, style="yellow"))
    return Group(*parts)


async def watch(
    fetch: Callable[[], Awaitable[StatusResult]], interval: float, console: Console | None = None
) -> int:
    """Redraw the view in place every ``interval`` seconds until Ctrl-C (exit 0)."""
    console = console or make_console()
    result = await fetch()
    with Live(render(result), console=console, auto_refresh=False, transient=False) as live:
        try:
            while True:
                await asyncio.sleep(interval)
                result = await fetch()
                live.update(render(result), refresh=True)
        except asyncio.CancelledError:
            return 0
