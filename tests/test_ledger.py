"""The ledger alone: which combinations of balance, liability and REST views agree
(monitor/risk/ledger.py)."""

from __future__ import annotations

import doctest
from decimal import Decimal as D

import monitor.risk.ledger
from monitor.risk.ledger import REST_WINS_AFTER, Ledger

U = "cross:main"


def test_docstring_examples() -> None:
    """The worked examples in the module's docstrings hold."""
    assert doctest.testmod(monitor.risk.ledger).failed == 0


def test_borrow_settles_in_either_order() -> None:
    """A borrow of 100 USDT (1 hour of interest charged with it): balance then liability, or the reverse."""
    first = Ledger()
    assert first.balance(U, "USDT", D(0), D(100), now=1.0)
    assert not first.liability(U, "USDT", "BORROW", D(100), D("0.01"), now=1.4)
    second = Ledger()
    assert second.liability(U, "USDT", "BORROW", D(100), D("0.01"), now=1.0)
    assert second.since(U) == 1.0
    assert not second.balance(U, "USDT", D(0), D(100), now=2.5)


def test_repay_of_interest_and_principal() -> None:
    """Repaying 100 takes 3 of interest first: free -100 is explained by p=97 + i=3."""
    ledger = Ledger()
    assert ledger.liability(U, "USDT", "REPAY", D(97), D(3), now=0.0)
    assert not ledger.balance(U, "USDT", D(500), D(400), now=0.1)


def test_what_the_streams_cannot_settle_alone() -> None:
    """A trade, a transfer, an unknown liability type and a mismatched amount wait for REST."""
    trade = Ledger()
    trade.balance(U, "ETH", D(10), D(11), now=0.0)
    assert trade.balance(U, "USDT", D(5000), D(2100), now=0.0)
    transfer = Ledger()
    assert transfer.balance(U, "USDT", D(0), D(50), now=0.0)
    odd = Ledger()
    assert odd.liability(U, "USDT", "ADJUSTMENT", D(1), D(0), now=0.0)
    mismatch = Ledger()
    mismatch.balance(U, "USDT", D(0), D(100), now=0.0)
    assert mismatch.liability(U, "USDT", "BORROW", D(90), D(0), now=0.0)


def test_interest_and_order_moves_need_nothing() -> None:
    """An interest posting moves no balance; an order moving free to locked leaves ``held`` as it was."""
    ledger = Ledger()
    assert not ledger.liability(U, "USDT", "INTEREST", D(0), D("0.5"), now=0.0)
    assert not ledger.balance(U, "ETH", D(10), D(10), now=0.0)
    assert ledger.settling() == {}


def test_rest_behind_then_caught_up_and_memory_consumed() -> None:
    """REST showing the old balance is refused; once it shows the streamed one it is taken, and the
    stream's memory ends there (a later REST answer is compared with nothing older)."""
    ledger = Ledger()
    ledger.balance(U, "USDT", D(0), D(50), now=3.0)
    assert ledger.rest_verdict(U, {"USDT": D(0)}) == "disagrees"
    ledger.disagree(U, now=3.3)
    assert ledger.since(U) == 3.0  # settling since the first disagreement, not the last
    assert ledger.rest_verdict(U, {"USDT": D(50), "ETH": D(1)}) != "disagrees"
    ledger.accept_rest(U)
    assert ledger.since(U) is None and ledger.rest_verdict(U, {"USDT": D(7)}) != "disagrees"


def test_a_settled_unit_still_refuses_a_rest_answer_from_before_its_stream() -> None:
    """Borrow settled by its two stream events; a REST answer still showing the old free is behind."""
    ledger = Ledger()
    ledger.balance(U, "USDT", D(0), D(100), now=0.0)
    ledger.liability(U, "USDT", "BORROW", D(100), D(0), now=0.1)
    assert ledger.since(U) is None
    assert ledger.rest_verdict(U, {"USDT": D(0)}) == "disagrees"


def test_reconnect_lets_rest_decide() -> None:
    """After a reconnect events may be lost: what the stream said no longer blocks REST."""
    ledger = Ledger()
    ledger.balance(U, "USDT", D(0), D(100), now=0.0)
    ledger.forget(U)
    assert ledger.rest_verdict(U, {"USDT": D(0)}) != "disagrees"


def test_rest_standing_against_a_stream_value_wins_after_a_while() -> None:
    """A streamed balance REST never shows (its event was wrong or lost): REST answering the same for
    REST_WINS_AFTER seconds is taken, so the unit does not stay settling (then blind) for ever; a
    REST answer that keeps changing (catching up) is not."""
    ledger = Ledger()
    ledger.balance(U, "USDT", D(0), D(5), now=0.0)
    assert ledger.rest_verdict(U, {"USDT": D(0)}, now=0.5) == "disagrees"
    assert ledger.rest_verdict(U, {"USDT": D(0)}, now=0.5 + REST_WINS_AFTER - 0.1) == "disagrees"
    assert ledger.rest_verdict(U, {"USDT": D(0)}, now=0.5 + REST_WINS_AFTER) == "stands"
    moving = Ledger()
    moving.balance(U, "USDT", D(0), D(5), now=0.0)
    for n in range(10):
        assert moving.rest_verdict(U, {"USDT": D(n) / 10}, now=n * 1.0) == "disagrees"
