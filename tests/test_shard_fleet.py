"""Shards on one machine: 4,000 accounts (400 in the default run), 4 daemons, then a rolling
change to 5, with crossings happening during the change.

The simulator runs in this process (its weight and connection limits lifted: the shards share 127.0.0.1 here,
where in production each has its own IP); each daemon is a real ``margin-monitor run`` process
taking its shard from ``MARGIN_MONITOR_SHARD``, as the StatefulSet's pods do; every alert goes to
one local receiver. The change follows a StatefulSet's order (OrderedReady, RollingUpdate): the
new pod 4/5 starts and becomes ready, then pods 3, 2, 1, 0 restart one at a time as i/5, each on
its own state directory. BTC falls twice during the change: once while old and new owners both
watch the moving accounts, once while a pod is down.

Checked: each daemon's /status lists exactly its shard's accounts, every account exactly once, with
4 shards and with 5; every bar an account's level ended below was alerted at least once (no
crossing lost); alerts sent twice are only of moved accounts and at most as many as the old
owners counted (``margin_monitor_shard_departed_firing_rules_total``). The figures are printed
(docs/capacity.md quotes them).

Then 5 → 4 by handover (``i/5>4`` rolled out with all five pods, then pod 4 removed), with BTC
falling and recovering in the window a one-step shrink leaves unwatched: every crossing alerted.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import Receiver
from ops_harness import free_port

from monitor.config.shard import ENV_SHARD, shard_of
from monitor.service import EXIT_UNAVAILABLE
from monitor.sim import Simulator, parse_scenario, run_simulator

FULL = int(os.environ.get("FLEET_ACCOUNTS", "4000"))
QUICK = 400
START, STEP1, STEP2 = Decimal(30000), Decimal(28000), Decimal(25000)
BARS = {"NORMAL": 1.5, "MARGIN CALL": 1.3, "LIQUIDATION": 1.1}
TITLE = re.compile(r"^\[(NORMAL|MARGIN CALL|LIQUIDATION)\] (\S+) \(cross\)")
REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.timeout(1800)]


def name(i: int) -> str:
    return f"f{i:04d}"


def start_level(i: int) -> Decimal:
    """1.55 … 2.49: BTC at 28,000 takes those up to 1.607 below 1.5; at 25,000 up to 1.8 below
    1.5 and up to 1.56 below 1.3."""
    return Decimal("1.55") + Decimal(i % 100) * Decimal("0.0095")


def loan(i: int) -> Decimal:
    return (START / start_level(i)).quantize(Decimal("0.01"))


def level(i: int, price: Decimal) -> float:
    return float(price / loan(i))


def scenario(size: int) -> dict[str, Any]:
    accounts = [
        {
            "name": name(i),
            "api_key": f"key-{i}",
            "api_secret": f"secret-{i}",
            "cross": [{"asset": "BTC", "free": "1"}, {"asset": "USDT", "borrowed": str(loan(i))}],
        }
        for i in range(size)
    ]
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": str(START)},
        "accounts": accounts,
        "limits": {
            "api_weight_per_minute": 10**9,
            "sapi_ip_weight_per_minute": 10**9,
            "ws_connections": 10**9,
        },
        "streams": {"quote_refresh": "2s"},
    }


def get(port: int, path: str, timeout: float = 20.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except OSError as exc:
        code = getattr(exc, "code", 0)
        return int(code) if isinstance(code, int) else 0, b""


class Daemon:
    """One ``margin-monitor run`` process with its shard, state directory and HTTP port."""

    def __init__(self, tmp: Path, config: Path, ordinal: int) -> None:
        self.tmp, self.config, self.ordinal = tmp, config, ordinal
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.shard = ""
        self._role: tuple[int, int | None] = (1, None)

    def start(self, count: int, target: int | None = None) -> None:
        """Run as shard ordinal/count, or ordinal/count>target (the handover to fewer shards), on a
        port free now: the port of a stopped run may have gone to another process's connection
        meanwhile (seen in CI: exit 69, "address already in use", on a restart)."""
        self._role = (count, target)
        self.port = free_port()
        self.shard = f"{self.ordinal}/{count}" + ("" if target is None else f">{target}")
        config = yaml.safe_load(self.config.read_text())
        config["state_dir"] = str(self.tmp / f"state-{self.ordinal}")
        config["http"]["listen"] = f"127.0.0.1:{self.port}"
        path = self.tmp / f"config-{self.ordinal}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = (self.tmp / f"daemon-{self.ordinal}-{count}-{target}.log").open("wb")
        env = {**os.environ, ENV_SHARD: f"margin-monitor-{self.shard}"}  # as from the pod name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            cwd=REPO,
        )
        log.close()

    async def ready(self, within: float = 900.0) -> None:
        deadline = time.monotonic() + within
        rebinds = 3
        while True:
            assert self.process is not None
            if (
                self.process.poll() == EXIT_UNAVAILABLE and rebinds
            ):  # its port taken between free_port and bind
                rebinds -= 1
                self.start(*self._role)
            assert self.process.poll() is None, f"daemon {self.shard} exited"
            status, _ = await asyncio.to_thread(get, self.port, "/readyz")
            if status == 200:
                return
            assert time.monotonic() < deadline, f"daemon {self.shard} not ready within {within:g} s"
            await asyncio.sleep(1.0)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.process.wait, 60)
        self.process = None
        return code

    async def accounts(self) -> list[str]:
        status, body = await asyncio.to_thread(get, self.port, "/status", 300.0)
        assert status == 200
        return [unit["account"] for unit in json.loads(body)]

    async def metric(self, name: str) -> float:
        status, body = await asyncio.to_thread(get, self.port, "/metrics", 120.0)
        assert status == 200
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


@pytest.fixture(
    params=[
        pytest.param(QUICK, id=f"{QUICK}-accounts", marks=pytest.mark.slow),
        pytest.param(FULL, id=f"{FULL}-accounts", marks=pytest.mark.slow),
    ]
)
def size(request: pytest.FixtureRequest) -> int:
    """Accounts in the fleet: 400 in every full run (``make test``; both are marked slow, so ``make
    quick`` skips them), 4,000 only when slow tests are asked for by name (``pytest -m slow``: it takes
    minutes on a busy 2-core machine)."""
    wanted = str(request.param)
    markexpr = str(request.config.option.markexpr or "")
    if request.param != QUICK and ("slow" not in markexpr or "not slow" in markexpr):
        pytest.skip(f"{wanted} accounts: select with -m slow (tests/test_shard_fleet.py)")
    return int(request.param)


@pytest.fixture
async def fleet_sim(size: int) -> AsyncIterator[Simulator]:
    async with run_simulator(parse_scenario(scenario(size), source="<fleet>"), realtime=True) as sim:
        yield sim


async def partition(daemons: list[Daemon], count: int, size: int) -> dict[str, list[str]]:
    """Shard → accounts on its /status; asserts each account exactly once, in its own shard."""
    owners: dict[str, list[str]] = collections.defaultdict(list)
    for daemon in daemons:
        accounts = await daemon.accounts()
        assert len(accounts) == len(set(accounts))
        for account in accounts:
            owners[account].append(daemon.shard)
            assert shard_of(account, count) == daemon.ordinal, f"{account} on {daemon.shard}"
    assert sorted(owners) == [name(i) for i in range(size)]
    doubles = {a: s for a, s in owners.items() if len(s) != 1}
    assert not doubles, f"{len(doubles)} accounts on more than one shard"
    return {d.shard: [a for a, s in owners.items() if s == [d.shard]] for d in daemons}


async def test_four_shards_then_five_every_account_once_no_crossing_lost(
    tmp_path: Path, size: int, fleet_sim: Simulator, receiver: Receiver
) -> None:
    """N accounts over 4 shards, then a rolling change to 5 with two price drops during it."""
    sim = fleet_sim
    base = fleet_config(tmp_path, sim, receiver, size)
    figures: dict[str, float] = {}
    started = time.monotonic()

    daemons = [Daemon(tmp_path, base, i) for i in range(5)]
    try:
        await rolling_change(sim, receiver, daemons, size, figures, started)
    finally:
        for daemon in daemons:
            daemon.kill()


def fleet_config(tmp_path: Path, sim: Simulator, receiver: Receiver, size: int) -> Path:
    """Every shard's config: the fleet's accounts on ``sim``, every alert to ``receiver``."""
    config = {
        "exchange": sim.exchange_config(snapshot_interval="5m", resync_interval="60s"),
        "accounts": [
            {"name": name(i), "api_key": f"key-{i}", "api_secret": f"secret-{i}"} for i in range(size)
        ],
        "alerts": {"stale_after": "120s", "resolved": False},
        # generous timeouts: a delivery that times out under load is retried, and the receiver
        # would count a retry as a duplicate that has nothing to do with re-sharding
        "notify": {
            "routes": {"hook": {"urls": [receiver.url.replace("cto=1&rto=2", "cto=10&rto=120")]}},
            "timeout": "150s",
        },
        "log": {"format": "json", "level": "warning"},
        "http": {"enabled": True, "listen": "127.0.0.1:0"},
    }
    base = tmp_path / "config.yaml"
    base.write_text(yaml.safe_dump(config))
    return base


def alerts(receiver: Receiver) -> collections.Counter[tuple[str, str]]:
    """(account, bar) → how many alerts the receiver got for it."""
    fired: collections.Counter[tuple[str, str]] = collections.Counter()
    for message in receiver.messages:
        match = TITLE.match(str(message.get("title", "")))
        if match:
            fired[(match.group(2), match.group(1))] += 1
    return fired


async def rolling_change(
    sim: Simulator,
    receiver: Receiver,
    daemons: list[Daemon],
    size: int,
    figures: dict[str, float],
    started: float,
) -> None:
    """4 shards, then 5 in a StatefulSet's order, with the checks of the module docstring."""
    for daemon in daemons[:4]:  # one at a time, as a StatefulSet (OrderedReady) starts its pods
        daemon.start(4)
        await daemon.ready()
    figures["four_ready_s"] = time.monotonic() - started
    four = await partition(daemons[:4], 4, size)
    figures.update({f"accounts_{k}": len(v) for k, v in four.items()})
    assert not [m for m in receiver.messages if TITLE.match(str(m.get("title")))]  # all above the bars

    # --- the rolling change: pod 4 first (ready), then 3, 2, 1, 0 restart as i/5 ------------------
    change = time.monotonic()
    daemons[4].start(5)
    await daemons[4].ready()
    await sim.set_price("BTCUSDT", STEP1)  # old and new owners both watch the moving accounts
    for daemon in reversed(daemons[:4]):
        assert await daemon.stop() == 0
        if daemon.ordinal == 1:
            await sim.set_price("BTCUSDT", STEP2)  # while shard 1 is down
        daemon.start(5)
        await daemon.ready()
    figures["change_s"] = time.monotonic() - change
    five = await partition(daemons, 5, size)
    moved = {name(i) for i in range(size) if shard_of(name(i), 4) != shard_of(name(i), 5)}
    figures["moved"] = len(moved)
    assert len(five["4/5"]) == len(moved)  # growing moves accounts only to the new shard

    # --- every crossing alerted, duplicates only of moved accounts and bounded -------------------
    expected = {(name(i), bar) for i in range(size) for bar, at in BARS.items() if level(i, STEP2) <= at}
    figures["crossings"] = len(expected)

    await receiver.wait_for(lambda _: expected <= set(alerts(receiver)), within=180)
    await asyncio.sleep(5)  # anything still in flight
    fired = alerts(receiver)
    assert set(fired) == expected, "an alert for a bar the level never crossed"
    duplicates = {key: n for key, n in fired.items() if n > 1}
    departed_firing = sum(
        [await d.metric("margin_monitor_shard_departed_firing_rules_total") for d in daemons]
    )
    takeovers = await daemons[4].metric("margin_monitor_shard_takeover_alerts_total")
    figures.update(
        duplicates=sum(n - 1 for n in duplicates.values()),
        departed_firing_rules=departed_firing,
        takeover_alerts=takeovers,
        total_s=time.monotonic() - started,
    )
    print("fleet figures:", json.dumps(figures))
    assert {account for account, _ in duplicates} <= moved
    assert all(n == 2 for n in duplicates.values())
    assert figures["duplicates"] <= departed_firing + takeovers
    for daemon in daemons:
        assert await daemon.stop() == 0


