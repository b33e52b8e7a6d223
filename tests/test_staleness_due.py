"""The once-a-second job looks at what can have changed, not at every account or unit (each walk
of 1,000 costs ms of the loop on a busy machine: bench/crash.py). The staleness step asks only the
watchers that can have a stale unit (monitor/app/periodic.py ``Staleness``,
monitor/watch/staleness.py ``RestDeadlines``): structural counts of what a second looks at, and the
same stale set as asking every watcher, on any history of loads, re-reads, disagreements, silent
symbols and clock steps. The opinion sweep is given the active units; the loader is told of an
unloaded account. Real watchers, book and engine; the clock is injected."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from test_periodic import Clock

from monitor.alerts.opinion import OwnView, SecondOpinion
from monitor.alerts.policy import AlertPolicy, LevelRule
from monitor.app.periodic import Staleness, Summary
from monitor.app.periodic import summary as summary_of
from monitor.config.model import AlertsConfig, Config
from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars, Position
from monitor.watch.accounts import AccountWatcher, Endpoints
from monitor.watch.engine import Engine, RoundRobin
from monitor.watch.ladder import default_policy

LIMIT = 30.0  # alerts.stale_after; snapshot_interval 60 s: REST silent after 180 s
SILENT_AFTER = 180.0


class Daemon:
    """``n`` loaded-or-not watchers of one cross unit each, sharing a book, an engine and a clock."""

    def __init__(self, n: int) -> None:
        self.clock = Clock()
        self.book = AccountBook(quote="USDT")
        self.engine = Engine(
            self.book, AlertPolicy(default_policy(AlertsConfig(), ("hook",)), {}), clock=self.clock
        )
        names = [f"a{i}" for i in range(n)]
        config = Config.model_validate(
            {
                "accounts": [{"name": n, "api_key": f"{n}-key", "api_secret": f"{n}-secret"} for n in names],
                "notify": {"routes": {"hook": {"urls": ["json://127.0.0.1:9/hook"]}}},
            }
        )
        endpoints = Endpoints(
            "http://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9"
        )
        self.watchers = [
            AccountWatcher(a, config, Path("config.yaml"), endpoints, self.book, lambda _: None, [],
                           clock=self.clock, engine=self.engine)
            for a in config.accounts
        ]  # fmt: skip
        self.units = []
        for w in self.watchers:
            positions = {
                "BTC": Position(D(1), D(0), D(0), D(0)),
                "USDT": Position(D(0), D(0), D(18750), D(0)),
            }
            uid = self.book.upsert_cross(w.name, positions, Bars.classic())
            w.snapshots.units = {uid}
            self.units.append(uid)
        self.book.on_price("BTCUSDT", 30_000.0)
        self.ages = {"BTCUSDT": 0.5}
        self.staleness = Staleness(
            self.book, self.engine, self.watchers, ages=lambda: self.ages, refused=frozenset, limit=LIMIT
        )

    def load(self, i: int, answered: float | None = None) -> None:
        w = self.watchers[i]
        w.loaded, w.loaded_at = True, self.clock.now - 3_600
        w.snapshots.last_snapshot = self.clock.now if answered is None else answered

    def every_watcher_asked(self) -> set[str]:
        """What the step said when it asked each watcher every second (before this change)."""
        stale_symbols = {s for s, age in self.ages.items() if age > LIMIT}
        asked = set().union(*(w.stale_units(stale_symbols, LIMIT) for w in self.watchers))
        return asked | set(self.book.unvalued_units())


def test_a_second_looks_only_at_the_watchers_whose_rest_deadline_passed() -> None:
    d = Daemon(300)
    for i in range(300):  # answered 1 s apart: one REST deadline a second from 1,180 s
        d.load(i, answered=1_000.0 + i)
    d.clock.now = 1_000.0 + SILENT_AFTER - 0.5
    assert d.staleness() == set()
    assert d.staleness.deadlines.looked_at == 300  # the first second takes every deadline
    assert d.staleness() == set()
    assert (d.staleness.deadlines.looked_at, d.staleness.asked) == (0, 0)  # then: nothing due
    d.clock.now = 1_000.0 + SILENT_AFTER + 10.5  # the deadlines of a0 … a10 passed
    assert d.staleness() == set(d.units[:11]) == d.engine.stale
    assert (d.staleness.deadlines.looked_at, d.staleness.asked) == (11, 11)
    assert d.staleness() == set(d.units[:11])  # still silent: looked at (and asked) each second
    assert (d.staleness.deadlines.looked_at, d.staleness.asked) == (11, 11)
    for i in range(11):
        d.watchers[i].snapshots.last_snapshot = d.clock.now  # REST answers again
    assert d.staleness() == set() == d.engine.stale
    assert (d.staleness.deadlines.looked_at, d.staleness.asked) == (11, 0)  # back to the heap
    assert d.staleness() == set()
    assert (d.staleness.deadlines.looked_at, d.staleness.asked) == (0, 0)


def test_a_settling_unit_asks_its_own_watcher_only() -> None:
    d = Daemon(50)
    for i in range(50):
        d.load(i)
    d.staleness()
    d.engine.settling[d.units[7]] = d.clock.now
    assert d.staleness() == set() and d.staleness.asked == 1
    d.clock.now += LIMIT + 1  # disagreeing for longer than the limit
    assert d.staleness() == {d.units[7]} and d.staleness.asked == 1


def test_a_silent_symbol_asks_every_watcher_as_before() -> None:
    d = Daemon(20)
    for i in range(20):
        d.load(i)
    d.ages["BTCUSDT"] = LIMIT + 1
    assert d.staleness() == set(d.units) and d.staleness.asked == 20


def test_a_wall_clock_step_back_takes_every_deadline_anew() -> None:
    """REST answers after the clock stepped back: its new deadline is earlier than the one kept."""
    d = Daemon(3)
    for i in range(3):
        d.load(i)
    assert d.staleness() == set()  # deadlines at 1,180 s
    d.clock.now -= 100.0
    d.watchers[1].snapshots.last_snapshot = d.clock.now  # answered at 900 s: silent after 1,080 s
    assert d.staleness() == set()
    d.clock.now += SILENT_AFTER + 0.5
    assert d.staleness() == {d.units[1]} == d.every_watcher_asked()


EDGES = (SILENT_AFTER - 0.5, SILENT_AFTER + 0.5)  # just before and after REST counts as silent
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["wait", "answer", "load", "unload", "refuse", "settle", "settled", "symbol", "back"]
        ),
        st.integers(0, 3),
        st.sampled_from(
            [0.0, 0.5, 1.0, LIMIT - 0.5, LIMIT + 0.5, 100.0, SILENT_AFTER - 0.5, SILENT_AFTER + 0.5]
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_the_stale_set_is_the_one_every_watcher_would_give(ops: list[tuple[str, int, float]]) -> None:
    """Any history: each second's stale set is exactly what asking every watcher gives."""
    d = Daemon(4)
    for op, i, x in ops:
        w = d.watchers[i]
        if op == "wait":
            d.clock.now += x
        elif op == "back":  # a wall-clock step back
            d.clock.now -= x
        elif op == "answer":
            w.snapshots.last_snapshot = d.clock.now
        elif op == "load":
            w.loaded, w.loaded_at = True, d.clock.now
        elif op == "unload":
            w.loaded = False
        elif op == "refuse":
            w.enabled = not w.enabled
        elif op == "settle":
            d.engine.settling.setdefault(d.units[i], d.clock.now - x)
        elif op == "settled":
            d.engine.settling.pop(d.units[i], None)
        else:
            d.ages["BTCUSDT"] = x
        expected = d.every_watcher_asked()
        assert d.staleness() == expected
        assert d.engine.stale == expected


