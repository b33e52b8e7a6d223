"""Names for event-loop callbacks and causes for loop-lag samples (used by ``bench/crash.py``).

asyncio runs ``Handle._callback(*Handle._args)`` in the handle's context; many callbacks have no
``__qualname__`` (a ``functools.partial``, the C ``TaskStepMethWrapper`` of a task step, a task
running an ``async_generator_asend``), which the crash bench used to print as "?". Here:

- :func:`snapshot`: before a callback runs, the references needed to name it (cheap: no strings);
  a task's step is named by its coroutine *and* the innermost coroutine it resumes in, since the
  frames are gone or moved once the step has run.
- :func:`describe`: the name, formatted only for the few callbacks that were slow: the owner class
  and function; a partial's function; a Future's done callback with what it completes; the
  ``call_soon_threadsafe`` from an executor thread that sets an asyncio future from a
  ``concurrent.futures`` one (``run_in_executor``), with the tasks that future wakes.
- :func:`is_harness`: whether the callback is the bench's own work in the daemon's process (its
  tasks, coroutines defined under ``bench/``, the pipes to the simulator and the receiver).
- :func:`lag_cause`: why one loop-lag sample was late, from what overlapped it.
"""

from __future__ import annotations

import asyncio
import functools
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

HARNESS_TRANSPORTS = ("_UnixReadPipeTransport", "_UnixWritePipeTransport", "BaseSubprocessTransport")


@dataclass(slots=True)
class Snap:
    """What :func:`describe` needs, taken before the callback runs."""

    callback: Any
    args: Sequence[Any]
    task: asyncio.Task[Any] | None = None
    resumes: Any = None  # the innermost coroutine (or awaitable) the task step resumes
    lines: tuple[int, int] = (0, 0)  # the lines the task's coroutine and the innermost one were at
    wakes: tuple[Any, ...] = ()  # the done callbacks of a future the callback completes


def _task_of(callback: Any) -> asyncio.Task[Any] | None:
    owner = getattr(callback, "__self__", None)
    return owner if isinstance(owner, asyncio.Task) else None


def _innermost(coro: Any) -> Any:
    """Follow ``cr_await`` / ``gi_yieldfrom`` to the innermost awaitable that is still a coroutine."""
    inner = coro
    for _ in range(64):
        nxt = getattr(inner, "cr_await", None) or getattr(inner, "gi_yieldfrom", None)
        if nxt is None or not (hasattr(nxt, "cr_frame") or hasattr(nxt, "gi_frame")):
            break
        inner = nxt
    return inner


def snapshot(callback: Any, args: Sequence[Any] | None) -> Snap:
    """References to name ``callback(*args)`` later; runs before every callback, so no formatting."""
    args = args or ()
    task = _task_of(callback)
    if task is not None:
        coro = task.get_coro()
        inner = _innermost(coro)
        return Snap(callback, args, task, inner, lines=(_line(coro), _line(inner)))
    wakes: tuple[Any, ...] = ()
    if args and isinstance(args[0], asyncio.Future) and not args[0].done():
        # _chain_future's _set_state / _call_set_state (run_in_executor, wrap_future), or any
        # callback that completes the future it is given: what that future will wake
        wakes = tuple(cb for cb, _ in getattr(args[0], "_callbacks", None) or ())
    return Snap(callback, args, wakes=wakes)


def _line(coro: Any) -> int:
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    return int(frame.f_lineno) if frame is not None else 0


def coro_name(coro: Any) -> str:
    """A coroutine's qualified name, else its type (``async_generator_asend``, a Future, …)."""
    name = getattr(coro, "__qualname__", None)
    return str(name) if name else type(coro).__qualname__


def task_name(task: asyncio.Task[Any], resumes: Any = None, lines: tuple[int, int] = (0, 0)) -> str:
    """``coroutine`` of the task; ``coroutine > innermost`` when the step resumes deeper; with the
    lines they were suspended at when known (``main:372 > sleep:655``)."""
    coro = task.get_coro()
    top = coro_name(coro) + (f":{lines[0]}" if lines[0] else "")
    if resumes is None or resumes is coro:
        return top
    return f"{top} > {coro_name(resumes)}" + (f":{lines[1]}" if lines[1] else "")


def function_name(fn: Any) -> str:
    """Owner class and function of any callable: bound and builtin methods, partials, callables."""
    for _ in range(16):
        if isinstance(fn, functools.partial | functools.partialmethod):
            fn = fn.func
            continue
        break
    owner = getattr(fn, "__self__", None)
    func = getattr(fn, "__func__", None)
    if isinstance(owner, asyncio.Task):
        return f"{getattr(fn, '__name__', type(fn).__name__)} of task {task_name(owner)}"
    if owner is not None and not isinstance(owner, type(functools)):  # a method (not a module function)
        name = getattr(func or fn, "__name__", type(fn).__name__)
        return f"{type(owner).__qualname__}.{name}"
    qual = getattr(fn, "__qualname__", None)
    if qual:
        module = getattr(
            fn, "__module__", None
        )  # a plain function: say whose (aiohttp.helpers._weakref_handle)
        return f"{module}.{qual}" if module and module != "builtins" else str(qual)
    return f"{type(fn).__qualname__} instance"  # a callable object: its class


