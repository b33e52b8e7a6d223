"""Soak test of the whole daemon (not a CI test); prints one JSON document.

The simulator runs in this process, realtime, on a looping scenario (one loop = ``--loop`` seconds):
one cross account (1 BTC against an 18,750 USDT loan) whose BTC price steps 30,000 → 27,000 →
23,000 → 20,000 and back up (levels 1.6 → 1.44 → 1.23 → 1.07 → … → 1.6), so every loop crosses
the 1.5, 1.3 and 1.1 bars down and up again: 3 alerts and 3 "resolved" per loop. A fault comes
every few seconds: market-stream drop, malformed frame, Binance-style 1001 close, a stall shorter
than the staleness limit, WebSocket-API drop, listen-token expiry, REST 503 / timeouts / 429
windows; a deposit and a withdrawal exercise the user-data path; the notification receiver (an
Apprise ``json://`` webhook served here) answers HTTP 500 for a few seconds every minute.

The daemon runs as a subprocess (``python -m monitor.cli run``) so that its RSS is its own.
Measured:

- ``alerts``: expected (every bar crossing of the exchange's true level, polled every 50 ms, with
  the daemon's hysteresis) vs delivered (titles received by the webhook), per bar and direction,
  plus duplicates and anything unexpected; at the end the webhook is healthy again and the run
  waits (up to ``--settle`` s, the exchange still moving) until both agree;
- ``rss_mib``: the daemon's resident set at ready + 30 s (``start``, after warm-up) and at the end
  (from ``/proc/PID/status``), and the growth in percent;
- ``reconnects``: ``margin_monitor_feed_reconnects_total`` per feed at the end (``/metrics``);
- ``max_gap_s``: the largest monitoring gap, the highest ``feed_message_age_seconds`` of the
  market feed seen by polling ``/metrics`` every 0.25 s (so ±0.25 s);
- ``secrets_in_logs``: occurrences of the API key, the secret or the webhook URL in the daemon's
  stderr (JSON logs), which must be 0.

Usage: ``python bench/soak.py [--minutes 10] [--loop 48] [--json-out FILE]``.
Target: nothing lost (delivered == expected, no duplicates) and RSS growth < 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.logs import configure_logging
from monitor.sim import Simulator, parse_scenario, run_simulator

ROOT = Path(__file__).resolve().parent.parent
BARS = {"normal": Decimal("1.5"), "margin_call": Decimal("1.3"), "liquidation": Decimal("1.1")}
HYSTERESIS = Decimal("0.02")
LOAN = "18750"
# (start of the plateau as a fraction of the loop, BTC price)
PLATEAUS = ((0.0, 30000), (1 / 8, 27000), (2 / 8, 23000), (3 / 8, 20000), (4 / 8, 23000),
            (5 / 8, 27000), (6 / 8, 30000))  # fmt: skip
# (fraction of the loop, fault); stall and windows stay well under a plateau (loop / 8)
FAULTS = ((0.06, {"kind": "drop"}), (0.19, {"kind": "malformed_frame", "target": "all"}),
          (0.31, {"kind": "close_1001"}), (0.44, {"kind": "stall", "duration": 3}),
          (0.56, {"kind": "drop", "target": "ws_api"}),
          (0.62, {"kind": "expire_listen_token", "account": "soak"}),
          (0.69, {"kind": "rest_5xx", "status": 503, "duration": 3}),
          (0.81, {"kind": "rest_timeout", "duration": 3}),
          (0.94, {"kind": "rest_429", "duration": 3}))  # fmt: skip
TITLE = re.compile(r"^\[(resolved )?([A-Z_ ]+?)(, still)?\] .*margin level .* (≤|>) (\d+(?:\.\d+)?)$")


def scenario(loop: float, key: str, secret: str) -> dict[str, Any]:
    """The looping soak scenario (see the module docstring)."""
    points: list[list[Any]] = []
    previous = PLATEAUS[0][1]
    for frac, price in PLATEAUS:
        t = frac * loop
        if t > 0:
            points += [[round(t, 3), str(previous)], [round(t + 0.25, 3), str(price)]]
        else:
            points.append([0, str(price)])
        previous = price
    points.append([loop - 0.01, str(previous)])
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "ETHUSDT": "2000"},
        "interest_rates": {"USDT": "0"},
        "accounts": [
            {
                "name": "soak",
                "api_key": key,
                "api_secret": secret,
                "cross": [
                    {"asset": "BTC", "free": "1", "locked": "0", "borrowed": "0", "interest": "0"},
                    {"asset": "USDT", "free": "0", "locked": "0", "borrowed": LOAN, "interest": "0"},
                ],
            }
        ],
        "streams": {"ping_interval": "5s", "pong_timeout": "10s"},
        "timeline": {
            "speed": 1,
            "loop": True,
            "duration": loop,
            "paths": [{"ramp": "BTCUSDT", "every": 0.25, "points": points}],
            "events": [
                {"at": 0.03 * loop, "type": "deposit", "account": "soak", "asset": "BTC", "amount": "0.01"},
                {"at": 0.09 * loop, "type": "withdraw", "account": "soak", "asset": "BTC", "amount": "0.01"},
            ],
            "faults": [{"at": round(frac * loop, 3), **fault} for frac, fault in FAULTS],
        },
    }


@dataclass
class Truth:
    """Bar crossings of the exchange's own level, as the daemon's policy would count them."""

    engaged: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(BARS, False))
    counts: Counter[str] = field(default_factory=Counter)

    def observe(self, level: Decimal | None) -> None:
        for name, bar in BARS.items():
            limit = bar + HYSTERESIS if self.engaged[name] else bar
            breached = level is not None and level <= limit
            if breached != self.engaged[name]:
                self.engaged[name] = breached
                self.counts[f"{'fire' if breached else 'resolve'} {bar}"] += 1


class Receiver:
    """Apprise ``json://`` webhook; ``failing`` answers HTTP 500."""

    def __init__(self) -> None:
        self.titles: list[str] = []
        self.failing = False
        self.refused = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        if self.failing:
            self.refused += 1
            return web.Response(status=500, text="down")
        body = await request.json()
        self.titles.append(str(body.get("title", "")))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def delivered(self) -> tuple[Counter[str], Counter[str], list[str]]:
        """Level alerts by ``fire|resolve BAR``, repeats, and titles that are neither."""
        levels: Counter[str] = Counter()
        repeats: Counter[str] = Counter()
        other: list[str] = []
        for title in self.titles:
            match = TITLE.match(title)
            if match is None:
                other.append(title)
            elif match.group(3):
                repeats[match.group(5)] += 1
            else:
                levels[f"{'resolve' if match.group(1) else 'fire'} {Decimal(match.group(5))}"] += 1
        return levels, repeats, other


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def write_config(workdir: Path, sim: Simulator, key: str, secret: str, hook: str, http_port: int) -> Path:
    (workdir / "secret").write_text(secret)
    (workdir / "secret").chmod(0o600)
    data = {
        "exchange": sim.exchange_config(snapshot_interval="10s", resync_interval="10s"),
        "accounts": [{"name": "soak", "api_key": key, "api_secret_file": "secret"}],
        "alerts": {"hysteresis": float(HYSTERESIS), "stale_after": "5s"},
        "notify": {"routes": {"hook": {"urls": [hook]}}},
        "state_dir": str(workdir / "state"),
        "log": {"format": "json", "level": "info"},
        "http": {"enabled": True, "listen": f"127.0.0.1:{http_port}"},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


async def soak(minutes: float, loop: float, settle: float) -> dict[str, Any]:
    key, secret = f"soakKEY{secrets.token_hex(16)}", f"soakSECRET{secrets.token_hex(24)}"
    receiver = Receiver()
    await receiver.start()
    hook_token = secrets.token_hex(8)
    hook = f"json://127.0.0.1:{receiver.port}/hook?cto=1&rto=2&token={hook_token}"
    truth = Truth()
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    http_port = free_port()
    metrics_url = f"http://127.0.0.1:{http_port}/metrics"
    max_gap = 0.0
    rss_samples: list[tuple[float, float]] = []
    async with run_simulator(parse_scenario(scenario(loop, key, secret), source="<soak>")) as sim:
        account = sim.account("soak")
        config = write_config(workdir, sim, key, secret, hook, http_port)
        stderr = (workdir / "daemon.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor.cli", "run", "-c", str(config),
            cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
        started = time.monotonic()
        ready_at: float | None = None
        rss_start: float | None = None
        metrics: dict[str, float] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            end = started + minutes * 60
            next_scrape = 0.0
            while time.monotonic() < end:
                if proc.returncode is not None:
                    raise RuntimeError(f"daemon exited with {proc.returncode}; see {workdir}/daemon.log")
                now = time.monotonic()
                truth.observe(sim.engine.state.cross_level(account).margin_level)
                receiver.failing = (now - started) % 60 > 52  # dead for 8 s every minute
                if now >= next_scrape:
                    next_scrape = now + 0.25
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with http.get(metrics_url) as resp:
                            metrics = parse_metrics(await resp.text())
                        if ready_at is None and metrics.get('margin_monitor_feed_connected{feed="market"}'):
                            ready_at = now
                        if ready_at is not None:
                            age = metrics.get('margin_monitor_feed_message_age_seconds{feed="market"}', 0.0)
                            max_gap = max(max_gap, age)
                    if ready_at is not None and rss_start is None and now - ready_at >= 30:
                        rss_start = rss_mib(proc.pid)
                    if ready_at is not None and (not rss_samples or now - rss_samples[-1][0] >= 30):
                        rss_samples.append((now, rss_mib(proc.pid)))
                await asyncio.sleep(0.05)
            # settle: the exchange keeps moving, so compare with the truth as it goes on; within a
            # plateau (loop / 8 s) everything crossed so far must have arrived
            receiver.failing = False
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline:
                truth.observe(sim.engine.state.cross_level(account).margin_level)
                if receiver.delivered()[0] == truth.counts:
                    break
                await asyncio.sleep(0.05)
            expected = Counter(truth.counts)
            rss_end = rss_mib(proc.pid)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(metrics_url) as resp:
                    metrics = parse_metrics(await resp.text())
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        stderr.close()
    await receiver.stop()
    delivered, repeats, other = receiver.delivered()
    log_text = (workdir / "daemon.log").read_text(errors="replace")
    leaks = sum(log_text.count(s) for s in (key, secret, hook_token))
    reconnects = {
        name.split('"')[1]: value
        for name, value in metrics.items()
        if name.startswith("margin_monitor_feed_reconnects_total{")
    }
    lost = sum((expected - delivered).values())
    extra = sum((delivered - expected).values())
    start_rss = rss_start if rss_start is not None else rss_samples[0][1]
    return {
        "minutes": minutes,
        "loop_s": loop,
        "loops": round(minutes * 60 / loop, 1),
        "alerts": {
            "expected": sum(expected.values()),
            "delivered": sum(delivered.values()),
            "lost": lost,
            "duplicates_or_unexpected": extra,
            "by_kind_expected": dict(sorted(expected.items())),
            "by_kind_delivered": dict(sorted(delivered.items())),
            "repeats": dict(repeats),
            "other_titles": dict(Counter(re.sub(r"\d+", "N", t) for t in other)),
            "webhook_refusals": receiver.refused,
        },
        "rss_mib": {
            "start": round(start_rss, 1),
            "end": round(rss_end, 1),
            "growth_pct": round((rss_end / start_rss - 1) * 100, 2),
            "samples": [round(r, 1) for _, r in rss_samples],
        },
        "reconnects": reconnects,
        "max_gap_s": round(max_gap, 2),
        "secrets_in_logs": leaks,
        "log_lines": log_text.count("\n"),
        "exit_code": proc.returncode,
        "workdir": str(workdir),
        "ok": lost == 0 and extra == 0 and rss_end < start_rss * 1.10 and leaks == 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--loop", type=float, default=48.0, help="scenario loop, real seconds (default 48)")
    parser.add_argument("--settle", type=float, default=45.0, help="max wait for late deliveries at the end")
    parser.add_argument("--json-out", type=Path, help="also write the result to this file")
    args = parser.parse_args()
    configure_logging("console", "warning")  # the simulator's own events would drown the result
    result = asyncio.run(soak(args.minutes, args.loop, args.settle))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
