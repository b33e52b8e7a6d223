"""What the daemon does when a feed (market, user data, risk stream) goes up or down."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from monitor.exchange.binance import StreamState
from monitor.ops.metrics import Metrics
from monitor.watch.accounts import AccountWatcher

log = structlog.get_logger("monitor.service")


class FeedLog:
    """Each feed's state change is logged and counted; a user-data feed refused for good (key
    revoked) disables its account. Once ``stopping()`` a feed going down was asked to: info, not a
    warning, and no reconnect counted."""

    def __init__(
        self, metrics: Metrics, watchers: list[AccountWatcher], *, stopping: Callable[[], bool]
    ) -> None:
        self._metrics = metrics
        self._watchers = watchers
        self._stopping = stopping
        # the accounts a shared connection follows, by its name (monitor/app/risk_groups.py)
        self.members_of: Callable[[str], list[str]] = lambda name: []

    def __call__(self, state: StreamState) -> None:
        if state.fatal and state.name.startswith("userdata:"):
            account = state.name.split(":")[1]
            for watcher in self._watchers:
                if watcher.name == account:
                    watcher.disable(state.reason)
        if state.up:
            log.info("feed_up", feed=state.name)
        elif self._stopping():  # a requested stop closes every feed: expected, not a warning
            log.info("feed_down", feed=state.name, reason=state.reason, fatal=state.fatal, stopping=True)
            self._metrics.feed_connected(state.name, False)
            return
        else:
            log.warning("feed_down", feed=state.name, reason=state.reason, fatal=state.fatal)
            self._metrics.feed_reconnect(state.name)
        self._metrics.feed_connected(state.name, state.up)

    def waiting(self, name: str) -> None:
        """A connection attempt of ``name`` waits for a slot of the connection budget: its feed shows
        as not connected (an account's Risk Data Stream before its first connection included),
        without a warning or a reconnect counted (the budget logs the wait once for all). A shared
        Risk Data Stream connection's wait is each of its accounts' (``risk:<account>``)."""
        members = self.members_of(name)
        for feed in [f"risk:{account}" for account in members] if members else [name]:
            self._metrics.feed_connected(feed, False)


def route_event(by_account: Mapping[str, AccountWatcher], feeds: FeedLog, event: Any) -> None:
    """A user-data stream's event to its account's watcher (a stream's own state to ``feeds``)."""
    if isinstance(event, StreamState):
        feeds(event)
        return
    watcher = by_account.get(getattr(event, "account", ""))
    if watcher is not None:
        watcher.on_event(event)
