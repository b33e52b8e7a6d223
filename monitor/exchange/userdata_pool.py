"""User-data subscriptions spread over as many WebSocket API sessions as Binance's limits need.

Binance, "User Data Stream requests" (developers.binance.com/docs/binance-spot-api-docs/
websocket-api/user-data-stream-requests, "User Data Stream subscription", General information):

- "You can have only one active subscription for a given account on a given connection."
- "A single session supports **up to 1,000 active subscriptions** simultaneously. Attempting to
  start a new subscription beyond this limit will result in an error."
- "A single session can handle a maximum of **65,535 total subscriptions** over its lifetime. If
  this limit is reached, you will receive an error and must re-establish a new connection to be
  able to start new subscriptions."

An account's cross margin and each of its isolated pairs are separate listenTokens of the *same*
Binance account, so they are taken to count as one account: each goes to a different session. A
subscription joins the first session with room (under :data:`PER_SESSION`) that holds nothing of
its account, else a new session (``userdata``, ``userdata-2``…, each its own supervised connection
that reconnects and renews on its own, :class:`monitor.exchange.userdata.UserDataStream`). The
lifetime cap is kept by each session: it moves to a new connection before its 65,535th subscribe.

>>> plan([("a", None), ("a", "BTCUSDT"), ("a", "ETHUSDT"), ("b", None)], per_session=1000)
[0, 1, 2, 0]
>>> plan([("a", None), ("b", None), ("c", None)], per_session=2)
[0, 0, 1]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from monitor.exchange.supervisor import Supervisor
from monitor.exchange.userdata import UserDataStream, UserSubscription

__all__ = ["LIFETIME_SUBSCRIPTIONS", "PER_SESSION", "UserDataPool", "plan"]

PER_SESSION = 1_000  # active subscriptions per WebSocket API session (Binance, quoted above)
LIFETIME_SUBSCRIPTIONS = 65_535  # subscriptions over one session's lifetime (Binance, quoted above)


def plan(
    keys: Sequence[tuple[str, str | None]], per_session: int = PER_SESSION, start: Sequence[set[str]] = ()
) -> list[int]:
    """The session index of each (account, symbol) in order: the first session with room that holds
    nothing of the account (``start``: the accounts each existing session already holds)."""
    held = [set(accounts) for accounts in start]
    out = []
    for account, _ in keys:
        index = next((i for i, s in enumerate(held) if len(s) < per_session and account not in s), None)
        if index is None:
            held.append(set())
            index = len(held) - 1
        held[index].add(account)
        out.append(index)
    return out


class UserDataPool:
    """Several :class:`UserDataStream` sessions behind the one face the service uses (``run``,
    ``add``, ``subscriptions``). ``make(session_name, subscriptions)`` builds one session."""

    def __init__(
        self,
        subscriptions: Sequence[UserSubscription],
        make: Callable[[str, Sequence[UserSubscription]], UserDataStream],
        *,
        per_session: int = PER_SESSION,
    ) -> None:
        self._make = make
        self._per_session = per_session
        self.streams: list[UserDataStream] = []
        self._group: asyncio.TaskGroup | None = None
        self.add(subscriptions)

    @property
    def subscriptions(self) -> list[UserSubscription]:
        """Every subscription, on whichever session."""
        return [sub for stream in self.streams for sub in stream.subscriptions]

    @property
    def supervisor(self) -> Supervisor:
        """The first session's supervisor (the only one with fewer than 1,000 accounts and no
        isolated pairs)."""
        return self.streams[0].supervisor

    @property
    def retries(self) -> int:
        """Reconnections over every session."""
        return sum(stream.supervisor.retries for stream in self.streams)

    def add(self, subscriptions: Sequence[UserSubscription]) -> None:
        """Place more subscriptions (an account loaded late), opening sessions as needed."""
        live = [{s.account for s in stream.subscriptions if not s.failed} for stream in self.streams]
        where = plan([(s.account, s.symbol) for s in subscriptions], self._per_session, live)
        batches: dict[int, list[UserSubscription]] = {}
        for sub, index in zip(subscriptions, where, strict=True):
            batches.setdefault(index, []).append(sub)
        for index in sorted(batches):
            if index < len(self.streams):
                self.streams[index].add(batches[index])
                continue
            name = "userdata" if index == 0 else f"userdata-{index + 1}"
            stream = self._make(name, batches[index])
            self.streams.append(stream)
            if self._group is not None:
                self._group.create_task(stream.run(), name=name)

    async def run(self) -> None:
        """Run every session until cancelled (sessions opened later join)."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for stream in list(self.streams):
                    group.create_task(stream.run(), name=stream.supervisor.name)
                await asyncio.Event().wait()  # until cancelled: add() may open sessions any time
        finally:
            self._group = None

    def __repr__(self) -> str:
        return f"UserDataPool(sessions={len(self.streams)}, subscriptions={len(self.subscriptions)})"
