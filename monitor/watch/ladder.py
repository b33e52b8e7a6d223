"""Turn the config's alert ladder and a unit's bars into the alert policy's rules (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from monitor.alerts.policy import DistanceRule, LevelRule, PolicyConfig
from monitor.config.model import AlertsConfig, LevelConfig

DEFAULT_BARS = ("normal", "margin_call", "liquidation")


def _routes(explicit: tuple[str, ...], fallback: tuple[str, ...]) -> tuple[str, ...]:
    return explicit or fallback


def policy_for_unit(
    alerts: AlertsConfig,
    bars: Mapping[str, float],
    all_routes: tuple[str, ...],
    *,
    levels: tuple[LevelConfig, ...] | None = None,
    routes: tuple[str, ...] | None = None,
) -> PolicyConfig:
    """The unit's policy: each ladder rung's bar resolved against the unit's own bars.

    ``levels``/``routes`` are an account's overrides. With no ladder configured, every bar the
    exchange reports becomes a rung. A rung without routes goes to ``routes`` (the account's),
    else ``alerts.default_routes``, else every route.
    """
    fallback = routes or alerts.default_routes or all_routes
    ladder = levels or alerts.levels or tuple(LevelConfig(bar=name) for name in DEFAULT_BARS if name in bars)
    rules: list[LevelRule] = []
    for rung in ladder:
        if isinstance(rung.bar, str):
            if rung.bar not in bars:
                continue
            value = float(bars[rung.bar])
        else:
            value = float(rung.bar)
        rules.append(
            LevelRule(
                name=rung.label,
                bar=value,
                routes=_routes(rung.routes, fallback),
                repeat=rung.repeat,
                resolved=rung.resolved and alerts.resolved,
            )
        )
    distance = None
    if alerts.distance is not None:
        distance = DistanceRule(
            within=alerts.distance.within,
            routes=_routes(alerts.distance.routes, fallback),
            repeat=alerts.distance.repeat,
            resolved=alerts.resolved,
        )
    return PolicyConfig(
        levels=tuple(rules),
        hysteresis=alerts.hysteresis,
        for_seconds=alerts.for_,
        distance=distance,
        stale_after=alerts.stale_after,
        blind_routes=alerts.blind_routes if alerts.blind_routes is not None else fallback,
    )
