"""The simulator's core: books, hubs and the timeline, wired together without the HTTP server.

Two clocks: the *wall clock* (``clock``, seconds since the epoch; real time by default) gives
``serverTime``, event times, timestamp checks, rate-limit minutes and token/listen-key expiry;
the *simulated time* (seconds since the start of the timeline, moved by :meth:`advance`) places
ticks, events, faults and hourly interest.

Stream events and REST views may arrive late (``delivery`` of the scenario or of one event; see
``delivery.py``): they are released as simulated time passes their due time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog

from monitor.sim.auth import WeightMeter
from monitor.sim.delivery import Courier, RestLag, channel_of, copy_account
from monitor.sim.faults import WINDOWED, FaultBoard
from monitor.sim.market import StreamHub
from monitor.sim.scenario import Delivery, Event, Fault, Scenario
from monitor.sim.sources import Tick
from monitor.sim.state import AccountState, Emission, ExchangeState, RiskEvent, UserEvent
from monitor.sim.timeline import FLUSH, INTEREST, Cursor, Item
from monitor.sim.userdata import ApiHub, ListenKeyBook, TokenBook

log = structlog.get_logger(__name__)
MALFORMED = '{"stream":"btcusdt@bookTicker","data":{"u":4009002'


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One REST request the simulator answered (for tests and the demo)."""

    method: str
    path: str
    status: int
    api_key: str | None


class SimExchange:
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
        self.courier = Courier()
        self.rest_lag = RestLag()
        self.delivery = scenario.delivery
        # observers (tests): every stream event as it is delivered, every price as it is set
        self.on_deliver: list[Callable[[Emission], Any]] = []
        self.on_price: list[Callable[[str, Decimal], Any]] = []

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
            self._release(t)
            self.board.update(t)
            self.process(item)
            yield t
        self._release(until)
        self.board.update(until)
        self.housekeeping()

    def next_due(self) -> float:
        """The simulated time of the next timeline item or delayed delivery."""
        return min(self.cursor.next_due(), self.courier.next_due())

    def rest_view(self, acc: AccountState) -> AccountState:
        """The state of ``acc`` that REST shows now (``rest_lag`` behind the live one)."""
        return self.rest_lag.view(acc, self.sim_time)

    def _release(self, until: float) -> None:
        for emission in self.courier.due(until):
            self._deliver(emission)

    def process(self, item: Item) -> None:
        """Apply one timeline item."""
        if isinstance(item, Tick):
            self.set_price(item.symbol, item.price)
        elif isinstance(item, Event):
            self.apply_event(item)
        elif isinstance(item, Fault):
            self.inject_fault(item)
        elif item is INTEREST:
            self.accrue_interest()
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
        for observe in self.on_price:
            observe(symbol, price)
        self.streams.tick(symbol, price)
        self.emit(emissions)

    def apply_event(self, event: Event) -> None:
        """An account event and the user-data events it emits."""
        log.info("sim_event", type=event.type, account=event.account, asset=event.asset, symbol=event.symbol)
        delivery = event.delivery.over(self.delivery) if event.delivery else self.delivery
        acc = self.state.accounts[event.account]
        lag = delivery.seconds("rest_lag")
        before = copy_account(acc) if lag > 0 and not self.rest_lag.pending(acc.name) else None
        emissions = self.state.apply(event)
        self.rest_lag.record(acc, before, self.sim_time, lag)
        self.emit(emissions, delivery)

    def accrue_interest(self) -> None:
        """The hourly interest of every account (REST shows it ``rest_lag`` later)."""
        lag = self.delivery.seconds("rest_lag")
        before = {
            name: copy_account(acc)
            for name, acc in self.state.accounts.items()
            if lag > 0 and not self.rest_lag.pending(name)
        }
        emissions = self.state.accrue_interest()
        for name, acc in self.state.accounts.items():
            self.rest_lag.record(acc, before.get(name), self.sim_time, lag)
        self.emit(emissions)

    def set_delivery(self, **delays: float) -> None:
        """Change the default delays (``user_data``, ``risk``, ``rest_lag`` in simulated seconds)."""
        self.delivery = Delivery(**{**self.delivery.model_dump(), **delays})

    def emit(self, emissions: list[Emission], delivery: Delivery | None = None) -> None:
        """Send stream events now or, when their channel is delayed, once simulated time gets there."""
        delivery = delivery or self.delivery
        for e in emissions:
            delay = delivery.seconds(channel_of(e))
            if delay > 0 or len(self.courier):
                self.courier.send(e, self.sim_time, delay)  # behind any event still on its way
            else:
                self._deliver(e)
        self._release(self.sim_time)

    def _deliver(self, e: Emission) -> None:
        """Route user-data events to WS-API subscriptions and risk events to listen-key streams."""
        for observe in self.on_deliver:
            observe(e)
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
