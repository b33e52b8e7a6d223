"""Tick-to-alert latency of the whole daemon on a simulated exchange (not a CI test); prints JSON.

The simulator runs in its own process (``bench/latency_sim.py``), so the CPU measured here is the
daemon's alone; it serves 1,000 cross accounts (1,000 API keys, user-data subscriptions and risk
streams), each holding ``--per-account`` of 100 assets against a 10,000 USDT loan, levels spread
around the 1.5 bar (``bench/latency_workload.py``). The daemon is the real :class:`Service` in
this process (python-binance, websockets, the SQLite outbox, Apprise), its only route a custom
Apprise scheme ``bench://`` registered here that records when each notify call starts.

The simulator pushes a mean-reverting random walk of bookTicker frames over the real websocket,
one random symbol a tick, at each ``--rates`` for ``--seconds`` (volatility scaled so the levels
move as much per second at every rate: crossings of 1.5 happen many times a second). The path is
generated here, so the tick that caused each alert is known. Since 2026-11-28 the pairing is exact
(``match_evaluations``): a bench hook on ``Engine.on_prices`` (patched in this process only, like
``bench/crash.py``'s hand-off recorder; the daemon's code is unchanged) records every price batch
that queued alerts and the events it queued; each Apprise call is paired with the event the daemon
queued for it (same account, bar and kind, its level as printed in the title), and the causing tick
is the first tick from which the account's replayed level stayed past the bar through the newest
tick of that batch. The old matcher (the rule replayed over every tick, each call paired with the
latest expected event sent before it) is still computed on the same runs (``old_matcher``): it paired
some alerts with a one-tick excursion the daemon had read together with the tick that undid it.
Latency = Apprise call start − the simulator's hand-off of that tick's frame to its websocket
(both ``time.monotonic()``, one clock for both processes on Linux).

Reported per rate: p50/p99/max latency of the daemon runs (median over ``--runs``), the daemon's CPU
(process time / wall during the ticks), its RSS, frames delivered and alerts measured; and a
baseline in the same invocation: the empty pipeline, simulator send → ``MarketStream`` callback in
this process with no daemon behind it.

Usage: ``python bench/latency.py [--runs 3] [--seconds 10] [--rates 1000 5000] [--accounts 1000]
[--cpus DAEMON:OTHERS]`` (``--cpus 1:0``: this process, the daemon, on CPU 1, the simulator on CPU 0;
``bench/placement.py``).
Target: p99 < 10 ms at 1,000 msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import itertools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path as FsPath
from typing import Any

import numpy as np
import yaml
from apprise.decorators import notify
from latency_workload import (
    BARS,
    F64,
    Evaluation,
    Path,
    Replay,
    Workload,
    expected_events,
    make_path,
    make_workload,
    match_evaluations,
    match_latencies,
    pairs_differ,
)
from placement import add_argument, daemon_cpus, other_cpus, pin

try:
    from monitor.config.model import load_config
except ImportError:  # a baseline from before the layout move (7f103e1), e.g. compare.py's 334690b
    from monitor.config import load_config  # type: ignore[attr-defined,no-redef]
from monitor.exchange.streams import MarketStream
from monitor.logs import configure_logging
from monitor.service import Service

HYSTERESIS = 0.005
SIGMA_PER_SECOND = 0.008  # per symbol, log price
REVERT_PER_SECOND = 0.03
BENCH = FsPath(__file__).resolve().parent


def register_recorder() -> list[tuple[float, str]]:
    """Register ``bench://`` with Apprise; each call appends (monotonic time at call start, title)."""
    calls: list[tuple[float, str]] = []

    def record(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
        calls.append((time.monotonic(), title))
        return True

    register: Any = notify  # apprise's decorator is untyped
    register(on="bench", name="latency bench recorder")(record)
    return calls


def record_evaluations() -> list[Evaluation] | None:
    """Wrap ``Engine.on_prices`` in this process: every price batch that queued alerts is recorded
    with the events it queued (the batch is copied only then; nothing else is kept). None when the
    tree measured has no such method (an old baseline): the old matcher alone is used then."""
    try:
        from monitor.watch.engine import Engine
    except ImportError:
        return None
    original = getattr(Engine, "on_prices", None)
    if original is None:
        return None
    records: list[Evaluation] = []

    def record(at: float, prices: Any, outbox: Any, queued: int) -> None:
        if queued > 0:
            new = list(itertools.islice(reversed(outbox._queue), queued))[::-1]
            events = [
                (o.event.unit.split(":")[1], o.event.bar, o.event.kind, o.event.level)
                for o in new
                if o.event.measure == "level" and o.event.unit.startswith("cross:")
            ]
            records.append(Evaluation(at, dict(prices), events))

    apply, more = getattr(Engine, "apply_prices", None), getattr(Engine, "evaluate_due", None)
    if apply is not None and more is not None:
        # the market feed applies a batch, then evaluates the units it moved a slice per loop turn
        # (Engine.evaluate_due) before the next batch: a slice's alerts are the last batch's
        # (on_prices goes through both, so it is not wrapped as well)
        last: dict[int, Any] = {}

        def applied(self: Any, prices: Any, *args: Any, **kwargs: Any) -> Any:
            last[id(self)] = prices
            return apply(self, prices, *args, **kwargs)

        def sliced(self: Any, *args: Any, **kwargs: Any) -> Any:
            at, before = time.monotonic(), self.outbox.qsize()
            result = more(self, *args, **kwargs)
            record(at, last.get(id(self), {}), self.outbox, self.outbox.qsize() - before)
            return result

        Engine.apply_prices = applied  # type: ignore[method-assign]
        Engine.evaluate_due = sliced  # type: ignore[method-assign]
        return records

    def recorded(self: Any, prices: Any, *args: Any, **kwargs: Any) -> Any:
        outbox = getattr(self, "outbox", None)
        if outbox is None:  # an older engine: nothing to read the events from
            return original(self, prices, *args, **kwargs)
        at = time.monotonic()
        before = outbox.qsize()
        result = original(self, prices, *args, **kwargs)
        record(at, prices, outbox, outbox.qsize() - before)
        return result

    Engine.on_prices = recorded  # type: ignore[method-assign]
    return records


def rss_mib() -> dict[str, float]:
    """This process's resident set now and its peak (``/proc/self/status``), MiB."""
    fields = dict(line.split(":", 1) for line in FsPath("/proc/self/status").read_text().splitlines())
    return {k: round(int(fields[v].split()[0]) / 1024, 1) for k, v in (("now", "VmRSS"), ("peak", "VmHWM"))}


def pct(values: list[float], q: float) -> float:
    """Percentile in ms (linear), NaN when empty."""
    return round(float(np.percentile(np.array(values), q)) * 1000, 3) if values else math.nan


def sim_env() -> dict[str, str]:
    """The simulator's environment: ``BENCH_SIM_PATH`` (set by ``bench/compare.py``) as its
    ``PYTHONPATH``, so a baseline daemon and the new one face the same simulator."""
    env = dict(os.environ)
    if "BENCH_SIM_PATH" in env:
        env["PYTHONPATH"] = env["BENCH_SIM_PATH"]
    return env


class SimProcess:
    """``bench/latency_sim.py`` as a subprocess, driven by JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, scenario: FsPath, path: FsPath, cpus: frozenset[int] | None = None
    ) -> tuple[SimProcess, str]:
        """Spawn it (every thread pinned to ``cpus``, if given: ``bench/placement.py``)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / "latency_sim.py"),
            str(scenario),
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=sim_env(),
        )
        pin(proc.pid, cpus)
        sim = cls(proc)
        return sim, str((await sim.reply())["url"])

    async def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 600)
        if not line:
            raise RuntimeError("the simulator process ended")
        return dict(json.loads(line))

    async def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.reply()

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"cmd": "quit"}\n')
        await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def start_sim(
    tmp: FsPath, work: Workload, path: Path, cpus: frozenset[int] | None = None
) -> tuple[SimProcess, str]:
    """The workload's scenario and the price path written to ``tmp``, the simulator started on
    them (pinned to ``cpus``, if given); it and its URL."""
    (tmp / "scenario.json").write_text(json.dumps(work.scenario()))
    path.save(str(tmp / "path.npz"))
    return await SimProcess.start(tmp / "scenario.json", tmp / "path.npz", cpus)


