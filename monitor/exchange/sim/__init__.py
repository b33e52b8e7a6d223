"""A Binance-compatible exchange simulator on 127.0.0.1: REST, market streams, user data, scenarios.

See ``monitor/scenarios/README.md`` for the scenario format, the faults and the choices made where
Binance's documentation is silent.
"""

from monitor.exchange.sim.auth import sign
from monitor.exchange.sim.loader import bundled_scenarios, load_scenario, parse_scenario, resolve_scenario
from monitor.exchange.sim.scenario import Event, Fault, Scenario, ScenarioError
from monitor.exchange.sim.server import Simulator, run_simulator, serve

__all__ = [
    "Event",
    "Fault",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "bundled_scenarios",
    "load_scenario",
    "parse_scenario",
    "resolve_scenario",
    "run_simulator",
    "serve",
    "sign",
]
