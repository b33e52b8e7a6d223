"""Where the exchange is: Binance's URLs from the config, or those of the embedded simulator.

The one place the daemon starts the simulator (``exchange.kind: simulator``), so that nothing below
the shell imports it (the ``simulator-apart`` import-linter contract).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import structlog

from monitor.config.model import Config, ConfigError
from monitor.watch.accounts import Endpoints

log = structlog.get_logger("monitor.endpoints")


async def open_endpoints(config: Config, config_path: Path, stack: contextlib.AsyncExitStack) -> Endpoints:
    """Binance's URLs from the config, or those of an embedded simulator started on ``stack``."""
    exchange = config.exchange
    if exchange.kind == "binance":
        return Endpoints(
            exchange.rest_url, exchange.stream_url, exchange.ws_api_url, exchange.risk_stream_url
        )
    from monitor.sim import ScenarioError, load_scenario, run_simulator

    local = config_path.parent / exchange.scenario
    try:
        scenario = load_scenario(local if local.is_file() else exchange.scenario)
    except ScenarioError as exc:
        raise ConfigError(f"{config_path}: exchange.scenario: {exc}") from None
    sim = await stack.enter_async_context(run_simulator(scenario, realtime=True))
    log.info("simulator_started", url=sim.base_url, scenario=exchange.scenario)
    return Endpoints(sim.base_url, sim.stream_url, sim.ws_api_url, sim.risk_stream_url)
