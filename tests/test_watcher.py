"""The account watcher's pieces (monitor/watch/), each driven without sockets.

Key verdict, notices, staleness, the re-read schedule, settling and stream events, REST
snapshots (through a fake that returns plain values), ladders and the shard roster; then the
coordinator itself on a fake REST. A manual clock throughout: nothing sleeps. What the real client
and the simulator do together is covered end to end elsewhere (test_keys, test_settle_e2e, …).
"""

from __future__ import annotations

import doctest
from collections.abc import Sequence
from decimal import Decimal as D
from pathlib import Path
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

import monitor.watch.keys
from monitor.alerts.policy import AlertPolicy, LevelRule, PolicyConfig
from monitor.config.model import Config
from monitor.exchange.binance import BinanceRest
from monitor.exchange.diagnose import Diagnosis
from monitor.exchange.errors import ExchangeUnavailable, KeyRejected
from monitor.exchange.events import BalanceDelta, BalanceUpdate, LiabilityChange, MarginStatus, StreamState
from monitor.exchange.parse import CrossAccount, IsolatedPair, KeyPermissions
from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars, Position
from monitor.watch.accounts import AccountWatcher, Endpoints, build_watchers
from monitor.watch.engine import Engine
from monitor.watch.events import AccountEvents
from monitor.watch.keys import key_flags, key_verdict, rejected_reason
from monitor.watch.ladder import UnitLadders
from monitor.watch.notices import AccountNotices, Notice
from monitor.watch.rereads import AGAIN, DEBOUNCE, Rereads
from monitor.watch.roster import accounts_in_shard
from monitor.watch.settling import Settling
from monitor.watch.snapshots import RATES_EVERY, RATES_RETRY, Snapshots
from monitor.watch.staleness import Freshness, stale_units

ALICE = "cross:alice"
PAIR = "isolated:alice:ETHUSDT"
CATALOG = {"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT")}
LADDER = (LevelRule("normal", 1.5, ("chat",)), LevelRule("liquidation", 1.1, ("chat",)))


class Clock:
    """Manual time: tests move it, nothing sleeps."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pos(free: str = "0", borrowed: str = "0", interest: str = "0") -> Position:
    return Position(D(free), D(0), D(borrowed), D(interest))


def perms(**on: bool) -> KeyPermissions:
    flags = dict(reading=True, margin=False, trading=False, withdrawals=False, transfer=False,
                 futures=False, ip_restricted=False)  # fmt: skip
    return KeyPermissions(**{**flags, **on})


def config(**account: Any) -> Config:
    return Config.model_validate(
        {
            "accounts": [{"name": "alice", "api_key": "k", "api_secret": "s", **account}],
            "notify": {"routes": {"chat": {"urls": ["json://127.0.0.1:9/x"]}}},
        }
    )


def cross(btc: str = "1", owed: str = "40000", level: str = "1.25", status: str = "") -> CrossAccount:
    positions = {"BTC": pos(btc), "USDT": pos(borrowed=owed)}
    return CrossAccount("MARGIN_1", D(level), positions, margin_level_status=status)


def pair(eth: str = "10", owed: str = "20000", enabled: bool = True) -> IsolatedPair:
    return IsolatedPair("ETHUSDT", "ETH", "USDT", pos(eth), pos(borrowed=owed), D("1.5"), "NORMAL",
                        None, None, enabled)  # fmt: skip


class FakeReads:
    """Plain REST answers in place of BinanceRest (``snapshots.AccountReads``), counting the calls."""

    def __init__(self) -> None:
        self.cross = cross()
        self.pairs = [pair()]
        self.bars = Bars.classic()
        self.pair_bars = Bars({"margin_call": D("1.2"), "liquidation": D("1.1")})
        self.rates: dict[str, D] | Exception | None = {"USDT": D("0.00001")}
        self.calls: list[str] = []
        self.fail: Exception | None = None

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.fail is not None:
            raise self.fail

    async def cross_bars(self) -> Bars:
        self._call("cross_bars")
        return self.bars

    async def cross_account(self) -> CrossAccount:
        self._call("cross_account")
        return self.cross

    async def isolated_pairs(self, symbols: Sequence[str] | None = None) -> list[IsolatedPair]:
        self._call("isolated_pairs")
        return list(self.pairs)

    async def isolated_bars(self, symbol: str, pair: IsolatedPair | None = None) -> Bars:
        self._call("isolated_bars")
        return self.pair_bars

    async def next_hourly_rates(
        self, assets: Sequence[str], *, isolated: bool = False
    ) -> dict[str, D] | None:
        self._call("rates")
        if isinstance(self.rates, Exception):
            raise self.rates
        return self.rates


def book() -> AccountBook:
    b = AccountBook()
    b.set_catalog(CATALOG)
    return b


def engine_for(b: AccountBook, clock: Clock) -> Engine:
    return Engine(b, AlertPolicy(PolicyConfig(levels=LADDER, blind_routes=("chat",)), {}), clock=clock)


# -- keys -----------------------------------------------------------------------------------------


def test_keys_doctest() -> None:
    """The examples in monitor/watch/keys.py hold."""
    assert doctest.testmod(monitor.watch.keys).failed == 0


@pytest.mark.parametrize(
    ("on", "allow", "kind", "powers"),
    [
        ({}, False, "read_only", ()),
        ({"margin": True, "ip_restricted": True}, False, "read_only", ()),
        ({"trading": True, "withdrawals": True}, False, "refused", ("trade", "withdraw")),
        ({"transfer": True}, True, "allowed", ("transfer",)),
    ],
)  # fmt: skip
def test_key_verdict(on: dict[str, bool], allow: bool, kind: str, powers: tuple[str, ...]) -> None:
    """Read-only keys are used; others are refused unless allow_trading_keys, naming what they can do."""
    verdict = key_verdict(perms(**on), allow)
    assert (verdict.kind, verdict.powers, verdict.usable) == (kind, powers, kind != "refused")


def test_key_flags_and_the_rejected_wording() -> None:
    """check lists every flag; a rejected key is worded once, with Binance's code and message."""
    assert key_flags(perms(margin=True, transfer=True, ip_restricted=True)) == (
        "reading", "margin", "transfer", "ip-restricted",
    )  # fmt: skip
    exc = KeyRejected("alice", -2015, "Invalid API-key, IP, or permissions for action.")
    assert rejected_reason(exc) == (
        "API key rejected by Binance (code -2015): Invalid API-key, IP, or permissions for action."
    )


