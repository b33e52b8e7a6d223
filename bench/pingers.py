"""What pinging N quiet connections leaves on the event loop (not a CI test); prints JSON.

One process, a websockets server on 127.0.0.1 that never pings, ``--connections`` clients, each
pinged every ``--interval`` s (20 s in the daemon, scaled down here) in one of three ways:

- ``double`` (before #12's first fix): websockets' keepalive (``ping_interval = ping_timeout =
  interval``) *and* the old probe (sleep, ping, await the pong, beat);
- ``single`` (#12's first fix): no websockets keepalive, a probe task per connection that sleeps
  and pings (``own_probe``, the former ``monitor.exchange.userdata.probe``);
- ``shared`` (now): ``monitor.exchange.userdata.probe``, registered with the loop's one shared
  pinger (``monitor/exchange/pinger.py``).

After ``--turns`` intervals it counts the loop's scheduled timer handles (and how many of them are
cancelled but still in the heap), the tasks, and the objects the cyclic GC tracks; and, over the
whole run, the pings sent in each event-loop turn (turns counted by wrapping the loop's
``_run_once``): the most in one turn, and how many turns sent more than one.

Usage: ``python bench/pingers.py --mode double``, ``--mode single`` and ``--mode shared``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import time
from collections import Counter
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


async def own_probe(ws: ClientConnection, heartbeat: Heartbeat, interval: float) -> None:
    """The probe before the shared pinger: one task per connection, sleeping between pings."""

    def answered(pong: asyncio.Future[float]) -> None:
        if not pong.cancelled() and pong.exception() is None:
            heartbeat.beat()

    pong: asyncio.Future[float] | None = None
    await asyncio.sleep(random.random() * interval)
    while True:
        if pong is not None and not pong.done():
            raise RuntimeError("no pong within the interval")
        pong = asyncio.ensure_future(await ws.ping())
        pong.add_done_callback(answered)
        await asyncio.sleep(interval)


class Turns:
    """Counts the loop's turns and the pings sent in each."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.turn = 0
        self.per_turn: Counter[int] = Counter()
        run_once = loop._run_once  # type: ignore[attr-defined]

        def counted() -> None:
            self.turn += 1
            run_once()

        loop._run_once = counted  # type: ignore[attr-defined]

    def watch(self, ws: ClientConnection) -> None:
        ping = ws.ping

        async def counted(data: Any = None) -> Any:
            self.per_turn[self.turn] += 1
            return await ping(data)

        ws.ping = counted  # type: ignore[method-assign]


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
        turns_seen = Turns(loop)
        for ws in clients:
            turns_seen.watch(ws)
        beats = Heartbeat(loop.time, time.monotonic, lambda: None)
        pinger = {"double": old_probe, "single": own_probe}.get(mode)
        pingers = [
            asyncio.create_task(
                pinger(ws, beats, interval) if pinger is not None else probe(ws, beats, interval, interval)
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
            "pings": sum(turns_seen.per_turn.values()),
            "most_pings_in_one_turn": max(turns_seen.per_turn.values(), default=0),
            "turns_with_more_than_one_ping": sum(n > 1 for n in turns_seen.per_turn.values()),
        }
        for task in pingers:
            task.cancel()
        await asyncio.gather(*pingers, return_exceptions=True)
        for ws in clients:
            await ws.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["double", "single", "shared"], required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--turns", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.mode, args.connections, args.interval, args.turns)), indent=2))


if __name__ == "__main__":
    main()
