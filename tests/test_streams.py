"""MarketStream against a real websockets server on 127.0.0.1: prices, conflation, faults, resubscribe."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from exchange_fakes import FakeWs, Handler, book_ticker, until
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from monitor.exchange.events import StreamState
from monitor.exchange.streams import MarketStream
from monitor.exchange.supervisor import Backoff
from monitor.sim import Simulator

FAST = Backoff(initial=0.01, maximum=0.05, reset_after=1.0)


async def idle(ws: ServerConnection) -> None:
    """Keep the connection open until the client goes away."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


class Feed:
    """A MarketStream running in the background, with everything it delivered."""

    def __init__(self, url: str, symbols: list[str], **kwargs: object) -> None:
        self.batches: list[dict[str, float]] = []
        self.states: list[StreamState] = []
        self.stream = MarketStream(
            url,
            symbols,
            self.batches.append,
            backoff=FAST,
            on_state=self.states.append,
            **kwargs,  # type: ignore[arg-type]
        )
        self.task: asyncio.Task[None] | None = None

    def latest(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for batch in self.batches:
            merged.update(batch)
        return merged

    async def __aenter__(self) -> Feed:
        self.task = asyncio.create_task(self.stream.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def server() -> AsyncIterator[FakeWs]:
    async with FakeWs(idle).running() as fake:
        yield fake


def sender(*frames: str | bytes) -> Handler:
    """A handler that sends ``frames`` on connect, then idles."""

    async def handler(ws: ServerConnection) -> None:
        for i, frame in enumerate(frames, 1):
            await ws.send(frame)
            if i % 500 == 0:
                await asyncio.sleep(0)  # the fake server shares the loop: let the client run too
        await idle(ws)

    return handler


async def test_prices_from_every_payload_kind(server: FakeWs) -> None:
    """bookTicker gives the mid, aggTrade/trade `p`, miniTicker `c` (also in an array), keyed by symbol."""
    frames = [
        book_ticker("BTCUSDT", 100.0, 102.0),
        orjson.dumps(
            {"stream": "ethusdt@aggTrade", "data": {"e": "aggTrade", "s": "ETHUSDT", "p": "5.5"}}
        ).decode(),
        orjson.dumps({"e": "24hrMiniTicker", "s": "BNBUSDT", "c": "7.25"}).decode(),
        orjson.dumps(
            {"stream": "!miniTicker@arr", "data": [{"e": "24hrMiniTicker", "s": "SOLUSDT", "c": "3"}]}
        ).decode(),
    ]
    server.handler = sender(*frames)
    async with Feed(server.url, ["btcusdt", "ETHUSDT", "BNBUSDT", "SOLUSDT"]) as feed:
        await until(lambda: len(feed.latest()) == 4)
    assert feed.latest() == {"BTCUSDT": 101.0, "ETHUSDT": 5.5, "BNBUSDT": 7.25, "SOLUSDT": 3.0}
    assert server.paths[0] == (
        "/stream?streams=bnbusdt@bookTicker/btcusdt@bookTicker/ethusdt@bookTicker/solusdt@bookTicker"
    )


async def test_burst_is_conflated_and_never_stale(server: FakeWs) -> None:
    """20,000 ticks in a burst reach on_prices in a few batches, in order, ending at the newest price."""
    frames = [book_ticker("BTCUSDT" if i % 2 else "ETHUSDT", i, i + 2, i) for i in range(1, 20_001)]
    server.handler = sender(*frames)
    async with Feed(server.url, ["BTCUSDT", "ETHUSDT"]) as feed:
        await until(lambda: feed.stream.stats().messages == 20_000, within=20)
        await until(lambda: feed.latest() == {"BTCUSDT": 20_000.0, "ETHUSDT": 20_001.0})
    assert len(feed.batches) < 2_000, "a burst must not be delivered tick by tick"
    btc = [b["BTCUSDT"] for b in feed.batches if "BTCUSDT" in b]
    assert btc == sorted(btc), "a stale price was delivered after a newer one"


class BufferedConnection:
    """A connection with a whole burst already buffered: reading it never has to wait."""

    close_code = 1000
    close_reason = "done"

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames

    async def __aenter__(self) -> BufferedConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, message: str) -> None:
        return None

    async def _frames(self) -> AsyncIterator[str]:
        for frame in self.frames:
            yield frame
        await asyncio.Event().wait()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._frames()


async def test_buffered_burst_does_not_starve_the_loop() -> None:
    """Reading 20,000 already-buffered frames gives other tasks turns mid-burst (issue 6: loop starved)."""
    frames = [book_ticker("BTCUSDT", i, i, i) for i in range(1, 20_001)]
    seen: list[int] = []
    stream = MarketStream(
        "ws://buffered",
        ["BTCUSDT"],
        lambda prices: None,
        connect=lambda url: BufferedConnection(frames),  # type: ignore[arg-type, return-value]
    )

    async def other_task() -> None:
        while True:
            await asyncio.sleep(0)
            seen.append(stream.stats().messages)

    other = asyncio.create_task(other_task())
    task = asyncio.create_task(stream.run())
    await until(lambda: stream.stats().messages == 20_000)
    task.cancel()
    other.cancel()
    await asyncio.gather(task, other, return_exceptions=True)
    assert len({n for n in seen if 0 < n < 20_000}) >= 20, "no other task ran during the burst"


async def test_the_work_a_batch_leaves_is_done_a_slice_per_loop_turn() -> None:
    """After each batch ``more`` is called until it says done, one call per event-loop turn (other
    tasks run between two), and the next batch is taken only then (issue 12: a crash's evaluations
    held the loop for the whole batch)."""
    frames = [book_ticker("BTCUSDT", i, i, i) for i in range(1, 2_001)]
    log: list[str] = []
    left = [0]

    def on_prices(prices: dict[str, float]) -> None:
        assert left[0] == 0, "a batch was taken before the previous one's work was done"
        log.append("batch")
        left[0] = 3

    def more() -> bool:
        log.append("slice")
        left[0] -= 1
        return left[0] > 0

    stream = MarketStream(
        "ws://buffered",
        ["BTCUSDT"],
        on_prices,
        more=more,
        connect=lambda url: BufferedConnection(frames),  # type: ignore[arg-type, return-value]
    )

    async def other_task() -> None:
        while True:
            await asyncio.sleep(0)
            log.append("other")

    other = asyncio.create_task(other_task())
    task = asyncio.create_task(stream.run())
    await until(lambda: stream.stats().messages == 2_000 and left[0] == 0)
    task.cancel()
    other.cancel()
    await asyncio.gather(task, other, return_exceptions=True)
    work = [entry for entry in log if entry != "other"]
    assert work.count("batch") >= 2 and work == ["batch", "slice", "slice", "slice"] * work.count("batch")
    for i, entry in enumerate(log[:-1]):
        if entry == "slice" and log[i + 1] == "slice":
            raise AssertionError("two slices in one loop turn")


async def test_normal_close_1001_reconnects(server: FakeWs) -> None:
    """A 1001 close (Binance's 24-hour disconnect) ends `async for` quietly and must reconnect."""

    async def close_first(ws: ServerConnection) -> None:
        await ws.send(book_ticker("BTCUSDT", 1, 3))
        if len(server.paths) == 1:
            await ws.close(1001, "going away")
            return
        await ws.send(book_ticker("BTCUSDT", 5, 7))
        await idle(ws)

    server.handler = close_first
    with capture_logs() as logs:
        async with Feed(server.url, ["BTCUSDT"]) as feed:
            await until(lambda: feed.latest().get("BTCUSDT") == 6.0)
    assert len(server.paths) == 2
    retry = next(e for e in logs if e["event"] == "stream_retry")
    assert "1001" in retry["reason"]
    assert [s.up for s in feed.states[:3]] == [True, False, True]


async def test_dropped_connection_reconnects(server: FakeWs) -> None:
    """A connection cut without a close frame is retried and prices resume."""

    async def drop_first(ws: ServerConnection) -> None:
        await ws.send(book_ticker("BTCUSDT", 1, 3))
        if len(server.paths) == 1:
            await asyncio.sleep(0.05)
            ws.transport.abort()
            return
        await ws.send(book_ticker("BTCUSDT", 9, 11))
        await idle(ws)

    server.handler = drop_first
    async with Feed(server.url, ["BTCUSDT"]) as feed:
        await until(lambda: feed.latest().get("BTCUSDT") == 10.0)
    assert len(server.paths) == 2 and feed.stream.stats().reconnects == 1


async def test_stalled_stream_is_cut_by_the_watchdog(server: FakeWs) -> None:
    """A stream that stays open but sends nothing is reconnected after `silence` seconds."""

    async def stall_first(ws: ServerConnection) -> None:
        await ws.send(book_ticker("BTCUSDT", 1, 3))
        if len(server.paths) == 1:
            await ws.wait_closed()  # open and silent until the client gives up
            return
        await ws.send(book_ticker("BTCUSDT", 2, 4))
        await idle(ws)

    server.handler = stall_first
    with capture_logs() as logs:
        async with Feed(server.url, ["BTCUSDT"], silence=0.2) as feed:
            started = time.monotonic()
            await until(lambda: feed.latest().get("BTCUSDT") == 3.0)
            elapsed = time.monotonic() - started
    assert 0.15 < elapsed < 2.0
    assert any(e["event"] == "stream_retry" and e["reason"] == "silent for 0.2 s" for e in logs)


async def test_server_shutdown_notice_reconnects(server: FakeWs) -> None:
    """A serverShutdown event makes the stream reconnect before the server closes it."""
    shutdown = orjson.dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 1}}).decode()
    server.handler = sender(book_ticker("BTCUSDT", 1, 3), shutdown)
    async with Feed(server.url, ["BTCUSDT"]) as feed:
        await until(lambda: len(server.paths) >= 2)
    assert feed.stream.stats().reconnects >= 1