# -- notices --------------------------------------------------------------------------------------


def test_a_problem_is_told_once_per_kind_until_watched_again() -> None:
    """Retries of one problem page once; a new kind pages again; loading tells 'watched again' once."""
    sink: list[Notice] = []
    tell = AccountNotices("alice", sink)
    dns = Diagnosis("dns", "the exchange's host name does not resolve")
    tell.unreachable(dns)
    tell.unreachable(dns)
    assert [n.rule for n in sink] == ["account_unreachable"] and sink[0].blind
    tell.unreachable(Diagnosis("timeout", "the exchange does not answer in time"))
    assert len(sink) == 2 and tell.problem is not None and tell.problem.kind == "timeout"
    tell.watched()
    assert sink[-1].rule == "account_loaded" and "does not answer in time" in sink[-1].body
    assert tell.problem is None
    tell.watched()  # nothing was wrong since: nothing to tell
    tell.unreachable(dns)  # told again: the account was watched in between
    assert [n.rule for n in sink] == ["account_unreachable"] * 2 + ["account_loaded", "account_unreachable"]


def test_key_notices_risky_once_and_disabled_with_its_kind() -> None:
    """A risky key is said once; a disabled account is told on the blind routes with its reason."""
    sink: list[Notice] = []
    tell = AccountNotices("alice", sink)
    with capture_logs() as logs:
        tell.key_risky("transfer")
        tell.key_risky("transfer")
        tell.key_refused("trade, withdraw")
        tell.disabled("key_rejected", "API key rejected by Binance (code -2015): no")
    assert [n.rule for n in sink] == ["key_risky", "key_refused", "account_disabled"]
    assert sink[0].title == "margin-monitor: key of alice can transfer" and not sink[0].blind
    assert "can trade, withdraw" in sink[1].body and sink[2].blind
    assert tell.problem == Diagnosis("key_rejected", "API key rejected by Binance (code -2015): no")
    assert [e["event"] for e in logs] == [
        "account_key_not_read_only",
        "account_key_refused",
        "account_disabled",
    ]
    event = sink[2].event(("ops",), 5.0)
    assert (event.unit, event.rule, event.routes, event.detail) == (
        ALICE,
        "account_disabled",
        ("ops",),
        sink[2].body,
    )


# -- staleness ------------------------------------------------------------------------------------


