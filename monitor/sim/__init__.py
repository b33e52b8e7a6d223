"""A Binance-compatible exchange simulator on 127.0.0.1: REST, market streams, user data, scenarios.

See ``monitor/sim/scenarios/README.md`` for the scenario format, the faults and the choices made where
Binance's documentation is silent.
"""

from monitor.sim.auth import sign
from monitor.sim.loader import bundled_scenarios, load_scenario, parse_scenario, resolve_scenario
from monitor.sim.scenario import Event, Fault, Scenario, ScenarioError
from monitor.sim.server import Simulator, run_simulator, serve

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
