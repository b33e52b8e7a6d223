"""How a :class:`monitor.replay.engine.Replay` is shown: text for the terminal, an SVG chart for
``--plot``."""

from __future__ import annotations

from decimal import Decimal
from xml.sax.saxutils import escape

from monitor.replay.engine import Replay, minute

__all__ = ["render", "svg"]

MAX_LISTED = 12


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def render(r: Replay) -> str:
    """The replay's report: bar crossings with their minutes, the worst level, what would have helped."""
    s = r.start
    first, last = r.samples[0], r.samples[-1]
    mode = "historical prices" if r.absolute else "moves applied to today's prices"
    lines = [
        f"replay {s.unit}: {minute(first.t)} → {minute(last.t)} UTC, {len(r.samples) - 1} ticks ({mode})",
    ]
    start_level = "no debt" if first.level is None else f"{first.level:.4f}"
    lines.append(f"level at the start {start_level}")
    worst = r.worst
    if worst is None or worst.level is None:
        lines.append("no debt at any point: nothing to cross")
        return "\n".join(lines)
    at = ", ".join(f"{a} {_money(p)}" for a, p in sorted(worst.prices.items()))
    lines.append(f"worst level {worst.level:.4f} at {minute(worst.t)} UTC ({at})")
    if not r.crossings:
        lines.append("no bar crossed: no alert would have fired")
        return "\n".join(lines)
    lines.append("bars crossed (the daemon's alert policy):")
    for name, bar in s.bars.descending():
        mine = [c for c in r.crossings if c.rule == name]
        if not mine:
            lines.append(f"  {name} {bar}: never crossed")
            continue
        level = "" if mine[0].level is None else f" at level {mine[0].level:.4f}"
        end = "still firing at the end"
        if mine[-1].resolved_at is not None:
            end = f"last resolved {minute(mine[-1].resolved_at)} UTC"
        when = minute(mine[0].fired_at)
        lines.append(f"  {name} {bar}: first crossed {when} UTC{level}; {len(mine)} alert(s); {end}")
    others = [c for c in r.crossings if c.rule not in s.bars.levels]
    for c in others[:MAX_LISTED]:  # rules not tied to a bar (the distance rule)
        lines.append(f"  {c.rule}: fired {minute(c.fired_at)} UTC")
    liq = s.bars.liquidation_level
    reached = next((x for x in r.samples if x.level is not None and x.level <= liq), None)
    if reached is not None:
        lines.append(
            f"  the level reached the liquidation bar {liq} at {minute(reached.t)} UTC: Binance would have"
            " liquidated then (the rest of the replay assumes it did not)"
        )
    restore = r.restore()
    if restore is not None:
        name, target = r.restore_bar
        q = s.quote
        when = minute(restore.acting_at)
        lines.append(f"what would have kept it safe, done at the first alert ({when} UTC):")
        deposit, floor = _money(restore.deposit_to_target), _money(restore.deposit_to_avoid_liquidation)
        lines.append(f"  deposit {deposit} {q} to stay at or above {target} ({name})")
        lines.append(f"  deposit {floor} {q} to stay at or above {liq} (liquidation)")
        if restore.repay_to_target is not None:
            repay = _money(restore.repay_to_target)
            if restore.repay_enough:
                lines.append(f"  or repay {repay} {q} of the {q} loan to stay at or above {target}")
            else:
                lines.append(f"  repaying the whole {q} loan ({repay}) would not be enough")
    return "\n".join(lines)


def svg(r: Replay, width: int = 900, height: int = 320) -> str:
    """The level over the replay with the bars as dashed lines and each alert marked (▼ fired, ● resolved)."""
    pts = [(s.t, float(s.level)) for s in r.samples if s.level is not None]
    bars = [(name, float(v)) for name, v in r.start.bars.descending()]
    values = [v for _, v in pts] + [v for _, v in bars]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.1
    lo, hi = lo - pad, hi + pad
    t0, t1 = r.samples[0].t, max(r.samples[-1].t, r.samples[0].t + 60)
    left, right, top, bottom = 48, 8, 24, 24

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * (width - left - right)

    def y(v: float) -> float:
        return top + (1 - (v - lo) / (hi - lo)) * (height - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#fafbfc"/>',
        f'<text x="{left}" y="15" font-size="13">{escape(r.start.unit)}: replay'
        f" {minute(t0)} → {minute(t1)} UTC</text>",
    ]
    colours = {"normal": "#b88600", "margin_call": "#d0580f", "liquidation": "#c0142b"}
    for name, v in bars:
        colour = colours.get(name, "#888")
        out.append(
            f'<line class="bar" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="{colour}" stroke-dasharray="5 4"/>'
            f'<text x="4" y="{y(v) + 4:.1f}" fill="{colour}">{v:g}</text>'
        )
    if pts:
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        out.append(f'<polyline class="level" points="{line}" fill="none" stroke="#1d2330"/>')
    for c in r.crossings:
        v = c.level if c.level is not None else (c.bar or lo)
        out.append(
            f'<path class="fired" d="M{x(c.fired_at) - 5:.1f},{y(v) - 9:.1f} h10 l-5,9 z" fill="#c0142b">'
            f"<title>{escape(c.rule)} fired {minute(c.fired_at)}</title></path>"
        )
        if c.resolved_at is not None:
            out.append(
                f'<circle class="resolved" cx="{x(c.resolved_at):.1f}" cy="{y(c.bar or v):.1f}" r="4"'
                ' fill="#1b7f3b">'
                f"<title>{escape(c.rule)} resolved {minute(c.resolved_at)}</title></circle>"
            )
    worst = r.worst
    if worst is not None and worst.level is not None:
        wx, wy = x(worst.t), y(float(worst.level))
        out.append(f'<circle class="worst" cx="{wx:.1f}" cy="{wy:.1f}" r="3" fill="none" stroke="#c0142b"/>')
        label = f"worst {worst.level:.3f} {minute(worst.t)}"
        out.append(f'<text x="{wx + 6:.1f}" y="{wy + 12:.1f}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
