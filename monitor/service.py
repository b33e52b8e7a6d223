"""The daemon's lifecycle: ``startup()`` → run until a signal → ``shutdown()``.

Wires config → exchange clients → account book → engine → alert policy → dispatcher, plus the
scheduler jobs, the HTTP surface and the systemd notify protocol. A signal only sets an event;
shutdown stops reading, drains the outbox within a bound, then cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor import __version__
from monitor.alerts.policy import AlertEvent, AlertPolicy
from monitor.config.model import EXIT_CONFIG, Config, ConfigError, exposed_files
from monitor.config.shard import parse_shard
from monitor.endpoints import open_endpoints
from monitor.exchange.binance import MarketStream, RetryPolicy, StreamState, UserDataStream
from monitor.exchange.supervisor import Backoff
from monitor.exchange.userdata_pool import PER_SESSION, UserDataPool
from monitor.leftovers import expire_notices
from monitor.logs import configure_logging, register_secrets
from monitor.notify.dispatcher import Dispatcher, NotifyRoute, default_backoff
from monitor.notify.messages import render
from monitor.notify.silence_stage import STORE_KEY as SILENCES_KEY
from monitor.notify.silence_stage import FiringMap, SilenceApi, SilenceCollector, SilenceRegistry
from monitor.ops import heap
from monitor.ops.heartbeat import HeartbeatStats, heartbeat_loop
from monitor.ops.history import FILE_NAME as HISTORY_FILE
from monitor.ops.history import History
from monitor.ops.http import HttpServer, start_http
from monitor.ops.loop_lag import LoopLag
from monitor.ops.metrics import Metrics
from monitor.ops.page import Feed, page_routes
from monitor.ops.recorder import Recorder
from monitor.ops.sdnotify import Notifier, watchdog_interval, watchdog_loop
from monitor.ops.status_data import annotate, firing_map, liquidation_bar, rule_protected
from monitor.ops.status_extras import enrich
from monitor.risk.book import AccountBook
from monitor.risk.report import UnitReport
from monitor.store import StateError, Store
from monitor.watch.accounts import AccountWatcher, Endpoints, build_watchers
from monitor.watch.catalog import CATALOG_MAX_AGE, SharedCatalog
from monitor.watch.engine import Engine, RoundRobin
from monitor.watch.notices import Notice
from monitor.watch.opinion_feed import ExchangeOpinions
from monitor.watch.reshard import Handoff
from monitor.watch.routing import SILENT_ROUTE_FIX, route_table

log = structlog.get_logger(__name__)

EXIT_OK = 0
# Exit codes systemd's RestartPreventExitStatus= can tell apart (deploy/systemd): a restart cannot
# cure an unusable state file (3) nor a bad config (78, EXIT_CONFIG, also: every key refused for its
# permissions); it can cure a port still held by the previous instance (69, EX_UNAVAILABLE). An
# exchange unreachable at start ends nothing: each account is retried in the background.
EXIT_STATE = 3
EXIT_UNAVAILABLE = 69
DRAIN_SECONDS = 10.0
SNAPSHOT_CONCURRENCY = 4
RESYNC_SLICE = 100
SWEEP_YIELD_EVERY = 4  # units reported between event-loop turns in the per-second metrics sweep
PUMP_BATCH = 32  # alert events written to the outbox in one transaction, at most
HISTORY_EVERY = 5.0  # seconds between level samples for the status page's charts (monitor.ops.history)


class StartupError(Exception):
    """The daemon cannot start; the message is one line saying why."""


class StateStartupError(StartupError):
    """The state file is corrupt, locked, unwritable or too new: restarting will not help."""


class RefusedStartupError(StartupError):
    """Every account's key was refused for its permissions: a config matter, restarting will not help."""


# Loading an account that failed: jittered backoff capped at a minute (a few requests of weight 1
# each); its first attempt at start gives up quickly, so the daemon starts without the exchange.
LOAD_BACKOFF = Backoff(initial=2.0, maximum=60.0, reset_after=float("inf"))
# The price and user-data feeds are a handful of connections whatever the number of accounts (a
# market connection per 1,024 symbols, a WebSocket API session per 1,000 subscriptions): retried at
# least every 10 s, a restored network ends their blindness within seconds, at most 30 attempts per
# 5 min each against Binance's 300 per IP. The per-account risk streams keep the 30 s default.
FEED_BACKOFF = Backoff(maximum=10.0)
QUICK_LOAD = RetryPolicy(attempts=2, backoff=Backoff(initial=0.5, maximum=2.0), quiet=True)
KEY_CHECKS_PER_SECOND = 4.0  # all accounts together: 240 weight/min, 2 % of the 12,000 SAPI IP budget
KEY_CHECK_MIN_INTERVAL = 5.0
START_EXTEND_SECONDS = 30.0  # EXTEND_TIMEOUT_USEC while accounts wait for the exchange, renewed each second


