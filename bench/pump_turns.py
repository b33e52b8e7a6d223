"""The pump's write turns in ``bench/crash.py``, each timed by its parts (issue 12).

Runs the crash bench unchanged (same arguments, its JSON report on stdout as ever) with the
pump's write turn (:meth:`monitor.app.outflow.Outflow._write_rendered`) timed in CPU time of the
loop's thread and in wall time, split into: the alert state exported (how many units), the rows
inserted, the states saved, the ``COMMIT``, and the rest (routing, silences, flood control, the
recorder). Each turn also says whether the WAL checkpoint thread was running during it and
whether it was the first commit after a checkpoint (when SQLite restarts the log, fsyncing its
header in ``synchronous=NORMAL``), and the CPU of any collection inside it. The turns are written
as JSON lines to ``--turns-out``; the slowest and a summary to stderr.

    .venv/bin/python bench/pump_turns.py --turns-out /tmp/turns.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import crash

from monitor.app.outflow import Outflow
from monitor.store import Store

Turn = dict[str, Any]


class Clock:
    """CPU (this thread) and wall time of named parts of the current turn."""

    def __init__(self) -> None:
        self.turn: Turn | None = None

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        cpu, wall = time.thread_time(), time.monotonic()
        try:
            yield
        finally:
            if self.turn is not None:
                self.turn[f"{name}_cpu_ms"] = (
                    self.turn.get(f"{name}_cpu_ms", 0.0) + (time.thread_time() - cpu) * 1e3
                )
                self.turn[f"{name}_wall_ms"] = (
                    self.turn.get(f"{name}_wall_ms", 0.0) + (time.monotonic() - wall) * 1e3
                )


def instrument(turns: list[Turn]) -> None:
    clock = Clock()
    gc_cpu: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.thread_time())
        elif started:
            gc_cpu.append(time.thread_time() - started.pop())

    gc.callbacks.append(on_gc)
    write = Outflow._write_rendered
    insert, save = Store._insert, Store._save_states
    export = None

    async def timed_write(self: Outflow) -> None:
        nonlocal export
        if not self._rendered:
            return await write(self)
        policy = self.policy
        if export is None:
            export = type(policy).export_state

            def timed_export(p: Any, units: Any = None) -> Any:
                with clock.part("export"):
                    out = export(p, units)
                if clock.turn is not None:
                    clock.turn["state_units"] = len(out)
                return out

            type(policy).export_state = timed_export  # type: ignore[method-assign,assignment]
        store: Store = self.dispatcher.outbox._store
        checkpointer = getattr(crash, "_checkpointer", None)
        turn: Turn = {
            "t": time.monotonic(),
            "letters": len(self._rendered),
            "checkpoints_before": store.checkpoints,
            "checkpoint_running": bool(checkpointer is not None and checkpointer._running is not None),
        }
        clock.turn = turn
        gcs = len(gc_cpu)
        cpu, wall = time.thread_time(), time.monotonic()
        try:
            await write(self)  # one turn: no await inside reaches the loop
        finally:
            turn["cpu_ms"] = (time.thread_time() - cpu) * 1e3
            turn["wall_ms"] = (time.monotonic() - wall) * 1e3
            turn["gc_ms"] = sum(gc_cpu[gcs:]) * 1e3
            turn["checkpoint_running_after"] = bool(
                checkpointer is not None and checkpointer._running is not None
            )
            clock.turn = None
            turns.append(turn)

    def timed_insert(self: Store, tx_: Any, items: Any) -> Any:
        with clock.part("insert"):
            out = insert(self, tx_, items)
        if clock.turn is not None:
            clock.turn["rows"] = clock.turn.get("rows", 0) + len(items)
        return out

    def timed_save(self: Store, tx_: Any, states: Any) -> None:
        with clock.part("save_states"):
            save(self, tx_, states)

    @contextlib.contextmanager
    def timed_tx(self: Store) -> Iterator[Any]:
        conn = self._conn_or_raise()
        with clock.part("begin"):
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        first = self.checkpoints != getattr(self, "_seen_checkpoints", 0)
        self._seen_checkpoints = self.checkpoints  # type: ignore[attr-defined]
        if clock.turn is not None:
            clock.turn["first_commit_after_checkpoint"] = first
        with clock.part("commit"):
            conn.execute("COMMIT")
        self.writes += 1

    Outflow._write_rendered = timed_write  # type: ignore[method-assign]
    from monitor.notify.outbox import OutboxStage

    save_state = getattr(OutboxStage, "save_state", None)  # the pump's state-only turns (this branch)
    if save_state is not None:

        def timed_state(self: OutboxStage, alert_state: Any) -> None:
            turn: Turn = {"t": time.monotonic(), "letters": 0, "state_only": True}
            turn["state_units"] = len(alert_state or ())
            clock.turn = turn
            gcs = len(gc_cpu)
            cpu, wall = time.thread_time(), time.monotonic()
            try:
                save_state(self, alert_state)
            finally:
                turn["cpu_ms"] = (time.thread_time() - cpu) * 1e3
                turn["wall_ms"] = (time.monotonic() - wall) * 1e3
                turn["gc_ms"] = sum(gc_cpu[gcs:]) * 1e3
                clock.turn = None
                turns.append(turn)

        OutboxStage.save_state = timed_state  # type: ignore[method-assign]
    Store._insert = timed_insert  # type: ignore[method-assign,assignment]
    Store._save_states = timed_save  # type: ignore[method-assign,assignment]
    Store._tx = timed_tx  # type: ignore[method-assign]

    from monitor.notify import checkpoint as quiet

    start = quiet.QuietCheckpoint.start

    def remember(self: quiet.QuietCheckpoint) -> None:
        crash._checkpointer = self  # type: ignore[attr-defined]
        start(self)

    quiet.QuietCheckpoint.start = remember  # type: ignore[method-assign]

    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    process = AsyncIOScheduler._process_jobs

    def timed_process(self: AsyncIOScheduler) -> Any:
        gcs = len(gc_cpu)
        cpu = time.thread_time()
        out = process(self)
        WAKEUPS.append(((time.thread_time() - cpu) * 1e3, sum(gc_cpu[gcs:]) * 1e3))
        return out

    AsyncIOScheduler._process_jobs = timed_process


WAKEUPS: list[
    tuple[float, float]
] = []  # (CPU ms, of it collections) of each scheduler wake-up's job processing


def summary(turns: list[Turn]) -> None:
    if WAKEUPS:
        cpu = sorted(c for c, _ in WAKEUPS)
        print(
            f"scheduler wake-ups {len(cpu)}: _process_jobs cpu p50 {statistics.median(cpu):.3f}"
            f" p90 {cpu[int(0.9 * (len(cpu) - 1))]:.3f} max {cpu[-1]:.3f} ms;"
            f" with a collection inside {sum(1 for _, g in WAKEUPS if g)}"
            f" (max {max(g for _, g in WAKEUPS):.2f} ms)",
            file=sys.stderr,
        )
    cpu = sorted(t["cpu_ms"] for t in turns)
    if not cpu:
        print("no write turns", file=sys.stderr)
        return
    print(
        f"write turns {len(cpu)}: cpu p50 {statistics.median(cpu):.2f}"
        f" p90 {cpu[int(0.9 * (len(cpu) - 1))]:.2f} max {cpu[-1]:.2f} ms",
        file=sys.stderr,
    )
    keys = ("cpu_ms", "wall_ms", "gc_ms", "letters", "rows", "state_units", "export_cpu_ms", "insert_cpu_ms",
            "save_states_cpu_ms", "commit_cpu_ms", "commit_wall_ms", "first_commit_after_checkpoint",
            "checkpoint_running")  # fmt: skip
    for turn in sorted(turns, key=lambda t: -t["cpu_ms"])[:12]:
        print(
            "  "
            + " ".join(
                f"{k}={round(v, 2) if isinstance(v, float) else v}"
                for k in keys
                if (v := turn.get(k)) is not None
            ),
            file=sys.stderr,
        )


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--turns-out", default="")
    ours, rest = parser.parse_known_args()
    turns: list[Turn] = []
    instrument(turns)
    print(json.dumps(asyncio.run(crash.main(crash.parse_args(rest))), indent=2))
    summary(turns)
    if ours.turns_out:
        with open(ours.turns_out, "w") as out:
            for turn in turns:
                out.write(json.dumps(turn) + "\n")


if __name__ == "__main__":
    main()
