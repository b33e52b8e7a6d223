"""Fault matrix, market data: the real daemon on the simulator through drops, stalls, 1001 closes,
malformed frames, an unknown symbol and a 20,000-message burst.

The account (derived by hand): cross, BTC held 1.0 against 18,750 USDT borrowed, no interest.
level(p) = p / 18,750: 1.6 at 30,000; it meets 1.5 at 28,125, 1.3 at 24,375 and 1.1 at 20,625.
For each fault: what the trader is told, that a crossing during or after the fault still alerts,
and that the daemon keeps running (healthy, no task died).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Receiver, assert_alive, daemon_config, events, running_daemon, wait_until
from structlog.testing import capture_logs

from monitor.app.components import FEED_BACKOFF
from monitor.sim import Simulator

pytestmark = pytest.mark.timeout(60)

BTC_CROSS = [
    {"asset": "BTC", "free": "1", "locked": "0", "borrowed": "0", "interest": "0"},
    {"asset": "USDT", "free": "0", "locked": "0", "borrowed": "18750", "interest": "0"},
]


@pytest.fixture
def scenario_data() -> dict[str, Any]:
    """The demo account (level 1.6) and a second one holding LUNA (only the unknown-symbol row uses it)."""
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "ETHUSDT": "2000", "LUNAUSDT": "1"},
        "accounts": [
            {"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret", "cross": BTC_CROSS},
            {
                "name": "luna",
                "api_key": "luna-key",
                "api_secret": "luna-secret",
                "cross": [{"asset": "LUNA", "free": "3000"}, {"asset": "USDT", "borrowed": "1000"}],
            },
        ],
    }


def titles(rx: Receiver) -> list[str]:
    return rx.titles()


def count(rx: Receiver, text: str) -> int:
    return sum(text.lower() in t.lower() for t in titles(rx))


async def test_market_drop_during_crash_loses_no_crossing(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A dropped market stream reconnects; the crossings made while it was down alert once it is back."""
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            await sim.inject_fault({"kind": "drop", "target": "streams"})
            await sim.set_price("BTCUSDT", "23000")  # 1.5 and 1.3 crossed while disconnected
            await receiver.wait_for(lambda m: len(m) >= 2, within=10)
            assert "1.5" in titles(receiver)[0] and "1.3" in titles(receiver)[1]
            await wait_until(lambda: daemon.market is not None and daemon.market.stats().connected)
            await sim.set_price("BTCUSDT", "20000")  # and the stream works after the reconnect
            await receiver.wait_for(lambda m: len(m) >= 3)
            assert "1.1" in titles(receiver)[2]
            assert_alive(daemon, logs)
    down = [e for e in events(logs, "feed_down") if e["feed"] == "market"]
    assert down and not down[0]["fatal"]
    assert daemon.market is not None and daemon.market.stats().reconnects >= 1


