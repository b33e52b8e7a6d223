"""The simulator's core: books, hubs and the timeline, wired together without the HTTP server.

Two clocks: the *wall clock* (``clock``, seconds since the epoch; real time by default) gives
``serverTime``, event times, timestamp checks, rate-limit minutes and token/listen-key expiry;
the *simulated time* (seconds since the start of the timeline, moved by :meth:`advance`) places
ticks, events, faults and hourly interest.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import structlog

from monitor.exchange.sim.auth import WeightMeter
from monitor.exchange.sim.faults import WINDOWED, FaultBoard
from monitor.exchange.sim.market import StreamHub
from monitor.exchange.sim.scenario import Event, Fault, Scenario
from monitor.exchange.sim.sources import Tick
from monitor.exchange.sim.state import Emission, ExchangeState, RiskEvent, UserEvent
from monitor.exchange.sim.timeline import FLUSH, INTEREST, Cursor, Item
from monitor.exchange.sim.userdata import ApiHub, ListenKeyBook, TokenBook

log = structlog.get_logger(__name__)
MALFORMED = '{"stream":"btcusdt@bookTicker","data":{"u":4009002'


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One REST request the simulator answered (for tests and the demo)."""

    method: str
    path: str
    status: int
    api_key: str | None


class Engine:
    """Books, fault board, weight meter, token books, stream hubs and the timeline cursor."""

    def __init__(
        self, scenario: Scenario, *, realtime: bool, clock: Callable[[], float] | None = None
    ) -> None:
        self.scenario = scenario
        self.realtime = realtime
        self.clock = clock or time.time
        self.state = ExchangeState(scenario, self.now_ms)
        self.board = FaultBoard()
        self.meter = WeightMeter(scenario.limits, self.now_ms)
        self.tokens = TokenBook()
        self.listen_keys = ListenKeyBook(int(scenario.limits.listen_key_validity * 1000))
        self.streams = StreamHub(scenario, self.board, self.listen_keys, self.now_ms)
        self.api = ApiHub(scenario, self.board, self.tokens, self.now_ms)
        self.cursor = Cursor(scenario, flush_every=None if realtime else scenario.streams.ticker_interval)
        self.requests: deque[RequestRecord] = deque(maxlen=1000)

    def now_ms(self) -> int:
        """Wall-clock time in ms (``serverTime``)."""
        return int(self.clock() * 1000)

    @property
    def sim_time(self) -> float:
        """Simulated seconds since the start of the timeline."""
        return self.cursor.now

    def real_seconds(self, sim_seconds: float) -> float:
        """Real seconds that ``sim_seconds`` of simulated time take (same in manual mode)."""
        return sim_seconds / self.scenario.timeline.speed if self.realtime else sim_seconds

    # --- driving ---------------------------------------------------------------------------

    def run_until(self, until: float) -> None:
        """Process every timeline item due up to simulated time ``until``."""
        for _ in self.steps(until):
            pass

    def steps(self, until: float) -> Iterator[float]:
        """Process the items due up to ``until`` one by one, yielding each one's time."""
        for t, item in self.cursor.due(until):
            self.board.update(t)
            self.process(item)
            yield t
        self.board.update(until)
        self.housekeeping()

    def process(self, item: Item) -> None:
        """Apply one timeline item."""
        if isinstance(item, Tick):
            self.set_price(item.symbol, item.price)
        elif isinstance(item, Event):
            self.apply_event(item)
        elif isinstance(item, Fault):
            self.inject_fault(item)
        elif item is INTEREST:
            self.emit(self.state.accrue_interest())
        elif item is FLUSH:
            self.streams.flush_tickers()

    def housekeeping(self) -> None:
        """Expire listen tokens' subscriptions and listen keys whose time has passed."""
        now = self.now_ms()
        self.api.expire(now)
        expired = self.listen_keys.pop_expired(now)
        if expired:
            self.streams.expire_keys(expired, now)

    # --- changes ---------------------------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal) -> None:
        """A new price of ``symbol``: books, market streams and status changes."""
        emissions = self.state.set_price(symbol, price)
        self.streams.tick(symbol, price)
        self.emit(emissions)

    def apply_event(self, event: Event) -> None:
        """An account event and the user-data events it emits."""
        log.info("sim_event", type=event.type, account=event.account, asset=event.asset, symbol=event.symbol)
        self.emit(self.state.apply(event))

    def emit(self, emissions: list[Emission]) -> None:
        """Route user-data events to WS-API subscriptions and risk events to listen-key streams."""
        for e in emissions:
            if isinstance(e, UserEvent):
                self.api.deliver(e.account, e.scope, e.payload)
            elif isinstance(e, RiskEvent):
                self.streams.deliver_risk(e.account, e.payload)
                if self.scenario.streams.risk_events_on_ws_api:
                    self.api.deliver(e.account, None, e.payload)

    def inject_fault(self, fault: Fault) -> None:
        """Start a fault now (windowed faults last ``duration`` simulated seconds)."""
        log.info(
            "sim_fault", kind=fault.kind, target=fault.target, account=fault.account, duration=fault.duration
        )
        if fault.kind in WINDOWED:
            self.board.open(fault, self.sim_time)
            return
        streams = [sc.conn for sc in self.streams.connections] if fault.target != "ws_api" else []
        apis = [a.conn for a in self.api.connections] if fault.target != "streams" else []
        if fault.kind == "drop":
            for conn in [*streams, *apis]:
                conn.abort()
        elif fault.kind == "close_1001":
            for conn in [*streams, *apis]:
                conn.close_soon(1001)
        elif fault.kind == "malformed_frame":
            for conn in [*streams, *apis]:
                conn.send_text(MALFORMED)
        elif fault.kind == "expire_listen_token":
            self.tokens.expire(self.now_ms(), fault.account)
            self.api.cut(self.now_ms(), fault.account)
        elif fault.kind == "revoke_key":
            assert fault.account is not None
            self.state.revoke(fault.account)
        elif fault.kind == "server_shutdown":  # Binance's notice before a restart; the socket stays open
            notice = {"e": "serverShutdown", "E": self.now_ms()}
            for sc in self.streams.connections if fault.target != "ws_api" else []:
                sc.push("!serverShutdown", notice)
            for conn in apis:
                conn.send({"event": notice})
