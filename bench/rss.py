"""Memory and start-up of the daemon as its own process (not a CI test); prints JSON.

The simulator (``bench/latency_sim.py``) serves ``--accounts`` cross accounts over ``--symbols``
symbols; the daemon runs as ``python -m monitor.cli run`` (``kind: binance`` at the simulator,
one ``json://`` route, HTTP on a free loopback port). Reported: seconds from spawning the daemon
to ``/readyz`` answering 200 (interpreter start and imports included), the CPU seconds the daemon
and the simulator used until then (not inflated by other processes on a busy machine), its RSS (``VmRSS`` of
``/proc/PID/status``) at ready and ``--hold`` seconds later, and its peak (``VmHWM``).

Usage: ``python bench/rss.py --accounts 1`` and ``--accounts 1000``; with ``--log FILE`` also
``phases_s``, where start-up's time goes (:func:`start_phases`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path as FsPath
from typing import Any

from latency import SimProcess, daemon_config, machine
from latency_workload import make_path, make_workload


def status_mib(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in FsPath(f"/proc/{pid}/status").read_text().splitlines())
    return {k: round(int(fields[v].split()[0]) / 1024, 1) for k, v in (("rss", "VmRSS"), ("peak", "VmHWM"))}


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the send worker, with ``notify.sends: process``)."""
    found: list[int] = []
    for task in FsPath(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def rollup_mib(pid: int) -> dict[str, float]:
    """RSS, PSS (shared pages split between the processes mapping them) and private memory of ``pid``."""
    kb: dict[str, int] = {}
    for line in FsPath(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        kb[name] = int(rest.split()[0])
    private = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {k: round(v / 1024, 1) for k, v in (("rss", kb["Rss"]), ("pss", kb["Pss"]), ("private", private))}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (``/proc/PID/stat``): unlike wall time, not inflated by
    other processes on a busy machine."""
    fields = FsPath(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def spy_on(pid: int, out: str) -> asyncio.subprocess.Process:
    """``py-spy record`` attached to ``pid`` from outside (the daemon's RSS is its own), until ready."""
    spy = shutil.which("py-spy") or str(FsPath(sys.executable).parent / "py-spy")
    return await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--format", "raw",
        "--output", out,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = make_workload(args.accounts, args.symbols, min(5, args.symbols), 3, levels=(1.8, 2.5))
    path = make_path(work.prices, [(10, 0.0, 0.0)], 3)
    with tempfile.TemporaryDirectory(prefix="rss-bench-") as tmp_name:
        tmp = FsPath(tmp_name)
        (tmp / "scenario.json").write_text(json.dumps(work.scenario()))
        path.save(str(tmp / "path.npz"))
        sim, url = await SimProcess.start(tmp / "scenario.json", tmp / "path.npz")
        port = free_port()
        hook = ("json://127.0.0.1:9/hook",)
        config = daemon_config(tmp, url, work, hook, http=f"127.0.0.1:{port}", sends=args.sends)
        if args.log:  # the daemon's info lines (each account's load, ready) to a file, to see where time goes
            config.write_text(config.read_text().replace("level: warning", "level: info"))
        started, spawned_at = time.monotonic(), time.time()
        sim_cpu = cpu_s(sim.proc.pid)
        heap = [str(FsPath(__file__).parent / "heap_top.py"), args.heap] if args.heap else []
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            *heap,
            "-m",
            "monitor.cli",
            "run",
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            if args.log
            else asyncio.subprocess.DEVNULL,
        )
        spy = await spy_on(daemon.pid, args.spy) if args.spy else None
        try:
            warm = asyncio.create_task(sim.call(cmd="warm"))
            while not await asyncio.to_thread(ready, port):
                if daemon.returncode is not None or time.monotonic() - started > 300:
                    raise RuntimeError("the daemon did not become ready")
                await asyncio.sleep(0.02)
            ready_s = time.monotonic() - started
            at_ready = status_mib(daemon.pid)
            cpu_ready = cpu_s(daemon.pid)
            sim_cpu = cpu_s(sim.proc.pid) - sim_cpu
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                await spy.wait()
            await warm
            await asyncio.sleep(args.hold)
            later = status_mib(daemon.pid)
            memory = {str(pid): rollup_mib(pid) for pid in [daemon.pid, *children(daemon.pid)]}
            if args.heap:
                daemon.send_signal(signal.SIGUSR1)
                await asyncio.sleep(min(30.0, 5 + args.accounts / 50))  # the snapshot takes a while
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(daemon.wait(), 30)
            except TimeoutError:
                daemon.kill()
                await daemon.wait()
            await sim.stop()
    phases = start_phases(FsPath(args.log), spawned_at) if args.log else None
    return {
        "benchmark": "daemon process: start-up to ready, RSS",
        "tree": os.environ.get("PYTHONPATH", ""),
        "machine": machine(),
        "accounts": args.accounts,
        "symbols": args.symbols,
        "ready_s": round(ready_s, 2),
        "cpu_ready_s": round(cpu_ready, 2),
        "sim_cpu_ready_s": round(sim_cpu, 2),
        "rss_ready_mib": at_ready["rss"],
        "rss_later_mib": later["rss"],
        "rss_peak_mib": later["peak"],
        "sends": args.sends,
        "processes_later": memory,  # the daemon, then its children (the send worker): RSS, PSS, private MiB
        "hold_s": args.hold,
        **({"phases_s": phases} if phases is not None else {}),
    }


# the log lines that end each phase of start-up (the last of each kind), in order
PHASES = (
    ("interpreter_imports_config", "state_opened"),
    ("accounts_loaded", "account_loaded"),
    ("delivery_http_tasks", "daemon_started"),
    ("streams_first_prices_ready", "daemon_ready"),
)


def start_phases(log: FsPath, spawned_at: float) -> dict[str, float]:
    """Seconds of each phase of start-up, from the daemon's info log (``--log``): spawn → the state
    file opened (interpreter, imports, config) → the last account loaded (REST) → ``daemon_started``
    (delivery, HTTP, tasks started) → ``daemon_ready`` (market connected, first prices evaluated,
    readiness decided). Info logging itself costs a little: compare runs with ``--log`` only."""
    last: dict[str, float] = {}
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        when = entry.get("timestamp")
        if entry.get("event") in {event for _, event in PHASES}:
            last[entry["event"]] = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    phases, before = {}, spawned_at
    for name, event in PHASES:
        if event in last:
            phases[name] = round(last[event] - before, 3)
            before = last[event]
    return phases


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument(
        "--symbols",
        type=int,
        help="default: 5 an account, at most 100 (the daemon subscribes to its accounts' only)",
    )
    parser.add_argument("--spy", help="py-spy's samples (raw) from spawn to ready to this file")
    parser.add_argument(
        "--heap", help="run the daemon under tracemalloc: its top allocation sites to this file"
    )
    parser.add_argument("--log", help="the daemon's stderr (log level info) into this file")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds after ready for the second RSS")
    parser.add_argument(
        "--sends", choices=["auto", "threads", "process"], default="auto",
        help="the daemon's notify.sends (auto: a worker process from 20 accounts)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.symbols is None:
        args.symbols = min(100, 5 * args.accounts)
    return args


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
