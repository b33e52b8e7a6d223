"""Every speed benchmark, a baseline and this tree interleaved in one invocation; prints markdown.

``python bench/compare.py`` checks out the baseline commit (``--base``, default the morning's main
334690b) as a detached worktree in ``--base-dir`` (default named after the commit; reused when
present), then for each of ``--rounds`` rounds runs, for the baseline and then this tree (ABAB…),
as separate processes with ``PYTHONPATH`` set to that tree (the simulator always from this tree,
so both face the same one):

- ``bench/crash.py``: the correlated crash (1,000 accounts, 20 symbols, ~200 crossing), tick →
  webhook received and → handed to Apprise, lost/doubled counts, loop stalls, at 1,000 and 5,000
  ticks/s; once with the webhook answering at once, once answering after ``--hook-delay-ms`` (50 ms,
  a remote service's round trip);
- ``bench/rss.py``: the daemon as its own process, start-up to ready and RSS, 1 and 1,000 accounts;
- ``bench/latency.py --runs 1``: the random-walk benchmark (tick → handed to Apprise, 1,000
  accounts over 100 symbols), unless ``--no-latency``;

and once, since instruction counts do not vary with the machine's load, ``bench/burst_cpu.py
--callgrind``: CPU instructions per alert to put a 200-alert burst into the outbox (baseline: one
transaction per alert; this tree: the same, and one per 32), unless ``--no-callgrind``.

It prints one markdown block: the machine (``lscpu``, Python), the load (``uptime``) before and
after, the command, and a table per benchmark with every run's numbers. Takes 15–25 min for 2 rounds.
``--floor`` adds ``bench/crash.py --floor`` to the first crash run of each tree (the same ticks read
by ``bench/null_daemon.py`` after the daemon's pass) and a table of the daemon's lag samples over
5 ms beside the floor's; ``--cpus DAEMON:OTHERS`` is passed to ``bench/crash.py`` and
``bench/latency.py`` (``bench/placement.py``; ``bench/rss.py`` runs unpinned).
``--rss-only`` runs ``bench/rss.py`` alone (issue 12's memory goals; a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from placement import add_argument, spell

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def base_tree(commit: str, where: Path) -> Path:
    if not (where / "monitor" / "__init__.py").exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), commit],
            check=True,
            capture_output=True,
        )
    return where


RAW: list[dict[str, Any]] = []


def run(tree: Path, script: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_SIM_PATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        env=env,
        cwd=str(tree),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"error": f"{script} exited {done.returncode}: {' | '.join(tail)}"}
    result = dict(json.loads(done.stdout))
    RAW.append({"tree": str(tree), "script": script, "args": args, "result": result})
    return result


def machine() -> list[str]:
    model = next((ln.split(":", 1)[1].strip() for ln in sh("lscpu").splitlines() if "Model name" in ln), "?")
    return [
        f"- machine: {model}, {os.cpu_count()} CPUs (`lscpu`), Linux {platform.release()},"
        f" Python {platform.python_version()}",
    ]


def f(x: Any, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def error_row(label: str, error: str, columns: int) -> str:
    """A run that failed, as a row of the table's ``columns`` cells."""
    return f"| {label} | {error} |" + " |" * (columns - 2)


def crash_rows(label: str, result: dict[str, Any]) -> list[str]:
    if "error" in result:
        return [error_row(label, result["error"], 11)]
    start = result["start"]
    rows = []
    for p in result["phases"]:
        rows.append(
            f"| {label} | {p['rate']:,} ({p['sent_rate']:,}) "
            f"| {p['alerts_expected']} / {p['alerts_received']} / {p['lost']} / {p['doubled']} "
            f"| {f(p['received_p50_ms'])} / **{f(p['received_p99_ms'])}** / {f(p['received_max_ms'])} "
            f"| {f(p['handed_p50_ms'])} / **{f(p['handed_p99_ms'])}** / {f(p['handed_max_ms'])} "
            f"| {p['stalls_over_5ms']} ({f(p['lag_max_ms'])}) "
            f"| {p['cpu_stalls_over_5ms']} ({f(p['cpu_stall_max_ms'])}) "
            f"| {p['gc_full']} ({f(p['gc_max_ms'])}) | {f(p['cpu'], 2)} "
            f"| {f(start['ready_s'], 2)} / {f(start['rss_ready_mib'])} | {causes(p)} |"
        )
    return rows


