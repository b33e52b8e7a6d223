"""Prometheus metrics of the daemon, in one registry of their own (never the global default).

The hot path stays cheap: :meth:`Metrics.observe_unit` stores a reference; the families are built
when ``/metrics`` is scraped (``monitor.ops.collectors``). Components that count for themselves are
read at scrape time: :meth:`Metrics.feed_source` (a stream's ``stats()``) and
:meth:`Metrics.route_source` (the dispatcher's ``stats()``); only a feed's up/down and reconnects
are pushed (:meth:`Metrics.feed_connected`, :meth:`Metrics.feed_reconnect`). A unit's series go
with the unit: :meth:`Metrics.units_source` names the units monitored now, and a report of any
other (an isolated pair disabled or closed, an account disabled mid-run) is dropped at the next scrape.

Series (prefix ``margin_monitor_``); unit labels are ``account``, ``kind``, ``symbol`` (empty for
a cross account):

- ``unit_state{state}`` (1 for the unit's one state of known, approximate, blind, no_debt; 0 for
  the others; an account not loaded — exchange unreachable, key rejected — is blind, with
  ``symbol`` empty, from :meth:`Metrics.not_loaded_source`), ``margin_level`` (+Inf when the
  unit has no debt; absent while it is blind: an unknown level is never exported as a number),
  ``bar_level{bar}``, ``bar_distance_ratio{bar}``
  (signed fraction, absent where no uniform move reaches the bar), ``liquidation_price{asset}``
  (absent where none exists), ``exchange_margin_level`` and ``level_drift`` (ours − exchange's,
  when the exchange reported one), ``asset_value`` / ``liability_value{quote}``,
  ``unit_approximate`` (1 when the level stands on Binance's own reported level: an asset with no
  live price, or Cross Margin Pro), ``reconcile_drift_ratio`` (ours /
  exchange's − 1 at the last REST snapshot, from :meth:`Metrics.drift_source`).
- per feed: ``feed_messages_total``, ``feed_message_age_seconds`` (since the newest message, or
  since the feed was registered if none came yet; for a feed that only pushes up/down, a Risk Data
  Stream or a user-data session, since it was last up: 0 while connected),
  ``feed_reconnects_total``, ``feed_connected``.
- per route: ``notifications_sent_total``, ``notifications_failed_total``, ``notifications_queued``,
  and from a source that has them ``notifications_dropped_total``, ``notifications_held``.
- ``state_file_failing`` (1 from the first failed write to the state file until writes have worked
  for the recovery hold, as told to the trader) and ``state_file_write_failures_total``, from
  :meth:`Metrics.state_file_source`.
- ``tick_to_dispatch_seconds`` histogram; ``build_info{version}``; ``process_*`` metrics.
- ``loop_lag_seconds`` histogram: how late the event loop ran a 10 ms timer (``monitor.ops.loop_lag``),
  buckets from 1 ms; a sample over 5 ms is a stall that delayed ticks and alerts.

Label values are account, feed and route *names* from the config, never URLs or keys: a route label
that looks like a URL (it could carry an Apprise token) is replaced by a digest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from monitor.ops.collectors import (
    PREFIX,
    ConnectionCollector,
    ConnectionsSource,
    FeedCollector,
    FeedSnapshot,
    RouteCollector,
    RouteSnapshot,
    StateFileCollector,
    StateFileSource,
    UnitCollector,
    unit_row,
)
from monitor.ops.loop_lag import LAG_BUCKETS
from monitor.risk.report import UnitReport

__all__ = ["LATENCY_BUCKETS", "FeedSnapshot", "Metrics", "RouteSnapshot"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric of one daemon, in ``self.registry``; the daemon calls the small update methods.

    ``clock`` (monotonic seconds) dates feed messages; tests pass a fake one.
    """

    def __init__(
        self,
        *,
        version: str = "",
        clock: Callable[[], float] = time.monotonic,
        latency_buckets: Iterable[float] = LATENCY_BUCKETS,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry()
        self._units = UnitCollector()
        self._feeds = FeedCollector(clock)
        self._routes = RouteCollector()
        self.registry.register(self._units)
        self.registry.register(self._feeds)
        self.registry.register(self._routes)
        self._connections = ConnectionCollector()
        self.registry.register(self._connections)
        self._state_file = StateFileCollector()
        self.registry.register(self._state_file)
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        info = Gauge(
            PREFIX + "build_info", "Version of the running daemon.", ["version"], registry=self.registry
        )
        info.labels(version or "unknown").set(1)
        self._latency = Histogram(
            PREFIX + "tick_to_dispatch_seconds",
            "Seconds from a price tick's arrival to the alert it caused being handed to the dispatcher.",
            buckets=tuple(latency_buckets),
            registry=self.registry,
        )
        self._loop_lag = Histogram(
            PREFIX + "loop_lag_seconds",
            "Seconds the event loop ran a periodic timer late: time it was held by other work.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )

    # --- risk units -------------------------------------------------------------------------

    def observe_unit(self, report: UnitReport) -> None:
        """Record the latest report of a unit (replaces the previous one; O(1), hot-path safe)."""
        self._units.units[report.unit] = unit_row(report)  # flat: out of the collector's walks

    def units_source(self, units: Callable[[], Collection[str]]) -> None:
        """Read the ids of the units monitored now at each scrape (e.g. ``AccountBook.units``): the
        report of a unit no longer among them is dropped with all its series, never shown stale."""
        self._units.units_source = units

    def drift_source(self, drifts: Callable[[], Mapping[str, float]]) -> None:
        """Read unit id → relative level drift at the last reconciliation at each scrape
        (e.g. ``AccountWatcher.drift``); exported for the units that have a report."""
        self._units.drift_sources.append(drifts)

    def not_loaded_source(self, entries: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        """Read the accounts not loaded now (their ``status`` entries: ``account``, ``kind``) at each
        scrape: each is exported as blind in ``unit_state`` (so MarginUnitBlind fires), with no level,
        in place of any report left from before it was lost (a key revoked mid-run)."""
        self._units.not_loaded_sources.append(entries)

    # --- feeds ------------------------------------------------------------------------------

    def feed_reconnect(self, feed: str) -> None:
        """Count one reconnection of ``feed``."""
        self._feeds.feed(feed).reconnects += 1

    def feed_connected(self, feed: str, connected: bool) -> None:
        """Record whether ``feed``'s connection is currently up."""
        self._feeds.connected(feed, connected)

    def feed_source(self, feed: str, stats: Callable[[], FeedSnapshot]) -> None:
        """Read ``feed``'s counters from ``stats()`` at each scrape (e.g. ``MarketStream.stats``).

        The source's ``last_message_at`` must come from the same clock as this object's (monotonic
        by default). Its values replace anything pushed for that feed.
        """
        self._feeds.feed(feed).source = stats

    def connections_source(self, budget: ConnectionsSource) -> None:
        """Read the WebSocket connection budget at each scrape (``ConnectionBudget``)."""
        self._connections.source = budget

    def state_file_source(self, health: StateFileSource) -> None:
        """Read the state file's write health at each scrape (``StateFileHealth``)."""
        self._state_file.source = health

    # --- notifications ----------------------------------------------------------------------

    def route_source(self, stats: Callable[[], Mapping[str, RouteSnapshot]]) -> None:
        """Read per-route counts from ``stats()`` at each scrape (e.g. ``Dispatcher.stats``)."""
        self._routes.sources.append(stats)

    def observe_latency(self, seconds: float) -> None:
        """Record one tick-to-dispatch latency."""
        self._latency.observe(seconds)

    def observe_loop_lag(self, seconds: float) -> None:
        """Record one event-loop lag sample (``monitor.ops.loop_lag.LoopLag``)."""
        self._loop_lag.observe(seconds)

    # --- exposition -------------------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from an ``Accept`` header."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
