"""The send stage: one attempt to one target, bounded by a timeout, its outcome sorted.

:meth:`SendStage.attempt` calls the sender (Apprise by default, :mod:`monitor.notify.apprise_sink`)
and says ``sent``, ``failed`` (to retry: an answer other than success, a timeout, a plugin's
exception) or ``dropped`` (the URL can never deliver). It touches no state file. :class:`Tally` is
what the daemon does with an outcome: per-route counters, the ``notify_sent``/``notify_dropped``
log lines and the metrics hooks.

Logs name the route and the URL scheme only: URLs (which carry tokens) never reach a log line or
an error text (an exception's text may hold the URL: only its type is kept).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from monitor.notify.apprise_sink import PermanentFailure, Sender
from monitor.notify.messages import Message
from monitor.notify.stages import Batch, Target

log = structlog.get_logger(__name__)

__all__ = ["Attempt", "Delivery", "RouteStats", "SendStage", "Tally"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One send's outcome. ``error``: why it failed or was dropped (no secret: it is stored);
    ``raised``: the exception type that ended it, if any."""

    target: Target
    status: Literal["sent", "failed", "dropped"]
    started: float
    finished: float
    error: str = ""
    raised: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "sent"


class SendStage:
    """Sends through ``sender`` with a ``timeout`` (the sender's own, plus ``grace`` for ours)."""

    def __init__(
        self,
        sender: Sender,
        *,
        timeout: float = 10.0,
        grace: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sender = sender
        self.timeout = timeout
        self._grace = grace
        self._clock = clock

    async def attempt(self, target: Target, title: str, body: str, notify_type: str) -> Attempt:
        """Send once to ``target`` now; never raises (but for cancellation)."""
        started = self._clock()
        raised: str | None = None
        try:
            async with asyncio.timeout(self.timeout + self._grace):  # no extra task, unlike wait_for
                ok = await self.sender(target.url, title, body, notify_type, self.timeout)
            error = "" if ok else "not delivered"
        except PermanentFailure as exc:
            return Attempt(target, "dropped", started, self._clock(), str(exc), type(exc).__name__)
        except TimeoutError as exc:
            ok, error, raised = False, f"timed out after {self.timeout:g} s", type(exc).__name__
        except Exception as exc:  # a plugin's bug must not stop delivery; its text may hold the URL
            ok, error, raised = False, type(exc).__name__, type(exc).__name__
        return Attempt(target, "sent" if ok else "failed", started, self._clock(), error, raised)

    async def exec(self, batch: Batch, items: Sequence[tuple[Target, Message]]) -> list[Attempt]:
        """:meth:`attempt` for each (target, message), one after the other."""
        return [await self.attempt(t, m.title, m.body, m.notify_type) for t, m in items]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One send attempt's outcome, for metrics: ``latency`` is seconds from the event to the result."""

    route: str
    scheme: str
    dedupe_key: str
    unit: str
    kind: str
    event_at: float
    started: float
    finished: float
    attempts: int
    ok: bool

    @property
    def latency(self) -> float:
        return self.finished - self.event_at


@dataclass(slots=True)
class RouteStats:
    """Per route: ``sent``/``failed``/``dropped`` attempts since start, ``queued``/``held`` now."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    held: int = 0


class Tally:
    """Counts each attempt per route, logs it, and tells the metrics hooks (whose errors are logged,
    never raised: a metrics hook must not stop deliveries)."""

    def __init__(
        self,
        routes: Iterable[str],
        *,
        on_sent: Callable[[Delivery], None] | None = None,
        on_failed: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.stats = {name: RouteStats() for name in routes}
        self._on_sent, self._on_failed = on_sent, on_failed

    def record(self, attempt: Attempt, dedupe_key: str, unit: str, kind: str, event_at: float,
               attempts: int) -> None:  # fmt: skip
        """``attempts``: this one included."""
        target = attempt.target
        stats = self.stats[target.route]
        if attempt.status == "dropped":
            stats.dropped += 1
            log.error("notify_dropped", route=target.route, scheme=target.scheme, reason=attempt.error)
            return
        delivery = Delivery(target.route, target.scheme, dedupe_key, unit, kind, event_at,
                            attempt.started, attempt.finished, attempts, attempt.ok)  # fmt: skip
        if attempt.ok:
            stats.sent += 1
            log.info("notify_sent", route=target.route, scheme=target.scheme, dedupe_key=dedupe_key,
                     attempts=attempts, latency=round(delivery.latency, 4))  # fmt: skip
            self._call(self._on_sent, delivery)
        else:
            stats.failed += 1
            self._call(self._on_failed, delivery)

    @staticmethod
    def _call(callback: Callable[[Delivery], None] | None, delivery: Delivery) -> None:
        if callback is None:
            return
        try:
            callback(delivery)
        except Exception as exc:  # a metrics hook must not stop deliveries
            log.error("notify_callback_failed", error=f"{type(exc).__name__}: {exc}")
