"""The daemon's background tasks, and accounts loaded after start (down exchange, key revoked)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from monitor.app.components import QUICK_LOAD, Components
from monitor.app.risk_groups import RiskGroups
from monitor.exchange.risk_group import KEYS_PER_CONNECTION
from monitor.exchange.supervisor import Backoff
from monitor.watch.accounts import AccountWatcher

log = structlog.get_logger("monitor.service")


class Tasks:
    """The daemon's running tasks by name; one that dies is logged (``task_failed``)."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self.running.add(task)
        task.add_done_callback(self._done)
        return task

    def cancel(self, *, keep: str = "") -> None:
        """Cancel every task but the one named ``keep``."""
        for task in list(self.running):
            if task.get_name() != keep:
                task.cancel()

    async def cancel_all(self) -> None:
        self.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("task_failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}")


class Loader:
    """Keeps retrying every account not loaded, then watches it like one loaded at start."""

    def __init__(
        self,
        parts: Components,
        tasks: Tasks,
        backoff: Backoff,
        on_loaded: Callable[[], None] = lambda: None,
        *,
        risk_per_connection: int = KEYS_PER_CONNECTION,
    ) -> None:
        self.parts = parts
        self.tasks = tasks
        self.backoff = backoff
        self.on_loaded = on_loaded  # after an account loaded late is watched (readiness may follow)
        self._loading: dict[str, asyncio.Task[Any]] = {}
        # the Risk Data Streams: several accounts a connection (monitor/app/risk_groups.py)
        self.risk = RiskGroups(tasks.spawn, parts.connections, per_connection=risk_per_connection)
        parts.feeds.members_of = self.risk.members_of
        # the accounts not seen loaded yet, or unloaded since (by position: retried in config order);
        # load_missing looks only at these, not at every account each second
        self._missing = set(range(len(parts.watchers)))
        self._spawn = tasks.spawn  # one bound method shared by every watcher's re-reads
        position = {id(w): i for i, w in enumerate(parts.watchers)}
        for watcher in parts.watchers:
            watcher.on_unloaded.append(lambda w: self._missing.add(position[id(w)]))

    def start(self, watcher: AccountWatcher) -> None:
        """The per-account work of a watcher at start: its Risk Data Stream (loaded cross accounts,
        on a connection shared with others: ``follow_risk``) and its re-reads, each in a task of ours
        only while one is due, none while idle (``monitor/watch/rereads.py``). The key checks are one
        task for all (``watch/key_checks.py``)."""
        self.follow_risk(watcher)
        watcher.run_rereads(self._spawn)

    def follow_risk(self, watcher: AccountWatcher) -> None:
        """Put a loaded cross account on a Risk Data Stream connection (a no-op while it is on one).
        A key revoked there takes it off, and disables the account (``AccountWatcher.risk_member``)."""
        member = watcher.risk_member()
        if member is not None and member.group is None:
            self.risk.add(watcher.endpoints.risk_stream_url, member)

    def stop(self) -> None:
        """At shutdown, before the tasks are cancelled: no re-read timer left, none started any more."""
        for watcher in self.parts.watchers:
            watcher.stop_rereads()

    def load_missing(self) -> None:
        """A loading task for every enabled account not loaded and not being loaded."""
        watchers = self.parts.watchers
        for i in sorted(self._missing):
            watcher = watchers[i]
            if watcher.loaded:
                self._missing.discard(i)  # until it is unloaded (``AccountWatcher.on_unloaded``)
                continue
            task = self._loading.get(watcher.name)
            if not watcher.enabled or (task is not None and not task.done()):
                continue
            self._loading[watcher.name] = self.tasks.spawn(self._load_later(watcher), f"load-{watcher.name}")

    async def _load_later(self, watcher: AccountWatcher) -> None:
        """Load ``watcher`` with backoff, then watch it like an account loaded at start."""
        if not await watcher.load_until_loaded(self.backoff, QUICK_LOAD):
            return
        parts = self.parts
        watcher.configure_policy(parts.policy)
        # an account loaded late (exchange down at start) is adopted as one loaded at start would
        # have been: its units without saved state fire what already holds, counted as takeovers
        saved = dict.fromkeys(parts.saved_units)
        parts.handoff.adopt(parts.policy, set(watcher.units) - parts.handoff.adopted, saved)
        active = {s.label for s in parts.userdata.subscriptions if not s.failed}
        parts.userdata.add([s for s in watcher.subscriptions() if s.label not in active])
        self.follow_risk(watcher)
        for uid in watcher.units:
            parts.engine.evaluate(uid)
        parts.market.set_symbols(parts.book.symbols_needed())  # its prices start flowing now
        self.on_loaded()
