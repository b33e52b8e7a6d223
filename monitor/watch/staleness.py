"""Which of one account's units are stale ("blind") now (pure: times and sets in, units out).

A unit is stale when a symbol it is priced by has no fresh price, when its views have disagreed
(settling) for longer than ``limit``, or, for every unit of the account, when REST has not
answered for longer than both ``limit`` and three snapshot intervals. An account loaded less than
``limit`` ago is not judged yet: its symbols' first prices are still due.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass


@dataclass(slots=True)
class Freshness:
    """What the staleness of one account's units is judged on, at ``now``. Not frozen: built once a
    second for every account (1,000), where a frozen dataclass's ``__init__`` costs 4x as much."""

    now: float
    loaded_at: float
    last_snapshot: float
    snapshot_interval: float
    limit: float


def stale_units(
    units: Set[str],
    times: Freshness,
    settling: Mapping[str, float],
    stale_symbols: Set[str],
    symbols_of: Callable[[str], Set[str]],
) -> set[str]:
    """The stale units among ``units`` (see the module docstring); ``settling``: unit → since."""
    now, limit = times.now, times.limit
    if now - times.loaded_at < limit:
        return set()  # loaded just now (late, after an outage): its symbols' first prices are due
    if now - times.last_snapshot > max(3 * times.snapshot_interval, limit):
        return set(units)
    unconfirmed = {u for u in units if u in settling and now - settling[u] > limit} if settling else set()
    if not stale_symbols:  # the usual case: skip building every unit's symbol set each second
        return unconfirmed
    return unconfirmed | {u for u in units if symbols_of(u) & stale_symbols}
