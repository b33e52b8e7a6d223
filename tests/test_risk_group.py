"""Several accounts' Risk Data Streams on one connection (``monitor/exchange/risk_group.py``
``RiskGroup``) and the daemon's assignment of accounts to connections (``monitor/app/risk_groups.py``).

Against the real simulator (its ``/stream?streams=<key1>/<key2>`` serves several listen keys and
answers ``LIST_SUBSCRIPTIONS``) with the real python-binance REST client: each account's events
reach that account only; one account's trouble (no key, an expired key, a revoked key) is its own;
a server that does not confirm several keys on a connection gets one connection per account, said
once. The routing itself is a property test over random frames.
"""

from __future__ import annotations

import asyncio
import doctest
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from aiohttp import web
from daemon_harness import Receiver, daemon_config, running_daemon, wait_until
from exchange_fakes import until
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from test_userdata import FAST, Recorder, rest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

import monitor.exchange.risk_group
from monitor.app.risk_groups import RiskGroups
from monitor.exchange.errors import ExchangeUnavailable, KeyRejected, Reconnect
from monitor.exchange.events import LiabilityChange, MarginStatus, StreamState
from monitor.exchange.rest import BinanceRest
from monitor.exchange.risk_group import CombinedRefused, Member, RiskGroup
from monitor.exchange.supervisor import Backoff, Heartbeat
from monitor.sim import Simulator

ACCOUNTS = ("demo", "other")


def test_doctests() -> None:
    assert doctest.testmod(monitor.exchange.risk_group).failed == 0


def _listen_key_streams(sim: Simulator) -> list[list[str]]:
    """The listen keys each simulator connection follows (connections following none left out)."""
    routes = sim.engine.streams
    found = [[n for n in sc.streams if routes.route(n) == ("listenKey", None)] for sc in routes.connections]
    return [keys for keys in found if keys]


async def _borrow(sim: Simulator, account: str, amount: str) -> None:
    await sim.apply_event({"type": "borrow", "account": account, "asset": "USDT", "amount": amount})


class FlakyKeys:
    """A REST client whose listen-key requests fail while ``failing`` (the rest is the real one)."""

    def __init__(self, real: BinanceRest) -> None:
        self.real = real
        self.failing = True

    async def risk_listen_key(self) -> str:
        if self.failing:
            raise ExchangeUnavailable("margin/listen-key: connection refused", "network")
        return await self.real.risk_listen_key()

    async def risk_keepalive(self, key: str) -> None:
        await self.real.risk_keepalive(key)


@asynccontextmanager
async def running(group: RiskGroup, *clients: BinanceRest) -> AsyncIterator[RiskGroup]:
    """``group`` running in the background; at the end it is stopped and ``clients`` are closed."""
    task = asyncio.create_task(group.run())
    try:
        yield group
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for client in clients:
            await client.close()


@asynccontextmanager
async def group_of(
    sim: Simulator, accounts: tuple[str, ...] = ACCOUNTS, **kwargs: Any
) -> AsyncIterator[tuple[RiskGroup, Recorder, dict[str, BinanceRest]]]:
    """One RiskGroup following ``accounts`` on ``sim``, running in the background."""
    recorder = Recorder()
    clients = {account: await rest(sim, account) for account in accounts}
    group = RiskGroup(sim.risk_stream_url, "risk-group-1", backoff=FAST, **kwargs)
    for account in accounts:
        group.add(Member(account, clients[account], recorder.events.append,
                         on_reconnected=recorder.reconcile, on_state=recorder.states.append))  # fmt: skip
    try:
        async with running(group):
            yield group, recorder, clients
    finally:
        for client in clients.values():  # (the test may add clients while it runs)
            await client.close()


def _up(group: RiskGroup, *accounts: str) -> bool:
    return all(group.member_state(account)[0] for account in accounts)


