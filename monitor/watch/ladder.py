"""Turn the config's alert ladder and a unit's bars into the alert policy's rules (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from monitor.alerts.policy import AlertPolicy, DistanceRule, LevelRule, PolicyConfig
from monitor.config.model import AccountConfig, AlertsConfig, Config, LevelConfig
from monitor.risk.margin import Bars

DEFAULT_BARS = ("normal", "margin_call", "liquidation")
# the bars of a unit whose own are not known yet, and of the routing table ``check`` prints: Binance's
# classic cross ladder (1.5 / 1.3 / 1.1), owned by :meth:`monitor.risk.margin.Bars.classic`
CLASSIC_BARS: Mapping[str, float] = {name: float(value) for name, value in Bars.classic().levels.items()}


def _routes(explicit: tuple[str, ...], fallback: tuple[str, ...]) -> tuple[str, ...]:
    return explicit or fallback


def policy_for_unit(
    alerts: AlertsConfig,
    bars: Mapping[str, float],
    all_routes: tuple[str, ...],
    *,
    levels: tuple[LevelConfig, ...] | None = None,
    routes: tuple[str, ...] | None = None,
    liquidation_bar: float | None = None,
) -> PolicyConfig:
    """The unit's policy: each ladder rung's bar resolved against the unit's own bars.

    ``levels``/``routes`` are an account's overrides. With no ladder configured, every bar the
    exchange reports becomes a rung. A rung without routes goes to ``routes`` (the account's),
    else ``alerts.default_routes``, else every route. ``liquidation_bar``: the bar the distance
    rule measures to (default: ``bars["liquidation"]``), past which it stays breached.
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
            liquidation_bar=liquidation_bar if liquidation_bar is not None else bars.get("liquidation"),
        )
    return PolicyConfig(
        levels=tuple(rules),
        hysteresis=alerts.hysteresis,
        for_seconds=alerts.for_,
        distance=distance,
        stale_after=alerts.stale_after,
        blind_routes=alerts.blind_routes if alerts.blind_routes is not None else fallback,
    )


def default_policy(alerts: AlertsConfig, all_routes: tuple[str, ...]) -> PolicyConfig:
    """The policy of a unit with no ladder of its own yet: the config's ladder on the classic bars."""
    return policy_for_unit(alerts, CLASSIC_BARS, all_routes)


class UnitLadders:
    """Gives each unit of one account its ladder in the alert policy, again only when its bars change
    (a new unit, or an isolated pair that moved tier)."""

    def __init__(self, config: Config, account: AccountConfig) -> None:
        self.config = config
        self.account = account
        self._configured: dict[str, Bars] = {}  # unit → the bars its ladder was resolved against

    def configure(
        self, policy: AlertPolicy, units: Iterable[str], bars_of: Callable[[str], Bars | None]
    ) -> None:
        """Resolve the ladder of each of ``units`` against its own bars (``bars_of``) into ``policy``."""
        override = self.account.alerts
        for uid in units:
            bars = bars_of(uid)
            if bars is None or self._configured.get(uid) == bars:
                continue
            self._configured[uid] = bars
            values = {name: float(value) for name, value in bars.levels.items()}
            policy.configure_unit(
                uid,
                policy_for_unit(
                    self.config.alerts,
                    values,
                    self.config.route_names(),
                    levels=override.levels if override else None,
                    routes=override.routes if override else None,
                    liquidation_bar=float(bars.liquidation_level),
                ),
            )

    def forget(self) -> None:
        """The account's units left the book: configure them afresh when they come back."""
        self._configured.clear()
