"""Who else runs on a CPU: every task's CPU time, by the CPU it was last seen on, over a window.

``python bench/cpu_neighbours.py --cpu 1 --seconds 70 [--every 0.05]`` scans ``/proc/*/task/*/stat``
every ``--every`` seconds (run it pinned to another CPU: ``taskset -c 0``) and adds each task's CPU
time since the last scan (user + system ticks) to the CPU the task was on at the scan (field 39,
``processor``): a task that moved between scans is counted on its last CPU, so short windows are
exact only for pinned tasks (the daemon under ``bench/crash.py --cpus``). With it, the CPU's own
counters from ``/proc/stat`` (user, system, softirq, irq, steal, idle) over the same window.
Prints JSON: the top tasks on ``--cpu`` (command, thread name, CPU seconds, share of the window).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def scan() -> dict[tuple[int, int], tuple[str, int, int]]:
    """(pid, tid) -> (process/thread name, CPU ticks so far, last CPU)."""
    out: dict[tuple[int, int], tuple[str, int, int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            tasks = list((proc / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                raw = (task / "stat").read_text()
            except OSError:
                continue
            name = raw[raw.index("(") + 1 : raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2 :].split()
            ticks = int(rest[11]) + int(rest[12])
            out[(int(proc.name), int(task.name))] = (name, ticks, int(rest[36]))
    return out


def cpu_counters(cpu: int) -> dict[str, int]:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            return dict(zip(FIELDS, map(int, line.split()[1:9]), strict=True))
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    return raw.strip()[:100]


def main(args: argparse.Namespace) -> dict[str, Any]:
    by_task: dict[tuple[int, int], float] = defaultdict(float)
    names: dict[tuple[int, int], str] = {}
    commands: dict[int, str] = {}
    before = scan()
    counters0 = cpu_counters(args.cpu)
    start = time.monotonic()
    while time.monotonic() - start < args.seconds:
        time.sleep(args.every)
        now = scan()
        for key, (name, ticks, cpu) in now.items():
            last = before.get(key)
            spent = ticks - (last[1] if last else ticks)
            if spent > 0 and cpu == args.cpu:
                by_task[key] += spent / TICK
                names[key] = name
                if key[0] not in commands:  # now, while the process lives
                    commands[key[0]] = command(key[0])
        before = now
    wall = time.monotonic() - start
    counters1 = cpu_counters(args.cpu)
    top = sorted(by_task.items(), key=lambda kv: -kv[1])[: args.top]
    return {
        "cpu": args.cpu,
        "seconds": round(wall, 1),
        "cpu_counters_share": {k: round((counters1[k] - counters0[k]) / TICK / wall, 4) for k in FIELDS},
        "top": [
            {
                "pid": pid,
                "tid": tid,
                "thread": names[(pid, tid)],
                "command": commands.get(pid, "?"),
                "cpu_s": round(s, 2),
                "share": round(s / wall, 4),
            }
            for (pid, tid), s in top
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cpu", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=70.0)
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--top", type=int, default=25)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(main(parse_args()), indent=2))
