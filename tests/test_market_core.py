"""The market stream's sans-I/O core driven directly: frames and times in, prices and requests out.

No socket, no event loop, no private attribute: what ``MarketProtocol`` / ``MarketCore`` promise
through their public methods (``monitor/exchange/market_core.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from monitor.exchange.market_core import MAX_STREAMS, MarketCore, MarketProtocol


def ticker(symbol: str, bid: str, ask: str, sent: int | None = None) -> bytes:
    data: dict[str, Any] = {"s": symbol, "b": bid, "a": ask}
    if sent is not None:
        data["E"] = sent
    return orjson.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data})


def connected(symbols: list[str], **kwargs: Any) -> tuple[MarketProtocol, str]:
    """A protocol wanting ``symbols`` and the path of its first connection."""
    protocol = MarketProtocol(**kwargs)
    protocol.set_symbols(symbols)
    return protocol, protocol.begin_connection()


Refuse = Callable[[dict[str, Any]], str | None]


def serve(
    protocol: MarketProtocol, refuse: Refuse = lambda _: None, start: float = 0.0
) -> list[dict[str, Any]]:
    """Play the server: take every request the protocol owes, at the times it asks, and answer each
    (an error with ``refuse``'s message when it returns one). The requests, in order."""
    sent: list[dict[str, Any]] = []
    now = start
    while (due := protocol.next_send_at()) is not None:
        now = max(now, due)
        frames = protocol.data_to_send(now)
        assert len(frames) == 1, "one request per control interval"
        assert protocol.data_to_send(now) == [], "a second request in the same interval"
        request = orjson.loads(frames[0])
        sent.append(request)
        message = refuse(request)
        reply = {"result": None, "id": request["id"]} if message is None else {
            "error": {"code": 2, "msg": message}, "id": request["id"]}  # fmt: skip
        protocol.receive(orjson.dumps(reply), now)
        assert len(sent) < 1000, "the protocol never stops asking"
    return sent


def test_latest_price_per_symbol_wins() -> None:
    """A burst leaves one price per symbol, the newest; taking them empties the batch."""
    protocol, _ = connected(["BTCUSDT", "ETHUSDT"])
    for i in range(1, 1001):
        protocol.receive(ticker("BTCUSDT" if i % 2 else "ETHUSDT", str(i), str(i + 2)), now=float(i))
    assert protocol.prices_received() == {"BTCUSDT": 1000.0, "ETHUSDT": 1001.0}
    assert protocol.prices_received() == {}
    assert protocol.messages == 1000 and protocol.last_message_at == 1000.0


def test_every_payload_kind_and_the_raw_and_array_shapes() -> None:
    """bookTicker mid, aggTrade/trade ``p``, miniTicker ``c``, wrapped, bare or in an array."""
    protocol, _ = connected(["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"])
    protocol.receive(ticker("BTCUSDT", "100", "102"), 0.0)
    protocol.receive(orjson.dumps({"data": {"e": "aggTrade", "s": "ETHUSDT", "p": "5.5"}}), 0.0)
    protocol.receive(orjson.dumps({"e": "trade", "s": "XRPUSDT", "p": "0.5"}), 0.0)
    protocol.receive(orjson.dumps({"e": "24hrMiniTicker", "s": "BNBUSDT", "c": "7.25"}), 0.0)
    protocol.receive(orjson.dumps({"data": [{"e": "24hrTicker", "s": "SOLUSDT", "c": "3"}]}), 0.0)
    assert protocol.prices_received() == {
        "BTCUSDT": 101.0, "ETHUSDT": 5.5, "XRPUSDT": 0.5, "BNBUSDT": 7.25, "SOLUSDT": 3.0}  # fmt: skip


def test_unwanted_symbols_are_ignored_not_counted_malformed() -> None:
    """A frame in flight after UNSUBSCRIBE (or for a symbol never asked for) is dropped quietly."""
    protocol, _ = connected(["BTCUSDT"])
    with capture_logs() as logs:
        protocol.receive(ticker("ETHUSDT", "1", "2"), 0.0)
    assert protocol.prices_received() == {} and protocol.malformed == 0 and logs == []


def test_malformed_frames_are_counted_and_logged_once_a_second() -> None:
    """Each malformed frame counts; the log line comes at most once a second, with the count skipped."""
    protocol, _ = connected(["BTCUSDT"])
    with capture_logs() as logs:
        protocol.receive("not json", 0.0)
        protocol.receive("[1, 2]", 0.5)
        protocol.receive(b'{"data": 5}', 0.9)
        protocol.receive(ticker("BTCUSDT", "1e3", "2"), 1.5)
        protocol.receive(orjson.dumps({"data": {"e": "depthUpdate", "s": "BTCUSDT"}}), 1.6)
        protocol.receive(ticker("BTCUSDT", "10", "12"), 1.7)
    assert protocol.malformed == 5 and protocol.prices_received() == {"BTCUSDT": 11.0}
    assert [(e["reason"], e["suppressed"]) for e in logs] == [("invalid JSON", 0), ("price not a number", 2)]


def test_sent_time_and_ages_use_the_times_handed_in() -> None:
    """ages() counts from each symbol's last frame (or the protocol's start); sent_at keeps ``E``."""
    protocol, _ = connected(["BTCUSDT", "ETHUSDT"], now=100.0)
    protocol.receive(ticker("BTCUSDT", "1", "1", sent=1_700_000_000_123), now=104.0)
    assert protocol.ages(107.5) == {"BTCUSDT": 3.5, "ETHUSDT": 7.5}
    assert protocol.sent_at("btcusdt") == 1_700_000_000_123 and protocol.sent_at("ETHUSDT") is None


def test_server_shutdown_asks_for_a_reconnect() -> None:
    """serverShutdown sets ``closing`` (receive says so); the next connection starts clear."""
    protocol, _ = connected(["BTCUSDT"])
    assert protocol.receive(orjson.dumps({"data": {"e": "serverShutdown", "E": 1}}), 0.0) is True
    assert protocol.closing == "server announced shutdown (serverShutdown)"
    protocol.begin_connection()
    assert protocol.closing is None


def test_first_streams_go_in_the_path_the_rest_by_paced_subscribe() -> None:
    """200 streams in the path; 250 more in SUBSCRIBE requests of 200 and 50, one per interval."""
    symbols = [f"S{i:03d}USDT" for i in range(450)]
    protocol, path = connected(symbols, control_interval=0.25)
    assert path == "/stream?streams=" + "/".join(f"{s.lower()}@bookTicker" for s in symbols[:200])
    assert protocol.next_send_at() == float("-inf")  # owed at once
    first = protocol.data_to_send(10.0)
    assert protocol.data_to_send(10.2) == [] and protocol.next_send_at() == 10.25
    second = protocol.data_to_send(10.25)
    assert protocol.next_send_at() is None and protocol.subscribed == frozenset(symbols)
    params = [orjson.loads(f)["params"] for f in first + second]
    assert params == [
        [f"{s.lower()}@bookTicker" for s in chunk] for chunk in (symbols[200:400], symbols[400:])
    ]


def test_unsubscribe_goes_before_subscribe() -> None:
    """Changing the set sends the UNSUBSCRIBE first, then the SUBSCRIBE; only what changed."""
    protocol, _ = connected(["AUSDT", "BUSDT"])
    protocol.set_symbols(["busdt", "CUSDT"])
    sent = serve(protocol)
    assert [(r["method"], r["params"]) for r in sent] == [
        ("UNSUBSCRIBE", ["ausdt@bookTicker"]), ("SUBSCRIBE", ["cusdt@bookTicker"])]  # fmt: skip
    assert protocol.set_symbols(["BUSDT", "CUSDT"]) is False and protocol.next_send_at() is None


def test_acks_are_tracked_by_id() -> None:
    """Each request awaits its reply by id; an error for an unknown id or an UNSUBSCRIBE is only logged."""
    protocol, _ = connected(["AUSDT"], control_interval=0.0)
    protocol.set_symbols(["BUSDT"])
    requests = [orjson.loads(protocol.data_to_send(float(t))[0]) for t in range(2)]
    assert [r["method"] for r in requests] == ["UNSUBSCRIBE", "SUBSCRIBE"] and protocol.awaiting_reply == 2
    protocol.receive(orjson.dumps({"result": None, "id": requests[1]["id"]}), 2.0)
    assert protocol.awaiting_reply == 1
    with capture_logs() as logs:
        assert (
            protocol.receive(orjson.dumps({"error": {"msg": "busy"}, "id": requests[0]["id"]}), 3.0) is False
        )
        assert protocol.receive(orjson.dumps({"error": "what?", "id": 99}), 3.0) is False
    assert protocol.awaiting_reply == 0 and protocol.next_send_at() is None
    assert [e["event"] for e in logs] == ["market_request_refused"] * 2
    assert [(e["request"], e["reason"]) for e in logs] == [("UNSUBSCRIBE", "busy"), (None, "what?")]


def test_refused_subscribe_is_halved_until_the_culprit_stands_alone() -> None:
    """A SUBSCRIBE refused without naming the stream is retried in halves; only the bad symbol is
    rejected, every other one ends subscribed."""
    symbols = [f"BAD{i}USDT" for i in range(12)]
    protocol, _ = connected(["BTCUSDT"])
    protocol.set_symbols(["BTCUSDT", *symbols])
    with capture_logs() as logs:
        sent = serve(protocol, lambda r: "Invalid request" if "bad7usdt@bookTicker" in r["params"] else None)
    assert protocol.rejected == {"BAD7USDT"}
    assert protocol.subscribed == {"BTCUSDT", *symbols} - {"BAD7USDT"}
    assert [len(r["params"]) for r in sent][:3] == [12, 6, 6]
    assert [e["symbol"] for e in logs if e["event"] == "market_symbol_rejected"] == ["BAD7USDT"]


def test_refused_subscribe_naming_the_stream_rejects_it_at_once() -> None:
    """An error that names the invalid stream rejects that symbol without halving the chunk."""
    protocol, _ = connected(["BTCUSDT"])
    protocol.set_symbols(["BTCUSDT", "NOPEUSDT", "ETHUSDT", "BNBUSDT"])
    sent = serve(
        protocol,
        lambda r: "Invalid stream nopeusdt@bookTicker" if "nopeusdt@bookTicker" in r["params"] else None,
    )
    assert protocol.rejected == {"NOPEUSDT"} and [len(r["params"]) for r in sent] == [3, 2]
    protocol.set_symbols(["BTCUSDT", "ETHUSDT"])  # no longer wanted: no longer rejected
    assert protocol.rejected == frozenset()


def test_a_refused_path_switches_to_subscribing_by_message() -> None:
    """HTTP 400 on the path (an unknown symbol in it): the next connection opens /ws and subscribes
    everything by message; a rate limit (429) does not switch."""
    protocol, _ = connected(["BTCUSDT", "ETHUSDT"])
    protocol.connection_refused(429)
    assert protocol.begin_connection().startswith("/stream?streams=")
    with capture_logs() as logs:
        protocol.connection_refused(400)
    assert protocol.begin_connection() == "/ws" and protocol.subscribed == frozenset()
    assert [e["event"] for e in logs] == ["market_url_refused"]
    assert [r["params"] for r in serve(protocol)] == [["btcusdt@bookTicker", "ethusdt@bookTicker"]]


def test_a_new_connection_forgets_the_last_ones_refusals_and_replies() -> None:
    """begin_connection() starts over: rejected symbols are tried again, unanswered requests forgotten."""
    protocol, _ = connected(["BTCUSDT"])
    protocol.set_symbols(["BTCUSDT", "NOPEUSDT"])
    serve(protocol, lambda r: "Invalid request")
    assert protocol.rejected == {"NOPEUSDT"}
    protocol.set_symbols(["BTCUSDT", "NOPEUSDT", "ETHUSDT"])
    protocol.data_to_send(100.0)
    assert protocol.awaiting_reply == 1
    assert (
        protocol.begin_connection()
        == "/stream?streams=btcusdt@bookTicker/ethusdt@bookTicker/nopeusdt@bookTicker"
    )
    assert protocol.rejected == frozenset() and protocol.awaiting_reply == 0


def test_more_than_max_symbols_on_one_protocol_are_cut_and_logged() -> None:
    """One connection never asks for more than Binance's 1,024 streams."""
    protocol = MarketProtocol()
    with capture_logs() as logs:
        protocol.set_symbols(f"S{i:04d}USDT" for i in range(MAX_STREAMS + 5))
    assert len(protocol.symbols) == MAX_STREAMS
    assert [e["event"] for e in logs] == ["market_too_many_symbols"]


def test_a_second_connection_past_1024_streams() -> None:
    """1,100 symbols: 1,024 + 76 on two connections; shrinking keeps symbols where they are, growing
    fills the free room before adding a connection."""
    symbols = [f"C{i:04d}USDT" for i in range(1100)]
    core = MarketCore()
    added = core.set_symbols(symbols, now=0.0)
    assert added == core.connections and [len(p.symbols) for p in added] == [1024, 76]
    assert core.symbols == frozenset(symbols)
    assert core.set_symbols(symbols[:1000], now=1.0) == []
    assert [len(p.symbols) for p in core.connections] == [1000, 0]
    assert core.set_symbols([*symbols, "BTCUSDT"], now=2.0) == []
    assert [len(p.symbols) for p in core.connections] == [1024, 77]
    assert "BTCUSDT" in core.connections[0].symbols  # the first with room: 24 free
    third = core.set_symbols([*symbols, *(f"D{i:04d}USDT" for i in range(1000))], now=3.0)
    assert [len(p.symbols) for p in core.connections] == [1024, 1024, 52]
    assert third == core.connections[2:]


def test_the_core_sums_ages_rejections_and_sent_times_over_connections() -> None:
    """ages, rejected and sent_at answer for every connection's symbols."""
    core = MarketCore(max_streams=2)
    a, b = core.set_symbols(["AUSDT", "BUSDT", "CUSDT"], now=0.0)
    a.begin_connection()
    b.begin_connection()
    b.receive(ticker("CUSDT", "1", "1", sent=7), now=4.0)
    b.set_symbols(["CUSDT", "DUSDT"])
    serve(b, lambda r: "Invalid request")
    assert core.rejected == {"DUSDT"} and core.sent_at("cusdt") == 7 and core.sent_at("AUSDT") is None
    assert core.ages(10.0) == {"AUSDT": 10.0, "BUSDT": 10.0, "CUSDT": 6.0, "DUSDT": 10.0}


@pytest.mark.parametrize("max_streams", [0, MAX_STREAMS + 1])
def test_max_streams_is_checked(max_streams: int) -> None:
    """A connection size outside 1..1,024 is refused at construction."""
    with pytest.raises(ValueError, match="max_streams"):
        MarketCore(max_streams=max_streams)