def test_staleness() -> None:
    """Not judged just after loading; all units once REST is silent; settling too long; stale symbols."""
    units = {ALICE, PAIR}
    symbols = {ALICE: {"BTCUSDT"}, PAIR: {"ETHUSDT"}}

    def judge(now: float, settling: dict[str, float], stale: set[str], last: float = 990.0) -> set[str]:
        times = Freshness(now=now, loaded_at=950.0, last_snapshot=last, snapshot_interval=60.0, limit=30.0)
        return stale_units(units, times, settling, stale, symbols.__getitem__)

    assert (
        stale_units(units, Freshness(960.0, 950.0, 0.0, 60.0, 30.0), {}, {"BTCUSDT"}, symbols.__getitem__)
        == set()
    )
    assert judge(1000.0, {}, set()) == set()
    assert judge(1000.0, {}, set(), last=800.0) == units  # REST silent > 3 snapshot intervals
    assert judge(1000.0, {PAIR: 980.0}, set()) == set()  # settling 20 s: within the limit
    assert judge(1000.0, {PAIR: 960.0}, set()) == {PAIR}
    assert judge(1000.0, {}, {"BTCUSDT"}) == {ALICE}


# -- re-reads -------------------------------------------------------------------------------------


def test_rereads_coalesce_back_off_and_ask_again_after_disagreement() -> None:
    """The earliest request wins; a failure retries with capped backoff; a disagreement asks again soon."""
    clock = Clock()
    rereads = Rereads(clock, lambda: 0.5)
    assert not rereads.take_due()
    rereads.request(1.0)
    rereads.request()  # sooner: DEBOUNCE
    rereads.request(5.0)  # later: ignored
    assert rereads.at == clock.now + DEBOUNCE and not rereads.take_due()
    clock.now += DEBOUNCE
    assert rereads.take_due() and rereads.at is None and not rereads.take_due()
    delays = [rereads.failed() for _ in range(6)]
    assert delays == sorted(delays) and delays[-1] <= 2.0 and rereads.failures == 6
    rereads.at = None
    rereads.answered(disagreed=True)
    assert rereads.failures == 0 and rereads.at == pytest.approx(clock.now + AGAIN)
    rereads.at = None
    rereads.answered(disagreed=False)
    assert rereads.at is None


# -- settling and stream events -------------------------------------------------------------------


class Events:
    """An AccountEvents on a book holding alice's cross unit, recording what it asks of the watcher."""

    def __init__(self, *, with_engine: bool = True) -> None:
        self.clock = Clock()
        self.book = book()
        self.book.upsert_cross("alice", cross().positions, Bars.classic())
        self.engine = engine_for(self.book, self.clock) if with_engine else None
        self.settling = Settling(self.book, self.clock, self.engine)
        self.rereads = 0
        self.words: list[tuple[str, str, D | None, str]] = []
        self.states: list[StreamState] = []
        self.fatal: list[str] = []
        self.units = {ALICE}
        self.events = AccountEvents(
            "alice", self.book, self.settling, lambda: self.units, self.clock,
            reread=self.reread, word=lambda *w: self.words.append(w), on_state=self.states.append,
            on_fatal=self.fatal.append,
        )  # fmt: skip

    def reread(self) -> None:
        self.rereads += 1


def test_a_borrow_settles_when_both_views_arrive_without_rest() -> None:
    """Balance first: the unit is held and REST asked; the liability that explains it releases it."""
    t = Events()
    assert t.engine is not None
    t.events.on_event(BalanceUpdate("alice", None, "USDT", D("5000"), D(0)))
    assert ALICE in t.engine.settling and t.rereads == 1
    assert t.book.position(ALICE, "USDT") == pos("5000", borrowed="40000")
    t.events.on_event(LiabilityChange("alice", "USDT", D("5000"), D(0), "BORROW"))
    assert ALICE not in t.engine.settling and t.rereads == 1
    assert t.book.position(ALICE, "USDT") == pos("5000", borrowed="45000")


def test_events_that_cannot_be_placed_ask_rest() -> None:
    """An unknown unit, a delta below zero or an unknown liability type: REST decides."""
    t = Events()
    assert t.engine is not None
    t.events.on_event(BalanceUpdate("alice", "ETHUSDT", "ETH", D(1), D(0)))  # not a unit we have
    assert t.rereads == 1 and t.engine.settling == {}
    t.events.on_event(BalanceDelta("alice", None, "BTC", D("-2")))  # 1 BTC held: out of order
    assert t.rereads == 2 and ALICE in t.engine.settling
    assert t.book.position(ALICE, "BTC") == pos("1")  # unchanged: REST will say
    t.events.on_event(LiabilityChange("alice", "USDT", D(1), D(0), "MYSTERY"))
    assert t.rereads == 3


