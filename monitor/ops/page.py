"""The status page: ``/`` on the daemon's HTTP endpoint, offline (no CDN), live by polling.

Routes (added to :mod:`monitor.ops.http`'s app, so the same bearer-token rule as ``/status`` covers them):

- ``/`` — the page (``monitor/ops/static/index.html``); ``/static/{name}`` its script and style;
- ``/page/units`` — every unit as in ``status --json`` plus ``state`` (read from the report when
  it carries one, else derived here), ``reason``, ``firing`` alerts and ``age`` of its data; an
  account not loaded (exchange unreachable, key rejected) is there too, blind with the reason
  (``loaded``: false);
- ``/page/history?unit=ID`` — the unit's last 24 h from :class:`monitor.ops.history.History`
  (``points``: [t, level, min, max]; ``events``: alerts as they fired and resolved).

The browser draws everything itself as SVG (``static/page.js``), so nothing is fetched from outside.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from monitor.ops.history import History

__all__ = ["STATIC", "Feed", "page_routes", "unit_state"]

STATIC = Path(__file__).parent / "static"
SLICE = 20  # units reported between event-loop turns while building /page/units
FILES = {
    "page.js": "text/javascript",
    "page.css": "text/css",
}


def _default(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json(data: object) -> web.Response:
    body = orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS)
    response = web.Response(body=body, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def unit_state(unit: dict[str, Any], blind: bool) -> tuple[str, str]:
    """(state, reason): blind when the engine holds the unit blind (stale feed or REST, whatever the
    report says: its numbers are the last ones computed), else the report's own ``state``/``reason``
    when present, else derived the same way: unpriced → blind, approximate, no_debt, known. Never
    "known" without a level."""
    state = unit.get("state")
    if blind:
        said = str(unit.get("reason") or "") if state == "blind" else ""
        return "blind", said or "no fresh data: the price feed or the account reads are stale"
    if isinstance(state, str) and state:
        return state, str(unit.get("reason") or "")
    unpriced = unit.get("unpriced_assets") or []
    if unpriced:
        return "blind", "no price for " + ", ".join(unpriced)
    if unit.get("approximate"):
        return "approximate", "Cross Margin Pro: level carried from Binance's"
    if unit.get("margin_level") is None:
        return "no_debt", "nothing borrowed"
    return "known", ""


@dataclass
class Feed:
    """What the page reads from the daemon, as plain callables (tests pass their own).

    ``unit_ids`` lists the units; ``status_of`` gives one unit's ``status --json`` dict (an exact
    report with its stress table: about 1 ms). :meth:`units` builds them on the event loop (the
    book is only consistent there) in slices of :data:`SLICE`, yielding between slices so ticks
    never wait long behind a page poll; the result is reused for ``cache_seconds`` so several open
    pages cost one pass.

    With ``live`` (unit → (priced, live level), the book's float level: microseconds), a poll
    recomputes the full dict of at most ``refresh_budget`` units (never computed first, then the
    oldest) plus every unpriced one, and gives the others their live level: with 1,000 units a
    poll costs ~0.1 s of loop time instead of ~1 s, the level and its colour are always current,
    and each unit's ``details_age`` says how old its distances, prices and stress are.
    """

    unit_ids: Callable[[], list[str]]
    status_of: Callable[[str], dict[str, Any]]
    firing: Callable[[str], dict[str, str]]
    blind: Callable[[], set[str]]
    age: Callable[[str], float | None]
    history: History | None
    clock: Callable[[], float]
    cache_seconds: float = 1.0
    live: Callable[[str], tuple[bool, float | None]] | None = None
    refresh_budget: int = 100
    not_loaded: Callable[[], list[dict[str, Any]]] = list  # accounts not loaded: blind cards, with why
    _cached: tuple[float, list[dict[str, Any]]] | None = field(default=None, repr=False)
    _details: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict, repr=False)

    async def units(self) -> list[dict[str, Any]]:
        """The ``/page/units`` list."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        ids = sorted(self.unit_ids())
        details = self._details
        for gone in set(details) - set(ids):
            del details[gone]
        for n, uid in enumerate(self._due(ids), start=1):
            try:
                details[uid] = (time.monotonic(), self.status_of(uid))
            except KeyError:  # removed while we yielded
                details.pop(uid, None)
            if n % SLICE == 0:
                await asyncio.sleep(0)
        blind = self.blind()
        current = set(self.unit_ids())
        out = []
        now = time.monotonic()
        for uid in ids:
            if uid not in details or uid not in current:
                continue
            computed, unit = details[uid]
            if self.live is not None and computed < now - 0.5:
                unit = {**unit, "margin_level": self.live(uid)[1]}
            state, reason = unit_state(unit, uid in blind)
            extra = {"state": state, "reason": reason, "firing": self.firing(uid), "age": self.age(uid)}
            out.append({**unit, **extra, "details_age": now - computed})
        for entry in self.not_loaded():  # never absent from the page: blind, with the reason
            state, reason = unit_state(entry, True)
            extra = {"state": state, "reason": reason, "firing": {}, "age": None, "details_age": 0.0}
            out.append({**entry, **extra})
        self._cached = (now, out)
        return out

    def _due(self, ids: list[str]) -> list[str]:
        """The units whose full dict is computed this poll (see the class docstring)."""
        if self.live is None:
            return ids
        details = self._details
        missing = [u for u in ids if u not in details]
        unpriced = [u for u in ids if u in details and not self.live(u)[0]]
        skip = set(unpriced)
        oldest = sorted((details[u][0], u) for u in ids if u in details and u not in skip)
        return missing + unpriced + [u for _, u in oldest[: self.refresh_budget]]

    def unit_history(self, unit: str) -> dict[str, Any]:
        """The ``/page/history`` document of one unit (blocking: run it in a thread)."""
        now = self.clock()
        if self.history is None:
            return {"unit": unit, "now": now, "points": [], "events": []}
        points = [[p.t, p.level, p.lo, p.hi] for p in self.history.series(unit, now)]
        events = [
            {"t": e.t, "kind": e.kind, "rule": e.rule, "bar": e.bar, "level": e.level}
            for e in self.history.events(unit, now)
        ]
        return {"unit": unit, "now": now, "points": points, "events": events}


def page_routes(feed: Feed) -> Callable[[web.Application], None]:
    """The hook :func:`monitor.ops.http.start_http` calls to add the page's routes to its app."""

    async def index(request: web.Request) -> web.Response:
        body = (STATIC / "index.html").read_bytes()
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound()
        return web.Response(body=(STATIC / name).read_bytes(), content_type=FILES[name], charset="utf-8")

    async def units(request: web.Request) -> web.Response:
        return _json(await feed.units())

    async def history(request: web.Request) -> web.Response:
        unit = request.query.get("unit", "")
        if not unit:
            return web.json_response({"error": "unit is required: /page/history?unit=ID"}, status=400)
        return _json(await asyncio.to_thread(feed.unit_history, unit))

    def add(app: web.Application) -> None:
        app.router.add_get("/", index)
        app.router.add_get("/static/{name}", static)
        app.router.add_get("/page/units", units)
        app.router.add_get("/page/history", history)

    return add
