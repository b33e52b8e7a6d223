"""One task checks every account's key, spread over the interval (``monitor/watch/key_checks.py``).

The schedule is pure: a virtual clock stands in for the sleeps, the accounts are plain objects
with the three members the checks use. A revoked key flagged by a real check against the
simulator is tested end to end in ``test_faults_opinion.py`` (``key_check_interval=0.2``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.watch.key_checks import KeyChecks


class Stop(Exception):
    """Ends a run after the rounds a test wants."""


@dataclass
class Account:
    name: str
    key_checkable: bool = True
    checked_at: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [0.0])
    hold: asyncio.Event | None = None  # a check that waits for its answer until set
    cancelled: int = 0
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def check_key(self) -> None:
        self.checked_at.append(self.clock[0])
        self.called.set()
        if self.hold is not None:
            try:
                await self.hold.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise


def virtual_sleep(clock: list[float], steps: int) -> object:
    """A sleep that moves ``clock`` instead of waiting, and stops the run after ``steps`` sleeps."""
    taken = 0

    async def sleep(seconds: float) -> None:
        nonlocal taken
        await asyncio.sleep(0)  # let the checks started so far run
        if taken == steps:
            raise Stop
        taken += 1
        clock[0] += seconds

    return sleep


@given(
    checkable=st.lists(st.booleans(), min_size=1, max_size=12),
    interval=st.floats(min_value=0.5, max_value=600.0),
    rounds=st.integers(min_value=1, max_value=4),
)
async def test_each_checkable_account_once_per_interval_spread_evenly(
    checkable: list[bool], interval: float, rounds: int
) -> None:
    """N accounts, R rounds: each checkable account is checked exactly R times, at
    ``(i + 1) · interval / N + k · interval`` (its first check within one interval, then one per
    interval); the checks of all accounts are ``interval / N`` apart, never two at once; an
    account that may not be checked (not loaded, disabled) is never called."""
    clock = [0.0]
    accounts = [Account(f"a{i}", ok, clock=clock) for i, ok in enumerate(checkable)]
    n = len(accounts)
    checks = KeyChecks(accounts, interval, sleep=virtual_sleep(clock, rounds * n))  # type: ignore[arg-type]
    with pytest.raises(Stop):
        await checks.run()
    step = interval / n
    for i, account in enumerate(accounts):
        want = [(i + 1) * step + k * interval for k in range(rounds)] if account.key_checkable else []
        assert account.checked_at == pytest.approx(want)
    assert checks.started == rounds * sum(checkable)


async def test_a_check_waiting_for_its_answer_is_not_doubled() -> None:
    """An account whose check still waits when its turn comes again is passed over that round; once
    answered, it is checked on its next turn. Cancelling the run cancels a check under way."""
    clock = [0.0]
    slow = Account("slow", clock=clock, hold=asyncio.Event())
    quick = Account("quick", clock=clock)
    checks = KeyChecks([slow, quick], 10.0)
    assert checks.check(slow) and checks.check(quick)
    await asyncio.sleep(0)
    assert not checks.check(slow)  # still waiting: not doubled
    assert checks.check(quick)  # answered: checked again
    assert slow.hold is not None
    slow.hold.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert checks.check(slow)
    await asyncio.sleep(0)
    assert (len(slow.checked_at), checks.started) == (2, 4)

    slow.hold.clear()
    slow.called.clear()
    run = asyncio.create_task(KeyChecks([slow], 0.001).run())
    await asyncio.wait_for(slow.called.wait(), 30)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.sleep(0)
    assert slow.cancelled == 1  # the check under way ended by the cancel, not left behind


async def test_no_accounts_sleeps_instead_of_spinning() -> None:
    """A replica owning no account (a shard with none) waits an interval a round: the run yields
    to the loop instead of spinning in a loop without an await (which would freeze the daemon)."""
    clock = [0.0]
    checks = KeyChecks([], 30.0, sleep=virtual_sleep(clock, 3))  # type: ignore[arg-type]
    with pytest.raises(Stop):
        await checks.run()
    assert clock[0] == 90.0 and checks.started == 0
