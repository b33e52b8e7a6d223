"""The floor of the loop-lag probe: a process that reads the daemon's market stream and does nothing else.

Run by ``bench/floor.py`` (``bench/crash.py --floor``) as ``python bench/null_daemon.py WS_URL
SYMBOLS``: it opens the combined bookTicker stream of those symbols on the simulator
(``WS_URL/stream?streams=btcusdt@bookTicker/...``, the connection the simulator's tick driver pushes
to, as it does to the daemon's), decodes every frame (``orjson.loads``, as the daemon's market
core does) and keeps nothing, while the same loop-lag probe as the daemon's runs
(``bench/lag_probe.py``). A lag sample over 5 ms here is the machine's (the OS, the other
processes), not a daemon's. It prints ``{"connected": ...}``, then obeys JSON commands, one a line,
on stdin, each answered with one JSON line on stdout:

- ``{"cmd": "mark", "at_least": n, "within": s}``: frames decoded so far (waiting up to ``s``
  seconds until there are ``n``), this process's CPU seconds and the time;
- ``{"cmd": "dump", "out": FILE}``: every lag sample so far to ``FILE`` (JSON);
- ``{"cmd": "duty", "share": d}``: from now on also keep the loop busy a share ``d`` of the time
  (0: not), in steps of a fixed amount of pure-Python work (:data:`STEP_UNITS` units calibrated
  at start to ~100 µs each, so ~0.2 ms a step at the machine's best speed), each followed by a
  sleep of the best step time × (1 − d) / d. The work is fixed, not timed: when the machine is
  slow, each step takes longer, as the daemon's work does. So the probe then measures a loop as
  busy as the daemon's, none of whose steps holds it over ~0.2 ms, with no collection, thread or
  disk: what is over 5 ms there is the machine's at the daemon's load;
- ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from lag_probe import LagProbe
from websockets.asyncio.client import ClientConnection, connect

STEP_UNITS = 2  # calibrated ~100 µs units of work per busy step


def unit_work(n: int) -> int:
    """A fixed amount of pure-Python work (``n`` iterations of integer arithmetic)."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def calibrate(target: float = 100e-6) -> tuple[int, float]:
    """Iterations of :func:`unit_work` taking ~``target`` s at best, and its best time (of 50)."""
    n = 1000
    while True:
        best = min(_timed(n) for _ in range(5))
        if best >= target / 2:
            break
        n *= 2
    n = max(1, int(n * target / best))
    return n, min(_timed(n) for _ in range(50))


def _timed(n: int) -> float:
    start = time.perf_counter()
    unit_work(n)
    return time.perf_counter() - start


class NullDaemon:
    """Counts the frames it decodes; and, when asked, keeps the loop busy in short steps."""

    def __init__(self) -> None:
        self.frames = 0
        self.probe = LagProbe()
        self.share = 0.0
        self.busy_steps = 0
        self._iterations, self._unit_best = calibrate()
        self._duty_set = asyncio.Event()

    def duty(self, share: float) -> dict[str, Any]:
        self.share = max(0.0, min(0.9, share))
        self._duty_set.set()
        return {"share": self.share, "unit_us": round(self._unit_best * 1e6, 1), "steps": self.busy_steps}

    async def burn(self) -> None:
        """Steps of fixed work, each then a sleep, at the share set (none at 0)."""
        step_best = STEP_UNITS * self._unit_best
        while True:
            if self.share <= 0:
                self._duty_set.clear()
                await self._duty_set.wait()
                continue
            for _ in range(STEP_UNITS):
                unit_work(self._iterations)
            self.busy_steps += 1
            await asyncio.sleep(step_best * (1 - self.share) / self.share)

    async def read(self, ws: ClientConnection) -> None:
        loads = orjson.loads
        async for raw in ws:
            loads(raw)
            self.frames += 1

    async def mark(self, at_least: int = 0, within: float = 0.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while self.frames < at_least and time.monotonic() < deadline:  # noqa: ASYNC110 - after a phase
            await asyncio.sleep(0.01)
        return {"frames": self.frames, "cpu": time.process_time(), "at": time.monotonic()}

    def dump(self, out: str) -> dict[str, Any]:
        Path(out).write_text(json.dumps(self.probe.samples))
        return {"samples": len(self.probe.samples)}


def stream_url(ws_url: str, symbols: list[str]) -> str:
    return f"{ws_url}/stream?streams=" + "/".join(f"{s.lower()}@bookTicker" for s in symbols)


async def main(ws_url: str, symbols: list[str]) -> None:
    null = NullDaemon()
    # the daemon's websockets settings (monitor.exchange.streams.default_connect), read at full speed
    async with connect(
        stream_url(ws_url, symbols), ping_interval=20, ping_timeout=20, max_queue=1024, compression=None
    ) as ws:
        tasks = [
            asyncio.create_task(null.read(ws)),
            asyncio.create_task(null.probe.run()),
            asyncio.create_task(null.burn()),
        ]
        print(json.dumps({"connected": len(symbols)}), flush=True)
        try:
            while line := await asyncio.to_thread(sys.stdin.readline):
                cmd = json.loads(line)
                if cmd["cmd"] == "quit":
                    break
                if cmd["cmd"] == "mark":
                    reply = await null.mark(int(cmd.get("at_least", 0)), float(cmd.get("within", 0.0)))
                elif cmd["cmd"] == "duty":
                    reply = null.duty(float(cmd["share"]))
                else:
                    reply = null.dump(cmd["out"])
                print(json.dumps(reply), flush=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2].split(",")))
