"""The loop-lag floor: the crash's tick load read by ``bench/null_daemon.py`` instead of the daemon.

``bench/crash.py --floor`` runs :func:`floor_pass` after the daemon's pass: the same simulator
pushes the same ticks at the same rates, phase by phase, to a null daemon (a process that only
decodes the frames) with the same loop-lag probe (``bench/lag_probe.py``), pinned where the daemon
was (``--cpus``). Per phase it reports the same lag columns as the daemon's (samples over 5 ms,
the worst, samples taken) and the frames decoded: what the probe measures when nothing holds the
loop, i.e. what of the daemon's count the machine accounts for.

Standalone (no daemon at all, a minute): ``python bench/floor.py [--rates 1000 5000] [--seconds 8]
[--cpus 1:0]`` (``bench/crash.py``'s arguments): the simulator of the crash's workload and the null
daemon; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path as FsPath
from typing import Any

from lag_probe import Sample, columns, within
from latency import BENCH, SimProcess, machine, start_sim
from placement import daemon_cpus, other_cpus, pin

Plan = list[tuple[int, int, int]]  # (rate, first tick, end tick) per phase


class NullProcess(SimProcess):
    """``bench/null_daemon.py`` as a subprocess (the simulator's JSON-line protocol)."""

    @classmethod
    async def launch(cls, ws_url: str, symbols: list[str], cpus: frozenset[int] | None = None) -> NullProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / "null_daemon.py"),
            ws_url,
            ",".join(symbols),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        pin(proc.pid, cpus)
        null = cls(proc)
        await null.reply()
        return null


async def connected(sim: SimProcess, null: NullProcess, symbols: int, tries: int = 50) -> None:
    """Warm until the null daemon gets the frames: the simulator's driver pushes to the first
    connection subscribed to every symbol, which may for a moment still be the daemon's, closing."""
    for _ in range(tries):
        before = int((await null.call(cmd="mark"))["frames"])
        await sim.call(cmd="warm")
        got = await null.call(cmd="mark", at_least=before + symbols, within=1.0)
        if int(got["frames"]) >= before + symbols:
            return
    raise RuntimeError("the null daemon gets no frames from the simulator")


def phase_report(phase: dict[str, Any], samples: list[Sample]) -> dict[str, Any]:
    """One floor phase: the daemon's lag columns over the same window shape, frames, CPU."""
    return {
        "rate": phase["rate"],
        "sent_rate": round(phase["sent_rate"]),
        **columns(within(samples, *phase["window"])),
        "frames_sent": phase["sent"],
        "frames_decoded": phase["frames"],
        "cpu": round(phase["cpu"], 3),
        "duty": phase["duty"],
        "duty_unit_us": phase["duty_unit_us"],
        "busy_steps": phase["busy_steps"],
    }


async def floor_pass(
    sim: SimProcess,
    url: str,
    symbols: list[str],
    plan: Plan,
    tmp: FsPath,
    cpus: frozenset[int] | None = None,
    pause: float = 1.0,
    drain: float = 2.0,
    duty: list[float] | None = None,
) -> list[dict[str, Any]]:
    """Every phase of ``plan`` again, to a null daemon (pinned to ``cpus``); a report per phase
    (a phase's frames counted once all are decoded, or ``drain`` seconds after its last tick).
    ``duty``: per phase, the share of the time the null daemon's loop is kept busy besides
    decoding, in short steps (``bench/null_daemon.py``'s ``duty``), e.g. the daemon's own CPU share
    in that phase: what the machine does to a loop as busy as the daemon's."""
    null = await NullProcess.launch(url.replace("http://", "ws://"), symbols, cpus)
    phases: list[dict[str, Any]] = []
    try:
        await connected(sim, null, len(symbols))
        for i, (rate, start, stop) in enumerate(plan):
            share = duty[i] if duty and i < len(duty) else 0.0
            busy = await null.call(cmd="duty", share=share)
            await asyncio.sleep(pause)  # as the daemon's pass waits for the last phase's alerts
            before = await null.call(cmd="mark")
            wall = time.monotonic()
            file = tmp / f"floor-{rate}-{start}.npy"
            reply = await sim.call(cmd="run", start=start, stop=stop, rate=rate, out=str(file))
            after = await null.call(cmd="mark", at_least=int(before["frames"]) + stop - start, within=drain)
            idle = await null.call(cmd="duty", share=0.0)
            phases.append({
                "rate": rate, "sent_rate": reply["rate"], "sent": stop - start,
                "window": (wall, wall + reply["wall"] + 0.2),  # the daemon's pass's lag window
                "frames": int(after["frames"]) - int(before["frames"]),
                "duty": share, "duty_unit_us": busy["unit_us"], "busy_steps": idle["steps"] - busy["steps"],
                "cpu": (after["cpu"] - before["cpu"]) / max(after["at"] - before["at"], 1e-9),
            })  # fmt: skip
        dump = tmp / "floor-lags.json"
        await null.call(cmd="dump", out=str(dump))
        samples: list[Sample] = [(float(a), float(b), float(c)) for a, b, c in json.loads(dump.read_text())]
    finally:
        await null.stop()
    return [phase_report(p, samples) for p in phases]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from crash import crash_path  # the crash's path, not a cycle at import time
    from latency_workload import make_workload

    work = make_workload(args.accounts, args.symbols, args.per_account, args.seed, levels=(1.33, 1.9))
    path, plan = crash_path(work.prices, args.rates, args.seconds, args.drop, args.seed)
    with tempfile.TemporaryDirectory(prefix="floor-bench-") as tmp_name:
        tmp = FsPath(tmp_name)
        sim, url = await start_sim(tmp, work, path, other_cpus(args.cpus))
        try:
            phases = await floor_pass(sim, url, work.symbols, plan, tmp, daemon_cpus(args.cpus))
        finally:
            await sim.stop()
    return {
        "benchmark": "loop-lag floor: the crash's ticks read by a null daemon",
        "machine": machine(),
        "placement": args.cpus.report() if args.cpus else None,
        "phases": phases,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``bench/crash.py``'s arguments (its workload, ``--cpus``); those of its daemon are unused."""
    from crash import parse_args as crash_args

    return crash_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    pin(os.getpid(), daemon_cpus(arguments.cpus))
    print(json.dumps(asyncio.run(main(arguments)), indent=2))