async def test_two_accounts_share_one_connection_and_each_gets_its_own_events(sim: Simulator) -> None:
    """Both keys on one ``/stream?streams=`` connection, confirmed by the server's list; a borrow
    of each account reaches that account only; each account's state is told under its own name."""
    async with group_of(sim) as (group, rec, _):
        await until(lambda: _up(group, *ACCOUNTS) and group.confirmed)
        assert [len(keys) for keys in _listen_key_streams(sim)] == [2]
        await _borrow(sim, "demo", "100")
        await until(lambda: bool(rec.of(LiabilityChange, "demo")))
        await _borrow(sim, "other", "7")
        await until(lambda: bool(rec.of(LiabilityChange, "other")))
        assert [e.principal for e in rec.of(LiabilityChange, "demo")][-1] != rec.of(LiabilityChange, "other")[
            -1
        ].principal
        assert {(s.name, s.up) for s in rec.states} == {("risk:demo", True), ("risk:other", True)}
        assert sorted(rec.reconciled) == [("demo", None), ("other", None)]


async def test_one_accounts_missing_key_blinds_only_that_account(sim: Simulator) -> None:
    """``other``'s key cannot be had (its REST failing): ``demo`` connects alone and gets its
    events; ``other`` is down with the reason. Once its key comes, the connection is made again
    with both, and ``other``'s events arrive too."""
    recorder = Recorder()
    demo, other = await rest(sim, "demo"), await rest(sim, "other")
    flaky = FlakyKeys(other)
    group = RiskGroup(sim.risk_stream_url, "risk-group-1", backoff=FAST,
                      key_retry=Backoff(initial=0.05, maximum=0.1))  # fmt: skip
    group.add(Member("demo", demo, recorder.events.append, on_state=recorder.states.append))
    group.add(
        Member("other", cast(BinanceRest, flaky), recorder.events.append, on_state=recorder.states.append)
    )
    async with running(group, demo, other):
        await until(lambda: _up(group, "demo"))
        up, reason = group.member_state("other")
        assert (
            not up and reason == "no listen key: ExchangeUnavailable: margin/listen-key: connection refused"
        )
        assert StreamState("risk:other", False, reason) in recorder.states
        await _borrow(sim, "demo", "5")
        await until(lambda: bool(recorder.of(LiabilityChange, "demo")))
        flaky.failing = False
        await until(lambda: _up(group, "demo", "other") and group.confirmed)
        await _borrow(sim, "other", "3")
        await until(lambda: bool(recorder.of(LiabilityChange, "other")))


async def test_an_expired_key_is_replaced_and_the_others_keep_their_events(sim: Simulator) -> None:
    """``listenKeyExpired`` for ``demo`` on the shared connection: a new key for ``demo``, the
    connection made again with it, and both accounts' events still arrive."""
    async with group_of(sim) as (group, rec, _):
        await until(lambda: _up(group, *ACCOUNTS) and group.confirmed)
        old = group.members["demo"].key
        assert old is not None
        lapsed = sim.engine.listen_keys.get(old)
        assert lapsed is not None
        sim.engine.listen_keys.close(old)
        sim.engine.streams.expire_keys([lapsed], sim.engine.now_ms())
        await until(lambda: group.members["demo"].key not in (None, old) and _up(group, *ACCOUNTS))
        await _borrow(sim, "demo", "4")
        await _borrow(sim, "other", "6")
        await until(lambda: bool(rec.of(LiabilityChange, "demo")) and bool(rec.of(LiabilityChange, "other")))
        assert [len(keys) for keys in _listen_key_streams(sim)] == [2]


async def test_a_revoked_key_takes_its_account_off_and_the_others_stay(sim: Simulator) -> None:
    """``other``'s key revoked before the next connection: ``other`` leaves the group with a fatal
    state and its ``on_rejected``; ``demo`` stays followed."""
    recorder = Recorder()
    rejected: list[KeyRejected] = []
    demo, other = await rest(sim, "demo"), await rest(sim, "other")
    group = RiskGroup(sim.risk_stream_url, "risk-group-1", backoff=FAST)
    group.add(Member("demo", demo, recorder.events.append, on_state=recorder.states.append))
    group.add(Member("other", other, recorder.events.append, on_state=recorder.states.append,
                     on_rejected=rejected.append))  # fmt: skip
    sim.engine.state.revoke("other")
    async with running(group, demo, other):
        await until(lambda: _up(group, "demo") and bool(rejected))
        assert list(group.members) == ["demo"]
        assert any(s.name == "risk:other" and s.fatal for s in recorder.states)
        await _borrow(sim, "demo", "2")
        await until(lambda: bool(recorder.of(LiabilityChange, "demo")))


