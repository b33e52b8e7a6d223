"""How many sends of one URL the retry stage keeps in flight: as many as a burst needs to leave at
:data:`RATE` sends a second, and no more.

Each send runs Apprise (its plugin, ``requests``, ``http.client``: ~1 ms of Python) on a thread of
the sender's pool, under the GIL the event loop needs too. Eight sends in flight to a webhook that
answers in 2 ms are eight threads taking turns at the GIL with the loop, for a throughput two would
already give; eight to a service 300 ms away are what keeps a burst moving. So the bound follows
Little's law (in flight = rate × time per send), from the smoothed time of the URL's delivered
sends, between :data:`FLOOR` and the URL's own ceiling (8, or 1 where Apprise spaces the service's
requests). Until a first send of the URL is delivered nothing is known, and the ceiling holds.
"""

from __future__ import annotations

import math

__all__ = ["FLOOR", "RATE", "SLACK", "SMOOTHING", "Pace", "in_flight"]

RATE = 200.0  # sends a second one URL keeps up with in a burst (a 400-alert crash out in ~2 s)
FLOOR = 2  # sends in flight at least (one being answered while the next is prepared)
SMOOTHING = 0.2  # weight of the newest send in the smoothed time per send
SLACK = 1e-9  # a product this close above a whole number counts as that number


def in_flight(seconds_per_send: float, ceiling: int, rate: float = RATE, floor: int = FLOOR) -> int:
    """Sends to keep in flight when each takes ``seconds_per_send``: ``rate`` × that, rounded up
    (less :data:`SLACK`), within [``floor``, ``ceiling``] (a ceiling under the floor wins: a spaced
    service's 1).

    Worked examples at 200 sends/s, ceiling 8: a loopback webhook answering in 2 ms needs
    200 × 0.002 = 0.4, so the floor, 2; a webhook 25 ms away needs 5; Telegram at ~300 ms would
    need 60 and gets the ceiling, 8; a service Apprise spaces (ceiling 1) gets 1 whatever its time.

    >>> in_flight(0.002, 8), in_flight(0.025, 8), in_flight(0.3, 8), in_flight(0.3, 1)
    (2, 5, 8, 1)
    """
    want = math.ceil(rate * seconds_per_send - SLACK)  # 0.025 s × 200: 5, not 6 by a float's last bit
    return min(ceiling, max(floor, want))


class Pace:
    """One URL's smoothed time per delivered send and the bound on its sends in flight."""

    def __init__(self, ceiling: int, *, rate: float = RATE, floor: int = FLOOR) -> None:
        self.ceiling = ceiling
        self.rate = rate
        self.floor = floor
        self.seconds: float | None = None  # smoothed time per delivered send; None: none yet
        self.limit = ceiling

    def observe(self, seconds: float) -> None:
        """A send of the URL was delivered after ``seconds`` (from its start to Apprise's answer)."""
        seconds = max(0.0, seconds)
        last = self.seconds
        self.seconds = seconds if last is None else last + SMOOTHING * (seconds - last)
        self.limit = in_flight(self.seconds, self.ceiling, self.rate, self.floor)
