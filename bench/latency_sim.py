"""The latency benchmark's exchange: the simulator in its own process, ticking a given price path.

Run by ``bench/latency.py`` as ``python bench/latency_sim.py SCENARIO.json PATH.npz``. It serves the
scenario (REST, WebSocket API, risk streams) in manual mode, prints ``{"url": ...}``, then obeys
JSON commands, one a line, on stdin, answering each with one JSON line on stdout:

- ``{"cmd": "warm"}``: push every symbol's current price once (so the daemon has all prices);
- ``{"cmd": "run", "start": i, "stop": j, "rate": r, "out": FILE}``: push ticks ``i..j-1`` of the
  path at ``r`` messages/s to the daemon's market connection and save each tick's send time
  (``time.monotonic()``, taken as the frame is handed to the connection) to ``FILE`` (.npy);
- ``{"cmd": "quit"}``.

Frames go straight onto the daemon's combined-stream connection (the same queue and writer the
simulator's own ``tick`` uses), pre-formatted: the simulator's per-tick bookkeeping (Decimal maths
and a walk over every connection, about 0.3 ms a tick with 1,000 risk-stream connections) would
not keep up with 5,000 ticks/s in one Python process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from decimal import Decimal
from pathlib import Path as FsPath
from typing import Any

import numpy as np
from latency_workload import Path

from monitor.logs import configure_logging
from monitor.sim import parse_scenario, run_simulator
from monitor.sim.market import StreamConnection
from monitor.sim.scenario import Limits

PACE = 0.0002  # pacing sleep; the event loop rounds it up to its 1 ms resolution


class Driver:
    """Pushes the path's ticks to the daemon's market connection."""

    def __init__(self, sim: Any, path: Path) -> None:
        self.sim = sim
        self.path = path
        self.symbols = list(sim.scenario.prices)
        self.last: dict[int, int] = {}  # symbol index → last tick pushed
        self.update_id = 0

    def market(self) -> StreamConnection | None:
        """The daemon's combined bookTicker connection (the one subscribed to every symbol)."""
        for sc in self.sim.engine.streams.connections:
            if sc.combined and len([n for n in sc.streams if n.endswith("@bookTicker")]) >= len(self.symbols):
                return sc  # type: ignore[no-any-return]
        return None

    def push(self, sc: StreamConnection, s: int, bid: float, ask: float) -> None:
        symbol = self.symbols[s]
        self.update_id += 1
        b, a = f"{bid:.4f}", f"{ask:.4f}"
        sc.conn.send_text(
            f'{{"stream":"{symbol.lower()}@bookTicker","data":{{"u":{self.update_id},"s":"{symbol}",'
            f'"b":"{b}","B":"1.5","a":"{a}","A":"2.5"}}}}',
            symbol,
        )
        self.sim.engine.state.prices[symbol] = Decimal(b) / 2 + Decimal(a) / 2

    async def warm(self) -> dict[str, Any]:
        await self.sim.wait_for(lambda: self.market() is not None, within=120.0)
        sc = self.market()
        assert sc is not None
        prices = self.sim.scenario.prices
        for s, symbol in enumerate(self.symbols):
            last = self.last.get(s)
            if last is None:
                p = float(prices[symbol])
                self.push(sc, s, p, p)
            else:
                self.push(sc, s, float(self.path.bid[last]), float(self.path.ask[last]))
        return {"warmed": len(self.symbols)}

    async def run(self, start: int, stop: int, rate: float, out: str) -> dict[str, Any]:
        sc = self.market()
        assert sc is not None
        sym, bid, ask = self.path.symbol.tolist(), self.path.bid.tolist(), self.path.ask.tolist()
        sent = np.full(stop - start, np.nan)
        clock = time.monotonic
        cpu0, t0 = time.process_time(), clock()
        i = start
        while i < stop:
            due = min(stop, start + int((clock() - t0) * rate) + 1)
            while i < due:
                self.push(sc, sym[i], bid[i], ask[i])
                sent[i - start] = clock()
                self.last[sym[i]] = i
                i += 1
            await asyncio.sleep(PACE)
        wall = clock() - t0
        np.save(out, sent)
        return {
            "sent": stop - start,
            "wall": wall,
            "rate": (stop - start) / wall,
            "cpu": (time.process_time() - cpu0) / wall,
        }


async def main(scenario_file: str, path_file: str) -> None:
    configure_logging("json", "warning")
    data = json.loads(FsPath(scenario_file).read_text())  # noqa: ASYNC240 - once, at start
    if "ws_connections" in Limits.model_fields:  # a simulator with Binance's connection limit (300
        # attempts per 5 min per IP): lifted like the weights, every stream of 1,000 accounts up at once
        data.setdefault("limits", {})["ws_connections"] = 10_000_000
    scenario = parse_scenario(data)
    async with run_simulator(scenario, realtime=False) as sim:
        driver = Driver(sim, Path.load(path_file))
        print(json.dumps({"url": sim.base_url}), flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                break
            if cmd["cmd"] == "warm":
                reply = await driver.warm()
            else:
                reply = await driver.run(cmd["start"], cmd["stop"], cmd["rate"], cmd["out"])
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