async def test_an_account_joining_a_connected_group_is_followed(sim: Simulator) -> None:
    """``other`` added while ``demo``'s connection is up: the connection is made again with both."""
    async with group_of(sim, ("demo",)) as (group, rec, clients):
        await until(lambda: _up(group, "demo"))
        assert [len(keys) for keys in _listen_key_streams(sim)] == [1]
        other = await rest(sim, "other")
        clients["other"] = other
        group.add(Member("other", other, rec.events.append, on_state=rec.states.append))
        await until(lambda: _up(group, "demo", "other") and group.confirmed)
        await _borrow(sim, "other", "9")
        await until(lambda: bool(rec.of(LiabilityChange, "other")))


def _refuse_list_subscriptions(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any]
) -> None:
    """The simulator answering ``LIST_SUBSCRIPTIONS`` with ``answer`` (a server that does not
    confirm several keys on one connection); every other request as before."""
    streams = sim.engine.streams
    real = streams._on_text

    async def on_text(sc: Any, text: str) -> None:
        request = orjson.loads(text)
        if request.get("method") == "LIST_SUBSCRIPTIONS":
            sc.conn.send({**answer, "id": request.get("id")})
            return
        await real(sc, text)

    monkeypatch.setattr(streams, "_on_text", on_text)


async def refusal(sim: Simulator, **kwargs: Any) -> tuple[CombinedRefused, RiskGroup]:
    """Run a RiskGroup of both accounts on ``sim`` until it ends: the ``CombinedRefused`` it ended
    with (the test fails if it does not end so within 10 s), and the group."""
    clients = {a: await rest(sim, a) for a in ACCOUNTS}
    group = RiskGroup(sim.risk_stream_url, "risk-group-1", backoff=FAST, **kwargs)
    for account in ACCOUNTS:
        group.add(Member(account, clients[account], lambda event: None))
    try:
        with pytest.raises(CombinedRefused) as ended:
            await asyncio.wait_for(group.run(), 10)
    finally:
        for client in clients.values():
            await client.close()
    return ended.value, group


@pytest.mark.parametrize(
    "answer", [{"error": {"code": 2, "msg": "Invalid request"}}, {"result": []}], ids=["error", "missing"]
)
async def test_a_server_that_does_not_confirm_ends_the_group(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any]
) -> None:
    """Keys missing from the server's list, or an error for the request: ``CombinedRefused``."""
    _refuse_list_subscriptions(sim, monkeypatch, answer)
    ended, _ = await refusal(sim)
    assert str(ended).startswith("several listen keys on one connection not confirmed: the server")


