"""The loop-lag floor's parts (issue 12: which lag samples are the machine's): ``--cpus`` parsing and
pinning (``bench/placement.py``), the lag probe's bookkeeping (``bench/lag_probe.py``), compare.py's
tables, and the floor pass on a tiny load (a real simulator and null daemon). No timing."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path as FsPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(FsPath(__file__).resolve().parent.parent / "bench"))

from compare import crash_header, crash_rows, error_row, floor_header, floor_rows, latency_rows, rss_row
from floor import floor_pass
from lag_probe import LagProbe, columns, within
from latency import start_sim
from latency_workload import make_workload
from loop_names import Ring, key_of, snapshot
from placement import Placement, PlacementError, argument, parse, pin, spell

TWO = frozenset({0, 1})


def test_cpus_are_parsed_as_daemon_colon_others() -> None:
    assert parse("1:0", TWO) == Placement(frozenset({1}), frozenset({0}))
    assert parse("0-2,5:3,4", frozenset(range(6))) == Placement(frozenset({0, 1, 2, 5}), frozenset({3, 4}))
    assert str(parse("0-2,5:3,4", frozenset(range(6)))) == "0-2,5:3-4"
    assert parse("1:0", TWO).report() == {"daemon": [1], "others": [0]}


@given(st.sets(st.integers(0, 63), min_size=1), st.sets(st.integers(0, 63), min_size=1))
def test_a_placement_spelled_parses_back(daemon: set[int], others: set[int]) -> None:
    placement = Placement(frozenset(daemon), frozenset(others))
    assert parse(str(placement), frozenset(range(64))) == placement


@pytest.mark.parametrize("text", ["1", "1:", ":0", "a:0", "1:0-", "2-1:0", "1;0"])
def test_a_malformed_cpus_value_is_one_line_naming_the_shape(text: str) -> None:
    with pytest.raises(PlacementError) as caught:
        parse(text, TWO)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--cpus")


def test_a_cpu_that_does_not_exist_is_named_with_those_that_do() -> None:
    with pytest.raises(PlacementError, match=r"^--cpus 1:2-3: CPU 2-3 does not exist here \(CPUs 0-1\)$"):
        parse("1:2-3", TWO)


def test_the_benches_say_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """``--cpus`` with a CPU this machine lacks: argparse's usage, then one error line."""
    import crash

    missing = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(argparse.ArgumentTypeError, match=f"CPU {missing} does not exist"):
        argument(f"{missing}:0")
    with pytest.raises(SystemExit):
        crash.parse_args(["--cpus", f"0:{missing}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(
        f"CPU {missing} does not exist here (CPUs {spell(frozenset(os.sched_getaffinity(0)))})"
    )
    assert crash.parse_args(["--cpus", "0:0", "--floor"]).cpus == Placement(frozenset({0}), frozenset({0}))


def test_pin_sets_every_thread_of_a_process() -> None:
    cpu = min(os.sched_getaffinity(0))
    code = (
        "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start();"
        " print('up', flush=True); time.sleep(30)"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"up\n"
            threads = [int(t.name) for t in FsPath(f"/proc/{child.pid}/task").iterdir()]
            assert len(threads) == 2
            pin(child.pid, frozenset({cpu}))
            assert all(os.sched_getaffinity(t) == {cpu} for t in threads)
            pin(child.pid, None)  # unpinned: left alone
            assert os.sched_getaffinity(child.pid) == {cpu}
        finally:
            child.kill()


def test_the_probe_keeps_every_sample_and_the_late_ones_spans() -> None:
    def ran() -> None:
        pass

    ring = Ring(size=8)
    ring.add((0.95, 0.96, 0.01, key_of(snapshot(ran, ()))))  # before the late span
    ring.add((0.995, 1.0, 0.005, key_of(snapshot(ran, ()))))
    probe = LagProbe(ring)
    probe.record(0.5, 0.001, 0.0)
    probe.record(1.0, 0.008, 0.004)  # woke 8 ms late: its span is [0.992, 1.0]
    probe.record(1.02, 0.005, 0.0)  # exactly 5 ms: not over
    assert [s[0] for s in probe.samples] == [0.5, 1.0, 1.02]
    assert len(probe.late) == 1
    at, lag, spans = probe.late[0]
    assert (at, lag) == (1.0, 0.008) and [r[0] for r in spans] == [0.995]
    assert columns(probe.samples) == {"stalls_over_5ms": 1, "lag_max_ms": 8.0, "lag_samples": 3}
    assert columns(within(probe.samples, 0.9, 1.02)) == {
        "stalls_over_5ms": 1,
        "lag_max_ms": 8.0,
        "lag_samples": 1,
    }
    assert columns([]) == {"stalls_over_5ms": 0, "lag_max_ms": 0.0, "lag_samples": 0}
    bare = LagProbe()  # the null daemon's: no ring, the late samples kept without spans
    bare.record(1.0, 0.02, 0.0)
    assert bare.late == [(1.0, 0.02, [])]


def cells(row: str) -> int:
    assert row.startswith("|") and row.endswith("|"), row
    return row.count("|") - 1


def phase() -> dict[str, object]:
    return {
        "rate": 1000, "sent_rate": 1000, "alerts_expected": 4, "alerts_received": 4, "lost": 0,
        "doubled": 0, "received_p50_ms": 1.0, "received_p99_ms": 2.0, "received_max_ms": 3.0,
        "handed_p50_ms": 1.0, "handed_p99_ms": 2.0, "handed_max_ms": 3.0, "stalls_over_5ms": 3,
        "lag_max_ms": 7.5, "lag_samples": 700, "cpu_stalls_over_5ms": 0, "cpu_stall_max_ms": 1.0,
        "gc_full": 0, "gc_max_ms": 1.0, "cpu": 0.3, "stall_causes": {"gc": 2, "waiting: the loop": 1},
        "floor": {"stalls_over_5ms": 1, "lag_max_ms": 6.0, "lag_samples": 690, "frames_decoded": 8000,
                  "frames_sent": 8000, "cpu": 0.06},
    }  # fmt: skip


def test_compare_s_rows_have_their_header_s_columns_even_for_a_failed_run() -> None:
    result = {"start": {"ready_s": 1.5, "rss_ready_mib": 140.0}, "phases": [phase()]}
    failed = {"error": "crash.py exited 1: boom"}
    for header, rows in (
        (crash_header(), crash_rows("1A base", result) + crash_rows("1B new", failed)),
        (floor_header(), floor_rows("1A base", result) + floor_rows("1B new", failed)),
        (floor_header(), [error_row("1B new", "x", 7)]),
    ):
        assert cells(header[0]) == cells(header[1])
        assert rows and all(cells(r) == cells(header[0]) for r in rows), rows
    assert cells(rss_row("1B", failed)) == 7
    assert all(cells(r) == 6 for r in latency_rows("1B", failed))
    assert floor_rows("1A", {"phases": [{**phase(), "floor": None}]}) == []  # a run without --floor


async def test_the_floor_pass_reads_every_tick_of_every_phase(tmp_path: FsPath) -> None:
    """A real simulator pushing a tiny crash path to a real null daemon: per phase the lag columns,
    and every tick sent decoded."""
    from crash import crash_path

    work = make_workload(3, 2, 1, 11, levels=(1.33, 1.9))
    path, plan = crash_path(work.prices, [100, 200], 0.5, 0.05, 11)
    cpus = frozenset({min(os.sched_getaffinity(0))})
    sim, url = await start_sim(tmp_path, work, path, cpus)
    try:
        phases = await floor_pass(sim, url, work.symbols, plan, tmp_path, cpus, pause=0.0, drain=60.0)
        assert os.sched_getaffinity(sim.proc.pid) == cpus
    finally:
        await sim.stop()
    assert [p["rate"] for p in phases] == [100, 200]
    for p, (_, start, stop) in zip(phases, plan, strict=True):
        assert p["frames_sent"] == p["frames_decoded"] == stop - start
        assert set(p) >= {"stalls_over_5ms", "lag_max_ms", "lag_samples", "cpu"}


async def test_the_floor_pass_keeps_the_loop_busy_at_the_duty_asked(tmp_path: FsPath) -> None:
    """``duty`` per phase (``--floor-duty``): the null daemon runs its short busy steps in a phase
    with a share, none in a phase without, and reports both."""
    from crash import crash_path

    work = make_workload(3, 2, 1, 11, levels=(1.33, 1.9))
    path, plan = crash_path(work.prices, [100, 200], 0.5, 0.05, 11)
    cpus = frozenset({min(os.sched_getaffinity(0))})
    sim, url = await start_sim(tmp_path, work, path, cpus)
    try:
        phases = await floor_pass(
            sim, url, work.symbols, plan, tmp_path, cpus, pause=0.2, drain=60.0, duty=[0.3]
        )
    finally:
        await sim.stop()
    busy, idle = phases
    assert (busy["duty"], idle["duty"]) == (0.3, 0.0)
    assert busy["busy_steps"] > 0 and idle["busy_steps"] == 0
    assert busy["duty_unit_us"] > 0
