"""The Binance-compatible simulator's public API (implemented in ``monitor.exchange.sim``)."""

from monitor.exchange.sim import (
    Event,
    Fault,
    Scenario,
    ScenarioError,
    Simulator,
    bundled_scenarios,
    load_scenario,
    parse_scenario,
    resolve_scenario,
    run_simulator,
    serve,
)

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
]
