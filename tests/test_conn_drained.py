"""``ConnectionBudget.on_drained``: told once, when no connection attempt waits for a slot any more
(``monitor.ops.heap.ConnectionsSettled`` freezes the late connections' objects then). A real budget
on the running loop with a short window; every wait is on a condition, nothing is timed."""

from __future__ import annotations

import asyncio

from daemon_harness import wait_until

from monitor.exchange.conn_budget import ConnectionBudget, Priority


async def _attempt(budget: ConnectionBudget, name: str, granted: list[str]) -> None:
    """One connection attempt: its slot, then its handshake ends at once."""
    await budget.acquire(name, Priority.RISK)
    granted.append(name)
    budget.done()


async def test_told_at_once_when_nothing_ever_waited_and_only_once() -> None:
    budget = ConnectionBudget(5, 60.0)
    told: list[int] = []
    try:
        budget.on_drained(lambda: told.append(budget.granted))
        assert told == [0]
        granted: list[str] = []
        await asyncio.gather(*(_attempt(budget, f"risk:{i}", granted) for i in range(3)))
        assert len(granted) == 3 and told == [0]  # nothing more said
    finally:
        budget.close()


async def test_told_once_as_the_last_waiter_gets_its_slot() -> None:
    """Seven attempts against two per window: told when the seventh is granted, not before, with
    nobody left waiting; not again when more attempts wait and are served later."""
    budget = ConnectionBudget(2, 0.2)
    told: list[tuple[int, int]] = []  # (attempts granted, attempts waiting) when told
    granted: list[str] = []
    try:
        tasks = [asyncio.create_task(_attempt(budget, f"risk:{i}", granted)) for i in range(7)]
        await wait_until(lambda: len(budget.waits()) == 5, what="five attempts waiting")
        budget.on_drained(lambda: told.append((budget.granted, len(budget.core.order()))))
        assert told == []
        await wait_until(lambda: len(granted) == 7, within=30, what="every attempt granted")
        await asyncio.gather(*tasks)
        assert told == [(7, 0)]
        more = [asyncio.create_task(_attempt(budget, f"risk:{i}", granted)) for i in range(7, 12)]
        await asyncio.gather(*more)
        assert len(granted) == 12 and told == [(7, 0)]
    finally:
        budget.close()


async def test_told_when_the_last_waiter_gives_its_place_up() -> None:
    """The only waiting attempt cancelled (its account disabled): nobody waits, told then."""
    budget = ConnectionBudget(1, 60.0)
    told: list[int] = []
    granted: list[str] = []
    try:
        await _attempt(budget, "market", granted)
        waiter = asyncio.create_task(_attempt(budget, "risk:a", granted))
        await wait_until(lambda: len(budget.waits()) == 1, what="one attempt waiting")
        budget.on_drained(lambda: told.append(len(budget.waits())))
        assert told == []
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert told == [0] and granted == ["market"]
    finally:
        budget.close()
