"""When each view of an account change reaches the client: delayed streams and a lagging REST.

Binance tells a client about one change through three channels that are not synchronised: the
user-data stream (balances), the Risk Data Stream (liabilities) and REST. A scenario (``delivery``)
or an event (its own ``delivery``) sets how late each one is, in simulated seconds:

- :class:`Courier` holds stream events until their time; order is kept per channel and account
  (one websocket never reorders), so a later event never overtakes an earlier one on its channel;
- :class:`RestLag` keeps copies of each account after every change and serves REST the copy that
  was current ``rest_lag`` seconds ago (an atomic, older state: never half of a change).

Example: a borrow at t=10 with ``delivery: {user_data: 0, risk: 1.5, rest_lag: 0.8}`` is pushed as
``outboundAccountPosition`` at 10.0, ``USER_LIABILITY_CHANGE`` at 11.5, and REST shows it from 10.8.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from typing import Literal

from monitor.sim.state import AccountState, Emission, PairState, RiskEvent

Channel = Literal["user_data", "risk"]


def channel_of(emission: Emission) -> Channel:
    """The stream an emission travels on."""
    return "risk" if isinstance(emission, RiskEvent) else "user_data"


@dataclass(order=True, slots=True)
class _Due:
    at: float
    seq: int
    emission: Emission = field(compare=False)


class Courier:
    """Stream events waiting for their delivery time (see the module docstring)."""

    def __init__(self) -> None:
        self._heap: list[_Due] = []
        self._seq = 0
        self._last: dict[tuple[Channel, str], float] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def send(self, emission: Emission, now: float, delay: float) -> float:
        """Queue ``emission`` for ``now + delay`` (not before the last one on its channel); its time."""
        key = (channel_of(emission), emission.account)
        at = max(now + delay, self._last.get(key, now))
        self._last[key] = at
        heapq.heappush(self._heap, _Due(at, self._seq, emission))
        self._seq += 1
        return at

    def next_due(self) -> float:
        """When the next event is due (inf if none)."""
        return self._heap[0].at if self._heap else float("inf")

    def due(self, until: float) -> list[Emission]:
        """Pop every event due at or before ``until``, in order."""
        out: list[Emission] = []
        while self._heap and self._heap[0].at <= until:
            out.append(heapq.heappop(self._heap).emission)
        return out


def copy_account(acc: AccountState) -> AccountState:
    """A copy of an account's balances (the spec is shared: it never changes)."""
    return AccountState(
        acc.spec,
        {asset: replace(h) for asset, h in acc.cross.items()},
        {s: PairState(p.spec, replace(p.base), replace(p.quote)) for s, p in acc.pairs.items()},
        revoked=acc.revoked,
        cross_status=acc.cross_status,
        updated_ms=acc.updated_ms,
    )


class RestLag:
    """What REST shows of each account: the state as of ``rest_lag`` seconds before now."""

    def __init__(self) -> None:
        self._views: dict[str, list[tuple[float, AccountState]]] = {}
        self._base: dict[str, AccountState] = {}

    def pending(self, name: str) -> bool:
        """Whether REST still shows an older state of account ``name`` than the live one."""
        return name in self._views

    def record(self, acc: AccountState, before: AccountState | None, now: float, lag: float) -> None:
        """``acc`` just changed (``before``: a copy of it before the change, needed when nothing
        is pending): REST shows the new state from ``now + lag``, and never goes back in time."""
        views = self._views.get(acc.name)
        if views is None:
            if lag <= 0 or before is None:
                return
            self._base[acc.name] = before
            views = self._views[acc.name] = []
        visible = max(now + lag, views[-1][0] if views else now)
        views.append((visible, copy_account(acc)))

    def view(self, acc: AccountState, now: float) -> AccountState:
        """The state of ``acc`` REST answers with at ``now``."""
        views = self._views.get(acc.name)
        if views is None:
            return acc
        if views[-1][0] <= now:
            del self._views[acc.name], self._base[acc.name]
            return acc
        shown = [i for i, (visible, _) in enumerate(views) if visible <= now]
        if not shown:
            return self._base[acc.name]
        del views[: shown[-1]]
        return views[0][1]
