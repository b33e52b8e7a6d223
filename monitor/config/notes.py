"""Settings that are valid but do nothing, so ``margin-monitor check`` can say so (pure).

A setting counts as written when the file sets it (a section's ``written``), so a default is never
reported.

>>> from monitor.config.model import Config
>>> cfg = Config.model_validate({
...     "exchange": {"kind": "binance", "scenario": "crash"},
...     "accounts": [{"name": "a", "api_key": "k", "api_secret": "s"}],
...     "notify": {"routes": {"r": {"urls": ["json://h/x"], "window": "5m"}}},
... })
>>> for note in inert_settings(cfg):
...     print(note)
exchange.scenario: does nothing with exchange.kind binance (only the simulator replays one)
notify.routes.r.window: does nothing without max_per_window (no flood control here)
"""

from __future__ import annotations

from monitor.config.model import Config
from monitor.config.schema import Section

_URLS = ("rest_url", "stream_url", "ws_api_url", "risk_stream_url")


def _set(section: Section, field: str) -> bool:
    return field in section.written


def inert_settings(config: Config) -> list[str]:
    """One line per written setting that has no effect, as ``key.path: why``."""
    notes: list[str] = []
    exchange = config.exchange
    if exchange.kind == "binance" and _set(exchange, "scenario"):
        notes.append(
            "exchange.scenario: does nothing with exchange.kind binance (only the simulator replays one)"
        )
    if exchange.kind == "simulator":
        notes += [
            f"exchange.{field}: does nothing with exchange.kind simulator (the simulator has its own URLs)"
            for field in _URLS
            if _set(exchange, field)
        ]
    alerts = config.alerts
    if not alerts.resolved:
        for i, rung in enumerate(alerts.levels or (), start=1):
            if _set(rung, "resolved") and rung.resolved:
                notes.append(
                    f"alerts.levels[{i}] (bar {rung.bar}).resolved: does nothing while alerts.resolved "
                    "is false"
                )
    if alerts.default_routes:
        rungs_named = alerts.levels is not None and all(r.routes for r in alerts.levels)
        distance_named = alerts.distance is None or bool(alerts.distance.routes)
        blind_named = alerts.blind_routes is not None
        overridden = all(a.alerts is not None and a.alerts.routes for a in config.accounts)
        if (rungs_named and distance_named and blind_named) or overridden:
            notes.append(
                "alerts.default_routes: does nothing (every rung, distance and blind alert names its routes)"
            )
    for a, account in enumerate(config.accounts, start=1):
        override = account.alerts
        at = f"accounts[{a}] ({account.name})"
        if override and override.routes and override.levels and all(r.routes for r in override.levels):
            notes.append(f"{at}.alerts.routes: does nothing (every rung of its ladder names its routes)")
        if not account.cross and not account.isolated:
            notes.append(f"{at}: watches nothing (cross is false and isolated is empty)")
    for name, route in config.notify.routes.items():
        if route.max_per_window is None and _set(route, "window"):
            notes.append(
                f"notify.routes.{name}.window: does nothing without max_per_window (no flood control here)"
            )
    http = config.http
    if not http.enabled:
        notes += [
            f"http.{field}: does nothing while http.enabled is false"
            for field in ("listen", "token")
            if _set(http, field)
        ]
    return notes
