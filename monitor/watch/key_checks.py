"""Every account's API key checked once per interval, by one task for all accounts.

A revoked key is noticed within seconds rather than at the next snapshot by the cheapest signed
call there is (``AccountWatcher.check_key``: ``GET /sapi/v1/account/apiRestrictions``, weight 1).
The checks of N accounts are spread evenly over the interval: one every ``interval / N`` seconds,
in config order, round after round. So each account is still checked once per interval, and

- the REST load is the even rate the interval was chosen for (``KEY_CHECKS_PER_SECOND``), not
  every account at once: with a sleeping task per account, all started together, the 1,000
  checks of 1,000 accounts came due in the same event-loop turn every interval;
- one timer is pending for all accounts instead of one per account: each per-account sleep of
  ``interval`` (250 s at 1,000 accounts) outlived the young collections, so ~2,000 timers and
  futures sat in the oldest generation for every full collection to walk.

A check still waiting for its answer when its account comes round again is not doubled (the REST
client's own timeout ends it); an account not loaded or disabled is passed over, as before.

Worked example: 4 accounts, interval 20 s: a check every 5 s, accounts a, b, c, d at 5, 10, 15,
20 s, then a again at 25 s: each account once per 20 s, the first within its interval.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)


class KeyHolder(Protocol):
    """What the checks need of an account (``AccountWatcher``)."""

    @property
    def name(self) -> str: ...

    @property
    def key_checkable(self) -> bool: ...

    def check_key(self) -> Awaitable[None]: ...


class KeyChecks:
    """One loop checking ``accounts``' keys, spread over ``interval``; see the module docstring."""

    def __init__(
        self,
        accounts: Sequence[KeyHolder],
        interval: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._accounts = accounts
        self.interval = interval
        self._sleep = sleep
        self._checking: dict[str, asyncio.Task[Any]] = {}  # account → its check still under way
        self.started = 0  # checks started since start (tests, diagnostics)

    @property
    def step(self) -> float:
        """Seconds between two checks: the interval shared by every account."""
        return self.interval / max(1, len(self._accounts))

    async def run(self) -> None:
        """Check forever (until cancelled, which also cancels the checks under way)."""
        try:
            while True:
                if not self._accounts:  # (a shard owning none): nothing to check, never a busy loop
                    await self._sleep(self.interval)
                for account in self._accounts:
                    await self._sleep(self.step)
                    self.check(account)
        finally:
            for task in list(self._checking.values()):
                task.cancel()

    def check(self, account: KeyHolder) -> bool:
        """Start ``account``'s check if it may be checked and none is under way; whether it started."""
        under_way = self._checking.get(account.name)
        if not account.key_checkable or (under_way is not None and not under_way.done()):
            return False
        task = asyncio.ensure_future(account.check_key())
        self._checking[account.name] = task
        task.add_done_callback(functools.partial(self._finished, account.name))
        self.started += 1
        return True

    def _finished(self, name: str, task: asyncio.Task[Any]) -> None:
        if self._checking.get(name) is task:
            del self._checking[name]
        if not task.cancelled() and task.exception() is not None:  # check_key handles its errors
            log.error("key_check_crashed", account=name, error=repr(task.exception()))
