"""The history file: full resolution for the last minutes, one point a minute with min/max before,
bounded by pruning, alerts and prices kept for 24 h. A real SQLite file."""

from __future__ import annotations

from pathlib import Path

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
