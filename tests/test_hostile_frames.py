"""Hostile user-data and Risk Data Stream frames: all or nothing, never a crash, one line per rejection.

Documented events with one field broken parse completely (every amount exact) or not at all, so
the book never takes half a balance update. Arbitrary frames fed to the streams' own frame handlers
(``UserDataStream._on_frame``, ``RiskStream._on_frame``) either deliver fully parsed events or are
skipped with one warning and a REST re-read request; nothing escapes but the documented reconnect.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from monitor.exchange import frames
from monitor.exchange.errors import ExchangeDataError, Reconnect
from monitor.exchange.events import BalanceDelta, BalanceUpdate, ExchangeEvent, LiabilityChange, MarginStatus
from monitor.exchange.rest import BinanceRest
from monitor.exchange.risk_stream import RiskStream
from monitor.exchange.userdata import UserDataStream, UserSubscription

POSITION = {"e": "outboundAccountPosition", "E": 1, "u": 2,
            "B": [{"a": "BTC", "f": "1.5", "l": "0.25"}, {"a": "USDT", "f": "100", "l": "0"},
                  {"a": "ETH", "f": "0.00000001", "l": "3"}]}  # fmt: skip
DELTA = {"e": "balanceUpdate", "E": 1, "a": "USDT", "d": "-12.5", "T": 2}
LIABILITY = {
    "e": "USER_LIABILITY_CHANGE",
    "E": 1,
    "a": "USDT",
    "t": "BORROW",
    "T": 2,
    "p": "100",
    "i": "0.01",
}
STATUS = {"e": "MARGIN_LEVEL_STATUS_CHANGE", "E": 1, "l": "1.25", "s": "MARGIN_CALL"}
DOCUMENTS = [POSITION, DELTA, LIABILITY, STATUS]

hostile = st.sampled_from(["1e5", "NaN", "-Infinity", "", " 1", "1_0", "-1", "0x1", "1" * 40, "1.2.3"]) | (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
)
json_values = st.recursive(
    hostile,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)


def leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += leaf_paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += leaf_paths(child, (*prefix, i))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A documented event with one value replaced by a hostile one, or one key deleted."""
    doc = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    path = draw(st.sampled_from(leaf_paths(doc)))
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    if isinstance(node, dict) and draw(st.booleans()):
        del node[path[-1]]
    else:
        node[path[-1]] = draw(json_values)
    return cast(dict[str, Any], doc)


def exact(event: ExchangeEvent, doc: dict[str, Any]) -> None:
    """An accepted event carries exactly the document's values."""
    if isinstance(event, BalanceUpdate):
        row = next(r for r in doc["B"] if r["a"] == event.asset)
        assert (event.free, event.locked) == (Decimal(row["f"]), Decimal(row["l"]))
    elif isinstance(event, BalanceDelta):
        assert event.delta == Decimal(doc["d"])
    elif isinstance(event, LiabilityChange):
        assert (event.principal, event.interest) == (Decimal(doc["p"]), Decimal(doc["i"]))
    elif isinstance(event, MarginStatus):
        assert event.level == Decimal(doc["l"]) and event.status == doc["s"]


@settings(max_examples=500, deadline=None)
@given(doc=mutated())
def test_mutated_events_parse_whole_or_not_at_all(doc: dict[str, Any]) -> None:
    """A broken event yields every row exactly or raises one line naming the field; never part of it."""
    try:
        events = frames.user_events("acc", None, doc)
    except ExchangeDataError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
        return
    if doc.get("e") == "outboundAccountPosition":
        assert len(events) == len(doc["B"])
    for event in events:
        exact(event, doc)


class Recorder:
    """Collects delivered events and REST re-read requests."""

    def __init__(self) -> None:
        self.events: list[ExchangeEvent] = []
        self.rereads: list[tuple[str, str | None]] = []

    def on_event(self, event: ExchangeEvent) -> None:
        self.events.append(event)

    def on_reconnected(self, account: str, symbol: str | None) -> None:
        self.rereads.append((account, symbol))


def userdata_stream(recorder: Recorder) -> UserDataStream:
    sub = UserSubscription("acc", cast(BinanceRest, None))
    stream = UserDataStream(
        "ws://127.0.0.1:9", [sub], recorder.on_event, on_reconnected=recorder.on_reconnected
    )
    stream._by_id[7] = sub
    stream._retired.add(3)
    return stream


frame_bodies = (
    mutated().map(lambda doc: {"subscriptionId": 7, "event": doc})
    | st.fixed_dictionaries({"subscriptionId": json_values, "event": json_values | mutated()})
    | json_values
)


@settings(max_examples=500, deadline=None)
@given(body=frame_bodies, truncate=st.booleans())
def test_userdata_frames_deliver_whole_events_or_skip_with_one_line(body: Any, truncate: bool) -> None:
    """Arbitrary user-data frames never raise; a rejected event delivers nothing and logs one line."""
    recorder = Recorder()
    stream = userdata_stream(recorder)
    raw = json.dumps(body)
    raw = raw[: len(raw) // 2] if truncate else raw
    with capture_logs() as logs:
        stream._on_frame(raw)
    skipped = [e for e in logs if e["event"] == "userdata_frame_skipped"]
    assert len(skipped) <= 1
    if skipped:
        assert recorder.events == [] and "\n" not in str(skipped[0]["reason"])
    if isinstance(body, dict) and body.get("subscriptionId") == 7 and not truncate and recorder.events:
        for event in recorder.events:
            exact(event, body["event"])


@settings(max_examples=500, deadline=None)
@given(body=mutated() | json_values, wrapped=st.booleans(), truncate=st.booleans())
def test_risk_frames_deliver_whole_events_or_skip_with_one_line(
    body: Any, wrapped: bool, truncate: bool
) -> None:
    """Arbitrary Risk Data Stream frames never raise; a rejected one delivers nothing and asks a re-read."""
    recorder = Recorder()
    stream = RiskStream("ws://127.0.0.1:9", cast(BinanceRest, None), "acc", recorder.on_event,
                        on_reconnected=recorder.on_reconnected)  # fmt: skip
    raw = json.dumps({"stream": "k", "data": body} if wrapped else body)
    raw = raw[: len(raw) // 2] if truncate else raw
    with capture_logs() as logs:
        try:
            stream._on_frame(raw)
        except Reconnect:
            assert "listenKeyExpired" in raw
            return
    skipped = [e for e in logs if e["event"] == "risk_frame_skipped"]
    assert len(skipped) <= 1
    if skipped:
        assert recorder.events == [] and recorder.rereads == [("acc", None)]
    elif recorder.events:
        for event in recorder.events:
            exact(event, body)


def test_unhashable_subscription_id_is_skipped() -> None:
    """A frame whose subscriptionId is a list (unhashable) is skipped with a line, not a crash."""
    recorder = Recorder()
    stream = userdata_stream(recorder)
    with capture_logs() as logs:
        stream._on_frame(json.dumps({"subscriptionId": [7], "event": POSITION}))
    assert [e["reason"] for e in logs] == ["event for an unknown subscription"] and recorder.events == []
