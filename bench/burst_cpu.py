"""CPU instructions to put a crash's burst of alerts into the outbox, counted by callgrind (not a CI test).

The pump's path for ``--alerts`` events of distinct units (a correlated crash): render each message
and persist it to the SQLite outbox (a real file), either one ``enqueue_message`` (one transaction)
per event, as the daemon did, or ``enqueue_many`` in transactions of ``--batch`` events, as it does
now (``--mode batch``; needs a tree that has it). Nothing is sent (the dispatcher is not started).

Instruction counts do not depend on what else runs on the machine. ``--callgrind`` runs this script
twice under ``valgrind --tool=callgrind`` (with ``--alerts`` and with 0), prints the difference per
alert as JSON; without it the script just does the work once.

Usage: ``python bench/burst_cpu.py --callgrind [--mode each|batch] [--alerts 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


async def burst(alerts: int, mode: str, batch: int) -> None:
    from monitor.alerts.policy import AlertPolicy, LevelRule, PolicyConfig
    from monitor.notify.dispatcher import Dispatcher, NotifyRoute
    from monitor.notify.messages import Message
    from monitor.store import Store

    async def sender(url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        return True

    policy = AlertPolicy(PolicyConfig(levels=(LevelRule("normal", 1.5, ("hook",)),)))
    now = time.time()
    events = []
    for i in range(alerts):
        unit = f"cross:a{i:04d}"
        policy.evaluate(unit, 1.6, None, now)
        events.extend(policy.evaluate(unit, 1.45, None, now))
    messages = [Message(f"{e.unit} below {e.bar}", f"level {e.level}", "warning") for e in events]
    with tempfile.TemporaryDirectory() as tmp, Store(tmp) as store:
        d = Dispatcher({"hook": NotifyRoute("hook", ("json://127.0.0.1:9/hook",))}, store, sender=sender)
        if mode == "each":
            for e, m in zip(events, messages, strict=True):
                await d.enqueue_message(e, m)
        else:
            pairs = list(zip(events, messages, strict=True))
            for start in range(0, len(pairs), batch):
                await d.enqueue_many(pairs[start : start + batch])  # type: ignore[attr-defined,unused-ignore]
        assert len(store.open_outbox()) == alerts


def instructions(argv: list[str]) -> int:
    """Total instructions (Ir) of ``python argv`` under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, *argv],
            check=True,
            capture_output=True,
        )
        totals = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.M)
        assert totals is not None, "no totals in the callgrind output"
        return int(totals.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--mode", choices=["each", "batch"], default="each")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args()
    if not args.callgrind:
        asyncio.run(burst(args.alerts, args.mode, args.batch))
        return
    common = [__file__, "--mode", args.mode, "--batch", str(args.batch)]
    full = instructions([*common, "--alerts", str(args.alerts)])
    empty = instructions([*common, "--alerts", "0"])
    print(
        json.dumps(
            {
                "benchmark": "outbox burst, callgrind instructions",
                "tree": os.environ.get("PYTHONPATH", ""),
                "mode": args.mode,
                "alerts": args.alerts,
                "instructions_per_alert": round((full - empty) / args.alerts),
                "instructions_total": full - empty,
            }
        )
    )


if __name__ == "__main__":
    main()
