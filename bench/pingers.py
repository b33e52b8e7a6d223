"""What pinging N quiet connections leaves on the event loop (not a CI test); prints JSON.

One process, a websockets server on 127.0.0.1 that never pings, ``--connections`` clients, each
pinged every ``--interval`` s (20 s in the daemon, scaled down here) in one of two ways:

- ``double`` (before #12's fix): websockets' keepalive (``ping_interval = ping_timeout = interval``)
  *and* the old probe (sleep, ping, await the pong, beat);
- ``single`` (now): no websockets keepalive, ``monitor.exchange.userdata.probe`` alone.

After ``--turns`` intervals it counts the loop's scheduled timer handles (and how many of them are
cancelled but still in the heap), the tasks, and the objects the cyclic GC tracks.

Usage: ``python bench/pingers.py --mode double`` and ``--mode single``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from monitor.exchange.supervisor import Heartbeat
from monitor.exchange.userdata import probe


async def old_probe(ws: ClientConnection, heartbeat: Heartbeat, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        pong = await ws.ping()
        await pong
        heartbeat.beat()


async def quiet(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def measure(mode: str, connections: int, interval: float, turns: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    keepalive = interval if mode == "double" else None
    async with serve(quiet, "127.0.0.1", 0, ping_interval=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        clients = [
            await connect(
                f"ws://127.0.0.1:{port}", ping_interval=keepalive, ping_timeout=keepalive, compression=None
            )
            for _ in range(connections)
        ]
        beats = Heartbeat(loop.time, time.monotonic, lambda: None)
        pingers = [
            asyncio.create_task(
                old_probe(ws, beats, interval) if mode == "double" else probe(ws, beats, interval, interval)
            )
            for ws in clients
        ]
        await asyncio.sleep(interval * turns + interval / 3)
        scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
        gc.collect()
        result = {
            "mode": mode,
            "connections": connections,
            "interval_s": interval,
            "turns": turns,
            "scheduled_handles": len(scheduled),
            "cancelled_in_heap": sum(h.cancelled() for h in scheduled),
            "tasks": len(asyncio.all_tasks()),
            "gc_tracked_objects": len(gc.get_objects()),
            "pingers_failed": sum(t.done() for t in pingers),
        }
        for task in pingers:
            task.cancel()
        await asyncio.gather(*pingers, return_exceptions=True)
        for ws in clients:
            await ws.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["double", "single"], required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--turns", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.mode, args.connections, args.interval, args.turns)), indent=2))


if __name__ == "__main__":
    main()
