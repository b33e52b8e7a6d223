"""The one-shot commands: ``check``, ``status``, ``test-alert`` and ``simulate``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from monitor.accounts import AccountWatcher, build_watchers, open_endpoints
from monitor.book import AccountBook
from monitor.config import Config, exposed_files
from monitor.config_notes import inert_settings
from monitor.exchange.binance import BinanceRest, ExchangeError, KeyRejected
from monitor.logs import configure_logging, register_secrets
from monitor.messages import demo_message, fmt_level, fmt_pct, fmt_price, fmt_value
from monitor.notify import Dispatcher, Route
from monitor.routing import route_table
from monitor.status_extras import enrich
from monitor.store import StateError, Store
from monitor.stress import render_stress

log = structlog.get_logger(__name__)


def _quiet(config: Config) -> None:
    configure_logging("console" if sys.stderr.isatty() else "json", "warning")


async def check(config: Config, config_path: Path) -> int:
    """Validate, connect, and report each key's permissions; 0 only when every account is usable."""
    _quiet(config)
    failures = 0
    async with contextlib.AsyncExitStack() as stack:
        endpoints = await open_endpoints(config, config_path, stack)
        print(f"config {config_path}: valid; exchange {config.exchange.kind} at {endpoints.rest_url}")
        for note in inert_settings(config):
            print(f"NOTE {note}")
        print("\n".join(route_table(config).lines()))
        for path in exposed_files(config, config_path):
            print(f"WARN {path} is readable by other users: chmod 600 {path}")
        for watcher in build_watchers(config, config_path, endpoints, AccountBook(), lambda _: None, []):
            register_secrets(watcher.secret_values())
            key, secret = watcher.secret_values()
            try:
                rest = await BinanceRest.connect(
                    watcher.name, key, secret, endpoints.rest_url, endpoints.ws_api_url
                )
            except KeyRejected as exc:
                print(f"{watcher.name}: FAIL: key rejected by Binance (code {exc.code}: {exc.message})")
                failures += 1
                continue
            except ExchangeError as exc:
                print(f"{watcher.name}: FAIL: {exc}")
                failures += 1
                continue
            try:
                perms = await rest.key_permissions()
            except ExchangeError as exc:
                print(f"{watcher.name}: FAIL: cannot read key permissions: {exc}")
                failures += 1
                continue
            finally:
                await rest.close()
            flags = [n for n, on in (("reading", perms.reading), ("margin", perms.margin),
                     ("trade", perms.trading), ("withdraw", perms.withdrawals),
                     ("transfer", perms.transfer), ("ip-restricted", perms.ip_restricted)) if on]  # fmt: skip
            if perms.read_only:
                print(f"{watcher.name}: OK read-only key ({', '.join(flags)})")
            elif watcher.cfg.allow_trading_keys:
                print(f"{watcher.name}: WARN key is not read-only ({', '.join(flags)}); allowed by config")
            else:
                print(f"{watcher.name}: FAIL key is not read-only ({', '.join(flags)}); make a read-only key")
                failures += 1
    return 0 if failures == 0 else 1


async def _from_daemon(config: Config) -> list[dict[str, Any]] | None:
    if not config.http.enabled:
        return None
    host = config.http.host if config.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
    headers = {"Authorization": f"Bearer {config.http.token.get_secret_value()}"} if config.http.token else {}
    url = f"http://{host}:{config.http.port}/status"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status != 200:
                return None
            data = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return data if isinstance(data, list) else None


async def one_shot_status(config: Config, config_path: Path) -> list[dict[str, Any]]:
    """Load every account and price it from REST tickers, without starting the daemon."""
    book = AccountBook(
        quote=config.exchange.quote, stablecoins=config.exchange.stablecoins, pinned=config.exchange.pinned
    )
    async with contextlib.AsyncExitStack() as stack:
        endpoints = await open_endpoints(config, config_path, stack)
        watchers: list[AccountWatcher] = build_watchers(
            config, config_path, endpoints, book, lambda _: None, []
        )
        for watcher in watchers:
            register_secrets(watcher.secret_values())
        try:
            await asyncio.gather(*(w.load() for w in watchers))
            loaded = [w for w in watchers if w.loaded and w.rest is not None]
            if loaded and loaded[0].rest is not None:
                tickers = await loaded[0].rest.client.get_all_tickers()
                wanted = book.symbols_needed()
                for ticker in tickers:
                    if ticker.get("symbol") in wanted:
                        book.on_price(ticker["symbol"], float(ticker["price"]))
            target = config.alerts.restore_target
            units = [
                enrich(book, unit, book.report(unit, restore_target=target).to_json(), {})
                for unit in sorted(book.units())
            ]
            return units + [w.blind_entry(config.exchange.quote) for w in watchers if not w.loaded]
        finally:
            for watcher in watchers:
                await watcher.close()


