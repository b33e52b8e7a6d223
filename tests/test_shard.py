"""Sharding: the shard spec, where it comes from, and the jump consistent hash's minimal movement."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import monitor.config.shard
from monitor.config.model import EXIT_CONFIG, ConfigError, load_config
from monitor.config.shard import ENV_SHARD, Shard, ShardError, parse_shard, resolve_shard, shard_of
from monitor.watch.roster import in_shard

REPO = Path(__file__).resolve().parent.parent
NAMES = [f"acct-{i:04d}" for i in range(4000)]


def test_doctests() -> None:
    """The worked examples in monitor/config/shard.py hold."""
    assert doctest.testmod(monitor.config.shard).failed == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", Shard(0, 1)), ("3/4", Shard(3, 4)), ("margin-monitor-2/5", Shard(2, 5)), (" 1/2 ", Shard(1, 2))],
)
def test_parse(text: str, expected: Shard) -> None:
    """i/n and pod-name-i/n parse; str() gives i/n back."""
    assert parse_shard(text) == expected
    assert str(parse_shard(text)) == f"{expected.index}/{expected.count}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("foo", "expected i/n"),
        ("1/0", "count must be at least 1"),
        ("4/4", "index must be below the count"),
        ("-1/4", "expected i/n"),
        ("1/2/3", "expected i/n"),
        ("", "expected i/n"),
        ("0/99999", "at most"),
    ],
)
def test_parse_rejects(text: str, reason: str) -> None:
    """A bad spec is one line naming what is wrong."""
    with pytest.raises(ShardError, match=reason) as err:
        parse_shard(text)
    assert "\n" not in str(err.value)


def test_resolve_order() -> None:
    """--shard beats the environment, which beats the config key; the source is named on error."""
    assert resolve_shard("1/3", {ENV_SHARD: "0/2"}, "0/5") == (Shard(1, 3), "--shard")
    assert resolve_shard(None, {ENV_SHARD: "0/2"}, "0/5") == (Shard(0, 2), ENV_SHARD)
    assert resolve_shard(None, {ENV_SHARD: ""}, "0/5") == (Shard(0, 5), "shard")
    assert resolve_shard(None, {}, None) == (None, "")
    with pytest.raises(ShardError, match=f"^{ENV_SHARD}: '2/2'"):
        resolve_shard(None, {ENV_SHARD: "2/2"}, None)


@pytest.mark.parametrize("count", [1, 2, 4, 5, 7])
def test_every_account_in_exactly_one_shard(count: int) -> None:
    """For any n, each account is owned by exactly one of 0/n … n-1/n, and shards are balanced."""
    owners = {name: [i for i in range(count) if in_shard(name, f"{i}/{count}")] for name in NAMES}
    assert all(len(o) == 1 for o in owners.values())
    sizes = [sum(1 for o in owners.values() if o == [i]) for i in range(count)]
    assert max(sizes) - min(sizes) < 0.15 * len(NAMES) / count * 2


@given(st.text(min_size=1, max_size=30), st.integers(min_value=1, max_value=200))
def test_growing_moves_only_to_the_new_shard(name: str, count: int) -> None:
    """From n to n+1 shards an account stays or moves to shard n: nothing shuffles among the old."""
    before, after = shard_of(name, count), shard_of(name, count + 1)
    assert after in (before, count)


def test_four_to_five_moves_about_a_fifth() -> None:
    """4 → 5 shards moves about 1/5 of 4,000 accounts (hash % n would move about 4/5)."""
    moved = sum(1 for n in NAMES if shard_of(n, 4) != shard_of(n, 5))
    assert 0.15 * len(NAMES) < moved < 0.25 * len(NAMES)


def _config(tmp_path: Path, **extra: object) -> Path:
    data = {
        "accounts": [{"name": "demo", "api_key": "k", "api_secret": "s"}],
        "notify": {"routes": {"console": {"urls": ["console://"]}}},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_config_key_validated(tmp_path: Path) -> None:
    """shard: 1/0 in the config is a config error naming the key, not a ZeroDivisionError later."""
    with pytest.raises(ConfigError, match="shard") as err:
        load_config(_config(tmp_path, shard="1/0"))
    assert "count must be at least 1" in str(err.value)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--shard", "foo"], {}, "--shard: 'foo': expected i/n"),
        (["--shard", "1/0"], {}, "--shard: '1/0': the shard count must be at least 1"),
        ([], {ENV_SHARD: "5/5"}, f"{ENV_SHARD}: '5/5': the index must be below the count"),
    ],
)
def test_run_with_bad_shard_exits_78(
    tmp_path: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    """run --shard foo / --shard 1/0 / a bad MARGIN_MONITOR_SHARD: one line, exit 78, no traceback."""
    config = _config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "run", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=REPO,
    )
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.startswith(f"margin-monitor: {needle}")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4/5>4", Shard(4, 5, 4)), ("margin-monitor-0/5>4", Shard(0, 5, 4)), ("2/8>3", Shard(2, 8, 3))],
)
def test_parse_handover(text: str, expected: Shard) -> None:
    """i/n>m (and pod-name-i/n>m) parse; str() gives i/n>m back, which parses to the same shard."""
    shard = parse_shard(text)
    assert shard == expected
    assert str(shard) == f"{expected.index}/{expected.count}>{expected.target}"
    assert parse_shard(str(shard)) == shard


@pytest.mark.parametrize(
    ("text", "reason"), [("1/5>5", "fewer shards"), ("1/5>0", "fewer shards"), ("5/5>4", "below")]
)
def test_parse_handover_rejects(text: str, reason: str) -> None:
    """A handover goes to fewer shards (at least one); the index is still below the old count."""
    with pytest.raises(ShardError, match=reason):
        parse_shard(text)


def owners(account: str, running: dict[int, str]) -> set[int]:
    """The pods (ordinal → shard spec) that watch ``account``."""
    return {pod for pod, spec in running.items() if parse_shard(spec).owns(account)}


def uncovered_by_others(running: dict[int, str], down: int) -> set[str]:
    """Accounts nobody watches while pod ``down`` restarts (or after it is removed)."""
    others = {pod: spec for pod, spec in running.items() if pod != down}
    return {a for a in NAMES[:1000] if not owners(a, others)}


@pytest.mark.parametrize(("old", "new"), [(5, 4), (4, 3), (6, 4), (3, 1)])
def test_shrinking_in_one_step_leaves_the_leaving_accounts_unwatched(old: int, new: int) -> None:
    """The gap: replicas and count changed at once, a StatefulSet removes pods new..old-1 first,
    then restarts new-1..0 on the new count; until its new owner restarts, a leaving account has
    no owner at all (accounts that stay only miss their own pod's restart, as in any rollout)."""
    running = {pod: f"{pod}/{old}" for pod in range(old)}
    leaving = {a for a in NAMES[:1000] if shard_of(a, old) >= new}
    for pod in reversed(range(new, old)):
        del running[pod]
    unwatched = {a for a in NAMES[:1000] if not owners(a, running)}
    assert unwatched == leaving and leaving  # every leaving account, until its owner restarts
    for pod in reversed(range(new)):
        running[pod] = f"{pod}/{new}"
    assert not {a for a in NAMES[:1000] if not owners(a, running)}


@pytest.mark.parametrize(("old", "new"), [(5, 4), (4, 3), (6, 4), (3, 1), (8, 5)])
def test_shrinking_by_handover_watches_every_account_throughout(old: int, new: int) -> None:
    """The fix: first roll every pod (StatefulSet order: old-1 … 0) onto i/old>new with all pods
    kept, then remove pods new..old-1. At every step each account has an owner, except while its
    own pod restarts onto a spec that still owns it (the gap of any rolling restart, not of the
    re-shard); after it, each account has exactly one owner, the one i/new would give."""
    running = {pod: f"{pod}/{old}" for pod in range(old)}
    for pod in reversed(range(old)):  # step 1: the rolling update to the handover spec
        before = {a for a in NAMES[:1000] if parse_shard(running[pod]).owns(a)}
        after_spec = f"{pod}/{old}>{new}"
        after = {a for a in NAMES[:1000] if parse_shard(after_spec).owns(a)}
        assert uncovered_by_others(running, pod) <= before & after
        running[pod] = after_spec
        assert not {a for a in NAMES[:1000] if not owners(a, running)}
    for pod in reversed(range(new, old)):  # step 2: the replicas go down to ``new``
        assert not uncovered_by_others(running, pod)
        del running[pod]
    for account in NAMES[:1000]:
        assert owners(account, running) == {shard_of(account, new)}
