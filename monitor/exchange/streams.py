"""Market data over websockets: the I/O under ``monitor.exchange.market_core``.

``MarketStream`` is the price feed for any number of symbols. Its ``MarketCore`` places them on
connections of at most ``MAX_STREAMS`` (1,024) streams; each connection is a ``MarketConnection``
here, driving one ``MarketProtocol``: it opens the path the protocol gives
(``{stream_url}/stream?streams=btcusdt@bookTicker/...``), feeds it every frame with the time, sends
the SUBSCRIBE/UNSUBSCRIBE requests it gives when they are due, and hands the prices it collected
to ``on_prices`` from a consumer task woken by each frame: everything since its last run in one
batch, so a burst never builds a queue of stale ticks. What a frame means, conflation, the
subscription bookkeeping and isolating refused symbols live in the core (see its docstring).

Each connection runs under ``Supervisor``: reconnect on errors *and* on a normal close (Binance's
1001 24-hour disconnect ends ``async for`` without an exception), on a ``serverShutdown`` notice,
and when no frame arrives for ``silence`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from monitor.exchange.errors import Reconnect
from monitor.exchange.market_core import MAX_STREAMS, MarketCore, MarketProtocol
from monitor.exchange.ratelog import RateLimitedLog
from monitor.exchange.supervisor import Backoff, Heartbeat, StateHook, Supervisor, describe

log = structlog.get_logger(__name__)

ConnectFactory = Callable[[str], AbstractAsyncContextManager[ClientConnection]]
PricesHook = Callable[[dict[str, float]], None]
# the work a batch left (a bounded slice per call), True while some remains: called once per
# event-loop turn after ``on_prices`` until False, before the next batch is taken
MoreHook = Callable[[], bool]

YIELD_EVERY = 500  # frames handled before giving the event loop a turn during a burst


def default_connect(url: str) -> AbstractAsyncContextManager[ClientConnection]:
    """websockets' client with Binance-friendly limits (pings every 20 s, 1 MiB frames), without
    permessage-deflate (Binance does not require it): 1,000 risk streams would each keep zlib
    buffers, and every market frame would be inflated on the event loop."""
    return _connect(url, 20)


def probed_connect(url: str) -> AbstractAsyncContextManager[ClientConnection]:
    """``default_connect`` without websockets' keepalive, for connections whose session pings them
    itself (``monitor.exchange.userdata.probe``): one pinger per connection, not two; at 1,000
    accounts the keepalive's tasks, sleeps and per-ping timeout handles were thousands of live
    objects on the loop (issue #12)."""
    return _connect(url, None)


def _connect(url: str, ping_interval: float | None) -> AbstractAsyncContextManager[ClientConnection]:
    return connect(
        url,
        open_timeout=10,
        ping_interval=ping_interval,
        ping_timeout=ping_interval,
        close_timeout=2,
        max_queue=1024,
        compression=None,
    )


@dataclass(frozen=True, slots=True)
class FeedStats:
    """Counters for metrics: frames handled, frames skipped, reconnects, connection state."""

    messages: int
    malformed: int
    reconnects: int
    connected: bool
    last_message_at: float | None


@dataclass(frozen=True, slots=True)
class MarketSettings:
    """What every connection of one ``MarketStream`` shares (see ``MarketStream`` for each)."""

    stream_url: str
    on_prices: PricesHook
    backoff: Backoff | None
    silence: float
    connect: ConnectFactory
    clock: Callable[[], float]
    on_state: StateHook | None
    more: MoreHook | None = None


class MarketConnection:
    """One supervised connection driving ``protocol``: the socket, the pacing of its requests and
    the hand-over of its prices."""

    def __init__(self, settings: MarketSettings, protocol: MarketProtocol, name: str) -> None:
        self.protocol = protocol
        self._settings = settings
        self._wakeup = asyncio.Event()  # a frame came: prices may wait in the protocol
        self._changed = asyncio.Event()  # the protocol may have requests to send
        self.supervisor = Supervisor(
            name,
            self._session,
            backoff=settings.backoff,
            silence=settings.silence,
            clock=settings.clock,
            on_state=settings.on_state,
        )

    async def run(self) -> None:
        """Read and deliver prices until cancelled (never returns on its own)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._deliver(), name=f"{self.supervisor.name}-deliver")
            group.create_task(self.supervisor.run(), name=f"{self.supervisor.name}-read")

    def wake(self) -> None:
        """The protocol's symbols may have changed: connect, or send what it now owes."""
        self._changed.set()

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols this connection carries."""
        return self.protocol.symbols

    def stats(self) -> FeedStats:
        """Counters for metrics."""
        p = self.protocol
        return FeedStats(
            p.messages, p.malformed, self.supervisor.retries, self.supervisor.up, p.last_message_at
        )

    async def _session(self, heartbeat: Heartbeat) -> str | None:
        protocol = self.protocol
        while not protocol.symbols:
            heartbeat.pause()
            self._changed.clear()
            await self._changed.wait()
        heartbeat.resume()
        path = protocol.begin_connection()
        try:
            async with self._settings.connect(self._settings.stream_url + path) as ws:
                return await self._read(ws, heartbeat)
        except InvalidStatus as exc:
            protocol.connection_refused(exc.response.status_code)
            raise

    async def _read(self, ws: ClientConnection, heartbeat: Heartbeat) -> str:
        protocol, clock, wakeup, changed = self.protocol, self._settings.clock, self._wakeup, self._changed
        receive, beat = protocol.receive, heartbeat.beat
        heartbeat.connected()
        control = asyncio.create_task(self._control(ws), name=f"{self.supervisor.name}-control")
        try:
            handled = 0
            async for raw in ws:
                beat()
                if receive(raw, clock()):
                    if protocol.closing is not None:
                        raise Reconnect(protocol.closing)
                    changed.set()
                wakeup.set()
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            control.cancel()
            await asyncio.gather(control, return_exceptions=True)
        return f"closed by server (code {ws.close_code}, {ws.close_reason or 'no reason'})"

    async def _control(self, ws: ClientConnection) -> None:
        """Send the protocol's requests when due (paced on the event loop's clock)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._changed.clear()
                for frame in self.protocol.data_to_send(loop.time()):
                    await ws.send(frame)
                due = self.protocol.next_send_at()
                if due is None:
                    await self._changed.wait()
                elif due > loop.time():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(due):
                            await self._changed.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("market_control_failed", error=describe(exc))
            await ws.close(1011, "control failed")

    async def _deliver(self) -> None:
        failed = RateLimitedLog("market_on_prices_failed", interval=5.0, clock=self._settings.clock)
        on_prices, more, take = self._settings.on_prices, self._settings.more, self.protocol.prices_received
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = take()
            if not batch:
                continue
            try:
                on_prices(batch)
                while more is not None:  # the batch's work left: a slice per loop turn
                    if not more():
                        break
                    await asyncio.sleep(0)
            except Exception as exc:
                failed(error=describe(exc))


