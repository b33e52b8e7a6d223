"""Command line: ``margin-monitor run | check | status | test-alert | simulate | replay``.

Only parses arguments and maps outcomes to exit codes; the work lives in the modules it calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import monitor.logs  # first: it imports structlog without rich (monitor/logs.py)
import monitor.requests_lean  # noqa: F401  # requests without charset_normalizer (before binance, apprise)
from monitor import __version__
from monitor.config.model import EXIT_CONFIG, Config, ConfigError, load_config

EXIT_OK = 0
EXIT_FAILURE = 1


_COMMANDS = {
    "run": (
        "run the daemon",
        "Run the daemon on the config: stream prices and account data, recompute every account on "
        "every tick, and send alerts through the configured routes until SIGTERM or Ctrl-C (exit 0). "
        "Exit codes: 78 bad config, 3 unusable state file, 69 nothing could be watched.",
    ),
    "check": (
        "validate the config, show the routing table, report each key's permissions",
        "Validate the config (one line and exit 78 on a mistake), print which alerts each notification "
        "route gets (with a warning for a route that gets no margin alert or an alert that reaches only "
        "console://), note settings that do nothing, warn about secret files other users can read, then "
        "connect and report each account's key: OK read-only, WARN allowed trading key, or FAIL. "
        "Exit 0 only when every account is usable.",
    ),
    "status": (
        "margin level and distances of every account",
        "Print every unit's margin level, distance to each bar and liquidation prices: from the running "
        "daemon (http.listen), else by reading the accounts once.",
    ),
    "test-alert": (
        "send a test notification through every route",
        "Send one test message through every URL of every route now and print, per URL, whether it "
        "was delivered. Exit 0 only when every URL delivered.",
    ),
    "replay": (
        "replay past 1m klines against today's positions",
        "Replay Binance 1-minute kline CSVs through the same book, engine and alert policy as the "
        "daemon, against today's positions (the running daemon's /status, one read of the accounts, "
        "or --positions FILE), and print when each bar would have been crossed, the worst level and "
        "what would have kept each unit safe; --plot also draws an SVG.",
    ),
    "simulate": (
        "run the Binance simulator standalone",
        "Run the Binance-compatible simulator on HOST:PORT, replaying a scenario in real time, and print "
        "'listening on URL'. Point a config at it with exchange.kind: binance and that URL "
        "(README: The simulator). Stops on SIGTERM or Ctrl-C.",
    ),
}


def _bundled() -> str:
    """The bundled scenario names, globbed where the simulator keeps them (importing the simulator
    here would slow every command down)."""
    return ", ".join(
        sorted(p.stem for p in (Path(__file__).parent.parent / "sim" / "scenarios").glob("*.yaml"))
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="margin-monitor",
        description="Live Binance margin level and liquidation-distance monitor with Apprise alerts.",
        epilog="`margin-monitor COMMAND --help` describes each command. README.md explains every config key.",
    )
    parser.add_argument("--version", action="version", version=f"margin-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        short, long = _COMMANDS[name]
        return sub.add_parser(name, help=short, description=long)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", default="config.yaml", help="config file (default ./config.yaml)")
        return p

    run = with_config(command("run"))
    run.add_argument(
        "--shard",
        help="i/n: watch only the accounts whose stable hash falls in shard i of n; i/n>m: the "
        "handover to m < n shards (docs/capacity.md) "
        "(default: $MARGIN_MONITOR_SHARD, then the config's shard)",
    )
    with_config(command("check"))
    status = with_config(command("status"))
    status.add_argument("--json", action="store_true", help="print one JSON object per unit")
    status.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default 2)")
    with_config(command("test-alert"))
    from monitor.cli.silence import add_commands as add_silence_commands

    add_silence_commands(sub, with_config)
    replay = with_config(command("replay"))
    replay.add_argument(
        "--klines",
        action="append",
        default=[],
        metavar="SYMBOL=FILE.csv",
        help="a Binance 1m kline CSV for one symbol (repeat for more symbols)",
    )
    replay.add_argument("--account", help="only this account's units")
    replay.add_argument("--positions", help="a saved `status --json` output instead of the daemon's /status")
    replay.add_argument("--plot", help="also draw the level over the replay into this SVG file")
    replay.add_argument("--absolute", action="store_true",
                        help="use the historical prices as they were, not as moves from today's")  # fmt: skip
    sim = command("simulate")
    sim.add_argument(
        "--scenario",
        default="crash",
        help=f"a bundled scenario ({_bundled()}) or a scenario YAML file; default crash. "
        "Format: monitor/sim/scenarios/README.md",
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    return parser


def _load(path: str) -> Config:
    return load_config(Path(path))


def _err(message: str) -> None:
    print(f"margin-monitor: {message}", file=sys.stderr, flush=True)


def _with_shard(config: Config, option: str | None) -> Config:
    """The config with the shard from ``--shard``, else ``$MARGIN_MONITOR_SHARD``, else its own key."""
    import os

    from monitor.config.shard import ShardError, resolve_shard

    try:
        shard, _ = resolve_shard(option, os.environ, config.shard)
    except ShardError as exc:
        raise ConfigError(str(exc)) from None
    return replace(config, shard=None if shard is None else str(shard))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``margin-monitor`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            from monitor.cli.commands import simulate
            from monitor.sim import ScenarioError

            try:
                return asyncio.run(simulate(args.scenario, args.host, args.port))
            except ScenarioError as exc:
                _err(str(exc))
                return EXIT_CONFIG
        if args.command == "replay":
            from monitor.cli.replay import run as replay_run

            return replay_run(
                args.klines,
                config_path=Path(args.config),
                account=args.account,
                positions=Path(args.positions) if args.positions else None,
                plot=Path(args.plot) if args.plot else None,
                absolute=args.absolute,
            )
        config = _load(args.config)
        if args.command == "run":
            from monitor.service import run_daemon

            config = _with_shard(config, args.shard)
            return asyncio.run(run_daemon(config, Path(args.config)))
        from monitor.cli import commands

        if args.command == "check":
            return asyncio.run(commands.check(config, Path(args.config)))
        if args.command == "status":
            return asyncio.run(commands.status(config, Path(args.config), as_json=args.json,
                                                    watch=args.watch, interval=args.interval))  # fmt: skip
        if args.command in ("silence", "unsilence", "silences"):
            from monitor.cli import silence

            return asyncio.run(silence.run(config, args))
        if args.command == "test-alert":
            return asyncio.run(commands.test_alert(config, Path(args.config)))
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    _err(f"unknown command {args.command}")
    return EXIT_FAILURE
