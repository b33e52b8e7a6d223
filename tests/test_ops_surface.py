"""The HTTP surface of a running daemon on the simulator lists everything issue 5 names.

Per account and pair: margin level, distance to each bar, liquidation prices, level drift against
the exchange; per feed: message count (rate), age of the newest message, reconnects; per route:
sent, failed, queued; the tick-to-dispatch latency histogram; /healthz, /readyz, /status.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest
from daemon_harness import Receiver, daemon_config, running_daemon, wait_until
from prometheus_client.parser import text_string_to_metric_families

from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(60)

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), float(sample.value)))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for got, v in samples.get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {samples.get(name)}"
    return found[0]


@pytest.mark.slow
async def test_metrics_health_and_status_of_a_running_daemon(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Every series issue 5 asks for is exported for the cross account and the isolated pair."""
    accounts = [{"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret", "isolated": "all"}]
    config = daemon_config(tmp_path, sim, receiver, accounts=accounts)
    async with running_daemon(config) as daemon, aiohttp.ClientSession() as http:
        await wait_until(daemon.ready, what="daemon ready")
        await sim.set_price("BTCUSDT", "24000")  # cross 1.465, pair 1.344: below 1.5, alerts timed
        await receiver.wait_for(lambda m: len(m) >= 1)
        # the drift against the exchange is measured at each REST re-read (every 5 s here)
        await wait_until(lambda: len(daemon.watchers[0].drift) == 2, what="a reconciliation")
        await asyncio.sleep(1.2)  # the per-second job records fresh unit reports
        assert daemon.http is not None
        base = daemon.http.url

        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{base}/readyz") as r:
            assert r.status == 200 and (await r.json()) == {"ready": True}
        async with http.get(f"{base}/status") as r:
            status = await r.json()
        assert {u["unit"] for u in status} == {"cross:demo", "isolated:demo:BTCUSDT"}
        ages = {"age", "snapshot_age"}  # seconds since the data moved: differ between two reads
        assert [{k: v for k, v in u.items() if k not in ages} for u in status] == [
            {k: v for k, v in u.items() if k not in ages} for u in json.loads(json.dumps(daemon.status()))
        ]
        async with http.get(f"{base}/metrics") as r:
            samples = parse(await r.text())

    for kind, symbol in (("cross", ""), ("isolated", "BTCUSDT")):
        unit = {"account": "demo", "kind": kind, "symbol": symbol}
        assert value(samples, "margin_monitor_margin_level", **unit) > 1.0
        for bar in ("normal", "margin_call", "liquidation"):
            assert value(samples, "margin_monitor_bar_distance_ratio", bar=bar, **unit) < 0.5
        assert value(samples, "margin_monitor_liquidation_price", asset="BTC", **unit) > 0
        assert abs(value(samples, "margin_monitor_reconcile_drift_ratio", **unit)) < 0.01
        value(samples, "margin_monitor_level_drift", **unit)
    assert value(samples, "margin_monitor_feed_messages_total", feed="market") > 0
    assert 0 <= value(samples, "margin_monitor_feed_message_age_seconds", feed="market") < 5
    assert value(samples, "margin_monitor_feed_reconnects_total", feed="market") == 0
    assert value(samples, "margin_monitor_notifications_sent_total", route="hook") >= 1
    assert value(samples, "margin_monitor_notifications_failed_total", route="hook") == 0
    assert value(samples, "margin_monitor_notifications_queued", route="hook") == 0
    assert value(samples, "margin_monitor_tick_to_dispatch_seconds_count") >= 1
    assert value(samples, "margin_monitor_loop_lag_seconds_count") >= 10  # sampled every 10 ms
