"""A correlated crash through the whole daemon, to a real webhook (not a CI test); prints JSON.

1,000 cross accounts over 20 symbols (5 assets each against a 10,000 USDT loan, levels 1.33–1.9).
At each ``--rates`` (ticks/s, from the simulator in its own process, ``bench/latency_sim.py``) one
phase of ``--seconds``: quiet noise, then every price falls ``--drop`` (5 %) within 20 % of the
phase, holds, and recovers: about 200 accounts cross 1.5 or 1.3 within ~1.5 s and resolve later.
The daemon is the real :class:`Service` in this process (python-binance, websockets, SQLite
outbox, Apprise); its one route is ``json://`` to ``bench/webhook_receiver.py``, another process.

Measured per phase, every alert matched to the tick that caused it: since 2026-11-28 exactly, from
the daemon's own evaluations recorded by a bench hook on ``Engine.on_prices`` (``matcher: exact``;
``bench/latency.py``'s ``record_evaluations``; the old matcher's p99/max beside it); a tree without
that method falls back to the old one (the rule replayed over the path, ``matcher: old``): tick
sent → webhook received (``received``) and tick sent → the daemon's ``AppriseSender`` called
(``handed``); alerts expected / received / lost / doubled (the replay); event-loop stalls seen by a
10 ms timer in the daemon's process (the same probe for any tree, so a baseline without
``monitor.ops.loop_lag`` is measured alike), each over 5 ms put down to what overlapped it
(``stall_causes``: a GC, a loop callback over ``--time-callbacks`` named, many shorter callbacks,
an Apprise send in flight in an executor thread, or the loop waiting; ``bench/loop_names.py``);
loop callbacks over ``--time-callbacks`` ms of this thread's CPU, named by owner class and function
(``cpu_stalls``: name, CPU ms, of it GC ms). The bench's own work in this process (its ``main`` task
starting and ending each phase, its 10 ms probe, the pipes to its subprocesses) is never counted as
the daemon's: its callbacks are listed apart (``harness_over_threshold``) and the lag samples they
delay are counted apart (``stalls_over_5ms_bench``, included in ``stalls_over_5ms``). What
filled each late span over 5 ms (since session 6): every loop callback goes into a ring (what
ran, wall span, CPU; ``loop_names.Ring``) and the probe copies a late sample's span out of it;
``late_kinds`` / ``late_by_name`` / ``late_worst``: the callbacks in it by name (count, CPU) and
the gap no callback covered, with the GC (and its thread) or send that overlapped it; and the
wrapper's own cost (``instrument_us_per_callback`` × ``callbacks_per_s``). Also the
daemon's CPU; and start-up to ready and RSS. Whatever ``monitor`` is importable is measured:
``bench/compare.py`` runs this script with ``PYTHONPATH`` set to a baseline tree and to this one,
interleaved.

The floor (``--floor``, ``bench/floor.py``): after the daemon's pass, the same ticks at the same
rates again, read by ``bench/null_daemon.py`` (a process that only decodes the frames, the same
lag probe, ``bench/lag_probe.py``), pinned where the daemon was; each phase's ``floor`` key has
the same lag columns (``stalls_over_5ms``, ``lag_max_ms``, ``lag_samples``): what of the daemon's
count the machine alone shows. With ``--floor-duty`` the null daemon's loop is also kept as busy
as the daemon's was in each phase (its CPU share), in steps of ~0.2 ms of fixed pure-Python work:
a loop at the daemon's load none of whose steps is long, with no collection, thread or disk: its
lag samples over 5 ms are the machine's at that load. ``--cpus DAEMON:OTHERS``
(``bench/placement.py``) pins this process (the daemon's) to the CPUs before the colon, the
simulator and the webhook receiver to the others.

Usage: ``python bench/crash.py [--rates 1000 5000] [--seconds 8] [--accounts 1000] [--floor]
[--cpus 1:0]``.
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
import threading
import time
from collections import Counter
from pathlib import Path as FsPath
from typing import Any

import apprise
import gauge
import numpy as np
from deliver_times import DeliverTimes
from floor import floor_pass
from gc_census import Census
from lag_probe import STALL, LagProbe, columns
from latency import (
    HYSTERESIS,
    SimProcess,
    daemon_config,
    machine,
    pct,
    quiet,
    record_evaluations,
    rss_mib,
    start_sim,
    steady_service,
    warm_until_ready,
)
from latency_workload import (
    BARS,
    Evaluation,
    Path,
    Replay,
    expected_events,
    make_workload,
    match_evaluations,
    match_latencies,
    pairs_differ,
    parse_title,
)
from loop_names import (
    Ring,
    compose,
    composition_kind,
    describe,
    is_harness,
    key_of,
    lag_cause,
    snapshot,
    top_callback,
)
from placement import add_argument, cpu_set, daemon_cpus, other_cpus, pin
from rss import cpu_s

import monitor
from monitor.logs import configure_logging

NOISE_PER_SECOND = 0.002  # per symbol, log price: the levels wiggle ~0.2 %/s besides the crash
PROBE = 0.01  # the lag probe's period (bench/lag_probe.py)
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
    async def launch(cls, delay_ms: float = 0.0, cpus: frozenset[int] | None = None) -> tuple[Receiver, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / "webhook_receiver.py"),
            "--delay-ms",
            str(delay_ms),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        pin(proc.pid, cpus)
        hook = cls(proc)
        return hook, int((await hook.reply())["port"])


SEND_TIMES: list[tuple[float, float]] = []  # (start, seconds) of each Apprise call


def record_handoffs() -> list[tuple[float, str]]:
    """Wrap the daemon's hand-off to Apprise: (monotonic time at the call, title) for every alert.
    The hand-off is ``AppriseSender.__call__`` (url, title, …) where a tree has it, the same point
    whether it then awaits ``Apprise.async_notify`` or runs ``Apprise.notify`` on a thread; else
    ``Apprise.async_notify`` itself (title as a keyword)."""
    calls: list[tuple[float, str]] = []
    owners: list[Any]
    try:
        from monitor.notify.apprise_sink import AppriseSender
    except ImportError:
        owners, name, title_at = [apprise.Apprise], "async_notify", None
    else:
        owners, name, title_at = [AppriseSender], "__call__", 1
        try:  # the worker process's sender (notify.sends), where a tree has it
            from monitor.notify.send_process import ProcessSender
        except ImportError:
            pass
        else:
            owners.append(ProcessSender)
    for owner in owners:
        wrap_handoff(owner, name, title_at, calls)
    return calls


def wrap_handoff(owner: Any, name: str, title_at: int | None, calls: list[tuple[float, str]]) -> None:
    original = getattr(owner, name)

    async def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        calls.append((start, str(args[title_at] if title_at is not None else kwargs.get("title", ""))))
        try:
            return await original(self, *args, **kwargs)
        finally:
            SEND_TIMES.append((start, time.monotonic() - start))

    setattr(owner, name, recorded)


def sends_worker(service: Any) -> int | None:
    """The pid of the daemon's send worker (``notify.sends``), None when it sends on threads."""
    return getattr(service.dispatcher._apprise, "worker_pid", None)


