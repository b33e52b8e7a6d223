"""Alert texts a trader can act on: an :class:`AlertEvent` plus the unit's :class:`UnitReport`
become a title, a body and an Apprise notify type. Pure: no I/O, no clock (times come in)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from monitor.alerts.policy import AlertEvent
from monitor.risk.report import UnitReport

MAX_SUMMARY_LINES = 50


@dataclass(frozen=True, slots=True)
class Message:
    """``notify_type`` is an Apprise type: info, success, warning or failure."""

    title: str
    body: str
    notify_type: str


# -- numbers -------------------------------------------------------------------------------------


def _sig(value: float, digits: int, rounding: str) -> str:
    if value == 0:
        return "0"
    exact = Decimal(repr(value))
    decimals = max(0, digits - 1 - exact.adjusted())
    text = f"{exact.quantize(Decimal(1).scaleb(-decimals), rounding=rounding):,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_price(value: float | None) -> str:
    """Five significant digits (integer digits always kept), thousands separators."""
    if value is None or not math.isfinite(value):
        return "none"
    return _sig(value, 5, ROUND_HALF_EVEN)


def fmt_amount(value: float) -> str:
    """An amount to repay or deposit: four significant digits, rounded up so it suffices."""
    return _sig(value, 4, ROUND_CEILING) if math.isfinite(value) else "∞"


def fmt_value(value: float) -> str:
    """A total in the quote asset: whole units from 1,000 up, else five significant digits."""
    return f"{value:,.0f}" if abs(value) >= 1000 else fmt_price(value)


def fmt_level(value: float | None) -> str:
    """A margin level: ``inf`` is no debt; None is *unknown* (never shown as safe)."""
    if value is None:
        return "unknown"
    if value == math.inf:
        return "∞ (no debt)"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value >= 10 else f"{value:.3f}"


def fmt_bar(value: float) -> str:
    return f"{value:g}"


def fmt_pct(fraction: float | None, *, signed: bool = True) -> str:
    """A fraction as a percentage: -0.0412 → "-4.1 %"; under 1 % two decimals, from 100 % none."""
    if fraction is None or not math.isfinite(fraction):
        return "none"
    pct = fraction * 100
    decimals = 0 if abs(pct) >= 100 else 2 if abs(pct) < 1 else 1
    text = f"{pct:{'+' if signed else ''}.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} %"


def fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    for big, small, big_name, small_name in (
        (86400, 3600, "d", "h"),
        (3600, 60, "h", "min"),
        (60, 1, "min", "s"),
    ):
        if s >= big:
            head, rest = divmod(s, big)
            tail = rest // small
            return f"{head} {big_name} {tail} {small_name}" if tail else f"{head} {big_name}"
    return f"{s} s"


def fmt_hours(hours: float) -> str:
    if hours < 1:
        return f"{max(1, round(hours * 60))} min"
    return f"{hours:.1f} h" if hours < 10 else f"{hours:,.0f} h"


# -- pieces --------------------------------------------------------------------------------------


def unit_label(unit: str, report: UnitReport | None = None) -> str:
    """``alice (cross)`` or ``bob BTCUSDT (isolated)``."""
    kind: str
    if report is not None:
        account, kind, symbol = report.account, report.kind, report.symbol
    else:
        kind, _, rest = unit.partition(":")
        account, _, symbol_text = rest.partition(":")
        symbol = symbol_text or None
    return f"{account} {symbol} ({kind})" if symbol else f"{account} ({kind})"


def _rule_label(rule: str) -> str:
    return rule.replace("_", " ").upper()


def _direction(distance: float) -> str:
    return f"a {fmt_pct(abs(distance), signed=False)} {'drop' if distance < 0 else 'rise'}"


def _what_moves(report: UnitReport) -> str:
    return f"the {report.symbol} price" if report.symbol else f"every non-{report.quote} asset"


def _account_line(report: UnitReport) -> str:
    where = f"isolated pair {report.symbol}" if report.symbol else "cross margin"
    return f"Account {report.account}, {where}, valued in {report.quote}."


def _past(report: UnitReport, name: str) -> bool:
    """The unit's level is at or below the bar ``name`` (the signed distance then restores it)."""
    level, bar = report.margin_level, report.bars.get(name)
    return level is not None and bar is not None and level <= bar


