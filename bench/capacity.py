"""Capacity: what one daemon asks of Binance per account, measured on the simulator, and what that
means for accounts per shard (per IP) under Binance's documented limits (docs/capacity.md).

Runs the simulator in this process and the real daemon (``margin-monitor run``) as a child, with
N cross accounts (a share of them with an isolated pair too), and counts on the simulator's side:
REST requests and their weight by endpoint, split into start-up and steady state, and the
WebSocket connections held (market streams, Risk Data Streams, WebSocket API). Reads the daemon's
RSS from /proc. Then prints the capacity table for a few ``snapshot_interval`` values.

    python bench/capacity.py                       # 200 accounts, 20 s snapshots, 60 s steady state
    python bench/capacity.py --accounts 500 --steady 120 --json capacity.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rss import free_port, ready

from monitor.logs import configure_logging
from monitor.sim import Simulator, parse_scenario, run_simulator
from monitor.sim.rest import ENDPOINTS

# Binance's documented limits (docs/capacity.md cites where each comes from).
SAPI_IP_WEIGHT_PER_ENDPOINT = 12_000  # per minute per IP, each IP-weighted /sapi endpoint its own
API_WEIGHT = 6_000  # per minute per IP, all /api endpoints together
CONNECTIONS_PER_5MIN = 300  # WebSocket connection attempts per 5 minutes per IP (streams, WS-API)
STREAMS_PER_CONNECTION = 1_024
WS_API_SUBSCRIPTIONS = 1_000  # active user-data subscriptions per WebSocket API session
# read hourly by the daemon (monitor/watch/accounts.py RATES_EVERY), not per snapshot: a 60 s steady run
# rarely sees one, so the table counts each account's start-up read once an hour instead
HOURLY = ("/sapi/v1/margin/next-hourly-interest-rate",)
WEIGHTS = {(e.method, e.path): (e.weight, e.uid) for e in ENDPOINTS}
ASSETS = ["BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "TRX"]
PRICES = [30000, 2000, 300, 100, 0.5, 0.4, 0.1, 0.1]


def scenario(accounts: int, isolated_every: int, binance_limits: bool = False) -> dict[str, Any]:
    """N cross accounts holding 1-3 assets against a USDT loan; every k-th also an isolated pair.

    The simulator's weight limits are lifted unless ``binance_limits``: the run measures what the
    daemon asks for, and the table applies Binance's budgets to it.
    """
    prices = {f"{a}USDT": str(p) for a, p in zip(ASSETS, PRICES, strict=True)}
    specs = []
    for i in range(accounts):
        held = [ASSETS[(i + j) % len(ASSETS)] for j in range(1 + i % 3)]
        cross = [{"asset": a, "free": "1"} for a in held] + [{"asset": "USDT", "borrowed": "10"}]
        spec: dict[str, Any] = {
            "name": f"a{i:05d}",
            "api_key": f"k{i}",
            "api_secret": f"s{i}",
            "cross": cross,
        }
        if isolated_every and i % isolated_every == 0:
            spec["isolated"] = [
                {
                    "symbol": "ETHUSDT",
                    "base": {"asset": "ETH", "free": "1"},
                    "quote": {"asset": "USDT", "borrowed": "100"},
                },
            ]
        specs.append(spec)
    limits = {} if binance_limits else {"api_weight_per_minute": 10**9, "sapi_ip_weight_per_minute": 10**9}
    return {"quote": "USDT", "prices": prices, "accounts": specs, "limits": limits}


def config(sim: Simulator, spec: dict[str, Any], snapshot: float, port: int, state: Path) -> dict[str, Any]:
    accounts = []
    for a in spec["accounts"]:
        account: dict[str, Any] = {"name": a["name"], "api_key": a["api_key"], "api_secret": a["api_secret"]}
        if "isolated" in a:
            account["isolated"] = [p["symbol"] for p in a["isolated"]]
        accounts.append(account)
    return {
        "exchange": sim.exchange_config(snapshot_interval=f"{snapshot:g}s"),
        "accounts": accounts,
        "alerts": {"stale_after": "60s"},
        "notify": {"routes": {"null": {"urls": ["json://127.0.0.1:9/hook"]}}},
        "state_dir": str(state),
        "log": {"format": "json", "level": "warning"},
        "http": {"enabled": True, "listen": f"127.0.0.1:{port}"},
    }


def start_daemon(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """``margin-monitor run`` in a child process, its log in ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "-c", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def tally(sim: Simulator, start: int, stop: int) -> dict[str, dict[str, float]]:
    """Requests and IP weight per endpoint among the simulator's request records start..stop."""
    out: dict[str, dict[str, float]] = collections.defaultdict(lambda: {"requests": 0, "weight": 0, "uid": 0})
    for record in list(sim.engine.requests)[start:stop]:
        weight, uid = WEIGHTS.get((record.method, record.path), (0, False))
        row = out[f"{record.method} {record.path}"]
        row["requests"] += 1
        row["uid" if uid else "weight"] += weight
    return dict(out)


