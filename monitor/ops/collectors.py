"""Scrape-time collectors behind :class:`monitor.ops.metrics.Metrics`.

The daemon's hot path only stores references or bumps plain counters; these collectors turn that
state (and any ``stats()`` sources of feeds and routes) into metric families when ``/metrics`` is
scraped. Single-threaded by design, except that a scrape may run in a worker thread: they read
immutable reports and snapshot every dict before iterating.
"""

from __future__ import annotations

import hashlib
import marshal
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from monitor.risk.report import UNIT_STATES, UnitReport

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

PREFIX = "margin_monitor_"
UNIT_LABELS = ("account", "kind", "symbol")


# What /metrics exports of a unit's latest report: unit, account, kind, symbol ("" for cross), quote,
# state, margin level, exchange's level, asset value, liability value, the number of bars and of bar
# distances, then the bars, the bar distances and the liquidation prices as name, value, name, value…,
# kept per unit until its next report (~20 s with 1,000 units) as that flat tuple ``marshal``led:
# bytes, which the collector never tracks. (As a tuple of strings, numbers and None it was untracked
# only at the first young collection it met, and walked there: 500-600 rows of 30 references
# between two young collections of a quiet daemon, half of what each one walked, bench/gen2_census.py.
# Nested (name, value) tuples, before that, were promoted into the oldest generation, 50 a second.)
# ``marshal`` keeps every float as it was (inf and -0.0 included); the rows are the daemon's own.
UnitRow = bytes
Flat = tuple[str | float | int | None, ...]
Pairs = tuple[tuple[str, float | None], ...]


def unit_row(report: UnitReport) -> UnitRow:
    """The :data:`UnitRow` of ``report`` (read back by :func:`read_row`)."""
    bars, distances = report.bars, report.distances
    return marshal.dumps((
        report.unit, report.account, report.kind, report.symbol or "", report.quote, report.state,
        report.margin_level, report.exchange_margin_level, report.total_asset_value,
        report.total_liability_value, len(bars), len(distances),
        *_flat(bars), *_flat(distances), *_flat(report.liquidation_prices),
    ))  # fmt: skip


def _flat(pairs: Mapping[str, float | None]) -> Iterator[str | float | None]:
    for name, value in pairs.items():
        yield name
        yield value


@dataclass(frozen=True, slots=True)
class RowView:
    """A :data:`UnitRow` read back, at scrape time: ``head`` is unit, account, kind, symbol, quote,
    state, margin level, exchange's level, asset value, liability value; the rest (name, value)
    pairs in the report's order."""

    head: tuple[str, str, str, str, str, str, float | None, float | None, float, float]
    bars: Pairs
    distances: Pairs
    liquidation_prices: Pairs


def read_row(row: UnitRow) -> RowView:
    """:func:`unit_row`'s fields again.

    >>> flat = ("u", "a", "cross", "", "USDT", "known", 1.4, None, 2.0, 1.0, 1, 0, "normal", 1.5, "BTC", 9.0)
    >>> row = marshal.dumps(flat)
    >>> read_row(row).head[5:8], read_row(row).bars, read_row(row).liquidation_prices
    (('known', 1.4, None), (('normal', 1.5),), (('BTC', 9.0),))
    """
    flat = cast(Flat, marshal.loads(row))
    bars_end = 12 + 2 * cast(int, flat[10])
    distances_end = bars_end + 2 * cast(int, flat[11])
    head = cast("tuple[str, str, str, str, str, str, float | None, float | None, float, float]", flat[:10])
    return RowView(
        head, _pairs(flat[12:bars_end]), _pairs(flat[bars_end:distances_end]), _pairs(flat[distances_end:])
    )


def _pairs(flat: Flat) -> Pairs:
    return cast(Pairs, tuple(zip(flat[::2], flat[1::2], strict=True)))


def safe_route(route: str) -> str:
    """The route name as a label; anything URL-like (it may embed a token) becomes a digest."""
    if "://" in route:
        return "route-" + hashlib.sha256(route.encode()).hexdigest()[:10]
    return route


