"""The daemon's periodic jobs (monitor/app/periodic.py), each alone: real book, engine, policy, metrics
and systemd notify socket; the clock is injected, nothing waits real seconds."""

from __future__ import annotations

import asyncio
import datetime as dt
import doctest
import itertools
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from test_sdnotify import NotifySocket

from monitor.alerts.policy import AlertPolicy
from monitor.app import periodic
from monitor.app.periodic import (
    RESYNC_SLICE,
    EverySecond,
    MetricsSweep,
    OutboxPrune,
    Readiness,
    Resync,
    Staleness,
    SystemdStatus,
    blind_reasons,
    phases,
    schedule,
    summary,
)
from monitor.config.model import AlertsConfig, Config
from monitor.ops.metrics import Metrics
from monitor.ops.sdnotify import Notifier
from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars, Position
from monitor.risk.report import UnitReport
from monitor.store import OutboxItem, Store
from monitor.watch.accounts import AccountWatcher, Endpoints, build_watchers
from monitor.watch.engine import Engine
from monitor.watch.ladder import default_policy

LIMIT = 30.0


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def long_btc(book: AccountBook, account: str) -> str:
    """A cross unit holding 1 BTC against an 18,750 USDT loan (level 1.6 at 30,000)."""
    positions = {"BTC": Position(D(1), D(0), D(0), D(0)), "USDT": Position(D(0), D(0), D(18750), D(0))}
    return book.upsert_cross(account, positions, Bars.classic())


def priced_accounts(n: int) -> tuple[AccountBook, list[str]]:
    """A book of ``n`` accounts ``u0``… made by :func:`long_btc`, BTC priced; and their names."""
    book = AccountBook(quote="USDT")
    accounts = [f"u{i}" for i in range(n)]
    for account in accounts:
        long_btc(book, account)
    book.on_price("BTCUSDT", 30_000.0)
    return book, accounts


def unroutable(book: AccountBook, account: str) -> str:
    """A unit owing USDT against an asset no listed pair prices (and no level from Binance)."""
    book.set_catalog({"BTCUSDT": ("BTC", "USDT")})
    positions = {"ZZZ": Position(D(1), D(0), D(0), D(0)), "USDT": Position(D(0), D(0), D(10), D(0))}
    return book.upsert_cross(account, positions, Bars.classic())


def watching(watcher: AccountWatcher, *units: str) -> AccountWatcher:
    """``watcher`` as loaded long ago and re-read just now, holding ``units``."""
    watcher.loaded, watcher.loaded_at = True, time.time() - 3_600
    watcher.snapshots.units, watcher.snapshots.last_snapshot = set(units), time.time()
    return watcher


def engine_of(book: AccountBook, clock: Clock) -> Engine:
    return Engine(book, AlertPolicy(default_policy(AlertsConfig(), ("hook",)), {}), clock=clock)


def watchers_of(book: AccountBook, *names: str) -> list[AccountWatcher]:
    """Real watchers of a config, never connected (``loaded`` is set by the test)."""
    config = Config.model_validate(
        {
            "accounts": [{"name": n, "api_key": f"{n}-key", "api_secret": f"{n}-secret"} for n in names],
            "notify": {"routes": {"hook": {"urls": ["json://127.0.0.1:9/hook"]}}},
        }
    )
    endpoints = Endpoints("http://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9")
    return build_watchers(config, Path("config.yaml"), endpoints, book, lambda _: None, [])


def noted(note: Callable[[str], object], step: str) -> Callable[[], Awaitable[None]]:
    """An async step that only notes that it ran (Binance's opinions, step 5)."""

    async def step_ran() -> None:
        note(step)

    return step_ran


async def nothing_to_send() -> None:
    pass


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[Notifier, NotifySocket]]:
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    notifier = Notifier(sock.address)
    yield notifier, sock
    notifier.close()
    sock.close()


