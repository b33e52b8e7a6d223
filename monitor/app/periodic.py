"""The daemon's periodic jobs: each a small class with its name and period, testable alone.

The scheduler runs :class:`EverySecond` (id ``timers``), :class:`Snapshots`, :class:`Resync`,
:class:`CatalogRefresh` and :class:`HistorySample` (see :func:`schedule`). :class:`EverySecond` is one
job of named steps whose order matters, run in this order each second, in turns of the event loop
of their own (ticks and alerts go between them; under a crash each turn cost 1-5 ms, and together
they held the loop 3-16 ms):

1. notices: what was said about an account since (key refused or revoked while no alert flows);
2. timers: pending ``for`` windows and repeat intervals (:meth:`Engine.tick_timers`);
3. staleness (:class:`Staleness`): units without fresh prices or REST re-reads go blind, with why;
4. readiness decided (:class:`Readiness`) on step 3's stale set and the units a batch of prices
   moved that are still due for evaluation (``Engine.evaluate_due``), in the turn of steps 2 and 3
   (nothing yields between them): an account that finishes loading in a later turn has units
   with no price yet that the set does not hold, and would make READY=1 flicker true (commit 50ad417);
   — a turn —
5. Binance's own word re-decided on step 3's state (:meth:`ExchangeOpinions.sweep`, a few units a
   turn: in a crash Binance speaks of a hundred units or more);
   — a turn —
6. resubscribe: accounts not loaded are retried (a task each: nothing loads within the step, so
   step 4 is not changed by it), the market stream follows the symbols needed;
7. metrics sweep (:class:`MetricsSweep`): a bounded slice of exact reports, a turn each, within a
   quarter of a second (the rest of the slice the next second);
8. readiness applied: READY=1 once, the heap settled, the line about what is ahead;
9. sd_notify status (:class:`SystemdStatus`): waiting for the exchange, or the summary;
then the time the job last finished is kept for the watchdog (``Service.healthy``).

The job runs every ``period`` seconds (``Options.tick``, 1 s) and also out of turn when an event may
have made the daemon ready (every account loaded and every wanted symbol priced once: ``Service``,
:class:`monitor.app.first_prices.FirstPrices`): the same steps in the same order, so readiness means
what it means on the tick, without waiting up to a period for it. Two runs never overlap.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from typing import Protocol

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.app.components import Components
from monitor.ops import heap
from monitor.ops.metrics import Metrics
from monitor.ops.recorder import Recorder
from monitor.ops.sdnotify import Notifier
from monitor.risk.book import AccountBook
from monitor.store import StateError, Store
from monitor.watch.accounts import AccountWatcher
from monitor.watch.catalog import SharedCatalog
from monitor.watch.engine import Engine
from monitor.watch.reshard import account_of
from monitor.watch.staleness import RestDeadlines

log = structlog.get_logger("monitor.service")

SWEEP_BATCH = 50  # units whose exact report is observed per second, at most
SWEEP_SECONDS = 0.25  # wall seconds the per-second metrics sweep may take; the rest of its slice next second
SWEEP_YIELD_EVERY = 1  # units reported between event-loop turns in the per-second metrics sweep: one
# exact report is 0.2 ms on a quiet machine, up to 2 ms under a crash (4 a turn held the loop 3-10 ms)
SNAPSHOT_CONCURRENCY = 4
SNAPSHOT_RATE = 50.0  # re-reads started per second in a round, at most: 1,000 accounts over 20 s
SNAPSHOT_SPREAD = 0.5  # and a round's starts fit in this share of the period whatever the accounts
RESYNC_SLICE = 25  # units recomputed exactly between event-loop turns: ~8 µs each at 1,000 accounts
# (100 a turn held the loop ~1 ms; three such turns beside the snapshot round's made a 5-6 ms lag sample)
OUTBOX_KEEP = 7 * 86400.0  # seconds a finished outbox row is kept (what was sent, for a post-mortem)
OUTBOX_PRUNE_EVERY = 3600.0
HISTORY_EVERY = 5.0  # seconds between level samples for the status page's charts (monitor.ops.history)
START_EXTEND_SECONDS = 30.0  # EXTEND_TIMEOUT_USEC while accounts wait for the exchange, renewed each second


class Job(Protocol):
    """A periodic job: the scheduler runs ``run`` every ``period`` seconds under the id ``name``."""

    name: str
    period: float

    def run(self) -> Awaitable[None]: ...


def scheduler() -> AsyncIOScheduler:
    """The daemon's scheduler: UTC, a late run coalesced into one, never two runs of a job at once."""
    return AsyncIOScheduler(
        timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
    )


