"""Binance's WebSocket connection budget without I/O: who may open a connection now, who waits, how long.

Binance allows **300 WebSocket connection attempts per 5 minutes per IP** ("There is a limit of 300
connections per attempt every 5 minutes per IP", web-socket-streams.md "Websocket Limits"; the same
figure in web-socket-api.md "Connection limits"), over market streams, the WebSocket API and the
Risk Data Stream alike. Past it the handshake is refused, and an IP that keeps trying is banned.

:class:`SlotWindow` keeps one such budget for the whole daemon (one host IP): at most ``limit``
attempts granted in any sliding ``window`` seconds (by default :data:`LIMIT` = 250 of Binance's
300, leaving room for anything else on the IP). An attempt asks for a slot (:meth:`request`); slots
go by priority (:class:`Priority`: the market streams everything depends on, then the user-data
sessions, then the per-account Risk Data Streams), first come first served within one.
A handshake refused anyway (HTTP 429: another process on the IP, a restart that forgot its
attempts) is taken to mean the budget is spent: no slot is granted until its ``Retry-After``, or a
whole window when the server gives none (:meth:`refused`). Times are plain numbers handed in.

An attempt holds its slot from the grant until its handshake ends (:meth:`done`, success or
failure), and its time in the window is that end: the server saw the attempt somewhere in between,
and counting it from the grant would let the next window's attempts overlap a slow handshake's
(measured: a start-up that granted 8 of 10 per 3 s at once, the handshakes reaching the server
late, and the next 8 granted on time got 4 refused).

>>> w = SlotWindow(limit=2, window=10.0)
>>> for name, kind in [("risk:a", Priority.RISK), ("risk:b", Priority.RISK), ("risk:c", Priority.RISK)]:
...     w.request(name, kind)
>>> w.grant(0.0)                      # two slots free now: the first two asking
['risk:a', 'risk:b']
>>> w.done(0.0); w.done(0.0)          # their handshakes ended at once
>>> w.request("market", Priority.MARKET)
>>> w.waiting(0.0)                    # the market stream jumps the queue; each waiter's place, ETA
{'market': Wait(ahead=0, eta=10.0), 'risk:c': Wait(ahead=1, eta=10.0)}
>>> w.grant(9.9), w.next_at(9.9)      # nothing before the oldest attempt leaves the window
([], 10.0)
>>> w.grant(10.0)
['market', 'risk:c']
>>> w.done(10.5); w.done(11.0)
>>> w.refused(11.0, retry_after=30.0) # a 429 all the same: spent until Retry-After
>>> w.request("risk:a", Priority.RISK)
>>> w.grant(20.0), w.next_at(20.0)
([], 41.0)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["BINANCE_LIMIT", "LIMIT", "WINDOW", "Priority", "SlotWindow", "Wait"]

BINANCE_LIMIT = 300  # connection attempts per window per IP (Binance, quoted above)
WINDOW = 300.0  # seconds: Binance's 5 minutes
LIMIT = 250  # what the daemon allows itself: Binance's 300 with a margin for anything else on the IP


class Priority(IntEnum):
    """Who connects first when slots are short: what every account depends on first."""

    MARKET = 0  # prices: every account's level
    USERDATA = 1  # balances: a WebSocket API session carries up to 1,000 accounts
    RISK = 2  # one Risk Data Stream per cross account: Binance's own word on it


@dataclass(frozen=True, slots=True)
class Wait:
    """A waiting attempt: how many attempts are ahead of it and when its slot comes (the time at
    which :meth:`SlotWindow.grant` gives it, if nothing else asks meanwhile and nothing is refused)."""

    ahead: int
    eta: float


class SlotWindow:
    """At most ``limit`` connection attempts in any sliding ``window`` seconds; see the module docstring."""

    def __init__(self, limit: int = LIMIT, window: float = WINDOW) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be ≥ 1 and window > 0")
        self.limit = limit
        self.window = window
        self.granted: deque[float] = deque()  # times of the attempts still inside the window
        self.blocked_until = -math.inf  # a refused handshake: nothing granted before this
        self.in_flight = 0  # granted, handshake not ended: each holds a slot until done()
        self._seq = 0
        self._queue: dict[str, tuple[int, int]] = {}  # name → (priority, arrival), in no order
        self._order: list[str] | None = []  # the queue sorted, until it changes

    # -- asking -----------------------------------------------------------------------------------
    def request(self, name: str, priority: Priority) -> None:
        """``name`` wants a slot (asking again keeps its place)."""
        if name not in self._queue:
            self._seq += 1
            self._queue[name] = (int(priority), self._seq)
            self._order = None

    def cancel(self, name: str) -> None:
        """``name`` no longer wants a slot."""
        if self._queue.pop(name, None) is not None:
            self._order = None

    def refused(self, now: float, retry_after: float | None = None) -> None:
        """A handshake was refused (429): grant nothing before ``now + retry_after``, or before a
        whole window has passed when the server said nothing."""
        wait = self.window if retry_after is None or retry_after <= 0 else retry_after
        self.blocked_until = max(self.blocked_until, now + wait)

    # -- granting ---------------------------------------------------------------------------------
    def grant(self, now: float) -> list[str]:
        """The names given a slot now, in order (each removed from the queue, its attempt counted)."""
        self._expire(now)
        out: list[str] = []
        if now < self.blocked_until:
            return out
        order = self.order()
        out = order[: max(0, self.limit - len(self.granted) - self.in_flight)]
        for name in out:
            del self._queue[name]
        self.in_flight += len(out)
        if out:
            self._order = order[len(out) :]
        return out

    def done(self, now: float) -> None:
        """A granted attempt's handshake ended (connected, refused or failed): its slot now counts
        from ``now`` until the window has passed."""
        if self.in_flight > 0:
            self.in_flight -= 1
            self._expire(now)
            self.granted.append(now)

    def next_at(self, now: float) -> float | None:
        """When :meth:`grant` will next give a slot (None: nobody waits; infinity while handshakes
        under way hold every slot: ask again after a :meth:`done`)."""
        if not self._queue:
            return None
        self._expire(now)
        at = max(now, self.blocked_until)
        held = len(self.granted) + self.in_flight
        if self.in_flight >= self.limit:
            return math.inf  # every slot held by a handshake under way: the next done() decides
        if held >= self.limit:
            at = max(at, self.granted[held - self.limit] + self.window)
        return at

    # -- what the surfaces read -------------------------------------------------------------------
    def used(self, now: float) -> int:
        """Attempts inside the window now (those in flight included)."""
        self._expire(now)
        return len(self.granted) + self.in_flight

    def order(self) -> list[str]:
        """The waiting names, first served first (a copy)."""
        if self._order is None:
            self._order = sorted(self._queue, key=self._queue.__getitem__)
        return list(self._order)

    def waiting_by_priority(self) -> dict[Priority, int]:
        """How many names wait, per priority (every priority, 0 where none waits)."""
        counts = dict.fromkeys(Priority, 0)
        for priority, _ in self._queue.values():
            counts[Priority(priority)] += 1
        return counts

    def __contains__(self, name: object) -> bool:
        return name in self._queue

    def waiting(self, now: float) -> dict[str, Wait]:
        """Every waiting name with its place and its slot's time, in the order they will be served:
        each slot comes ``window`` after the ``limit``-th attempt before it (those in the window
        now, then those granted to the waiters ahead), never before ``blocked_until``."""
        self._expire(now)
        times = [*self.granted, *[now] * self.in_flight]  # those in flight taken to end now
        start = max(now, self.blocked_until)
        out: dict[str, Wait] = {}
        for ahead, name in enumerate(self.order()):
            at = start
            if len(times) >= self.limit:
                at = max(at, times[len(times) - self.limit] + self.window)
            times.append(at)
            out[name] = Wait(ahead, at)
        return out

    def _expire(self, now: float) -> None:
        granted, window = self.granted, self.window
        while granted and granted[0] + window <= now:  # the very sum next_at and waiting give
            granted.popleft()
