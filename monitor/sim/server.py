"""The simulator as a running server: aiohttp app assembly, lifecycle, and the handle to drive it.

In realtime mode a driver task moves simulated time at the scenario's speed and flushes
miniTickers every ``ticker_interval`` real seconds; in manual mode time moves only by
:meth:`Simulator.advance` (tests), and miniTickers flush every ``ticker_interval`` simulated
seconds. Both modes run a housekeeping task that expires listen tokens and listen keys by the
wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from monitor.sim.conn_limit import ConnectionLimit
from monitor.sim.engine import SimExchange
from monitor.sim.loader import load_scenario
from monitor.sim.rest import add_routes
from monitor.sim.scenario import Event, Fault, Scenario
from monitor.sim.state import AccountState

log = structlog.get_logger(__name__)
HOUSEKEEPING_EVERY = 0.05
DRIVER_MAX_SLEEP = 0.05
YIELD_EVERY = 200


class Simulator:
    """A running simulated Binance: URLs, and methods to drive its timeline and faults."""

    def __init__(
        self, scenario: Scenario, *, realtime: bool = True, clock: Callable[[], float] | None = None
    ) -> None:
        self.scenario = scenario
        self.engine = SimExchange(scenario, realtime=realtime, clock=clock)
        self.app = web.Application()
        add_routes(self.app, self.engine)
        limits = scenario.limits  # Binance's 300 WebSocket connection attempts per 5 min per IP
        self.connections = ConnectionLimit(
            limits.ws_connections, limits.ws_connection_window, self.engine.clock
        )
        guard = self.connections.guard
        self.app.router.add_get("/ws-api/v3", guard(self.engine.api.handle))
        self.app.router.add_get("/ws", guard(self.engine.streams.handle_raw))
        self.app.router.add_get("/ws/{streams:.*}", guard(self.engine.streams.handle_raw))
        self.app.router.add_get("/stream", guard(self.engine.streams.handle_combined))
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self.host = "127.0.0.1"
        self.port = 0

    # --- URLs ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """REST base: ``http://HOST:PORT`` (``/api/v3/...``, ``/sapi/v1/...``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def stream_url(self) -> str:
        """Market streams base: ``ws://HOST:PORT`` (``/ws/<stream>``, ``/stream?streams=``)."""
        return f"ws://{self.host}:{self.port}"

    @property
    def ws_api_url(self) -> str:
        """The WebSocket API: ``ws://HOST:PORT/ws-api/v3``."""
        return f"{self.stream_url}/ws-api/v3"

    @property
    def risk_stream_url(self) -> str:
        """Risk Data Stream base (``/ws/<listenKey>``): the same as :attr:`stream_url`."""
        return self.stream_url

    def exchange_config(self, **settings: Any) -> dict[str, Any]:
        """The ``exchange:`` section of a daemon config pointing every client here, plus
        ``settings`` (``snapshot_interval="5s"``, …): what a ``kind: binance`` config needs to
        watch this simulator as it would Binance."""
        return {
            "kind": "binance",
            "rest_url": self.base_url,
            "stream_url": self.stream_url,
            "ws_api_url": self.ws_api_url,
            "risk_stream_url": self.risk_stream_url,
            **settings,
        }

    # --- lifecycle -------------------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
    ) -> None:
        """Listen on ``host:port`` (0 = any free port), or on ``sock``, a socket bound already (a port
        held refused until now); apply time 0 and start the background tasks."""
        self.engine.run_until(0.0)
        self._runner = web.AppRunner(self.app, shutdown_timeout=1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port) if sock is None else web.SockSite(self._runner, sock)
        await site.start()
        self.host, self.port = self._runner.addresses[0][:2]
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        if self.scenario.streams.quote_refresh > 0:
            self._tasks.append(asyncio.create_task(self._quotes()))
        if self.engine.realtime:
            self._tasks.append(asyncio.create_task(self._drive()))
            self._tasks.append(asyncio.create_task(self._tickers()))
        log.info("sim_listening", url=self.base_url, realtime=self.engine.realtime)

    async def stop(self) -> None:
        """Stop the background tasks, close every connection and the listening socket."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.engine.board.clear()
        for sc in list(self.engine.streams.connections):
            sc.conn.close_soon(1001)
        for api in list(self.engine.api.connections):
            api.conn.close_soon(1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_EVERY)
            self.engine.housekeeping()

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        speed = self.scenario.timeline.speed
        origin = loop.time() - self.engine.sim_time / speed
        while True:
            async with self._lock:
                self.engine.run_until((loop.time() - origin) * speed)
                wait = (self.engine.next_due() - self.engine.sim_time) / speed
            await asyncio.sleep(min(max(wait, 0.0), DRIVER_MAX_SLEEP))

    async def _quotes(self) -> None:
        """Like Binance's book, quotes update even when the price stands: resend each bookTicker."""
        while True:
            await asyncio.sleep(self.scenario.streams.quote_refresh)
            self.engine.streams.refresh_quotes()

    async def _tickers(self) -> None:
        while True:
            await asyncio.sleep(self.scenario.streams.ticker_interval)
            self.engine.streams.flush_tickers()

    # --- driving ---------------------------------------------------------------------------

    @property
    def sim_time(self) -> float:
        """Simulated seconds since the start of the timeline."""
        return self.engine.sim_time

    async def advance(self, seconds: float) -> None:
        """Run the timeline ``seconds`` of simulated time forward (prices, events, faults, interest)."""
        async with self._lock:
            for n, _ in enumerate(self.engine.steps(self.engine.sim_time + seconds), start=1):
                if n % YIELD_EVERY == 0:  # let connection writers drain during long advances
                    await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def set_price(self, symbol: str, price: Decimal | str) -> None:
        """Set a price now (books, market streams, risk status)."""
        async with self._lock:
            self.engine.set_price(symbol, Decimal(price))
        await asyncio.sleep(0)

    async def apply_event(self, event: Event | Mapping[str, Any]) -> None:
        """Apply an account event now (borrow, repay, deposit, transfer, liquidation, set_balance)."""
        parsed = event if isinstance(event, Event) else Event.model_validate(dict(event))
        account = self.engine.state.accounts.get(parsed.account)
        if account is None:
            raise ValueError(f"unknown account {parsed.account!r}")
        if parsed.symbol is not None and parsed.symbol not in account.pairs:
            raise ValueError(f"{parsed.account} has no isolated pair {parsed.symbol}")
        async with self._lock:
            self.engine.apply_event(parsed)
        await asyncio.sleep(0)

    async def inject_fault(self, fault: Fault | Mapping[str, Any]) -> None:
        """Start a fault now; windowed ones last ``duration`` simulated seconds."""
        parsed = fault if isinstance(fault, Fault) else Fault.model_validate(dict(fault))
        if parsed.account is not None and parsed.account not in self.engine.state.accounts:
            raise ValueError(f"unknown account {parsed.account!r}")
        async with self._lock:
            self.engine.inject_fault(parsed)
        await asyncio.sleep(0)

    async def clear_faults(self) -> None:
        """End every fault window now."""
        self.engine.board.clear()
        await asyncio.sleep(0)

    def set_delivery(self, **delays: float) -> None:
        """How late each view of later account changes arrives: ``user_data``, ``risk`` (stream
        delays) and ``rest_lag`` (REST shows a change this late), in simulated seconds."""
        self.engine.set_delivery(**delays)

    def restore_key(self, account: str) -> None:
        """Undo a key revocation."""
        self.engine.state.revoke(account, revoked=False)

    def account(self, name: str) -> AccountState:
        """The live state of an account (for assertions)."""
        return self.engine.state.accounts[name]

    def subscriptions(self, account: str | None = None) -> int:
        """How many WS-API user-data subscriptions (of ``account``) are active."""
        return len(self.engine.api.subscriptions(account))

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait (polling every 10 ms) until ``predicate()`` holds; TimeoutError after ``within`` s."""
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - state changes come from many places; polling is simplest
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def run_simulator(
    scenario: Scenario,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    realtime: bool = True,
    clock: Callable[[], float] | None = None,
    sock: socket.socket | None = None,
) -> AsyncIterator[Simulator]:
    """Run a simulator for the duration of the ``async with`` block (on ``sock`` if given: see
    :meth:`Simulator.start`)."""
    sim = Simulator(scenario, realtime=realtime, clock=clock)
    await sim.start(host, port, sock=sock)
    try:
        yield sim
    finally:
        await sim.stop()


async def serve(
    scenario_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the simulator in realtime until cancelled; ``on_ready(base_url)`` once it listens."""
    scenario = load_scenario(scenario_path)
    async with run_simulator(scenario, host, port) as sim:
        if on_ready is not None:
            on_ready(sim.base_url)
        await asyncio.Event().wait()
