"""The daemon's history job: samples every unit's level into :class:`monitor.ops.history.History` and
keeps each asset's beta to BTC (for the stress table) fresh from the recorded prices.

The service calls :meth:`Recorder.note` from its alert pump (an append, no I/O) and
:meth:`Recorder.sample` from a periodic job; the disk work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from monitor.alerts.policy import AlertEvent
from monitor.ops.history import Event, History
from monitor.risk.book import AccountBook
from monitor.risk.stress import Beta, estimate_beta

log = structlog.get_logger(__name__)

__all__ = ["Recorder"]

YIELD_EVERY = 50  # units read between event-loop turns (200 held the loop 3-6 ms on a busy machine)


class Recorder:
    """Feeds one :class:`History` from one :class:`AccountBook`."""

    def __init__(
        self, history: History, book: AccountBook, clock: Callable[[], float], bridge: str = "BTC"
    ) -> None:
        self.history = history
        self.book = book
        self.clock = clock
        self.bridge = bridge
        self.betas: dict[str, Beta] = {}
        self._beta_minute = -1

    def note(self, event: AlertEvent) -> None:
        """Remember an alert for the next sample (called from the alert pump)."""
        self.history.note_event(Event(event.unit, event.at, event.kind, event.rule, event.bar, event.level))

    async def sample(self, blind: Iterable[str] = ()) -> None:
        """Record every priced, not blind unit's level now, the alerts since last time and the prices."""
        now = self.clock()
        skip = set(blind)
        levels: dict[str, float | None] = {}
        for n, unit in enumerate(self.book.unit_ids(), start=1):
            if unit not in skip and self.book.is_priced(unit):
                levels[unit] = self.book.level(unit)
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        prices = dict(self.book.prices.prices)
        events = self.history.take_events()
        await asyncio.to_thread(self.history.record, now, levels, events, prices)
        minute = int(now // 60)
        if minute != self._beta_minute:
            self._beta_minute = minute
            await self.refresh_betas(now)

    async def _assets(self) -> set[str]:
        assets: set[str] = set()
        for n, unit in enumerate(self.book.unit_ids(), start=1):
            assets.update(self.book.holdings(unit).prices)
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return assets

    async def refresh_betas(self, now: float) -> None:
        """Re-estimate each held asset's beta to BTC from the recorded minutes."""
        routes = {}
        for asset in await self._assets() | {self.bridge}:
            route = self.book.router.route(asset)
            if route is not None and route.symbols:
                routes[asset] = route.symbols
        if self.bridge not in routes:
            self.betas = {}
            return
        symbols = {s for symbols in routes.values() for s in symbols}
        series = await asyncio.to_thread(self.history.prices, symbols, now)

        def asset_series(path: tuple[str, ...]) -> list[tuple[float, float]]:
            by_minute = [dict(series.get(s, [])) for s in path]
            out = []
            for t in sorted(by_minute[0]):
                price = 1.0
                for table in by_minute:
                    if t not in table:
                        break
                    price *= table[t]
                else:
                    out.append((t, price))
            return out

        btc = asset_series(routes[self.bridge])
        self.betas = {
            a: estimate_beta(asset_series(path), btc) for a, path in routes.items() if a != self.bridge
        }
