"""Level, price and alert history for the status page and the stress betas, in a bounded SQLite file.

Kept apart from the state file (``monitor.store``): losing it loses only charts, never an alert.

- ``recent``: every sample of every unit's level for the last ``full_seconds`` (full resolution);
- ``minutes``: one row per unit and minute for ``keep_seconds`` (24 h): the last level of the minute
  and its min and max, so a wick inside a minute survives the downsampling;
- ``events``: alerts as they fired and resolved (from the alert pump);
- ``prices``: the last price of each symbol per minute (the stress table's beta estimates).

Size is bounded by ``units × keep_seconds / 60`` minute rows plus ``units × full_seconds / every``
recent rows: rows older than their window are deleted (samples on every pass, the rest once a
minute, unit by unit along the primary key so no pass scans a table; one statement per table, so
the worker thread holds the GIL for a few statements, not a row each). Levels are stored as integer
millionths (3-4 bytes instead of an 8-byte REAL: about 25 bytes a minute row); a level of None (no
debt) is stored as NULL; a unit that is blind or unpriced is not sampled (a gap, never a made-up
value).

Writes and reads go through one connection guarded by a lock, so the daemon runs them in a worker
thread (``asyncio.to_thread``) and the event loop never waits on the disk.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FILE_NAME", "Event", "History", "Point"]

FILE_NAME = "history.sqlite"
SCALE = 1_000_000  # levels are kept as integer millionths
SCHEMA = """
CREATE TABLE IF NOT EXISTS units (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS recent (unit INTEGER, t REAL, level REAL, PRIMARY KEY (unit, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minutes (
    unit INTEGER, minute INTEGER, level REAL, lo REAL, hi REAL, PRIMARY KEY (unit, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (unit INTEGER, t REAL, kind TEXT, rule TEXT, bar REAL, level REAL);
CREATE INDEX IF NOT EXISTS events_by_unit ON events (unit, t);
CREATE TABLE IF NOT EXISTS prices (
    symbol TEXT, minute INTEGER, price REAL, PRIMARY KEY (symbol, minute)
) WITHOUT ROWID;
"""
_MERGE_MINUTE = """
ON CONFLICT (unit, minute) DO UPDATE SET
    level = excluded.level,
    lo = CASE WHEN lo IS NULL THEN excluded.lo WHEN excluded.lo IS NULL THEN lo ELSE min(lo, excluded.lo) END,
    hi = CASE WHEN hi IS NULL THEN excluded.hi WHEN excluded.hi IS NULL THEN hi ELSE max(hi, excluded.hi) END
"""
UPSERT_MINUTE = "INSERT INTO minutes (unit, minute, level, lo, hi) VALUES (?, ?, ?, ?, ?)" + _MERGE_MINUTE
# A pass's levels arrive as one JSON array of [unit id, level] pairs, written by one statement each:
# the worker thread then lets go of the GIL for the whole write (one sqlite3_step), where a row per
# statement took it back after every row and the event loop, woken meanwhile, waited for it.
_PAIRS = "SELECT json_extract(value, '$[0]') AS unit, json_extract(value, '$[1]') AS level FROM json_each(?)"
INSERT_RECENT = f"INSERT OR REPLACE INTO recent (unit, t, level) SELECT unit, ?, level FROM ({_PAIRS})"
UPSERT_MINUTES = (
    "INSERT INTO minutes (unit, minute, level, lo, hi) "
    f"SELECT unit, ?, level, level, level FROM ({_PAIRS}) WHERE true" + _MERGE_MINUTE
)


@dataclass(frozen=True, slots=True)
class Point:
    """One chart point: time (epoch s), level (None: no debt), the min and max level in its span."""

    t: float
    level: float | None
    lo: float | None
    hi: float | None


@dataclass(frozen=True, slots=True)
class Event:
    """An alert seen by the pump: ``kind`` firing / repeat / resolved / blind / blind_resolved."""

    unit: str
    t: float
    kind: str
    rule: str
    bar: float | None
    level: float | None


def _encode(level: float | None) -> int | None:
    return round(level * SCALE) if level is not None and math.isfinite(level) else None


def _pair(uid: int, level: int | None) -> str:
    """``[uid,level]`` as JSON text: strings, which the collector does not track, so a pass of
    1,000 units allocates nothing that counts towards a collection in the worker thread.

    >>> "[" + ",".join([_pair(1, 1600000), _pair(2, None)]) + "]"
    '[[1,1600000],[2,null]]'
    """
    return f"[{uid},{'null' if level is None else level}]"


def _decode(value: int | None) -> float | None:
    return None if value is None else value / SCALE


class History:
    """The history file; ``record`` writes one sampling pass, the ``series``/``events`` read it."""

    def __init__(
        self, path: Path | str, *, full_seconds: float = 600.0, keep_seconds: float = 86_400.0
    ) -> None:
        self.path = Path(path)
        self.full_seconds = full_seconds
        self.keep_seconds = keep_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._ids: dict[str, int] = dict(
            (name, uid) for uid, name in self._conn.execute("SELECT id, name FROM units")
        )
        self._pending: list[Event] = []
        self._pruned_minute = -1
        self._symbols: set[str] = {row[0] for row in self._conn.execute("SELECT DISTINCT symbol FROM prices")}

    def close(self) -> None:
        """Close the file (checkpointing the WAL)."""
        with self._lock:
            self._conn.close()

    # -- writing -------------------------------------------------------------------------------
    def note_event(self, event: Event) -> None:
        """Queue an alert for the next ``record`` (no I/O: safe on the event loop)."""
        self._pending.append(event)

    def take_events(self) -> list[Event]:
        """The queued alerts, emptying the queue (called on the loop before ``record``)."""
        events, self._pending = self._pending, []
        return events

    def _id(self, name: str) -> int:
        uid = self._ids.get(name)
        if uid is None:
            self._conn.execute("INSERT OR IGNORE INTO units (name) VALUES (?)", (name,))
            row = self._conn.execute("SELECT id FROM units WHERE name = ?", (name,)).fetchone()
            uid = self._ids[name] = int(row[0])
        return uid

    def record(
        self,
        now: float,
        levels: Mapping[str, float | None],
        events: Iterable[Event] = (),
        prices: Mapping[str, float] | None = None,
    ) -> None:
        """One sampling pass at ``now``: every unit's level, the alerts since the last pass (their
        levels count in their minute's min/max), the symbols' prices; then drop expired rows."""
        minute = int(now // 60)
        with self._lock, self._conn:
            self._conn.execute("BEGIN")
            pairs = "[" + ",".join(_pair(self._id(u), _encode(lv)) for u, lv in levels.items()) + "]"
            self._conn.execute(INSERT_RECENT, (now, pairs))
            self._conn.execute(UPSERT_MINUTES, (minute, pairs))
            for e in events:
                uid = self._id(e.unit)
                self._conn.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", (uid, e.t, e.kind, e.rule, e.bar, e.level)
                )
                lv = _encode(e.level)
                if lv is not None:
                    self._conn.execute(UPSERT_MINUTE, (uid, int(e.t // 60), lv, lv, lv))
            if prices:
                self._symbols.update(prices)
                rows_p = [(s, minute, p) for s, p in prices.items()]
                self._conn.executemany("INSERT OR REPLACE INTO prices VALUES (?, ?, ?)", rows_p)
            self._prune(now)

    def _prune(self, now: float) -> None:
        # one extra minute of samples, so the minute the full-resolution window starts in is whole
        cut = now - self.full_seconds - 60.0
        self._conn.execute("DELETE FROM recent WHERE unit IN (SELECT id FROM units) AND t < ?", (cut,))
        minute = int(now // 60)
        if minute == self._pruned_minute:
            return
        self._pruned_minute = minute
        oldest = int((now - self.keep_seconds) // 60)
        self._conn.execute(
            "DELETE FROM minutes WHERE unit IN (SELECT id FROM units) AND minute < ?", (oldest,)
        )
        self._conn.execute("DELETE FROM events WHERE t < ?", (now - self.keep_seconds,))
        old_prices = [(s, oldest) for s in self._symbols]
        self._conn.executemany("DELETE FROM prices WHERE symbol = ? AND minute < ?", old_prices)

    # -- reading -------------------------------------------------------------------------------
    def series(self, unit: str, now: float) -> list[Point]:
        """The unit's last ``keep_seconds``: one point per minute (level, min, max) up to the start
        of the full-resolution window, then every sample."""
        with self._lock:
            uid = self._ids.get(unit)
            if uid is None:
                return []
            cut = now - self.full_seconds
            first_recent = int(cut // 60) * 60
            older = self._conn.execute(
                "SELECT minute, level, lo, hi FROM minutes WHERE unit = ? AND minute >= ? AND minute < ?"
                " ORDER BY minute",
                (uid, int((now - self.keep_seconds) // 60), first_recent // 60),
            ).fetchall()
            recent = self._conn.execute(
                "SELECT t, level FROM recent WHERE unit = ? AND t >= ? ORDER BY t", (uid, first_recent)
            ).fetchall()
        points = [Point(m * 60.0, _decode(lv), _decode(lo), _decode(hi)) for m, lv, lo, hi in older]
        points.extend(Point(t, _decode(lv), _decode(lv), _decode(lv)) for t, lv in recent)
        return points

    def events(self, unit: str, now: float) -> list[Event]:
        """The unit's alerts in the last ``keep_seconds``, oldest first."""
        with self._lock:
            uid = self._ids.get(unit)
            if uid is None:
                return []
            rows = self._conn.execute(
                "SELECT t, kind, rule, bar, level FROM events WHERE unit = ? AND t >= ? ORDER BY t",
                (uid, now - self.keep_seconds),
            ).fetchall()
        return [Event(unit, t, kind, rule, bar, lv) for t, kind, rule, bar, lv in rows]

    def prices(self, symbols: Iterable[str], now: float) -> dict[str, list[tuple[float, float]]]:
        """Per symbol, (minute start, last price of that minute) over the last ``keep_seconds``."""
        since = int((now - self.keep_seconds) // 60)
        out: dict[str, list[tuple[float, float]]] = {}
        with self._lock:
            for symbol in symbols:
                rows = self._conn.execute(
                    "SELECT minute, price FROM prices WHERE symbol = ? AND minute >= ? ORDER BY minute",
                    (symbol, since),
                ).fetchall()
                out[symbol] = [(m * 60.0, p) for m, p in rows]
        return out

    def size(self) -> int:
        """Bytes on disk (the file and its WAL)."""
        total = 0
        for suffix in ("", "-wal"):
            path = Path(f"{self.path}{suffix}")
            if path.exists():
                total += path.stat().st_size
        return total

    def counts(self) -> dict[str, Any]:
        """Row counts per table (for the benchmark)."""
        with self._lock:
            return {
                table: self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("recent", "minutes", "events", "prices")
            }
