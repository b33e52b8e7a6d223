"""Who gets what: for each notification route, the alerts the config sends it, and what looks wrong.

Pure: the routes are resolved by :func:`monitor.watch.ladder.policy_for_unit`, the very function the daemon
uses, so the table ``margin-monitor check`` prints cannot disagree with what the daemon sends.

>>> from monitor.config.model import Config
>>> cfg = Config.model_validate({
...     "accounts": [{"name": "a", "api_key": "k", "api_secret": "s"}],
...     "alerts": {"distance": {"within": 0.03}},
...     "notify": {"routes": {"console": {"urls": ["console://"]}, "phone": {"urls": ["json://h/x"]}}},
... })
>>> table = route_table(cfg)
>>> table.alerts["phone"]
['normal 1.5', 'margin_call 1.3', 'liquidation 1.1', 'distance 3 %', 'blind', 'notices']
>>> table.warnings
[]
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.config.model import AccountConfig, Config
from monitor.notify.apprise_sink import url_scheme
from monitor.watch.ladder import policy_for_unit

# the bars the table is shown for: the classic cross account's (an isolated pair's rungs have the
# same names, so the same routes; only their values differ)
SHOWN_BARS = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}
CONSOLE = "console"
SILENT_ROUTE_FIX = "name it in a rung's routes, or leave routes out to send every rung to every route"


@dataclass(frozen=True, slots=True)
class RouteTable:
    """``alerts``: route → the alerts it gets, in ladder order; ``schemes``: route → its URL schemes."""

    alerts: dict[str, list[str]]
    schemes: dict[str, list[str]]
    warnings: list[str]
    silent: list[str]  # routes that get no margin alert (no rung, no distance)

    def lines(self) -> list[str]:
        """The table as ``check`` prints it: one line per route, then the warnings."""
        out = ["routing (each route and the alerts it gets):"]
        width = max((len(name) for name in self.alerts), default=0)
        for name, alerts in self.alerts.items():
            schemes = ", ".join(f"{s}://" for s in self.schemes[name])
            out.append(f"  {name:<{width}}  ({schemes}): {', '.join(alerts) if alerts else 'nothing'}")
        out += [f"WARN {w}" for w in self.warnings]
        return out


def _scoped(account: AccountConfig | None) -> str:
    return f"{account.name}: " if account is not None else ""


def _kinds(config: Config, account: AccountConfig | None) -> list[tuple[str, tuple[str, ...], bool]]:
    """(alert label, routes, is a margin alert) for the global ladder or one account's override."""
    override = account.alerts if account is not None else None
    policy = policy_for_unit(
        config.alerts,
        SHOWN_BARS,
        config.route_names(),
        levels=override.levels if override else None,
        routes=override.routes if override else None,
    )
    prefix = _scoped(account)
    kinds = [(f"{prefix}{rule.name} {rule.bar:g}", rule.routes, True) for rule in policy.levels]
    if policy.distance is not None:
        within = f"{policy.distance.within * 100:g} %"
        kinds.append((f"{prefix}distance {within}", policy.distance.routes, True))
    kinds.append((f"{prefix}blind", policy.blind_routes, False))
    return kinds


def route_table(config: Config) -> RouteTable:
    """Resolve every alert kind to its routes, invert, and warn about gaps."""
    overridden = [a for a in config.accounts if a.alerts is not None]
    scopes: list[AccountConfig | None] = list(overridden)
    if len(overridden) < len(config.accounts):
        scopes.insert(0, None)
    kinds = [kind for scope in scopes for kind in _kinds(config, scope)]
    kinds.append(("notices", config.route_names(), False))  # key refused / rejected: every route

    routes = config.notify.routes
    schemes = {
        name: list(dict.fromkeys(url_scheme(u.get_secret_value()) for u in route.urls))
        for name, route in routes.items()
    }
    alerts: dict[str, list[str]] = {name: [] for name in routes}
    margin: dict[str, bool] = {name: False for name in routes}
    for label, targets, is_margin in kinds:
        for name in dict.fromkeys(targets):
            if name in alerts:
                alerts[name].append(label)
                margin[name] = margin[name] or is_margin

    silent = [name for name, got in margin.items() if not got]
    warnings = [
        f"route {name} gets no margin alert (no rung, no distance): {SILENT_ROUTE_FIX}" for name in silent
    ]
    console_only = [
        label
        for label, targets, _ in kinds
        if targets and all(schemes[t] == [CONSOLE] for t in targets if t in schemes)
    ]
    if console_only and len(console_only) == len(kinds):
        warnings.append(
            "every alert reaches only console:// (this terminal; nobody is paged): "
            "add a route under notify.routes (README: Configuration)"
        )
    elif console_only:
        warnings += [f"alert {label} reaches only console:// (nobody is paged)" for label in console_only]
    return RouteTable(alerts, schemes, warnings, silent)