def _state_level(unit: dict[str, Any]) -> str:
    """The level as the console shows it, with the unit's state: ``1.234``, ``1.234 (APPROXIMATE:
    why)``, ``∞ (no debt)`` or ``unknown (BLIND: why)`` (never a blank that could read as safe)."""
    state, reason = unit.get("state", "known"), unit.get("reason", "")
    level = unit.get("margin_level")
    if state == "no_debt":
        return fmt_level(math.inf)
    why = f": {reason}" if reason else ""
    if state == "blind":
        last = f"; last computed {fmt_level(level)}" if level is not None else ""
        return f"unknown (BLIND{why}{last})"
    shown = fmt_level(level) if level is not None else "unknown"
    return shown if state == "known" else f"{shown} ({state.upper()}{why})"


def _table(units: list[dict[str, Any]]) -> str:
    lines = []
    for u in units:
        name = u["account"] + (f" {u['symbol']}" if u.get("symbol") else "") + f" ({u['kind']})"
        if u.get("state") == "blind" and not u.get("bars"):  # an account not loaded at all
            lines.append(f"{name}: level {_state_level(u)}; the account is not loaded")
            continue
        level = _state_level(u)
        dists = ", ".join(f"{fmt_pct(d)} to {bar}" if d is not None else f"none to {bar}"
                          for bar, d in u["distances"].items())  # fmt: skip
        prices = ", ".join(f"{a} {fmt_price(p)}" for a, p in u["liquidation_prices"].items() if p is not None)
        lines.append(f"{name}: level {level}; {dists or 'no distances'}")
        lines.append(
            f"    assets {fmt_value(u['total_asset_value'])} {u['quote']}, "
            f"liabilities {fmt_value(u['total_liability_value'])} {u['quote']}"
            + (f"; liquidation prices: {prices}" if prices else "")
        )
        lines.extend("    " + line for line in render_stress(u).splitlines())
    return "\n".join(lines) if lines else "no accounts"


async def status(config: Config, config_path: Path, *, as_json: bool) -> int:
    """Print every unit's level and distances: from the running daemon, else a one-shot read."""
    units = await _from_daemon(config)
    if units is None:
        _quiet(config)
        units = await one_shot_status(config, config_path)
    print(json.dumps(units, indent=2) if as_json else _table(units))
    return 0


async def test_alert(config: Config, config_path: Path) -> int:
    """Send one test message through every route, now, and say which URLs delivered it."""
    _quiet(config)
    routes = {
        name: Route(name, tuple(u.get_secret_value() for u in r.urls), r.max_per_window, r.window)
        for name, r in config.notify.routes.items()
    }
    register_secrets(u for r in routes.values() for u in r.urls)
    try:
        store = Store(config.state_dir)
    except StateError as exc:
        print(f"margin-monitor: {exc}", file=sys.stderr)
        return 1
    try:
        results = await Dispatcher(routes, store, timeout=config.notify.timeout).send_direct(
            demo_message(time.time())
        )
    finally:
        store.close()
    failed = 0
    for name, outcomes in results.items():
        for i, ok in enumerate(outcomes):
            print(f"route {name} url #{i + 1}: {'delivered' if ok else 'FAILED'}")
            failed += not ok
    return 0 if failed == 0 else 1


async def simulate(scenario: str, host: str, port: int) -> int:
    """Run the simulator standalone until SIGINT/SIGTERM; prints ``listening on URL`` once ready."""
    from monitor.exchange.sim import load_scenario, serve

    load_scenario(scenario)  # a bad file fails here, with one line, before anything listens
    configure_logging("auto", "warning")
    task = asyncio.create_task(
        serve(scenario, host, port, on_ready=lambda url: print(f"listening on {url}", flush=True))
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return 0
