"""A correlated crash through the whole daemon, to a real webhook (not a CI test); prints JSON.

1,000 cross accounts over 20 symbols (5 assets each against a 10,000 USDT loan, levels 1.33–1.9).
At each ``--rates`` (ticks/s, from the simulator in its own process, ``bench/latency_sim.py``) one
phase of ``--seconds``: quiet noise, then every price falls ``--drop`` (5 %) within 20 % of the
phase, holds, and recovers: about 200 accounts cross 1.5 or 1.3 within ~1.5 s and resolve later.
The daemon is the real :class:`Service` in this process (python-binance, websockets, SQLite
outbox, Apprise); its one route is ``json://`` to ``bench/webhook_receiver.py``, another process.

Measured per phase, every alert matched to the tick that caused it (the daemon's rule replayed over
the path, ``bench/latency_workload.py``): tick sent → webhook received (``received``) and tick sent
→ the daemon's ``AppriseSender`` called (``handed``); alerts expected / received / lost / doubled;
event-loop stalls seen by a 10 ms timer in the daemon's process (the same probe for any tree, so a
baseline without ``monitor.ops.loop_lag`` is measured alike); the daemon's CPU; and start-up to ready
and RSS. Whatever ``monitor`` is importable is measured: ``bench/compare.py`` runs this script with
``PYTHONPATH`` set to a baseline tree and to this one, interleaved.

Usage: ``python bench/crash.py [--rates 1000 5000] [--seconds 8] [--accounts 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path as FsPath
from typing import Any

import apprise
import numpy as np
from latency import HYSTERESIS, SimProcess, daemon_config, machine, pct, quiet, rss_mib
from latency_workload import (
    BARS,
    Path,
    expected_events,
    make_workload,
    match_latencies,
    parse_title,
)

import monitor

try:
    from monitor.config.model import load_config
except ImportError:  # a baseline from before the layout move (7f103e1), e.g. compare.py's 334690b
    from monitor.config import load_config  # type: ignore[attr-defined,no-redef]
from monitor.logs import configure_logging
from monitor.service import Service

NOISE_PER_SECOND = 0.002  # per symbol, log price: the levels wiggle ~0.2 %/s besides the crash
STALL = 0.005
PROBE = 0.01
BENCH = FsPath(__file__).resolve().parent
# the crash profile over a phase (fraction of the phase → fraction of the drop applied)
PROFILE = ((0.0, 0.0), (0.15, 0.0), (0.35, 1.0), (0.6, 1.0), (0.8, 0.0), (1.0, 0.0))


def crash_path(
    start: Any, rates: list[int], seconds: float, drop: float, seed: int
) -> tuple[Path, list[Any]]:
    """One path: a phase per rate (noise + crash + recovery); returns it and (rate, start, stop)."""
    rng = np.random.default_rng(seed + 2)
    log0 = np.log(start)
    x = np.zeros(len(start))  # per-symbol noise (mean-reverting)
    mids: list[float] = []
    syms: list[int] = []
    phases = []
    for rate in rates:
        n = int(rate * seconds)
        per_symbol = rate / len(start)
        sigma, revert = NOISE_PER_SECOND / math.sqrt(per_symbol), 0.5 / per_symbol
        frac = np.interp(np.arange(n) / n, [p for p, _ in PROFILE], [d for _, d in PROFILE])
        sym = rng.integers(0, len(start), n)
        shock = rng.standard_normal(n) * sigma
        for i in range(n):
            s = int(sym[i])
            x[s] += shock[i] - revert * x[s]
            mids.append(float(np.exp(log0[s] + x[s] + math.log1p(-drop * frac[i]))))
            syms.append(s)
        phases.append((rate, len(mids) - n, len(mids)))
    mid = np.round(np.array(mids), 4)
    half = np.maximum(np.round(mid * 0.00005, 4), 0.0001)
    return Path(np.array(syms, dtype=np.int64), np.round(mid - half, 4), np.round(mid + half, 4)), phases


class Receiver(SimProcess):
    """``bench/webhook_receiver.py`` as a subprocess (the same JSON-line protocol as the simulator)."""

    @classmethod
    async def launch(cls, delay_ms: float = 0.0) -> tuple[Receiver, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / "webhook_receiver.py"),
            "--delay-ms",
            str(delay_ms),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        hook = cls(proc)
        return hook, int((await hook.reply())["port"])


SEND_TIMES: list[tuple[float, float]] = []  # (start, seconds) of each Apprise call


def record_handoffs() -> list[tuple[float, str]]:
    """Wrap the daemon's hand-off to Apprise: (monotonic time at the call, title) for every alert.
    The hand-off is ``AppriseSender.__call__`` (url, title, …) where a tree has it, the same point
    whether it then awaits ``Apprise.async_notify`` or runs ``Apprise.notify`` on a thread; else
    ``Apprise.async_notify`` itself (title as a keyword)."""
    calls: list[tuple[float, str]] = []
    owner: Any
    try:
        from monitor.notify.apprise_sink import AppriseSender
    except ImportError:
        owner, name, title_at = apprise.Apprise, "async_notify", None
    else:
        owner, name, title_at = AppriseSender, "__call__", 1
    original = getattr(owner, name)

    async def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        calls.append((start, str(args[title_at] if title_at is not None else kwargs.get("title", ""))))
        try:
            return await original(self, *args, **kwargs)
        finally:
            SEND_TIMES.append((start, time.monotonic() - start))

    setattr(owner, name, recorded)
    return calls


async def probe(samples: list[tuple[float, float]]) -> None:
    """Loop lag: how late a 10 ms sleep wakes, (wake time, lag) per sample."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(PROBE)
        end = time.monotonic()
        samples.append((end, max(0.0, end - start - PROBE)))


