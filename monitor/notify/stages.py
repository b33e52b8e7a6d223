"""The shape of the delivery pipeline: route → silence → flood control → outbox → retry → send.

Each stage is a small type with one method, ``exec(batch, items) -> items``: it takes what the stage
before it let through and returns what goes on, in the manner of Alertmanager's notify stages
(``Exec(ctx, alerts) -> (ctx, alerts, err)``; here :class:`Batch` is the context, mutable, and an
error is an exception). :class:`~monitor.notify.dispatcher.Dispatcher` composes them for the daemon;
``test-alert`` uses only the route and send stages (no state file, so it runs beside a daemon).

The vocabulary the stages share lives here: a :class:`Letter` (one alert message on its way, with
what the stages decided about it), a :class:`Target` (one URL of one route) and the :class:`Batch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from monitor.alerts.policy import AlertEvent
from monitor.notify.apprise_sink import fingerprint, url_scheme
from monitor.notify.messages import Message

__all__ = ["Batch", "Letter", "Stage", "Target"]

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out")


@dataclass(frozen=True, slots=True)
class Target:
    """One URL of one route: where a send goes. ``id`` (``route#fingerprint``) names it in the
    outbox and in logs' place; the URL itself is hidden from repr."""

    route: str
    url: str = field(repr=False)
    id: str
    scheme: str

    @classmethod
    def of(cls, route: str, url: str) -> Target:
        return cls(route, url, f"{route}#{fingerprint(url)}", url_scheme(url))


class Letter(NamedTuple):
    """One alert message on its way to its routes.

    ``protected``: a silence must name the rule to hold it back (the liquidation rung and the other
    protected rules, decided by the caller who knows the unit's bars). The route stage fills
    ``routes`` and ``targets``; the flood stage ``held`` (the routes whose window is full)."""

    event: AlertEvent
    message: Message
    protected: bool = False
    routes: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    held: frozenset[str] = frozenset()
    # a NamedTuple, not a frozen dataclass: made twice per alert of a burst, at a third of the cost


@dataclass(slots=True)
class Batch:
    """What one pass through the stages shares: the time, the alert state to store with the outbox
    rows (one transaction), and the flood-window slots used (returned for duplicates)."""

    now: float
    alert_state: Mapping[str, Any] | None = None
    admitted: list[tuple[str, str]] = field(default_factory=list)  # (dedupe key, route)


class Stage(Protocol[In, Out]):
    """A pipeline stage: the items that go on, given the items that came in."""

    def exec(self, batch: Batch, items: Sequence[In]) -> list[Out]: ...