def composition_rows(label: str, result: dict[str, Any]) -> list[str]:
    """What filled the lag samples' late spans (``bench/crash.py``'s ``late_*``, since 2026-11-28
    session 6; none for an older tree's JSON): kinds, the callbacks by CPU, the gap outside any."""
    rows = []
    for p in result.get("phases", []):
        if "late_kinds" not in p:
            continue
        kinds = ", ".join(f"{k} {n}" for k, n in p["late_kinds"].items()) or "–"
        names = "; ".join(
            f"{k[:60]} {c}× in {s} ({ms:.1f} ms)" for k, (s, c, ms) in list(p["late_by_name"].items())[:3]
        )
        rows.append(
            f"| {label} | {p['rate']:,} | {p['stalls_over_5ms']} | {kinds} "
            f"| {p['late_span_ms']:.1f} / {p['late_callbacks_cpu_ms']:.1f} / {p['late_gap_ms']:.1f} "
            f"| {names or '–'} | {p['callbacks_per_s']:,} × {p['instrument_us_per_callback']} µs "
            f"= {p['instrument_share'] * 100:.2f} % |"
        )
    return rows


def causes(p: dict[str, Any]) -> str:
    """The lag samples' causes (``bench/crash.py`` since 2026-11-28; "–" for an older tree's JSON)."""
    counted = p.get("stall_causes")
    if counted is None:
        return "–"
    short = {"loop busy (callbacks under the threshold)": "busy", "gc": "GC"}
    parts = [
        f"{short.get(k, k.split(' ')[0] if not k.startswith('callback') else k[9:])} {n}"
        for k, n in counted.items()
    ]
    return ", ".join(parts[:3]) + (", …" if len(parts) > 3 else "")


