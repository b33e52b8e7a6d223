"""The route stage: the route names an alert event carries → the configured routes' URLs.

The alert policy chose the route names (a liquidation, ``FORCE_LIQUIDATION`` included, names the
liquidation rung's routes); this stage only resolves them. A name no route has is logged
(``notify_route_unknown``) and skipped; an event left with no URL is logged (``notify_no_route``)
and goes no further.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from monitor.alerts.policy import AlertEvent
from monitor.notify.stages import Batch, Letter, Target

log = structlog.get_logger(__name__)

__all__ = ["NotifyRoute", "RouteStage"]


@dataclass(frozen=True, slots=True)
class NotifyRoute:
    """A named list of Apprise URLs (hidden from repr) and its flood limit."""

    name: str
    urls: tuple[str, ...] = field(repr=False)
    max_per_window: int | None = None
    window: float = 60.0


class RouteStage:
    """Resolves each letter's route names to its targets (every URL of every known route)."""

    def __init__(self, routes: Mapping[str, NotifyRoute]) -> None:
        self.routes = dict(routes)
        self._targets = {
            name: tuple(Target.of(name, url) for url in route.urls) for name, route in self.routes.items()
        }
        self._resolved: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[Target, ...]]] = {}

    def targets(self, route: str) -> tuple[Target, ...]:
        """``route``'s targets in config order (one per URL, a repeated URL repeated)."""
        return self._targets.get(route, ())

    def all_targets(self) -> Iterator[Target]:
        """Every target of every route, each once (a URL repeated within a route is one target)."""
        seen: set[str] = set()
        for targets in self._targets.values():
            for target in targets:
                if target.id not in seen:
                    seen.add(target.id)
                    yield target

    def exec(self, batch: Batch, items: Sequence[Letter]) -> list[Letter]:
        out: list[Letter] = []
        for letter in items:
            event = letter.event
            resolved = self._resolved.get(event.routes) or self._resolve(event)
            if resolved is None:
                continue
            routes, targets = resolved
            out.append(Letter(event, letter.message, letter.protected, routes, targets, letter.held))
        return out

    def _resolve(self, event: AlertEvent) -> tuple[tuple[str, ...], tuple[Target, ...]] | None:
        """``event``'s known routes and their targets (remembered when every name is known)."""
        routes: list[str] = []
        targets: list[Target] = []
        for name in dict.fromkeys(event.routes):
            if name not in self.routes:
                log.error("notify_route_unknown", route=name, dedupe_key=event.dedupe_key)
                continue
            routes.append(name)
            targets += self._targets[name]
        if not targets:
            log.warning("notify_no_route", dedupe_key=event.dedupe_key, routes=list(event.routes))
            return None
        resolved = (tuple(routes), tuple(targets))
        if len(routes) == len(set(event.routes)):
            self._resolved[event.routes] = resolved
        return resolved