Calls = list[tuple[float, str]]


def analyse(
    phase: dict[str, Any], expected: Any, sent: Any, received: Calls, handed: Calls
) -> dict[str, Any]:
    """Latencies and exactly-once counts of one phase (alerts that arrived inside its window)."""
    lo, hi = phase["window"]
    got = [(at, t) for at, t in received if lo <= at < hi]
    gave = [(at, t) for at, t in handed if lo <= at < hi]
    m = match_latencies(got, expected, sent)
    h = match_latencies(gave, expected, sent)
    start, stop = phase["start"], phase["stop"]
    want = Counter({k: sum(1 for t in ticks if start <= t < stop) for k, ticks in expected.events.items()})
    have = Counter(key for _, title in got if (key := parse_title(title)) is not None)
    lags = [lag for at, lag in phase["lags"]]
    accounts = {k[0] for k, n in want.items() if n and k[2] == "firing"}
    return {
        "rate": phase["rate"],
        "sent_rate": round(phase["sent_rate"]),
        "accounts_crossing": len(accounts),
        "alerts_expected": sum(want.values()),
        "alerts_received": sum(have.values()),
        "lost": sum((want - have).values()),
        "doubled": sum((have - want).values()),
        "other_messages": len(got) - sum(have.values()),
        "received_p50_ms": pct(m.latency, 50),
        "received_p99_ms": pct(m.latency, 99),
        "received_max_ms": pct(m.latency, 100),
        "handed_p50_ms": pct(h.latency, 50),
        "handed_p99_ms": pct(h.latency, 99),
        "handed_max_ms": pct(h.latency, 100),
        "stalls_over_5ms": sum(1 for lag in lags if lag > STALL),
        "cpu_stalls_over_5ms": sum(1 for v in phase["cpu_stalls"].values() for ms in v if ms > STALL * 1000),
        "cpu_stall_max_ms": max((ms for v in phase["cpu_stalls"].values() for ms in v), default=0.0),
        "cpu_stalls_by_callback": {k: sorted(v)[-5:] for k, v in phase["cpu_stalls"].items()},
        "send_p50_ms": pct([d for at, d in SEND_TIMES if lo <= at < hi], 50),
        "send_p99_ms": pct([d for at, d in SEND_TIMES if lo <= at < hi], 99),
        "gc_full": sum(1 for _, g, _ in phase["gc"] if g == 2),
        "gc_max_ms": round(max((d for _, _, d in phase["gc"]), default=0.0) * 1000, 1),
        "doubled_sample": [f"{k} x{n}" for k, n in list((have - want).items())[:3]],
        "lag_max_ms": round(max(lags, default=0.0) * 1000, 1),
        "lag_samples": len(lags),
        "cpu": round(phase["cpu"], 3),
    }


def log_slow_callbacks(threshold: float) -> list[str]:
    """asyncio debug mode: every callback that holds the loop over ``threshold`` s, as asyncio names it."""
    slow: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "took" in record.getMessage():
                slow.append(record.getMessage())

    logging.getLogger("asyncio").addHandler(Keep(logging.WARNING))
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = threshold
    return slow


def gc_pauses() -> list[tuple[float, int, float]]:
    """(start time, generation, seconds) of every garbage collection in this process."""
    pauses: list[tuple[float, int, float]] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.monotonic()
        else:
            pauses.append((started[0], info["generation"], time.monotonic() - started[0]))

    gc.callbacks.append(on_gc)
    return pauses


def scheduled_job(handle: Any) -> str:
    """The class of the job an APScheduler ``run_coroutine_job`` task steps (``EverySecond``,
    ``Snapshots``, …: every periodic job shares that coroutine's name), else ""."""
    task = getattr(handle._callback, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return ""
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None)
    if frame is None or getattr(coro, "__qualname__", "") != "run_coroutine_job":
        return ""
    func = getattr(frame.f_locals.get("job"), "func", None)
    owner = getattr(func, "__self__", None)
    return type(owner).__name__ if owner is not None else getattr(func, "__qualname__", "?")