def cpu_seconds(pid: int | None) -> float:
    """``rss.cpu_s`` of process ``pid``, 0 when None or gone (a send worker that exited)."""
    if pid is None:
        return 0.0
    try:
        return cpu_s(pid)
    except OSError:
        return 0.0


Calls = list[tuple[float, str]]


def stall_causes(
    phase: dict[str, Any], sends: list[tuple[float, float]]
) -> tuple[Counter[str], Counter[str]]:
    """Each wall-clock lag sample over 5 ms by what overlapped it (``loop_names.lag_cause``); and,
    for those put down to a busy loop, the callback over 1 ms that used the most CPU in the sample."""
    gcs = [(start, start + wall) for start, _, wall, _ in phase["gc"]]
    slow = [(s, e, name) for s, e, name, _, _ in phase["cpu_stalls"]]
    slow += [(s, e, f"bench: {name}") for s, e, name, _, _ in phase["harness"]]
    causes: Counter[str] = Counter()
    busiest: Counter[str] = Counter()
    for at, lag, cpu in phase["lags"]:
        if lag <= STALL:
            continue
        cause = lag_cause((at - lag, at), cpu, gcs, slow, sends)
        causes[cause] += 1
        if cause.startswith("loop busy"):
            busiest[top_callback(phase["busy"], at - lag - PROBE, at)] += 1
    return causes, busiest


