"""The machine's own speed while a bench runs: a gauge process beside the daemon (``bench/crash.py``).

Why: the same tree's lag samples over 5 ms went from 0 to 47 per phase within an hour on this
2-vCPU VM, and its callbacks' CPU time with them (a key check's step from 0.3 to 9 ms): the host
runs other guests, and when it takes the vCPU or shares its core, a guest thread's CPU clock keeps
running. A count of lag samples says nothing about a tree unless the machine's state at that moment
is known.

What it does: every ``--period-ms`` (20) it wakes and runs a fixed unit of pure-Python work (a loop
calibrated at start to take ``--work-us``, 200 µs, on this machine), timing (a) how late it woke
and (b) how long the unit took, wall clock. It runs at the lowest real-time priority (``SCHED_FIFO``
1, where permitted: it then runs the moment it wakes, so no guest thread delays it and (a) and (b)
grow only when the machine itself is slow: the vCPU taken by the host, its core shared, interrupts)
on the CPUs given (the daemon's, with ``--cpus``). It costs the daemon's CPU ~1 % (200 µs every
20 ms; ``bench/gauge.py`` runs it at 100 µs every 5 ms, ~2 %) and delays the daemon's loop by at
most a unit when the two meet.

A reading: ``slow`` = (b) / the run's 10th percentile of (b): 1.0 a normal machine, 3.0 three times
slower than its best. ``bench/crash.py`` puts each lag sample over 5 ms beside the gauge's readings
in its span (``machine_during_late``): a late sample when the machine ran at its normal speed
(``slow`` ≤ 1.5 and no late wake over 1 ms) is counted as the daemon's own, an upper bound: a slow
hour that inflates the daemon's CPU without slowing this small loop is not seen.

Protocol (the bench's JSON lines on stdin/stdout): it prints ``{"calibrated": iterations,
"unit_us": ..., "realtime": bool}`` when ready; ``{"cmd": "dump", "out": FILE}`` writes every
reading so far as JSON ``[[wake time, late µs, unit µs], ...]`` (monotonic clock, shared by the
processes of one Linux machine) and answers ``{"readings": n}``; ``{"cmd": "quit"}`` ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path


def unit(n: int) -> int:
    """The fixed work: ``n`` rounds of integer arithmetic and a dict, the interpreter's staple."""
    acc, seen = 0, {}
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFF
        seen[acc & 63] = i
    return acc + len(seen)


def calibrate(target_us: float) -> int:
    """Rounds of :func:`unit` that take ``target_us`` at this machine's best (of 20 tries)."""
    n = 1000
    while True:
        best = min(_timed(n) for _ in range(20))
        if best >= target_us / 4:
            return max(1, round(n * target_us / best))
        n *= 2


def _timed(n: int) -> float:
    start = time.perf_counter()
    unit(n)
    return (time.perf_counter() - start) * 1e6


def realtime() -> bool:
    """SCHED_FIFO at priority 1 for this process, if the OS lets it."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--period-ms", type=float, default=20.0)
    parser.add_argument("--work-us", type=float, default=200.0)
    args = parser.parse_args()
    rounds = calibrate(args.work_us)
    rt = realtime()
    readings: list[tuple[float, float, float]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def gauge() -> None:
        period = args.period_ms / 1000
        due = time.monotonic() + period
        while not stop.is_set():
            time.sleep(max(0.0, due - time.monotonic()))
            woke = time.monotonic()
            took = _timed(rounds)
            with lock:
                readings.append((woke, (woke - due) * 1e6, took))
            due += period
            if due < woke:  # behind by more than a period: the next one from now
                due = woke + period

    worker = threading.Thread(target=gauge, daemon=True)
    worker.start()
    print(json.dumps({"calibrated": rounds, "unit_us": args.work_us, "realtime": rt}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") == "dump":
            with lock:
                copy = [[round(w, 6), round(late, 1), round(took, 1)] for w, late, took in readings]
            Path(cmd["out"]).write_text(json.dumps(copy))
            print(json.dumps({"readings": len(copy)}), flush=True)
        elif cmd.get("cmd") == "quit":
            break
    stop.set()
    worker.join(1.0)


if __name__ == "__main__":
    main()