def crash_header() -> list[str]:
    return [
        "| run | ticks/s (sent) | alerts expected / received / lost / doubled "
        "| webhook received p50 / p99 / max ms | handed to Apprise p50 / p99 / max ms "
        "| lag samples > 5 ms (max ms) | CPU stalls > 5 ms (max ms) | full GCs (max ms) | daemon CPU "
        "| ready s / RSS MiB | lag > 5 ms: top causes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def floor_header() -> list[str]:
    return [
        "| run | ticks/s | daemon: lag samples > 5 ms (max ms) | floor: lag samples > 5 ms (max ms) "
        "| samples taken (daemon / floor) | floor frames decoded / sent | floor CPU |",
        "|---|---|---|---|---|---|---|",
    ]


def floor_rows(label: str, result: dict[str, Any]) -> list[str]:
    """The daemon's lag columns beside the null daemon's over the same ticks (``--floor``)."""
    if "error" in result:
        return [error_row(label, result["error"], 7)]
    rows = []
    for p in result["phases"]:
        fl = p.get("floor")
        if fl is None:
            continue
        rows.append(
            f"| {label} | {p['rate']:,} | {p['stalls_over_5ms']} ({f(p['lag_max_ms'])}) "
            f"| {fl['stalls_over_5ms']} ({f(fl['lag_max_ms'])}) | {p['lag_samples']} / {fl['lag_samples']} "
            f"| {fl['frames_decoded']:,} / {fl['frames_sent']:,} | {f(fl['cpu'], 2)} |"
        )
    return rows


def rss_row(label: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return error_row(label, result["error"], 7)
    return (
        f"| {label} | {result['accounts']:,} | **{f(result['ready_s'], 2)}** "
        f"| {f(result.get('cpu_ready_s'), 2)} / {f(result.get('sim_cpu_ready_s'), 2)} "
        f"| **{f(result['rss_ready_mib'])}** | {f(result['rss_later_mib'])} | {f(result['rss_peak_mib'])} |"
    )


def latency_rows(label: str, result: dict[str, Any]) -> list[str]:
    if "error" in result:
        return [error_row(label, result["error"], 6)]
    rows = []
    for rate, entry in result["daemon"].items():
        for r in entry["runs"]:
            old = r.get("old_matcher")  # absent from an older tree's bench/latency.py
            rows.append(
                f"| {label} | {int(rate):,} | {f(r['p50_ms'])} / **{f(r['p99_ms'])}** / {f(r['max_ms'])} "
                f"| {f(old['p99_ms']) + ' / ' + f(old['max_ms']) if old else '–'} "
                f"| {r['alerts_measured']} / {r['alerts_expected']} | {f(r['cpu'], 2)} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", default="334690b", help="baseline commit")
    parser.add_argument("--base-dir", type=Path, help="default /tmp/margin-monitor-bench-base-<base>")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-latency", action="store_true", help="skip bench/latency.py")
    parser.add_argument("--rss-only", action="store_true", help="only bench/rss.py (implies the two --no-…)")
    parser.add_argument("--hook-delay-ms", type=float, default=50.0)
    parser.add_argument("--no-callgrind", action="store_true", help="skip bench/burst_cpu.py")
    parser.add_argument("--raw", type=Path, help="also write every run's JSON to this file")
    parser.add_argument(
        "--floor", action="store_true", help="bench/crash.py --floor in each tree's first crash run"
    )
    add_argument(parser)
    args = parser.parse_args()
    pinned = ("--cpus", str(args.cpus)) if args.cpus else ()
    if args.rss_only:
        args.no_latency = args.no_callgrind = True
    base_dir = args.base_dir or Path(f"/tmp/margin-monitor-bench-base-{args.base}")
    trees = {"base": base_tree(args.base, base_dir), "new": ROOT}
    head = sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    load_before = sh("uptime")
    crash, slow_hook, rss, latency, compositions, floors = [], [], [], [], [], []
    for n in range(1, args.rounds + 1):
        for name, tree in trees.items():
            label = f"{n}{'A' if name == 'base' else 'B'} {name}"
            print(f"round {n}: {name} ({time.strftime('%H:%M:%S')})", file=sys.stderr)
            if not args.rss_only:
                result = run(tree, "crash.py", *pinned, *(("--floor",) if args.floor else ()))
                crash += crash_rows(label, result)
                compositions += composition_rows(label, result)
                floors += floor_rows(label, result) if args.floor else []
                slow_hook += crash_rows(
                    label, run(tree, "crash.py", *pinned, "--hook-delay-ms", str(args.hook_delay_ms))
                )
            rss.append(rss_row(label, run(tree, "rss.py", "--accounts", "1", "--symbols", "5")))
            rss.append(rss_row(label, run(tree, "rss.py", "--accounts", "1000", "--symbols", "100")))
            if not args.no_latency:
                latency += latency_rows(label, run(tree, "latency.py", "--runs", "1", *pinned))
    cpu = []
    if not args.no_callgrind:
        for name, mode in (("base", "each"), ("new", "each"), ("new", "batch")):
            print(f"callgrind: {name} {mode} ({time.strftime('%H:%M:%S')})", file=sys.stderr)
            r = run(trees[name], "burst_cpu.py", "--callgrind", "--mode", mode)
            per = "–" if "error" in r else f"{r['instructions_per_alert']:,}"
            cpu.append(f"| {name} | {mode} | {per} |")
    out = [
        f"### Speed benchmarks: base {args.base} (A) vs this tree {head} (B), {args.rounds} rounds, ABAB",
        "",
        *machine(),
        f"- load before: `{load_before}`",
        f"- load after: `{sh('uptime')}`",
        f"- command: `.venv/bin/python bench/compare.py --base {args.base} --rounds {args.rounds}"
        f"{' --rss-only' if args.rss_only else ''}"
        f"{'' if args.rss_only else f' --hook-delay-ms {args.hook_delay_ms:g}'}"
        f"{' --no-latency' if args.no_latency and not args.rss_only else ''}"
        f"{' --no-callgrind' if args.no_callgrind and not args.rss_only else ''}"
        f"{' --floor' if args.floor and not args.rss_only else ''}"
        f"{' '.join(('', *pinned))}`",
        *(
            [
                f"- placement: the daemon's process on CPUs {spell(args.cpus.daemon)}, the simulator and"
                f" the receiver on {spell(args.cpus.others)} (`bench/rss.py` unpinned)"
            ]
            if args.cpus
            else []
        ),
        "",
    ]
    if not args.rss_only:
        out += [
            "Correlated crash (`bench/crash.py`: 1,000 accounts, 20 symbols, prices −5 % and back; latency",
            "from the simulator's send of the causing tick; stalls: 10 ms timer in the daemon's process,",
            "wall clock; CPU stalls: loop callbacks using > 5 ms of CPU, which other processes cannot",
            "inflate):",
            "",
            *crash_header(),
            *crash,
            "",
            "What filled the late spans of those lag samples over 5 ms (kind: `gap` = no callback was",
            "running for most of it, with what overlapped; `many callbacks` = none took a third of the",
            "CPU; callbacks named as `bench/loop_names.py` does, without lines; the bench's timing",
            "wrapper's own cost, measured per callback at start):",
            "",
            "| run | ticks/s | lag > 5 ms | kinds | span / callbacks' CPU / gap ms (sum) "
            "| top callbacks in the spans (count, samples, CPU) | callbacks/s × wrapper = loop share |",
            "|---|---|---|---|---|---|---|",
            *compositions,
            "",
            *(
                [
                    "The floor (`--floor`): after the daemon's pass, the same ticks at the same rates to",
                    "`bench/null_daemon.py`, a process that only decodes the market frames, with the same",
                    "10 ms lag probe (`bench/lag_probe.py`), where the daemon ran; its samples over 5 ms are",
                    "the machine's, not a daemon's:",
                    "",
                    *floor_header(),
                    *floors,
                    "",
                ]
                if args.floor
                else []
            ),
            f"The same crash with the webhook answering {args.hook_delay_ms:g} ms after each request (a",
            "remote service's round trip; received = when the request arrived):",
            "",
            *crash_header(),
            *slow_hook,
            "",
        ]
    out += [
        "Start-up and memory (`bench/rss.py`: `python -m monitor.cli run` as its own process, simulator",
        "in another; ready = spawn → `/readyz` 200, imports included; CPU = user + system seconds used",
        "until ready by the daemon / by the simulator, which other processes on the machine do not",
        "inflate; RSS = VmRSS):",
        "",
        "| run | accounts | spawn → ready s | CPU to ready s (daemon / simulator) | RSS at ready MiB "
        "| RSS 10 s later | peak |",
        "|---|---|---|---|---|---|---|",
        *rss,
    ]
    if cpu:
        out += [
            "",
            "CPU to put a 200-alert burst into the outbox (`bench/burst_cpu.py --callgrind`: render, SQLite",
            "outbox on a real file; instructions per alert, the same on a busy or a quiet machine; `each` =",
            "one transaction per alert, `batch` = `enqueue_many`, 32 per transaction (`--batch`; the pump",
            "writes 8 since 2026-11-27 night)):",
            "",
            "| tree | mode | instructions per alert |",
            "|---|---|---|",
            *cpu,
        ]
    if latency:
        out += [
            "",
            "Random walk (`bench/latency.py --runs 1`: 1,000 accounts, 100 symbols, tick → handed to",
            "Apprise; pairs from the daemon's recorded evaluations, the old replay matcher beside them):",
            "",
            "| run | msg/s | p50 / p99 / max ms | old matcher p99 / max ms | alerts measured / expected "
            "| daemon CPU |",
            "|---|---|---|---|---|---|",
            *latency,
        ]
    print("\n".join(out))
    if args.raw:
        args.raw.write_text(json.dumps(RAW, indent=1))


if __name__ == "__main__":
    main()
