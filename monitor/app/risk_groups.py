"""Which Risk Data Stream connection follows which account, and the fall-back to one each.

Cross accounts are put on connections of up to ``KEYS_PER_CONNECTION`` listen keys
(``monitor.exchange.risk_group.RiskGroup``) in the order they are loaded, one set of connections per
``risk_stream_url``; each connection runs in a task of the daemon's (``risk-group-<n>``). At 1,000
accounts that is 50 connections instead of 1,000: 50 slots of Binance's 300 connection attempts per
5 minutes, so after a network break every account has Binance's own word back within seconds
instead of waiting up to 20 minutes for a slot.

When a server does not confirm several keys on one connection (``CombinedRefused``: its answer to
``LIST_SUBSCRIPTIONS`` misses keys, is an error, or does not come; or the server refuses or closes
three shared connections in a row before answering), the daemon says so once
(``risk_streams_not_combined``, an error) and from then on gives every account a connection of its
own (``risk:<account>``, the documented ``/ws/<key>`` form): the accounts of every shared connection
move to connections of their own, keeping their keys. Nothing is dropped meanwhile: each account's
stream shows down with the reason until its own connection is up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from monitor.exchange.conn_budget import ConnectionBudget, Priority
from monitor.exchange.risk_group import KEYS_PER_CONNECTION, CombinedRefused, Member, RiskGroup
from monitor.exchange.streams import probed_connect

log = structlog.get_logger("monitor.service")

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


class RiskGroups:
    """Every followed cross account's Risk Data Stream connection; see the module docstring."""

    def __init__(
        self,
        spawn: Spawn,
        connections: ConnectionBudget | None,
        *,
        per_connection: int = KEYS_PER_CONNECTION,
        make: Callable[..., RiskGroup] = RiskGroup,
    ) -> None:
        self._spawn = spawn
        self._connections = connections
        self.per_connection = per_connection
        self._make = make
        self.refused = ""  # why the server did not confirm several keys on one connection
        self.groups: dict[str, RiskGroup] = {}  # by name
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._of: dict[str, RiskGroup] = {}  # account → its group
        self._open: dict[str, RiskGroup] = {}  # risk_stream_url → the group taking new members
        self._numbers = itertools.count(1)

    def add(self, url: str, member: Member) -> RiskGroup:
        """Follow ``member`` on a connection of ``url`` with room (a new one when none has);
        the group it was already on if it is followed."""
        group = self._of.get(member.account)
        if group is not None:
            return group
        group = self._open.get(url)
        if group is None or len(group) >= self.per_connection:
            shared = self.per_connection > 1
            group = self._start(
                url, f"risk-group-{next(self._numbers)}" if shared else f"risk:{member.account}"
            )
            if shared:
                self._open[url] = group
        group.add(member)
        self._of[member.account] = group
        return group

    def remove(self, account: str) -> None:
        """Stop following ``account``; a connection left with nobody ends. A revoked key does this
        by itself (the group's ``on_left``)."""
        group = self._of.pop(account, None)
        if group is None:
            return
        group.remove(account)
        if not group.members:
            self._stop(group.name)

    def _left(self, member: Member) -> None:
        self.remove(member.account)

    def group_of(self, account: str) -> RiskGroup | None:
        return self._of.get(account)

    def members_of(self, name: str) -> list[str]:
        """The accounts a connection named ``name`` follows (for the connection budget's waits)."""
        group = self.groups.get(name)
        return list(group.members) if group is not None else []

    def _start(self, url: str, name: str) -> RiskGroup:
        connect = (
            probed_connect
            if self._connections is None
            else self._connections.connect_factory(probed_connect, name, Priority.RISK)
        )
        group = self._make(url, name, connect=connect)
        group.on_left = self._left
        self.groups[name] = group
        self._tasks[name] = self._spawn(self._run(group), name)
        return group

    def _stop(self, name: str) -> None:
        group = self.groups.pop(name, None)
        if group is not None and self._open.get(group.url) is group:
            del self._open[group.url]
        task = self._tasks.pop(name, None)
        if task is None:
            return
        if task is asyncio.current_task():
            asyncio.get_running_loop().call_soon(task.cancel)  # once the caller is out of its way
        else:
            task.cancel()

    async def _run(self, group: RiskGroup) -> None:
        try:
            await group.run()
        except CombinedRefused as exc:
            self._one_each(str(exc))

    def _one_each(self, reason: str) -> None:
        """The server did not confirm a shared connection: every account on one of its own."""
        if not self.refused:
            self.refused = reason
            log.error(
                "risk_streams_not_combined",
                reason=reason,
                action="one Risk Data Stream connection per account from now on",
            )
        self.per_connection = 1
        self._open.clear()
        for name, group in list(self.groups.items()):
            if name.startswith("risk:"):
                continue  # already an account's own
            self._stop(name)
            for member in list(group.members.values()):
                self.remove(member.account)
                self.add(group.url, member)