async def test_malformed_frames_are_skipped_and_logged_rate_limited(server: FakeWs) -> None:
    """Garbage, wrong shapes and bad prices are skipped with rate-limited log lines; good frames pass."""
    bad: list[str | bytes] = [
        "not json",
        "[1, 2]",
        '{"stream": "x", "data": 5}',
        orjson.dumps({"data": {"s": "BTCUSDT", "b": "NaN", "a": "1"}}).decode(),
        orjson.dumps({"data": {"s": "BTCUSDT", "b": "-5", "a": "-3"}}).decode(),
        orjson.dumps({"data": {"s": "BTCUSDT", "b": "inf", "a": "inf"}}).decode(),
        orjson.dumps({"data": {"s": "BTCUSDT", "b": [], "a": "1"}}).decode(),
        orjson.dumps({"data": {"s": 42, "b": "1", "a": "2"}}).decode(),
        orjson.dumps({"data": {"e": "aggTrade", "s": "BTCUSDT"}}).decode(),
        orjson.dumps({"data": {"e": "somethingNew", "s": "BTCUSDT"}}).decode(),
        b"\xff\xfe binary junk",
    ]
    server.handler = sender(*bad, book_ticker("BTCUSDT", 10, 12))
    with capture_logs() as logs:
        async with Feed(server.url, ["BTCUSDT"]) as feed:
            await until(lambda: feed.latest().get("BTCUSDT") == 11.0)
    assert feed.batches == [{"BTCUSDT": 11.0}]
    assert feed.stream.stats().malformed == len(bad)
    skipped = [e for e in logs if e["event"] == "market_frame_skipped"]
    assert len(skipped) == 1 and skipped[0]["reason"] == "invalid JSON"
    assert len(server.paths) == 1, "a malformed frame must not cost a reconnect"