@pytest.mark.slow
async def test_market_stall_goes_blind_then_catches_up(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A stream open but silent: the watchdog reconnects, the trader hears BLIND, then 'restored' and the
    crossing that happened during the stall."""
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver, stale_after="2s")) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            await sim.inject_fault({"kind": "stall", "target": "streams", "duration": 3600})
            await sim.set_price("BTCUSDT", "27000")  # crosses 1.5 unseen
            await receiver.wait_for(lambda m: any("BLIND" in t for t in titles(receiver)), within=10)
            assert not any("1.5" in t for t in titles(receiver))  # nothing computed from stale data
            await wait_until(
                lambda: any(e.get("reason", "").startswith("silent") for e in events(logs, "stream_retry")),
                within=10,
                what="the silence watchdog to reconnect",
            )
            await sim.clear_faults()
            await receiver.wait_for(lambda m: any("restored" in t for t in titles(receiver)), within=10)
            await receiver.wait_for(lambda m: any("1.5" in t for t in titles(receiver)), within=10)
            assert_alive(daemon, logs)
    order = titles(receiver)
    assert "no price for BTCUSDT" in next(m["message"] for m in receiver.messages if "BLIND" in m["title"])
    blind = next(i for i, t in enumerate(order) if "BLIND" in t)
    restored = next(i for i, t in enumerate(order) if "restored" in t)
    crossed = next(i for i, t in enumerate(order) if "1.5" in t)
    assert blind < restored < crossed, order


async def test_close_1001_reconnects_at_once_without_blind(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Binance's 24-hour disconnect (1001) is routine: reconnect at once, no BLIND, next crossing alerts."""
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            assert daemon.market is not None
            started = time.monotonic()
            await sim.inject_fault({"kind": "close_1001", "target": "streams"})
            await wait_until(lambda: daemon.market is not None and daemon.market.stats().reconnects >= 1)
            await wait_until(lambda: daemon.market is not None and daemon.market.stats().connected)
            reconnect_took = time.monotonic() - started
            await sim.set_price("BTCUSDT", "27000")
            await receiver.wait_for(lambda m: len(m) >= 1)
            assert "1.5" in titles(receiver)[0]
            assert_alive(daemon, logs)
    assert reconnect_took < 2.0
    assert count(receiver, "BLIND") == 0
    retry = [e for e in events(logs, "stream_retry") if e["stream"] == "market"]
    assert retry and "1001" in retry[0]["reason"]


async def test_malformed_frames_are_skipped_without_reconnect(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A truncated JSON frame on the market stream and on the WebSocket API is logged and skipped; no
    reconnect, no alert, and the next crossing alerts."""
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            assert daemon.market is not None and daemon.userdata is not None
            await wait_until(lambda: sim.subscriptions("demo") == 1, what="user-data subscription")
            await sim.inject_fault({"kind": "malformed_frame", "target": "all"})
            await wait_until(lambda: daemon.market is not None and daemon.market.stats().malformed == 1)
            await wait_until(lambda: bool(events(logs, "userdata_frame_skipped")), what="ws-api skip")
            await sim.set_price("BTCUSDT", "27000")
            await receiver.wait_for(lambda m: len(m) >= 1)
            assert "1.5" in titles(receiver)[0]
            assert daemon.market.stats().reconnects == 0 and daemon.userdata.supervisor.retries == 0
            assert_alive(daemon, logs)
    skipped = events(logs, "market_frame_skipped")
    assert skipped and skipped[0]["reason"] == "invalid JSON"
    assert len(receiver.messages) == 1


async def test_unexpected_frames_are_ignored(tmp_path: Path, sim: Simulator, receiver: Receiver) -> None:
    """Frames of unknown events, wrong types and impossible prices are skipped; prices stay right."""
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            odd = [
                '{"stream":"btcusdt@bookTicker","data":{"e":"somethingNew","s":"BTCUSDT"}}',
                '{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"NaN","a":"NaN"}}',
                '{"stream":"btcusdt@bookTicker","data":{"u":2,"s":"BTCUSDT","b":"-5","a":"1e400"}}',
                '{"stream":"btcusdt@bookTicker","data":{"u":3,"s":"BTCUSDT","b":"","a":"1"}}',
                '{"stream":"btcusdt@bookTicker","data":[1,2,3]}',
                "[1,2]",
            ]
            for sc in sim.engine.streams.connections:
                for text in odd:
                    sc.conn.send_text(text)
            await wait_until(lambda: daemon.market is not None and daemon.market.stats().malformed >= 6)
            assert daemon.status()[0]["margin_level"] == pytest.approx(1.6, rel=1e-3)
            await sim.set_price("BTCUSDT", "23000")
            await receiver.wait_for(lambda m: len(m) >= 2)
            assert daemon.market is not None and daemon.market.stats().reconnects == 0
            assert_alive(daemon, logs)
    assert "1.5" in titles(receiver)[0] and "1.3" in titles(receiver)[1]


async def test_unknown_symbol_blinds_only_its_account(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """A held asset whose symbol Binance refuses to stream (delisted) makes that account BLIND with the
    reason; the other account keeps being watched and alerts."""
    del sim.engine.streams.tapes["LUNAUSDT"]  # still in exchangeInfo and the account, never streamed
    accounts = [
        {"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret"},
        {"name": "luna", "api_key": "luna-key", "api_secret": "luna-secret"},
    ]
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver, accounts=accounts)) as daemon:
            await receiver.wait_for(lambda m: any("BLIND" in t and "luna" in t for t in titles(receiver)))
            await sim.set_price("BTCUSDT", "27000")
            await receiver.wait_for(lambda m: any("1.5" in t and "demo" in t for t in titles(receiver)))
            assert daemon.market is not None and daemon.market.rejected == {"LUNAUSDT"}
            assert not daemon.ready()  # /readyz tells the operator a unit is blind
            assert_alive(daemon, logs)
    blind = next(m for m in receiver.messages if "BLIND" in m["title"])
    assert "LUNAUSDT" in blind["message"] and "delisted" in blind["message"]
    assert not any("demo" in t and "BLIND" in t for t in titles(receiver))
    assert [e["symbol"] for e in events(logs, "market_symbol_rejected")] == ["LUNAUSDT"]


BURST = 20_000


async def test_burst_of_20000_messages_is_conflated_and_loses_no_crossing(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """20,000 market messages at once: the daemon keeps up (conflation), its loop is not starved for long,
    and the crash through 1.5, 1.3 and 1.1 buried in the burst alerts in order."""
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            assert daemon.market is not None and daemon.engine is not None
            before_msgs, before_ticks = daemon.market.stats().messages, daemon.engine.ticks
            started = time.monotonic()
            for i in range(BURST):
                # BTC drifts from 30,000 to 20,000 with a +-50 wiggle (1,000 frames per 500 USDT)
                wiggle = 50 if i % 2 else -50
                sim.engine.set_price("BTCUSDT", Decimal(30_000 - 10_000 * i // BURST + wiggle))
                if i % 1000 == 999:
                    await asyncio.sleep(0.001)  # let the simulator's writers drain (its queue holds 10,000)
            sim.engine.set_price("BTCUSDT", Decimal(20_000))
            await wait_until(
                lambda: daemon.status()[0]["margin_level"] == pytest.approx(20_000 / 18_750, rel=1e-9),
                within=10,
                what="the last price of the burst to be applied",
            )
            caught_up = time.monotonic() - started
            await receiver.wait_for(lambda m: len(m) >= 3, within=10)
            received = daemon.market.stats().messages - before_msgs
            applied = daemon.engine.ticks - before_ticks
            assert_alive(daemon, logs)
            lag = daemon.loop_lag.worst
    order = titles(receiver)
    assert "1.5" in order[0] and "1.3" in order[1] and "1.1" in order[2], order
    assert count(receiver, "resolved") == 0 and len(order) == 3  # no flapping from the wiggle
    assert received >= BURST  # nothing dropped by the simulator (no slow-consumer disconnect)
    assert daemon.market.stats().reconnects == 0
    assert applied < received  # conflated: the engine saw fewer updates than frames arrived
    assert caught_up < 10.0 and lag < 2.0
    print(f"burst: {received} frames, {applied} applied, caught up in {caught_up:.2f} s, lag {lag:.3f} s")


async def test_price_and_user_data_feeds_retry_at_least_every_ten_seconds(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """After an outage the market and WebSocket API connections are tried again within 10 s whatever
    the attempt, so a restored network ends their blindness within seconds (a 30 s cap left a trader
    blind for up to half a minute after the network came back)."""
    assert max(FEED_BACKOFF.delay(n, rand=lambda: 0.0) for n in range(100)) == 10.0
    async with running_daemon(daemon_config(tmp_path, sim, receiver)) as daemon:
        await wait_until(daemon.ready, what="daemon ready")
        assert daemon.market is not None and daemon.userdata is not None
        feeds = [c.supervisor for c in daemon.market.connections]
        feeds += [s.supervisor for s in daemon.userdata.streams]
        assert feeds and all(f._backoff is FEED_BACKOFF for f in feeds)