def gap_cause(lo: float, hi: float, phase: dict[str, Any], sends: list[tuple[float, float]]) -> str:
    """Why no callback ran for most of a late span: a GC by another thread (it holds the GIL), a GC
    on the loop thread between callbacks (the loop's own allocations), an Apprise send in flight
    (its thread may hold the GIL up to ``sys.getswitchinterval()``), else the OS (CPU elsewhere)."""
    threads = sorted({t for s, e, t in GC_OFF_LOOP if s < hi and e > lo})
    if threads:
        return f"gap: GC in thread {', '.join(threads)}"
    if any(s < hi and s + w > lo for s, _, w, _ in phase["gc"]):
        return "gap: GC on the loop thread"
    if any(s < hi and e > lo for s, e in sends):
        return "gap: send in flight"
    return "gap: OS / other"


def late_spans(phase: dict[str, Any], only: set[float] | None = None) -> list[tuple[float, float, Any]]:
    """Each lag sample over 5 ms (of those woken at ``only``, if given) with what filled its span."""
    late = {at: (lag, ran) for at, lag, ran in phase["late"]}
    return [
        (at, lag, compose(at - lag, at, late[at][1]))
        for at, lag, _ in phase["lags"]
        if lag > STALL and at in late and (only is None or at in only)
    ]


def kinds_of(
    spans: list[tuple[float, float, Any]], phase: dict[str, Any], sends: list[tuple[float, float]]
) -> Counter[str]:
    """The spans by kind (``loop_names.composition_kind``; a gap by what overlapped it)."""
    return Counter(
        gap_cause(at - lag, at, phase, sends) if (k := composition_kind(c)).startswith("gap") else k
        for at, lag, c in spans
    )


def sends_in(window: tuple[float, float]) -> list[tuple[float, float]]:
    """(start, end) of each Apprise call that started in ``window``."""
    lo, hi = window
    return [(at, at + d) for at, d in SEND_TIMES if lo <= at < hi]


def late_kinds(phase: dict[str, Any], only: set[float]) -> dict[str, int]:
    """:func:`kinds_of` for the lag samples woken at ``only`` (the gauge's "own" ones)."""
    return dict(kinds_of(late_spans(phase, only), phase, sends_in(phase["window"])).most_common())


def compositions(phase: dict[str, Any], sends: list[tuple[float, float]]) -> dict[str, Any]:
    """What filled the late spans of the lag samples over 5 ms (``loop_names.compose``): how many
    of each kind, the callbacks by name over all of them (late samples it ran in, count, CPU ms),
    the gap not covered by any callback, the five worst spans in full; and what the timing
    wrapper itself costs (its measured µs per callback × the callbacks run)."""
    spans = late_spans(phase)
    runq = phase.get("runq", {})
    kinds = kinds_of(spans, phase, sends)
    names: dict[str, list[float]] = {}
    for _, _, c in spans:
        for name, (n, ms) in c.by_name.items():
            row = names.setdefault(name, [0, 0, 0.0])
            row[0] += 1
            row[1] += n
            row[2] += ms
    top = sorted(names.items(), key=lambda kv: -kv[1][2])[:10]
    worst = sorted(spans, key=lambda s: -s[1])[:5]
    span_ms = sum(c.span_ms for _, _, c in spans)
    return {
        "late_kinds": dict(kinds.most_common()),
        "late_span_ms": round(span_ms, 1),
        "late_gap_ms": round(sum(c.gap_ms for _, _, c in spans), 1),
        "late_callbacks_cpu_ms": round(sum(c.cpu_ms for _, _, c in spans), 1),
        "late_callbacks": sum(c.callbacks for _, _, c in spans),
        "late_runq_ms": round(sum(runq.get(at, 0.0) for at, _, _ in spans) * 1000, 1),
        "late_by_name": {k: [int(v[0]), int(v[1]), round(v[2], 2)] for k, v in top},  # samples, count, CPU ms
        "late_worst": [
            {
                "lag_ms": round(lag * 1000, 1),
                "callbacks": c.callbacks,
                "callbacks_ms": c.callbacks_ms,
                "cpu_ms": c.cpu_ms,
                "gap_ms": c.gap_ms,
                "runq_ms": round(runq.get(at, 0.0) * 1000, 2),
                "top": [[k, n, ms] for k, (n, ms) in sorted(c.by_name.items(), key=lambda kv: -kv[1][1])[:4]],
            }
            for at, lag, c in worst
        ],
        "callbacks_per_s": round(phase["callbacks"] / phase["seconds"]),
        "instrument_us_per_callback": phase["wrapper_us"],
        "instrument_share": round(phase["callbacks"] * phase["wrapper_us"] / 1e6 / phase["seconds"], 4),
    }


