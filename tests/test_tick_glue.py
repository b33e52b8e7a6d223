"""The tick glue (monitor/watch/engine.py) driven directly: tick → affected units → policy → outbox.

No sockets: a real AccountBook and AlertPolicy, a manual clock, prices and positions as plain values.
End-to-end behaviour (streams, REST, delivery) is covered by the tests against the simulator.
"""

from __future__ import annotations

from decimal import Decimal as D

from monitor.alerts.policy import AlertPolicy, LevelRule, PolicyConfig
from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars, Position
from monitor.watch.engine import TURN_EVENTS, TURN_UNITS, Engine, Outgoing

LADDER = (
    LevelRule("normal", 1.5, ("chat",)),
    LevelRule("margin_call", 1.3, ("chat",)),
    LevelRule("liquidation", 1.1, ("phone",)),
)
ALICE, BOB = "cross:alice", "cross:bob"


class Clock:
    """Manual time: tests move it, nothing sleeps."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pos(free: str = "0", borrowed: str = "0") -> Position:
    return Position(D(free), D(0), D(borrowed), D(0))


def setup(*, for_seconds: float = 0.0) -> tuple[Engine, AccountBook, Clock]:
    """alice holds 1 BTC against 40,000 USDT owed; bob 10 ETH against 20,000 (nothing priced yet)."""
    book = AccountBook()
    book.set_catalog({"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT")})
    book.upsert_cross("alice", {"BTC": pos("1"), "USDT": pos(borrowed="40000")}, Bars.classic())
    book.upsert_cross("bob", {"ETH": pos("10"), "USDT": pos(borrowed="20000")}, Bars.classic())
    config = PolicyConfig(levels=LADDER, for_seconds=for_seconds, blind_routes=("ops",))
    clock = Clock()
    return Engine(book, AlertPolicy(config, {}), clock=clock), book, clock


def drain(engine: Engine) -> list[Outgoing]:
    out = []
    while not engine.outbox.empty():
        out.append(engine.outbox.get_nowait())
    return out


def seen(engine: Engine) -> list[tuple[str, str, str]]:
    return [(o.event.kind, o.event.unit, o.event.rule) for o in drain(engine)]


def test_a_tick_evaluates_only_the_units_holding_its_symbol() -> None:
    """A BTC tick moves alice only (bob, below his bar too, waits for an ETH tick)."""
    engine, _, _ = setup()
    engine.on_prices({"BTCUSDT": 50000.0})  # alice 1.25
    assert seen(engine) == [("firing", ALICE, "normal"), ("firing", ALICE, "margin_call")]
    engine.on_prices({"ETHUSDT": 2800.0})  # bob 1.4
    assert seen(engine) == [("firing", BOB, "normal")]
    assert engine.ticks == 2


def test_a_price_inside_the_band_reaches_no_policy() -> None:
    """After an evaluation the book holds the policy's band: a move inside it touches no unit."""
    engine, book, clock = setup()
    engine.on_prices({"BTCUSDT": 50000.0})
    drain(engine)
    assert book.on_price("BTCUSDT", 50500.0) == ()  # 1.2625: inside (1.1, 1.3 x 1.02]
    clock.now += 5
    engine.on_prices({"BTCUSDT": 55000.0})  # 1.375: past margin_call's hysteresis, still under 1.5
    assert seen(engine) == [("resolved", ALICE, "margin_call")]
    assert engine.last_tick == clock.now


def test_outgoing_carries_its_report_and_the_ticks_send_time() -> None:
    """Each queued event comes with the unit's report; tick-driven ones with the frame's send time."""
    engine, _, _ = setup()
    engine.on_prices({"BTCUSDT": 50000.0}, sent_at=999.5)
    first = drain(engine)[0]
    assert first.tick_time == 999.5
    assert first.report.unit == ALICE and first.report.margin_level == 1.25
    engine.on_position(ALICE, "BTC", pos("0.85"))  # 1.0625: a position change, not a tick
    (after,) = drain(engine)
    assert (after.event.kind, after.event.rule, after.tick_time) == ("firing", "liquidation", None)
    assert after.report.margin_level == 1.0625


def test_a_position_change_is_applied_and_evaluated_for_known_units_only() -> None:
    """on_position moves the unit's level and runs its policy; an unknown unit is ignored."""
    engine, book, _ = setup()
    engine.on_prices({"BTCUSDT": 70000.0})  # alice 1.75: quiet
    assert seen(engine) == []
    engine.on_position(ALICE, "BTC", pos("0.8"))  # 1.4
    assert seen(engine) == [("firing", ALICE, "normal")]
    assert book.level(ALICE) == 1.4
    engine.on_position("cross:nobody", "BTC", pos("1"))
    assert "cross:nobody" not in book.units() and seen(engine) == []


def test_a_settling_unit_follows_prices_but_alerts_only_once_released() -> None:
    """While held, ticks move the book's level but not the policy; release evaluates at once."""
    engine, book, _ = setup()
    engine.on_prices({"BTCUSDT": 70000.0})
    engine.hold(ALICE, since=1000.0)
    engine.on_prices({"BTCUSDT": 50000.0})
    assert seen(engine) == [] and book.level(ALICE) == 1.25
    assert engine.report(ALICE).settling
    engine.release(ALICE)
    assert seen(engine) == [("firing", ALICE, "normal"), ("firing", ALICE, "margin_call")]
    assert not engine.report(ALICE).settling and ALICE not in engine.settling