def _exported_level(state: str, margin_level: float | None) -> float | None:
    """What the level gauge shows: the level when the unit is known or approximate, +Inf when it has
    no debt, nothing while it is blind (an unknown level never reads as a number, least of all +Inf)."""
    if state == "no_debt":
        return math.inf
    if state == "blind":
        return None
    return margin_level


class UnitCollector:
    """Builds the per-unit families from the latest report of each unit at scrape time."""

    def __init__(self) -> None:
        self.units: dict[str, UnitRow] = {}  # unit → its latest report, flat
        self.drift_sources: list[Callable[[], Mapping[str, float]]] = []
        self.not_loaded_sources: list[Callable[[], Iterable[Mapping[str, Any]]]] = []
        self.units_source: Callable[[], Collection[str]] | None = None

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        level, bar, distance, liq, exch, drift, assets, liabilities, approx, reconcile, state = families
        drifts: dict[str, float] = {}
        for source in self.drift_sources:
            drifts.update(source())
        absent = [entry for source in self.not_loaded_sources for entry in source()]
        gone = {str(entry["account"]) for entry in absent}
        live = set(self.units_source()) if self.units_source is not None else None
        if live is not None:  # a unit no longer monitored leaves no series behind (nor its report)
            for unit in [u for u in list(self.units) if u not in live]:
                self.units.pop(unit, None)
        for entry in absent:  # an account not loaded: blind, no level (its last reports are not shown)
            labels = [str(entry["account"]), str(entry["kind"]), str(entry.get("symbol") or "")]
            for each in UNIT_STATES:
                state.add_metric([*labels, each], 1.0 if each == "blind" else 0.0)
        for row in list(self.units.values()):
            read = read_row(row)
            unit, account, kind, symbol, quote, unit_state, margin_level, exchange_level = read.head[:8]
            asset_value, liability_value = read.head[8:]
            bars, distances, liquidation_prices = read.bars, read.distances, read.liquidation_prices
            if account in gone:
                continue
            labels = [account, kind, symbol]
            for each in UNIT_STATES:
                state.add_metric([*labels, each], 1.0 if unit_state == each else 0.0)
            ml = _exported_level(unit_state, margin_level)
            if ml is not None:
                level.add_metric(labels, ml)
            for name, value in bars:
                if value is not None:
                    bar.add_metric([*labels, name], value)
            for name, dist in distances:
                if dist is not None:
                    distance.add_metric([*labels, name], dist)
            for asset, price in liquidation_prices:
                if price is not None:
                    liq.add_metric([*labels, asset], price)
            if exchange_level is not None:
                exch.add_metric(labels, exchange_level)
                if ml is not None and math.isfinite(ml):
                    drift.add_metric(labels, ml - exchange_level)
            assets.add_metric([*labels, quote], asset_value)
            liabilities.add_metric([*labels, quote], liability_value)
            approx.add_metric(labels, 1.0 if unit_state == "approximate" else 0.0)
            if unit in drifts:
                reconcile.add_metric(labels, drifts[unit])
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        def gauge(name: str, doc: str, *extra: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, labels=[*UNIT_LABELS, *extra])

        return [
            gauge(
                "margin_level",
                "Margin level of the unit (+Inf: no debt; absent while the unit is blind, i.e. unknown; "
                "see unit_state).",
            ),
            gauge("bar_level", "Margin level of each bar (threshold) of the unit.", "bar"),
            gauge(
                "bar_distance_ratio",
                "Signed uniform price move of all non-quote assets that brings the level to the bar "
                "(-0.04 = a 4% drop); absent where no uniform move reaches it.",
                "bar",
            ),
            gauge(
                "liquidation_price",
                "Price of one asset, others held, at which the level meets the liquidation bar.",
                "asset",
            ),
            gauge("exchange_margin_level", "Margin level last reported by the exchange."),
            gauge("level_drift", "Live margin level minus the level last reported by the exchange."),
            gauge("asset_value", "Total asset value of the unit, in its quote asset.", "quote"),
            gauge("liability_value", "Total liability value (borrowed + interest), in the quote.", "quote"),
            gauge(
                "unit_approximate",
                "1 when the unit's level stands on Binance's own reported level (an asset with no live "
                'price, or a Cross Margin Pro account); same as unit_state{state="approximate"}.',
            ),
            gauge(
                "reconcile_drift_ratio",
                "Our margin level over the exchange's, minus 1, both at the last REST snapshot (same "
                "balances and moment): the computation's drift against the exchange, not price moves.",
            ),
            gauge(
                "unit_state",
                "1 for the unit's one state: known, approximate (Binance's level stands in), blind "
                "(not evaluated: unknown) or no_debt; 0 for the other three.",
                "state",
            ),
        ]


