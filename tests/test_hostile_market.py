"""Hostile market frames into ``MarketProtocol.receive``: never a crash, never a half-parsed price.

An oracle written independently of the stream's code says what each frame must yield: a price only
when every price field is a plain positive decimal string (as Binance writes them) and the symbol is
one we watch; otherwise the pending prices stay exactly as they were and one warning line says why.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from monitor.exchange.market_core import MarketProtocol

WATCHED = ("BTCUSDT", "ETHUSDT")
PLAIN = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
HOSTILE = ["1e5", "1E-3", "NaN", "nan", "inf", "-Infinity", "", " ", "-1", "-0.5", "0", "0.000",
           "1_000", " 5", "5 ", "+5", "0x10", "١٢", "1" * 30, "1." , ".5", "1,5", "3.4.5"]  # fmt: skip
numbers = (
    st.sampled_from(HOSTILE)
    | st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False).map(lambda d: f"{d:f}")
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
    | st.lists(st.integers(), max_size=2)
)
symbols = st.sampled_from([*WATCHED, "XRPUSDT", "btcusdt", "", 42, None])
kinds = st.sampled_from([None, "bookTicker", "aggTrade", "trade", "24hrMiniTicker", "24hrTicker", "depth", 7])


def new_stream(before: float | None = None) -> MarketProtocol:
    """A protocol watching ``WATCHED``, with ETHUSDT's price ``before`` waiting to be taken if given."""
    stream = MarketProtocol()
    stream.set_symbols(WATCHED)
    if before is not None:
        stream.receive(orjson.dumps({"s": "ETHUSDT", "b": repr(before), "a": repr(before)}), now=0.0)
    return stream


def oracle(payload: dict[str, Any]) -> float | None:
    """The price a payload must yield, or None when it must be rejected or ignored."""

    def plain(value: Any) -> Decimal | None:
        return Decimal(value) if type(value) is str and PLAIN.fullmatch(value) else None

    kind = payload.get("e")
    if kind is None or kind == "bookTicker":
        bid, ask = plain(payload.get("b")), plain(payload.get("a"))
        if bid is None or ask is None or bid <= 0 or ask <= 0:
            return None
        price = (float(bid) + float(ask)) / 2.0
    else:
        field = {"aggTrade": "p", "trade": "p", "24hrMiniTicker": "c", "24hrTicker": "c"}.get(str(kind))
        value = plain(payload.get(field)) if field and type(kind) is str else None
        if value is None or value <= 0:
            return None
        price = float(value)
    if payload.get("s") not in WATCHED or not 0 < price < math.inf:
        return None
    return price


def strict_json(text: str) -> bool:
    """The text is JSON as Binance writes it (``Infinity`` / ``NaN`` are not JSON)."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


payloads = st.fixed_dictionaries(
    {"e": kinds, "s": symbols},
    optional={"b": numbers, "a": numbers, "p": numbers, "c": numbers, "E": numbers},
).map(lambda d: {k: v for k, v in d.items() if v is not None or k != "e"})


@settings(max_examples=600, deadline=None)
@given(payload=payloads, wrapped=st.booleans(), before=st.floats(min_value=1, max_value=1e6))
def test_payloads_yield_exactly_the_oracles_price(
    payload: dict[str, Any], wrapped: bool, before: float
) -> None:
    """Each payload sets the oracle's price or leaves the pending prices untouched, with one warning."""
    stream = new_stream(before)
    frame = {"stream": "x", "data": payload} if wrapped else payload
    text = json.dumps(frame)  # a non-finite float anywhere (even in "E") makes this text not JSON
    with capture_logs() as events:
        stream.receive(text, now=10.0)  # 10 s on: the skip log is not rate-limited yet
    expected = oracle(payload) if strict_json(text) else None
    if expected is not None:
        assert stream.prices_received() == {"ETHUSDT": before, payload["s"]: expected}
        assert events == []
        return
    assert stream.prices_received() == {"ETHUSDT": before}
    if payload.get("s") in WATCHED or payload.get("e") not in (None, "bookTicker", "aggTrade", "trade",
                                                                 "24hrMiniTicker", "24hrTicker"):  # fmt: skip
        assert len(events) <= 1
    for event in events:
        assert event["event"] == "market_frame_skipped" and event["log_level"] == "warning"
        assert "\n" not in str(event["reason"]) and len(event["sample"]) <= 90


json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=5),
    max_leaves=25,
)
raw_frames = (
    json_values.map(json.dumps)
    | st.binary(max_size=200)
    | st.text(max_size=200)
    | payloads.map(lambda p: json.dumps({"data": [p, p]})[:-3])  # truncated, as the simulator's fault
)


@settings(max_examples=600, deadline=None)
@given(raw=raw_frames)
def test_arbitrary_frames_never_raise(raw: bytes | str) -> None:
    """Any bytes or text either set finite positive prices of watched symbols or are skipped; no crash."""
    stream = new_stream()
    with capture_logs() as events:
        stream.receive(raw, now=10.0)
    if stream.closing is not None:  # only for Binance's serverShutdown notice
        assert "serverShutdown" in (raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
    prices = stream.prices_received()
    assert set(prices) <= set(WATCHED)
    assert all(0 < p < math.inf for p in prices.values())
    assert all(e["event"] == "market_frame_skipped" and "\n" not in e["sample"] for e in events)


@pytest.mark.parametrize("value", [True, 1, 1.5, "1e4", "1_000", "+1", " 1", "0x1"])
def test_prices_that_float_would_accept_are_refused(value: Any) -> None:
    """A boolean, a JSON number, an exponent or an underscore is not a Binance price: refused, logged."""
    stream = new_stream()
    with capture_logs() as events:
        stream.receive(orjson.dumps({"data": {"s": "BTCUSDT", "b": value, "a": "2"}}), now=10.0)
    assert stream.prices_received() == {}
    assert [(e["event"], e["reason"]) for e in events] == [("market_frame_skipped", "price not a number")]