class MarketStream:
    """The price feed for any number of symbols: ``MarketConnection``\\ s of at most ``max_streams``.

    The first connection is named ``name`` (``market``), the next ``market-2``, ``market-3``...;
    their states reach ``on_state`` under those names. After each batch ``more`` (when given) is
    called once per event-loop turn until it returns False: the batch's work in bounded slices
    (``Engine.evaluate_due``), the next batch taken only then. ``set_symbols`` changes the subscription at
    runtime, at most ``control_rate`` requests a second per connection; ``silence`` seconds without
    a frame reconnect; ``connect`` and ``clock`` are there for tests.
    """

    def __init__(
        self,
        stream_url: str,
        symbols: Iterable[str],
        on_prices: PricesHook,
        *,
        channel: str = "bookTicker",
        name: str = "market",
        backoff: Backoff | None = None,
        silence: float = 30.0,
        connect: ConnectFactory = default_connect,
        clock: Callable[[], float] = time.monotonic,
        control_rate: float = 4.0,
        on_state: StateHook | None = None,
        max_streams: int = MAX_STREAMS,
        more: MoreHook | None = None,
    ) -> None:
        self.core = MarketCore(max_streams=max_streams, channel=channel, control_interval=1.0 / control_rate)
        self._settings = MarketSettings(
            stream_url.rstrip("/"), on_prices, backoff, silence, connect, clock, on_state, more
        )
        self._name = name
        self._clock = clock
        self.connections: list[MarketConnection] = []
        self._grown = asyncio.Event()
        self.set_symbols(symbols)

    async def run(self) -> None:
        """Run every connection, starting those added later, until cancelled."""
        started = 0
        async with asyncio.TaskGroup() as group:
            while True:
                while started < len(self.connections):
                    connection = self.connections[started]
                    group.create_task(connection.run(), name=f"{connection.supervisor.name}-run")
                    started += 1
                self._grown.clear()
                await self._grown.wait()

    def set_symbols(self, symbols: Iterable[str]) -> None:
        """Change the symbol set: symbols stay on their connection; new ones fill free room first."""
        for protocol in self.core.set_symbols(symbols, self._clock()):
            index = len(self.connections)
            name = self._name if index == 0 else f"{self._name}-{index + 1}"
            self.connections.append(MarketConnection(self._settings, protocol, name))
            self._grown.set()
        for connection in self.connections:
            connection.wake()

    @property
    def supervisor(self) -> Supervisor:
        """The first connection's supervisor (the only one below ``max_streams`` symbols)."""
        return self.connections[0].supervisor

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols currently wanted, over all connections."""
        return self.core.symbols

    @property
    def rejected(self) -> frozenset[str]:
        """Wanted symbols the server refused to stream (unknown or delisted), over all connections;
        their age keeps growing, so their accounts go blind."""
        return self.core.rejected

    def ages(self, now: float | None = None) -> dict[str, float]:
        """Seconds since each wanted symbol's last price (since its connection was made if none came)."""
        return self.core.ages(self._clock() if now is None else now)

    def sent_at(self, symbol: str) -> int | None:
        """The sender's event time (ms) of the newest frame for ``symbol``, when the frame had ``E``."""
        return self.core.sent_at(symbol)

    def stats(self) -> FeedStats:
        """Counters summed over the connections; connected only when every busy one is, and the
        last message time of the most silent busy connection (so one wedged connection shows)."""
        parts = [c.stats() for c in self.connections]
        busy = [p for c, p in zip(self.connections, parts, strict=True) if c.symbols] or parts[:1]
        lasts = [p.last_message_at for p in busy]
        return FeedStats(
            sum(p.messages for p in parts),
            sum(p.malformed for p in parts),
            sum(p.reconnects for p in parts),
            all(p.connected for p in busy),
            None if any(t is None for t in lasts) else min(t for t in lasts if t is not None),
        )
