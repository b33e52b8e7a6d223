"""What the steady state allocates each round stays bounded, whatever the number of accounts: objects
made per account and kept for a round's length reached the oldest generation, which every full
collection walks (bench/gc_census.py, bench/late_streams.py).

The snapshot round re-reads every account of a real daemon on the simulator with a fixed number of
workers (not a task per account); the staleness step refills one set. Nothing here is timed."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import DEMO_SCENARIO
from daemon_harness import Receiver, cross_account, daemon_config, running_daemon, wait_until
from test_staleness_due import SILENT_AFTER, Daemon
from test_watcher import ALICE, config, snapshots

from monitor.app.periodic import SNAPSHOT_CONCURRENCY, Snapshots
from monitor.risk.margin import Bars
from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(120)

ACCOUNTS = 12  # three times the workers of a round


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """The usual scenario plus ``ACCOUNTS`` cross accounts."""
    data: dict[str, Any] = orjson.loads(orjson.dumps(DEMO_SCENARIO))
    data["accounts"] = [
        cross_account(f"acct{i:02d}", ("BTC", "1", "0"), ("USDT", "100", "15000")) for i in range(ACCOUNTS)
    ]
    return data


def _count_round_tasks(loop: asyncio.AbstractEventLoop, seen: list[str]) -> None:
    """Note the qualified name of every task's coroutine the snapshot round creates."""

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any]
    ) -> asyncio.Task[Any]:
        name = getattr(coro, "__qualname__", "")
        if name.startswith("Snapshots."):
            seen.append(name)
        return asyncio.Task(coro, loop=loop)

    loop.set_task_factory(factory)


async def test_a_snapshot_round_rereads_every_account_with_a_fixed_number_of_tasks(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Twelve accounts: every one is re-read by REST in the round, by at most
    ``SNAPSHOT_CONCURRENCY`` tasks (a task per account before: twelve)."""
    accounts = [{"name": f"acct{i:02d}", "api_key": f"acct{i:02d}-key", "api_secret": f"acct{i:02d}-secret"}
                for i in range(ACCOUNTS)]  # fmt: skip
    path = daemon_config(tmp_path, sim, receiver, accounts=accounts, snapshot_interval="600s")
    async with running_daemon(path) as daemon:
        await wait_until(lambda: all(w.loaded for w in daemon.watchers), what="every account loaded")
        before = {w.name: w.snapshots.last_snapshot for w in daemon.watchers}
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        _count_round_tasks(loop, seen)
        try:
            await Snapshots(daemon.watchers, 600.0).run()
        finally:
            loop.set_task_factory(None)
        assert all(w.snapshots.last_snapshot > before[w.name] for w in daemon.watchers)
        assert 0 < len(seen) <= SNAPSHOT_CONCURRENCY, seen


async def test_a_round_with_fewer_accounts_than_workers_starts_no_idle_worker() -> None:
    """No account, no task; the round still ends."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    _count_round_tasks(loop, seen)
    try:
        await Snapshots([], 600.0).run()
    finally:
        loop.set_task_factory(None)
    assert seen == []


def test_the_staleness_step_refills_one_set_in_place() -> None:
    """Second after second the step hands the engine the same set object, refilled: stale units
    when REST falls silent, none once it answers again; the engine's view follows."""
    d = Daemon(5)
    for i in range(5):
        d.load(i, answered=1_000.0)
    d.clock.now = 1_000.0 + 1.0
    first = d.staleness()
    assert first == set() == d.engine.stale
    d.clock.now = 1_000.0 + SILENT_AFTER + 1.0  # REST silent for every account: every unit blind
    second = d.staleness()
    assert second is first
    assert second == set(d.units) == d.engine.stale
    for i in range(5):  # REST answers again
        d.load(i)
    third = d.staleness()
    assert third is first and third == set() == d.engine.stale


async def test_a_snapshot_that_changed_nothing_keeps_the_objects_it_holds() -> None:
    """A re-read whose units and bars are the same as the last keeps the last set and ``Bars``
    objects: REST hands back fresh copies each round, and each kept copy reached the oldest
    generation (a census at 1,000 accounts: ~860 sets and ~860 ``Bars``). A changed ladder, the same
    ladder written another way (``1.50``: the book's rule, ``book.kept``), or a unit gone still
    replaces them."""
    snap, rest, _, _ = snapshots(config(isolated="all"))
    await snap.read(rest)
    units, cross_bars, pair_bars = snap.units, snap.bars[""], snap.bars["ETHUSDT"]
    rest.bars = Bars.classic()  # equal, not the same object
    rest.pair_bars = Bars({"margin_call": D("1.2"), "liquidation": D("1.1")})
    await snap.read(rest)
    assert snap.units is units and snap.bars[""] is cross_bars and snap.bars["ETHUSDT"] is pair_bars
    rest.bars = Bars({"normal": D("1.50"), "margin_call": D("1.3"), "liquidation": D("1.1")})
    await snap.read(rest)
    assert snap.bars[""] == cross_bars and snap.bars[""] is rest.bars
    cross_bars = snap.bars[""]
    rest.bars = Bars({"normal": D("1.6"), "margin_call": D("1.3"), "liquidation": D("1.1")})
    rest.pairs = []
    await snap.read(rest)
    assert snap.bars[""] == rest.bars and snap.bars[""] is not cross_bars
    assert snap.units == {ALICE} and snap.units is not units
