"""The symbol catalog (``GET /api/v3/exchangeInfo``, weight 20 on the per-IP ``/api`` budget), read
once per daemon and shared by every account, then re-read every ``max_age`` seconds (an hour by
default) so that a pair halted later (``status: BREAK``) reaches the price router
(``AccountBook.set_catalog`` → ``monitor.risk.prices.Router``): its price is no longer taken as live.

Before, every account read its own copy at load: 1,000 accounts cost 20,000 ``/api`` weight at a
cold start (6,000 a minute per IP), for the same answer each time (docs/capacity.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from monitor.exchange.rest import BinanceRest
from monitor.risk.book import AccountBook

__all__ = ["CATALOG_MAX_AGE", "SharedCatalog"]

log = structlog.get_logger(__name__)
CATALOG_MAX_AGE = 3600.0  # s: listings change rarely; an hour bounds how late a halt is seen


class SharedCatalog:
    """One exchangeInfo for the whole daemon, kept in ``book`` (any account's client may read it)."""

    def __init__(
        self, book: AccountBook, max_age: float = CATALOG_MAX_AGE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.book = book
        self.max_age = max_age
        self.clock = clock
        self.read_at: float | None = None
        self.reads = 0
        self._lock = asyncio.Lock()

    async def ensure(self, rest: BinanceRest) -> None:
        """Read the catalog through ``rest`` unless it was read less than ``max_age`` ago; accounts
        loading at once wait for the one read. Raises what the read raises (the load fails)."""
        async with self._lock:
            if self.read_at is not None and self.clock() - self.read_at < self.max_age:
                return
            await self._read(rest)

    async def refresh(self, rest: BinanceRest) -> bool:
        """Re-read now (the periodic job). On failure the catalog in use stays, and False is returned."""
        from monitor.exchange.errors import ExchangeError

        async with self._lock:
            try:
                await self._read(rest)
            except ExchangeError as exc:
                log.warning("catalog_refresh_failed", error=str(exc))
                return False
        return True

    async def _read(self, rest: BinanceRest) -> None:
        listings = await rest.symbol_listings()
        self.book.set_catalog(listings)  # re-routes every unit: a halted pair has no live route
        self.read_at = self.clock()
        self.reads += 1
        halted = sorted(s for s, (_, _, status) in listings.items() if status != "TRADING")
        log.info("catalog_read", symbols=len(listings), not_trading=len(halted))