async def test_set_symbols_subscribes_rate_limited(server: FakeWs) -> None:
    """New symbols go out as SUBSCRIBE chunks at most `control_rate`/s; removed ones as UNSUBSCRIBE."""
    received: list[tuple[float, dict[str, object]]] = []

    async def record(ws: ServerConnection) -> None:
        async for raw in ws:
            request = orjson.loads(raw)
            received.append((time.monotonic(), request))
            await ws.send(orjson.dumps({"result": None, "id": request["id"]}).decode())
            if request["method"] == "SUBSCRIBE":
                await ws.send(book_ticker("NEW0USDT", 1, 1))
                await ws.send(book_ticker("BTCUSDT", 50, 50))  # in flight after UNSUBSCRIBE: ignored

    server.handler = record
    async with Feed(server.url, ["BTCUSDT"], control_rate=10.0) as feed:
        await until(lambda: feed.stream.supervisor.up)
        feed.stream.set_symbols([f"NEW{i}USDT" for i in range(450)])
        await until(lambda: len(received) == 4)
        await until(lambda: "NEW0USDT" in feed.latest())
    methods = [(r["method"], len(r["params"])) for _, r in received]  # type: ignore[arg-type]
    assert methods == [("UNSUBSCRIBE", 1), ("SUBSCRIBE", 200), ("SUBSCRIBE", 200), ("SUBSCRIBE", 50)]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(received)]
    assert min(gaps) >= 0.09, "more than control_rate messages per second"
    assert "BTCUSDT" not in feed.latest()
    assert set(feed.stream.ages()) == {f"NEW{i}USDT" for i in range(450)}