def _liquidation_line(report: UnitReport) -> str:
    """How far liquidation is; past it, how far past and which move restores the bar.

    A long account at 1.097 under a 1.1 bar needs a rise to get back, never "a rise liquidates":
    ``Liquidation (1.1): PAST IT, margin level 1.097 is 0.003 below; a 0.29 % rise of … restores 1.1.``
    """
    bar = report.bars.get(report.liquidation_bar)
    head = f"Liquidation ({fmt_bar(bar)})" if bar is not None else "Liquidation"
    distance = report.liquidation_distance
    if bar is not None and report.margin_level is not None and _past(report, report.liquidation_bar):
        below = (
            f"PAST IT, margin level {fmt_level(report.margin_level)} is {bar - report.margin_level:.3f} below"
        )
        if distance is None:
            return f"{head}: {below}; no uniform price move restores it: repay or add collateral."
        return f"{head}: {below}; {_direction(distance)} of {_what_moves(report)} restores {fmt_bar(bar)}."
    if distance is None:
        return f"{head}: no uniform price move reaches it."
    return f"{head}: {_direction(distance)} of {_what_moves(report)} liquidates."


def _bar_distance(report: UnitReport, name: str, bar: float) -> str:
    """``margin_call 1.3: a 4.1 % drop reaches it``; past the bar, ``normal 1.5: past, a 20.5 % rise
    restores it``."""
    distance = report.distances.get(name)
    if distance is None:
        return f"{name} {fmt_bar(bar)}: no uniform move reaches it"
    if _past(report, name):
        return f"{name} {fmt_bar(bar)}: past, {_direction(distance)} restores it"
    return f"{name} {fmt_bar(bar)}: {_direction(distance)} reaches it"


def _detail_lines(report: UnitReport) -> list[str]:
    """Distances per bar, liquidation prices, how to restore safety, interest timing, totals."""
    lines: list[str] = []
    ladder = sorted(report.bars.items(), key=lambda item: -item[1])
    parts = [_bar_distance(report, name, bar) for name, bar in ladder]
    if parts:
        lines.append(f"Distance to each bar: {'; '.join(parts)}.")
    if report.liquidation_prices:
        prices = ", ".join(
            f"{asset} {fmt_price(price)} {report.quote}" if price is not None else f"{asset} none"
            for asset, price in report.liquidation_prices.items()
        )
        lines.append(f"Liquidation prices (others held): {prices}.")
    restore = []
    if report.repay:
        restore.append("repay " + " or ".join(f"{fmt_amount(v)} {a}" for a, v in report.repay.items()))
    if report.add_collateral:
        restore.append("add " + " or ".join(f"{fmt_amount(v)} {a}" for a, v in report.add_collateral.items()))
    level = report.margin_level
    if restore and level is not None and level < report.restore_target:
        lines.append(f"To get back to {fmt_bar(report.restore_target)}: {' or '.join(restore)}.")
    hours = [
        f"{name} {fmt_bar(report.bars[name])} in {fmt_hours(h)}"
        for name, h in report.hours_to_bars.items()
        if h is not None and math.isfinite(h) and h > 0 and name in report.bars
    ]
    if hours:
        lines.append(f"Interest alone (prices standing) reaches {', '.join(hours)}.")
    if report.state == "approximate":
        lines.append(_approximate_line(report))
    lines.append(
        f"Assets {fmt_value(report.total_asset_value)} {report.quote}, "
        f"liabilities {fmt_value(report.total_liability_value)} {report.quote}."
    )
    return lines


def _evaluated(level: float | None) -> float:
    """An evaluated level (the alert policy runs only on valued units: None there is no debt)."""
    return math.inf if level is None else level


