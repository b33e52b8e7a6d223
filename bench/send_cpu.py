"""CPU per alert sent, on the event loop and off it, through the real Dispatcher; prints JSON.

The Dispatcher (SQLite outbox, retry stage, send stage, the default Apprise sender) sends ``--alerts``
alerts, put in 8 at a time as the pump does, to ``bench/webhook_receiver.py`` (Apprise ``json://``,
another process), after 20 to warm up. Measured per alert sent, from the first ``enqueue_many`` to the
last row marked sent: the event loop's thread CPU (``time.thread_time``: what other processes on the
machine do is not counted), the other threads' CPU (the process's CPU minus the loop's: Apprise's or
the sender's threads), the loop's callbacks (``Handle._run`` calls) and those over 1 ms of CPU, wall
time, and how late a 5 ms sleep on the loop wakes (p99, max: a callback holding the loop, or the
loop waiting for the GIL held by a sending thread). Whatever ``monitor`` is importable is measured:
run it with ``PYTHONPATH`` set to a baseline tree and to this one, interleaved.

Usage: ``python bench/send_cpu.py [--alerts 400] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import monitor
from monitor.alerts.policy import AlertEvent, AlertPolicy, LevelRule, PolicyConfig
from monitor.logs import configure_logging
from monitor.notify.dispatcher import Dispatcher
from monitor.notify.messages import Message
from monitor.notify.route import NotifyRoute
from monitor.store import Store

BENCH = Path(__file__).resolve().parent
WARM = 20


def crossings(n: int) -> list[AlertEvent]:
    """``n`` units each crossing 1.5 once (one alert each)."""
    policy = AlertPolicy(PolicyConfig(levels=(LevelRule("normal", 1.5, ("chat",)),)))
    now, out = time.time(), []
    for i in range(n):
        policy.evaluate(f"cross:{i}", 1.6, None, now)
        out += policy.evaluate(f"cross:{i}", 1.45, None, now)
    return out


def count_callbacks() -> dict[str, int]:
    """Count the loop's callbacks and those over 1 ms of thread CPU (``Handle._run`` wrapped)."""
    counts = {"callbacks": 0, "over_1ms": 0}
    run = asyncio.events.Handle._run

    def counted(self: Any) -> None:
        start = time.thread_time()
        run(self)
        counts["callbacks"] += 1
        if time.thread_time() - start > 0.001:
            counts["over_1ms"] += 1

    asyncio.events.Handle._run = counted  # type: ignore[method-assign]
    return counts


async def probe(lags: list[float]) -> None:
    """How late a 5 ms sleep wakes (the loop held by a callback, or waiting for the GIL)."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(0.005)
        lags.append(time.monotonic() - start - 0.005)


async def one_run(url: str, alerts: int, counts: dict[str, int]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="send-cpu-") as tmp, Store(Path(tmp)) as store:
        d = Dispatcher({"chat": NotifyRoute("chat", (url,))}, store)
        await d.start()
        events = crossings(WARM + alerts)
        letters = [(e, Message(e.dedupe_key, "body " * 40, "warning")) for e in events]
        await d.enqueue_many(letters[:WARM])
        while d.stats()["chat"].sent < WARM:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        counts.update(callbacks=0, over_1ms=0)
        lags: list[float] = []
        prober = asyncio.create_task(probe(lags))
        loop0, cpu0, wall0 = time.thread_time(), time.process_time(), time.monotonic()
        for i in range(WARM, WARM + alerts, 8):
            await d.enqueue_many(letters[i : i + 8])
        while d.stats()["chat"].sent < WARM + alerts:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        loop, cpu, wall = time.thread_time() - loop0, time.process_time() - cpu0, time.monotonic() - wall0
        calls, slow = counts["callbacks"], counts["over_1ms"]
        prober.cancel()
        await d.stop()
    return {
        "loop_cpu_ms": round(loop / alerts * 1000, 3),
        "other_threads_cpu_ms": round((cpu - loop) / alerts * 1000, 3),
        "loop_callbacks": round(calls / alerts, 1),
        "loop_callbacks_over_1ms": slow,
        "wall_ms": round(wall / alerts * 1000, 2),
        "lag_p99_ms": round(sorted(lags)[int(len(lags) * 0.99)] * 1000, 2),
        "lag_max_ms": round(max(lags) * 1000, 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("json", "warning")
    counts = count_callbacks()
    hook = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / "webhook_receiver.py"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert hook.stdout is not None and hook.stdin is not None
    port = json.loads(await hook.stdout.readline())["port"]
    try:
        runs = [await one_run(f"json://127.0.0.1:{port}/hook", args.alerts, counts) for _ in range(args.runs)]
    finally:
        hook.stdin.write(b'{"cmd": "quit"}\n')
        await hook.stdin.drain()
        await hook.wait()
    return {
        "benchmark": "CPU per alert sent through the Dispatcher (per alert)",
        "tree": os.path.dirname(os.path.dirname(monitor.__file__)),
        "alerts": args.alerts,
        "runs": runs,
        "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--alerts", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
