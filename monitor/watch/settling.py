"""The ledger's verdicts turned into the engine's hold and release, for one account's units.

``monitor/risk/ledger.py`` says when a unit's three views (user stream, risk stream, REST) agree;
this piece applies what follows: a unit whose views disagree is held (its level shown, its alert
state frozen), and released and evaluated once they agree. Without an engine yet (an account
loading before the service built one) changes go straight into the book.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from monitor.risk.book import AccountBook
from monitor.risk.ledger import REST_WINS_AFTER, Ledger
from monitor.risk.margin import Position
from monitor.watch.engine import Engine

log = structlog.get_logger(__name__)


class Settling:
    """The ledger of one account's units and the engine (if any) it holds and releases them in."""

    def __init__(self, book: AccountBook, clock: Callable[[], float], engine: Engine | None = None) -> None:
        self.book = book
        self.clock = clock
        self.engine = engine
        self.ledger = Ledger()  # the three views of each unit (monitor/risk/ledger.py)

    def admit(self, uid: str, positions: Mapping[str, Position]) -> bool:
        """Whether a REST snapshot of ``uid`` may go into the book: it shows every balance the user
        stream reported since the views last agreed (else REST is behind or ahead: the unit is held
        and False is returned)."""
        if not self.book.has_unit(uid):
            self.ledger.accept_rest(uid)
            return True
        held = {asset: p.held for asset, p in positions.items()}
        verdict = self.ledger.rest_verdict(uid, held, now=self.clock())
        if verdict == "stands":
            log.warning("stream_never_confirmed_taking_rest", unit=uid, after=REST_WINS_AFTER)
        if verdict != "disagrees":
            return True
        self.ledger.disagree(uid, now=self.clock())
        since = self.ledger.since(uid)
        if self.engine is not None and since is not None:
            self.engine.hold(uid, since)
        log.info("rest_disagrees_with_stream", unit=uid, settling_for=round(self.clock() - (since or 0), 3))
        return False

    def settled(self, uid: str) -> None:
        """A REST snapshot that agrees is in the book: the unit's views agree."""
        self.ledger.accept_rest(uid)
        if self.engine is not None:
            self.engine.release(uid)

    def drop(self, uid: str) -> None:
        """``uid`` left the account (or the book): forget its views."""
        self.ledger.drop(uid)
        if self.engine is not None:
            self.engine.settling.pop(uid, None)

    def apply(self, uid: str, asset: str, position: Position | None) -> bool:
        """Put one streamed change into the book (``None``: one that cannot be placed); the engine
        evaluates it only once settled. True when the streams alone cannot settle the unit (or not
        yet): the caller asks REST."""
        since = self.ledger.since(uid)
        if self.engine is None:
            if position is not None:
                self.book.set_position(uid, asset, position)
            return False
        if since is not None:
            self.engine.hold(uid, since)
        if position is not None:
            self.engine.on_position(uid, asset, position)  # evaluated there unless settling
        if since is None:
            self.engine.release(uid)
            return False
        return True
