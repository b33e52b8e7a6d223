"""The SQLite state file: alert states, the outbox, and one-line errors for bad files."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from monitor.store import FILENAME, SCHEMA_VERSION, OutboxItem, StateError, Store, _truncated, state_error


def item(key: str = "cross:a|normal|1|firing|0", target: str = "chat#1", **kw: object) -> OutboxItem:
    fields: dict[str, object] = {
        "dedupe_key": key,
        "target": target,
        "route": target.split("#")[0],
        "unit": "cross:a",
        "kind": "firing",
        "title": "t",
        "body": "b",
        "notify_type": "warning",
        "event_at": 100.0,
    }
    fields.update(kw)
    return OutboxItem(**fields)  # type: ignore[arg-type]


def test_alert_state_survives_reopen(tmp_path: Path) -> None:
    """Saved alert states come back after closing and reopening the store; updates replace rows."""
    with Store(tmp_path) as store:
        store.save_alert_state({"cross:a": {"x": 1}, "cross:b": {"y": [1, 2]}})
        store.save_alert_state({"cross:a": {"x": 2}})
    with Store(tmp_path) as store:
        assert store.load_alert_state() == {"cross:a": {"x": 2}, "cross:b": {"y": [1, 2]}}
    assert (tmp_path / "state.sqlite3").exists()


def test_state_dir_is_created(tmp_path: Path) -> None:
    """A missing state dir is created (with parents), readable only by its owner."""
    target = tmp_path / "deep" / "state"
    with Store(target):
        pass
    assert (target / "state.sqlite3").exists()
    assert (target.stat().st_mode & 0o077) == 0


def test_outbox_dedupes_on_key_and_target(tmp_path: Path) -> None:
    """The same event for the same target is stored once; another target gets its own row."""
    with Store(tmp_path) as store:
        first = store.add_outbox([item(), item(target="phone#2")])
        again = store.add_outbox([item(), item(title="different text, same key")])
        assert [i.target for i in first] == ["chat#1", "phone#2"]
        assert all(i.id > 0 for i in first)
        assert again == []
        assert [i.target for i in store.open_outbox()] == ["chat#1", "phone#2"]


def test_forgetting_a_units_state_frees_its_sent_keys_for_a_new_first_crossing(tmp_path: Path) -> None:
    """A unit whose state is forgotten (it left the config or the shard) counts crossings from 1
    again when it comes back: its sent rows go with the state so that the new first crossing is not
    swallowed as a duplicate; a row still queued is kept, and other units keep theirs."""
    with Store(tmp_path) as store:
        sent, queued = store.add_outbox([item(), item(key="cross:a|margin_call|1|firing|0")])
        store.mark_sent(sent.id, 1.0)
        other = store.add_outbox([item(unit="cross:b", key="cross:b|normal|1|firing|0")])
        store.mark_sent(other[0].id, 1.0)
        store.save_alert_state({"cross:a": {"x": 1}, "cross:b": {"x": 2}})
        store.forget_alert_state(["cross:a"])
        assert store.load_alert_state() == {"cross:b": {"x": 2}}
        assert [i.dedupe_key for i in store.open_outbox()] == [queued.dedupe_key]
        assert [i.dedupe_key for i in store.add_outbox([item()])] == ["cross:a|normal|1|firing|0"]
        assert store.add_outbox([item(unit="cross:b", key="cross:b|normal|1|firing|0")]) == []


def test_outbox_and_alert_state_commit_together(tmp_path: Path) -> None:
    """add_outbox can save alert states in the same transaction."""
    with Store(tmp_path) as store:
        store.add_outbox([item()], alert_state={"cross:a": {"phase": "firing"}})
    with Store(tmp_path) as store:
        assert store.load_alert_state() == {"cross:a": {"phase": "firing"}}
        assert len(store.open_outbox()) == 1


def test_sent_rows_leave_the_open_outbox_and_attempts_are_kept(tmp_path: Path) -> None:
    """mark_sent removes a row from the open outbox across a reopen; failures count attempts."""
    with Store(tmp_path) as store:
        a, b = store.add_outbox([item("k1"), item("k2")])
        store.mark_failed(b.id, 3, "HTTP 500")
        store.mark_sent(a.id, 200.0)
    with Store(tmp_path) as store:
        rows = store.open_outbox()
        assert [(r.dedupe_key, r.attempts) for r in rows] == [("k2", 3)]
        assert store.outbox_counts() == {("chat", "queued"): 1, ("chat", "sent"): 1}


def test_coalesce_replaces_held_rows_with_a_summary(tmp_path: Path) -> None:
    """Held rows become 'coalesced' and the summary row is queued, in one transaction."""
    with Store(tmp_path) as store:
        held = store.add_outbox([item("k1", status="held"), item("k2", status="held")])
        summary = store.coalesce([h.id for h in held], [item("summary|chat|k1", kind="summary")])
        assert len(summary) == 1 and summary[0].status == "queued"
        assert [r.dedupe_key for r in store.open_outbox()] == ["summary|chat|k1"]
        assert store.outbox_counts()[("chat", "coalesced")] == 2


def test_prune_deletes_old_finished_rows_only(tmp_path: Path) -> None:
    """prune() drops finished rows older than the cutoff and keeps queued ones."""
    clock = iter([10.0, 10.0, 10.0, 500.0, 500.0, 500.0])
    with Store(tmp_path, clock=lambda: next(clock)) as store:
        a, _ = store.add_outbox([item("k1"), item("k2")])
        store.mark_sent(a.id, 20.0)
        assert store.prune(before=100.0) == 1
        assert [r.dedupe_key for r in store.open_outbox()] == ["k2"]


def test_kv_round_trip(tmp_path: Path) -> None:
    """put_json/get_json keep small JSON values such as the last snapshot."""
    with Store(tmp_path) as store:
        assert store.get_json("snapshot") is None
        store.put_json("snapshot", {"a": [1, 2]})
    with Store(tmp_path) as store:
        assert store.get_json("snapshot") == {"a": [1, 2]}


def one_line(exc: pytest.ExceptionInfo[StateError]) -> str:
    text = str(exc.value)
    chained = exc.value.__cause__ or (None if exc.value.__suppress_context__ else exc.value.__context__)
    assert "\n" not in text and chained is None  # no "during handling of the above" traceback
    return text


def test_corrupt_file_is_one_clear_line(tmp_path: Path) -> None:
    """Random bytes in the state file give a StateError naming the file and what to do."""
    (tmp_path / "state.sqlite3").write_bytes(os.urandom(4096))
    with pytest.raises(StateError) as exc:
        Store(tmp_path)
    text = one_line(exc)
    assert "state.sqlite3" in text and "corrupt" in text and "move it away" in text


def test_quarantine_moves_a_corrupt_file_aside(tmp_path: Path) -> None:
    """Store.quarantine renames the bad file so a fresh store can start."""
    (tmp_path / "state.sqlite3").write_bytes(b"garbage" * 100)
    moved = Store.quarantine(tmp_path, now=1234.0)
    assert moved.name == "state.sqlite3.corrupt-1234" and moved.exists()
    with Store(tmp_path) as store:
        assert store.load_alert_state() == {}


def test_second_daemon_on_the_same_state_is_refused(tmp_path: Path) -> None:
    """While one store holds the file, a second open fails fast with 'locked'."""
    with Store(tmp_path):
        with pytest.raises(StateError) as exc:
            Store(tmp_path, busy_timeout=0.05)
        assert "locked" in one_line(exc)
    with Store(tmp_path):
        pass


def test_state_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    """A state_dir path that is a regular file gives a StateError, not an OSError traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError) as exc:
        Store(blocker)
    assert "not writable" in one_line(exc)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_state_dir_is_one_line(tmp_path: Path) -> None:
    """A state dir without write permission gives a StateError."""
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StateError) as exc:
            Store(tmp_path)
        assert "not writable" in one_line(exc)
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (sqlite3.OperationalError("attempt to write a readonly database"), "not writable"),
        (sqlite3.OperationalError("database or disk is full"), "disk is full"),
        (sqlite3.OperationalError("disk I/O error"), "I/O error"),
        (sqlite3.DatabaseError("database disk image is malformed"), "corrupt"),
        (sqlite3.OperationalError("database is locked"), "locked"),
        (PermissionError(13, "Permission denied"), "not writable"),
    ],
)
def test_state_error_sorts_sqlite_failures(error: Exception, words: str) -> None:
    """Each SQLite/OS failure becomes one line that names the file and the cause."""
    text = str(state_error(error, Path("/var/lib/mm/state.sqlite3")))
    assert words in text and "/var/lib/mm/state.sqlite3" in text and "\n" not in text


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer margin-monitor is refused rather than misread."""
    with Store(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / "state.sqlite3")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StateError) as exc:
        Store(tmp_path)
    assert "newer" in one_line(exc)


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    """Some other SQLite database at the state path is not taken over."""
    conn = sqlite3.connect(tmp_path / "state.sqlite3")
    conn.execute("CREATE TABLE users(name TEXT)")
    conn.close()
    with pytest.raises(StateError) as exc:
        Store(tmp_path)
    assert "not a margin-monitor state file" in one_line(exc)


def test_bad_alert_state_row_is_skipped_not_fatal(tmp_path: Path) -> None:
    """A row whose JSON does not parse is skipped; the others still load."""
    with Store(tmp_path) as store:
        store.save_alert_state({"cross:a": {"ok": True}})
    conn = sqlite3.connect(tmp_path / "state.sqlite3")
    conn.execute("INSERT INTO alert_state(unit, data, updated) VALUES ('cross:b', '{nope', 0)")
    conn.commit()
    conn.close()
    with Store(tmp_path) as store:
        assert store.load_alert_state() == {"cross:a": {"ok": True}}


def test_use_after_close_is_a_state_error(tmp_path: Path) -> None:
    """Calling the store after close raises StateError, not sqlite3.ProgrammingError."""
    store = Store(tmp_path)
    store.close()
    with pytest.raises(StateError):
        store.open_outbox()


def test_empty_state_file_is_set_aside_and_reported(tmp_path: Path) -> None:
    """A zero-byte state file is not taken as "nothing was sent": it is moved aside and ``lost`` says
    so (the daemon then tells the trader); a fresh file takes its place."""
    (tmp_path / FILENAME).write_bytes(b"")
    with Store(tmp_path, clock=lambda: 1234.0) as store:
        assert store.lost is not None and "was empty (0 bytes)" in store.lost
        assert f"{FILENAME}.corrupt-1234" in store.lost
        store.save_alert_state({"cross:a": {"x": 1}})
    assert (tmp_path / f"{FILENAME}.corrupt-1234").stat().st_size == 0
    with Store(tmp_path) as again:
        assert again.lost is None and again.load_alert_state() == {"cross:a": {"x": 1}}


def test_empty_file_next_to_a_write_ahead_log_is_left_to_sqlite(tmp_path: Path) -> None:
    """A zero-byte main file next to a non-empty WAL is not called lost: SQLite replays its log."""
    path = tmp_path / FILENAME
    path.write_bytes(b"")
    assert _truncated(path)
    (tmp_path / f"{FILENAME}-wal").write_bytes(b"\x37\x7f\x06\x82")
    assert not _truncated(path)
    assert not _truncated(tmp_path / "absent")
