"""The once-a-second sweep of Binance's word (``ExchangeOpinions.sweep``) re-decides a few units a
turn of the event loop: in a crash Binance speaks of a hundred units or more at once, and each of our
views is an exact valuation (~60 µs), 3-12 ms of the loop in one turn at 5,000 ticks/s
(bench/crash.py). Sliced, it decides the same units with the same outcome as deciding them all at
once, and a unit that changes while the sweep waits for its turn is decided on its state then.

Worked example: ``u<i>``, cross, 1 BTC against 18,750 USDT at BTC 30,000: level 30,000 / 18,750 =
1.6, above every bar (1.5 / 1.3 / 1.1). Binance says MARGIN_CALL for it (its level 1.25): we see
1.6, so once the grace (5 s) runs out the second opinion fires a "disagree" for each unit.
"""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_periodic import Clock, Turns, long_btc

from monitor.alerts.policy import AlertPolicy
from monitor.config.model import AlertsConfig
from monitor.risk.book import AccountBook
from monitor.watch import opinion_feed
from monitor.watch.engine import Engine
from monitor.watch.ladder import default_policy
from monitor.watch.opinion_feed import ExchangeOpinions

BARS = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}


class Daemon:
    """``n`` cross units on one book and engine, Binance's word wired as in the daemon."""

    def __init__(self, n: int) -> None:
        self.clock = Clock(1_000.0)
        self.book = AccountBook(quote="USDT")
        policy = AlertPolicy(default_policy(AlertsConfig(), ("hook",)), {})
        self.engine = Engine(self.book, policy, clock=self.clock)
        self.units = [long_btc(self.book, f"u{i}") for i in range(n)]
        self.book.on_price("BTCUSDT", 30_000.0)
        self.opinions = ExchangeOpinions(lambda _: BARS, grace=5.0, clock=self.clock)
        self.opinions.engine = self.engine

    def queued(self) -> list[tuple[str, str, str]]:
        """What the opinions queued on the engine's outbox since the last call: (unit, kind, verdict)."""
        out: list[tuple[str, str, str]] = []
        while not self.engine.outbox.empty():
            event = self.engine.outbox.get_nowait().event
            out.append((event.unit, event.kind, event.verdict))
        return out


async def test_a_hundred_units_are_decided_a_slice_a_turn() -> None:
    d = Daemon(100)
    for unit in d.units:
        d.opinions.heard(unit, "MARGIN_CALL", D("1.25"), "stream")
    assert d.queued() == []  # within the grace: nothing yet
    d.clock.now += 6.0
    with Turns() as turns:
        first = turns.count
        await d.opinions.sweep()
        took = turns.count - first
    assert sorted(d.queued()) == sorted((u, "firing", "disagree") for u in d.units)
    slices = math.ceil(100 / opinion_feed.SWEEP_SLICE)
    assert slices - 1 <= took <= slices  # a turn between slices, none within one


async def test_a_unit_that_goes_calm_or_starts_settling_meanwhile_is_left() -> None:
    """While the sweep waits for a turn, Binance says NORMAL for one unit (``heard`` decides it
    then) and another starts settling (its alert state frozen): the sweep leaves both."""
    d = Daemon(3 * opinion_feed.SWEEP_SLICE)
    for unit in d.units:
        d.opinions.heard(unit, "MARGIN_CALL", D("1.25"), "stream")
    d.clock.now += 6.0
    late, settling = d.units[-1], d.units[-2]

    async def meanwhile() -> None:
        d.opinions.heard(late, "NORMAL", D("1.6"), "stream")
        d.engine.hold(settling, d.clock.now)

    sweep = asyncio.create_task(d.opinions.sweep())
    await asyncio.sleep(0)  # the sweep's first slice
    await meanwhile()
    await sweep
    fired = {unit for unit, kind, _ in d.queued() if kind == "firing"}
    assert fired == set(d.units) - {late, settling}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["NORMAL", "MARGIN_CALL", "PRE_LIQUIDATION", "FORCE_LIQUIDATION"]), max_size=30),
    st.integers(1, 12),
)
def test_sliced_or_not_the_same_units_get_the_same_events(statuses: list[str], size: int) -> None:
    """Any words, any slice size: the sweep queues what deciding every active unit at once queued."""

    def run(slice_size: int) -> list[tuple[str, str, str]]:
        d = Daemon(len(statuses))
        for unit, status in zip(d.units, statuses, strict=True):
            d.opinions.heard(unit, status, D("1.25") if status != "NORMAL" else D("1.6"), "stream")
        d.clock.now += 6.0
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(opinion_feed, "SWEEP_SLICE", slice_size)
            asyncio.run(d.opinions.sweep())
        return d.queued()

    assert run(size) == run(10_000)
