"""More than 1,024 symbols: MarketStream opens a second connection instead of dropping symbols.

Runs against the simulator, which refuses a connection URL or a SUBSCRIBE that would put more
than 1,024 streams on one connection (Binance's limit per connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
import pytest
from websockets.asyncio.client import connect

from monitor.exchange.streams import MarketStream
from monitor.exchange.supervisor import Backoff
from monitor.sim import parse_scenario, run_simulator
from monitor.sim.market import MAX_STREAMS

FAST = Backoff(initial=0.05, maximum=0.2)
SYMBOLS = [f"C{i:04d}USDT" for i in range(1100)]


def many_symbols(symbols: list[str]) -> dict[str, object]:
    prices = {"BTCUSDT": "30000", **{s: "1.5" for s in symbols}}
    return {
        "quote": "USDT",
        "prices": prices,
        "streams": {"quote_refresh": "1s"},
        "accounts": [{"name": "demo", "api_key": "k", "api_secret": "s", "cross": [{"asset": "USDT"}]}],
    }


async def until(condition: Callable[[], bool], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_more_than_1024_symbols_use_a_second_connection() -> None:
    """1,100 symbols: two connections (1,024 + 76 streams), every symbol priced, none refused."""
    seen: set[str] = set()
    scenario = parse_scenario(many_symbols(SYMBOLS), source="<many>")
    async with run_simulator(scenario, realtime=True) as sim:
        stream = MarketStream(sim.stream_url, SYMBOLS, lambda batch: seen.update(batch), backoff=FAST)
        task = asyncio.create_task(stream.run())

        def server_sizes() -> list[int]:
            return sorted(len(sc.streams) for sc in sim.engine.streams.connections)

        try:
            await until(lambda: seen >= set(SYMBOLS))
            assert len(stream.connections) == 2
            assert [len(c.symbols) for c in stream.connections] == [MAX_STREAMS, 1100 - MAX_STREAMS]
            assert stream.rejected == frozenset()
            assert stream.stats().connected
            assert server_sizes() == [1100 - MAX_STREAMS, MAX_STREAMS]
            assert set(stream.ages()) == set(SYMBOLS)

            # shrinking keeps symbols on their connection; growing fills the free room first
            stream.set_symbols(SYMBOLS[:1000])
            await until(lambda: server_sizes() == [0, 1000])
            stream.set_symbols([*SYMBOLS, "BTCUSDT"])
            assert len(stream.connections) == 2
            assert sum(len(c.symbols) for c in stream.connections) == 1101
            await until(lambda: server_sizes() == [77, 1024])
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_simulator_refuses_a_1025th_stream_on_one_connection() -> None:
    """The simulator enforces Binance's 1,024 streams per connection on SUBSCRIBE too."""
    symbols = SYMBOLS[: MAX_STREAMS + 1]
    scenario = parse_scenario(many_symbols(symbols), source="<many>")
    async with run_simulator(scenario, realtime=True) as sim, connect(f"{sim.stream_url}/ws") as ws:
        replies = []
        for i, start in enumerate(range(0, len(symbols), 200)):
            params = [f"{s.lower()}@bookTicker" for s in symbols[start : start + 200]]
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": i}).decode())
            while True:
                reply = orjson.loads(await ws.recv())
                if reply.get("id") == i:
                    replies.append(reply)
                    break
            await asyncio.sleep(0.25)  # 5 incoming messages a second at most
        assert all(r.get("result", "x") is None for r in replies[:-1])
        assert "more than 1024 streams" in replies[-1]["error"]["msg"]