async def test_no_answer_within_the_limit_ends_the_group(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer to ``LIST_SUBSCRIPTIONS`` within ``verify_timeout``: ``CombinedRefused``."""
    streams = sim.engine.streams
    real = streams._on_text

    async def silent(sc: Any, text: str) -> None:
        if orjson.loads(text).get("method") != "LIST_SUBSCRIPTIONS":
            await real(sc, text)

    monkeypatch.setattr(streams, "_on_text", silent)
    ended, _ = await refusal(sim, verify_timeout=0.3)
    assert "no answer to LIST_SUBSCRIPTIONS within 0.3 s" in str(ended)


async def test_a_server_closing_every_shared_connection_ends_the_group(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closing a shared connection (code 1008) whenever it is asked ``LIST_SUBSCRIPTIONS``:
    three in a row, and ``CombinedRefused`` (not a retry for ever)."""
    streams = sim.engine.streams
    real = streams._on_text

    async def closing(sc: Any, text: str) -> None:
        if orjson.loads(text).get("method") == "LIST_SUBSCRIPTIONS":
            sc.conn.close_soon(1008, "unknown method")
            return
        await real(sc, text)

    monkeypatch.setattr(streams, "_on_text", closing)
    ended, group = await refusal(sim)
    assert "3 shared connections in a row closed by the server (code 1008)" in str(ended)
    assert group.supervisor.retries == 2


async def test_a_server_refusing_the_shared_address_ends_the_group(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answering the handshake of ``/stream?streams=<key1>/<key2>`` with HTTP 400 (one key a
    connection only): three in a row, and ``CombinedRefused``."""
    streams = sim.engine.streams
    real = streams._serve

    async def one_key_only(request: Any, names: list[str], combined: bool) -> Any:
        if combined and len(names) > 1:
            return web.Response(status=400, body=b'{"code": 2, "msg": "Invalid request"}')
        return await real(request, names, combined)

    monkeypatch.setattr(streams, "_serve", one_key_only)
    ended, _ = await refusal(sim)
    assert "3 shared connections in a row refused at the handshake with HTTP 400" in str(ended)


def test_only_the_servers_own_refusals_count() -> None:
    """Before confirmation, a shared connection ended by us (a member joining), by the network (1006),
    or refused for the connection budget (429) does not count; three the server closed do."""
    group = RiskGroup("ws://x", "risk-group-1")
    group._combined = True
    too_many = InvalidStatus(Response(429, "Too Many Requests", Headers()))
    for _ in range(5):
        group._unconfirmed_end(Reconnect("accounts joined the connection"), None)
        group._unconfirmed_end(Reconnect("closed by server (code 1006, no reason)"), 1006)
        group._unconfirmed_end(too_many, None)
    group._unconfirmed_end(Reconnect("closed by server"), 1008)
    group._unconfirmed_end(Reconnect("closed by server"), 1008)
    group.confirmed = True
    group._unconfirmed_end(Reconnect("closed by server"), 1008)  # confirmed: not counted
    group.confirmed = False
    with pytest.raises(CombinedRefused):
        group._unconfirmed_end(Reconnect("closed by server"), 1008)


async def test_refused_sharing_gives_every_account_its_own_connection(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``RiskGroups``: the server does not confirm the shared connection, the daemon says so
    once (``risk_streams_not_combined``) and every account gets a ``/ws/<key>`` connection of its
    own, named ``risk:<account>``; events still reach each account."""
    _refuse_list_subscriptions(sim, monkeypatch, {"result": []})
    recorder = Recorder()
    clients = {a: await rest(sim, a) for a in ACCOUNTS}
    spawn, tasks = _spawner()
    groups = RiskGroups(spawn, None, make=lambda url, name, **kw: RiskGroup(url, name, backoff=FAST, **kw))
    try:
        with capture_logs() as logs:
            for account in ACCOUNTS:
                groups.add(sim.risk_stream_url, Member(account, clients[account], recorder.events.append))
            await until(lambda: sorted(groups.groups) == ["risk:demo", "risk:other"], within=10)
            await until(lambda: all(g.member_state(n.split(":")[1])[0] for n, g in groups.groups.items()))
        assert [len(keys) for keys in _listen_key_streams(sim)] == [1, 1]
        assert [e["event"] for e in logs].count("risk_streams_not_combined") == 1
        assert groups.refused and groups.per_connection == 1
        await _borrow(sim, "other", "8")
        await until(lambda: bool(recorder.of(LiabilityChange, "other")))
    finally:
        await _stop_all(tasks)
        for client in clients.values():
            await client.close()


# -- the assignment: pure bookkeeping, with groups that do not connect ---------------------------------


class Idle(RiskGroup):
    """A group whose run waits forever (or raises ``fail`` once told to)."""

    def __init__(self, url: str, name: str, **kwargs: Any) -> None:
        super().__init__(url, name, **kwargs)
        self.fail: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        await self.fail


def _spawner() -> tuple[
    Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]], dict[str, asyncio.Task[Any]]
]:
    tasks: dict[str, asyncio.Task[Any]] = {}

    def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        tasks[name] = asyncio.create_task(coro, name=name)
        return tasks[name]

    return spawn, tasks


async def _stop_all(tasks: dict[str, asyncio.Task[Any]]) -> None:
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)


def _member(account: str) -> Member:
    return Member(account, cast(BinanceRest, None), lambda event: None)


