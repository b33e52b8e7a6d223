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


class NullDaemon:
    """Counts the frames it decodes; nothing else."""

    def __init__(self) -> None:
        self.frames = 0
        self.probe = LagProbe()

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
        tasks = [asyncio.create_task(null.read(ws)), asyncio.create_task(null.probe.run())]
        print(json.dumps({"connected": len(symbols)}), flush=True)
        try:
            while line := await asyncio.to_thread(sys.stdin.readline):
                cmd = json.loads(line)
                if cmd["cmd"] == "quit":
                    break
                if cmd["cmd"] == "mark":
                    reply = await null.mark(int(cmd.get("at_least", 0)), float(cmd.get("within", 0.0)))
                else:
                    reply = null.dump(cmd["out"])
                print(json.dumps(reply), flush=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2].split(",")))