def test_a_stale_unit_goes_blind_and_is_evaluated_when_fresh_again() -> None:
    """set_staleness freezes a unit with its reason (one BLIND); fresh again, it is evaluated at once."""
    engine, book, clock = setup()
    engine.on_prices({"BTCUSDT": 70000.0})
    engine.set_staleness({ALICE}, {ALICE: "BTCUSDT: no price for 40 s"})
    (blind,) = drain(engine)
    assert (blind.event.kind, blind.event.unit) == ("blind", ALICE)
    assert book.state(ALICE)[1] == "BTCUSDT: no price for 40 s"
    engine.on_prices({"BTCUSDT": 50000.0})
    assert seen(engine) == []  # frozen: no level alert while blind
    clock.now += 1
    engine.set_staleness(set())
    kinds = seen(engine)
    assert kinds[0] == ("blind_resolved", ALICE, "blind")
    assert ("firing", ALICE, "margin_call") in kinds
    assert engine.stale == set()


def test_timers_fire_a_for_window_and_skip_settling_units() -> None:
    """A level under a bar for `for_seconds` fires on the timer tick; a settling unit waits."""
    engine, _, clock = setup(for_seconds=10.0)
    engine.on_prices({"BTCUSDT": 60000.0, "ETHUSDT": 2800.0})  # alice 1.5, bob 1.4: both pending
    assert seen(engine) == []
    engine.hold(BOB, since=clock.now)
    clock.now += 11
    engine.tick_timers()
    assert seen(engine) == [("firing", ALICE, "normal")]
    engine.release(BOB)
    assert seen(engine) == [("firing", BOB, "normal")]


def crowd(n: int, for_seconds: float = 0.0) -> tuple[Engine, AccountBook, list[str]]:
    """``n`` accounts, each 1 BTC against 40,000 USDT owed (1.25 at 50,000: two bars crossed)."""
    book = AccountBook()
    book.set_catalog({"BTCUSDT": ("BTC", "USDT")})
    units = [
        book.upsert_cross(f"a{i:03d}", {"BTC": pos("1"), "USDT": pos(borrowed="40000")}, Bars.classic())
        for i in range(n)
    ]
    config = PolicyConfig(levels=LADDER, for_seconds=for_seconds, blind_routes=("ops",))
    return Engine(book, AlertPolicy(config, {}), clock=Clock()), book, units


def test_a_batch_moving_many_units_is_evaluated_in_bounded_slices() -> None:
    """A crash moving 40 units at once: apply_prices evaluates none; each evaluate_due call evaluates
    at most TURN_UNITS units and stops once TURN_EVENTS alerts are queued (one unit's alerts are
    never split); the slices together queue exactly what on_prices does at once, with the tick's time."""
    whole, _, units = crowd(40)
    whole.on_prices({"BTCUSDT": 50000.0}, sent_at=7.0)
    expected = sorted(seen(whole))
    assert len(expected) == 80

    sliced, book, _ = crowd(40)
    sliced.apply_prices({"BTCUSDT": 50000.0}, sent_at=7.0)
    assert set(sliced.due) == set(units) and sliced.outbox.empty()
    slices: list[list[Outgoing]] = []
    more = True
    while more:
        due_before = len(sliced.due)
        more = sliced.evaluate_due()
        slices.append(drain(sliced))
        assert due_before - len(sliced.due) <= TURN_UNITS
        assert len(slices[-1]) < TURN_EVENTS + 2  # stopped after the unit that reached the bound
    assert not sliced.due and len(slices) >= 80 // (TURN_EVENTS + 1)
    assert sorted((o.event.kind, o.event.unit, o.event.rule) for s in slices for o in s) == expected
    assert {o.tick_time for s in slices for o in s} == {7.0}
    assert book.on_price("BTCUSDT", 50000.0) == ()  # every band set: nothing left to evaluate


def test_units_inside_their_band_are_evaluated_turn_units_at_a_time() -> None:
    """Units moved out of their band with nothing to say yet (a bar crossed, its `for` window
    pending) queue nothing: a slice stops at TURN_UNITS of them."""
    engine, _, units = crowd(3 * TURN_UNITS, for_seconds=30.0)
    engine.on_prices({"BTCUSDT": 80000.0})  # 2.0: every unit evaluated, nothing to say
    assert seen(engine) == []
    engine.apply_prices({"BTCUSDT": 58000.0})  # 1.45: under 1.5, pending for 30 s
    assert len(engine.due) == len(units)
    assert engine.evaluate_due() and len(engine.due) == 2 * TURN_UNITS
    assert engine.evaluate_due() and engine.evaluate_due() is False
    assert seen(engine) == []


def test_a_unit_that_leaves_the_book_while_due_is_skipped() -> None:
    """An isolated pair closed or an account disabled between the tick and the unit's turn: no
    evaluation, no KeyError in the market feed's task."""
    engine, book, units = crowd(2)
    engine.apply_prices({"BTCUSDT": 50000.0})
    book.remove_unit(units[0])
    while engine.evaluate_due():
        pass
    assert {o.event.unit for o in drain(engine)} == {units[1]}