@settings(max_examples=50, deadline=None)
@given(
    per=st.integers(1, 5),
    steps=st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 15), st.sampled_from("ab")),
                   max_size=60),
)  # fmt: skip
def test_every_account_is_on_exactly_one_connection_of_its_url(
    per: int, steps: list[tuple[str, int, str]]
) -> None:
    """Any sequence of accounts added and removed: every followed account is on exactly one
    connection, of its own URL, none holds more than ``per``, and no connection is left empty."""

    async def scenario() -> None:
        spawn, tasks = _spawner()
        groups = RiskGroups(spawn, None, per_connection=per, make=Idle)
        url_of: dict[str, str] = {}
        for op, n, url in steps:
            account = f"acct{n}"
            if op == "add" and account not in url_of:
                url_of[account] = url
                groups.add(url, _member(account))
            elif op == "remove":
                url_of.pop(account, None)
                groups.remove(account)
        await asyncio.sleep(0)
        on: dict[str, str] = {}
        for name, group in groups.groups.items():
            assert 1 <= len(group) <= per and not tasks[name].done()
            for account in group.members:
                assert account not in on
                on[account] = name
                assert group.url == url_of[account]
        assert set(on) == set(url_of)
        await _stop_all(tasks)

    asyncio.run(scenario())


async def test_twenty_accounts_a_connection() -> None:
    """45 accounts: connections of 20, 20 and 5, named ``risk-group-<n>``."""
    spawn, tasks = _spawner()
    groups = RiskGroups(spawn, None, make=Idle)
    for i in range(45):
        groups.add("ws://x", _member(f"a{i}"))
    assert {name: len(g) for name, g in groups.groups.items()} == {
        "risk-group-1": 20, "risk-group-2": 20, "risk-group-3": 5,
    }  # fmt: skip
    assert groups.members_of("risk-group-3") == [f"a{i}" for i in range(40, 45)]
    await _stop_all(tasks)


async def test_a_revoked_key_leaves_the_registry_and_an_empty_connection_ends() -> None:
    """A member's revoked key (the group's ``_rejected``): the account is on no connection any more,
    its ``on_rejected`` is told, and a connection left with nobody ends; the others stay."""
    spawn, tasks = _spawner()
    groups = RiskGroups(spawn, None, per_connection=2, make=Idle)
    rejected: list[KeyRejected] = []
    members = [Member(a, cast(BinanceRest, None), lambda e: None, on_rejected=rejected.append) for a in "abc"]
    for member in members:
        groups.add("ws://x", member)
    first, second = groups.group_of("a"), groups.group_of("c")
    assert first is not None and second is not None and first is not second
    await asyncio.sleep(0)
    second._rejected(members[2], KeyRejected("c", -2015, "Invalid API-key"))
    first._rejected(members[0], KeyRejected("a", -2015, "Invalid API-key"))
    await asyncio.sleep(0)
    assert [groups.group_of(a) for a in "abc"] == [None, first, None]
    assert [e.account for e in rejected] == ["c", "a"]
    assert list(groups.groups) == ["risk-group-1"] and tasks["risk-group-2"].cancelled()
    await _stop_all(tasks)


# -- routing: each frame to the member its stream names ---------------------------------------------------

_frames = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(["USDT", "BTC"]), st.integers(1, 10_000), st.booleans()),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(frames=_frames)
def test_each_frame_reaches_the_member_its_stream_names(frames: list[tuple[int, str, int, bool]]) -> None:
    """Random liability changes for three followed keys and one unknown, some named in lower case (a
    server may lowercase stream names): each followed account gets exactly its own, in order; a
    frame for a key not followed is skipped with a log line."""
    group = RiskGroup("ws://x", "risk-group-1")
    got: list[LiabilityChange] = []
    for i in range(3):
        member = Member(f"a{i}", cast(BinanceRest, None), lambda e: got.append(cast(LiabilityChange, e)))
        member.key = f"KEY{i}"
        group.add(member)
    group.follow(list(group.members.values()))
    group._combined = True
    with capture_logs() as logs:
        for who, asset, principal, lower in frames:
            data = {
                "e": "USER_LIABILITY_CHANGE",
                "E": 1,
                "a": asset,
                "t": "BORROW",
                "p": str(principal),
                "i": "0",
            }
            stream = f"KEY{who}".lower() if lower else f"KEY{who}"
            group._on_frame(orjson.dumps({"stream": stream, "data": data}))
    for i in range(3):
        mine = [(e.asset, str(e.principal)) for e in got if e.account == f"a{i}"]
        assert mine == [(asset, str(p)) for who, asset, p, _ in frames if who == i]
    assert len([e for e in logs if e["event"] == "risk_frame_skipped"]) == min(
        1, sum(w == 3 for w, _, _, _ in frames)
    )


