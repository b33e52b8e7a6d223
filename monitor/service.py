"""The daemon's lifecycle: ``startup()`` → run until a signal → ``shutdown()``.

In the shape of uvicorn's config → server split: :func:`monitor.app.components.resolve` turns the
config into one frozen set of parts (state file, exchange, watchers, policy, engine, delivery, feeds);
``startup`` then binds the HTTP surface and starts the tasks and the periodic jobs
(:mod:`monitor.app.periodic`). A signal only sets an event. Everything started or opened is on one
exit stack: ``shutdown`` unwinds it, newest first: stop reading, drain the outbox within a bound,
save the alert state, close the accounts, the simulator, the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from monitor.app import periodic
from monitor.app.components import DRAIN_SECONDS, LOAD_BACKOFF, Components, Options, PartsByName, resolve
from monitor.app.errors import RefusedStartupError, StartupError, StateStartupError
from monitor.app.loading import Loader, Tasks
from monitor.app.outflow import Outflow
from monitor.app.state_health import RECOVERY_HOLD
from monitor.app.views import Views
from monitor.config.model import EXIT_CONFIG, Config, ConfigError
from monitor.exchange.conn_slots import LIMIT, WINDOW
from monitor.exchange.risk_group import KEYS_PER_CONNECTION
from monitor.exchange.supervisor import Backoff
from monitor.exchange.userdata_pool import PER_SESSION
from monitor.logs import configure_logging
from monitor.notify.dispatcher import default_backoff
from monitor.ops import heap
from monitor.ops.heartbeat import HeartbeatStats, heartbeat_loop
from monitor.ops.http import HttpServer, start_http
from monitor.ops.loop_lag import LoopLag
from monitor.ops.page import page_routes
from monitor.ops.sdnotify import Notifier, watchdog_interval, watchdog_loop
from monitor.watch.catalog import CATALOG_MAX_AGE
from monitor.watch.key_checks import KeyChecks

__all__ = ["EXIT_OK", "EXIT_STATE", "EXIT_UNAVAILABLE", "Service", "StartupError", "run_daemon"]

log = structlog.get_logger(__name__)

EXIT_OK = 0
# Exit codes systemd's RestartPreventExitStatus= can tell apart (deploy/systemd): a restart cannot
# cure an unusable state file (3) nor a bad config (78, EXIT_CONFIG, also: every key refused for its
# permissions); it can cure a port still held by the previous instance (69, EX_UNAVAILABLE). An
# exchange unreachable at start ends nothing: each account is retried in the background.
EXIT_STATE = 3
EXIT_UNAVAILABLE = 69


class Service(PartsByName):
    """One running daemon. Tests build it directly with short intervals; the CLI uses ``run_daemon``."""

    parts: Components  # resolved by startup()
    http: HttpServer | None  # None only with http.enabled: false
    _market_task: asyncio.Task[Any]

    def __init__(
        self,
        config: Config,
        config_path: Path,
        *,
        clock: Callable[[], float] = time.time,
        notify_backoff: Callable[[int], float] = default_backoff,
        load_backoff: Backoff = LOAD_BACKOFF,
        key_check_interval: float | None = None,
        opinion_grace: float = 5.0,
        catalog_interval: float = CATALOG_MAX_AGE,
        per_session: int = PER_SESSION,
        tick: float = 1.0,
        connections: tuple[int, float] = (LIMIT, WINDOW),
        state_recovery_hold: float = RECOVERY_HOLD,
        risk_per_connection: int = KEYS_PER_CONNECTION,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.clock = clock
        self.options = Options(clock, notify_backoff, load_backoff, key_check_interval,
                               opinion_grace, catalog_interval, per_session, tick,
                               connections=connections,
                               state_recovery_hold=state_recovery_hold,
                               risk_per_connection=risk_per_connection)  # fmt: skip
        self.stop_requested = asyncio.Event()
        self.notifier = Notifier.from_env()
        self.heartbeat = HeartbeatStats()
        self.tasks = Tasks()
        self.scheduler = periodic.scheduler()
        self._stack = contextlib.AsyncExitStack()  # what startup opened and started, closed in reverse
        self._started_at = time.monotonic()
        self._ready_check: asyncio.Task[Any] | None = None
        self._wedged_after = max(60.0, 4 * config.alerts.stale_after)

    # -- lifecycle ------------------------------------------------------------------------------
    async def startup(self) -> None:
        """Connect everything; raises StartupError with one line when the daemon cannot run."""
        config = self.config
        heap.set_aside()  # the modules and the config: out of start-up's full collections
        heap.hold_collections()  # and no collection until ready (heap.settle), shutdown or the bound
        self._stack.callback(heap.resume_collections)
        asyncio.get_running_loop().call_later(heap.HOLD_AT_MOST, heap.resume_collections)
        parts = self.parts = await resolve(
            config, self.config_path, self.options, self._stack, stopping=self.stop_requested.is_set
        )
        heap.set_aside()  # the accounts loaded (clients, books, ladders): likewise
        self.loop_lag = LoopLag(parts.metrics.observe_loop_lag)
        self.outflow = Outflow(
            parts.engine, parts.dispatcher, book=parts.book, handoff=parts.handoff,
            silences=parts.silences, recorder=parts.recorder, metrics=parts.metrics,
            notices=parts.notices, config=config, clock=self.clock,
        )  # fmt: skip
        self.views = Views(parts)
        self.loader = Loader(
            parts, self.tasks, self.options.load_backoff, on_loaded=self._loaded_late,
            risk_per_connection=self.options.risk_per_connection,
        )  # fmt: skip
        self.every_second = periodic.every_second(
            parts, self.notifier, self.outflow.send_notices, self.loader.load_missing,
            self._say_what_is_ahead, period=self.options.tick,
        )  # fmt: skip
        parts.first_prices.on_complete = self._maybe_ready
        self.http = None
        self._stack.push_async_callback(self._stop_http)  # unwound last: the surface outlives the drain
        self._stack.push_async_callback(self._stop_running)
        self._start_tasks(parts)
        if config.http.enabled:
            self.http = await self._bind_http(parts)
        self.notifier.status(
            "starting: waiting for prices"
            if any(w.loaded for w in parts.watchers)
            else "starting: waiting for the exchange"
        )
        log.info(
            "daemon_started",
            accounts=sum(w.loaded for w in parts.watchers),
            units=len(parts.book.units()),
            not_loaded=[w.name for w in parts.watchers if not w.loaded],
            shard=config.shard or "all",
        )
        self._maybe_ready()  # every account loaded and nothing to price: no event to wait for

    # -- readiness on the event -----------------------------------------------------------------
    def _maybe_ready(self) -> None:
        """An event that may have made the daemon ready came (the last wanted symbol's first price,
        an account loaded late): once every enabled account is loaded and nothing awaits a first
        price, the housekeeping job runs now, out of turn, and decides readiness as on its tick."""
        readiness = self.every_second.readiness
        if readiness.ready or self.parts.first_prices.awaiting or not readiness.all_loaded():
            return
        if self._ready_check is None or self._ready_check.done():
            self._ready_check = self.tasks.spawn(self.every_second.run(), "ready-check")

    def _loaded_late(self) -> None:
        """An account loaded after start (its symbols now wanted): readiness once they are priced."""
        parts = self.parts
        parts.first_prices.expect(parts.book.symbols_needed(), parts.book.prices.prices)
        self._maybe_ready()

    def _start_tasks(self, parts: Components) -> None:
        spawn, config = self.tasks.spawn, self.config
        self._market_task = spawn(parts.market.run(), "market")
        spawn(parts.userdata.run(), "userdata")
        for watcher in parts.watchers:
            self.loader.start(watcher)
        self.loader.load_missing()
        spawn(KeyChecks(parts.watchers, parts.key_interval).run(), "key-checks")
        spawn(self.outflow.pump(), "pump")
        spawn(self.loop_lag.run(), "lag-probe")
        interval = watchdog_interval()
        if interval:
            spawn(watchdog_loop(self.notifier, self.healthy, interval), "watchdog")
        if config.heartbeat is not None:
            beat = config.heartbeat
            spawn(heartbeat_loop(beat.url.get_secret_value(), beat.every, self.beating,
                                 timeout=beat.timeout, stats=self.heartbeat), "heartbeat")  # fmt: skip
        periodic.schedule(self.scheduler, [self.every_second, *periodic.slower_jobs(parts)])
        self.scheduler.start()

    async def _bind_http(self, parts: Components) -> HttpServer:
        http = self.config.http
        token = http.token.get_secret_value() if http.token else None
        try:
            return await start_http(
                http.host, http.port, metrics=parts.metrics, status=self.status, ready=self.ready,
                token=token, routes=page_routes(self.views.page_feed()), silences=self.views.silence_api(),
            )  # fmt: skip
        except OSError as exc:
            raise StartupError(f"http.listen {http.listen}: cannot bind: {exc.strerror}") from None

    async def run(self) -> None:
        """Wait until a stop is requested."""
        await self.stop_requested.wait()

    async def shutdown(self) -> None:
        """Stop reading, drain notifications within a bound, persist state, close the rest."""
        self.stop_requested.set()  # feeds going down from here on were asked to: logged at info
        self.notifier.stopping()
        log.info("daemon_stopping")
        await self._stack.aclose()
        self.notifier.close()
        log.info("daemon_stopped")

    async def _stop_running(self) -> None:
        """The first step of shutdown: no job, no feed; what the engine queued goes to the outbox,
        delivered within DRAIN_SECONDS (the rest stays there for the next run)."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.loader.stop()  # no re-read timer fires into the tasks cancelled next
        self.tasks.cancel(keep="pump")
        while self.parts.engine.evaluate_due():  # a batch of prices applied is evaluated whole
            pass
        await self.outflow.flush()
        await self.parts.dispatcher.drain(DRAIN_SECONDS)
        await self.tasks.cancel_all()

    async def _stop_http(self) -> None:
        if self.http is not None:
            await self.http.stop()

    # -- surfaces -------------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """The ``status --json`` list: one dict per unit."""
        return self.views.status()

    def ready(self) -> bool:
        """Every account loaded and every unit fresh."""
        return self.every_second.readiness.ready and not self.parts.engine.stale

    def healthy(self) -> bool:
        """For the systemd watchdog: nothing wedged. An exchange outage is not a reason to restart
        (the feeds retry on their own; a restart loop would end in a failed unit): withheld only when
        the loop lags, the housekeeping job stopped, or the market feed's task died or sits connected
        but silent far beyond its own watchdog."""
        if self.loop_lag.worst > 5.0 or self._market_task.done():
            return False
        if time.monotonic() - self.every_second.done_at > 15.0:
            return False
        stats = self.parts.market.stats()
        last = stats.last_message_at
        silent_for = time.monotonic() - (last if last is not None else self._started_at)
        return not (stats.connected and silent_for > self._wedged_after)

    def beating(self) -> bool:
        """For the heartbeat (dead man's switch): every account fresh and the loop healthy."""
        return self.ready() and self.healthy()

    async def _every_second(self) -> None:
        await self.every_second.run()

    def _say_what_is_ahead(self) -> None:
        """On the embedded simulator, one line at ready on stdout (beside console:// alerts) saying
        what the scenario is about to do: ``replaying a 40 % crash; first alert in ~10 s; …``."""
        if self.config.exchange.kind != "simulator":
            return  # on Binance there is nothing to preview, and no simulator to import
        from monitor.demo import preview

        ahead = preview(self.config, self.config_path)
        if ahead is not None:
            print(ahead.line(time.monotonic() - self._started_at), flush=True)


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
