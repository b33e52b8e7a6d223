"""Connections opened together do not ping together (issue #12, "no event-loop stall over 5 ms"):
``probe`` registers with the loop's shared pinger, whose first ping of a connection is due after a
random part of the interval, never more, and which sends one ping per loop turn. Found by
``bench/crash.py``'s late-span compositions: ~50 pings of the connections opened at start-up in
one loop turn every 20 s. Structural: the due times the pinger keeps, the pings a turn sends; no
clock."""

from __future__ import annotations

import asyncio
import time

from monitor.exchange.ping_heap import CAP_BEHIND, Action
from monitor.exchange.pinger import shared_pinger
from monitor.exchange.supervisor import Heartbeat
from monitor.exchange.userdata import probe


class Ws:
    def __init__(self) -> None:
        self.pings = 0

    async def ping(self) -> asyncio.Future[float]:
        self.pings += 1
        pong: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        pong.set_result(0.0)
        return pong


def test_first_ping_is_spread_over_the_interval() -> None:
    """20 probes started in one turn: their first pings are due at different times, each within
    one interval of the start; once due, a ping's next comes an interval later."""

    async def main() -> None:
        heartbeat = Heartbeat(time.time, time.monotonic, lambda: None)
        loop = asyncio.get_running_loop()
        start = loop.time()
        probes = [asyncio.create_task(probe(Ws(), heartbeat, 20.0)) for _ in range(20)]  # type: ignore[arg-type]
        await asyncio.sleep(0)  # each registered
        pinger = shared_pinger()
        slots = list(pinger.schedule._heap)
        assert len(slots) == 20
        firsts = [slot.due - start for slot in slots]
        end = loop.time() - start
        assert all(0.0 <= first <= 20.0 + end for first in firsts)  # never later than before
        assert len(set(firsts)) > 1  # connections opened together ping at different turns
        taken = pinger.schedule.take(max(slot.due for slot in slots))  # all due at once, late
        assert {action for _, action in taken} == {Action.PING}
        assert 1 <= len(taken) <= CAP_BEHIND < 20  # a few pings a turn at most, not 20
        slot = taken[0][0]
        assert slot.due == slot.sent + 20.0  # then the interval
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        assert pinger.schedule.size == 0

    asyncio.run(main())
