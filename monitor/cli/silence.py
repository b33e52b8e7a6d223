"""``margin-monitor silence | unsilence | silences``: the daemon's HTTP API from the command line.

The daemon owns the state file, so these commands never open it: they call ``/silences`` on the
running daemon with the config's ``http.token`` (the daemon serves state-changing endpoints only
with a token). Each failure is one line saying what to do.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
from rich.table import Table

from monitor.cli.daemon_client import daemon_headers, daemon_url
from monitor.cli.status_view import STYLES, make_console
from monitor.config.duration import parse_duration
from monitor.config.model import Config
from monitor.notify.messages import fmt_time
from monitor.notify.silences import PROTECTED_RULES

COMMANDS = frozenset({"silence", "unsilence", "silences"})
Parser = argparse.ArgumentParser


class DaemonError(Exception):
    """The daemon could not do it; the message is one line."""


def add_commands(sub: Any, with_config: Callable[[Parser], Parser]) -> None:
    """Add the three subcommands to the ``margin-monitor`` parser."""
    p = with_config(sub.add_parser(
        "silence", help="hold back an account's alerts for a while, or until they resolve (acknowledge)",
        description="Hold back the alerts of ACCOUNT (every unit), ACCOUNT:cross or ACCOUNT:PAIR. "
        "Without --bar every rule but liquidation, liquidation_distance and blind is covered; those "
        "are silenced only when named with --bar. Needs the running daemon and http.token.",
    ))  # fmt: skip
    p.add_argument("target", metavar="ACCOUNT[:PAIR]", help="e.g. demo, demo:cross, demo:BTCUSDT")
    p.add_argument(
        "--bar", help="only this rule: normal, margin_call, liquidation, liquidation_distance, blind…"
    )
    window = p.add_mutually_exclusive_group(required=True)
    window.add_argument("--for", dest="duration", metavar="DURATION", help="how long, e.g. 30m, 2h, 1d")
    window.add_argument("--until-resolved", action="store_true",
                        help="acknowledge: until every alert it covers has resolved")  # fmt: skip
    p.add_argument("--comment", default="", help="why (shown in `silences` and the daemon's log)")
    u = with_config(sub.add_parser("unsilence", help="end a silence now", description="End silence ID now."))
    u.add_argument("id", help="the id `silence` printed (also in `silences`)")
    s = with_config(sub.add_parser("silences", help="list the silences in force",
                                   description="List the silences the running daemon holds."))  # fmt: skip
    s.add_argument("--all", action="store_true", help="also those ended within the last week")
    s.add_argument("--json", action="store_true", help="print JSON")


async def _call(config: Config, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    if not config.http.enabled:
        raise DaemonError("silences go through the daemon's HTTP API, and http.enabled is false")
    if method != "GET" and config.http.token is None:
        raise DaemonError(
            "the daemon changes silences over HTTP only with a bearer token: set http.token in the "
            "config (e.g. token: ${MM_HTTP_TOKEN}) and restart the daemon"
        )
    url = f"{daemon_url(config)}{path}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.request(method, url, json=body, headers=daemon_headers(config)) as response,
        ):
            try:
                data = await response.json(content_type=None)
            except ValueError:
                data = None
            return response.status, data
    except aiohttp.ClientConnectorError as exc:
        raise DaemonError(
            f"no daemon is running at {daemon_url(config)} ({exc.strerror or 'unreachable'}); silences "
            "are kept by the daemon: start it (margin-monitor run) and try again"
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DaemonError(f"the daemon at {url} did not answer ({type(exc).__name__})") from None


def _error(status: int, data: Any) -> str:
    if status == 401:
        return "the daemon refused the token: http.token differs from the running daemon's"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return f"the daemon answered HTTP {status}"


def describe(s: dict[str, Any]) -> str:
    """One line for a silence dict, e.g. ``ab12cd34 demo:BTCUSDT margin_call until 2026-… UTC``."""
    what = s.get("bar") or f"all but {', '.join(sorted(PROTECTED_RULES))}"
    until = "until resolved" if s.get("ends_at") is None else f"until {fmt_time(float(s['ends_at']))}"
    ended = f" (ended {fmt_time(float(s['expired_at']))})" if s.get("expired_at") else ""
    note = f" — {s['comment']}" if s.get("comment") else ""
    return f"{s.get('id')} {s.get('target')} {what} {until}{ended}{note}"


async def run(config: Config, args: argparse.Namespace) -> int:
    """Carry out one of :data:`COMMANDS`; 0 on success, 1 with one line on stderr otherwise."""
    try:
        if args.command == "silence":
            body: dict[str, Any] = {"target": args.target, "bar": args.bar, "comment": args.comment}
            if not args.until_resolved:
                try:
                    parse_duration(args.duration)
                except ValueError as exc:
                    raise DaemonError(f"--for {args.duration}: {exc}") from None
            body.update({"until_resolved": True} if args.until_resolved else {"for": args.duration})
            status, data = await _call(config, "POST", "/silences", body)
            if status != 201 or not isinstance(data, dict):
                raise DaemonError(_error(status, data))
            print(f"silenced: {describe(data)}")
            print(f"lift it with: margin-monitor unsilence {data.get('id')}")
            return 0
        if args.command == "unsilence":
            status, data = await _call(config, "DELETE", f"/silences/{args.id}")
            if status != 200 or not isinstance(data, dict):
                raise DaemonError(_error(status, data))
            print(f"ended: {describe(data)}")
            return 0
        status, data = await _call(config, "GET", "/silences?all=1" if args.all else "/silences")
        if status != 200 or not isinstance(data, list):
            raise DaemonError(_error(status, data))
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            _print_table(data)
        return 0
    except DaemonError as exc:
        print(f"margin-monitor: {args.command}: {exc}", file=sys.stderr)
        return 1


def _print_table(silences: list[dict[str, Any]]) -> None:
    console = make_console()
    if not silences:
        console.print("no silences in force")
        return
    table = Table(title="silences", title_justify="left")
    for header in ("id", "target", "covers", "until", "comment"):
        table.add_column(header)
    for s in silences:
        covers = s.get("bar") or f"all but {', '.join(sorted(PROTECTED_RULES))}"
        until = "resolved" if s.get("ends_at") is None else fmt_time(float(s["ends_at"]))
        if s.get("expired_at"):
            until = f"ended {fmt_time(float(s['expired_at']))}"
        style = STYLES["LIQUIDATION"] if s.get("bar") in PROTECTED_RULES else ""
        table.add_row(str(s.get("id")), str(s.get("target")), covers, until, str(s.get("comment") or ""),
                      style=style)  # fmt: skip
    console.print(table)