async def warm_until_ready(service: Service, sim: SimProcess, started: float, within: float = 300.0) -> float:
    """Have the simulator send its first quotes, then wait for the daemon's readiness; the seconds
    from ``started`` (monotonic) to ready."""
    await sim.call(cmd="warm")
    while not service.ready():
        if time.monotonic() - started > within:
            raise RuntimeError("the daemon did not become ready")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def quiet(calls: list[tuple[float, str]], gap: float = 1.0, within: float = 120.0) -> None:
    """Wait until no notify call came for ``gap`` s (the previous phase's alerts are all out)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        last = calls[-1][0] if calls else 0.0
        if time.monotonic() - last >= gap:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("notify calls did not stop")


def steady_service(config_path: FsPath) -> Service:
    """The daemon as it runs once every connection is up: its WebSocket connection budget (Binance's
    300 attempts per 5 min per IP, ``monitor.exchange.conn_budget``) lifted, as the simulator's is,
    so that all 1,000 Risk Data Streams connect at start-up rather than 250 per 5 minutes (a tree
    older than the budget has none to lift)."""
    if "connections" in inspect.signature(Service).parameters:
        return Service(load_config(config_path), config_path, connections=(10_000_000, 300.0))
    return Service(load_config(config_path), config_path)


def daemon_config(
    tmp: FsPath, url: str, work: Workload, urls: tuple[str, ...] = ("bench://",), http: str | None = None,
    sends: str | None = None,
) -> FsPath:  # fmt: skip
    """The daemon's config: ``kind: binance`` at the simulator, every account, one route to ``urls``
    (``bench://`` here), HTTP on ``http`` (host:port) or off, ``notify.sends`` as ``sends``; by
    default ``threads`` for ``bench://`` (a plugin registered in this process only: a send worker
    would not know it), else ``auto``."""
    if sends is None:
        sends = "threads" if any(u.startswith("bench://") for u in urls) else "auto"
    ws = url.replace("http://", "ws://")
    data = {
        "exchange": {
            "kind": "binance",
            "rest_url": url,
            "stream_url": ws,
            "ws_api_url": f"{ws}/ws-api/v3",
            "risk_stream_url": ws,
        },
        "accounts": [{"name": n, "api_key": f"key-{n}", "api_secret": f"secret-{n}"} for n in work.names],
        "alerts": {"hysteresis": HYSTERESIS, "stale_after": "30s"},
        "notify": {"routes": {"bench": {"urls": list(urls)}}, "sends": sends},
        "state_dir": str(tmp / "state"),
        "log": {"format": "json", "level": "warning"},
        "http": {"enabled": True, "listen": http} if http else {"enabled": False},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def baseline_latency(
    calls: list[tuple[float, dict[str, float]]], path: Path, sent: F64, start: int, symbols: list[str]
) -> list[float]:
    """Per delivered price: callback time − send time of the newest tick of that symbol sent before."""
    sym, mid = path.symbol[start : start + len(sent)], path.mid()[start : start + len(sent)]
    index = {s: i for i, s in enumerate(symbols)}
    order = {s: np.flatnonzero(sym == s) for s in range(len(symbols))}
    out: list[float] = []
    for at, batch in calls:
        for name, price in batch.items():
            ticks = order[index[name]]
            k = int(np.searchsorted(sent[ticks], at, side="right")) - 1
            if k >= 0 and mid[ticks[k]] == price:
                out.append(at - float(sent[ticks[k]]))
    return out


async def run_baseline(
    sim: SimProcess, url: str, work: Workload, path: Path, phases: list[tuple[int, int, int]], tmp: FsPath
) -> dict[str, Any]:
    """Sim send → MarketStream callback, nothing behind it: the websocket and parsing alone."""
    calls: list[tuple[float, dict[str, float]]] = []
    stream = MarketStream(
        url.replace("http://", "ws://"), work.symbols, lambda b: calls.append((time.monotonic(), b))
    )
    task = asyncio.create_task(stream.run())
    out: dict[str, Any] = {}
    try:
        await sim.call(cmd="warm")
        for rate, start, stop in phases:
            calls.clear()
            await asyncio.sleep(0.5)
            file = tmp / f"baseline-{rate}.npy"
            reply = await sim.call(cmd="run", start=start, stop=stop, rate=rate, out=str(file))
            await asyncio.sleep(0.2)
            lat = baseline_latency(list(calls), path, np.load(file), start, work.symbols)
            out[str(rate)] = {
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "max_ms": pct(lat, 100),
                "prices": len(lat),
                "sent_rate": round(reply["rate"]),
            }
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return out


async def run_daemon(
    sim: SimProcess,
    url: str,
    work: Workload,
    path: Path,
    phases: list[tuple[int, int, int]],
    tmp: FsPath,
    calls: list[tuple[float, str]],
    settle: float,
    profiler: cProfile.Profile | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start the daemon, run every phase, then match the recorded calls to the ticks that caused them."""
    config_path = daemon_config(tmp, url, work)
    service = steady_service(config_path)
    started = time.monotonic()
    await service.startup()
    startup_s = time.monotonic() - started
    raw: list[dict[str, Any]] = []
    try:
        await warm_until_ready(service, sim, started)
        info = {
            "startup_s": round(startup_s, 2),
            "ready_s": round(time.monotonic() - started, 2),
            "rss_ready_mib": rss_mib()["now"],
            "units": len(service.book.units()),
        }
        assert service.market is not None
        await asyncio.sleep(settle)  # start-up's tail (risk streams, first refreshes) out of the way
        for rate, start, stop in phases:
            await quiet(calls)
            first = len(calls)
            messages = service.market.stats().messages
            cpu, wall = time.process_time(), time.monotonic()
            t0 = wall
            file = tmp / f"daemon-{rate}-{start}.npy"
            if profiler is not None:
                profiler.enable()
            reply = await sim.call(cmd="run", start=start, stop=stop, rate=rate, out=str(file))
            await asyncio.sleep(0.3)  # let the last alerts through
            if profiler is not None:
                profiler.disable()
            wall = time.monotonic() - wall
            raw.append(
                {
                    "rate": rate,
                    "start": start,
                    "stop": stop,
                    "file": file,
                    "first": first,
                    "last": len(calls),
                    "t0": t0,
                    "t1": time.monotonic(),
                    "cpu": (time.process_time() - cpu) / wall,
                    "rss": rss_mib(),
                    "delivered": service.market.stats().messages - messages,
                    "sent_rate": reply["rate"],
                }
            )
    finally:
        await service.shutdown()
    return raw, info


