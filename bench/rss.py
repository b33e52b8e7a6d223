"""Memory and start-up of the daemon as its own process (not a CI test); prints JSON.

The simulator (``bench/latency_sim.py``) serves ``--accounts`` cross accounts over ``--symbols``
symbols; the daemon runs as ``python -m monitor.cli run`` (``kind: binance`` at the simulator,
one ``json://`` route, HTTP on a free loopback port). Reported: seconds from spawning the daemon
to ``/readyz`` answering 200 (interpreter start and imports included), its RSS (``VmRSS`` of
``/proc/PID/status``) at ready and ``--hold`` seconds later, and its peak (``VmHWM``).

Usage: ``python bench/rss.py --accounts 1`` and ``--accounts 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path as FsPath
from typing import Any

from latency import SimProcess, daemon_config, machine
from latency_workload import make_path, make_workload


def status_mib(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in FsPath(f"/proc/{pid}/status").read_text().splitlines())
    return {k: round(int(fields[v].split()[0]) / 1024, 1) for k, v in (("rss", "VmRSS"), ("peak", "VmHWM"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = make_workload(args.accounts, args.symbols, min(5, args.symbols), 3, levels=(1.8, 2.5))
    path = make_path(work.prices, [(10, 0.0, 0.0)], 3)
    with tempfile.TemporaryDirectory(prefix="rss-bench-") as tmp_name:
        tmp = FsPath(tmp_name)
        (tmp / "scenario.json").write_text(json.dumps(work.scenario()))
        path.save(str(tmp / "path.npz"))
        sim, url = await SimProcess.start(tmp / "scenario.json", tmp / "path.npz")
        port = free_port()
        config = daemon_config(tmp, url, work, ("json://127.0.0.1:9/hook",), http=f"127.0.0.1:{port}")
        started = time.monotonic()
        prefix = os.environ.get("BENCH_DAEMON_PREFIX", "").split()  # e.g. "py-spy record -o F --" to profile
        daemon = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            "monitor.cli",
            "run",
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            warm = asyncio.create_task(sim.call(cmd="warm"))
            while not await asyncio.to_thread(ready, port):
                if daemon.returncode is not None or time.monotonic() - started > 300:
                    raise RuntimeError("the daemon did not become ready")
                await asyncio.sleep(0.02)
            ready_s = time.monotonic() - started
            at_ready = status_mib(daemon.pid)
            await warm
            await asyncio.sleep(args.hold)
            later = status_mib(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(daemon.wait(), 30)
            except TimeoutError:
                daemon.kill()
                await daemon.wait()
            await sim.stop()
    return {
        "benchmark": "daemon process: start-up to ready, RSS",
        "tree": os.environ.get("PYTHONPATH", ""),
        "machine": machine(),
        "accounts": args.accounts,
        "symbols": args.symbols,
        "ready_s": round(ready_s, 2),
        "rss_ready_mib": at_ready["rss"],
        "rss_later_mib": later["rss"],
        "rss_peak_mib": later["peak"],
        "hold_s": args.hold,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds after ready for the second RSS")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
