"""User-data listen-token renewals of many accounts subscribed together: how they bunch, and the
loop lag they cost.

``python bench/renewals.py --accounts 1000 --validity 30 --renew-before 8 --spread on|off`` starts
the bench simulator (``bench/latency_sim.py``, its own process) with every account and a listen-token
validity of ``--validity`` seconds, subscribes every account on one ``UserDataStream`` (one
WebSocket API session: up to 1,000 accounts) with ``renew_before`` = ``--renew-before``, waits
until all are up, then records until every subscription has renewed once:

- every renewal (``BinanceRest.create_listen_token`` wrapped: its start time), and from them the
  most renewals started within any 100 ms and within any 1 s;
- the loop lag: a 10 ms timer's lateness (``bench/lag_probe.py``), samples over 5 ms and the maximum;
- subscriptions that went down meanwhile (a lapse would show as ``eventStreamTerminated``).

``--spread off`` passes ``spread=lambda: 0.0``: ``renew_delay`` with r = 0 is exactly the rule
before the spread (renew ``renew_before`` ahead of expiry), so both runs use the same tree.
With 30 s tokens renewed 8 s ahead the spread's window is 8 s (1,000 renewals in it: ~125 a
second, far denser than a day's 1,000 over an hour); the JSON also gives, by ``renew_delay``
itself, how 1,000 tokens of 24 h renewed 1 h ahead spread (``day_scale``). Prints JSON. Not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path as FsPath
from typing import Any

from crash import crash_path
from key_checks import most_within
from lag_probe import STALL, LagProbe
from latency import SimProcess, machine, pct
from latency_workload import make_workload

from monitor.exchange.events import StreamState
from monitor.exchange.rest import BinanceRest
from monitor.exchange.userdata import UserDataStream, UserSubscription, renew_delay
from monitor.logs import configure_logging


def record_renewals() -> list[float]:
    """Wrap ``BinanceRest.create_listen_token`` to note each call's start (monotonic seconds)."""
    started: list[float] = []
    original = BinanceRest.create_listen_token

    async def create_listen_token(self: BinanceRest, *args: Any, **kwargs: Any) -> Any:
        started.append(time.monotonic())
        return await original(self, *args, **kwargs)

    BinanceRest.create_listen_token = create_listen_token  # type: ignore[method-assign]
    return started


def day_scale(accounts: int, seed: int) -> dict[str, int]:
    """``accounts`` tokens of 24 h created together, renewed 1 h ahead: the most first renewals in
    any 100 ms and 1 s, with the spread (r drawn per token) and without (r = 0).

    >>> day_scale(1000, 7)
    {'spread_most_in_100ms': 3, 'spread_most_in_1s': 4, 'together_most_in_100ms': 1000}
    """
    rng = random.Random(seed)
    spread = sorted(renew_delay(86400.0, 3600.0, rng.random()) for _ in range(accounts))
    together = [renew_delay(86400.0, 3600.0, 0.0)] * accounts
    return {
        "spread_most_in_100ms": most_within(spread, 0.1),
        "spread_most_in_1s": most_within(spread, 1.0),
        "together_most_in_100ms": most_within(together, 0.1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("json", "warning")
    renewals = record_renewals()
    work = make_workload(args.accounts, 20, 3, args.seed)
    path, _ = crash_path(work.prices, [1000], 1.0, 0.0, args.seed)
    scenario = work.scenario()
    scenario["limits"] = {**scenario["limits"], "listen_token_validity": args.validity}  # type: ignore[dict-item]
    probe = LagProbe()
    down: list[StreamState] = []
    spread = random.Random(args.seed).random if args.spread == "on" else (lambda: 0.0)
    with tempfile.TemporaryDirectory(prefix="renewals-bench-") as tmp_name:
        tmp = FsPath(tmp_name)
        (tmp / "scenario.json").write_text(json.dumps(scenario))
        path.save(str(tmp / "path.npz"))
        sim, url = await SimProcess.start(tmp / "scenario.json", tmp / "path.npz")
        ws_api = url.replace("http://", "ws://") + "/ws-api/v3"
        clients: list[BinanceRest] = []
        try:
            gate = asyncio.Semaphore(50)

            async def connect(name: str) -> BinanceRest:
                async with gate:
                    return await BinanceRest.connect(name, f"key-{name}", f"secret-{name}", url, ws_api)

            clients = list(await asyncio.gather(*(connect(n) for n in work.names)))
            subs = [UserSubscription(c.account, c) for c in clients]
            stream = UserDataStream(
                ws_api, subs, lambda _: None,
                on_state=lambda s: None if s.up else down.append(s),
                renew_before=args.renew_before, spread=spread,
            )  # fmt: skip
            started = time.monotonic()
            runner = asyncio.create_task(stream.run())
            while not all(s.up for s in subs):
                if time.monotonic() - started > 120:
                    raise RuntimeError("the subscriptions did not come up")
                await asyncio.sleep(0.05)
            up_s = time.monotonic() - started
            since = time.monotonic()
            subscribed = len(renewals)
            down.clear()
            prober = asyncio.create_task(probe.run())
            while len(renewals) - subscribed < len(subs):  # each renewed once
                if time.monotonic() - since > args.validity + 5:
                    break  # some never renewed: the JSON's counts say so
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # the last renewals' subscribes
            prober.cancel()
            still_up = sum(s.up for s in subs)
            went_down = [(s.name, s.reason) for s in down]  # before the shutdown's own
            runner.cancel()
            await asyncio.gather(runner, prober, return_exceptions=True)
        finally:
            for client in clients:
                await client.close()
            await sim.stop()
    window = sorted(t for t in renewals[subscribed:])
    late = [lag for _, lag, _ in probe.samples]
    stalls = [(round(at - since, 2), round(lag * 1000, 1)) for at, lag, _ in probe.samples if lag > STALL]
    return {
        "benchmark": "listen-token renewals of accounts subscribed together",
        "machine": machine(),
        "accounts": args.accounts,
        "validity_s": args.validity,
        "renew_before_s": args.renew_before,
        "spread": args.spread,
        "up_s": round(up_s, 2),
        "renewals": len(window),
        "first_renewal_after_s": round(window[0] - since, 2) if window else None,
        "renewals_span_s": round(window[-1] - window[0], 2) if window else None,
        "most_in_100ms": most_within(window, 0.1),
        "most_in_1s": most_within(window, 1.0),
        "went_down": len(went_down),
        "went_down_first": went_down[:5],
        "up_at_end": still_up,
        "lag_samples": len(late),
        "lag_p99_ms": pct(late, 99),
        "lag_max_ms": round(max(late) * 1000, 1) if late else None,
        "lag_over_5ms": len(stalls),
        "lag_over_5ms_at": stalls,
        "day_scale": day_scale(args.accounts, args.seed),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--validity", type=float, default=30.0, help="listen-token validity, seconds")
    parser.add_argument("--renew-before", type=float, default=8.0, help="seconds ahead of expiry")
    parser.add_argument("--spread", choices=("on", "off"), default="on", help="off: r = 0, the rule before")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=1))