def latencies(
    calls: Calls, expected: Any, sent: Any, evaluations: list[Evaluation] | None, replay: Replay
) -> tuple[Any, Any]:
    """(the exact matcher's pairs or None without the hook, the old matcher's)."""
    old = match_latencies(calls, expected, sent)
    if evaluations is None:
        return None, old
    exact = match_evaluations(calls, evaluations, replay, sent, HYSTERESIS)
    return (None if not exact.latency and old.latency else exact), old  # None: a tree the hook cannot read


def lost_outside(lost: Counter[Any], received: Calls, window: tuple[float, float]) -> list[str]:
    """The lost alerts that did reach the webhook, but outside the phase's window: when (seconds
    from the window's start) — a late arrival or an earlier phase's, not an alert never sent."""
    lo, hi = window
    return [
        f"{key} at {at - lo:+.2f} s"
        for at, title in received
        if (key := parse_title(title)) is not None and lost[key] and not lo <= at < hi
    ][:5]


def transient(
    lost: Counter[Any], expected: Any, ticks: tuple[int, int], replay: Replay, sent: Any
) -> list[str]:
    """Each lost alert's level, how long it held before the account's next tick took it back
    (``Replay.held_ms``): under a ms is a level between two ticks the daemon read in one batch."""
    out = []
    for key in lost:
        account, bar, kind = key
        for t in expected.events[key]:
            if ticks[0] <= t < ticks[1]:
                ms = replay.held_ms(account, bar, kind, t, HYSTERESIS, sent)
                shown = "to the end" if ms is None else f"{ms:.2f} ms"
                out.append(f"{key}: level {replay.level(account, t):.6f} at tick {t}, held {shown}")
    return out[:5]