def connections(sim: Simulator) -> dict[str, int]:
    market = risk = 0
    for sc in sim.engine.streams.connections:
        if any("@" in n for n in sc.streams) or not sc.streams:
            market += 1
        else:
            risk += 1
    return {"market": market, "risk": risk, "ws_api": len(sim.engine.api.connections)}


async def measure(
    accounts: int, snapshot: float, steady: float, isolated_every: int, binance_limits: bool
) -> dict[str, Any]:
    spec = scenario(accounts, isolated_every, binance_limits)
    async with run_simulator(parse_scenario(spec, source="<capacity>"), realtime=True) as sim:
        sim.engine.requests = collections.deque()  # keep every record (the default keeps 1,000)
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(config(sim, spec, snapshot, port, Path(tmp) / "state")))
            started = time.monotonic()
            log_path = Path(tmp) / "daemon.log"
            child = start_daemon(path, log_path)
            try:
                while not ready(port):
                    if child.poll() is not None or time.monotonic() - started > 900:
                        raise SystemExit(f"daemon not ready: {log_path.read_text()[-2000:]}")
                    await asyncio.sleep(0.5)
                startup = time.monotonic() - started
                boot = len(sim.engine.requests)
                rss_ready = rss_mib(child.pid)
                await asyncio.sleep(steady)
                stop = len(sim.engine.requests)
                held = connections(sim)
                rss_steady = rss_mib(child.pid)
            finally:
                child.send_signal(signal.SIGTERM)
                child.wait(30)
        return {
            "accounts": accounts,
            "isolated_pairs": sum(1 for a in spec["accounts"] if "isolated" in a),
            "snapshot_interval": snapshot,
            "steady_seconds": steady,
            "startup_seconds": startup,
            "startup": tally(sim, 0, boot),
            "steady": tally(sim, boot, stop),
            "connections": held,
            "rss_ready_mib": rss_ready,
            "rss_steady_mib": rss_steady,
        }