def test_blind_reasons_say_why_in_one_line_each() -> None:
    book = AccountBook(quote="USDT")
    stale, refused, settling, rest = (long_btc(book, n) for n in ("s", "r", "t", "e"))
    unvalued = unroutable(book, "u")
    reasons = blind_reasons(book, [unvalued], set(), set(), set(), LIMIT)
    assert reasons[unvalued] == "no live price for ZZZ (no pair listed) and no level from Binance to stand in"
    reasons = blind_reasons(book, [stale], {"BTCUSDT"}, set(), set(), LIMIT)
    assert reasons[stale] == "no price for BTCUSDT for over 30 s (market stream down or silent)"
    reasons = blind_reasons(book, [refused], set(), {"BTCUSDT"}, set(), LIMIT)
    assert reasons[refused] == "Binance refuses to stream BTCUSDT (unknown or delisted symbol)"
    reasons = blind_reasons(book, [settling, rest], set(), set(), {settling}, LIMIT)
    assert reasons[settling].startswith(
        "balances unconfirmed: the balance and liability views have disagreed"
    )
    assert reasons[rest] == "the account could not be re-read from Binance (REST failing)"


def test_staleness_blinds_the_units_of_a_silent_symbol_and_thaws_them() -> None:
    clock = Clock()
    book = AccountBook(quote="USDT")
    uid = long_btc(book, "demo")
    book.on_price("BTCUSDT", 30_000.0)
    engine = engine_of(book, clock)
    watchers = [watching(w, uid) for w in watchers_of(book, "demo")]
    ages = {"BTCUSDT": LIMIT + 1}
    staleness = Staleness(book, engine, watchers, ages=lambda: ages, refused=frozenset, limit=LIMIT)
    assert staleness() == {uid}
    assert engine.stale == {uid}
    assert book.state(uid) == ("blind", "no price for BTCUSDT for over 30 s (market stream down or silent)")
    ages["BTCUSDT"] = 0.5
    assert staleness() == set()
    assert engine.stale == set() and book.state(uid)[0] == "known"


def test_staleness_counts_a_unit_no_price_can_value_as_blind() -> None:
    book = AccountBook(quote="USDT")
    uid = unroutable(book, "demo")
    engine = engine_of(book, Clock())
    staleness = Staleness(book, engine, [], ages=dict, refused=frozenset, limit=LIMIT)
    assert staleness() == {uid}
    assert book.state(uid)[0] == "blind"


def test_readiness_waits_for_every_account_and_fresh_units_then_says_ready_once(
    systemd: tuple[Notifier, NotifySocket],
) -> None:
    notifier, sock = systemd
    book = AccountBook(quote="USDT")
    watchers = watchers_of(book, "a", "b")
    said: list[str] = []
    readiness = Readiness(watchers, notifier, lambda: said.append("ahead"))
    watchers[0].loaded = True
    assert not readiness.decide(set())  # b is not loaded
    watchers[1].enabled = False  # refused for good: not waited for
    assert not readiness.decide({"cross:a"})  # a blind unit
    assert readiness.decide(set())
    readiness.become_ready()
    assert readiness.ready and said == ["ahead"]
    assert any(d.startswith("READY=1") for d in sock.drain())
    assert not readiness.decide(set())  # once


async def test_metrics_sweep_observes_a_bounded_slice_each_call() -> None:
    book, accounts = priced_accounts(6)
    metrics = Metrics(version="test")
    sweep = MetricsSweep(book, metrics, "normal", batch=4)

    def observed() -> int:
        scraped = metrics.render()[0].decode()
        return sum(f'margin_monitor_margin_level{{account="{a}",' in scraped for a in accounts)

    await sweep()
    assert observed() == 4
    await sweep()  # the next slice: the other two, then round again
    assert observed() == 6


def test_systemd_status_says_what_start_up_waits_for_then_the_summary(
    systemd: tuple[Notifier, NotifySocket],
) -> None:
    notifier, sock = systemd
    book = AccountBook(quote="USDT")
    watchers = watchers_of(book, "a")
    engine = engine_of(book, Clock())
    status = SystemdStatus(watchers, notifier, lambda: summary(book, engine))
    status(False)
    said = sock.drain()
    assert any(d.startswith("EXTEND_TIMEOUT_USEC=") for d in said)
    assert "STATUS=waiting for the exchange (a: loading)" in said
    uid = long_btc(book, "a")
    book.on_price("BTCUSDT", 30_000.0)
    watchers[0].loaded = True
    status(True)
    assert sock.drain() == [f"STATUS=1 units, 0 blind: {uid}=1.600"]


