"""The daemon's silences: kept in the state file, applied as the silence stage of delivery.

:class:`SilenceRegistry` holds the silences (:mod:`monitor.notify.silences` decides what they cover),
persists every change through ``save`` (the state store's ``put_json``), and :meth:`hold` decides
for each alert message: True means "held back" — the message is logged as ``alert_silenced`` with
its title and the silence ids, and never delivered (not later either). :class:`SilenceStage` is that
decision as a pipeline stage (:mod:`monitor.notify.stages`): a letter marked ``protected`` (the
liquidation rung) is held back only by a silence that names its rule (``--bar``). The registry
also counts, for ``/metrics``, the active silences and the messages held back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.alerts.policy import AlertEvent
from monitor.notify.silences import (
    Silence,
    SilenceError,
    ack_over,
    from_dict,
    held_back,
    lifted,
    make,
)
from monitor.notify.stages import Batch, Letter

log = structlog.get_logger(__name__)

STORE_KEY = "silences"
KEEP_EXPIRED = 7 * 86400.0  # ended silences stay listed (``silences --all``) for a week

# unit → the (rule, protected) pairs that are firing or pending there now
FiringMap = Mapping[str, Iterable[tuple[str, bool]]]


class SilenceRegistry:
    """Every silence of one daemon; ``load``/``save`` read and write the persisted list."""

    def __init__(
        self,
        load: Callable[[], Any],
        save: Callable[[Any], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._save = save
        self._clock = clock
        self._silences: dict[str, Silence] = {}
        self.held: dict[str, int] = {}  # message kind → messages held back since start
        now = clock()
        raw = load()
        for blob in raw if isinstance(raw, list) else []:
            try:
                silence = from_dict(blob)
            except SilenceError as exc:
                log.warning("silence_skipped", reason=str(exc))
                continue
            if not _long_gone(silence, now):
                self._silences[silence.id] = silence

    # -- API (CLI through HTTP) -----------------------------------------------------------------
    def add(
        self,
        target: str,
        *,
        bar: str | None,
        duration: float | None,
        comment: str,
        firing: FiringMap,
        units: Iterable[str],
        rules: Iterable[str] = (),
    ) -> Silence:
        """A new silence (``duration`` None = until resolved); raises SilenceError with one line.
        ``rules``: the rule names that exist (a ``bar`` must be one of them, when given)."""
        known = sorted(set(rules))
        if bar is not None and known and bar not in known:
            raise SilenceError(f"bar {bar!r}: no such rule; the rules are {', '.join(known)}")
        silence = make(secrets.token_hex(4), target, bar=bar, now=self._clock(), duration=duration,
                       comment=comment)  # fmt: skip
        if not any(silence.covers_unit(u) for u in units):
            raise SilenceError(f"{silence.target}: no such account or pair is watched")
        if silence.until_resolved and ack_over(silence, firing):
            raise SilenceError(
                f"{silence.target}{' ' + bar if bar else ''}: nothing is firing to acknowledge; "
                "use --for DURATION to silence ahead of time"
            )
        self._silences[silence.id] = silence
        self._persist()
        log.info("silence_added", **_fields(silence))
        return silence

    def lift(self, silence_id: str) -> Silence | None:
        """End a silence now; None when there is no such active silence."""
        now = self._clock()
        silence = self._silences.get(silence_id)
        if silence is None or not silence.active(now):
            return None
        self._silences[silence_id] = lifted(silence, now)
        self._persist()
        log.info("silence_lifted", id=silence_id, target=silence.target)
        return self._silences[silence_id]

    def listing(self, *, include_ended: bool = False) -> list[Silence]:
        """Active silences (and with ``include_ended`` those ended within a week), oldest first."""
        now = self._clock()
        return sorted(
            (s for s in self._silences.values() if include_ended or s.active(now)),
            key=lambda s: (s.starts_at, s.id),
        )

    def covering(self, unit: str) -> list[Silence]:
        """The active silences that cover ``unit`` (for /status)."""
        now = self._clock()
        return [s for s in self._silences.values() if s.active(now) and s.covers_unit(unit)]

    def holding(self, unit: str, rule: str, protected: bool) -> list[Silence]:
        """The active silences that would hold back a firing of ``rule`` on ``unit`` (for /status)."""
        return held_back(self._silences.values(), unit, rule, "firing", protected=protected,
                         now=self._clock())  # fmt: skip

    # -- the delivery stage ---------------------------------------------------------------------
    def hold(self, event: AlertEvent, title: str, protected: bool, firing: Callable[[], FiringMap]) -> bool:
        """True when ``event``'s message must not be delivered (logged as silenced instead).

        After a resolved message, an acknowledgement with nothing left firing ends (``firing`` is
        only called then)."""
        now = self._clock()
        holding = held_back(self._silences.values(), event.unit, event.rule, event.kind,
                            protected=protected, now=now)  # fmt: skip
        if event.kind in ("resolved", "blind_resolved"):
            self._end_acks(event.unit, firing, now)
        if not holding:
            return False
        self.held[event.kind] = self.held.get(event.kind, 0) + 1
        log.info("alert_silenced", unit=event.unit, rule=event.rule, kind=event.kind, title=title,
                 silences=[s.id for s in holding], dedupe_key=event.dedupe_key)  # fmt: skip
        return True

    def _end_acks(self, unit: str, firing: Callable[[], FiringMap], now: float) -> None:
        acks = [
            s for s in self._silences.values() if s.until_resolved and s.active(now) and s.covers_unit(unit)
        ]
        if not acks:
            return
        state = firing()
        ended = [s for s in acks if ack_over(s, state)]
        for silence in ended:
            self._silences[silence.id] = lifted(silence, now)
            log.info("silence_resolved", id=silence.id, target=silence.target)
        if ended:
            self._persist()

    # -- internals ------------------------------------------------------------------------------
    def _persist(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._silences.items() if _long_gone(s, now)]:
            del self._silences[key]
        self._save([s.to_dict() for s in self._silences.values()])


def _long_gone(silence: Silence, now: float) -> bool:
    end = silence.expired_at if silence.expired_at is not None else silence.ends_at
    return end is not None and now - end > KEEP_EXPIRED


def _fields(silence: Silence) -> dict[str, Any]:
    return {"id": silence.id, "target": silence.target, "bar": silence.bar, "ends_at": silence.ends_at,
            "comment": silence.comment}  # fmt: skip


class SilenceStage:
    """The silence stage: lets through the letters no silence holds back."""

    def __init__(self, registry: SilenceRegistry, firing: Callable[[], FiringMap]) -> None:
        self.registry = registry
        self._firing = firing

    def exec(self, batch: Batch, items: Sequence[Letter]) -> list[Letter]:
        hold = self.registry.hold
        return [x for x in items if not hold(x.event, x.message.title, x.protected, self._firing)]


class SilenceCollector(Collector):
    """``margin_monitor_silences_active`` and ``margin_monitor_alerts_silenced_total{kind}``."""

    def __init__(self, registry: SilenceRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "margin_monitor_silences_active", "Silences in force now (alerts they cover are not sent)."
        )
        active.add_metric([], len(self._registry.listing()))
        yield active
        held = CounterMetricFamily(
            "margin_monitor_alerts_silenced",
            "Alert messages held back by a silence (logged as alert_silenced, never delivered).",
            labels=["kind"],
        )
        for kind, count in sorted(self._registry.held.items()):
            held.add_metric([kind], count)
        yield held


class SilenceApi:
    """What the HTTP ``/silences`` endpoints call: the registry plus the daemon's live view of
    which units exist and what fires on them."""

    def __init__(
        self,
        registry: SilenceRegistry,
        firing: Callable[[], FiringMap],
        units: Callable[[], Iterable[str]],
        rules: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self._registry = registry
        self._firing = firing
        self._units = units
        self._rules = rules

    def add(self, target: str, *, bar: str | None, duration: float | None, comment: str) -> Silence:
        """Raises :class:`~monitor.notify.silences.SilenceError` with one line."""
        return self._registry.add(
            target, bar=bar, duration=duration, comment=comment,
            firing=self._firing(), units=self._units(), rules=self._rules(),
        )  # fmt: skip

    def lift(self, silence_id: str) -> Silence | None:
        return self._registry.lift(silence_id)

    def listing(self, *, include_ended: bool = False) -> list[Silence]:
        return self._registry.listing(include_ended=include_ended)
