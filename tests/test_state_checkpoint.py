"""The write-ahead log's checkpoint runs on a worker thread with a connection of its own: the loop's
commits go on beside it, close waits for it, a failing one is logged once and the daemon goes on.
Real SQLite files; structural, never timed (the deadlines only bound a wait)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.notify.checkpoint import QuietCheckpoint
from monitor.store import FILENAME, OutboxItem, StateError, Store

pytestmark = pytest.mark.timeout(30)


class SpyStore(Store):
    """A real store that notes on which thread each checkpoint ran, and can hold one mid-way."""

    def __init__(self, state_dir: Path, *, hold: bool = False) -> None:
        super().__init__(state_dir)
        self.threads: list[int] = []
        self.order: list[str] = []
        self.opened = 0  # attempts to open the checkpoint's connection
        self.started, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def _open_checkpointer(self) -> sqlite3.Connection:
        self.opened += 1
        return super()._open_checkpointer()

    def _checkpoint_on(self, conn: sqlite3.Connection) -> None:
        self.threads.append(threading.get_ident())
        self.started.set()
        self.release.wait()
        super()._checkpoint_on(conn)
        self.order.append("checkpointed")

    def close(self) -> None:
        self.release.set()  # the checkpoint held mid-way may finish: close must wait for it
        super().close()
        self.order.append("closed")


def item(i: int) -> OutboxItem:
    return OutboxItem(f"u{i}|1", "chat#x", "chat", f"u{i}", "firing", f"t{i}", "b", "warning", 1.0)


async def until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not done():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[SpyStore]:
    store = SpyStore(tmp_path, hold=True)
    yield store
    store.close()


async def test_the_checkpoint_runs_on_a_worker_thread_while_the_loop_commits(held: SpyStore) -> None:
    """The checkpoint is run off the loop's thread, and while it is held mid-way the loop still
    commits outbox rows (its connection is another; nothing waits for the checkpoint)."""
    cp = QuietCheckpoint(held, quiet=0.01)
    held.add_outbox([item(0)])
    cp.start()
    await asyncio.to_thread(held.started.wait)
    assert held.threads and held.threads[0] != threading.get_ident()
    added = held.add_outbox([item(1), item(2)])  # the loop's commit, beside the running checkpoint
    assert [a.unit for a in added] == ["u1", "u2"] and held.checkpoints == 0
    held.release.set()
    await until(lambda: held.checkpoints >= 1, "the checkpoint finishes")
    cp.stop()
    assert set(held.threads) == {held.threads[0]}  # one worker thread, not the loop's
    assert [r.unit for r in held.open_outbox()] == ["u0", "u1", "u2"]


async def test_close_waits_for_the_checkpoint_running_and_later_ones_are_skipped(held: SpyStore) -> None:
    cp = QuietCheckpoint(held, quiet=0.01)
    held.add_outbox([item(0), item(1)])
    cp.start()
    await asyncio.to_thread(held.started.wait)
    held.close()  # on the loop, with the checkpoint held mid-way on its thread
    assert held.order == ["checkpointed", "closed"]
    assert held.checkpoint() is False  # after close: nothing done, nothing raised
    cp.stop()
    assert not (held.dir / f"{FILENAME}-wal").exists()  # closed cleanly: the log was folded in
    with Store(held.dir) as again:  # and the lock was let go
        assert [r.unit for r in again.open_outbox()] == ["u0", "u1"]


async def test_a_failing_checkpoint_is_logged_once_and_the_daemon_goes_on(tmp_path: Path) -> None:
    """The file moved away under the running store: the checkpoint's connection cannot open it
    (``mode=rw``: never a new empty file), which is said once; commits go on; once the file is back,
    checkpoints succeed again."""
    store = SpyStore(tmp_path)
    cp = QuietCheckpoint(store, quiet=0.01)
    path = store.path
    moved = path.with_name("elsewhere.sqlite3")
    path.rename(moved)

    async def attempted(times: int) -> None:
        await until(lambda: store.opened >= times, "a checkpoint is attempted")

    try:
        with capture_logs() as logs:
            cp.start()
            for n in range(3):
                store.put_json("k", n)  # a commit: a checkpoint is due once the store is quiet
                await attempted(n + 1)
            assert not path.exists()  # no empty file was made in its place
            moved.rename(path)
            store.put_json("k", 3)
            await until(lambda: store.checkpoints == 1, "a checkpoint succeeds once the file is back")
            cp.stop()
        failed = [e for e in logs if e["event"] == "state_checkpoint_failed"]
        assert len(failed) == 1 and str(path) in failed[0]["error"]
        assert store.get_json("k") == 3
    finally:
        if moved.exists():
            moved.rename(path)
        store.close()


def test_checkpoint_after_close_is_skipped_and_other_calls_still_raise(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_json("k", 1)
    assert store.checkpoint() is True and store.checkpoints == 1
    store.close()
    assert store.checkpoint() is False and store.checkpoints == 1
    with pytest.raises(StateError):
        store.put_json("k", 2)