def analyse(
    phase: dict[str, Any],
    expected: Any,
    sent: Any,
    received: Calls,
    handed: Calls,
    evaluations: list[Evaluation] | None,
    replay: Replay,
) -> dict[str, Any]:
    """Latencies and exactly-once counts of one phase (alerts that arrived inside its window)."""
    lo, hi = phase["window"]
    got = [(at, t) for at, t in received if lo <= at < hi]
    gave = [(at, t) for at, t in handed if lo <= at < hi]
    mine = None if evaluations is None else [e for e in evaluations if lo <= e.at < hi]
    exact_m, old_m = latencies(got, expected, sent, mine, replay)
    exact_h, old_h = latencies(gave, expected, sent, mine, replay)
    m, h = exact_m or old_m, exact_h or old_h
    start, stop = phase["start"], phase["stop"]
    want = Counter({k: sum(1 for t in ticks if start <= t < stop) for k, ticks in expected.events.items()})
    have = Counter(key for _, title in got if (key := parse_title(title)) is not None)
    accounts = {k[0] for k, n in want.items() if n and k[2] == "firing"}
    stalls = sorted(phase["cpu_stalls"], key=lambda x: -x[3])
    over = [x for x in stalls if x[3] > STALL * 1000]
    by_callback: dict[str, list[float]] = {}
    for _, _, name, ms, _ in stalls:
        by_callback.setdefault(name, []).append(ms)
    sends = sends_in((lo, hi))
    causes, busiest = stall_causes(phase, sends)
    return {
        "rate": phase["rate"],
        "sent_rate": round(phase["sent_rate"]),
        "accounts_crossing": len(accounts),
        "alerts_expected": sum(want.values()),
        "alerts_received": sum(have.values()),
        "lost": sum((want - have).values()),
        "doubled": sum((have - want).values()),
        "other_messages": len(got) - sum(have.values()),
        "matcher": "exact" if exact_m else "old",
        "received_p50_ms": pct(m.latency, 50),
        "received_p99_ms": pct(m.latency, 99),
        "received_max_ms": pct(m.latency, 100),
        "handed_p50_ms": pct(h.latency, 50),
        "handed_p99_ms": pct(h.latency, 99),
        "handed_max_ms": pct(h.latency, 100),
        "old_matcher": {
            "received_p99_ms": pct(old_m.latency, 99),
            "received_max_ms": pct(old_m.latency, 100),
            "handed_p99_ms": pct(old_h.latency, 99),
            "handed_max_ms": pct(old_h.latency, 100),
            "pairs_differ": pairs_differ(exact_m, old_m) if exact_m else 0,
        },
        "unpaired_received": m.unmatched,
        "level_disagree": exact_m.level_disagree if exact_m else None,
        **columns(phase["lags"]),  # stalls_over_5ms, lag_max_ms, lag_samples (bench/lag_probe.py)
        "stall_causes": dict(causes.most_common()),
        "busy_stalls_top_callback": dict(busiest.most_common(8)),
        "stalls_over_5ms_bench": sum(n for k, n in causes.items() if k.startswith("callback bench: ")),
        "cpu_stalls_over_5ms": len(over),
        "cpu_stall_max_ms": max((x[3] for x in stalls), default=0.0),
        "cpu_stalls": [
            [name, ms, gc] for _, _, name, ms, gc in over
        ],  # daemon callbacks: name, CPU ms, GC ms
        "cpu_stalls_by_callback": {k: sorted(v)[-5:] for k, v in by_callback.items()},
        "harness_over_threshold": [[name, ms, gc] for _, _, name, ms, gc in phase["harness"]],
        "send_p50_ms": pct([e - s for s, e in sends], 50),
        "send_p99_ms": pct([e - s for s, e in sends], 99),
        "gc_full": sum(1 for _, g, _, _ in phase["gc"] if g == 2),
        "gc_max_ms": round(max((d for _, _, d, _ in phase["gc"]), default=0.0) * 1000, 1),
        "doubled_sample": [f"{k} x{n}" for k, n in list((have - want).items())[:3]],
        "lost_sample": [f"{k} x{n}" for k, n in list((want - have).items())[:3]],
        "lost_outside_window": lost_outside(want - have, received, (lo, hi)),
        "lost_transient": transient(want - have, expected, (start, stop), replay, sent),
        "cpu": round(phase["cpu"], 3),
        "worker_cpu": round(phase["worker_cpu"], 3),
        **compositions(phase, sends),
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


GC_OFF_LOOP: list[tuple[float, float, str]] = []  # (start, end, thread) of collections off the loop thread


def gc_pauses() -> list[tuple[float, int, float, float]]:
    """(start time, generation, wall seconds, CPU seconds) of every garbage collection here; those
    another thread ran (an Apprise send's executor thread) are also in ``GC_OFF_LOOP``."""
    pauses: list[tuple[float, int, float, float]] = []
    started = [0.0, 0.0]
    loop_thread = threading.get_ident()

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and threading.get_ident() != loop_thread:
            thread = threading.current_thread().name.rstrip("0123456789").rstrip("_-")  # notify-send_3
            GC_OFF_LOOP.append((started[0], time.monotonic(), thread))
        if phase == "start":
            started[:] = time.monotonic(), time.thread_time()
        else:
            pauses.append(
                (
                    started[0],
                    info["generation"],
                    time.monotonic() - started[0],
                    time.thread_time() - started[1],
                )
            )

    gc.callbacks.append(on_gc)
    return pauses


def scheduled_job(task: asyncio.Task[Any] | None) -> str:
    """The class of the job an APScheduler ``run_coroutine_job`` task steps (``EverySecond``,
    ``Snapshots``, …: every periodic job shares that coroutine's name), else ""."""
    if task is None:
        return ""
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None)
    if frame is None or getattr(coro, "__qualname__", "") != "run_coroutine_job":
        return ""
    func = getattr(frame.f_locals.get("job"), "func", None)
    owner = getattr(func, "__self__", None)
    return type(owner).__name__ if owner is not None else getattr(func, "__qualname__", "?")


