"""The page's data (monitor.ops.page.Feed): live levels on every poll, full details within a budget,
and the unit state read from the report when present, derived otherwise."""

from __future__ import annotations

from typing import Any

from monitor.ops.page import Feed, unit_state


class Book:
    """A stand-in for the daemon's accessors: counts the exact reports asked for."""

    def __init__(self, n: int) -> None:
        self.levels: dict[str, float | None] = {f"cross:u{i}": 2.0 for i in range(n)}
        self.priced = dict.fromkeys(self.levels, True)
        self.reports: list[str] = []

    def status_of(self, unit: str) -> dict[str, Any]:
        self.reports.append(unit)
        return {
            "unit": unit,
            "margin_level": self.levels[unit],
            "unpriced_assets": [] if self.priced[unit] else ["X"],
        }

    def feed(self, budget: int) -> Feed:
        return Feed(
            unit_ids=lambda: list(self.levels),
            status_of=self.status_of,
            firing=lambda u: {},
            blind=set,
            age=lambda u: 1.0,
            history=None,
            clock=lambda: 0.0,
            cache_seconds=0.0,
            live=lambda u: (self.priced[u], self.levels[u]),
            refresh_budget=budget,
        )


async def test_first_poll_computes_all_then_the_budget_oldest_first() -> None:
    """Poll 1: every unit's report; later polls: ``refresh_budget`` of them, oldest first, so each
    is refreshed within n / budget polls."""
    book = Book(10)
    feed = book.feed(budget=3)
    assert len(await feed.units()) == 10 and len(book.reports) == 10
    seen: list[str] = []
    for _ in range(4):
        book.reports.clear()
        await feed.units()
        assert len(book.reports) == 3
        seen += book.reports
    assert set(seen) == set(book.levels)


async def test_levels_are_live_and_unpriced_units_always_recomputed() -> None:
    """A unit whose details are old shows the book's live level; an unpriced one is reported exactly
    on every poll (it must show as blind, never with an old level)."""
    book = Book(5)
    feed = book.feed(budget=0)
    await feed.units()
    feed._details = {u: (t - 10.0, d) for u, (t, d) in feed._details.items()}  # make them old
    book.levels["cross:u1"] = 1.2
    book.priced["cross:u2"] = False
    book.reports.clear()
    units = {u["unit"]: u for u in await feed.units()}
    assert units["cross:u1"]["margin_level"] == 1.2 and units["cross:u1"]["details_age"] >= 10
    assert book.reports == ["cross:u2"]
    assert units["cross:u2"]["state"] == "blind" and units["cross:u2"]["reason"] == "no price for X"


async def test_removed_units_disappear() -> None:
    book = Book(3)
    feed = book.feed(budget=1)
    await feed.units()
    del book.levels["cross:u0"]
    assert [u["unit"] for u in await feed.units()] == ["cross:u1", "cross:u2"]


def test_state_from_the_report_wins_over_the_derived_one() -> None:
    """When the report carries ``state``/``reason`` (the unit-state work), the page shows those."""
    assert unit_state({"state": "approximate", "reason": "Pro"}, blind=False) == ("approximate", "Pro")
    assert unit_state({"margin_level": 1.4, "unpriced_assets": []}, blind=True)[0] == "blind"
    assert unit_state({"state": "known", "margin_level": 1.4}, blind=True)[0] == "blind"  # stale wins
    assert unit_state({"margin_level": None, "unpriced_assets": []}, blind=False)[0] == "no_debt"
    assert unit_state({"margin_level": 1.4, "unpriced_assets": []}, blind=False) == ("known", "")
