"""The daemon's parts, resolved from the config once (the "config" half of uvicorn's config → server).

:func:`resolve` opens the state file, finds the exchange (or starts the simulator), builds and loads a
watcher per account, imports the saved alert state and starts delivery, in that order, and returns them
as one frozen :class:`Components`. Everything it opens is closed by the exit stack it is given, in
reverse order, so a start-up that fails half-way closes what it opened and nothing else (the alert
state is saved only once it was imported). Starting the tasks is the service's job (monitor/service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from monitor import __version__
from monitor.alerts.policy import AlertPolicy
from monitor.app.errors import RefusedStartupError, StateStartupError
from monitor.app.feeds import FeedLog, route_event
from monitor.app.first_prices import FirstPrices
from monitor.app.outflow import send_notices, silence_registry
from monitor.app.state_health import RECOVERY_HOLD, StateFileHealth
from monitor.config.model import Config, exposed_files
from monitor.config.shard import parse_shard
from monitor.endpoints import open_endpoints
from monitor.exchange.binance import MarketStream, RetryPolicy, UserDataStream
from monitor.exchange.conn_budget import ConnectionBudget, Priority
from monitor.exchange.conn_slots import LIMIT, WINDOW
from monitor.exchange.risk_group import KEYS_PER_CONNECTION
from monitor.exchange.streams import default_connect, probed_connect
from monitor.exchange.supervisor import Backoff
from monitor.exchange.userdata_pool import PER_SESSION, UserDataPool
from monitor.leftovers import expire_notices
from monitor.logs import register_secrets
from monitor.notify.dispatcher import Dispatcher, default_backoff
from monitor.notify.route import NotifyRoute
from monitor.notify.send_process import sender_for
from monitor.notify.silence_stage import SilenceRegistry, SilenceStage
from monitor.ops import heap
from monitor.ops.history import FILE_NAME as HISTORY_FILE
from monitor.ops.history import History
from monitor.ops.metrics import Metrics
from monitor.ops.recorder import Recorder
from monitor.ops.status_data import firing_map
from monitor.risk.book import AccountBook
from monitor.store import StateError, Store
from monitor.watch.accounts import AccountWatcher, Endpoints, build_watchers
from monitor.watch.catalog import CATALOG_MAX_AGE, SharedCatalog
from monitor.watch.engine import Engine
from monitor.watch.ladder import default_policy
from monitor.watch.notices import Notice
from monitor.watch.opinion_feed import ExchangeOpinions
from monitor.watch.reshard import Handoff
from monitor.watch.routing import SILENT_ROUTE_FIX, notify_routes, route_table

log = structlog.get_logger("monitor.service")

DRAIN_SECONDS = 10.0
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


@dataclass(frozen=True, slots=True)
class Options:
    """The knobs tests and benches shrink; the daemon runs on the defaults."""

    clock: Callable[[], float] = time.time
    notify_backoff: Callable[[int], float] = default_backoff  # seconds before delivery retry n
    load_backoff: Backoff = LOAD_BACKOFF
    key_check_interval: float | None = None  # None: scaled to the number of accounts
    opinion_grace: float = 5.0
    catalog_interval: float = CATALOG_MAX_AGE
    per_session: int = PER_SESSION  # user-data subscriptions per WebSocket API session
    # seconds between runs of the housekeeping job (monitor/app/periodic.py: staleness, timers,
    # metrics sweep); start-up readiness does not wait for it. Keep it well under the watchdog's 15 s
    tick: float = 1.0
    # WebSocket connection attempts allowed per window (s), all kinds together: Binance allows 300
    # per 5 min per IP (monitor/exchange/conn_slots.py); tests shrink both
    connections: tuple[int, float] = (LIMIT, WINDOW)
    state_recovery_hold: float = RECOVERY_HOLD  # s of working writes before "state file works again"
    # accounts whose Risk Data Streams share one connection (monitor/app/risk_groups.py); 1: one each
    risk_per_connection: int = KEYS_PER_CONNECTION


@dataclass(frozen=True, slots=True)
class Components:
    """Every part of one running daemon, resolved once; none is optional."""

    config: Config
    config_path: Path
    clock: Callable[[], float]
    metrics: Metrics
    book: AccountBook
    handoff: Handoff  # re-sharding: monitor/watch/reshard.py
    catalog: SharedCatalog  # one exchangeInfo a daemon
    notices: list[Notice]  # what to tell the trader about the accounts, drained onto every route
    store: Store
    state_health: StateFileHealth  # the state file failing mid-run, told to every route
    watchers: list[AccountWatcher]
    policy: AlertPolicy
    engine: Engine
    opinions: ExchangeOpinions
    silences: SilenceRegistry
    dispatcher: Dispatcher
    market: MarketStream
    userdata: UserDataPool
    recorder: Recorder
    feeds: FeedLog
    first_prices: FirstPrices  # the wanted symbols with no price yet (start-up readiness's event)
    saved_units: frozenset[str]  # units with alert state saved at start (for accounts loaded later)
    key_interval: float  # seconds between key-permission checks of one account
    connections: ConnectionBudget  # every WebSocket connection attempt takes a slot of it first


async def resolve(
    config: Config,
    config_path: Path,
    options: Options,
    stack: contextlib.AsyncExitStack,
    *,
    stopping: Callable[[], bool],
) -> Components:
    """Build and connect the daemon's parts; raises StartupError with one line when it cannot run.

    ``stopping`` says whether a stop was asked for (feeds going down are then expected)."""
    clock = options.clock
    for path in exposed_files(config, config_path):
        log.warning("file_readable_by_others", file=str(path), fix=f"chmod 600 {path}")
    for route in route_table(config).silent:  # `margin-monitor check` prints the whole table
        log.warning("route_gets_no_margin_alert", route=route, fix=SILENT_ROUTE_FIX)
    metrics = Metrics(version=__version__)
    handoff = Handoff(parse_shard(config.shard) if config.shard else None, metrics.registry)
    book = AccountBook(
        quote=config.exchange.quote, stablecoins=config.exchange.stablecoins, pinned=config.exchange.pinned
    )
    metrics.units_source(book.units)  # a unit that leaves the book leaves /metrics
    catalog = SharedCatalog(book, max_age=options.catalog_interval)
    notices: list[Notice] = []
    store = _open_store(config, notices)
    stack.callback(store.close)
    state_health = StateFileHealth(store, notices, hold=options.state_recovery_hold)
    stack.callback(state_health.close)
    metrics.state_file_source(state_health)
    endpoints = await open_endpoints(config, config_path, stack)

    watchers: list[AccountWatcher] = []
    by_name: dict[str, AccountWatcher] = {}  # filled once they are built (names are unique)
    feeds = FeedLog(metrics, watchers, stopping=stopping)
    connections = ConnectionBudget(*options.connections, on_wait=feeds.waiting)
    stack.callback(connections.close)
    heap.at_ready(heap.ConnectionsSettled(connections))  # late connections' objects frozen once settled
    metrics.connections_source(connections)
    policy = AlertPolicy(default_policy(config.alerts, config.route_names()), {})
    engine = Engine(book, policy, clock=clock, restore_target=config.alerts.restore_target)
    opinions = ExchangeOpinions(
        lambda unit: bars_of(by_name, unit), metrics.registry,
        grace=options.opinion_grace, clock=clock, fallback_routes=config.route_names,
    )  # fmt: skip
    watchers += build_watchers(
        config, config_path, endpoints, book, feeds, notices, catalog,
        engine=engine, on_exchange_word=opinions.heard, connections=connections,
    )  # fmt: skip
    by_name.update((w.name, w) for w in watchers)
    stack.push_async_callback(_close_all, watchers)
    register_secrets(s for w in watchers for s in w.secret_values())
    metrics.not_loaded_source(lambda: not_loaded(watchers, config.exchange.quote))  # blind, never absent
    metrics.drift_source(lambda: {u: d for w in watchers for u, d in w.drift.items()})
    await _load_all(watchers)
    routes = notify_routes(config)
    register_secrets(u for r in routes.values() for u in r.urls)
    if watchers and not any(w.enabled for w in watchers):
        await _tell_before_exit(notices, routes, store, config, clock)
        raise RefusedStartupError("no account could be loaded: every key was refused; see the errors above")

    for watcher in watchers:
        watcher.configure_policy(policy)
    saved = _saved_state(store, handoff, config)
    for unit, reason in policy.import_state(saved).items():
        log.warning("alert_state_skipped", unit=unit, reason=reason)
    stack.callback(_save_state, store, policy)  # from here on, shutdown saves what the policy holds
    handoff.adopt(policy, book.units(), saved)
    silences = silence_registry(store, metrics, clock)
    opinions.engine = engine  # Binance's word is decided from now on, on the imported alert state
    try:  # before delivery of the outbox starts: notices of an earlier run that no longer hold
        expire_notices(store, {w.name for w in watchers if w.loaded})
    except StateError as exc:
        raise StateStartupError(str(exc)) from None
    restore = config.alerts.restore_target
    dispatcher = Dispatcher(
        routes, store, timeout=config.notify.timeout, backoff=options.notify_backoff,
        silence=SilenceStage(silences, lambda: firing_map(policy, book, restore)),
        apprise=sender_for(config.notify.sends, len(watchers), level=config.log.level),
    )  # fmt: skip
    await dispatcher.start()
    stack.push_async_callback(dispatcher.stop)
    await send_notices(notices, dispatcher, config, clock)  # what is wrong at start first
    metrics.route_source(dispatcher.stats)

    history = History(config.state_dir / HISTORY_FILE)
    stack.callback(history.close)
    first_prices = FirstPrices()
    market, userdata = _feeds(
        endpoints,
        book,
        engine,
        watchers,
        feeds,
        options,
        config.alerts.stale_after,
        first_prices,
        connections,
    )
    metrics.feed_source("market", market.stats)
    key_interval = options.key_check_interval or max(
        KEY_CHECK_MIN_INTERVAL, len(watchers) / KEY_CHECKS_PER_SECOND
    )
    return Components(
        config=config, config_path=config_path, clock=clock, metrics=metrics, book=book,
        handoff=handoff, catalog=catalog, notices=notices, store=store, watchers=watchers,
        state_health=state_health,
        policy=policy, engine=engine, opinions=opinions, silences=silences, dispatcher=dispatcher,
        market=market, userdata=userdata, recorder=Recorder(history, book, clock), feeds=feeds,
        first_prices=first_prices, saved_units=frozenset(saved), key_interval=key_interval,
        connections=connections,
    )  # fmt: skip


def not_loaded(watchers: list[AccountWatcher], quote: str) -> list[dict[str, Any]]:
    """The blind ``status`` entries (with the reason) of the accounts not loaded now: on every
    surface (status, console, page, ``/metrics``) as blind, never absent."""
    return [w.blind_entry(quote) for w in watchers if not w.loaded]


def bars_of(watchers: Mapping[str, AccountWatcher], unit: str) -> dict[str, float]:
    """The bars of ``unit`` by name (empty when unknown); ``watchers`` by account name (a walk of the
    list per unit was O(accounts²) at start-up: Binance's word is heard per account loaded)."""
    _, _, rest = unit.partition(":")
    account, _, symbol = rest.partition(":")
    watcher = watchers.get(account)
    if watcher is None:
        return {}
    bars = watcher.bars.get(symbol) or (None if symbol else watcher.bars.get(""))
    return {} if bars is None else {n: float(v) for n, v in bars.levels.items()}


T = TypeVar("T")


class Part(Generic[T]):
    """A part read by name: ``service.engine`` is ``service.parts.engine``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> T:
        value: T = getattr(obj.parts, self.name)
        return value


class PartsByName:
    """The parts as attributes of their owner (the service, for tests and benches), once resolved."""

    parts: Components
    metrics, book, handoff, catalog = (
        Part[Metrics](),
        Part[AccountBook](),
        Part[Handoff](),
        Part[SharedCatalog](),
    )
    store, watchers, policy = Part[Store](), Part[list[AccountWatcher]](), Part[AlertPolicy]()
    engine, silences, dispatcher = Part[Engine](), Part[SilenceRegistry](), Part[Dispatcher]()
    recorder, market, userdata = Part[Recorder](), Part[MarketStream](), Part[UserDataPool]()


def _open_store(config: Config, notices: list[Notice]) -> Store:
    try:
        store = Store(config.state_dir)
    except StateError as exc:
        raise StateStartupError(str(exc)) from None
    if store.lost:
        log.error("alert_state_lost", reason=store.lost)
        notices.append(
            Notice(
                "margin-monitor",
                "state_lost",
                "margin-monitor: alert history lost",
                f"The {store.lost}: which alerts were already sent is unknown. Every alert "
                "that holds now is sent again once, as new; nothing is missed.",
            )
        )
    return store


async def _load_all(watchers: list[AccountWatcher]) -> None:
    """One quick attempt each, all at once; those that fail are retried in the background."""
    results = await asyncio.gather(*(w.load(QUICK_LOAD) for w in watchers), return_exceptions=True)
    for watcher, result in zip(watchers, results, strict=True):
        if isinstance(result, BaseException):
            log.error(
                "account_load_crashed", account=watcher.name, error=f"{type(result).__name__}: {result}"
            )


def _saved_state(store: Store, handoff: Handoff, config: Config) -> dict[str, Any]:
    """The saved alert state of the units this replica owns (those another shard owns now, or no
    longer configured, are dropped)."""
    try:
        saved = store.load_alert_state()
    except StateError as exc:
        raise StateStartupError(str(exc)) from None
    departed = handoff.departed(saved)  # accounts another shard owns now
    departed += [u for u in saved if u not in departed and not config.configures(u)]  # left the config
    if departed:
        store.forget_alert_state(departed)
        gone = frozenset(departed)
        saved = {unit: blob for unit, blob in saved.items() if unit not in gone}
    return saved


async def _tell_before_exit(
    notices: list[Notice],
    routes: dict[str, NotifyRoute],
    store: Store,
    config: Config,
    clock: Callable[[], float],
) -> None:
    """No account can be watched (keys refused): still tell the trader why, within DRAIN_SECONDS,
    before the daemon exits; what is not delivered stays in the outbox."""
    if not notices:
        return
    dispatcher = Dispatcher(routes, store, timeout=config.notify.timeout)
    try:
        await dispatcher.start()
        await send_notices(notices, dispatcher, config, clock)
        await dispatcher.drain(DRAIN_SECONDS)
    finally:
        await dispatcher.stop()


def _feeds(
    endpoints: Endpoints,
    book: AccountBook,
    engine: Engine,
    watchers: list[AccountWatcher],
    feeds: FeedLog,
    options: Options,
    stale_after: float,
    first_prices: FirstPrices,
    connections: ConnectionBudget,
) -> tuple[MarketStream, UserDataPool]:
    """The price feed (ticks straight into the engine, then ``first_prices`` told) and the user-data
    sessions (events to their account's watcher), not started."""
    symbols = book.symbols_needed()
    first_prices.expect(symbols, book.prices.prices)
    priced: set[str] = set()  # first prices, told once the units they moved are evaluated

    def on_prices(prices: Mapping[str, float]) -> None:
        engine.apply_prices(prices, sent_at=time.time())
        if first_prices.awaiting:
            priced.update(prices)

    def more() -> bool:  # the units the batch moved out of their band, a slice per loop turn
        if not priced:
            return engine.evaluate_due()
        # first prices (start-up, an account loaded late): every unit they move at once, then
        # readiness is asked; a loop turn at start-up waits behind a thousand connecting streams
        while engine.evaluate_due():
            pass
        first_prices.seen(priced)
        priced.clear()
        return False

    market = MarketStream(
        endpoints.stream_url, symbols, on_prices, more=more,
        on_state=feeds, silence=max(5.0, stale_after), backoff=FEED_BACKOFF,
        connect=connections.connect_factory(default_connect, "market", Priority.MARKET),
    )  # fmt: skip
    by_account = {w.name: w for w in watchers}
    ws_api_url = endpoints.ws_api_url
    userdata = UserDataPool(
        [sub for w in watchers for sub in w.subscriptions()],
        lambda session, subs: UserDataStream(
            ws_api_url, subs, lambda event: route_event(by_account, feeds, event),
            on_reconnected=lambda account, symbol: by_account[account].on_reconnected(account, symbol),
            on_state=feeds, session=session, backoff=FEED_BACKOFF,
            connect=connections.connect_factory(probed_connect, session, Priority.USERDATA),
        ),
        per_session=options.per_session,
    )  # fmt: skip  # as many WebSocket API sessions as Binance's subscription limits need
    return market, userdata


def _save_state(store: Store, policy: AlertPolicy) -> None:
    try:
        store.save_alert_state(policy.export_state())
    except StateError as exc:  # the state file died while running: still close the rest
        log.error("alert_state_save_failed", error=str(exc))


async def _close_all(watchers: list[AccountWatcher]) -> None:
    for watcher in watchers:
        await watcher.close()
