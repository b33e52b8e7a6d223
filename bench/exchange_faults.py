"""Two measurements behind docs/reliability.md (issue 10): how fast a revoked key is flagged, and how
fast an account is watched once an exchange that was down at start answers. Prints one JSON document.

- ``revoke``: the real daemon (default key-check interval: 5 s for two accounts; snapshots every
  60 s, the default) on the simulator;
  the key of ``demo`` is revoked ``--runs`` times (restored in between) with nothing else happening
  on the account; seconds from the revocation to the "NOT being watched" notice at the receiver.
- ``start``: nothing listens where the exchange should be for ``--down`` seconds after start (the
  daemon starts anyway); then the simulator starts on that port; seconds until the daemon is ready
  (default load backoff: 2 s doubling, capped at 60 s), and the notices the receiver got.

Usage: ``python bench/exchange_faults.py [--runs 5] [--down 20]``. Takes about ``down + 60`` s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemon_harness import Receiver, daemon_config, one_long_account, wait_until

from monitor.config.model import load_config
from monitor.logs import configure_logging
from monitor.service import Service
from monitor.sim import Simulator, parse_scenario, run_simulator

OTHER = {
    "name": "other",
    "api_key": "other-key",
    "api_secret": "other-secret",
    "cross": [{"asset": "ETH", "free": "10"}, {"asset": "USDT", "borrowed": "12500"}],
}


def flagged(messages: list[dict[str, Any]], start: int, words: str) -> bool:
    return any(words in str(m.get("title", "")) for m in messages[start:])


async def revoke(runs: int) -> list[float]:
    data = one_long_account()
    data["accounts"].append(OTHER)
    rx = Receiver()
    await rx.start()
    took: list[float] = []
    try:
        async with run_simulator(parse_scenario(data, source="<bench>"), realtime=False) as sim:
            accounts = [
                {"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret"},
                {"name": "other", "api_key": "other-key", "api_secret": "other-secret"},
            ]
            path = daemon_config(Path(tempfile.mkdtemp()), sim, rx, accounts=accounts)
            data = yaml.safe_load(path.read_text())
            data["exchange"]["snapshot_interval"] = "60s"  # the default: the key check must find it
            path.write_text(yaml.safe_dump(data))
            service = Service(load_config(path), path)
            await service.startup()
            try:
                await wait_until(service.ready, within=30)
                for _ in range(runs):
                    seen = len(rx.messages)
                    started = time.monotonic()
                    await sim.inject_fault({"kind": "revoke_key", "account": "demo"})

                    def off(m: list[dict[str, Any]], n: int = seen) -> bool:
                        return flagged(m, n, "NOT being watched")

                    def on(m: list[dict[str, Any]], n: int = seen) -> bool:
                        return flagged(m, n, "watched again")

                    await rx.wait_for(off, within=30)
                    took.append(round(time.monotonic() - started, 2))
                    sim.restore_key("demo")
                    await rx.wait_for(on, within=120)
                    await wait_until(lambda: "cross:demo" in service.book.units(), within=30)
            finally:
                await service.shutdown()
    finally:
        await rx.stop()
    return took


async def start(down: float) -> dict[str, Any]:
    scenario = parse_scenario(one_long_account(), source="<bench>")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    nowhere = Simulator(scenario, realtime=False)
    nowhere.port = port
    rx = Receiver()
    await rx.start()
    try:
        path = daemon_config(Path(tempfile.mkdtemp()), nowhere, rx)
        service = Service(load_config(path), path)
        began = time.monotonic()
        await service.startup()
        startup = time.monotonic() - began
        try:
            await asyncio.sleep(down)
            async with run_simulator(scenario, port=port, realtime=False):
                back = time.monotonic()
                await wait_until(service.ready, within=120)
                ready = time.monotonic() - back
        finally:
            await service.shutdown()
    finally:
        await rx.stop()
    return {
        "startup_returned_s": round(startup, 2),
        "down_s": down,
        "ready_after_back_s": round(ready, 2),
        "notices": rx.titles(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--down", type=float, default=20.0)
    args = parser.parse_args()
    configure_logging("json", "warning", stream=sys.stderr)  # stdout: the JSON document only
    result = {"revoke_to_notice_s": await revoke(args.runs), "start": await start(args.down)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
