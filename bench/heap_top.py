"""Run a command under tracemalloc and, on SIGUSR1, write where its live memory was allocated.

``python -X tracemalloc=1 bench/heap_top.py OUT -m monitor.cli run -c CONFIG`` runs the module as
``python -m`` would; each SIGUSR1 (``bench/rss.py --heap OUT`` sends one ``--hold`` seconds after
ready) appends to OUT the total traced, the top allocation sites grouped by file and by line, the
live objects by type (those ``gc.freeze()`` set aside included) and the asyncio tasks by coroutine.
tracemalloc slows the daemon and adds its own memory: the sizes are Python allocations (not RSS),
for finding what holds memory, not for the RSS goals.
"""

from __future__ import annotations

import asyncio
import gc
import runpy
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType


def dump(out: Path) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    lines = [f"traced {total / 2**20:.1f} MiB"]
    for key in ("filename", "lineno"):
        lines.append(f"-- by {key}")
        for stat in snapshot.statistics(key)[:40]:
            frame = stat.traceback[0]
            where = frame.filename if key == "filename" else f"{frame.filename}:{frame.lineno}"
            lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} {where}")
    lines.extend(census())
    with out.open("a") as f:
        f.write("\n".join(lines) + "\n")


def census() -> list[str]:
    """Live objects by type and asyncio tasks by coroutine: what each account keeps, as counts."""
    frozen = gc.get_freeze_count()
    gc.unfreeze()  # the daemon freezes its start-up objects (gc.get_objects would not list them)
    objects = gc.get_objects()
    if frozen:
        gc.freeze()
    by_type = Counter(type(o).__qualname__ for o in objects)
    lines = ["-- gc-tracked objects by type"]
    lines += [f"{n:9d} {name}" for name, n in by_type.most_common(40)]
    loop = asyncio._get_running_loop()  # the handler runs on the loop's thread, between callbacks
    tasks = asyncio.all_tasks(loop) if loop is not None else set()
    by_coro = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in tasks)
    lines.append(f"-- asyncio tasks by coroutine ({len(tasks)})")
    lines += [f"{n:9d} {name}" for name, n in by_coro.most_common(40)]
    return lines


def main() -> None:
    out = Path(sys.argv[1])
    if sys.argv[2] != "-m":
        raise SystemExit("usage: heap_top.py OUT -m MODULE [ARGS...]")
    if not tracemalloc.is_tracing():
        tracemalloc.start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dump(out)

    signal.signal(signal.SIGUSR1, on_signal)
    sys.argv = [sys.argv[3], *sys.argv[4:]]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