def _approx_tag(report: UnitReport | None) -> str:
    """`` (approximate)`` in the title of an approximate unit's alert."""
    return " (approximate)" if report is not None and report.state == "approximate" else ""


def _approximate_line(report: UnitReport) -> str:
    """Why an approximate unit's numbers are not our own: ``APPROXIMATE: priced by Binance's own
    level: no live price for OLD (OLDUSDT BREAK); Binance reported 1.42 at the last read.``"""
    exchange = report.exchange_margin_level
    said = f"; Binance reported {fmt_level(exchange)} at the last read" if exchange is not None else ""
    return f"APPROXIMATE: {report.reason or 'estimated level'}{said}."


# -- messages ------------------------------------------------------------------------------------


def render(event: AlertEvent, report: UnitReport | None) -> Message:
    """The message for one event (``report``: the unit as computed when the event fired)."""
    label = unit_label(event.unit, report)
    if event.measure == "blind":
        return _blind(event, label)
    if event.measure == "exchange":
        return _exchange(event, label)
    if event.measure == "distance":
        return _distance(event, report, label)
    return _level(event, report, label)


def _notify_type(event: AlertEvent, report: UnitReport | None) -> str:
    if event.kind == "resolved":
        return "success"
    liquidation = report.liquidation_bar if report is not None else "liquidation"
    return "failure" if event.rule == liquidation else "warning"


def _level(event: AlertEvent, report: UnitReport | None, label: str) -> Message:
    bar = fmt_bar(event.bar) if event.bar is not None else "?"
    level = fmt_level(_evaluated(event.level))
    rule = _rule_label(event.rule)
    lines = [_account_line(report)] if report is not None else []
    if event.kind == "resolved":
        title = f"[resolved {rule}] {label}: margin level {level} > {bar}{_approx_tag(report)}"
        lines = [f"Margin level now {level}, back above the {event.rule} bar {bar}."]
        if report is not None:
            lines += [_liquidation_line(report), *_detail_lines(report)[-1:]]
            if report.state == "approximate":
                lines.append(_approximate_line(report))
        return Message(title, "\n".join(lines), "success")
    still = ", still" if event.kind == "repeat" else ""
    title = f"[{rule}{still}] {label}: margin level {level} ≤ {bar}{_approx_tag(report)}"
    since = ""
    if event.since is not None:
        since = f" (since {fmt_time(event.since)}, {fmt_duration(event.at - event.since)} ago)"
    lines.append(f"Margin level {level} is at or below the {event.rule} bar {bar}{since}.")
    if event.kind == "repeat" and event.since is not None:
        lines.append(f"Reminder {event.repeat_n}: still at or below since {fmt_time(event.since)}.")
    if event.while_down:
        lines.append("Crossed while the monitor was down; reported on restart.")
    if report is not None:
        lines += [_liquidation_line(report), *_detail_lines(report)]
    return Message(title, "\n".join(lines), _notify_type(event, report))


def _distance(event: AlertEvent, report: UnitReport | None, label: str) -> Message:
    within = fmt_pct(event.bar, signed=False) if event.bar is not None else "?"
    distance = event.distance
    what = _what_moves(report) if report is not None else "the prices"
    target = ""
    if report is not None and report.liquidation_bar in report.bars:
        target = f" the liquidation bar {fmt_bar(report.bars[report.liquidation_bar])}"
    if event.kind == "resolved":
        now = f"{_direction(distance)} liquidates" if distance is not None else "no uniform move liquidates"
        title = f"[resolved LIQUIDATION DISTANCE] {label}: {now}"
        level = fmt_level(_evaluated(event.level))
        body = f"Now {now}, beyond the {within} alert distance. Margin level {level}."
        return Message(title, body, "success")
    moves = _direction(distance) if distance is not None else "a small move"
    still = ", still" if event.kind == "repeat" else ""
    lines = [_account_line(report)] if report is not None else []
    if report is not None and _past(report, report.liquidation_bar):
        title = (
            f"[LIQUIDATION DISTANCE{still}] {label}: past the liquidation bar; {moves} restores it"
            f"{_approx_tag(report)}"
        )
        lines.append(f"{_liquidation_line(report)} Binance liquidates at this level: act now.")
    else:
        title = f"[LIQUIDATION DISTANCE{still}] {label}: {moves} liquidates{_approx_tag(report)}"
        lines.append(
            f"A uniform {moves.removeprefix('a ')} of {what} brings the margin level "
            f"({fmt_level(_evaluated(event.level))}) to{target}: within the {within} alert distance."
        )
    if event.while_down:
        lines.append("Crossed while the monitor was down; reported on restart.")
    if report is not None:
        lines += _detail_lines(report)
    return Message(title, "\n".join(lines), "warning")