def test_an_expiry_for_one_key_drops_only_that_key() -> None:
    """``listenKeyExpired`` wrapped for ``KEY1``: that member's key is gone, the session ends."""
    group = RiskGroup("ws://x", "risk-group-1")
    for i in range(2):
        member = Member(f"a{i}", cast(BinanceRest, None), lambda e: None)
        member.key = f"KEY{i}"
        group.add(member)
    group.follow(list(group.members.values()))
    group._combined = True
    with pytest.raises(Reconnect, match="listen key of a1 expired"):
        group._on_frame(orjson.dumps({"stream": "KEY1", "data": {"e": "listenKeyExpired", "E": 1}}))
    assert [m.key for m in group.members.values()] == ["KEY0", None]


# -- the daemon: two accounts on one connection, and the fall-back -----------------------------------------

TWO = [{"name": a, "api_key": f"{a}-key", "api_secret": f"{a}-secret"} for a in ACCOUNTS]


def _risk_up(daemon: Any) -> bool:
    units = [u for u in daemon.status() if u["unit"].startswith("cross:")]
    return len(units) == 2 and all(u.get("risk_stream") == "up" for u in units)


async def test_the_daemon_follows_two_accounts_on_one_connection(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """The real daemon with two cross accounts: one Risk Data Stream connection follows both keys,
    ``status`` shows each account's stream up, and a borrow of ``other`` reaches ``other``'s ledger."""
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver, accounts=TWO)) as daemon:
            await wait_until(lambda: _risk_up(daemon), what="both risk streams up")
            assert [len(keys) for keys in _listen_key_streams(sim)] == [2]
            await _borrow(sim, "other", "11")
            await wait_until(lambda: any(e["event"] == "liability_changed" and e["account"] == "other"
                                         for e in logs), what="other's liability change")  # fmt: skip
    assert not [e for e in logs if e["event"] == "liability_changed" and e["account"] == "demo"]
    assert not [e for e in logs if e["event"] in ("task_failed", "risk_streams_not_combined")]