class FeedSnapshot(Protocol):
    """What a feed's ``stats()`` returns (e.g. ``monitor.exchange.streams.FeedStats``)."""

    @property
    def messages(self) -> int: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def connected(self) -> bool: ...
    @property
    def last_message_at(self) -> float | None: ...


class RouteSnapshot(Protocol):
    """What a dispatcher reports per route (e.g. ``monitor.notify.dispatcher.RouteStats``).

    ``dropped`` and ``held`` are exported too when the object has them.
    """

    @property
    def sent(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def queued(self) -> int: ...


@dataclass(slots=True)
class _Feed:
    reconnects: int = 0
    registered: float = math.nan
    connected: bool = False
    source: Callable[[], FeedSnapshot] | None = None
    down_since: float = math.nan  # a pushed feed: when it last went down (registration if never up)


def _read_source(kind: str, name: str, source: Callable[[], _T]) -> _T | None:
    """A source's current value; a failing source is logged and skipped, never breaks a scrape."""
    try:
        return source()
    except Exception as exc:
        log.error(
            "metrics_source_failed", kind=kind, name=name, error_type=type(exc).__name__, error=str(exc)
        )
        return None


class FeedCollector:
    """Per-feed counters, read from a ``stats()`` source; ages from ``clock``.

    A feed without a source (a Risk Data Stream, a user-data session) has only its pushed up/down and
    reconnects. Its events are rare by nature (a borrow, a margin-status change), and its connection
    is proved alive by its own pings (a pong unanswered ends it), so its age is not since a message
    but since it was last up: 0 while connected, else since it went down (or was registered, if it
    never came up). ``feed_message_age_seconds > 60`` then means "silent for a minute" for every
    feed, not "an account with no trade for a minute"."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.feeds: dict[str, _Feed] = {}

    def feed(self, name: str) -> _Feed:
        state = self.feeds.get(name)
        if state is None:
            now = self.clock()
            state = self.feeds[name] = _Feed(registered=now, down_since=now)
        return state

    def connected(self, name: str, up: bool) -> None:
        """Record a pushed feed's up/down (the moment it goes down starts its age)."""
        state = self.feed(name)
        if state.connected and not up:
            state.down_since = self.clock()
        state.connected = up

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        messages, age, reconnects, connected = families = self._families()
        now = self.clock()
        for name, state in list(self.feeds.items()):
            count, last, reconnected, up = 0, None, state.reconnects, state.connected
            if state.source is not None:
                read = _read_source("feed", name, state.source)
                if read is None:
                    continue
                count, last, reconnected, up = (
                    read.messages,
                    read.last_message_at,
                    read.reconnects,
                    read.connected,
                )
            messages.add_metric([name], count)
            if state.source is None:
                since = now if up else state.down_since
            else:
                since = state.registered if last is None else last
            age.add_metric([name], max(0.0, now - since))
            reconnects.add_metric([name], reconnected)
            connected.add_metric([name], 1.0 if up else 0.0)
        return families

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(PREFIX + "feed_messages", "Messages received per feed.", labels=["feed"]),
            GaugeMetricFamily(
                PREFIX + "feed_message_age_seconds",
                "Seconds since the feed's newest message (since registration if none arrived yet); "
                "for a feed that reports only up/down (risk, user data), since it was last up.",
                labels=["feed"],
            ),
            CounterMetricFamily(PREFIX + "feed_reconnects", "Reconnections per feed.", labels=["feed"]),
            GaugeMetricFamily(
                PREFIX + "feed_connected", "1 while the feed's connection is up.", labels=["feed"]
            ),
        )