def _blind(event: AlertEvent, label: str) -> Message:
    since = event.since if event.since is not None else event.at
    if event.kind == "blind_resolved":
        title = f"[monitoring restored] {label}: data fresh again"
        body = (
            f"Data for {label} is fresh again after being blind for {fmt_duration(event.at - since)}; "
            "alerts resume from the fresh level."
        )
        return Message(title, body, "success")
    reason = f": {event.detail}" if event.detail else ""
    title = f"[BLIND] {label}: no fresh data since {fmt_time(since)}"
    body = "\n".join(
        [
            f"No fresh data for {label} since {fmt_time(since)}{reason}.",
            f"Alerts for it are frozen; last known margin level {fmt_level(event.level)}.",
            "You are NOT being watched until data is fresh again.",
        ]
    )
    return Message(title, body, "warning")


def _exchange(event: AlertEvent, label: str) -> Message:
    """Binance's own status against ours (:mod:`monitor.alerts.opinion`)."""
    status = event.exchange_status
    theirs = f" (its level {fmt_level(event.exchange_level)})" if event.exchange_level is not None else ""
    ours = (
        f"our own level is unknown ({event.detail})"
        if event.detail
        else f"our own level reads {fmt_level(event.level)}"
    )
    liquidation = event.rule == "exchange_liquidation"
    name = "BINANCE FORCE LIQUIDATION" if liquidation else "BINANCE DISAGREES"
    if event.kind == "resolved":
        if liquidation:
            title = f"[resolved {name}] {label}: Binance now reports {status}"
        else:
            title = f"[resolved {name}] {label}: Binance and our level agree again"
        return Message(title, f"Binance now reports {status} for {label}{theirs}; {ours}.", "success")
    verdict = ": prices or balances disagree" if event.verdict == "disagree" else ""
    lines = [f"Binance reports {status} for {label}{theirs}; {ours}{verdict}."]
    if event.bar is not None:
        lines.append(f"{status} means Binance puts the margin level at or below {fmt_bar(event.bar)}.")
    if liquidation:
        title = f"[{name}] {label}: Binance reports {status}"
        lines.append("Binance is liquidating this account: check it on Binance now.")
        return Message(title, "\n".join(lines), "failure")
    title = f"[{name}] {label}: Binance reports {status}, {ours}"
    lines.append("Until they agree, trust the worse of the two: check the account on Binance.")
    return Message(title, "\n".join(lines), "warning")


def summary(route: str, titles: Sequence[str], window: float) -> Message:
    """One message standing for the alerts flood control held back on ``route``."""
    shown = [f"- {t}" for t in titles[:MAX_SUMMARY_LINES]]
    if len(titles) > MAX_SUMMARY_LINES:
        shown.append(f"- … and {len(titles) - MAX_SUMMARY_LINES} more")
    head = f"Flood control (at most so many per {fmt_duration(window)}) held back {len(titles)} alerts:"
    return Message(
        f"[SUMMARY] {len(titles)} more alerts on route {route}", "\n".join([head, *shown]), "warning"
    )


def demo_message(now: float) -> Message:
    """The message ``margin-monitor test-alert`` sends to every route."""
    return Message(
        "[TEST] margin-monitor test alert",
        f"If you can read this, this route delivers margin-monitor alerts. Sent {fmt_time(now)}.",
        "info",
    )