async def test_five_shards_then_four_by_handover_no_crossing_lost(
    tmp_path: Path, size: int, fleet_sim: Simulator, receiver: Receiver
) -> None:
    """Shrinking 5 → 4 without a gap (docs/capacity.md, "Shrinking"): step 1 rolls every pod, in a
    StatefulSet's order (4, 3, 2, 1, 0), onto ``i/5>4`` with all five kept; step 2 removes pod 4.
    BTC falls and recovers after pod 4 has restarted and before the new owners of its accounts
    have: the window in which, shrinking in one step, those accounts would have had no owner.
    Every crossing of it is alerted; then every account is on exactly one of the four shards."""
    sim = fleet_sim
    daemons = [Daemon(tmp_path, fleet_config(tmp_path, sim, receiver, size), i) for i in range(5)]
    try:
        for daemon in daemons:
            daemon.start(5)
            await daemon.ready()
        await partition(daemons, 5, size)
        leaving = {name(i) for i in range(size) if shard_of(name(i), 5) == 4}

        # step 1: the rolling update onto 4/5>4 … 0/5>4, all five pods kept
        assert await daemons[4].stop() == 0
        daemons[4].start(5, 4)
        await daemons[4].ready()
        await sim.set_price("BTCUSDT", STEP2)  # falls and recovers before 3 … 0 take over
        expected = {(name(i), bar) for i in range(size) for bar, at in BARS.items() if level(i, STEP2) <= at}
        in_window = {(account, bar) for account, bar in expected if account in leaving}
        assert in_window  # crossings that a one-step shrink would lose
        await receiver.wait_for(lambda _: expected <= set(alerts(receiver)), within=180)
        await sim.set_price("BTCUSDT", START)
        for daemon in reversed(daemons[:4]):
            assert await daemon.stop() == 0
            daemon.start(5, 4)
            await daemon.ready()

        # step 2: replicas 5 → 4 (pod 4 goes; its accounts are watched by their new owners)
        assert await daemons[4].stop() == 0
        four = await partition(daemons[:4], 4, size)
        assert sum(len(accounts) for accounts in four.values()) == size
        await asyncio.sleep(5)  # anything still in flight
        fired = alerts(receiver)
        assert set(fired) == expected, "an alert for a bar the level never crossed"
        print(
            "shrink figures:",
            json.dumps(
                {
                    "leaving": len(leaving),
                    "crossings": len(expected),
                    "of_leaving_accounts": len(in_window),
                    "alerts": sum(fired.values()),
                }
            ),
        )
        for daemon in daemons[:4]:
            assert await daemon.stop() == 0
    finally:
        for daemon in daemons:
            daemon.kill()
