"""The daemon's state on disk: one SQLite file ``state.sqlite3`` under the state directory.

It holds the alert states (so a restart does not resend a crossing), the notification outbox (so
an alert survives a notification outage and a restart) and small JSON values (the last snapshot).
The file runs in WAL mode; the state directory is held with an exclusive ``flock`` while the store
is open, so a second daemon on the same state directory is refused. Schema versioned with
``PRAGMA user_version``. Every failure (corrupt, locked, unwritable, full, newer schema) is a
:class:`StateError` with one line naming the file; the write path's health is kept
(:attr:`Store.write_error`, :attr:`Store.write_failures`, :meth:`Store.on_write_health` on each
failing ↔ working transition) for :mod:`monitor.app.state_health` to tell the trader. Calls are
synchronous and short (sub-millisecond commits without fsync per transaction in WAL
``synchronous=NORMAL``: a process crash loses nothing, a power cut may lose the last commits).
The write-ahead log is copied back into the file (a checkpoint: page copies and an fsync, several
ms) by :meth:`Store.checkpoint` on a second connection of its own, so it can run on a worker thread
beside the commits (the daemon's :mod:`monitor.notify.checkpoint` does, when no alert is on its
way); SQLite's own automatic checkpoint, which would run inside whichever commit crosses its
threshold (the outbox write of a crash's alerts), is left only as a cap at :data:`WAL_CAP_PAGES`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import structlog

log = structlog.get_logger(__name__)

FILENAME = "state.sqlite3"
SCHEMA_VERSION = 1
OutboxStatus = Literal["queued", "held", "sent", "coalesced", "dropped"]
OPEN_STATUSES = ("queued", "held")
WAL_CAP_PAGES = 4000  # SQLite checkpoints by itself past this many WAL pages (16 MiB); default 1000
_TABLES = {"alert_state", "outbox", "kv", "sqlite_sequence"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state(
    unit TEXT PRIMARY KEY, data TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL, target TEXT NOT NULL, route TEXT NOT NULL,
    unit TEXT NOT NULL, kind TEXT NOT NULL,
    title TEXT NOT NULL, body TEXT NOT NULL, notify_type TEXT NOT NULL,
    event_at REAL NOT NULL, created REAL NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, done_at REAL,
    UNIQUE(dedupe_key, target));
CREATE INDEX IF NOT EXISTS outbox_open ON outbox(status, id);
CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL);
"""


class StateError(Exception):
    """The state file cannot be used; the message is one line naming the file and the cause."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One notification to one target (``route#url-fingerprint``: no URL, so no secret, on disk)."""

    dedupe_key: str
    target: str
    route: str
    unit: str
    kind: str
    title: str
    body: str
    notify_type: str
    event_at: float
    status: OutboxStatus = "queued"
    id: int = 0
    attempts: int = 0