class ConnectionsSource(Protocol):
    """The daemon's WebSocket connection budget (``monitor.exchange.conn_budget.ConnectionBudget``)."""

    granted: int
    refusals: int

    def used(self) -> int: ...
    def waiting_by_kind(self) -> Mapping[str, int]: ...
    @property
    def limit(self) -> int: ...


class ConnectionCollector:
    """The WebSocket connection budget: attempts in its window, its limit, who waits, refusals."""

    def __init__(self) -> None:
        self.source: ConnectionsSource | None = None

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        budget = self.source
        if budget is None:
            return []
        used, limit, waiting, attempts, refused = families
        used.add_metric([], budget.used())
        limit.add_metric([], budget.limit)
        for kind, count in budget.waiting_by_kind().items():
            waiting.add_metric([kind], count)
        attempts.add_metric([], budget.granted)
        refused.add_metric([], budget.refusals)
        return families

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily
    ]:
        return (
            GaugeMetricFamily(
                PREFIX + "ws_connection_attempts_in_window",
                "WebSocket connection attempts in the budget's sliding window now (all kinds).",
            ),
            GaugeMetricFamily(
                PREFIX + "ws_connection_budget",
                "WebSocket connection attempts the daemon allows itself per window"
                " (Binance: 300 per 5 min per IP).",
            ),
            GaugeMetricFamily(
                PREFIX + "ws_connections_waiting",
                "Connection attempts waiting for a slot of the budget, by kind (market, userdata, risk).",
                labels=["kind"],
            ),
            CounterMetricFamily(
                PREFIX + "ws_connection_attempts", "WebSocket connection attempts let through by the budget."
            ),
            CounterMetricFamily(
                PREFIX + "ws_connections_refused",
                "WebSocket handshakes the exchange refused for too many attempts (HTTP 429/418).",
            ),
        )


class RouteCollector:
    """Per-route notification counts, read from ``stats()`` sources (the dispatcher's)."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Mapping[str, RouteSnapshot]]] = []

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        sent, failed, dropped, queued, held = families = self._families()
        merged: dict[str, RouteSnapshot] = {}
        for i, source in enumerate(self.sources):
            read = _read_source("routes", str(i), source)
            merged.update({safe_route(k): v for k, v in (read or {}).items()})
        for name, stats in merged.items():
            sent.add_metric([name], stats.sent)
            failed.add_metric([name], stats.failed)
            queued.add_metric([name], stats.queued)
            if (n := getattr(stats, "dropped", None)) is not None:
                dropped.add_metric([name], n)
            if (n := getattr(stats, "held", None)) is not None:
                held.add_metric([name], n)
        return families

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily, CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        labels = ["route"]
        return (
            CounterMetricFamily(
                PREFIX + "notifications_sent", "Notifications delivered per route.", labels=labels
            ),
            CounterMetricFamily(
                PREFIX + "notifications_failed",
                "Failed delivery attempts per route (each retry counts).",
                labels=labels,
            ),
            CounterMetricFamily(
                PREFIX + "notifications_dropped", "Notifications dropped by flood control.", labels=labels
            ),
            GaugeMetricFamily(
                PREFIX + "notifications_queued",
                "Notifications waiting in the outbox per route.",
                labels=labels,
            ),
            GaugeMetricFamily(
                PREFIX + "notifications_held", "Notifications held back by flood control.", labels=labels
            ),
        )


class StateFileSource(Protocol):
    """The state file's write health (``monitor.app.state_health.StateFileHealth``)."""

    @property
    def failing(self) -> bool: ...

    @property
    def write_failures(self) -> int: ...


class StateFileCollector:
    """Whether the state file is failing (as told to the trader) and its failed writes."""

    def __init__(self) -> None:
        self.source: StateFileSource | None = None

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        if self.source is None:
            return []
        failing, failures = families = self._families()
        failing.add_metric([], 1.0 if self.source.failing else 0.0)
        failures.add_metric([], self.source.write_failures)
        return families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                PREFIX + "state_file_failing",
                "1 while the state file fails (alerts are sent but not saved), from the first failed write"
                " until writes have worked for the recovery hold (60 s); else 0.",
            ),
            CounterMetricFamily(
                PREFIX + "state_file_write_failures", "Writes to the state file that failed since start."
            ),
        )