class Service:
    """One running daemon. Tests build it directly with short intervals; the CLI uses ``run_daemon``."""

    def __init__(
        self,
        config: Config,
        config_path: Path,
        *,
        clock: Any = time.time,
        notify_backoff: Callable[[int], float] = default_backoff,
        load_backoff: Backoff = LOAD_BACKOFF,
        key_check_interval: float | None = None,
        opinion_grace: float = 5.0,
        catalog_interval: float = CATALOG_MAX_AGE,
        per_session: int = PER_SESSION,
    ) -> None:
        self._per_session = per_session  # user-data subscriptions per WebSocket API session
        self.config = config
        self._load_backoff = load_backoff
        self._key_check_interval = key_check_interval  # None: scaled to the number of accounts
        self._notify_backoff = notify_backoff  # seconds before delivery retry n (tests shrink it)
        self.config_path = config_path
        self.clock = clock
        self.metrics = Metrics(version=__version__)
        shard = parse_shard(config.shard) if config.shard else None
        self.metrics.not_loaded_source(self.not_loaded)  # blind in unit_state, never absent
        self.handoff = Handoff(shard, self.metrics.registry)  # re-sharding: monitor/watch/reshard.py
        self.book = AccountBook(
            quote=config.exchange.quote,
            stablecoins=config.exchange.stablecoins,
            pinned=config.exchange.pinned,
        )
        self.metrics.units_source(self.book.units)  # a unit that leaves the book leaves /metrics
        self.stop_requested = asyncio.Event()
        self.watchers: list[AccountWatcher] = []
        self.notices: list[Notice] = []
        self.endpoints: Endpoints | None = None
        self.store: Store | None = None
        self.policy: AlertPolicy | None = None
        self.engine: Engine | None = None
        self.dispatcher: Dispatcher | None = None
        self.market: MarketStream | None = None
        self.userdata: UserDataPool | None = None
        self.http: HttpServer | None = None
        self.silences: SilenceRegistry | None = None
        self.heartbeat = HeartbeatStats()
        self.recorder: Recorder | None = None
        self.notifier = Notifier.from_env()
        self.scheduler = AsyncIOScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._exit_stack = contextlib.AsyncExitStack()
        self._ready = False
        self.loop_lag = LoopLag(self.metrics.observe_loop_lag)
        self._market_task: asyncio.Task[Any] | None = None
        self._started_at = time.monotonic()
        self._housekeeping_at = time.monotonic()
        self._metrics_sweep = RoundRobin(50)
        self._wedged_after = max(60.0, 4 * config.alerts.stale_after)
        self.opinions = ExchangeOpinions(
            self._bars_of,
            self.metrics.registry,
            grace=opinion_grace,
            clock=clock,
            fallback_routes=config.route_names,
        )
        self._loading: dict[str, asyncio.Task[Any]] = {}
        self._saved_units: frozenset[str] = frozenset()  # units with alert state saved at start
        self.catalog = SharedCatalog(self.book, max_age=catalog_interval)  # one exchangeInfo a daemon
        self._risk_tasks: dict[str, asyncio.Task[Any]] = {}
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------------
    async def startup(self) -> None:
        """Connect everything; raises StartupError with one line when the daemon cannot run."""
        config = self.config
        for path in exposed_files(config, self.config_path):
            log.warning("file_readable_by_others", file=str(path), fix=f"chmod 600 {path}")
        for route in route_table(config).silent:  # `margin-monitor check` prints the whole table
            log.warning("route_gets_no_margin_alert", route=route, fix=SILENT_ROUTE_FIX)
        try:
            self.store = Store(config.state_dir)
        except StateError as exc:
            raise StateStartupError(str(exc)) from None
        if self.store.lost:
            log.error("alert_state_lost", reason=self.store.lost)
            self.notices.append(
                Notice(
                    "margin-monitor",
                    "state_lost",
                    "margin-monitor: alert history lost",
                    f"The {self.store.lost}: which alerts were already sent is unknown. Every alert "
                    "that holds now is sent again once, as new; nothing is missed.",
                )
            )
        self.endpoints = await self._endpoints()
        self.watchers = build_watchers(
            self.config, self.config_path, self.endpoints, self.book, self._on_state, self.notices,
            self.catalog,
        )  # fmt: skip
        register_secrets(s for w in self.watchers for s in w.secret_values())
        self.metrics.drift_source(lambda: {u: d for w in self.watchers for u, d in w.drift.items()})
        for watcher in self.watchers:
            watcher.on_exchange_word = self.opinions.heard
        results = await asyncio.gather(*(w.load(QUICK_LOAD) for w in self.watchers), return_exceptions=True)
        for watcher, result in zip(self.watchers, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "account_load_crashed", account=watcher.name, error=f"{type(result).__name__}: {result}"
                )
        loaded = [w for w in self.watchers if w.loaded]
        if self.watchers and not any(w.enabled for w in self.watchers):
            await self._notify_before_exit()
            raise RefusedStartupError(
                "no account could be loaded: every key was refused; see the errors above"
            )

        self.policy = AlertPolicy(self._default_policy(), {})
        for watcher in self.watchers:
            watcher.configure_policy(self.policy)
        try:
            saved = self.store.load_alert_state()
        except StateError as exc:
            raise StateStartupError(str(exc)) from None
        departed = self.handoff.departed(saved)  # accounts another shard owns now
        departed += [u for u in saved if u not in departed and not config.configures(u)]  # left the config
        if departed:
            self.store.forget_alert_state(departed)
            gone = frozenset(departed)
            saved = {unit: blob for unit, blob in saved.items() if unit not in gone}
        for unit, reason in self.policy.import_state(saved).items():
            log.warning("alert_state_skipped", unit=unit, reason=reason)
        self._saved_units = frozenset(saved)  # for accounts loaded later (monitor/watch/reshard.py)
        self.handoff.adopt(self.policy, self.book.units(), saved)
        self.silences = self._silence_registry(self.store)
        self.engine = Engine(
            self.book, self.policy, clock=self.clock, restore_target=config.alerts.restore_target
        )
        self.opinions.engine = self.engine
        for watcher in self.watchers:
            watcher.engine = self.engine

        try:  # before delivery of the outbox starts: notices of an earlier run that no longer hold
            expire_notices(self.store, {w.name for w in loaded})
        except StateError as exc:
            raise StateStartupError(str(exc)) from None
        self.dispatcher = Dispatcher(
            self._routes(), self.store, timeout=config.notify.timeout, backoff=self._notify_backoff
        )
        await self.dispatcher.start()
        await self._send_notices()  # what is wrong at start (state lost, accounts not loaded) first
        self.metrics.route_source(self.dispatcher.stats)

        self.market = MarketStream(
            self.endpoints.stream_url,
            self.book.symbols_needed(),
            self._on_prices,
            on_state=self._on_state,
            silence=max(5.0, config.alerts.stale_after),
            backoff=FEED_BACKOFF,
        )
        self._market_task = self._spawn(self.market.run(), "market")
        self.metrics.feed_source("market", self.market.stats)
        subscriptions = [sub for w in self.watchers for sub in w.subscriptions()]
        by_account = {w.name: w for w in self.watchers}
        ws_api_url = self.endpoints.ws_api_url
        self.userdata = UserDataPool(
            subscriptions,
            lambda session, subs: UserDataStream(
                ws_api_url,
                subs,
                lambda event: self._route_event(by_account, event),
                on_reconnected=lambda account, symbol: by_account[account].on_reconnected(account, symbol),
                on_state=self._on_state,
                session=session,
                backoff=FEED_BACKOFF,
            ),
            per_session=self._per_session,
        )  # as many WebSocket API sessions as Binance's subscription limits need
        self._spawn(self.userdata.run(), "userdata")
        key_interval = self._key_check_interval or max(
            KEY_CHECK_MIN_INTERVAL, len(self.watchers) / KEY_CHECKS_PER_SECOND
        )
        for watcher in self.watchers:
            if watcher.loaded and watcher.cfg.cross:
                self._risk_tasks[watcher.name] = self._spawn(
                    watcher.run_risk_stream(), f"risk-{watcher.name}"
                )
            self._spawn(watcher.refresh_loop(), f"refresh-{watcher.name}")
            self._spawn(watcher.watch_key(key_interval), f"key-{watcher.name}")
        self._load_missing()
        self._spawn(self._pump(), "pump")
        self._spawn(self.loop_lag.run(), "lag-probe")
        interval = watchdog_interval()
        if interval:
            self._spawn(watchdog_loop(self.notifier, self.healthy, interval), "watchdog")
        if config.heartbeat is not None:
            beat = config.heartbeat
            self._spawn(heartbeat_loop(beat.url.get_secret_value(), beat.every, self.beating,
                                       timeout=beat.timeout, stats=self.heartbeat), "heartbeat")  # fmt: skip

        self.scheduler.add_job(self._every_second, "interval", seconds=1, id="timers")
        self.scheduler.add_job(
            self._refresh_snapshots, "interval", seconds=config.exchange.snapshot_interval, id="snapshots"
        )
        self.scheduler.add_job(self._resync, "interval", seconds=config.exchange.resync_interval, id="resync")
        self.scheduler.add_job(
            self._refresh_catalog, "interval", seconds=self.catalog.max_age, id="catalog"
        )  # a pair halted later reaches the price router (monitor/watch/catalog.py)
        self.recorder = Recorder(History(config.state_dir / HISTORY_FILE), self.book, self.clock)
        self.scheduler.add_job(self._record_history, "interval", seconds=HISTORY_EVERY, id="history")
        self.scheduler.start()

        if config.http.enabled:
            token = config.http.token.get_secret_value() if config.http.token else None
            try:
                self.http = await start_http(
                    config.http.host,
                    config.http.port,
                    metrics=self.metrics,
                    status=self.status,
                    ready=self.ready,
                    token=token,
                    routes=page_routes(self._page_feed()),
                    silences=self.silence_api(),
                )
            except OSError as exc:
                raise StartupError(f"http.listen {config.http.listen}: cannot bind: {exc.strerror}") from None
        self.notifier.status(
            "starting: waiting for prices" if loaded else "starting: waiting for the exchange"
        )
        log.info(
            "daemon_started",
            accounts=len(loaded),
            units=len(self.book.units()),
            not_loaded=[w.name for w in self.watchers if not w.loaded],
            shard=config.shard or "all",
        )

    async def run(self) -> None:
        """Wait until a stop is requested."""
        await self.stop_requested.wait()

    async def shutdown(self) -> None:
        """Stop reading, drain notifications within a bound, persist state, cancel the rest."""
        self._stopping = True  # feeds going down from here on were asked to: logged at info
        self.notifier.stopping()
        log.info("daemon_stopping")
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.market is not None:
            for task in list(self._tasks):
                if task.get_name() != "pump":
                    task.cancel()
        if self.engine is not None and self.dispatcher is not None:
            await self._flush_engine()
            await self.dispatcher.drain(DRAIN_SECONDS)
            await self.dispatcher.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.policy is not None and self.store is not None:
            try:
                self.store.save_alert_state(self.policy.export_state())
            except StateError as exc:  # the state file died while running: still close the rest
                log.error("alert_state_save_failed", error=str(exc))
        for watcher in self.watchers:
            await watcher.close()
        if self.http is not None:
            await self.http.stop()
        await self._exit_stack.aclose()
        if self.store is not None:
            self.store.close()
        if self.recorder is not None:
            self.recorder.history.close()
        self.notifier.close()
        log.info("daemon_stopped")

    # -- surfaces -------------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """The ``status --json`` list: one dict per unit."""
        ages = self.market.ages() if self.market is not None else {}
        units = [self.unit_status(unit, ages) for unit in sorted(self.book.units())]
        return units + self.not_loaded()

    def not_loaded(self) -> list[dict[str, Any]]:
        """The blind ``status`` entries (with the reason) of the accounts not loaded now: on every
        surface (status, console, page, ``/metrics``) as blind, never absent."""
        quote = self.config.exchange.quote
        return [w.blind_entry(quote) for w in self.watchers if not w.loaded]

    def unit_status(self, unit: str, ages: dict[str, float] | None = None) -> dict[str, Any]:
        """One unit's ``status --json`` dict: its report (flagged ``settling`` while its balances are
        unconfirmed, see ledger.py) plus positions and stress table (:mod:`monitor.ops.status_extras`),
        its alerts, silences and data age (:mod:`monitor.ops.status_data`)."""
        if self.engine is not None:
            report = self.engine.report(unit).to_json()
        else:
            report = self.book.report(unit, restore_target=self.config.alerts.restore_target).to_json()
        data = enrich(self.book, unit, report, self.recorder.betas if self.recorder is not None else {})
        if ages is None:
            ages = self.market.ages() if self.market is not None else {}
        snapshot = next((w.last_snapshot for w in self.watchers if unit in w.units), 0.0)
        return annotate(
            data, self.policy, self.silences,
            blind=self.engine is not None and unit in self.engine.stale,
            price_ages=[ages[s] for s in self.book.unit_symbols(unit) if s in ages],
            snapshot_age=self.clock() - snapshot if snapshot else None,
        )  # fmt: skip

    def beating(self) -> bool:
        """For the heartbeat (dead man's switch): every account fresh and the loop healthy."""
        return self.ready() and self.healthy()

    def silence_api(self) -> SilenceApi | None:
        """What the HTTP API's /silences endpoints call (None before startup)."""
        if self.silences is None or self.policy is None:
            return None
        policy = self.policy

        def rules() -> set[str]:
            return {r.name for u in self.book.units() for r in policy.config_for(u).rules} | {"blind"}

        return SilenceApi(self.silences, self._firing, self.book.units, rules)

    def ready(self) -> bool:
        """Every account loaded and every unit fresh."""
        return self._ready and self.engine is not None and not self.engine.stale

    def healthy(self) -> bool:
        """For the systemd watchdog: nothing wedged. An exchange outage is not a reason to restart
        (the feeds retry on their own; a restart loop would end in a failed unit): withheld only when
        the loop lags, the housekeeping job stopped, or the market feed's task died or sits connected
        but silent far beyond its own watchdog."""
        if self.loop_lag.worst > 5.0 or self.market is None or self._market_task is None:
            return False
        if self._market_task.done() or time.monotonic() - self._housekeeping_at > 15.0:
            return False
        stats = self.market.stats()
        last = stats.last_message_at
        silent_for = time.monotonic() - (last if last is not None else self._started_at)
        return not (stats.connected and silent_for > self._wedged_after)

    # -- internals ------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("task_failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}")

    def _route_event(self, by_account: dict[str, AccountWatcher], event: Any) -> None:
        if isinstance(event, StreamState):
            self._on_state(event)
            return
        watcher = by_account.get(getattr(event, "account", ""))
        if watcher is not None:
            watcher.on_event(event)

    def _on_prices(self, prices: dict[str, float]) -> None:
        assert self.engine is not None
        self.engine.on_prices(prices, sent_at=time.time())

    def _on_state(self, state: StreamState) -> None:
        if state.fatal and state.name.startswith("userdata:"):
            account = state.name.split(":")[1]
            for watcher in self.watchers:
                if watcher.name == account:
                    watcher.disable(state.reason)
        if state.up:
            log.info("feed_up", feed=state.name)
        elif self._stopping:  # a requested stop closes every feed: expected, not a warning
            log.info("feed_down", feed=state.name, reason=state.reason, fatal=state.fatal, stopping=True)
            self.metrics.feed_connected(state.name, False)
            return
        else:
            log.warning("feed_down", feed=state.name, reason=state.reason, fatal=state.fatal)
            self.metrics.feed_reconnect(state.name)
        self.metrics.feed_connected(state.name, state.up)

    async def _pump(self) -> None:
        """Hand the engine's events to the dispatcher, with a message each trader can act on."""
        assert self.engine is not None and self.dispatcher is not None and self.policy is not None
        assert self.store is not None
        outbox = self.engine.outbox
        while True:
            # a burst (a crash crossing hundreds of units) goes to the outbox in transactions of up to
            # PUMP_BATCH events, with a turn of the event loop between them for ticks and sends
            batch = [await outbox.get()]
            while len(batch) < PUMP_BATCH and not outbox.empty():
                batch.append(outbox.get_nowait())
            # state saved only once every queued event is in the outbox: a state that lags the outbox
            # re-fires the same dedupe key after a crash (ignored), one that leads it would lose alerts
            policy = self.policy
            state = policy.export_state(policy.take_dirty()) if outbox.empty() else None
            messages = [
                (item, self.handoff.annotate(item.event, render(item.event, item.report))) for item in batch
            ]
            await self.dispatcher.enqueue_many(  # the silence stage: held-back messages are not enqueued
                [
                    (item.event, msg)
                    for item, msg in messages
                    if not self._silenced(item.event, item.report, msg.title)
                ],
                alert_state=state,
            )
            now = time.time()
            for item in batch:
                if self.recorder is not None:  # an append; written by the history job (silenced or not)
                    self.recorder.note(item.event)
                if item.tick_time is not None:
                    self.metrics.observe_latency(now - item.tick_time)
            await self._send_notices()
            await asyncio.sleep(0)

    async def _flush_engine(self) -> None:
        assert self.engine is not None and self.dispatcher is not None
        while not self.engine.outbox.empty():
            item = self.engine.outbox.get_nowait()
            message = self.handoff.annotate(item.event, render(item.event, item.report))
            if not self._silenced(item.event, item.report, message.title):
                await self.dispatcher.enqueue_message(item.event, message)
        await self._send_notices()

    def _silence_registry(self, store: Store) -> SilenceRegistry:
        def load() -> Any:
            try:
                return store.get_json(SILENCES_KEY)
            except StateError as exc:
                log.error("silences_load_failed", error=str(exc))
                return []

        def save(value: Any) -> None:
            try:
                store.put_json(SILENCES_KEY, value)
            except StateError as exc:  # kept in memory; said once per change
                log.error("silences_save_failed", error=str(exc))

        registry = SilenceRegistry(load, save, clock=self.clock)
        self.metrics.registry.register(SilenceCollector(registry))
        return registry

    def _silenced(self, event: AlertEvent, report: UnitReport, title: str) -> bool:
        """The silence stage: True when a silence holds this message back (logged, never sent)."""
        if self.silences is None or self.policy is None:
            return False
        protected = rule_protected(self.policy, event.unit, event.rule, liquidation_bar(report))
        return self.silences.hold(event, title, protected, self._firing)

    def _firing(self) -> FiringMap:
        assert self.policy is not None
        return firing_map(self.policy, self.book, self.config.alerts.restore_target)

    async def _send_notices(self) -> None:
        """Key refusals, revocations and risky keys go to every route."""
        assert self.dispatcher is not None
        while self.notices:
            notice = self.notices.pop(0)
            event = notice.event(
                self._blind_routes() if notice.blind else self.config.route_names(), self.clock()
            )
            await self.dispatcher.enqueue(event, notice.title, notice.body, notify_type="failure")

    def _routes(self) -> dict[str, NotifyRoute]:
        routes = {
            name: NotifyRoute(
                name=name,
                urls=tuple(u.get_secret_value() for u in route.urls),
                max_per_window=route.max_per_window,
                window=route.window,
            )
            for name, route in self.config.notify.routes.items()
        }
        register_secrets(u for r in routes.values() for u in r.urls)
        return routes

    async def _notify_before_exit(self) -> None:
        """No account can be watched (keys refused or rejected): still tell the trader why, within
        :data:`DRAIN_SECONDS`, before the daemon exits; what is not delivered stays in the outbox."""
        if not self.notices or self.store is None:
            return
        self.dispatcher = Dispatcher(self._routes(), self.store, timeout=self.config.notify.timeout)
        try:
            await self.dispatcher.start()
            await self._send_notices()
            await self.dispatcher.drain(DRAIN_SECONDS)
        finally:
            await self.dispatcher.stop()
            self.dispatcher = None

    def _page_feed(self) -> Feed:
        def firing(unit: str) -> dict[str, str]:
            return self.policy.firing(unit) if self.policy is not None else {}

        def age(unit: str) -> float | None:
            if unit not in self.book.units():
                return None
            ages = [self.book.prices.age(s) for s in self.book.unit_symbols(unit)]
            known = [a for a in ages if a is not None]
            return None if len(known) < len(ages) else max(known, default=0.0)

        return Feed(
            unit_ids=self.book.units,
            status_of=self.unit_status,
            firing=firing,
            blind=lambda: set(self.engine.stale) if self.engine is not None else set(),
            age=age,
            history=self.recorder.history if self.recorder is not None else None,
            clock=self.clock,
            live=lambda unit: (self.book.is_priced(unit), self.book.level(unit)),
            not_loaded=self.not_loaded,
        )

    async def _record_history(self) -> None:
        assert self.recorder is not None
        await self.recorder.sample(self.engine.stale if self.engine is not None else ())

    async def _every_second(self) -> None:
        assert self.engine is not None and self.market is not None
        if self.notices:  # a key refused or revoked while no alert is flowing: tell the trader now
            await self._send_notices()
        self.engine.tick_timers()
        ages = self.market.ages()
        limit = self.config.alerts.stale_after
        stale_symbols = {s for s, age in ages.items() if age > limit}
        stale_units: set[str] = set()
        for watcher in self.watchers:
            stale_units |= watcher.stale_units(stale_symbols, limit)
        stale_units |= {u for u in self.book.units() if self.book.unvalued(u)}  # no price, no level
        self.engine.set_staleness(
            stale_units, self._blind_reasons(stale_units - self.engine.stale, stale_symbols)
        )
        self.opinions.sweep()
        self._load_missing()
        self.market.set_symbols(self.book.symbols_needed())
        # decided now, on this second's stale set: the sweep below yields, and an account that finishes
        # loading meanwhile has units with no price yet that the set does not hold (no READY=1 for them)
        becomes_ready = (
            not self._ready and not stale_units and all(w.loaded for w in self.watchers if w.enabled)
        )
        # exact reports cost ~0.1-0.3 ms a unit: a bounded slice per second (all units when few),
        # yielding every few units so ticks and alerts never wait behind the whole slice (bench/latency.py)
        for n, unit in enumerate(self._metrics_sweep.take(self.book.units()), start=1):
            self.metrics.observe_unit(
                self.book.report(unit, restore_target=self.config.alerts.restore_target)
            )
            if n % SWEEP_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        if becomes_ready:
            self._ready = True
            # start-up's objects live as long as the daemon: out of the collector's walks, and its
            # temporaries' memory back to the system (monitor/ops/heap.py; once)
            settled = heap.settle()
            self.notifier.ready()
            log.info("daemon_ready", heap=settled)
            self._say_what_is_ahead()
        waiting = [w for w in self.watchers if w.enabled and not w.loaded]
        if waiting and not self._ready:
            # READY=1 waits for the exchange; systemd's TimeoutStartSec must not end that wait
            self.notifier.extend_timeout(START_EXTEND_SECONDS)
            problems = ", ".join(f"{w.name}: {w.problem.kind if w.problem else 'loading'}" for w in waiting)
            self.notifier.status(f"waiting for the exchange ({problems})")
        else:
            self.notifier.status(self._summary())
        self._housekeeping_at = time.monotonic()

    def _say_what_is_ahead(self) -> None:
        """On the embedded simulator, one line at ready on stdout (beside console:// alerts) saying
        what the scenario is about to do: ``replaying a 40 % crash; first alert in ~10 s; …``."""
        if self.config.exchange.kind != "simulator":
            return  # on Binance there is nothing to preview, and no simulator to import
        from monitor.demo import preview

        ahead = preview(self.config, self.config_path)
        if ahead is not None:
            print(ahead.line(time.monotonic() - self._started_at), flush=True)

    def _load_missing(self) -> None:
        """Keep retrying every account not loaded (down exchange at start, key revoked mid-run)."""
        for watcher in self.watchers:
            task = self._loading.get(watcher.name)
            if watcher.loaded or not watcher.enabled or (task is not None and not task.done()):
                continue
            self._loading[watcher.name] = self._spawn(self._load_later(watcher), f"load-{watcher.name}")

    async def _load_later(self, watcher: AccountWatcher) -> None:
        """Load ``watcher`` with backoff, then watch it like an account loaded at start."""
        if not await watcher.load_until_loaded(self._load_backoff, QUICK_LOAD):
            return
        assert self.policy is not None and self.engine is not None and self.userdata is not None
        watcher.configure_policy(self.policy)
        # an account loaded late (exchange down at start) is adopted as one loaded at start would
        # have been: its units without saved state fire what already holds, counted as takeovers
        saved = dict.fromkeys(self._saved_units)
        self.handoff.adopt(self.policy, set(watcher.units) - self.handoff.adopted, saved)
        active = {s.label for s in self.userdata.subscriptions if not s.failed}
        self.userdata.add([s for s in watcher.subscriptions() if s.label not in active])
        risk = self._risk_tasks.get(watcher.name)
        if watcher.cfg.cross and (risk is None or risk.done()):
            self._risk_tasks[watcher.name] = self._spawn(watcher.run_risk_stream(), f"risk-{watcher.name}")
        for uid in watcher.units:
            self.engine.evaluate(uid)
        if self.market is not None:
            self.market.set_symbols(self.book.symbols_needed())  # its prices start flowing now

    def _blind_routes(self) -> tuple[str, ...]:
        alerts = self.config.alerts
        return alerts.blind_routes or alerts.default_routes or self.config.route_names()

    def _bars_of(self, unit: str) -> dict[str, float]:
        """The bars of ``unit`` by name (empty when unknown)."""
        _, _, rest = unit.partition(":")
        account, _, symbol = rest.partition(":")
        for watcher in self.watchers:
            if watcher.name == account:
                bars = watcher.bars.get(symbol) or (None if symbol else watcher.bars.get(""))
                return {} if bars is None else {n: float(v) for n, v in bars.levels.items()}
        return {}

    def _blind_reasons(self, units: set[str], stale_symbols: set[str]) -> dict[str, str]:
        """Why each newly blind unit is blind, in one line the trader can act on."""
        assert self.market is not None
        refused = self.market.rejected
        limit = self.config.alerts.stale_after
        reasons: dict[str, str] = {}
        for unit in units:
            symbols = self.book.unit_symbols(unit) if unit in self.book.units() else set()
            unvalued = self.book.unvalued(unit) if unit in self.book.units() else None
            if unvalued:
                reasons[unit] = unvalued
            elif symbols & refused:
                names = ", ".join(sorted(symbols & refused))
                reasons[unit] = f"Binance refuses to stream {names} (unknown or delisted symbol)"
            elif symbols & stale_symbols:
                names = ", ".join(sorted(symbols & stale_symbols))
                reasons[unit] = f"no price for {names} for over {limit:g} s (market stream down or silent)"
            elif self.engine is not None and unit in self.engine.settling:
                reasons[unit] = (
                    f"balances unconfirmed: the balance and liability views have disagreed for over "
                    f"{limit:g} s (a change the streams and REST do not yet both show; re-reading)"
                )
            else:
                reasons[unit] = "the account could not be re-read from Binance (REST failing)"
        return reasons

    def _summary(self) -> str:
        units = self.book.units()
        levels = []
        for unit in heapq.nsmallest(5, units):  # only five are shown: not a format of every unit each second
            state, _ = self.book.state(unit)
            level = self.book.level(unit)
            shown = f"{level:.3f}" if level is not None and state in ("known", "approximate") else state
            levels.append(f"{unit}={shown}")
        stale = len(self.engine.stale) if self.engine else 0
        return f"{len(units)} units, {stale} blind: " + ", ".join(levels)

    async def _refresh_snapshots(self) -> None:
        """Re-read every account, a few at a time: 1,000 replies parsed back to back would hold the
        loop for seconds, delaying ticks."""
        gate = asyncio.Semaphore(SNAPSHOT_CONCURRENCY)

        async def one(watcher: AccountWatcher) -> None:
            async with gate:
                await watcher.refresh()
                await asyncio.sleep(0)

        await asyncio.gather(*(one(w) for w in self.watchers), return_exceptions=True)

    async def _resync(self) -> None:
        """Exact recomputation of the book in slices, giving ticks a turn between them."""
        units = self.book.units()
        drift = 0.0
        for start in range(0, len(units), RESYNC_SLICE):
            drift = max(drift, self.book.resync(units[start : start + RESYNC_SLICE]))
            await asyncio.sleep(0)
        if drift > 1e-9:
            log.info("book_resynced", max_relative_drift=drift)

    async def _refresh_catalog(self) -> None:
        """Re-read the shared symbol catalog through any loaded account's client; the market stream
        then follows the symbols the re-routed units need."""
        rest = next((w.rest for w in self.watchers if w.loaded and w.rest is not None), None)
        if rest is None or not await self.catalog.refresh(rest):
            return
        if self.market is not None:
            self.market.set_symbols(self.book.symbols_needed())

    async def _endpoints(self) -> Endpoints:
        return await open_endpoints(self.config, self.config_path, self._exit_stack)

    def _default_policy(self) -> Any:
        from monitor.watch.ladder import policy_for_unit

        bars = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}
        return policy_for_unit(self.config.alerts, bars, self.config.route_names())


async def run_daemon(config: Config, config_path: Path) -> int:
    """Run until SIGTERM/SIGINT; a second signal forces the exit. Returns the process exit code."""
    configure_logging(config.log.format, config.log.level)
    service = Service(config, config_path)
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        log.info("signal_received", signal=signal.Signals(signum).name)
        if signals > 1:
            raise SystemExit(1)
        service.stop_requested.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await service.startup()
    except StartupError as exc:
        log.error("startup_failed", error=str(exc))
        await service.shutdown()
        if isinstance(exc, RefusedStartupError):
            return EXIT_CONFIG
        return EXIT_STATE if isinstance(exc, StateStartupError) else EXIT_UNAVAILABLE
    except ConfigError as exc:
        log.error("config_invalid", error=str(exc))
        await service.shutdown()
        return EXIT_CONFIG
    await service.run()
    await service.shutdown()
    return EXIT_OK
