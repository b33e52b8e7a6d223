"""Command line: ``margin-monitor run | check | status | test-alert | simulate | replay``.

Only parses arguments and maps outcomes to exit codes; the work lives in the modules it calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor import __version__
from monitor.config import EXIT_CONFIG, Config, ConfigError, load_config

EXIT_OK = 0
EXIT_FAILURE = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="margin-monitor",
        description="Live Binance margin level and liquidation-distance monitor with Apprise alerts.",
    )
    parser.add_argument("--version", action="version", version=f"margin-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", default="config.yaml", help="config file (default ./config.yaml)")
        return p

    run = with_config(sub.add_parser("run", help="run the daemon"))
    run.add_argument(
        "--shard",
        help="i/n: watch only the accounts whose stable hash falls in shard i of n "
        "(default: $MARGIN_MONITOR_SHARD, then the config's shard)",
    )
    with_config(sub.add_parser("check", help="validate the config, connect, report each key's permissions"))
    status = with_config(sub.add_parser("status", help="margin level and distances of every account"))
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default 2)")
    with_config(sub.add_parser("test-alert", help="send a test notification through every route"))
    from monitor.silence_cli import add_commands as add_silence_commands

    add_silence_commands(sub, with_config)
    replay = with_config(sub.add_parser("replay", help="replay past 1m klines against today's positions"))
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
    sim = sub.add_parser("simulate", help="run the Binance simulator standalone")
    sim.add_argument("--scenario", default="crash", help="bundled scenario name or YAML file (default crash)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=0)
    return parser


def _load(path: str) -> Config:
    return load_config(Path(path))


def _err(message: str) -> None:
    print(f"margin-monitor: {message}", file=sys.stderr, flush=True)


def _with_shard(config: Config, option: str | None) -> Config:
    """The config with the shard from ``--shard``, else ``$MARGIN_MONITOR_SHARD``, else its own key."""
    import os

    from monitor.shard import ShardError, resolve_shard

    try:
        shard, _ = resolve_shard(option, os.environ, config.shard)
    except ShardError as exc:
        raise ConfigError(str(exc)) from None
    return config.model_copy(update={"shard": None if shard is None else str(shard)})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``margin-monitor`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            from monitor.exchange.sim import ScenarioError
            from monitor.service_tools import simulate

            try:
                return asyncio.run(simulate(args.scenario, args.host, args.port))
            except ScenarioError as exc:
                _err(str(exc))
                return EXIT_CONFIG
        if args.command == "replay":
            from monitor.replay_cli import run as replay_run

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
        from monitor import service_tools

        if args.command == "check":
            return asyncio.run(service_tools.check(config, Path(args.config)))
        if args.command == "status":
            return asyncio.run(service_tools.status(config, Path(args.config), as_json=args.json,
                                                    watch=args.watch, interval=args.interval))  # fmt: skip
        if args.command in ("silence", "unsilence", "silences"):
            from monitor import silence_cli

            return asyncio.run(silence_cli.run(config, args))
        if args.command == "test-alert":
            return asyncio.run(service_tools.test_alert(config, Path(args.config)))
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    _err(f"unknown command {args.command}")
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