def describe(snap: Snap) -> str:
    """The name of a callback that ran: never "?"."""
    if snap.task is not None:
        return task_name(snap.task, snap.resumes, snap.lines)
    name = function_name(snap.callback)
    if name == "aiohttp.helpers._weakref_handle" and snap.args and isinstance(snap.args[0], tuple):
        ref, method = snap.args[0]  # aiohttp's timer calling ``getattr(ref(), method)()``
        return f"{name} → {type(ref()).__qualname__}.{method}"
    if isinstance(snap.callback, functools.partial):
        name = f"partial({name})"
    if snap.args and isinstance(snap.args[0], asyncio.Future):
        fut = snap.args[0]
        if snap.wakes:  # it completes ``fut``: say whom that wakes
            woken = sorted({function_name(cb) for cb in snap.wakes} - {CHECK_CANCEL})
            via = " (call_soon_threadsafe from an executor thread)" if "_chain_future" in name else ""
            return f"{name}{via} → wakes {', '.join(woken)}"
        if isinstance(fut, asyncio.Task):  # a done callback of a task
            return f"{name} ← done of task {task_name(fut)}"
        return f"{name} ← done of {type(fut).__qualname__}"
    return name


def is_harness(snap: Snap, bench_dir: str) -> bool:
    """The bench's own work: a task whose coroutine is defined under ``bench_dir``, a callback
    defined there, or the pipes to the bench's subprocesses."""
    if snap.task is not None:
        code = getattr(snap.task.get_coro(), "cr_code", None)
        return code is not None and str(code.co_filename).startswith(bench_dir)
    fn = snap.callback
    while isinstance(fn, functools.partial):
        fn = fn.func
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is not None and str(code.co_filename).startswith(bench_dir):
        return True
    owner = getattr(fn, "__self__", None)
    return owner is not None and type(owner).__name__ in HARNESS_TRANSPORTS


CHECK_CANCEL = "asyncio.futures._chain_future.<locals>._call_check_cancel"  # asyncio's own: not worth naming
Span = tuple[float, float]  # (start, end), monotonic seconds


def _overlaps(spans: Sequence[Span], lo: float, hi: float) -> bool:
    return any(s < hi and e > lo for s, e in spans)


def lag_cause(
    late: Span,
    loop_cpu: float,
    gc: Sequence[Span],
    slow: Sequence[tuple[float, float, str]],
    sends: Sequence[Span],
) -> str:
    """Why the loop woke ``late`` (the span between when a timer was due and when it ran).

    In order: a garbage collection overlapped it (``gc``); a daemon callback over the timing
    threshold did (``callback <name>``, the bench's own are named too); else, by the loop thread's
    CPU over the sample (``loop_cpu`` seconds): the loop was busy with many shorter callbacks
    (``loop busy``: CPU ≥ half the late span), or it was not running — another thread (an
    Apprise send in an executor holds the GIL: ``send in flight``) or process had the CPU
    (``waiting: CPU or GIL elsewhere``)."""
    lo, hi = late
    if _overlaps(gc, lo, hi):
        return "gc"
    hits = [name for s, e, name in slow if s < hi and e > lo]
    if hits:
        return f"callback {max(set(hits), key=hits.count)}"
    if loop_cpu >= 0.5 * (hi - lo):
        return "loop busy (callbacks under the threshold)"
    if _overlaps(sends, lo, hi):
        return "send in flight (executor thread, GIL)"
    return "waiting: CPU or GIL elsewhere"


def top_callback(busy: Sequence[tuple[float, float, str, float, float]], lo: float, hi: float) -> str:
    """Of the callbacks over 1 ms (wall start, end, name, CPU ms, …) that ran within [lo, hi], the
    name with the most CPU in all; "none over 1 ms" when the loop was busy with shorter ones only."""
    cpu: dict[str, float] = {}
    for s, e, name, ms, _ in busy:
        if s < hi and e > lo:
            cpu[name] = cpu.get(name, 0.0) + ms
    return max(cpu, key=lambda k: cpu[k]) if cpu else "none over 1 ms"


Key = tuple[Any, Any]  # what ran, as code objects and strings only (see key_of)
Ran = tuple[float, float, float, Key]  # (wall start, wall end, thread CPU s, what ran)


def _code_or_name(obj: Any) -> Any:
    code = getattr(obj, "cr_code", None) or getattr(obj, "gi_code", None)
    return code if code is not None else type(obj).__qualname__