def summarise(
    raw: list[dict[str, Any]],
    calls: list[tuple[float, str]],
    work: Workload,
    path: Path,
    evaluations: list[Evaluation] | None = None,
) -> dict[str, Any]:
    """Per rate: every run's numbers and their medians; latencies by the exact matcher when the
    daemon's evaluations were recorded (else the old one), the old matcher's beside them."""
    expected = expected_events(work, path, HYSTERESIS, restart=raw[0]["start"] if raw else 0)
    sent = np.full(len(path.symbol), np.nan)
    for r in raw:
        sent[r["start"] : r["stop"]] = np.load(r["file"])
    replay = Replay(work, path)
    by_rate: dict[str, Any] = {}
    for r in raw:
        old = match_latencies(calls[r["first"] : r["last"]], expected, sent)
        exact = None
        if evaluations is not None:
            mine = [e for e in evaluations if r["t0"] <= e.at < r["t1"]]
            exact = match_evaluations(calls[r["first"] : r["last"]], mine, replay, sent, HYSTERESIS)
            if not exact.latency and old.latency:  # a tree whose events the hook cannot read
                exact = None
        m = exact or old
        firing = [x for x, k in zip(m.latency, m.kinds, strict=True) if k == "firing"]
        run = {
            "matcher": "exact" if exact else "old",
            "p50_ms": pct(m.latency, 50),
            "p99_ms": pct(m.latency, 99),
            "max_ms": pct(m.latency, 100),
            "firing_p50_ms": pct(firing, 50),
            "firing_p99_ms": pct(firing, 99),
            "alerts_measured": len(m.latency),
            "alerts_expected": expected.count(r["start"], r["stop"]),
            "alerts_unmatched": m.unmatched,
            "level_disagree": exact.level_disagree if exact else None,
            "replay_disagree": exact.replay_disagree if exact else None,
            "old_matcher": {
                "p50_ms": pct(old.latency, 50),
                "p99_ms": pct(old.latency, 99),
                "max_ms": pct(old.latency, 100),
                "alerts_measured": len(old.latency),
                "alerts_unmatched": old.unmatched,
                "pairs_differ": pairs_differ(exact, old) if exact else 0,
            },
            "unmatched_sample": m.samples,
            "cpu": round(r["cpu"], 3),
            "rss_mib": r["rss"]["now"],
            "rss_peak_mib": r["rss"]["peak"],
            "messages_sent": r["stop"] - r["start"],
            "messages_delivered": r["delivered"],
            "sent_rate": round(r["sent_rate"]),
        }
        by_rate.setdefault(str(r["rate"]), {"runs": []})["runs"].append(run)
    for entry in by_rate.values():
        runs = entry["runs"]
        entry["median"] = {
            k: statistics.median(run[k] for run in runs)
            for k, v in runs[0].items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    return by_rate


def plan(
    rates: list[int], runs: int, seconds: float, symbols: int
) -> tuple[list[tuple[int, float, float]], list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Path segments and the (rate, start, stop) of the baseline and daemon phases."""
    segments: list[tuple[int, float, float]] = []
    baseline: list[tuple[int, int, int]] = []
    daemon: list[tuple[int, int, int]] = []
    cursor = 0
    for phase, target in [(rate, baseline) for rate in rates] + [
        (rate, daemon) for _ in range(runs) for rate in rates
    ]:
        ticks = int(phase * seconds)
        per_symbol = phase / symbols  # ticks per second of one symbol
        segments.append((ticks, SIGMA_PER_SECOND / math.sqrt(per_symbol), REVERT_PER_SECOND / per_symbol))
        target.append((phase, cursor, cursor + ticks))
        cursor += ticks
    return segments, baseline, daemon


def machine() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in FsPath("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("json", "warning")
    calls = register_recorder()
    evaluations = record_evaluations()
    work = make_workload(args.accounts, args.symbols, args.per_account, args.seed)
    segments, baseline_phases, daemon_phases = plan(args.rates, args.runs, args.seconds, args.symbols)
    path = make_path(work.prices, segments, args.seed)
    with tempfile.TemporaryDirectory(prefix="latency-bench-") as tmp_name:
        tmp = FsPath(tmp_name)
        sim, url = await start_sim(tmp, work, path, other_cpus(args.cpus))
        try:
            baseline = await run_baseline(sim, url, work, path, baseline_phases, tmp)
            profiler = cProfile.Profile() if args.profile else None
            raw, info = await run_daemon(
                sim, url, work, path, daemon_phases, tmp, calls, args.settle, profiler
            )
            if profiler is not None:
                profiler.dump_stats(args.profile)
            daemon = summarise(raw, calls, work, path, evaluations)
        finally:
            await sim.stop()
    p99 = daemon.get("1000", {}).get("median", {}).get("p99_ms", math.nan)
    return {
        "benchmark": "tick-to-alert latency (simulator send → Apprise notify call)",
        "machine": machine(),
        "workload": {
            "accounts": args.accounts,
            "symbols": args.symbols,
            "assets_per_account": args.per_account,
            "bars": list(BARS),
            "hysteresis": HYSTERESIS,
            "seconds_per_run": args.seconds,
            "runs": args.runs,
            "seed": args.seed,
        },
        "placement": args.cpus.report() if args.cpus else None,
        "daemon_start": info,
        "baseline_websocket_only": baseline,
        "daemon": daemon,
        "target": {"p99_ms_at_1000": 10.0, "met": bool(p99 < 10.0)},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--per-account", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", help="write cProfile stats of the daemon runs to this file (slows it)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after ready before the first run")
    add_argument(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    pin(os.getpid(), daemon_cpus(arguments.cpus))  # before any thread: the later ones inherit it
    print(json.dumps(asyncio.run(main(arguments)), indent=2))