async def test_refused_symbol_is_isolated_by_halving(server: FakeWs) -> None:
    """A SUBSCRIBE refused without naming the culprit is retried in halves; only the bad symbol is dropped."""
    subscribed: list[str] = []

    async def refuse_bad(ws: ServerConnection) -> None:
        async for raw in ws:
            request = orjson.loads(raw)
            if "bad7usdt@bookTicker" in request["params"]:
                reply = {"error": {"code": 2, "msg": "Invalid request"}, "id": request["id"]}
            else:
                if request["method"] == "SUBSCRIBE":
                    subscribed.extend(request["params"])
                reply = {"result": None, "id": request["id"]}
            await ws.send(orjson.dumps(reply).decode())

    server.handler = refuse_bad
    symbols = [f"BAD{i}USDT" for i in range(12)]
    async with Feed(server.url, ["BTCUSDT"], control_rate=100.0) as feed:
        await until(lambda: feed.stream.supervisor.up)
        with capture_logs() as logs:
            feed.stream.set_symbols(symbols)
            await until(lambda: bool(feed.stream.rejected))
            await until(lambda: len(subscribed) == 11)
    assert feed.stream.rejected == {"BAD7USDT"}
    assert sorted(subscribed) == sorted(f"{s.lower()}@bookTicker" for s in symbols if s != "BAD7USDT")
    assert [e["symbol"] for e in logs if e["event"] == "market_symbol_rejected"] == ["BAD7USDT"]
    assert len(server.paths) == 1, "a refused symbol must not cost a reconnect"


async def test_ages_and_sent_time(server: FakeWs) -> None:
    """ages() counts from each symbol's last price (or the start); sent_at() keeps the frame's `E`."""
    frame = orjson.dumps(
        {"data": {"e": "aggTrade", "E": 1_700_000_000_123, "s": "BTCUSDT", "p": "1"}}
    ).decode()
    server.handler = sender(frame)
    now = [100.0]
    async with Feed(server.url, ["BTCUSDT", "ETHUSDT"], clock=lambda: now[0]) as feed:
        await until(lambda: "BTCUSDT" in feed.latest())
        now[0] = 107.5
        assert feed.stream.ages() == {"BTCUSDT": 7.5, "ETHUSDT": 7.5}
        assert feed.stream.sent_at("btcusdt") == 1_700_000_000_123