async def test_resync_recomputes_the_book_in_slices() -> None:
    book = AccountBook(quote="USDT")
    uid = long_btc(book, "demo")
    book.on_price("BTCUSDT", 30_000.0)
    await Resync(book, period=60.0).run()
    assert book.level(uid) == pytest.approx(1.6)


async def test_resync_gives_the_loop_a_turn_after_each_slice() -> None:
    book, _ = priced_accounts(3 * RESYNC_SLICE + 1)
    slices: list[tuple[int, int]] = []  # (units in the slice, turns another task had before it)
    turns = 0
    resync = book.resync

    def spy(units: Iterable[str] | None = None) -> float:
        assert units is not None
        units = list(units)
        slices.append((len(units), turns))
        return resync(units)

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    book.resync = spy  # type: ignore[method-assign]
    ticker = asyncio.create_task(other())
    await asyncio.sleep(0)
    await Resync(book, period=30.0).run()
    ticker.cancel()
    assert [n for n, _ in slices] == [RESYNC_SLICE, RESYNC_SLICE, RESYNC_SLICE, 1]
    seen = [t for _, t in slices]
    assert all(b > a for a, b in itertools.pairwise(seen)), seen  # a turn for others between slices


class _Job:
    def __init__(self, name: str, period: float) -> None:
        self.name, self.period = name, period

    async def run(self) -> None:
        return None