def test_margin_status_fatal_states_and_reconnects() -> None:
    """Binance's word goes to the hook; a fatal state disables; a reconnect forgets and re-reads."""
    t = Events()
    t.events.on_event(MarginStatus("alice", D("1.25"), "MARGIN_CALL"))
    assert t.words == [(ALICE, "MARGIN_CALL", D("1.25"), "risk")]
    down = StreamState("userdata:alice", False, "KeyRejected: no", fatal=True)
    t.events.on_event(down)
    assert t.states == [down] and t.fatal == ["KeyRejected: no"]
    t.events.on_event(BalanceUpdate("alice", None, "USDT", D("5000"), D(0)))
    assert t.settling.ledger.rest_verdict(ALICE, {"USDT": D(0)}) == "disagrees"  # must show the 5,000
    t.events.reconnected()
    assert t.settling.ledger.rest_verdict(ALICE, {"USDT": D(0)}) == "agrees"  # now REST decides alone
    assert t.rereads == 2


def test_without_an_engine_changes_go_straight_into_the_book() -> None:
    """Before the service has an engine (an account loading), a placed change is simply applied."""
    t = Events(with_engine=False)
    t.events.on_event(BalanceUpdate("alice", None, "BTC", D("2"), D(0)))
    assert t.book.position(ALICE, "BTC") == pos("2") and t.rereads == 0


# -- snapshots ------------------------------------------------------------------------------------


def snapshots(cfg: Config, with_engine: bool = True) -> tuple[Snapshots, FakeReads, Clock, list[Any]]:
    clock = Clock()
    b = book()
    words: list[Any] = []
    settling = Settling(b, clock, engine_for(b, clock) if with_engine else None)
    return (
        Snapshots(cfg.accounts[0], b, settling, clock, lambda *w: words.append(w)),
        FakeReads(),
        clock,
        words,
    )


async def test_a_snapshot_puts_cross_and_isolated_units_into_the_book() -> None:
    """Cross and each enabled isolated pair become units with their bars, drift and Binance's word."""
    snap, rest, clock, words = snapshots(config(isolated="all"))
    rest.pairs.append(
        IsolatedPair("BTCUSDT", "BTC", "USDT", pos(), pos(), D("999"), "NORMAL", None, None, False)
    )
    await snap.read(rest)
    assert snap.units == {ALICE, PAIR} and set(snap.book.units()) == snap.units
    assert snap.bars == {"": rest.bars, "ETHUSDT": rest.pair_bars}
    assert snap.bars_of(PAIR) == rest.pair_bars and snap.bars_of(ALICE) == rest.bars
    assert snap.last_snapshot == clock.now and not snap.disagreed
    assert [w[0] for w in words] == [ALICE, PAIR] and all(w[3] == "rest" for w in words)
    assert rest.calls == ["cross_bars", "cross_account", "rates", "isolated_pairs", "isolated_bars", "rates"]
    snap.book.on_price("BTCUSDT", 50000.0)  # priced: the next read reconciles our level with Binance's
    with capture_logs() as logs:
        await snap.read(rest, full=False)  # a settle re-read: the cross bars are known, rates not due
    assert rest.calls[6:] == ["cross_account", "isolated_pairs", "isolated_bars"]
    assert snap.drift == {ALICE: pytest.approx(0.0)}  # ours 50,000 / 40,000 = 1.25, as Binance says
    assert [e["unit"] for e in logs if e["event"] == "level_reconciled"] == [ALICE]


async def test_a_pair_gone_from_rest_leaves_the_book() -> None:
    """A unit REST no longer reports is removed; remove_all empties the account."""
    snap, rest, _, _ = snapshots(config(isolated="all"))
    await snap.read(rest)
    rest.pairs = []
    await snap.read(rest)
    assert snap.units == {ALICE} and snap.book.units() == [ALICE]
    snap.remove_all()
    assert snap.units == set() and snap.book.units() == []