def key_of(snap: Snap) -> Key:
    """What ran, without keeping it alive: code objects and strings only, which the GC does not
    track, so a ring entry holds no task, future or message past its callback (holding the
    :class:`Snap` did: every callback's referents promoted to the old generations, GC pauses of
    10-19 ms and +17 MiB in the bench itself). Named later by :func:`key_name`."""
    if snap.task is not None:
        coro = snap.task.get_coro()
        inner = snap.resumes
        return _code_or_name(coro), ("" if inner is None or inner is coro else _code_or_name(inner))
    fn = snap.callback
    while isinstance(fn, functools.partial):
        fn = fn.func
    owner = getattr(fn, "__self__", None)
    if owner is not None and not isinstance(owner, type(functools)):
        if isinstance(owner, asyncio.Task):
            return f"{getattr(fn, '__name__', '?')} of task", _code_or_name(owner.get_coro())
        return type(owner).__qualname__, str(getattr(fn, "__name__", ""))
    code = getattr(fn, "__code__", None)
    return (code, "") if code is not None else (type(fn).__qualname__, "")


def key_name(key: Key) -> str:
    """The name of a :func:`key_of` key: ``coroutine > innermost`` for a task step (as
    :func:`describe` without lines), ``Owner.method``, or a function's qualified name."""

    def name(part: Any) -> str:
        return str(getattr(part, "co_qualname", part))

    first, second = key
    if isinstance(first, str) and second and isinstance(second, str):
        return f"{first}.{second}"  # Owner.method
    return f"{name(first)} > {name(second)}" if second else name(first)


class Ring:
    """The last ``size`` loop callbacks, every one (not only the slow), written round: a late lag
    sample takes its span's callbacks at once (:meth:`since`, newest last), before they are
    overwritten (``bench/crash.py`` measures the wrapper's whole cost per callback).

    Nothing it keeps is an object the collector tracks: times in ``array('d')``, each distinct
    key kept once (interned). Keeping a tuple per callback put the last 4,096 callbacks' tuples
    (8,000+ objects) into every young collection of the process it measures, whose pauses it
    then reported as the daemon's (bench/key_checks.py ``GC_SIZES=1``)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.starts = array("d", bytes(8 * size))
        self.ends = array("d", bytes(8 * size))
        self.cpus = array("d", bytes(8 * size))
        self.keys: list[Key | None] = [None] * size
        self._interned: dict[Key, Key] = {}
        self.n = 0

    def add(self, item: Ran) -> None:
        start, end, took, key = item
        i = self.n % self.size
        self.starts[i], self.ends[i], self.cpus[i] = start, end, took
        self.keys[i] = self._interned.setdefault(key, key)
        self.n += 1

    def since(self, lo: float) -> list[Ran]:
        out: list[Ran] = []
        for i in range(self.n - 1, max(-1, self.n - 1 - self.size), -1):
            j = i % self.size
            key = self.keys[j]
            if key is None or self.ends[j] <= lo:
                break
            out.append((self.starts[j], self.ends[j], self.cpus[j], key))
        out.reverse()
        return out


@dataclass(slots=True)
class Composition:
    """What filled one late span [lo, hi]: the callbacks that ran in it, by name (count, wall ms
    inside the span, CPU ms), and the wall not covered by any callback (``gap_ms``: the selector's
    wait, the loop's own bookkeeping between callbacks, a wait for the GIL, the OS)."""

    span_ms: float
    callbacks: int
    callbacks_ms: float
    cpu_ms: float
    gap_ms: float
    by_name: dict[str, tuple[int, float]]  # name → (count, CPU ms)


def compose(lo: float, hi: float, ran: Sequence[Ran], name: Any = key_name) -> Composition:
    """The composition of the late span [lo, hi] from the callbacks ``ran`` (one thread's, so
    never overlapping each other): each clipped to the span; CPU counted in proportion."""
    covered = cpu = 0.0
    count = 0
    by_name: dict[str, tuple[int, float]] = {}
    for start, end, took, what in ran:
        inside = min(end, hi) - max(start, lo)
        if inside <= 0:
            continue
        share = took * inside / (end - start) if end > start else took
        covered += inside
        cpu += share
        count += 1
        key = name(what)
        n, ms = by_name.get(key, (0, 0.0))
        by_name[key] = (n + 1, ms + share * 1000)
    span = hi - lo
    return Composition(
        round(span * 1000, 2),
        count,
        round(covered * 1000, 2),
        round(cpu * 1000, 2),
        round(max(0.0, span - covered) * 1000, 2),
        {k: (n, round(ms, 2)) for k, (n, ms) in by_name.items()},
    )


def composition_kind(c: Composition) -> str:
    """One word for a late span: ``gap`` when most of it was outside any callback (the loop not
    running a callback: selector wait, GIL, OS), ``many`` when callbacks filled it and none took
    over a third of their CPU, else the name of the one that did."""
    if c.gap_ms >= 0.5 * c.span_ms:
        return "gap (no callback running: selector/GIL/OS)"
    top = max(c.by_name.items(), key=lambda kv: kv[1][1], default=None)
    if top is None or top[1][1] < c.cpu_ms / 3:
        return "many callbacks"
    return f"mostly {top[0]}"