def per_account_minute(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Steady-state requests and weight per account per minute, by endpoint."""
    scale = 60.0 / result["steady_seconds"] / result["accounts"]
    return {ep: {k: v * scale for k, v in row.items()} for ep, row in result["steady"].items()}


def capacity(result: dict[str, Any], intervals: list[float]) -> list[dict[str, Any]]:
    """Accounts per IP for each snapshot interval: the tightest of the per-endpoint budgets.

    Steady weight scales with 1/snapshot_interval (every other request in steady state is a
    snapshot re-read); the measured interval is the reference. The hourly reads (:data:`HOURLY`)
    cost their start-up weight once an hour whatever the interval.
    """
    measured = per_account_minute(result)
    n = result["accounts"]
    hourly = {ep: row["weight"] / n / 60.0 for ep, row in result["startup"].items() if ep.endswith(HOURLY)}
    rows = []
    for interval in intervals:
        factor = result["snapshot_interval"] / interval
        limits = {}
        for ep, w in hourly.items():
            limits[ep] = SAPI_IP_WEIGHT_PER_ENDPOINT / w if w > 0 else math.inf
        for ep, row in measured.items():
            if row["weight"] > 0 and ep not in hourly:
                budget = API_WEIGHT if " /api/" in ep else SAPI_IP_WEIGHT_PER_ENDPOINT
                limits[ep] = budget / (row["weight"] * factor)
        binding = min(limits, key=lambda k: limits[k]) if limits else "-"
        rows.append(
            {
                "snapshot_interval": interval,
                "weight_per_account_minute": {ep: row["weight"] * factor for ep, row in measured.items()},
                "accounts_per_ip": math.floor(limits[binding]) if limits else None,
                "binding": binding,
            }
        )
    return rows


def report(result: dict[str, Any], intervals: list[float]) -> str:
    n = result["accounts"]
    lines = [
        f"{n} accounts ({result['isolated_pairs']} with an isolated pair), snapshot_interval "
        f"{result['snapshot_interval']:g} s, ready after {result['startup_seconds']:.1f} s, "
        f"steady state measured for {result['steady_seconds']:g} s",
        "",
        "start-up, per account:",
    ]
    for ep, row in sorted(result["startup"].items()):
        lines.append(
            f"  {ep:48} {row['requests'] / n:6.2f} req  {row['weight'] / n:7.2f} IP weight"
            f"  {row['uid'] / n:5.2f} UID weight"
        )
    lines += ["", "steady state, per account per minute:"]
    for ep, row in sorted(per_account_minute(result).items()):
        lines.append(
            f"  {ep:48} {row['requests']:6.2f} req  {row['weight']:7.2f} IP weight"
            f"  {row['uid']:5.2f} UID weight"
        )
    held = result["connections"]
    lines += [
        "",
        f"connections held: market {held['market']}, Risk Data Stream {held['risk']} "
        f"({held['risk'] / n:.2f} per account), WebSocket API {held['ws_api']}",
        f"RSS: {result['rss_ready_mib']:.0f} MiB when ready, {result['rss_steady_mib']:.0f} MiB after the "
        "steady-state run",
        "",
        "accounts per IP (per shard) by snapshot_interval, from the tightest per-endpoint budget:",
        f"  {'snapshot_interval':>17}  {'accounts/IP':>11}  binding budget",
    ]
    for row in capacity(result, intervals):
        lines.append(f"  {row['snapshot_interval']:>15g} s  {row['accounts_per_ip']!s:>11}  {row['binding']}")
    risk_per_account = held["risk"] / n
    if risk_per_account:
        minutes = 5 * n * risk_per_account / CONNECTIONS_PER_5MIN
        lines.append(
            f"connections: {n} accounts open {held['risk'] + held['market'] + held['ws_api']} WebSocket "
            f"connections; at {CONNECTIONS_PER_5MIN} per 5 min per IP a cold start of this shard needs "
            f">= {minutes:.1f} min of connection budget"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--snapshot", type=float, default=20.0, help="snapshot_interval of the run (s)")
    parser.add_argument("--steady", type=float, default=60.0, help="seconds measured after ready")
    parser.add_argument("--isolated-every", type=int, default=4, help="every k-th account has a pair")
    parser.add_argument("--intervals", default="10,30,60,300", help="snapshot intervals for the table")
    parser.add_argument("--json", help="also write the raw result here")
    parser.add_argument(
        "--binance-limits", action="store_true", help="keep Binance's weight limits in the simulator (429s)"
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    configure_logging("console", "warning")
    result = asyncio.run(
        measure(args.accounts, args.snapshot, args.steady, args.isolated_every, args.binance_limits)
    )
    intervals = [float(x) for x in args.intervals.split(",")]
    print(report(result, intervals))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "capacity": capacity(result, intervals)}, indent=1))


if __name__ == "__main__":
    main()
