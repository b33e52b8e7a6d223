"""The event-loop lag probe: every sample reaches the histogram, and a stall shows up in it."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from monitor.ops.loop_lag import LAG_BUCKETS, LoopLag
from monitor.ops.metrics import Metrics


def lag_samples(metrics: Metrics) -> dict[str, float]:
    """``le`` bound (and ``count``) → cumulative count of ``margin_monitor_loop_lag_seconds``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for sample in family.samples:
            if sample.name == "margin_monitor_loop_lag_seconds_bucket":
                out[sample.labels["le"]] = sample.value
            elif sample.name == "margin_monitor_loop_lag_seconds_count":
                out["count"] = sample.value
    return out


def test_histogram_is_exported_with_millisecond_buckets() -> None:
    """/metrics has the loop-lag histogram from 1 ms up, empty before the probe runs."""
    samples = lag_samples(Metrics(process_metrics=False))
    assert samples["count"] == 0
    assert float(min((k for k in samples if k not in ("count", "+Inf")), key=float)) == 0.001
    assert len(samples) == len(LAG_BUCKETS) + 2  # every bound, +Inf and the count


async def test_a_stall_is_counted_above_its_length() -> None:
    """A callback that holds the loop for 50 ms puts a sample above the 25 ms bound."""
    metrics = Metrics(process_metrics=False)
    probe = LoopLag(metrics.observe_loop_lag, interval=0.005)
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)
    asyncio.get_running_loop().call_soon(time.sleep, 0.05)  # a blocking call on the loop
    while probe.samples < 20:  # noqa: ASYNC110 (the probe has no event to wait on)
        await asyncio.sleep(0.01)
    task.cancel()
    samples = lag_samples(metrics)
    assert samples["count"] == probe.samples
    assert samples["count"] - samples["0.025"] >= 1  # the stall: at least 50 ms minus one 5 ms interval
    assert probe.worst >= 0.0


async def test_fake_clock_lag_reaches_worst_and_the_histogram() -> None:
    """With a sleep that always wakes 7 ms late, every sample is 7 ms and so is ``worst``."""
    now = [100.0]

    async def late_sleep(seconds: float) -> None:
        now[0] += seconds + 0.007

    metrics = Metrics(process_metrics=False)
    probe = LoopLag(metrics.observe_loop_lag, interval=0.01, clock=lambda: now[0], sleep=late_sleep)
    await probe.run(samples=5)
    samples = lag_samples(metrics)
    assert samples["count"] == 5 and samples["0.005"] == 0 and samples["0.01"] == 5
    assert abs(probe.worst - 0.007) < 1e-9
