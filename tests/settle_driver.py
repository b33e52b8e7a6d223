"""Drive the daemon's account path on the simulator's manual time, and keep the exact truth beside it.

The simulator (manual mode) plays a timeline: ETH ticking every 50 ms and account operations whose
three views (user data, risk stream, REST) arrive with per-operation delays. The daemon side is the
real one from the account watcher down: ``AccountWatcher`` (python-binance REST against the
simulator over 127.0.0.1, the ledger, the re-read schedule), ``AccountBook``, ``Engine`` and
``AlertPolicy``. Stream events reach it through the same parsers the websocket readers use
(``monitor.exchange.frames``), the instant the simulator delivers them, so an example is exactly
reproducible; the websocket transport itself is covered by the end-to-end tests. Both sides share
one clock: the simulator's time.

After every 50 ms step the driver records the true state (balances and prices, exact ``Decimal``)
and the alert events the engine queued, for the properties in ``test_settle_property.py``.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from monitor.alerts.policy import AlertEvent, AlertPolicy, LevelRule
from monitor.config.model import load_config
from monitor.exchange import frames
from monitor.risk.book import AccountBook
from monitor.risk.margin import Position, cross_level
from monitor.risk.report import unit_id
from monitor.sim import Simulator, parse_scenario, run_simulator
from monitor.sim.state import Emission, RiskEvent
from monitor.watch.accounts import AccountWatcher, Endpoints
from monitor.watch.engine import Engine
from monitor.watch.ladder import policy_for_unit
from monitor.watch.notices import Notice

STEP = 0.05
T0 = 1000.0  # the daemon's clock = T0 + simulated seconds (small: exact float steps)
ACCOUNT = "main"
UNIT = unit_id(ACCOUNT)
Op = dict[str, Any]


def scenario(ops: list[Op], eth_points: list[tuple[float, str]], end: float) -> dict[str, Any]:
    """The issue's account: 10 ETH + 10,000 USDT against a 28,889 USDT loan (level 1.35 at 2,900)."""
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "ETHUSDT": eth_points[0][1]},
        "accounts": [
            {
                "name": ACCOUNT,
                "api_key": "main-key",
                "api_secret": "main-secret",
                "cross": [
                    {"asset": "ETH", "free": "10"},
                    {"asset": "USDT", "free": "10000", "borrowed": "28889"},
                ],
            }
        ],
        "streams": {"quote_refresh": 0, "ticker_interval": 3600},
        "timeline": {
            "duration": end,
            "paths": [{"ramp": "ETHUSDT", "points": [list(p) for p in eth_points], "every": STEP}],
            "events": ops,
        },
    }


@dataclass
class Run:
    """What one example produced: the truth per step and the alerts, both on the daemon's clock."""

    times: list[float] = field(default_factory=list)
    states: list[dict[str, Position]] = field(default_factory=list)
    prices: list[dict[str, Decimal]] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    firing: list[dict[str, str]] = field(default_factory=list)
    settling: list[bool] = field(default_factory=list)
    rules: list[LevelRule] = field(default_factory=list)
    book_level: float | None = None

    def level(self, state: int, prices: int) -> Decimal | None:
        """The exact level of the balances of step ``state`` at the prices of step ``prices``."""
        return cross_level(self.states[state], self.prices[prices], fixed=("USDT",))


def _truth(sim: Simulator) -> tuple[dict[str, Position], dict[str, Decimal]]:
    acc = sim.account(ACCOUNT)
    positions = {a: Position(h.free, h.locked, h.borrowed, h.interest) for a, h in acc.cross.items()}
    state = sim.engine.state
    prices = {a: p for a in positions if a != "USDT" and (p := state.price_of(a)) is not None}
    return positions, prices


def _config(directory: Path, sim: Simulator) -> Path:
    data = {
        "exchange": sim.exchange_config(),
        "accounts": [{"name": ACCOUNT, "api_key": "main-key", "api_secret": "main-secret"}],
        "alerts": {"hysteresis": 0.02, "stale_after": "10s"},
        "notify": {"routes": {"hook": {"urls": ["json://127.0.0.1:9/unused"]}}},
        "state_dir": str(directory / "state"),
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def play(ops: list[Op], eth_points: list[tuple[float, str]], end: float) -> Run:
    """Run one timeline to ``end`` simulated seconds; see the module docstring."""
    run = Run()
    data = scenario(ops, eth_points, end)
    async with run_simulator(parse_scenario(data, source="<property>"), realtime=False) as sim:
        with tempfile.TemporaryDirectory() as tmp:
            config_path = _config(Path(tmp), sim)
            config = load_config(config_path)

            def clock() -> float:
                return T0 + sim.sim_time

            book = AccountBook(quote="USDT", stablecoins=config.exchange.stablecoins)
            endpoints = Endpoints(sim.base_url, sim.stream_url, sim.ws_api_url, sim.risk_stream_url)
            notices: list[Notice] = []
            watcher = AccountWatcher(
                config.accounts[0], config, config_path, endpoints, book, lambda s: None, notices,
                clock=clock, rand=random.Random(7).random,
            )  # fmt: skip
            try:
                assert await watcher.load(), notices
                bars = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}
                policy = AlertPolicy(policy_for_unit(config.alerts, bars, config.route_names()), {})
                watcher.configure_policy(policy)
                engine = Engine(book, policy, clock=clock)
                watcher.engine = engine
                run.rules = [r for r in policy.config_for(UNIT).rules if isinstance(r, LevelRule)]

                def deliver(e: Emission) -> None:
                    if isinstance(e, RiskEvent):
                        events = frames.risk_events(e.account, e.payload)
                    else:
                        events = frames.user_events(e.account, e.scope, e.payload)
                    for event in events:
                        watcher.on_event(event)

                sim.engine.on_deliver.append(deliver)
                sim.engine.on_price.append(lambda symbol, price: engine.on_prices({symbol: float(price)}))

                def record() -> None:
                    while not engine.outbox.empty():
                        run.alerts.append(engine.outbox.get_nowait().event)
                    positions, prices = _truth(sim)
                    run.times.append(clock())
                    run.states.append(positions)
                    run.prices.append(prices)
                    run.firing.append(policy.firing(UNIT))
                    run.settling.append(UNIT in engine.settling)

                engine.on_prices({s: float(p) for s, p in sim.engine.state.prices.items()})
                record()
                for k in range(round(end / STEP)):
                    await sim.advance(STEP)
                    await watcher.reread_if_due()
                    if k % round(1 / STEP) == 0:
                        engine.tick_timers()
                        stale = watcher.stale_units(set(), config.alerts.stale_after)
                        engine.set_staleness(stale, {u: "balances unconfirmed" for u in stale})
                    record()
                run.book_level = book.level(UNIT)
            finally:
                await watcher.close()
    return run