# -- the other walks of the once-a-second job -----------------------------------------------------

WORDS = st.lists(
    st.tuples(
        st.sampled_from(["cross:a", "cross:b", "isolated:a:ETHUSDT", "cross:c"]),
        st.sampled_from(["EXCESSIVE", "NORMAL", "MARGIN_CALL", "PRE_LIQUIDATION", "FORCE_LIQUIDATION"]),
        st.sampled_from(["stream", "rest"]),
        st.sampled_from([None, 1.05, 1.2, 1.4, 2.0]),  # our level then (None: no debt)
        st.sampled_from([0.0, 1.0, 6.0, 20.0]),  # seconds before it
        st.booleans(),  # checked at once (else only noted: the sweep decides later)
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(WORDS)
def test_the_opinion_sweep_is_given_the_units_a_walk_of_every_unit_finds(
    words: list[tuple[str, str, str, float | None, float, bool]],
) -> None:
    """``SecondOpinion.active_units`` (what the once-a-second sweep decides, not a walk of every
    unit Binance spoke about) is the walk's answer, in its order, after any words and checks."""
    rules = (LevelRule("normal", 1.5, ("ops",)), LevelRule("margin_call", 1.3, ("ops",)))
    bars = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}
    opinion, now = SecondOpinion(), 1_000.0
    for unit, status, source, level, wait, check in words:
        now += wait
        opinion.note(unit, status, level, now, source=source)
        own = OwnView(level=level, firing={}, rules=rules, bars=bars)
        if check:
            opinion.check(unit, now, own)
        assert opinion.active_units() == [u for u in opinion.units() if opinion.active(u)]
        for u in opinion.active_units():  # the sweep
            opinion.check(u, now, own)
        assert opinion.active_units() == [u for u in opinion.units() if opinion.active(u)]


def test_a_watcher_unloaded_tells_the_loader() -> None:
    """``disable`` (key revoked) tells ``on_unloaded``: the loader retries it, without a look at
    every account each second for one that is not loaded."""
    d = Daemon(2)
    told: list[str] = []
    for w in d.watchers:
        w.on_unloaded.append(lambda w: told.append(w.name))
    d.load(0)
    d.load(1)
    d.watchers[1].disable("key revoked")
    assert told == ["a1"] and not d.watchers[1].loaded
    d.watchers[1].disable("again")  # not loaded: nothing more
    assert told == ["a1"]


@given(st.integers(0, 30), st.integers(1, 8), st.integers(0, 5))
def test_the_metrics_slice_is_the_one_the_rotated_copy_gave(n: int, batch: int, calls: int) -> None:
    """``RoundRobin.take`` copies its slice, not every unit: the same units as the rotated copy."""
    items = tuple(f"u{i}" for i in range(n))
    fast, start = RoundRobin(batch), 0
    for _ in range(calls + 1):
        if n <= batch:
            assert fast.take(items) == items
            continue
        start %= n
        assert list(fast.take(items)) == (list(items[start:]) + list(items[:start]))[:batch]
        start += batch


def test_the_unit_ids_tuple_is_kept_until_a_unit_comes_or_goes() -> None:
    """The periodic jobs (metrics sweep, history, status summary) share one tuple of unit ids, not a
    copy of every id each second."""
    d = Daemon(3)
    ids = d.book.unit_ids()
    assert ids == tuple(d.book.units()) and d.book.unit_ids() is ids
    d.book.on_price("BTCUSDT", 29_000.0)  # prices, levels: the same units
    assert d.book.unit_ids() is ids
    d.book.remove_unit(d.units[1])
    assert d.book.unit_ids() == (d.units[0], d.units[2])
    uid = d.book.upsert_cross("a9", {"BTC": Position(D(1), D(0), D(0), D(0))}, Bars.classic())
    assert d.book.unit_ids() == (d.units[0], d.units[2], uid)
    summary = Summary(d.book, d.engine)
    assert summary() == summary_of(d.book, d.engine)


def test_membership_is_asked_of_the_book_not_of_a_copy_of_every_id() -> None:
    """``has_unit`` answers as ``in units()`` does, and the engine's per-event paths (a balance
    change, a release, blind/fresh) never copy the list of every unit id."""
    d = Daemon(3)
    gone = d.units[1]
    assert all(d.book.has_unit(u) for u in d.units) and not d.book.has_unit("nobody")
    d.book.remove_unit(gone)
    assert not d.book.has_unit(gone) and d.book.has_unit(d.units[0])
    copies = 0
    every_id = d.book.units

    def counted() -> list[str]:
        nonlocal copies
        copies += 1
        return every_id()

    d.book.units = counted  # type: ignore[method-assign]
    position = Position(D(2), D(0), D(0), D(0))
    d.engine.on_position(d.units[0], "BTC", position)
    d.engine.on_position(gone, "BTC", position)  # a unit gone meanwhile: ignored, as before
    d.engine.hold(d.units[0], 0.0)
    d.engine.release(d.units[0])
    d.engine.set_staleness({d.units[0]}, {})
    d.engine.set_staleness(set(), {})
    d.engine.tick_timers()
    assert copies == 0


def test_a_blind_unit_that_leaves_the_book_thaws_without_a_report() -> None:
    """A blind unit removed from the book (an isolated pair closed) used to raise KeyError in the
    next second's thaw (its "resolved" had no report to go with): the once-a-second job stopped
    there. Now the thaw goes on, the event is said in the log, and the other units are untouched."""
    from structlog.testing import capture_logs

    d = Daemon(3)
    gone, kept = d.units[1], d.units[0]
    d.engine.set_staleness({gone, kept}, {gone: "test", kept: "test"})
    while not d.engine.outbox.empty():
        d.engine.outbox.get_nowait()
    d.book.remove_unit(gone)
    with capture_logs() as logs:
        d.engine.set_staleness(set(), {})
    assert d.engine.stale == set()
    queued = [d.engine.outbox.get_nowait().event for _ in range(d.engine.outbox.qsize())]
    assert {e.unit for e in queued} == {kept}
    departed = [entry for entry in logs if entry["event"] == "alert_for_departed_unit"]
    assert [entry["unit"] for entry in departed] == [gone]
