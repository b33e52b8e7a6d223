"""Where a bench's processes run: ``--cpus DAEMON:OTHERS`` (e.g. ``1:0``, ``2-3:0,1``).

The daemon's process (the bench's own process, where the daemon runs, or ``bench/null_daemon.py``)
is pinned to the CPUs before the colon, the simulator, tick generator and webhook receiver to those
after it, with ``os.sched_setaffinity`` on every thread the process has (threads started later
inherit their creator's CPUs). A CPU this process may not run on is a one-line error.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path


class PlacementError(ValueError):
    """A ``--cpus`` value that cannot be used here; ``str()`` is one line."""


@dataclass(frozen=True, slots=True)
class Placement:
    daemon: frozenset[int]
    others: frozenset[int]

    def __str__(self) -> str:
        return f"{spell(self.daemon)}:{spell(self.others)}"

    def report(self) -> dict[str, list[int]]:
        return {"daemon": sorted(self.daemon), "others": sorted(self.others)}


def spell(cpus: frozenset[int]) -> str:
    """CPUs as a list with ranges: {0, 1, 2, 5} → ``0-2,5``."""
    out: list[str] = []
    for cpu in sorted(cpus):
        if out and out[-1].split("-")[-1] == str(cpu - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{cpu}"
        else:
            out.append(str(cpu))
    return ",".join(out)


def cpu_set(text: str, side: str) -> frozenset[int]:
    """``0,2-3`` → {0, 2, 3}."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise PlacementError(f"--cpus: {side} CPUs {text!r}: expected numbers like 0 or 0,2-3")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise PlacementError(f"--cpus: {side} CPUs {text!r}: range {part} runs backwards")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def parse(text: str, available: frozenset[int] | None = None) -> Placement:
    """``DAEMON:OTHERS`` → a :class:`Placement`, checked against the CPUs this process may use
    (``available``, by default ``os.sched_getaffinity(0)``)."""
    daemon_text, colon, others_text = text.partition(":")
    if not colon or not daemon_text.strip() or not others_text.strip():
        raise PlacementError(f"--cpus {text!r}: expected DAEMON:OTHERS, e.g. 1:0")
    placement = Placement(cpu_set(daemon_text, "daemon"), cpu_set(others_text, "other"))
    here = frozenset(os.sched_getaffinity(0)) if available is None else available
    missing = sorted((placement.daemon | placement.others) - here)
    if missing:
        raise PlacementError(
            f"--cpus {text}: CPU {spell(frozenset(missing))} does not exist here (CPUs {spell(here)})"
        )
    return placement


def argument(text: str) -> Placement:
    """``parse`` as an argparse ``type``: its error becomes argparse's one-line error."""
    try:
        return parse(text)
    except PlacementError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpus",
        type=argument,
        metavar="DAEMON:OTHERS",
        help="pin the daemon's process to the CPUs before the colon, the simulator, tick generator and "
        "receiver to those after it (e.g. 1:0)",
    )


def pin(pid: int, cpus: frozenset[int] | None) -> None:
    """Every thread of process ``pid`` to ``cpus`` (nothing when None)."""
    if cpus is None:
        return
    tasks = Path(f"/proc/{pid}/task")
    threads = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [pid]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


def daemon_cpus(placement: Placement | None) -> frozenset[int] | None:
    return None if placement is None else placement.daemon


def other_cpus(placement: Placement | None) -> frozenset[int] | None:
    return None if placement is None else placement.others
