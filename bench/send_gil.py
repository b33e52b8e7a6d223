"""How late the event loop runs beside bursts of Apprise sends: on the daemon's threads, in a worker
process, or none (the same loop, no sends: the baseline, measured in the same run); prints JSON.

One process per variant, run in turn (``--rounds`` times, interleaved). Each runs an event loop with
a 1 ms timer (how late each wake-up is: the loop's lag) and a light load (0.2 ms of Python every
2 ms, as a busy daemon's ticks), and every ``--every`` seconds sends a burst of ``--burst`` alerts
through the daemon's real sender, ``--concurrency`` at a time (the retry stage's bound per URL):
:class:`~monitor.notify.apprise_sink.AppriseSender` (``threads``) or
:class:`~monitor.notify.send_process.ProcessSender` (``process``), Apprise ``json://`` to
``bench/webhook_receiver.py`` in another process. The first 2 s (warm-up: threads, the worker, the
imports) are not counted. Lag is wall time, so what the machine does meanwhile counts too: hence
the baseline beside each round.

Usage: ``python bench/send_gil.py [--rounds 3] [--seconds 15] [--burst 40] [--concurrency 4]``;
``--cpus DAEMON:OTHERS`` pins the loop's process (and so its threads and worker) and the receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import webhook_receiver
from placement import add_argument, daemon_cpus, other_cpus, pin

VARIANTS = ("none", "threads", "process")
WARM_UP = 2.0  # s not counted
TICK_WORK = 0.0002  # s of Python per tick
TICK_EVERY = 0.002  # s
TIMER = 0.001  # s: the lag probe's period


async def one_variant(variant: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the loop for ``args.seconds`` with ``variant``'s sends; lag samples in ms."""
    from monitor.notify.apprise_sink import AppriseSender
    from monitor.notify.send_process import ProcessSender

    sender = ProcessSender(level="warning") if variant == "process" else AppriseSender()
    await sender.start([url])
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    stop = start + args.seconds
    lags: list[float] = []
    sent: list[bool] = []

    async def probe() -> None:
        while time.perf_counter() < stop:
            before = loop.time()
            await asyncio.sleep(TIMER)
            if time.perf_counter() > start + WARM_UP:
                lags.append((loop.time() - before - TIMER) * 1000)

    async def ticks() -> None:
        while time.perf_counter() < stop:
            began = time.perf_counter()
            while time.perf_counter() - began < TICK_WORK:
                pass
            await asyncio.sleep(TICK_EVERY)

    gate = asyncio.Semaphore(args.concurrency)

    async def send(n: int) -> None:
        async with gate:
            sent.append(await sender(url, f"MARGIN CALL {n}", "x" * 300, "warning", 10.0))

    async def bursts() -> None:
        n = 0
        while time.perf_counter() < stop - 1.0:
            if variant != "none":
                await asyncio.gather(*(send(n + i) for i in range(args.burst)))
                n += args.burst
            await asyncio.sleep(args.every)

    cpu = time.process_time()
    await asyncio.gather(probe(), ticks(), bursts())
    cpu = time.process_time() - cpu
    await sender.aclose()
    lags.sort()

    def q(p: float) -> float:
        return round(lags[min(len(lags) - 1, int(p * len(lags)))], 2)

    return {
        "variant": variant,
        "sends": len(sent),
        "delivered": sum(sent),
        "samples": len(lags),
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": round(lags[-1], 2),
        "over_2ms": sum(x > 2 for x in lags),
        "over_5ms": sum(x > 5 for x in lags),
        "process_cpu_s": round(cpu, 2),
    }


def child(args: argparse.Namespace) -> None:
    pin(os.getpid(), daemon_cpus(args.cpus))
    print(json.dumps(asyncio.run(one_variant(args.variant, args.url, args))))


def variants_in_turn(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    """Each variant in a child process of its own, ``--rounds`` times in turn."""
    runs = []
    common = ["--seconds", str(args.seconds), "--burst", str(args.burst), "--every", str(args.every)]
    common += ["--concurrency", str(args.concurrency)] + (["--cpus", str(args.cpus)] if args.cpus else [])
    for round_no in range(1, args.rounds + 1):
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--url", url, *common],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            run = {"round": round_no, **json.loads(out.stdout.splitlines()[-1])}
            print(json.dumps(run), file=sys.stderr, flush=True)
            runs.append(run)
    return runs


def parent(args: argparse.Namespace) -> None:
    from latency import machine  # here, not in the measured children (it loads numpy)

    with webhook_receiver.running(lambda pid: pin(pid, other_cpus(args.cpus))) as port:
        runs = variants_in_turn(args, f"json://127.0.0.1:{port}/hook")
    print(json.dumps({
        "benchmark": "event-loop lag beside bursts of Apprise sends: threads, a worker process, none",
        "command": " ".join([Path(sys.executable).name, "bench/send_gil.py", *sys.argv[1:]]),
        "machine": machine(),
        "switch_interval_ms": sys.getswitchinterval() * 1000,
        "workload": {"seconds": args.seconds, "warm_up_s": WARM_UP, "burst": args.burst,
                     "every_s": args.every, "concurrency": args.concurrency,
                     "tick_work_ms": TICK_WORK * 1000, "tick_every_ms": TICK_EVERY * 1000,
                     "timer_ms": TIMER * 1000},
        "placement": args.cpus.report() if args.cpus else None,
        "runs": runs,
    }, indent=2))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--burst", type=int, default=40, help="alerts per burst")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between bursts")
    parser.add_argument("--concurrency", type=int, default=4, help="sends in flight at once")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument("--url", help=argparse.SUPPRESS)
    add_argument(parser)
    args = parser.parse_args()
    if args.variant:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