async def test_schedule_starts_each_job_a_period_and_its_own_phase_from_now() -> None:
    # a day ahead: the scheduler computes the first runs against the real clock, so "now" is future
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    jobs = [_Job("timers", 1.0), _Job("snapshots", 60.0), _Job("resync", 30.0), _Job("history", 5.0)]
    scheduler = AsyncIOScheduler(timezone="UTC")
    schedule(scheduler, jobs, now=lambda: now)
    scheduler.start(paused=True)
    try:
        first = {job.id: job.next_run_time for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    offsets = {name: (at - now).total_seconds() for name, at in first.items()}
    assert offsets == {"timers": 1.0, "snapshots": 60.25, "resync": 30.5, "history": 5.75}
    # no two jobs ever come due in the same instant: their phases within a second all differ
    assert len({round(o % 1.0, 6) for o in offsets.values()}) == len(jobs)


def test_doctests() -> None:
    assert doctest.testmod(periodic).failed == 0


def test_phases_are_distinct_and_within_the_shortest_period() -> None:
    for periods in ([1.0], [1.0, 60.0, 30.0, 3600.0, 5.0, 300.0], [5.0, 2.0]):
        shifts = phases(periods)
        assert shifts[0] == 0.0
        assert len(set(shifts)) == len(periods)
        assert all(0.0 <= s < min(periods) for s in shifts)


async def test_every_second_decides_readiness_before_the_sweep_yields(
    systemd: tuple[Notifier, NotifySocket],
) -> None:
    """An account that finishes loading while the metrics sweep yields (its units with no price yet)
    was not loaded when this second's stale set was taken: READY=1 is not decided on it that second
    (commit 50ad417), only the next second, on the next stale set."""
    notifier, sock = systemd
    clock, ticks = Clock(), Clock(0.0)
    book = AccountBook(quote="USDT")
    for i in range(8):  # enough units for the sweep to yield
        long_btc(book, f"u{i}")
    book.on_price("BTCUSDT", 30_000.0)
    engine = engine_of(book, clock)
    watchers = watchers_of(book, "late")
    readiness = Readiness(watchers, notifier)
    order: list[str] = []
    job = EverySecond(
        notices=[], send_notices=nothing_to_send, engine=engine,
        staleness=Staleness(book, engine, watchers, ages=dict, refused=frozenset, limit=LIMIT),
        opinions_sweep=noted(order.append, "opinions"), resubscribe=lambda: order.append("resubscribe"),
        readiness=readiness, sweep=MetricsSweep(book, Metrics(version="test"), "normal"),
        status=SystemdStatus(watchers, notifier, lambda: summary(book, engine)), monotonic=ticks,
    )  # fmt: skip

    async def loads_meanwhile() -> None:
        watchers[0].loaded = True
        positions = {"ETH": Position(D(10), D(0), D(0), D(0)), "USDT": Position(D(0), D(0), D(10_000), D(0))}
        book.upsert_cross("late", positions, Bars.classic())  # no ETHUSDT price yet

    loading = asyncio.create_task(loads_meanwhile())  # runs at the sweep's first yield
    ticks.now = 1.0
    await job.run()
    assert loading.done()  # it ran while the sweep yielded
    assert order == ["opinions", "resubscribe"]
    assert not readiness.ready and job.done_at == 1.0
    assert readiness.decide(set())  # every account loaded now: the order alone kept it not ready
    assert not any(d.startswith("READY=1") for d in sock.drain())
    await job.run()
    assert readiness.ready
    assert sum(d.startswith("READY=1") for d in sock.drain()) == 1


async def test_outbox_prune_deletes_only_finished_rows_past_the_keep(tmp_path: Path) -> None:
    """The hourly prune drops sent rows older than the keep; a recent sent row and a row still queued
    (however old) stay, so nothing unsent is ever lost."""
    now = [1_000.0]

    def row(key: str) -> OutboxItem:
        return OutboxItem(key, "chat#1", "chat", "cross:a", "firing", "t", "b", "warning", now[0])

    with Store(tmp_path, clock=lambda: now[0]) as store:
        old_sent, old_queued = store.add_outbox(
            [row("cross:a|normal|1|firing|0"), row("cross:a|margin_call|1|firing|0")]
        )
        store.mark_sent(old_sent.id, now[0])
        now[0] += 8 * 86400
        [recent] = store.add_outbox([row("cross:a|normal|2|firing|0")])
        store.mark_sent(recent.id, now[0])
        await OutboxPrune(store, keep=7 * 86400, period=3600, clock=lambda: now[0]).run()
        assert [i.dedupe_key for i in store.open_outbox()] == [old_queued.dedupe_key]
        assert store.outbox_counts() == {("chat", "sent"): 1, ("chat", "queued"): 1}


async def test_every_second_is_not_ready_while_units_wait_for_their_evaluation(
    systemd: tuple[Notifier, NotifySocket],
) -> None:
    """Prices applied whose units are still due (the market feed evaluates them a slice per loop
    turn, ``Engine.evaluate_due``): not ready on them, whatever the stale set says; ready once they
    are evaluated."""
    notifier, sock = systemd
    clock = Clock()
    book = AccountBook(quote="USDT")
    units = [long_btc(book, f"u{i}") for i in range(3)]
    engine = engine_of(book, clock)
    engine.on_prices({"BTCUSDT": 30_000.0})
    watchers = [watching(w, u) for w, u in zip(watchers_of(book, "u0", "u1", "u2"), units, strict=True)]
    readiness = Readiness(watchers, notifier)
    job = EverySecond(
        notices=[], send_notices=nothing_to_send, engine=engine,
        staleness=Staleness(book, engine, watchers, ages=dict, refused=frozenset, limit=LIMIT),
        opinions_sweep=nothing_to_send, resubscribe=lambda: None, readiness=readiness,
        sweep=MetricsSweep(book, Metrics(version="test"), "normal"),
        status=SystemdStatus(watchers, notifier, lambda: summary(book, engine)),
    )  # fmt: skip
    engine.apply_prices({"BTCUSDT": 20_000.0})  # 1.07: every unit out of its band, none evaluated yet
    assert set(engine.due) == set(units)
    await job.run()
    assert not readiness.ready
    while engine.evaluate_due():
        pass
    await job.run()
    assert readiness.ready
    assert sum(d.startswith("READY=1") for d in sock.drain()) == 1


class Turns:
    """Counts turns of the event loop: a task that adds one each time it runs (once a turn while
    anything else is ready), so two things done in one turn see the same count."""

    def __init__(self) -> None:
        self.count = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    def __enter__(self) -> Turns:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()


async def test_every_second_gives_the_loop_a_turn_between_its_steps(
    systemd: tuple[Notifier, NotifySocket],
) -> None:
    """Timers, staleness and the readiness decision in one turn (the decision on that turn's stale
    set); Binance's opinions, the resubscription and each exact report of the sweep in turns of their
    own: under a crash each cost 1-5 ms, and ticks and alerts wait for no more than one of them."""
    notifier, _ = systemd
    clock = Clock()
    book = AccountBook(quote="USDT")
    for i in range(6):
        long_btc(book, f"u{i}")
    book.on_price("BTCUSDT", 30_000.0)
    engine = engine_of(book, clock)
    watchers = watchers_of(book, "a")
    seen: list[tuple[str, int]] = []
    with Turns() as turns:

        def at(step: str) -> None:
            seen.append((step, turns.count))

        class Seen(Staleness):
            def __call__(self) -> set[str]:
                at("staleness")
                return super().__call__()

        class Decided(Readiness):
            def decide(self, stale_units: Collection[str]) -> bool:
                at("decide")
                return super().decide(stale_units)

        class Observed(Metrics):
            def observe_unit(self, report: UnitReport) -> None:
                at("report")
                super().observe_unit(report)

        class Timed(Engine):
            def tick_timers(self) -> None:
                at("timers")
                super().tick_timers()

        engine = Timed(engine.book, engine.policy, clock=clock)
        metrics = Observed(version="test")
        job = EverySecond(
            notices=[], send_notices=nothing_to_send, engine=engine,
            staleness=Seen(book, engine, watchers, ages=dict, refused=frozenset, limit=LIMIT),
            opinions_sweep=noted(at, "opinions"), resubscribe=lambda: at("resubscribe"),
            readiness=Decided(watchers, notifier), sweep=MetricsSweep(book, metrics, "normal"),
            status=SystemdStatus(watchers, notifier, lambda: summary(book, engine)),
        )  # fmt: skip
        await job.run()
    steps = [step for step, _ in seen]
    assert steps == ["timers", "staleness", "decide", "opinions", "resubscribe", *["report"] * 6]
    turn = dict(seen[:5])
    assert turn["timers"] == turn["staleness"] == turn["decide"]  # one turn: decided on its stale set
    assert turn["decide"] < turn["opinions"] < turn["resubscribe"]
    reports = [n for step, n in seen if step == "report"]
    assert turn["resubscribe"] < reports[0]
    assert all(a < b for a, b in itertools.pairwise(reports))  # one exact report a turn


async def test_metrics_sweep_leaves_the_rest_of_its_slice_for_the_next_second_past_its_budget() -> None:
    """Under a crash each of the sweep's turns waits behind ticks and sends: past ``budget`` seconds
    the rest of the slice waits (the job ends within its period), and the next second goes on from
    the first unit not observed, so every unit still comes round."""
    book, accounts = priced_accounts(6)
    metrics = Metrics(version="test")
    clock = Clock(0.0)

    def tick() -> float:
        clock.now += 0.1
        return clock.now

    sweep = MetricsSweep(book, metrics, "normal", batch=50, budget=0.25, monotonic=tick)

    def observed() -> list[str]:
        scraped = metrics.render()[0].decode()
        return [a for a in accounts if f'margin_monitor_margin_level{{account="{a}",' in scraped]

    await sweep()
    assert observed() == accounts[:3]  # 0.1, 0.2, then 0.3 s past the start: the rest next second
    await sweep()
    assert observed() == accounts


def test_a_unit_blind_on_a_silent_symbol_is_said_blind_since_its_last_price() -> None:
    """The BLIND alert's "no fresh data since" is the last price of the unit's stalest silent symbol,
    not the second the silence passed the limit: a market stream down since 1,000 s (clock) with a
    30 s limit, noticed at 1,042 s, says 1,000 s (42 s ago), not 1,042 s."""
    clock = Clock(now=1_042.0)
    book = AccountBook(quote="USDT")
    uid = long_btc(book, "demo")
    book.on_price("BTCUSDT", 30_000.0)
    engine = engine_of(book, clock)
    watchers = [watching(w, uid) for w in watchers_of(book, "demo")]
    ages = {"BTCUSDT": 42.0, "ETHUSDT": 0.5}
    Staleness(book, engine, watchers, ages=lambda: ages, refused=frozenset, limit=LIMIT)()
    blind = [engine.outbox.get_nowait().event for _ in range(engine.outbox.qsize())]
    assert [(e.kind, e.unit, e.since) for e in blind] == [("blind", uid, 1_000.0)]