async def test_failing_consumer_does_not_stop_the_feed(server: FakeWs) -> None:
    """An exception in on_prices is logged and later prices are still delivered."""
    calls: list[dict[str, float]] = []

    def on_prices(prices: dict[str, float]) -> None:
        calls.append(prices)
        if len(calls) == 1:
            raise RuntimeError("consumer bug")

    async def two(ws: ServerConnection) -> None:
        await ws.send(book_ticker("BTCUSDT", 1, 1))
        await asyncio.sleep(0.05)
        await ws.send(book_ticker("BTCUSDT", 2, 2))
        await idle(ws)

    server.handler = two
    stream = MarketStream(server.url, ["BTCUSDT"], on_prices, backoff=FAST)
    with capture_logs() as logs:
        task = asyncio.create_task(stream.run())
        await until(lambda: len(calls) == 2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls == [{"BTCUSDT": 1.0}, {"BTCUSDT": 2.0}]
    assert any(e["event"] == "market_on_prices_failed" for e in logs)


async def test_unreachable_server_is_retried_until_it_comes_up(refused_socket: socket.socket) -> None:
    """Connection refused is retried without giving up; once a server listens, prices flow.

    The port stays bound to this test (``refused_socket``: bound, not listening) until the server
    listens on that very socket: a port freed meanwhile could be taken by another test's server in a
    parallel worker, whose prices the stream would then receive."""
    from websockets.asyncio.server import serve

    url = f"ws://127.0.0.1:{refused_socket.getsockname()[1]}"
    batches: list[dict[str, float]] = []
    stream = MarketStream(url, ["BTCUSDT"], batches.append, backoff=FAST)
    task = asyncio.create_task(stream.run())
    await until(lambda: stream.stats().reconnects >= 5)
    assert not batches and not stream.supervisor.up

    async with serve(sender(book_ticker("BTCUSDT", 4, 4)), sock=refused_socket):
        await until(lambda: bool(batches), within=5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert batches[0] == {"BTCUSDT": 4.0}


# -- against the simulator ---------------------------------------------------------------------


async def test_simulator_prices_follow_set_price(sim: Simulator) -> None:
    """Prices set on the simulator reach on_prices as bookTicker mids over the real combined stream."""
    async with Feed(sim.stream_url, ["BTCUSDT", "ETHUSDT"]) as feed:
        await until(lambda: feed.stream.supervisor.up)
        await sim.set_price("BTCUSDT", "25000")
        await until(lambda: abs(feed.latest().get("BTCUSDT", 0) - 25000) < 5)
        await sim.set_price("ETHUSDT", "1500")
        await until(lambda: abs(feed.latest().get("ETHUSDT", 0) - 1500) < 1)


@pytest.mark.parametrize("kind", ["drop", "close_1001"])
async def test_simulator_drop_and_1001_close_are_survived(sim: Simulator, kind: str) -> None:
    """After a dropped or 1001-closed market stream the feed reconnects and new prices arrive."""
    async with Feed(sim.stream_url, ["BTCUSDT"]) as feed:
        await until(lambda: feed.stream.supervisor.up)
        await sim.inject_fault({"kind": kind, "target": "streams"})
        await until(lambda: feed.stream.stats().reconnects == 1 and feed.stream.supervisor.up)
        await sim.set_price("BTCUSDT", "21000")
        await until(lambda: abs(feed.latest().get("BTCUSDT", 0) - 21000) < 5)


async def test_simulator_stall_is_cut_and_symbol_ages_grow(sim: Simulator) -> None:
    """A stalled stream is replaced after `silence`; a one-symbol stall shows in that symbol's age only."""
    async with Feed(sim.stream_url, ["BTCUSDT", "ETHUSDT"], silence=0.3) as feed:
        await until(lambda: feed.stream.supervisor.up)
        await sim.inject_fault({"kind": "stall", "target": "streams", "symbol": "ETHUSDT", "duration": 1000})
        for price in range(20000, 20010):
            await sim.set_price("BTCUSDT", str(price))
            await sim.set_price("ETHUSDT", str(price // 10))
            await asyncio.sleep(0.05)
        ages = feed.stream.ages()
        assert ages["ETHUSDT"] > 0.4 > ages["BTCUSDT"]
        await sim.clear_faults()
        await sim.inject_fault({"kind": "stall", "target": "streams", "duration": 1000})
        await until(lambda: feed.stream.stats().reconnects >= 1)
        await sim.clear_faults()
        await until(lambda: feed.stream.supervisor.up)
        await sim.set_price("ETHUSDT", "1234")
        await until(lambda: abs(feed.latest().get("ETHUSDT", 0) - 1234) < 1)


async def test_simulator_malformed_frame_is_skipped(sim: Simulator) -> None:
    """The simulator's malformed frame is counted and skipped without a reconnect."""
    async with Feed(sim.stream_url, ["BTCUSDT"]) as feed:
        await until(lambda: feed.stream.supervisor.up)
        await sim.inject_fault({"kind": "malformed_frame", "target": "streams"})
        await sim.set_price("BTCUSDT", "22000")
        await until(lambda: abs(feed.latest().get("BTCUSDT", 0) - 22000) < 5)
    assert feed.stream.stats().malformed == 1 and feed.stream.stats().reconnects == 0


async def test_simulator_runtime_subscribe(sim: Simulator) -> None:
    """A symbol added at runtime is subscribed on the live connection (no reconnect) and priced."""
    async with Feed(sim.stream_url, ["BTCUSDT"]) as feed:
        await until(lambda: feed.stream.supervisor.up)
        feed.stream.set_symbols(["BTCUSDT", "ETHUSDT"])
        await asyncio.sleep(0.1)
        await sim.set_price("ETHUSDT", "1800")
        await until(lambda: abs(feed.latest().get("ETHUSDT", 0) - 1800) < 1)
    assert feed.stream.stats().reconnects == 0


async def test_simulator_unknown_symbol_is_rejected_others_stream(sim: Simulator) -> None:
    """The simulator refuses a URL naming an unknown symbol; the feed subscribes by message and drops it."""
    async with Feed(sim.stream_url, ["BTCUSDT", "NOPEUSDT", "ETHUSDT"]) as feed:
        await until(lambda: feed.stream.rejected == {"NOPEUSDT"})
        for _ in range(100):  # until the re-sent SUBSCRIBE (rate-limited) has taken effect
            await sim.set_price("ETHUSDT", "1700")
            await sim.set_price("BTCUSDT", "26000")
            await asyncio.sleep(0.02)
            if len(feed.latest()) == 2:
                break
        assert abs(feed.latest()["ETHUSDT"] - 1700) < 1 and abs(feed.latest()["BTCUSDT"] - 26000) < 5
        assert feed.stream.ages()["NOPEUSDT"] > feed.stream.ages()["BTCUSDT"]
