"""The one-shot commands: ``check``, ``status``, ``test-alert`` and ``simulate``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from monitor.cli import status_view
from monitor.cli.daemon_client import daemon_headers, daemon_url
from monitor.cli.status_view import StatusResult
from monitor.config.model import Config, exposed_files
from monitor.config.notes import inert_settings
from monitor.endpoints import open_endpoints
from monitor.exchange.binance import BinanceRest, ExchangeError, RetryPolicy
from monitor.exchange.diagnose import diagnose
from monitor.exchange.parse import ticker_prices
from monitor.exchange.supervisor import Backoff, describe
from monitor.logs import configure_logging, register_secrets
from monitor.notify.messages import demo_message
from monitor.notify.send_check import probe_routes
from monitor.ops.status_extras import enrich
from monitor.risk.book import AccountBook
from monitor.risk.stress import render_stress
from monitor.watch.accounts import AccountWatcher, build_watchers
from monitor.watch.keys import key_flags, key_verdict
from monitor.watch.notices import Notice
from monitor.watch.routing import notify_routes, route_table

log = structlog.get_logger(__name__)


def _quiet(config: Config) -> None:
    configure_logging("console" if sys.stderr.isatty() else "json", "warning")


# `check`'s line per key verdict (monitor/watch/keys.py), with every permission the key has
CHECK_WORDS = {
    "read_only": "OK read-only key ({})",
    "allowed": "WARN key is not read-only ({}); allowed by config",
    "refused": "FAIL key is not read-only ({}); make a read-only key",
}
# `check` answers within seconds: a few quick tries, then the daemon's diagnosis of what is wrong
CHECK_POLICY = RetryPolicy(attempts=3, backoff=Backoff(initial=0.5, maximum=2.0), quiet=True)


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
                    watcher.name, key, secret, endpoints.rest_url, endpoints.ws_api_url, policy=CHECK_POLICY
                )
            except ExchangeError as exc:  # the daemon's own diagnosis: DNS, refused, key, clock…
                print(f"{watcher.name}: FAIL: {diagnose(exc).reason}")
                failures += 1
                continue
            try:
                perms = await rest.key_permissions()
            except ExchangeError as exc:
                print(f"{watcher.name}: FAIL: cannot read key permissions: {diagnose(exc).reason}")
                failures += 1
                continue
            finally:
                await rest.close()
            verdict = key_verdict(perms, watcher.cfg.allow_trading_keys)  # the daemon's own verdict
            print(f"{watcher.name}: {CHECK_WORDS[verdict.kind].format(', '.join(key_flags(perms)))}")
            failures += not verdict.usable
    return 0 if failures == 0 else 1


async def _from_daemon(config: Config) -> tuple[list[dict[str, Any]] | None, str]:
    """The daemon's /status, or None and why it could not be had."""
    if not config.http.enabled:
        return None, "the daemon's HTTP endpoint is off (http.enabled: false)"
    url = f"{daemon_url(config)}/status"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(url, headers=daemon_headers(config)) as response,
        ):
            if response.status == 401:
                return None, f"the daemon at {url} refused the token (http.token differs?)"
            if response.status != 200:
                return None, f"the daemon at {url} answered HTTP {response.status}"
            data = await response.json()
    except aiohttp.ClientConnectorError as exc:
        return None, f"no daemon at {url} ({exc.strerror or type(exc).__name__})"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return None, f"the daemon at {url} did not answer ({type(exc).__name__})"
    if not isinstance(data, list):
        return None, f"the daemon at {url} sent no unit list"
    return data, url


async def one_shot_status(
    config: Config, config_path: Path, problems: list[str] | None = None
) -> list[dict[str, Any]]:
    """Load every account and price it from REST tickers, without starting the daemon. Accounts
    that could not be loaded are left out, with why in ``problems``."""
    book = AccountBook(
        quote=config.exchange.quote, stablecoins=config.exchange.stablecoins, pinned=config.exchange.pinned
    )
    notices: list[Notice] = []
    async with contextlib.AsyncExitStack() as stack:
        endpoints = await open_endpoints(config, config_path, stack)
        watchers: list[AccountWatcher] = build_watchers(
            config, config_path, endpoints, book, lambda _: None, notices
        )
        for watcher in watchers:
            register_secrets(watcher.secret_values())
        try:
            await asyncio.gather(*(w.load() for w in watchers))
            loaded = [w for w in watchers if w.loaded and w.rest is not None]
            if problems is not None:
                problems += [n.body.split(". The other")[0] for n in notices if n.rule == "account_disabled"]
                problems += [f"account {n.account}: {n.title.removeprefix('margin-monitor: ')}"
                             for n in notices if n.rule == "key_refused"]  # fmt: skip
            if loaded and loaded[0].rest is not None:
                tickers = await loaded[0].rest.client.get_all_tickers()
                for symbol, price in ticker_prices(tickers, book.symbols_needed()).items():
                    book.on_price(symbol, price)
            target = config.alerts.restore_target
            units = [
                enrich(book, unit, book.report(unit, restore_target=target).to_json(), {})
                for unit in sorted(book.units())
            ]
            return units + [w.blind_entry(config.exchange.quote) for w in watchers if not w.loaded]
        finally:
            for watcher in watchers:
                await watcher.close()