def time_callbacks(threshold: float) -> dict[str, list[float]]:
    """Time every event-loop callback in CPU time of this thread (what other processes on the machine
    do is not counted); name → durations (ms) of those over ``threshold`` s, while ``slow`` has the
    key "on"."""
    slow: dict[str, list[float]] = {}
    run = asyncio.events.Handle._run

    def timed(self: Any) -> None:
        job = scheduled_job(self)  # before the run: a job's coroutine that ends has no frame left
        start = time.thread_time()
        run(self)
        took = time.thread_time() - start
        if took > threshold and "on" in slow:
            cb = getattr(self._callback, "__self__", None)
            if isinstance(cb, asyncio.Task):
                name = getattr(cb.get_coro(), "__qualname__", "?")
            else:
                name = getattr(self._callback, "__qualname__", "?")
            slow.setdefault(f"{name}({job})" if job else name, []).append(round(took * 1000, 1))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    return slow


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("json", "warning")
    slow = log_slow_callbacks(args.slow_ms / 1000) if args.slow_ms else []
    timed = time_callbacks(args.time_callbacks / 1000)
    pauses = gc_pauses()
    handed = record_handoffs()
    work = make_workload(args.accounts, args.symbols, args.per_account, args.seed, levels=(1.33, 1.9))
    path, plan = crash_path(work.prices, args.rates, args.seconds, args.drop, args.seed)
    lags: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="crash-bench-") as tmp_name:
        tmp = FsPath(tmp_name)
        (tmp / "scenario.json").write_text(json.dumps(work.scenario()))
        path.save(str(tmp / "path.npz"))
        sim, url = await SimProcess.start(tmp / "scenario.json", tmp / "path.npz")
        hook, hook_port = await Receiver.launch(args.hook_delay_ms)
        prober = asyncio.create_task(probe(lags))
        phases: list[dict[str, Any]] = []
        try:
            config_path = daemon_config(tmp, url, work, (f"json://127.0.0.1:{hook_port}/hook",))
            service = Service(load_config(config_path), config_path)
            started = time.monotonic()
            await service.startup()
            startup_s = time.monotonic() - started
            try:
                await sim.call(cmd="warm")
                while not service.ready():
                    if time.monotonic() - started > 300:
                        raise RuntimeError("the daemon did not become ready")
                    await asyncio.sleep(0.02)
                ready_s = time.monotonic() - started
                rss_ready = rss_mib()["now"]
                await asyncio.sleep(args.settle)
                # the alerts of start-up (accounts already below a bar) all out before the first phase
                assert service.dispatcher is not None
                while any(s.queued or s.held for s in service.dispatcher.stats().values()):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                for rate, start, stop in plan:
                    await quiet(handed)
                    timed.clear()
                    timed["on"] = []
                    lag_from, gc_from = len(lags), len(pauses)
                    cpu, wall = time.process_time(), time.monotonic()
                    file = tmp / f"sent-{rate}-{start}.npy"  # a rate may come twice (--rates 1000 5000 1000)
                    reply = await sim.call(cmd="run", start=start, stop=stop, rate=rate, out=str(file))
                    await quiet(handed)
                    await asyncio.sleep(0.5)  # the last webhook posts land
                    end = time.monotonic()
                    phases.append({
                        "rate": rate, "start": start, "stop": stop, "file": file, "window": (wall, end),
                        "cpu": (time.process_time() - cpu) / (end - wall), "sent_rate": reply["rate"],
                        "lags": [s for s in lags[lag_from:] if s[0] < wall + reply["wall"] + 0.2],
                        "gc": pauses[gc_from:], "cpu_stalls": {k: v for k, v in timed.items() if k != "on"},
                    })  # fmt: skip
                    timed.pop("on", None)
                rss_end = rss_mib()
            finally:
                await service.shutdown()
            dump = tmp / "received.json"
            await hook.call(cmd="dump", out=str(dump))
            received = [(float(at), str(t)) for at, t in json.loads(dump.read_text())]
            expected = expected_events(work, path, HYSTERESIS, restart=plan[0][1])
            sent = np.full(len(path.symbol), np.nan)
            for p in phases:
                sent[p["start"] : p["stop"]] = np.load(p["file"])
            results = [analyse(p, expected, sent, received, handed) for p in phases]
        finally:
            prober.cancel()
            await hook.stop()
            await sim.stop()
    return {
        "benchmark": "correlated crash: tick sent → webhook received",
        "tree": os.path.dirname(os.path.dirname(monitor.__file__)),
        "machine": machine(),
        "hook_delay_ms": args.hook_delay_ms,
        "workload": {
            "accounts": args.accounts,
            "symbols": args.symbols,
            "drop": args.drop,
            "seconds": args.seconds,
            "bars": list(BARS),
            "seed": args.seed,
        },
        "start": {
            "startup_s": round(startup_s, 2),
            "ready_s": round(ready_s, 2),
            "rss_ready_mib": rss_ready,
            "rss_end_mib": rss_end["now"],
            "rss_peak_mib": rss_end["peak"],
        },
        "phases": results,
        **({"slow_callbacks": slow} if args.slow_ms else {}),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--per-account", type=int, default=5)
    parser.add_argument("--drop", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after ready before phase 1")
    parser.add_argument(
        "--hook-delay-ms", type=float, default=0.0, help="the webhook answers after this long (remote RTT)"
    )
    parser.add_argument("--slow-ms", type=float, help="asyncio debug mode: list callbacks slower than this")
    parser.add_argument(
        "--time-callbacks", type=float, default=2.0, help="list loop callbacks using more CPU than this (ms)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
