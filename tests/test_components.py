"""The daemon's parts resolved once from the config (monitor/app/components.py), on the simulator."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from daemon_harness import Receiver, daemon_config

from monitor.app.components import KEY_CHECK_MIN_INTERVAL, Options, bars_of, not_loaded, resolve
from monitor.app.errors import StateStartupError
from monitor.app.feeds import FeedLog
from monitor.config.model import Config, load_config
from monitor.exchange.events import StreamState
from monitor.ops.metrics import Metrics
from monitor.risk.book import AccountBook
from monitor.sim import Simulator
from monitor.store import StateError, Store
from monitor.watch.accounts import Endpoints, build_watchers
from monitor.watch.notices import Notice


async def test_resolve_builds_one_frozen_set_of_parts_sharing_one_engine(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    path = daemon_config(tmp_path, sim, receiver)
    config = load_config(path)
    async with contextlib.AsyncExitStack() as stack:
        parts = await resolve(config, path, Options(clock=lambda: 1_000.0), stack, stopping=lambda: False)
        (watcher,) = parts.watchers
        assert watcher.loaded and watcher.engine is parts.engine  # passed in, not patched in later
        assert parts.engine.policy is parts.policy and parts.opinions.engine is parts.engine
        assert parts.clock() == 1_000.0 and parts.engine.clock() == 1_000.0
        assert parts.key_interval == KEY_CHECK_MIN_INTERVAL  # one account: the floor
        assert parts.book.units() == ["cross:demo"]
        by_name = {w.name: w for w in parts.watchers}  # what Binance's word is decided with
        assert bars_of(by_name, "cross:demo") == {
            "normal": 1.5,
            "margin_call": 1.3,
            "liquidation": 1.1,
        }
        assert bars_of(by_name, "cross:nobody") == {}
        assert not_loaded(parts.watchers, "USDT") == []
        with pytest.raises(dataclasses.FrozenInstanceError):
            parts.engine = parts.engine  # type: ignore[misc]
        with pytest.raises(StateError, match="lock"):  # one daemon per state file, while resolved
            Store(config.state_dir)
    Store(config.state_dir).close()  # the stack unwound: the state file closed, its lock released


async def test_resolve_with_an_unusable_state_dir_says_why_in_one_line(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    path = daemon_config(tmp_path, sim, receiver)
    config = load_config(path)
    config.state_dir.parent.mkdir(parents=True, exist_ok=True)
    config.state_dir.write_text("not a directory")
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(StateStartupError) as raised:
            await resolve(config, path, Options(), stack, stopping=lambda: False)
    assert "\n" not in str(raised.value)


def feed_lines(metrics: Metrics, feed: str) -> list[str]:
    scraped = metrics.render()[0].decode().splitlines()
    return [line for line in scraped if f'{{feed="{feed}"}}' in line]


def test_a_feed_going_down_is_counted_unless_a_stop_was_asked_for() -> None:
    metrics = Metrics(version="test")
    stopping = False
    feeds = FeedLog(metrics, [], stopping=lambda: stopping)
    feeds(StreamState("market", up=False, reason="closed"))
    assert 'margin_monitor_feed_reconnects_total{feed="market"} 1.0' in feed_lines(metrics, "market")
    assert 'margin_monitor_feed_connected{feed="market"} 0.0' in feed_lines(metrics, "market")
    feeds(StreamState("market", up=True, reason=""))
    assert 'margin_monitor_feed_connected{feed="market"} 1.0' in feed_lines(metrics, "market")
    stopping = True
    feeds(StreamState("market", up=False, reason="closed"))
    assert 'margin_monitor_feed_reconnects_total{feed="market"} 1.0' in feed_lines(metrics, "market")
    assert 'margin_monitor_feed_connected{feed="market"} 0.0' in feed_lines(metrics, "market")


def test_a_user_data_feed_refused_for_good_disables_only_its_account(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "accounts": [{"name": n, "api_key": f"{n}-key", "api_secret": f"{n}-secret"} for n in ("a", "b")],
            "notify": {"routes": {"hook": {"urls": ["json://127.0.0.1:9/hook"]}}},
        }
    )
    endpoints = Endpoints("http://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9")
    notices: list[Notice] = []
    watchers = build_watchers(
        config, tmp_path / "config.yaml", endpoints, AccountBook(), lambda _: None, notices
    )
    for watcher in watchers:
        watcher.loaded = True
    feeds = FeedLog(Metrics(version="test"), watchers, stopping=lambda: False)
    feeds(StreamState("userdata:a", up=False, reason="API key rejected (code -2015)", fatal=True))
    assert [w.loaded for w in watchers] == [False, True]
    assert [n.account for n in notices] == ["a"]
