"""The history file: full resolution for the last minutes, one point a minute with min/max before,
bounded by pruning, alerts and prices kept for 24 h. A real SQLite file."""

from __future__ import annotations

import doctest
import math
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.ops import history
from monitor.ops.history import Event, History

DAY = 86_400.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 60)  # a minute boundary


def test_old_minutes_keep_their_wick_and_recent_samples_stay_whole(tmp_path: Path) -> None:
    """A one-second wick to 1.05 inside a minute of 1.6 survives as that minute's min; the last
    10 minutes come back sample by sample."""
    h = History(tmp_path / "h.sqlite", full_seconds=600)
    for s in range(0, 1800, 5):
        level = 1.05 if s == 125 else 1.6
        h.record(T0 + s, {"cross:a": level, "cross:b": None})
    now = T0 + 1795
    points = h.series("cross:a", now)
    minute_two = [p for p in points if p.t == T0 + 120]
    assert minute_two and minute_two[0].lo == 1.05 and minute_two[0].hi == 1.6 and minute_two[0].level == 1.6
    recent = [p for p in points if p.t >= now - 600]
    assert len(recent) == 600 // 5 + 1  # every 5 s sample of the last 10 minutes, both ends
    older = [p for p in points if p.t < now - 660]
    assert all(p.t % 60 == 0 for p in older)  # one point a minute
    assert [p.level for p in h.series("cross:b", now)][:2] == [None, None]  # no debt stays "no debt"
    assert h.series("cross:unknown", now) == []
    h.close()


def test_size_is_bounded_by_the_window(tmp_path: Path) -> None:
    """After 26 simulated hours of 20 units sampled every 30 s, only the last 24 h of minutes,
    10 minutes of samples and 24 h of events and prices remain."""
    h = History(tmp_path / "h.sqlite", full_seconds=600, keep_seconds=DAY)
    units = [f"cross:u{i}" for i in range(20)]
    end = T0 + 26 * 3600
    t = T0
    while t < end:
        events = [Event("cross:u0", t, "firing", "normal", 1.5, 1.49)] if t % 3600 == 0 else []
        h.record(t, dict.fromkeys(units, 1.7), events, {"BTCUSDT": 30_000.0})
        t += 30
    counts = h.counts()
    assert counts["minutes"] <= 20 * (DAY / 60 + 1)
    assert counts["recent"] <= 20 * (660 / 30 + 1)
    assert counts["events"] <= 25 and counts["prices"] <= DAY / 60 + 1
    assert min(p.t for p in h.series("cross:u3", end)) >= end - DAY - 60
    assert len(h.events("cross:u0", end)) == counts["events"]
    assert h.prices(["BTCUSDT"], end)["BTCUSDT"][-1][1] == 30_000.0
    h.close()


def test_alert_levels_count_in_their_minute(tmp_path: Path) -> None:
    """An alert's level between two samples widens that minute's min/max (a wick the sampling missed)."""
    h = History(tmp_path / "h.sqlite", full_seconds=60)
    h.record(T0, {"cross:a": 1.6})
    h.record(T0 + 5, {"cross:a": 1.6}, [Event("cross:a", T0 + 3, "firing", "margin_call", 1.3, 1.29)])
    h.record(T0 + 600, {"cross:a": 1.6})
    first = h.series("cross:a", T0 + 600)[0]
    assert (first.t, first.lo, first.hi) == (T0, 1.29, 1.6)
    h.close()


def test_reopening_keeps_the_history(tmp_path: Path) -> None:
    """A restart reads the same file: unit ids and rows survive."""
    h = History(tmp_path / "h.sqlite")
    h.record(T0, {"cross:a": 1.6})
    h.close()
    again = History(tmp_path / "h.sqlite")
    again.record(T0 + 60, {"cross:b": 1.4})
    assert [p.level for p in again.series("cross:a", T0 + 60)] == [1.6]
    assert [p.level for p in again.series("cross:b", T0 + 60)] == [1.4]
    again.close()


def test_doctests() -> None:
    assert doctest.testmod(history).failed == 0


LEVELS = st.one_of(st.none(), st.floats(0.5, 5.0), st.sampled_from([float("inf"), float("nan")]))


def _model(
    passes: list[tuple[float, dict[str, float | None]]], full: float, keep: float
) -> tuple[
    set[tuple[str, float, int | None]], dict[tuple[str, int], tuple[int | None, int | None, int | None]]
]:
    """The recent rows and minute rows the history file must hold after ``passes``, computed row by
    row in Python: every sample kept while within ``full`` + 60 s of the last pass; per unit and
    minute the last level and the min and max of its non-null levels (integer millionths), minutes
    older than ``keep`` dropped whenever a pass starts a new minute."""
    recent: set[tuple[str, float, int | None]] = set()
    minutes: dict[tuple[str, int], tuple[int | None, int | None, int | None]] = {}
    pruned_minute = -1
    for now, levels in passes:
        minute = int(now // 60)
        for unit, level in levels.items():
            lv = round(level * 1_000_000) if level is not None and math.isfinite(level) else None
            recent = {r for r in recent if (r[0], r[1]) != (unit, now)} | {(unit, now, lv)}
            _, lo, hi = minutes.get((unit, minute), (None, None, None))
            if lv is not None:
                lo = lv if lo is None else min(lo, lv)
                hi = lv if hi is None else max(hi, lv)
            minutes[(unit, minute)] = (lv, lo, hi)
        recent = {r for r in recent if r[1] >= now - full - 60.0}
        if minute != pruned_minute:
            pruned_minute = minute
            oldest = int((now - keep) // 60)
            minutes = {k: v for k, v in minutes.items() if k[1] >= oldest}
    return recent, minutes


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 200),  # seconds since the previous pass
            st.dictionaries(st.sampled_from(["cross:a", "cross:b", "BTCUSDT:iso", "cross:c"]), LEVELS),
        ),
        max_size=25,
    )
)
def test_passes_write_what_a_row_by_row_model_says(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, dict[str, float | None]]]
) -> None:
    """Whatever units come and go and whatever their levels (none, not finite, repeated in a
    minute), the file holds exactly the model's recent and minute rows."""
    path = tmp_path_factory.mktemp("h") / "h.sqlite"
    h = History(path, full_seconds=120, keep_seconds=600)
    passes, now = [], T0
    for gap, levels in steps:
        now += gap
        passes.append((now, levels))
        h.record(now, levels)
    h.close()
    recent, minutes = _model(passes, 120, 600)
    conn = sqlite3.connect(path)
    try:
        names = dict(conn.execute("SELECT id, name FROM units"))
        got_recent = {(names[u], t, lv) for u, t, lv in conn.execute("SELECT unit, t, level FROM recent")}
        got_minutes = {
            (names[u], m): (lv, lo, hi) for u, m, lv, lo, hi in conn.execute("SELECT * FROM minutes")
        }
    finally:
        conn.close()
    assert got_recent == recent
    assert got_minutes == minutes