def state_error(exc: BaseException, path: Path) -> StateError:
    """Sort an sqlite3/OS failure into a one-line :class:`StateError` for ``path``."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # an OSError's text names the path, which may itself contain "locked" or "full": sort on strerror
    low = (exc.strerror or text if isinstance(exc, OSError) else text).lower()
    if "locked" in low or "busy" in low:
        why = "is locked by another process (another margin-monitor on the same state_dir?)"
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        why = "is corrupt; move it away (or delete it) to start with empty state"
    elif "full" in low:
        why = "cannot be written: the disk is full"
    elif "i/o error" in low:
        why = "cannot be read or written: disk I/O error"
    elif isinstance(exc, PermissionError | NotADirectoryError | FileExistsError) or any(
        w in low for w in ("readonly", "read-only", "unable to open", "permission")
    ):
        why = f"is not writable ({text}); check state_dir and its permissions"
    else:
        why = f"failed: {text}"
    return StateError(f"state file {path} {why}")


def _truncated(path: Path) -> bool:
    """A state file of zero bytes (and no write-ahead log to replay): its content was lost (a copy
    or a restore went wrong, a full disk). SQLite would open it as a new, empty database."""
    if not path.is_file() or path.stat().st_size != 0:
        return False
    wal = path.with_name(path.name + "-wal")
    return not (wal.is_file() and wal.stat().st_size > 0)


class Store:
    """The SQLite state of one daemon; use as a context manager or call :meth:`close`."""

    def __init__(
        self, state_dir: Path | str, *, busy_timeout: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / FILENAME
        self._checkpoint_uri = self.path.absolute().as_uri() + "?mode=rw"  # a chdir later changes nothing
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._dir_fd: int | None = None  # the state directory, flock()ed while the store is open
        self._checkpointer: sqlite3.Connection | None = None  # :meth:`checkpoint`'s own connection
        self._checkpoint_lock = threading.Lock()  # one checkpoint at a time, never during close
        self.lost: str | None = None  # set when a zero-byte state file was found and moved aside
        self.writes = 0  # transactions committed (what :meth:`checkpoint` has to catch up with)
        self.checkpoints = 0  # checkpoints done by :meth:`checkpoint`
        self.write_error: str | None = None  # the last write's error (one line), None once one succeeds
        self.write_failures = 0  # writes that failed since the store was opened
        self._health_callbacks: list[Callable[[str | None], None]] = []
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.dir.is_dir():
                raise NotADirectoryError(f"{self.dir} is not a directory")
            self._hold_dir(busy_timeout)
            if _truncated(self.path):
                moved = Store.quarantine(self.dir, now=clock())
                self.lost = f"state file {self.path} was empty (0 bytes); moved to {moved.name}"
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
            self._conn = conn
            self._check_schema(conn)
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("unable to switch to WAL (read-only filesystem?)")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CAP_PAGES}")
            with self._tx() as tx:  # takes the exclusive lock now, not at the first alert
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._quick_check(conn)
        except StateError:
            self._close_quietly()
            raise
        except (sqlite3.Error, OSError) as exc:
            self._close_quietly()
            raise state_error(exc, self.path) from None
        log.info("state_opened", path=str(self.path))

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Checkpoint and release the file (and its lock). A :meth:`checkpoint` running on another
        thread is waited for (a few ms); one asked after this is skipped."""
        with self._checkpoint_lock:
            if self._conn is not None:
                self._close_checkpointer()
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._close_quietly()

    @staticmethod
    def quarantine(state_dir: Path | str, *, now: float | None = None) -> Path:
        """Move a corrupt state file (and its WAL) aside; returns the new path of the file."""
        path = Path(state_dir) / FILENAME
        stamp = int(time.time() if now is None else now)
        target = path.with_name(f"{FILENAME}.corrupt-{stamp}")
        try:
            for suffix in ("-wal", "-shm"):
                side = path.with_name(FILENAME + suffix)
                if side.exists():
                    side.rename(target.with_name(target.name + suffix))
            path.rename(target)
        except OSError as exc:
            raise state_error(exc, path) from None
        log.warning("state_quarantined", path=str(path), moved_to=str(target))
        return target

    # -- alert states --------------------------------------------------------------------------
    def load_alert_state(self) -> dict[str, Any]:
        """Unit → the JSON the alert policy exported; an unreadable row is skipped with a warning."""
        states: dict[str, Any] = {}
        for unit, data in self._query("SELECT unit, data FROM alert_state ORDER BY unit"):
            try:
                states[unit] = json.loads(data)
            except ValueError:
                log.warning("alert_state_row_skipped", unit=unit, reason="not JSON")
        return states

    def save_alert_state(self, states: Mapping[str, Any]) -> None:
        """Upsert the given units' states (the others are kept)."""
        with self._write() as tx:
            self._save_states(tx, states)

    def forget_alert_state(self, units: Sequence[str]) -> None:
        """Drop these units' alert state, and their finished outbox rows with it: their crossings count
        from 0 again if they come back (config, shard), and an old row holding ``unit|rule|1|…`` would
        silently swallow the new first crossing as a duplicate. Rows still to send stay."""
        with self._write() as tx:
            tx.executemany("DELETE FROM alert_state WHERE unit = ?", [(u,) for u in units])
            tx.executemany(
                "DELETE FROM outbox WHERE unit = ? AND status NOT IN ('queued', 'held')",
                [(u,) for u in units],
            )

    # -- outbox --------------------------------------------------------------------------------
    def add_outbox(
        self, items: Sequence[OutboxItem], *, alert_state: Mapping[str, Any] | None = None
    ) -> list[OutboxItem]:
        """Insert items, ignoring any whose (dedupe_key, target) exists; returns the new ones with ids.

        ``alert_state`` is saved in the same transaction (outbox and state never disagree)."""
        with self._write() as tx:
            added = self._insert(tx, items)
            if alert_state:
                self._save_states(tx, alert_state)
        return added

    def open_outbox(self) -> list[OutboxItem]:
        """Rows still to send (queued) or held by flood control, oldest first."""
        columns = ", ".join(f.name for f in fields(OutboxItem))
        rows = self._query(f"SELECT {columns} FROM outbox WHERE status IN ('queued', 'held') ORDER BY id")
        return [OutboxItem(*row) for row in rows]

    def mark_sent(self, item_id: int, at: float) -> None:
        self.mark_sent_many([(item_id, at)])

    def mark_sent_many(self, sent: Sequence[tuple[int, float]]) -> None:
        """Mark rows (id, time sent) as sent, in one transaction."""
        with self._write() as tx:
            tx.executemany(
                "UPDATE outbox SET status = 'sent', done_at = ? WHERE id = ?", [(at, i) for i, at in sent]
            )

    def mark_failed(self, item_id: int, attempts: int, error: str) -> None:
        """Record a failed attempt (``error`` must hold no secret: it is stored)."""
        self._execute(
            "UPDATE outbox SET attempts = ?, last_error = ? WHERE id = ?", (attempts, error, item_id)
        )

    def mark_dropped(self, item_id: int, reason: str) -> None:
        self._execute(
            "UPDATE outbox SET status = 'dropped', last_error = ?, done_at = ? WHERE id = ?",
            (reason, self._clock(), item_id),
        )

    def coalesce(self, held_ids: Sequence[int], summaries: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Mark held rows as coalesced and queue their summary rows, in one transaction."""
        now = self._clock()
        with self._write() as tx:
            tx.executemany(
                "UPDATE outbox SET status = 'coalesced', done_at = ? WHERE id = ? AND status = 'held'",
                [(now, i) for i in held_ids],
            )
            return self._insert(tx, summaries)

    def outbox_counts(self) -> dict[tuple[str, str], int]:
        """(route, status) → rows."""
        rows = self._query("SELECT route, status, COUNT(*) FROM outbox GROUP BY route, status")
        return {(route, status): n for route, status, n in rows}

    def prune(self, before: float) -> int:
        """Delete finished rows (sent, coalesced, dropped) created before ``before``; returns how many."""
        with self._write() as tx:
            cur = tx.execute(
                "DELETE FROM outbox WHERE status NOT IN ('queued', 'held') AND created < ?", (before,)
            )
            return cur.rowcount

    def checkpoint(self) -> bool:
        """Copy the write-ahead log back into the file (PASSIVE: never waits for the commits, which
        go on beside it; the log restarts at the next write once it is all copied). Safe from any
        thread: it uses a connection of its own, opened at the first call (``mode=rw``: a file gone
        missing is an error, never a new empty file). One at a time; after :meth:`close` it does
        nothing and says so (False). The daemon calls it on a worker thread when no alert is on its
        way (:mod:`monitor.notify.checkpoint`). Raises :class:`StateError`."""
        with self._checkpoint_lock:
            if self._conn is None:
                return False
            try:
                if self._checkpointer is None:
                    self._checkpointer = self._open_checkpointer()
                self._checkpoint_on(self._checkpointer)
            except sqlite3.Error as exc:
                raise state_error(exc, self.path) from None
            self.checkpoints += 1
            return True

    def on_write_health(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback`` on each transition of the write path: with the error's one line when a
        write fails after one succeeded (or the first one fails), with None when a write succeeds
        after one failed. Called on the thread of the write, inside it: keep it short."""
        self._health_callbacks.append(callback)

    def probe(self) -> None:
        """A write that needs room for a page (a page-sized row, deleted in the same transaction, so
        the file keeps nothing of it): whether writes work now, asked while they fail. Raises
        :class:`StateError`, and counts like any write."""
        with self._write() as tx:
            tx.execute("INSERT OR REPLACE INTO kv(key, value, updated) VALUES ('probe', ?, 0)", ("0" * 4096,))
            tx.execute("DELETE FROM kv WHERE key = 'probe'")

    # -- small values --------------------------------------------------------------------------
    def get_json(self, key: str) -> Any:
        rows = self._query("SELECT value FROM kv WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def put_json(self, key: str, value: Any) -> None:
        self._execute(
            "INSERT INTO kv(key, value, updated) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
            (key, json.dumps(value, separators=(",", ":")), self._clock()),
        )

    # -- internals -----------------------------------------------------------------------------
    def _hold_dir(self, timeout: float) -> None:
        """Take the state directory's exclusive ``flock`` (retried for ``timeout`` s, as SQLite's busy
        timeout would): what refuses a second daemon on the same state."""
        self._dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise state_error(sqlite3.OperationalError("database is locked"), self.path) from None
                time.sleep(0.01)

    def _open_checkpointer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._checkpoint_uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA synchronous = NORMAL")  # as the commits': the log, then the file, fsynced
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _checkpoint_on(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _close_checkpointer(self) -> None:
        if self._checkpointer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._checkpointer.close()
            self._checkpointer = None

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state file {self.path} has schema version {version}, newer than this margin-monitor"
                f" ({SCHEMA_VERSION}): upgrade margin-monitor or move the file away"
            )
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables - _TABLES:
            raise StateError(
                f"state file {self.path} is not a margin-monitor state file; choose another state_dir"
            )

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({result})")

    def _conn_or_raise(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"state file {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn_or_raise()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self.writes += 1

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; its outcome is recorded in :attr:`write_error` / :attr:`write_failures`."""
        try:
            with self._tx() as conn:
                yield conn
        except sqlite3.Error as exc:
            error = state_error(exc, self.path)
            self._write_failed(str(error))
            raise error from None
        except StateError as exc:  # closed
            self._write_failed(str(exc))
            raise
        if self.write_error is not None:
            self.write_error = None
            self._tell_health(None)

    def _write_failed(self, error: str) -> None:
        self.write_failures += 1
        was_ok = self.write_error is None
        self.write_error = error
        if was_ok:
            self._tell_health(error)

    def _tell_health(self, error: str | None) -> None:
        for callback in self._health_callbacks:
            callback(error)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._write() as tx:
            tx.execute(sql, params)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn_or_raise().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise state_error(exc, self.path) from None

    def _insert(self, tx: sqlite3.Connection, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        added: list[OutboxItem] = []
        now = self._clock()
        for it in items:
            cur = tx.execute(
                "INSERT OR IGNORE INTO outbox(dedupe_key, target, route, unit, kind, title, body,"
                " notify_type, event_at, created, status, attempts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (it.dedupe_key, it.target, it.route, it.unit, it.kind, it.title, it.body,
                 it.notify_type, it.event_at, now, it.status, it.attempts),
            )  # fmt: skip
            if cur.rowcount == 1 and cur.lastrowid is not None:
                added.append(replace(it, id=cur.lastrowid))
        return added

    def _save_states(self, tx: sqlite3.Connection, states: Mapping[str, Any]) -> None:
        now = self._clock()
        tx.executemany(
            "INSERT INTO alert_state(unit, data, updated) VALUES (?, ?, ?)"
            " ON CONFLICT(unit) DO UPDATE SET data = excluded.data, updated = excluded.updated",
            [(unit, json.dumps(data, separators=(",", ":")), now) for unit, data in states.items()],
        )

    def _close_quietly(self) -> None:
        self._close_checkpointer()
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        if self._dir_fd is not None:  # after the file: the next daemon finds it closed
            os.close(self._dir_fd)
            self._dir_fd = None