async def test_interest_rates_are_read_hourly_or_for_a_new_borrow_and_retried_after_a_failure() -> None:
    """Weight-100 rate reads only when due; a failed one is tried again after RATES_RETRY."""
    snap, rest, clock, _ = snapshots(config())
    await snap.read(rest)
    clock.now += 60
    await snap.read(rest)
    assert rest.calls.count("rates") == 1
    rest.cross = CrossAccount("MARGIN_1", D("1.2"), {**cross().positions, "BTC": pos("1", borrowed="0.1")})
    await snap.read(rest)  # BTC newly borrowed
    assert rest.calls.count("rates") == 2
    rest.rates = ExchangeUnavailable("rates: gave up")
    clock.now += RATES_EVERY
    await snap.read(rest)
    clock.now += RATES_RETRY - 1
    await snap.read(rest)
    assert rest.calls.count("rates") == 3  # failed, not retried yet
    clock.now += 1
    await snap.read(rest)
    assert rest.calls.count("rates") == 4


async def test_a_rates_read_the_ip_budget_defers_is_asked_again_at_the_next_snapshot() -> None:
    """None from the REST layer (this IP's share of the weight-100 endpoint spent) is no failure:
    nothing is logged or recorded as read, and the very next snapshot asks again."""
    snap, rest, clock, _ = snapshots(config())
    rest.rates = None
    await snap.read(rest)
    clock.now += 1
    await snap.read(rest)
    assert rest.calls.count("rates") == 2
    rest.rates = {"USDT": D("0.00001")}
    await snap.read(rest)
    clock.now += 60
    await snap.read(rest)
    assert rest.calls.count("rates") == 3  # read now: due again only in an hour


async def test_rest_behind_the_stream_is_not_taken_until_it_catches_up() -> None:
    """A streamed balance REST does not show yet keeps the unit settling; REST that shows it settles."""
    snap, rest, clock, _ = snapshots(config())
    engine = snap.settling.engine
    assert engine is not None
    await snap.read(rest)
    events = AccountEvents(
        "alice", snap.book, snap.settling, lambda: snap.units, clock,
        reread=lambda: None, word=lambda *w: None, on_state=lambda s: None, on_fatal=lambda r: None,
    )  # fmt: skip
    events.on_event(BalanceDelta("alice", None, "USDT", D("500")))  # a transfer in: only REST can settle it
    assert ALICE in engine.settling
    await snap.read(rest)  # REST still shows 0 free USDT
    assert snap.disagreed and ALICE in engine.settling
    assert snap.book.position(ALICE, "USDT") == pos("500", borrowed="40000")  # the stream's view is kept
    rest.cross = CrossAccount("MARGIN_1", D("1.26"), {"BTC": pos("1"), "USDT": pos("500", borrowed="40000")})
    await snap.read(rest)
    assert not snap.disagreed and ALICE not in engine.settling


# -- ladders and the roster -----------------------------------------------------------------------


def test_a_units_ladder_is_set_when_new_or_its_bars_change() -> None:
    """Each unit's rungs are resolved against its own bars, again only when those bars change."""
    cfg = config()
    ladders = UnitLadders(cfg, cfg.accounts[0])
    policy = AlertPolicy(PolicyConfig(levels=LADDER), {})
    bars = {ALICE: Bars.classic()}
    ladders.configure(policy, [ALICE, PAIR], bars.get)  # PAIR: no bars yet, left to the default
    assert [r.bar for r in policy.config_for(ALICE).levels] == [1.5, 1.3, 1.1]
    policy.configure_unit(ALICE, None)  # so a re-configuration would show
    ladders.configure(policy, [ALICE], bars.get)
    assert policy.config_for(ALICE).levels == LADDER  # same bars: not set again
    bars[ALICE] = Bars({"normal": D("2"), "liquidation": D("1.2")})
    ladders.configure(policy, [ALICE], bars.get)
    assert [r.bar for r in policy.config_for(ALICE).levels] == [2.0, 1.2]
    policy.configure_unit(ALICE, None)
    ladders.forget()
    ladders.configure(policy, [ALICE], bars.get)
    assert [r.bar for r in policy.config_for(ALICE).levels] == [2.0, 1.2]


def test_roster_keeps_this_shards_accounts_in_config_order() -> None:
    """Without a shard every account is watched; with i/n each account is in exactly one shard."""
    names = [f"acct-{i}" for i in range(12)]
    raw = {
        "accounts": [{"name": n, "api_key": "k", "api_secret": "s"} for n in names],
        "notify": {"routes": {"chat": {"urls": ["json://127.0.0.1:9/x"]}}},
    }
    assert [a.name for a in accounts_in_shard(Config.model_validate(raw))] == names
    shards = [[a.name for a in accounts_in_shard(Config.model_validate({**raw, "shard": f"{i}/3"}))]
              for i in range(3)]  # fmt: skip
    assert sorted(n for s in shards for n in s) == sorted(names)
    assert all(s == [n for n in names if n in s] for s in shards)


