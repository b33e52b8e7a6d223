"""Metrics: what a scrape shows after the daemon's update calls, parsed with prometheus_client."""

from __future__ import annotations

import doctest
import gc
import math
from dataclasses import dataclass, replace

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from structlog.testing import capture_logs

from monitor.ops import collectors
from monitor.ops.collectors import read_row, unit_row
from monitor.ops.metrics import Metrics
from monitor.risk.report import UnitReport, unit_id


def make_report(
    account: str = "main",
    symbol: str | None = None,
    level: float | None = 1.42,
    exchange: float | None = 1.40,
) -> UnitReport:
    """A plausible report for a cross account (or an isolated pair when ``symbol`` is given)."""
    return UnitReport(
        unit=unit_id(account, symbol),
        account=account,
        kind="isolated" if symbol else "cross",
        symbol=symbol,
        quote="USDT",
        margin_level=level,
        bars={"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1},
        liquidation_bar="liquidation",
        distances={"normal": 0.03, "margin_call": -0.06, "liquidation": None},
        liquidation_prices={"BTC": 52000.0, "ETH": None},
        total_asset_value=14200.0,
        total_liability_value=10000.0,
        restore_target=1.5,
        exchange_margin_level=exchange,
    )


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(metrics: Metrics) -> list[Sample]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return [s for fam in text_string_to_metric_families(body.decode()) for s in fam.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the one sample with this name whose labels include ``labels`` (None if absent)."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_unit_series_follow_the_latest_report() -> None:
    """Level, bars, distances, liquidation prices and drift reflect the newest report of each unit."""
    metrics = Metrics(process_metrics=False)
    metrics.observe_unit(make_report(level=1.6))
    metrics.observe_unit(make_report(level=1.42))
    metrics.observe_unit(make_report(symbol="BTCUSDT", level=2.0, exchange=None))
    samples = scrape(metrics)
    cross = {"account": "main", "kind": "cross", "symbol": ""}
    iso = {"account": "main", "kind": "isolated", "symbol": "BTCUSDT"}
    assert value(samples, "margin_monitor_margin_level", **cross) == 1.42
    assert value(samples, "margin_monitor_margin_level", **iso) == 2.0
    assert value(samples, "margin_monitor_bar_level", bar="margin_call", **cross) == 1.3
    assert value(samples, "margin_monitor_bar_distance_ratio", bar="margin_call", **cross) == -0.06
    assert value(samples, "margin_monitor_bar_distance_ratio", bar="liquidation", **cross) is None
    assert value(samples, "margin_monitor_liquidation_price", asset="BTC", **cross) == 52000.0
    assert value(samples, "margin_monitor_liquidation_price", asset="ETH", **cross) is None
    drift = value(samples, "margin_monitor_level_drift", **cross)
    assert drift is not None and math.isclose(drift, 0.02)
    assert value(samples, "margin_monitor_level_drift", **iso) is None
    assert value(samples, "margin_monitor_liability_value", quote="USDT", **cross) == 10000.0


def test_no_debt_is_an_infinite_level_and_a_unit_gone_leaves_no_series() -> None:
    """A unit without debt shows +Inf (not 0); a unit no longer monitored leaves no series behind."""
    metrics = Metrics(process_metrics=False)
    live = {unit_id("main")}
    metrics.units_source(lambda: live)
    report = replace(
        make_report(), margin_level=math.inf, distances={}, liquidation_prices={}, state="no_debt"
    )
    metrics.observe_unit(report)
    samples = scrape(metrics)
    assert value(samples, "margin_monitor_margin_level", account="main") == math.inf
    assert value(samples, "margin_monitor_unit_state", account="main", state="no_debt") == 1.0
    live.clear()
    assert not [s for s in scrape(metrics) if s.labels.get("account") == "main"]


def test_unknown_is_never_a_number_and_each_unit_has_exactly_one_state() -> None:
    """A blind unit exports no level at all (never +Inf, never its stale number) and state blind;
    an approximate one exports its level, unit_approximate 1 and state approximate; every unit
    has exactly one of the four states at 1."""
    metrics = Metrics(process_metrics=False)
    blind = replace(make_report("a"), margin_level=None, state="blind", reason="no price yet for XYZUSDT")
    stale = replace(make_report("b"), margin_level=1.42, state="blind", reason="feed silent")
    approx = replace(make_report("c"), margin_level=1.2, state="approximate", approximate=True)
    known = make_report("d")
    for report in (blind, stale, approx, known):
        metrics.observe_unit(report)
    samples = scrape(metrics)
    assert value(samples, "margin_monitor_margin_level", account="a") is None
    assert value(samples, "margin_monitor_margin_level", account="b") is None
    assert value(samples, "margin_monitor_margin_level", account="c") == 1.2
    assert value(samples, "margin_monitor_unit_approximate", account="c") == 1.0
    assert value(samples, "margin_monitor_unit_approximate", account="d") == 0.0
    assert not [s for s in samples if s.name == "margin_monitor_margin_level" and math.isinf(s.value)]
    for account, want in (("a", "blind"), ("b", "blind"), ("c", "approximate"), ("d", "known")):
        states = {
            s.labels["state"]: s.value
            for s in samples
            if s.name == "margin_monitor_unit_state" and s.labels["account"] == account
        }
        assert states == {name: float(name == want) for name in ("known", "approximate", "blind", "no_debt")}


def test_pushed_feed_state_and_age_use_the_clock() -> None:
    """A feed with no stats() source (a user-data or Risk Data Stream feed) has its pushed up/down and
    reconnects, no messages, and an age since it was last up on the given clock: 0 while connected
    (its events are rare; its pings prove it alive), then growing from the moment it went down; a
    feed that never came up (a risk stream waiting for a connection slot) ages from registration."""
    clock = Clock()
    metrics = Metrics(clock=clock, process_metrics=False)
    metrics.feed_connected("userdata:a", True)
    metrics.feed_connected("risk:b", False)  # waiting for its first connection
    clock.now += 90
    samples = scrape(metrics)
    assert value(samples, "margin_monitor_feed_message_age_seconds", feed="userdata:a") == 0.0
    assert value(samples, "margin_monitor_feed_message_age_seconds", feed="risk:b") == 90.0
    metrics.feed_reconnect("userdata:a")
    metrics.feed_connected("userdata:a", False)
    clock.now += 5
    metrics.feed_connected("userdata:a", False)  # a second "down" does not restart the age
    clock.now += 2
    samples = scrape(metrics)
    assert value(samples, "margin_monitor_feed_message_age_seconds", feed="userdata:a") == 7.0
    assert value(samples, "margin_monitor_feed_messages_total", feed="userdata:a") == 0
    assert value(samples, "margin_monitor_feed_reconnects_total", feed="userdata:a") == 1
    assert value(samples, "margin_monitor_feed_connected", feed="userdata:a") == 0
    metrics.feed_connected("userdata:a", True)
    assert value(scrape(metrics), "margin_monitor_feed_message_age_seconds", feed="userdata:a") == 0.0


def test_routes_and_latency_histogram() -> None:
    """Sent, failed and queued counts are per route; latencies land in the histogram buckets."""
    metrics = Metrics(process_metrics=False)
    metrics.route_source(
        lambda: {"telegram": DispatchStats(sent=2), "email": DispatchStats(failed=3, queued=2)}
    )
    metrics.observe_latency(0.003)
    metrics.observe_latency(0.2)
    samples = scrape(metrics)
    assert value(samples, "margin_monitor_notifications_sent_total", route="telegram") == 2
    assert value(samples, "margin_monitor_notifications_failed_total", route="email") == 3
    assert value(samples, "margin_monitor_notifications_queued", route="email") == 2
    assert value(samples, "margin_monitor_tick_to_dispatch_seconds_bucket", le="0.005") == 1
    assert value(samples, "margin_monitor_tick_to_dispatch_seconds_count") == 2


def test_url_like_route_never_reaches_a_label() -> None:
    """A route given as an Apprise URL with a token is exported as a digest, never the URL."""
    metrics = Metrics(process_metrics=False)
    metrics.route_source(lambda: {"tgram://123456:SECRET-TOKEN/987": DispatchStats(sent=1)})
    body, _ = metrics.render()
    assert b"SECRET-TOKEN" not in body
    assert b'route="route-' in body


def test_registries_are_independent_and_openmetrics_is_negotiated() -> None:
    """Two Metrics never share series (no global registry); an OpenMetrics Accept header is honoured."""
    first, second = Metrics(), Metrics()
    first.observe_unit(make_report())
    assert b"margin_monitor_margin_level{" not in second.render()[0]
    body, content_type = first.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b"process_resident_memory_bytes" in body


@dataclass(frozen=True)
class StreamStats:
    """Shaped like ``monitor.exchange.streams.FeedStats``."""

    messages: int
    malformed: int
    reconnects: int
    connected: bool
    last_message_at: float | None


@dataclass(frozen=True)
class DispatchStats:
    """Shaped like ``monitor.notify.dispatcher.RouteStats``."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    held: int = 0


def test_feed_and_route_sources_are_read_at_scrape_time() -> None:
    """A feed's stats() and the dispatcher's stats() are read on each scrape and win over pushed values."""
    clock = Clock()
    metrics = Metrics(clock=clock, process_metrics=False)
    stream = {"stats": StreamStats(10, 0, 2, True, None)}
    metrics.feed_reconnect("market")
    metrics.feed_source("market", lambda: stream["stats"])
    routes = {"telegram": DispatchStats(sent=3, failed=1, dropped=4, queued=2, held=5)}
    metrics.route_source(lambda: routes)
    clock.now += 4
    samples = scrape(metrics)
    assert value(samples, "margin_monitor_feed_messages_total", feed="market") == 10
    assert value(samples, "margin_monitor_feed_reconnects_total", feed="market") == 2
    assert value(samples, "margin_monitor_feed_message_age_seconds", feed="market") == 4.0
    assert value(samples, "margin_monitor_notifications_dropped_total", route="telegram") == 4
    assert value(samples, "margin_monitor_notifications_held", route="telegram") == 5
    stream["stats"] = StreamStats(25, 0, 2, False, clock.now - 1.5)
    routes["telegram"] = DispatchStats(sent=4)
    samples = scrape(metrics)
    assert value(samples, "margin_monitor_feed_messages_total", feed="market") == 25
    assert value(samples, "margin_monitor_feed_message_age_seconds", feed="market") == 1.5
    assert value(samples, "margin_monitor_feed_connected", feed="market") == 0
    assert value(samples, "margin_monitor_notifications_sent_total", route="telegram") == 4


def test_a_failing_source_is_logged_and_skipped() -> None:
    """A source that raises drops only its own series from the scrape, with one error event."""
    metrics = Metrics(process_metrics=False)
    metrics.feed_connected("userdata", True)

    def broken() -> StreamStats:
        raise RuntimeError("stream gone")

    metrics.feed_source("market", broken)
    with capture_logs() as events:
        samples = scrape(metrics)
    assert value(samples, "margin_monitor_feed_messages_total", feed="userdata") == 0
    assert value(samples, "margin_monitor_feed_messages_total", feed="market") is None
    assert [e["event"] for e in events] == ["metrics_source_failed"]


def test_a_unit_row_is_never_in_the_collectors_walks() -> None:
    """The row kept per unit between scrapes is bytes, which CPython never tracks: not even the first
    young collection walks it. (A tuple of strings, numbers and None was untracked only there, after
    being walked; a row with nested tuples was promoted into the oldest generation, 50 rows a second
    at 1,000 units: about as many objects as every other promotion together.)"""
    row = unit_row(make_report(symbol="BTCUSDT"))
    assert not gc.is_tracked(row)
    assert not [o for o in gc.get_objects(0) if o is row]


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
values = st.floats(allow_nan=False)


@given(
    bars=st.dictionaries(names, values, max_size=5),
    distances=st.dictionaries(names, st.none() | values, max_size=5),
    prices=st.dictionaries(names, st.none() | values, max_size=5),
    level=st.none() | values,
    exchange=st.none() | values,
)
def test_a_unit_row_reads_back_as_the_report(
    bars: dict[str, float],
    distances: dict[str, float | None],
    prices: dict[str, float | None],
    level: float | None,
    exchange: float | None,
) -> None:
    """What ``/metrics`` reads of a row is what the report said, pair for pair and in order."""
    report = replace(
        make_report(symbol="ETHUSDT", level=level, exchange=exchange),
        bars=bars, distances=distances, liquidation_prices=prices,
    )  # fmt: skip
    read = read_row(unit_row(report))
    assert read.head == (
        report.unit, report.account, report.kind, "ETHUSDT", report.quote, report.state, level, exchange,
        report.total_asset_value, report.total_liability_value,
    )  # fmt: skip
    assert (list(read.bars), list(read.distances), list(read.liquidation_prices)) == (
        list(bars.items()), list(distances.items()), list(prices.items()),
    )  # fmt: skip


def test_doctests() -> None:
    result = doctest.testmod(collectors)
    assert result.attempted > 0 and result.failed == 0