async def test_the_daemon_gives_each_account_its_own_connection_when_sharing_is_refused(
    tmp_path: Path, sim: Simulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answering ``LIST_SUBSCRIPTIONS`` without the keys: the daemon says so once, each
    account gets a connection of its own, and ``status`` shows both streams up."""
    _refuse_list_subscriptions(sim, monkeypatch, {"result": []})
    with capture_logs() as logs:
        async with running_daemon(daemon_config(tmp_path, sim, receiver, accounts=TWO)) as daemon:
            await wait_until(
                lambda: _risk_up(daemon) and sorted(map(len, _listen_key_streams(sim))) == [1, 1],
                within=20, what="each account on its own connection",
            )  # fmt: skip
    refused = [e for e in logs if e["event"] == "risk_streams_not_combined"]
    assert len(refused) == 1 and "the server follows 0 of 2 listen keys" in refused[0]["reason"]
    assert not [e for e in logs if e["event"] == "task_failed"]


async def test_each_message_is_read_in_a_loop_turn_of_its_own() -> None:
    """Three messages already received: between two of them, a callback waiting for the loop runs
    (the reader yields after each one instead of handing all of them out in one go)."""
    group = RiskGroup("ws://x", "risk-group-1")
    order: list[str] = []
    for i in range(3):
        member = Member(
            f"a{i}", cast(BinanceRest, None), lambda e: order.append(cast(MarginStatus, e).account)
        )
        member.key = f"KEY{i}"
        group.add(member)
    group.follow(list(group.members.values()))
    group._combined = True
    frames = [
        orjson.dumps({"stream": f"KEY{i}", "data": {"e": "MARGIN_LEVEL_STATUS_CHANGE", "E": 1, "l": "1.2",
                                                    "s": "MARGIN_CALL"}}).decode()
        for i in range(3)
    ]  # fmt: skip

    class Received:
        def __aiter__(self) -> Any:
            return self

        async def __anext__(self) -> str:
            if not frames:
                raise StopAsyncIteration
            return frames.pop(0)  # no wait: as websockets hands out what it has already read

    def between() -> None:
        order.append("loop")

    asyncio.get_running_loop().call_soon(between)
    heartbeat = Heartbeat(asyncio.get_running_loop().time, asyncio.get_running_loop().time, lambda: None)
    await group._read(cast(Any, Received()), heartbeat)
    assert order == ["a0", "loop", "a1", "a2"]


class TestShortKeys:
    """Listen keys that live one second, so keepalives happen within a test."""

    @pytest.fixture
    def scenario_data(self, scenario_data: dict[str, Any]) -> dict[str, Any]:
        scenario_data["limits"] = {"listen_key_validity": 1.0}
        return scenario_data

    async def test_keepalives_keep_every_key_of_a_shared_connection(self, sim: Simulator) -> None:
        """Both keys extended from the connection's one keepalive task, faster than they lapse: over
        two seconds (two lifetimes) the shared connection is never made again, and events flow."""
        async with group_of(sim, keepalive=0.2) as (group, rec, _):
            await until(lambda: _up(group, *ACCOUNTS) and group.confirmed)
            await asyncio.sleep(2.0)
            await _borrow(sim, "other", "1")
            await _borrow(sim, "demo", "1")
            await until(
                lambda: bool(rec.of(LiabilityChange, "demo")) and bool(rec.of(LiabilityChange, "other"))
            )
        assert group.supervisor.retries == 0

    async def test_a_lapsed_key_of_a_shared_connection_is_replaced(self, sim: Simulator) -> None:
        """No keepalive in time (60 s against 1 s keys): ``listenKeyExpired`` for a key makes the
        connection again with a new one, and both accounts' events flow after it."""
        with capture_logs() as logs:
            async with group_of(sim, keepalive=60) as (group, rec, _):
                await until(lambda: group.supervisor.retries >= 1, within=5)
                await until(lambda: _up(group, *ACCOUNTS))
                await _borrow(sim, "demo", "1")
                await _borrow(sim, "other", "1")
                await until(
                    lambda: bool(rec.of(LiabilityChange, "demo")) and bool(rec.of(LiabilityChange, "other"))
                )
        assert any(e["event"] == "stream_retry" and "expired" in e["reason"] for e in logs)


class KeepaliveFails(FlakyKeys):
    """The real client whose keepalive fails with a network error while ``failing``."""

    def __init__(self, real: BinanceRest) -> None:
        super().__init__(real)
        self.failing = False
        self.keepalive_failing = True

    async def risk_keepalive(self, key: str) -> None:
        if self.keepalive_failing:
            raise ExchangeUnavailable("margin/listen-key keepalive: connection reset", "network")
        await self.real.risk_keepalive(key)


async def test_a_failed_keepalive_is_retried_without_reconnecting(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``other``'s keepalive fails with a network error: logged, retried ``KEEPALIVE_RETRY`` later,
    and the shared connection is not made again for it (its key has half an hour left)."""
    monkeypatch.setattr(monitor.exchange.risk_group, "KEEPALIVE_RETRY", 0.1)
    recorder = Recorder()
    demo, other = await rest(sim, "demo"), await rest(sim, "other")
    flaky = KeepaliveFails(other)
    group = RiskGroup(sim.risk_stream_url, "risk-group-1", backoff=FAST, keepalive=0.2)
    group.add(Member("demo", demo, recorder.events.append))
    group.add(Member("other", cast(BinanceRest, flaky), recorder.events.append))
    async with running(group, demo, other):
        with capture_logs() as logs:
            await until(lambda: _up(group, "demo", "other") and group.confirmed)
            await until(lambda: len([e for e in logs if e["event"] == "risk_keepalive_failed"]) >= 3)
            flaky.keepalive_failing = False
            renewed = group.members["other"].renewed
            await until(lambda: group.members["other"].renewed > renewed)
        assert group.supervisor.retries == 0 and _up(group, "demo", "other")
        assert {e["account"] for e in logs if e["event"] == "risk_keepalive_failed"} == {"other"}