# -- the coordinator on a fake REST ---------------------------------------------------------------


def watcher(rest: FakeReads, **account: Any) -> tuple[AccountWatcher, Clock, list[Notice]]:
    """A loaded watcher whose REST is ``rest`` (no connection is made), with the engine passed in."""
    cfg = config(**account)
    clock = Clock()
    b = book()
    notices: list[Notice] = []
    endpoints = Endpoints("http://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9")
    w = AccountWatcher(cfg.accounts[0], cfg, Path("config.yaml"), endpoints, b, lambda s: None, notices,
                       clock=clock, rand=lambda: 0.5, engine=engine_for(b, clock))  # fmt: skip
    w.rest = cast(BinanceRest, rest)
    w.loaded = True
    return w, clock, notices


async def test_an_event_is_reread_after_the_debounce_and_evaluated() -> None:
    """A streamed change asks for a re-read; when due it reads REST, configures ladders and evaluates."""
    rest = FakeReads()
    w, clock, _ = watcher(rest)
    assert w.engine is not None
    await w.refresh()
    assert w.units == {ALICE}
    assert [r.bar for r in w.engine.policy.config_for(ALICE).levels] == [1.5, 1.3, 1.1]  # its own bars
    w.book.on_price("BTCUSDT", 50000.0)
    w.on_event(BalanceDelta("alice", None, "USDT", D("500")))
    assert w.rereads.at == clock.now + DEBOUNCE
    await w.reread_if_due()
    assert rest.calls.count("cross_account") == 1  # not due yet
    clock.now += DEBOUNCE
    rest.cross = CrossAccount("MARGIN_1", D("1.26"), {"BTC": pos("1"), "USDT": pos("500", borrowed="40000")})
    await w.reread_if_due()
    assert rest.calls.count("cross_account") == 2 and ALICE not in w.engine.settling
    assert [o.event.rule for o in [w.engine.outbox.get_nowait() for _ in range(w.engine.outbox.qsize())]] == [
        "normal", "margin_call",
    ]  # fmt: skip


async def test_a_key_rejected_on_reread_disables_the_account_with_one_notice() -> None:
    """KeyRejected while re-reading: units leave the book, one blind notice, diagnosed as key_rejected."""
    rest = FakeReads()
    w, _, notices = watcher(rest)
    await w.refresh()
    rest.fail = KeyRejected("alice", -2015, "Invalid API-key, IP, or permissions for action.")
    await w.refresh()
    assert not w.loaded and w.enabled and w.units == set() and w.book.units() == []
    (notice,) = notices
    assert notice.rule == "account_disabled" and notice.blind
    assert "API key rejected by Binance (code -2015): Invalid API-key" in notice.body
    assert w.problem is not None and w.problem.kind == "key_rejected"
    assert w.blind_entry("USDT")["reason"] == w.problem.reason


async def test_a_failed_reread_is_retried_with_backoff() -> None:
    """An unreachable exchange on re-read keeps the account and schedules the next try."""
    rest = FakeReads()
    w, clock, notices = watcher(rest)
    await w.refresh()
    rest.fail = ExchangeUnavailable("margin/account: gave up", "timeout")
    with capture_logs() as logs:
        await w.refresh()
    assert w.loaded and w.units == {ALICE} and notices == []
    assert w.rereads.failures == 1 and w.rereads.at is not None and w.rereads.at > clock.now
    assert [e["event"] for e in logs] == ["account_refresh_failed"]


def test_build_watchers_hands_every_watcher_the_engine_and_the_hook() -> None:
    """The service passes the engine and Binance's-word hook in: nothing is patched in afterwards."""
    cfg = config()
    b = book()
    engine = engine_for(b, Clock())
    heard: list[Any] = []
    endpoints = Endpoints("http://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9")
    (w,) = build_watchers(cfg, Path("config.yaml"), endpoints, b, lambda s: None, [], engine=engine,
                          on_exchange_word=lambda *word: heard.append(word))  # fmt: skip
    assert w.engine is engine and w.settling.engine is engine
    w.on_event(MarginStatus("alice", D("1.3"), "MARGIN_CALL"))
    assert heard == [(ALICE, "MARGIN_CALL", D("1.3"), "risk")]