def phases(periods: Sequence[float]) -> list[float]:
    """Each job's offset (s) from the common start, so that no two jobs come due in the same instant:
    job ``i`` of ``n`` is shifted by ``i / n`` of the shortest period (the first job not at all).

    Started together, every job fired at a multiple of its period from one instant: each minute the
    once-a-second job, the 5 s history sample, the 30 s resync and the 60 s snapshot round came due in
    the same loop turn, and their first steps together held the loop 5-9 ms at 1,000 accounts
    (bench/key_checks.py --name-late). Shifted, each starts in a turn of its own. The shift is less
    than the shortest period, so no job runs later than a period after the start.

    >>> phases([1.0, 60.0, 30.0, 5.0])
    [0.0, 0.25, 0.5, 0.75]
    >>> phases([])
    []
    """
    if not periods:
        return []
    base = min(periods)
    return [base * i / len(periods) for i in range(len(periods))]


def schedule(
    scheduler: AsyncIOScheduler,
    jobs: Sequence[Job],
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> None:
    """Each job every ``job.period`` seconds, the first run a period (plus the job's phase, see
    :func:`phases`) after now."""
    start = now()
    for job, phase in zip(jobs, phases([job.period for job in jobs]), strict=True):
        first = start + datetime.timedelta(seconds=job.period + phase)
        scheduler.add_job(job.run, "interval", seconds=job.period, id=job.name, start_date=first)


# -- the steps of the once-a-second job ------------------------------------------------------------
def blind_reasons(
    book: AccountBook,
    units: Collection[str],
    stale_symbols: Collection[str],
    refused: Collection[str],
    settling: Collection[str],
    limit: float,
) -> dict[str, str]:
    """Why each newly blind unit is blind, in one line the trader can act on."""
    reasons: dict[str, str] = {}
    if not units:  # most seconds: not even the list of every unit (1,000 of them: ms on a busy machine)
        return reasons
    for unit in units:
        symbols = book.unit_symbols(unit) if book.has_unit(unit) else set()
        unvalued = book.unvalued(unit) if book.has_unit(unit) else None
        if unvalued:
            reasons[unit] = unvalued
        elif symbols & set(refused):
            names = ", ".join(sorted(symbols & set(refused)))
            reasons[unit] = f"Binance refuses to stream {names} (unknown or delisted symbol)"
        elif symbols & set(stale_symbols):
            names = ", ".join(sorted(symbols & set(stale_symbols)))
            reasons[unit] = f"no price for {names} for over {limit:g} s (market stream down or silent)"
        elif unit in settling:
            reasons[unit] = (
                f"balances unconfirmed: the balance and liability views have disagreed for over "
                f"{limit:g} s (a change the streams and REST do not yet both show; re-reading)"
            )
        else:
            reasons[unit] = "the account could not be re-read from Binance (REST failing)"
    return reasons


def silent_since_price(
    book: AccountBook, units: Collection[str], stale_symbols: Collection[str], ages: Mapping[str, float]
) -> dict[str, float]:
    """Seconds since each newly blind unit last had a price for all its symbols: the age of its
    stalest silent symbol (units with none: not listed, their BLIND message says when it was seen)."""
    silent: dict[str, float] = {}
    if not units or not stale_symbols:
        return silent
    stale = set(stale_symbols)
    for unit in units:
        quiet = book.unit_symbols(unit) & stale if book.has_unit(unit) else set()
        if quiet:
            silent[unit] = max(ages[s] for s in quiet)
    return silent


def watchers_by_name(watchers: Collection[AccountWatcher]) -> dict[str, list[AccountWatcher]]:
    """Account name → its watcher (a list: one per name in any valid config)."""
    by_name: dict[str, list[AccountWatcher]] = {}
    for watcher in watchers:
        by_name.setdefault(watcher.name, []).append(watcher)
    return by_name


class Staleness:
    """Step 3: the units blind this second (stale prices, failing re-reads, unconfirmed balances, no
    price at all); the engine freezes the new ones, saying why, and thaws the fresh ones.

    Only the watchers that can have a stale unit now are asked (``AccountWatcher.stale_units``, the
    same judgement as when every one was asked each second): those REST has been silent for too
    long (:class:`RestDeadlines`: a heap of deadlines, not a walk of every watcher), those with a
    unit settling, and every loaded one while any symbol is stale (its units are found by asking).
    The others would answer "none": with 1,000 accounts the step looked at each of them, 1 ms of the
    loop on a quiet machine and 3-7 ms on a loaded one, in the turn that must not yield.
    ``clock``: the watchers' clock (their first one's, by default)."""

    def __init__(
        self,
        book: AccountBook,
        engine: Engine,
        watchers: list[AccountWatcher],
        *,
        ages: Callable[[], Mapping[str, float]],
        refused: Callable[[], Collection[str]],
        limit: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.book, self.engine, self.watchers = book, engine, watchers
        self.ages, self.refused, self.limit = ages, refused, limit
        self.clock = clock or (watchers[0].clock if watchers else time.time)
        self.deadlines = RestDeadlines(watchers)
        self._by_name, self._named = watchers_by_name(watchers), len(watchers)
        self.asked = 0  # watchers asked in the last call (tests: only those that can be stale)
        self._stale: set[str] = set()  # the last call's answer, refilled by the next one

    def candidates(self, stale_symbols: Collection[str]) -> Collection[AccountWatcher]:
        """The watchers that may have a stale unit now (a superset of those that do)."""
        if stale_symbols:
            return self.watchers
        owners = dict.fromkeys(self.deadlines.due(self.clock(), self.limit))
        if self.engine.settling:
            if self._named != len(self.watchers):  # watchers added since: not a count of the map each second
                self._by_name, self._named = watchers_by_name(self.watchers), len(self.watchers)
            for unit in self.engine.settling:
                owners.update(dict.fromkeys(self._by_name.get(account_of(unit), ())))
        return owners.keys()

    def __call__(self) -> set[str]:
        """The units blind now, handed to the engine. The same set each call, refilled in place (a
        new one each second outlived enough young collections to reach the oldest generation):
        read it before the next call, copy it to keep it."""
        limit = self.limit
        ages = self.ages()
        stale_symbols = {s for s, age in ages.items() if age > limit}
        stale_units = self._stale  # refilled in place: not a new set each second (kept for the day)
        stale_units.clear()
        asked = 0
        for watcher in self.candidates(stale_symbols):
            asked += 1
            stale_units |= watcher.stale_units(stale_symbols, limit)
        self.asked = asked
        stale_units.update(self.book.unvalued_units())  # no price, no level
        new = stale_units - self.engine.stale
        reasons = blind_reasons(self.book, new, stale_symbols, self.refused(), self.engine.settling, limit)
        silent = silent_since_price(self.book, new, stale_symbols, ages)
        self.engine.set_staleness(stale_units, reasons, silent)
        return stale_units


class Readiness:
    """Steps 4 and 8: READY=1 once every enabled account is loaded and no unit is blind."""

    def __init__(
        self, watchers: list[AccountWatcher], notifier: Notifier, on_ready: Callable[[], None] = lambda: None
    ) -> None:
        self.watchers, self.notifier, self.on_ready = watchers, notifier, on_ready
        self.ready = False

    def all_loaded(self) -> bool:
        """Every enabled account is loaded (the first half of readiness, also asked out of turn)."""
        return all(w.loaded for w in self.watchers if w.enabled)

    def decide(self, stale_units: Collection[str]) -> bool:
        """Whether the daemon becomes ready now (step 4, on this second's stale set)."""
        return not self.ready and not stale_units and self.all_loaded()

    def become_ready(self) -> None:
        """Step 8: once."""
        self.ready = True
        # start-up's objects live as long as the daemon: out of the collector's walks, and its
        # temporaries' memory back to the system (monitor/ops/heap.py; once)
        settled = heap.settle()
        self.notifier.ready()
        log.info("daemon_ready", heap=settled)
        self.on_ready()


class MetricsSweep:
    """Step 7: exact reports cost ~0.1-0.3 ms a unit (~2 ms under a crash): a bounded slice per second
    (all units when few), a turn of the event loop each, so ticks and alerts never wait behind the
    slice (bench/latency.py, bench/crash.py). Under a crash a turn also waits behind every tick and
    send queued meanwhile: once the sweep has taken ``budget`` seconds (wall), the rest of its slice
    waits for the next second, so that the job ends within its period (the scheduler skips a run
    that would overlap the last one: staleness would be looked at a second late)."""

    def __init__(
        self,
        book: AccountBook,
        metrics: Metrics,
        restore_target: str,
        batch: int = SWEEP_BATCH,
        *,
        budget: float = SWEEP_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.book, self.metrics, self.restore_target = book, metrics, restore_target
        self.batch, self.budget, self.monotonic = batch, budget, monotonic
        self._next = 0  # where the next slice starts (units come and go: taken modulo their count)

    async def __call__(self) -> None:
        ids = self.book.unit_ids()
        started = self.monotonic()
        for n in range(min(self.batch, len(ids))):
            if n % SWEEP_YIELD_EVERY == 0:  # first before any report: step 6 is a loop turn of its own
                await asyncio.sleep(0)
            ids = self.book.unit_ids()  # units may have left while the loop had its turn
            if not ids or (n and self.monotonic() - started > self.budget):
                return
            self._next %= len(ids)
            unit, self._next = ids[self._next], self._next + 1
            self.metrics.observe_unit(self.book.report(unit, restore_target=self.restore_target))


def summary(book: AccountBook, engine: Engine) -> str:
    """``N units, M blind: u1=1.523, …`` (five units: not a format of every unit each second)."""
    return Summary(book, engine)()


class Summary:
    """:func:`summary`, once a second: the five first unit ids are picked again only when units come
    or go (``AccountBook.unit_ids``), not by comparing every id each second."""

    def __init__(self, book: AccountBook, engine: Engine) -> None:
        self.book, self.engine = book, engine
        self._ids: tuple[str, ...] | None = None
        self._first: list[str] = []

    def __call__(self) -> str:
        book, ids = self.book, self.book.unit_ids()
        if ids is not self._ids:
            self._ids, self._first = ids, heapq.nsmallest(5, ids)
        levels = []
        for unit in self._first:
            state, _ = book.state(unit)
            level = book.level(unit)
            shown = f"{level:.3f}" if level is not None and state in ("known", "approximate") else state
            levels.append(f"{unit}={shown}")
        return f"{len(ids)} units, {len(self.engine.stale)} blind: " + ", ".join(levels)


class SystemdStatus:
    """Step 9: STATUS= says what start-up waits for (and extends systemd's start timeout: READY=1
    waits for the exchange), else the summary."""

    def __init__(
        self, watchers: list[AccountWatcher], notifier: Notifier, summary: Callable[[], str]
    ) -> None:
        self.watchers, self.notifier, self.summary = watchers, notifier, summary

    def __call__(self, ready: bool) -> None:
        # once ready, the summary whatever is loaded: not a look at every watcher each second
        waiting = [] if ready else [w for w in self.watchers if w.enabled and not w.loaded]
        if waiting:
            self.notifier.extend_timeout(START_EXTEND_SECONDS)
            problems = ", ".join(f"{w.name}: {w.problem.kind if w.problem else 'loading'}" for w in waiting)
            self.notifier.status(f"waiting for the exchange ({problems})")
        else:
            self.notifier.status(self.summary())


class EverySecond:
    """The once-a-second job: the steps of the module docstring, in that order."""

    name = "timers"

    def __init__(
        self,
        *,
        notices: Collection[object],
        send_notices: Callable[[], Awaitable[None]],
        engine: Engine,
        staleness: Staleness,
        opinions_sweep: Callable[[], Awaitable[None]],
        resubscribe: Callable[[], None],
        readiness: Readiness,
        sweep: MetricsSweep,
        status: SystemdStatus,
        monotonic: Callable[[], float] = time.monotonic,
        period: float = 1.0,
    ) -> None:
        self.period = period
        self.notices, self.send_notices, self.engine = notices, send_notices, engine
        self.staleness, self.opinions_sweep, self.resubscribe = staleness, opinions_sweep, resubscribe
        self.readiness, self.sweep, self.status, self.monotonic = readiness, sweep, status, monotonic
        self.done_at = monotonic()  # when the job last finished: the watchdog's sign of life
        self._one_at_a_time = asyncio.Lock()  # a run out of turn and the scheduled one never interleave

    async def run(self) -> None:
        async with self._one_at_a_time:
            await self._steps()

    async def _steps(self) -> None:
        if self.notices:  # 1. a key refused or revoked while no alert is flowing: tell the trader now
            await self.send_notices()
        self.engine.tick_timers()  # 2.
        stale_units = self.staleness()  # 3.
        due = self.engine.due  # units moved by prices and not evaluated yet: not ready on them
        becomes_ready = self.readiness.decide({*stale_units, *due} if due else stale_units)  # 4.
        await asyncio.sleep(0)
        await self.opinions_sweep()  # 5. (a slice of units a turn: monitor/watch/opinion_feed.py)
        await asyncio.sleep(0)
        self.resubscribe()  # 6.
        await self.sweep()  # 7. (its first turn before any report)
        if becomes_ready:  # 8.
            self.readiness.become_ready()
        self.status(self.readiness.ready)  # 9.
        self.done_at = self.monotonic()


# -- the slower jobs ------------------------------------------------------------------------------
class Snapshots:
    """Re-read every account, a few at a time and paced: 1,000 replies parsed back to back would hold
    the loop for seconds, delaying ticks.

    A round is :data:`SNAPSHOT_CONCURRENCY` workers draining one iterator of the watchers, not a task
    (and a coroutine, a future, a semaphore waiter) per account: with 1,000 accounts those ~1,000
    objects a round lived for the round's whole length (tens of seconds), long enough to be promoted
    into the generation full collections walk, and each round left that walk longer (bench/gc_census.py).
    An account's re-read handles its own errors (``AccountWatcher.refresh``); one that raises all the
    same is logged and the worker goes on with the next account.

    Re-reads start at most :data:`SNAPSHOT_RATE` a second (:class:`Pace`), and closer together when
    the round would not otherwise fit in :data:`SNAPSHOT_SPREAD` of the period. Unpaced, a round of
    1,000 accounts against a fast REST ran its four workers' answers back to back, several parsed,
    applied and evaluated in one turn of the loop (~0.6 ms each on a slow machine): the loop's
    longest turns of a crash, and its late samples every snapshot period in a quiet daemon
    (docs/benchmarks.md, session 16). Each account keeps its place in the round, so it is still
    re-read once a period."""

    name = "snapshots"

    def __init__(
        self,
        watchers: list[AccountWatcher],
        period: float,
        *,
        rate: float = SNAPSHOT_RATE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.watchers, self.period = watchers, period
        self.rate, self._clock, self._sleep = rate, clock, sleep

    def spacing(self, accounts: int) -> float:
        """Seconds between two re-reads' starts in a round of ``accounts``.

        >>> Snapshots([], 60.0).spacing(1000), Snapshots([], 60.0).spacing(5000)
        (0.02, 0.006)
        """
        return min(1.0 / self.rate, self.period * SNAPSHOT_SPREAD / max(accounts, 1))

    async def run(self) -> None:
        watchers = list(self.watchers)
        pending = iter(watchers)  # shared: each watcher is taken by exactly one worker
        pace = Pace(self.spacing(len(watchers)), self._clock, self._sleep)
        workers = min(SNAPSHOT_CONCURRENCY, len(watchers))
        await asyncio.gather(*(self._drain(pending, pace) for _ in range(workers)))

    @staticmethod
    async def _drain(pending: Iterator[AccountWatcher], pace: Pace) -> None:
        for watcher in pending:
            await pace.turn()
            try:
                await watcher.refresh()
            except Exception as exc:  # a bug in one account's re-read: the others are still re-read
                log.error("snapshot_crashed", account=watcher.name, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0)


class Pace:
    """Starts spaced ``spacing`` seconds apart, shared by the round's workers: :meth:`turn` waits
    for the next free start (the first at once; none when the round is already behind)."""

    def __init__(
        self, spacing: float, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        self.spacing, self._clock, self._sleep = spacing, clock, sleep
        self._next: float | None = None

    async def turn(self) -> None:
        now = self._clock()
        at = now if self._next is None else max(now, self._next)
        self._next = at + self.spacing
        if at > now:
            await self._sleep(at - now)


class Resync:
    """Exact recomputation of the book in slices, giving ticks a turn between them."""

    name = "resync"

    def __init__(self, book: AccountBook, period: float) -> None:
        self.book, self.period = book, period

    async def run(self) -> None:
        units = self.book.units()
        drift = 0.0
        for start in range(0, len(units), RESYNC_SLICE):
            drift = max(drift, self.book.resync(units[start : start + RESYNC_SLICE]))
            await asyncio.sleep(0)
        if drift > 1e-9:
            log.info("book_resynced", max_relative_drift=drift)


class CatalogRefresh:
    """Re-read the shared symbol catalog through any loaded account's client; the market stream then
    follows the symbols the re-routed units need (a pair halted later reaches the price router)."""

    name = "catalog"

    def __init__(
        self, watchers: list[AccountWatcher], catalog: SharedCatalog, resubscribe: Callable[[], None]
    ) -> None:
        self.watchers, self.catalog, self.resubscribe = watchers, catalog, resubscribe
        self.period = catalog.max_age

    async def run(self) -> None:
        rest = next((w.rest for w in self.watchers if w.loaded and w.rest is not None), None)
        if rest is None or not await self.catalog.refresh(rest):
            return
        self.resubscribe()


class HistorySample:
    """A level sample of every unit for the status page's charts (blind units marked)."""

    name = "history"

    def __init__(self, recorder: Recorder, engine: Engine, period: float) -> None:
        self.recorder, self.engine, self.period = recorder, engine, period

    async def run(self) -> None:
        await self.recorder.sample(self.engine.stale)


class OutboxPrune:
    """Finished outbox rows (sent, coalesced, dropped) older than ``keep`` seconds deleted, so the state
    file does not grow for ever. Safe for exactly-once: a unit's crossings keep counting up while its
    alert state lives, so a pruned dedupe key never comes again (forgotten state takes its rows
    along: ``Store.forget_alert_state``)."""

    name = "outbox_prune"

    def __init__(self, store: Store, keep: float, period: float, clock: Callable[[], float]) -> None:
        self.store, self.keep, self.period, self.clock = store, keep, period, clock

    async def run(self) -> None:
        try:
            pruned = self.store.prune(self.clock() - self.keep)
        except (StateError, sqlite3.Error, OSError) as exc:  # logged; the next hour tries again
            log.error("outbox_prune_failed", error=str(exc))
            return
        if pruned:
            log.info("outbox_pruned", rows=pruned, older_than_days=round(self.keep / 86400, 1))


# -- the jobs of one daemon -----------------------------------------------------------------------
def every_second(
    parts: Components,
    notifier: Notifier,
    send_notices: Callable[[], Awaitable[None]],
    load_missing: Callable[[], None],
    on_ready: Callable[[], None],
    period: float = 1.0,
) -> EverySecond:
    """The once-a-second job of the daemon made of ``parts`` (``load_missing``: retry the accounts
    not loaded; ``on_ready``: said once, at READY=1; ``period``: seconds between runs)."""
    book, engine, market, watchers = parts.book, parts.engine, parts.market, parts.watchers

    def resubscribe() -> None:
        load_missing()
        market.set_symbols(book.symbols_needed())

    alerts = parts.config.alerts
    return EverySecond(
        notices=parts.notices, send_notices=send_notices, engine=engine,
        staleness=Staleness(book, engine, watchers, ages=market.ages,
                            refused=lambda: market.rejected, limit=alerts.stale_after),
        opinions_sweep=parts.opinions.sweep, resubscribe=resubscribe,
        readiness=Readiness(watchers, notifier, on_ready),
        sweep=MetricsSweep(book, parts.metrics, alerts.restore_target),
        status=SystemdStatus(watchers, notifier, Summary(book, engine)), period=period,
    )  # fmt: skip


def slower_jobs(parts: Components) -> list[Job]:
    """Re-reads, resync, catalog, history and outbox pruning, each at its own period."""
    book, market, exchange = parts.book, parts.market, parts.config.exchange
    return [
        Snapshots(parts.watchers, exchange.snapshot_interval),
        Resync(book, exchange.resync_interval),
        CatalogRefresh(parts.watchers, parts.catalog, lambda: market.set_symbols(book.symbols_needed())),
        HistorySample(parts.recorder, parts.engine, HISTORY_EVERY),
        OutboxPrune(parts.store, OUTBOX_KEEP, OUTBOX_PRUNE_EVERY, time.time),
    ]
