"""``monitor.exchange.per_loop``: one object per running loop, forgotten when idle; one timer for the
earliest of many due times. On a real loop, nothing timed: the loop's heap is read."""

from __future__ import annotations

import asyncio

from monitor.exchange.per_loop import EarliestWake, PerLoop


def scheduled(loop: asyncio.AbstractEventLoop) -> list[float]:
    """When the loop's live timers are due."""
    handles: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return sorted(h.when() for h in handles if not h.cancelled())


async def test_one_pending_wake_for_the_earliest_due_time() -> None:
    """A later time leaves the pending wake; an earlier one replaces it; ``soon`` runs it next turn;
    ``cancel`` leaves nothing; a fired wake is armed again by the callback."""
    loop = asyncio.get_running_loop()
    fired: list[float | None] = []
    wake: EarliestWake

    def callback() -> None:
        fired.append(wake.at)
        wake.fired()

    wake = EarliestWake(loop, callback)
    base = loop.time() + 3600.0
    wake.arm(base + 10)
    wake.arm(base + 20)
    assert wake.at == base + 10 and scheduled(loop) == [base + 10]
    wake.arm(base + 5)
    assert wake.at == base + 5 and scheduled(loop) == [base + 5]
    wake.cancel()
    assert not wake.pending and wake.at is None and scheduled(loop) == []
    wake.soon(base)
    await asyncio.sleep(0)
    assert fired == [base] and not wake.pending
    wake.arm(loop.time())
    await asyncio.sleep(0.01)
    assert len(fired) == 2 and not wake.pending and scheduled(loop) == []


async def test_one_object_per_loop_forgotten_when_idle() -> None:
    """The same object for the same loop; once forgotten, a new one; forgetting an old one keeps the
    newer."""
    loop = asyncio.get_running_loop()
    per_loop: PerLoop[list[asyncio.AbstractEventLoop]] = PerLoop(lambda lp: [lp])
    first = per_loop.get()
    assert per_loop.get() is first and first == [loop] and loop in per_loop
    per_loop.forget(loop, first)
    assert loop not in per_loop
    second = per_loop.get()
    per_loop.forget(loop, first)  # stale: the newer stays
    assert per_loop.get() is second and second is not first
