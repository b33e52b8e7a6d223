"""The simulator's books without the network: levels, statuses, events and the realtime driver."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from monitor.sim import Event, parse_scenario, run_simulator
from monitor.sim.levels import Holding, liquidation_price, pair_level, status
from monitor.sim.scenario import CROSS_BARS
from monitor.sim.state import ExchangeState, RiskEvent, UserEvent

BARS = CROSS_BARS["MARGIN_1"]


def books(scenario_data: dict[str, Any]) -> ExchangeState:
    """Fresh books for the scenario, at a fixed wall clock."""
    return ExchangeState(parse_scenario(scenario_data), lambda: 1_800_000_000_000)


def event(**fields: Any) -> Event:
    """An account event for the demo account."""
    return Event.model_validate({"account": "demo", **fields})


def test_status_bands() -> None:
    """Levels map to Binance's five statuses around the bars (1.5 / 1.3 / 1.1 + 0.02 / 1.1)."""
    levels = ["2", "1.5", "1.31", "1.3", "1.13", "1.12", "1.11", "1.1", "0.9"]
    assert [status(Decimal(v), BARS) for v in levels] == [
        "EXCESSIVE",
        "NORMAL",
        "NORMAL",
        "MARGIN_CALL",
        "MARGIN_CALL",
        "PRE_LIQUIDATION",
        "PRE_LIQUIDATION",
        "FORCE_LIQUIDATION",
        "FORCE_LIQUIDATION",
    ]
    assert status(None, BARS) == "EXCESSIVE"


@given(
    base=st.decimals("0.01", "100", places=4),
    quote=st.decimals("0", "100000", places=2),
    debt=st.decimals("1", "100000", places=2),
    bar=st.decimals("1.01", "1.5", places=3),
)
def test_liquidation_price_gives_the_bar(base: Decimal, quote: Decimal, debt: Decimal, bar: Decimal) -> None:
    """At the isolated liquidation price the pair's level equals the bar (quote-debt pairs)."""
    b, q = Holding("BTC", free=base), Holding("USDT", free=quote, borrowed=debt)
    price = liquidation_price(b, q, bar)
    if price is None:
        assert quote >= bar * debt  # the level stays above the bar at any price
    else:
        level = pair_level(b, q, price).margin_level
        assert level is not None and abs(level - bar) < Decimal("1e-20")


def test_repay_pays_interest_first_and_is_capped(scenario_data: dict[str, Any]) -> None:
    """A repay takes interest before principal and never more than free or the debt."""
    state = books(scenario_data)
    state.apply(event(type="repay", asset="USDT", amount="100"))
    usdt = state.accounts["demo"].cross["USDT"]
    assert (usdt.free, usdt.borrowed, usdt.interest) == (Decimal(400), Decimal("19903.1"), Decimal(0))
    state.apply(event(type="repay", asset="USDT", amount="100000"))
    assert (usdt.free, usdt.borrowed) == (Decimal(0), Decimal("19503.1"))


def test_transfer_out_is_capped_at_free(scenario_data: dict[str, Any]) -> None:
    """A transfer out larger than free moves only what is free; balanceUpdate says how much."""
    state = books(scenario_data)
    out = state.apply(event(type="transfer_out", asset="BTC", amount="5"))
    update = next(e for e in out if isinstance(e, UserEvent) and e.payload["e"] == "balanceUpdate")
    assert update.payload["d"] == "-1.20000000"
    assert state.accounts["demo"].cross["BTC"].free == 0


def test_isolated_liquidation_leaves_equity_in_quote(scenario_data: dict[str, Any]) -> None:
    """An isolated liquidation repays the pair's debt from its assets and leaves the rest in quote."""
    state = books(scenario_data)
    out = state.apply(event(type="liquidation", symbol="BTCUSDT"))
    pair = state.accounts["demo"].pairs["BTCUSDT"]
    assert (pair.base.free, pair.quote.free, pair.quote.debt) == (Decimal(0), Decimal("6099.6"), Decimal(0))
    assert [e.scope for e in out if isinstance(e, UserEvent)] == ["BTCUSDT"]
    assert not [e for e in out if isinstance(e, RiskEvent) and e.payload["e"] == "USER_LIABILITY_CHANGE"]


def test_set_balance_and_status_change_only_on_change(scenario_data: dict[str, Any]) -> None:
    """set_balance emits the position and a liability change; the level status is sent once per change."""
    state = books(scenario_data)
    out = state.apply(event(type="set_balance", asset="USDT", borrowed="25000"))
    kinds = [e.payload["e"] for e in out]
    assert kinds == ["USER_LIABILITY_CHANGE", "outboundAccountPosition", "MARGIN_LEVEL_STATUS_CHANGE"]
    assert [e.payload["s"] for e in out if e.payload["e"] == "MARGIN_LEVEL_STATUS_CHANGE"] == ["NORMAL"]
    assert state.set_price("BTCUSDT", Decimal("30001")) == []


async def test_realtime_mode_moves_at_the_scenario_speed(scenario_data: dict[str, Any]) -> None:
    """In realtime mode the timeline runs by itself at ``speed`` and miniTickers flush every interval."""
    scenario_data["timeline"]["speed"] = 50  # the 10 s ramp takes 0.2 s
    scenario_data["streams"] = {"ticker_interval": 0.05}
    async with run_simulator(parse_scenario(scenario_data), realtime=True) as sim:
        async with connect(f"{sim.stream_url}/ws/btcusdt@miniTicker") as ws:
            await sim.wait_for(lambda: sim.sim_time >= 10, within=3)
            closes = set()
            while "25000.00000000" not in closes:
                closes.add(json.loads(await asyncio.wait_for(ws.recv(), 2))["c"])
        assert sim.account("demo").cross["BTC"].free == Decimal("1.2")