Slow = tuple[float, float, str, float, float]  # (wall start, wall end, name, CPU ms, of it GC CPU ms)


class CallbackTimes:
    """Every event-loop callback timed in CPU time of this thread (what other processes do is not
    counted), while ``on``; those over ``threshold`` s kept with their name (``bench/loop_names.py``:
    owner class and function, never "?"), wall span and the CPU of any garbage collection inside.
    The bench's own callbacks (its tasks, the pipes to its subprocesses) go to ``harness``, not
    ``daemon``: they run in the daemon's process but are not the daemon's stalls."""

    def __init__(
        self, threshold: float, pauses: list[tuple[float, int, float, float]], busy: float = 0.001
    ) -> None:
        self.on = False
        self.daemon: list[Slow] = []
        self.harness: list[Slow] = []
        self.busy: list[Slow] = []  # every callback over ``busy`` s (1 ms): who kept the loop busy
        self.ring = Ring()  # every callback, for the composition of a late lag sample
        self.first = 0  # the ring count when the phase started
        run = asyncio.events.Handle._run
        self.raw = run
        bench = str(BENCH)
        ring = self.ring

        def timed(handle: Any) -> None:
            snap = snapshot(handle._callback, handle._args)  # before: a step moves or ends its frames
            job = scheduled_job(snap.task)
            gcs = len(pauses)
            wall, start = time.monotonic(), time.thread_time()
            run(handle)
            took = time.thread_time() - start
            ring.add((wall, time.monotonic(), took, key_of(snap)))
            if took > busy and self.on:
                name = describe(snap) + (f"({job})" if job else "")
                name = f"bench: {name}" if is_harness(snap, bench) else name
                self.busy.append((wall, time.monotonic(), name, round(took * 1000, 1), 0.0))
            if took > threshold and self.on:
                name = describe(snap)
                gc_ms = round(sum(p[3] for p in pauses[gcs:]) * 1000, 1)
                kept = (
                    wall,
                    time.monotonic(),
                    f"{name}({job})" if job else name,
                    round(took * 1000, 1),
                    gc_ms,
                )
                (self.harness if is_harness(snap, bench) else self.daemon).append(kept)

        self.timed = timed
        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]

    def wrapper_us(self, n: int = 20000) -> float:
        """What the wrapper adds per callback, µs (its snapshot, clocks and ring store around a
        no-op callback, less the bare ``Handle._run``): best of 5, with this loop's handles."""
        handle = asyncio.Handle(lambda: None, (), asyncio.get_running_loop())
        costs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                self.raw(handle)
            t1 = time.perf_counter()
            for _ in range(n):
                self.timed(handle)
            costs.append((time.perf_counter() - t1) - (t1 - t0))
        return round(min(costs) / n * 1e6, 2)

    def start(self) -> None:
        self.daemon, self.harness, self.busy, self.on = [], [], [], True
        self.first = self.ring.n

    def stop(self) -> tuple[list[Slow], list[Slow], list[Slow]]:
        self.on = False
        return self.daemon, self.harness, self.busy


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("json", "warning")
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval / 1000)
    slow = log_slow_callbacks(args.slow_ms / 1000) if args.slow_ms else []
    pauses = gc_pauses()
    census = Census.install()  # bench/gc_census.py: collections by generation, survivors
    timed = CallbackTimes(args.time_callbacks / 1000, pauses)
    if args.bare:  # no wrapper around the loop's callbacks: lag samples without the bench's own cost
        asyncio.events.Handle._run = timed.raw  # type: ignore[method-assign]
    handed = record_handoffs()
    evaluations = record_evaluations()
    deliver = DeliverTimes.install()  # bench/deliver_times.py: a batch's apply and slices, CPU
    work = make_workload(args.accounts, args.symbols, args.per_account, args.seed, levels=(1.33, 1.9))
    path, plan = crash_path(work.prices, args.rates, args.seconds, args.drop, args.seed)
    probe = LagProbe(timed.ring)
    lags, late = probe.samples, probe.late
    wrapper_us = timed.wrapper_us()
    with tempfile.TemporaryDirectory(prefix="crash-bench-") as tmp_name:
        tmp = FsPath(tmp_name)
        sim, url = await start_sim(tmp, work, path, other_cpus(args.cpus))
        hook, hook_port = await Receiver.launch(args.hook_delay_ms, other_cpus(args.cpus))
        gauges = [] if args.no_gauge else await gauge.launch(daemon_cpus(args.cpus))
        gauge_info = gauge.described(gauges)
        prober = asyncio.create_task(probe.run())
        phases: list[dict[str, Any]] = []
        try:
            hook_url = f"json://127.0.0.1:{hook_port}/hook"
            config_path = daemon_config(tmp, url, work, (hook_url,), sends=args.sends)
            service = steady_service(config_path)
            started = time.monotonic()
            await service.startup()
            startup_s = time.monotonic() - started
            worker = sends_worker(service)
            if worker is not None and args.worker_cpus is not None:
                pin(worker, cpu_set(args.worker_cpus, "worker"))
            try:
                ready_s = await warm_until_ready(service, sim, started)
                rss_ready = rss_mib()["now"]
                await asyncio.sleep(args.settle)
                # the alerts of start-up (accounts already below a bar) all out before the first phase
                assert service.dispatcher is not None
                while any(s.queued or s.held for s in service.dispatcher.stats().values()):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                for rate, start, stop in plan:
                    await quiet(handed)
                    timed.start()
                    lag_from, gc_from = len(lags), len(pauses)
                    cpu, wall = time.process_time(), time.monotonic()
                    worker_cpu = cpu_seconds(worker)
                    file = tmp / f"sent-{rate}-{start}.npy"  # a rate may come twice (--rates 1000 5000 1000)
                    reply = await sim.call(cmd="run", start=start, stop=stop, rate=rate, out=str(file))
                    await quiet(handed)
                    await asyncio.sleep(0.5)  # the last webhook posts land
                    end = time.monotonic()
                    daemon_slow, harness_slow, busy = timed.stop()  # before anything else of the bench's
                    callbacks = timed.ring.n - timed.first
                    phases.append({
                        "rate": rate, "start": start, "stop": stop, "file": file, "window": (wall, end),
                        "cpu": (time.process_time() - cpu) / (end - wall), "sent_rate": reply["rate"],
                        "worker_cpu": (cpu_seconds(worker) - worker_cpu) / (end - wall),
                        "lags": [s for s in lags[lag_from:] if s[0] < wall + reply["wall"] + 0.2],
                        "gc": pauses[gc_from:], "cpu_stalls": daemon_slow, "harness": harness_slow,
                        "busy": busy, "late": [x for x in late if wall <= x[0] < end], "runq": probe.runq,
                        "callbacks": callbacks, "seconds": end - wall, "wrapper_us": wrapper_us,
                    })  # fmt: skip
                rss_end = rss_mib()
                threads = {str(t.native_id): t.name for t in threading.enumerate()}
            finally:
                await service.shutdown()
            floor = None
            if args.floor:  # the same ticks to a null daemon, pinned where the daemon was
                prober.cancel()  # this process's probe is not the floor's
                duty = [p["cpu"] for p in phases] if args.floor_duty else None
                floor = await floor_pass(sim, url, work.symbols, plan, tmp, daemon_cpus(args.cpus), duty=duty)
            dump = tmp / "received.json"
            await hook.call(cmd="dump", out=str(dump))
            received = [(float(at), str(t)) for at, t in json.loads(dump.read_text())]
            expected = expected_events(work, path, HYSTERESIS, restart=plan[0][1])
            sent = np.full(len(path.symbol), np.nan)
            for p in phases:
                sent[p["start"] : p["stop"]] = np.load(p["file"])
            replay = Replay(work, path)
            results = [analyse(p, expected, sent, received, handed, evaluations, replay) for p in phases]
            for p, r in zip(phases, results, strict=True):
                r["deliver"] = deliver.report(*p["window"])
            for r, f in zip(results, floor or [], strict=False):
                r["floor"] = f
            readings = [await g.readings(tmp / f"gauge-{i}.json") for i, g in enumerate(gauges)]
            for p, r in zip(phases, results, strict=True):
                if readings:
                    lo, hi = p["window"]
                    r["machine"] = gauge.phase_report(readings, p["lags"], lo, hi, PROBE)
                    own = set(r["machine"].pop("own_at"))
                    r["machine"]["own_kinds"] = late_kinds(p, own) if p["late"] else {}
        finally:
            prober.cancel()
            for g in gauges:
                await g.stop()
            await hook.stop()
            await sim.stop()
    return {
        "benchmark": "correlated crash: tick sent → webhook received",
        "tree": os.path.dirname(os.path.dirname(monitor.__file__)),
        "machine": machine(),
        "hook_delay_ms": args.hook_delay_ms,
        "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),
        "gauges": gauge_info,
        "pid": os.getpid(),
        "sends": {"asked": args.sends, "worker_pid": worker, "worker_cpus": args.worker_cpus},
        "threads": threads,  # OS thread id -> Python thread name, at the end of the last phase
        "placement": args.cpus.report() if args.cpus else None,
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
        "gc": census.report(phases),
        **({"slow_callbacks": slow} if args.slow_ms else {}),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--sends", choices=["auto", "threads", "process"], default="auto",
        help="the daemon's notify.sends (auto: a worker process from 20 accounts)",
    )  # fmt: skip
    parser.add_argument(
        "--worker-cpus", help="CPUs for the send worker (e.g. 0); default: the daemon's (inherited)"
    )
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--per-account", type=int, default=5)
    parser.add_argument("--drop", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after ready before phase 1")
    parser.add_argument(
        "--hook-delay-ms", type=float, default=0.0, help="the webhook answers after this long (remote RTT)"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval(ms / 1000) before the daemon starts (an A/B of the GIL hand-off)",
    )
    parser.add_argument("--slow-ms", type=float, help="asyncio debug mode: list callbacks slower than this")
    parser.add_argument(
        "--time-callbacks", type=float, default=2.0, help="list loop callbacks using more CPU than this (ms)"
    )
    parser.add_argument(
        "--bare",
        action="store_true",
        help="no timing wrapper around the loop's callbacks (lag samples only, nothing named)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="after the daemon's pass, the same ticks to bench/null_daemon.py: the lag probe's floor",
    )
    parser.add_argument(
        "--floor-duty",
        action="store_true",
        help="with --floor: the null daemon's loop kept as busy as the daemon's was in each phase "
        "(its CPU share), in steps of ~0.2 ms: the machine's lag at the daemon's load",
    )
    parser.add_argument(
        "--no-gauge",
        action="store_true",
        help="without bench/machine_gauge.py beside the daemon (the machine's speed, ~2 %% of a CPU)",
    )
    add_argument(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    pin(os.getpid(), daemon_cpus(arguments.cpus))  # before any thread: the later ones inherit it
    print(json.dumps(asyncio.run(main(arguments)), indent=2))