def _not_loaded(unit: dict[str, Any]) -> bool:
    """An account that could not be loaded at all (``AccountWatcher.blind_entry``): blind, no bars."""
    return unit.get("state") == "blind" and not unit.get("bars")


async def read_status(config: Config, config_path: Path) -> StatusResult:
    """From the running daemon, else a one-off read; ``units`` None when neither gave any."""
    units, where = await _from_daemon(config)
    if units is not None:
        return StatusResult([{**u, "source": "daemon"} for u in units], f"the daemon at {where}",
                            at=time.time())  # fmt: skip
    problems: list[str] = []
    try:
        units = await one_shot_status(config, config_path, problems)
    except Exception as exc:  # python-binance raises its own types on a dead network: say which
        problems.append(describe(exc))
        units = []
    read = [u for u in units if not _not_loaded(u)]
    if not read:
        why = "; ".join(problems + [f"{u['account']}: {u.get('reason')}" for u in units]) or (
            "no account has a margin unit to show"
        )
        problem = f"{where}, and the one-off read failed: {why}"
        return StatusResult(units or None, "a one-off read (no daemon)", problem, time.time(), failed=True)
    note = f"{where}; " + ("; ".join(problems) if problems else "")
    return StatusResult([{**u, "source": "one-off", "age": 0.0} for u in units], "a one-off read (no daemon)",
                        note.rstrip("; "), time.time())  # fmt: skip


async def status(
    config: Config, config_path: Path, *, as_json: bool, watch: bool = False, interval: float = 2.0
) -> int:
    """Print every unit (``status_view``): from the running daemon, else a one-off read. Exits 1,
    saying why, when neither gives a unit."""
    _quiet(config)
    if watch:
        return await status_view.watch(lambda: read_status(config, config_path), interval)
    result = await read_status(config, config_path)
    if result.units is None:
        print(f"margin-monitor: No accounts could be read: {result.problem}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(result.units, indent=2))
    elif result.failed:  # only accounts that could not be loaded: each row says why
        status_view.make_console().print(status_view.render(replace(result, problem=None)))
    else:
        console = status_view.make_console()
        console.print(status_view.render(result))
        for unit in result.units:  # the what-if table of each unit (monitor.risk.stress), under the table
            if "stress" in unit:
                text = render_stress(unit).replace("\n", "\n    ")
                console.print(
                    f"{status_view.unit_name(unit)}: {text}", markup=False, highlight=False, soft_wrap=True
                )
    if result.failed:
        print(f"margin-monitor: No accounts could be read: {result.problem}", file=sys.stderr)
        return 1
    return 0


async def test_alert(config: Config, config_path: Path) -> int:
    """Send one test message through every route now, without the state file (so it works beside a
    running daemon), and say per URL (secrets masked) whether it was delivered, and if not why."""
    _quiet(config)
    routes = notify_routes(config)  # the daemon's own mapping (monitor/watch/routing.py)
    register_secrets(u for r in routes.values() for u in r.urls)
    failed = 0
    async for name, i, outcome in probe_routes(
        routes, demo_message(time.time()), timeout=config.notify.timeout
    ):
        where = f"route {name} url #{i}"
        if outcome.ok:
            print(f"{where}: delivered ({outcome.masked})")
        else:
            print(f"{where}: FAILED ({outcome.masked}): {outcome.reason}")
        failed += not outcome.ok
    return 0 if failed == 0 else 1


async def simulate(scenario: str, host: str, port: int) -> int:
    """Run the simulator standalone until SIGINT/SIGTERM; prints ``listening on URL`` once ready."""
    from monitor.sim import load_scenario, serve

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
