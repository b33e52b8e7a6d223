"""The symbols still waiting for their first price: the event start-up readiness is decided on.

Readiness itself is the once-a-second job's decision (:mod:`monitor.app.periodic`); what this module
adds is *when* it is asked out of turn: once the market feed has brought a first price for every
symbol the loaded accounts need, instead of at the next tick (up to a period later). A symbol that
never gets a price (refused, delisted) leaves the decision to the tick, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable


class FirstPrices:
    """Which wanted symbols have had no price yet; ``on_complete`` is called when the last one comes."""

    def __init__(self) -> None:
        self.awaiting: set[str] = set()
        self.on_complete: Callable[[], None] = lambda: None

    def expect(self, symbols: Iterable[str], priced: Collection[str]) -> None:
        """Wait also for ``symbols`` that are not among the ``priced`` ones."""
        self.awaiting.update(s for s in symbols if s not in priced)

    def seen(self, symbols: Iterable[str]) -> None:
        """A batch of prices came (called for every batch: a no-op once nothing is awaited)."""
        if self.awaiting:
            self.awaiting.difference_update(symbols)
            if not self.awaiting:
                self.on_complete()
