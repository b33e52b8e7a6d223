"""The account book: incremental levels on ticks, band exits, pricing routes, exact reports."""

from __future__ import annotations

import gc
import math
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars, Position, cross_level, isolated_level, value_positions
from monitor.risk.prices import PriceBook, Router, exact_price
from monitor.risk.report import unit_id

INF = math.inf
CLASSIC = Bars.classic()
CATALOG: dict[str, tuple[str, ...]] = {
    "BTCUSDT": ("BTC", "USDT"),
    "ETHUSDT": ("ETH", "USDT"),
    "ETHBTC": ("ETH", "BTC"),
    "XYZBTC": ("XYZ", "BTC"),
    "SOLUSDT": ("SOL", "USDT"),
    "USDTBRL": ("USDT", "BRL"),  # BRL: inverse, 1 / p
    "BTCABC": ("BTC", "ABC"),  # ABC: 1 / BTCABC x BTCUSDT (inverse leg into the BTC bridge)
    "DEFETH": ("DEF", "ETH"),  # DEF: DEFETH x ETHUSDT (through ETH)
    "OLDUSDT": ("OLD", "USDT", "BREAK"),  # OLD: halted, no live route
}


def pos(free: str = "0", locked: str = "0", borrowed: str = "0", interest: str = "0") -> Position:
    return Position(D(free), D(locked), D(borrowed), D(interest))


def long_account() -> dict[str, Position]:
    """A = 0.5 BTC + 5 ETH; L = 32,400 USDT (see the worked examples)."""
    return {"BTC": pos(free="0.5"), "ETH": pos(free="5"), "USDT": pos(borrowed="32000", interest="400")}


def make_book(**kwargs: object) -> AccountBook:
    book = AccountBook(**kwargs)  # type: ignore[arg-type]
    book.set_catalog(CATALOG)
    return book


def test_cross_level_and_report_follow_ticks() -> None:
    """At BTC 60,000 and ETH 3,000 the level is 45,000 / 32,400; the report carries the exact answers."""
    book = make_book()
    uid = book.upsert_cross("alice", long_account(), CLASSIC)
    assert uid == unit_id("alice")
    assert book.symbols_needed() == {"BTCUSDT", "ETHUSDT"}
    book.on_price("BTCUSDT", 60000.0)
    assert not book.is_priced(uid) and book.level(uid) is None
    book.on_price("ETHUSDT", 3000.0)
    assert book.is_priced(uid)
    assert book.level(uid) == pytest.approx(45000 / 32400, rel=1e-12)
    r = book.report(uid)
    assert r.kind == "cross" and r.quote == "USDT" and r.symbol is None
    assert r.margin_level == pytest.approx(45000 / 32400)
    assert r.total_asset_value == pytest.approx(45000) and r.total_liability_value == pytest.approx(32400)
    assert r.distances == {
        "normal": pytest.approx(0.08),  # below the normal bar: the rise that brings it back
        "margin_call": pytest.approx(-0.064),
        "liquidation": pytest.approx(-0.208),
    }
    assert r.liquidation_distance == pytest.approx(-0.208)
    assert r.liquidation_prices == {"BTC": pytest.approx(41280), "ETH": pytest.approx(1128)}
    assert r.restore_target == 1.5
    assert r.repay == {"USDT": pytest.approx(2400)}
    assert r.add_collateral == {
        "USDT": pytest.approx(3600),
        "BTC": pytest.approx(0.06),
        "ETH": pytest.approx(1.2),
    }
    assert r.hours_to_bars == {} and not r.approximate and r.unpriced_assets == []
    assert r.to_json()["liquidation_distance"] == pytest.approx(-0.208)


def test_new_unit_is_reported_until_its_band_is_set_then_only_on_exit() -> None:
    """A new unit has an empty band, so its first priced tick reports it; inside its band it is quiet."""
    book = make_book()
    uid = book.upsert_cross("alice", long_account(), CLASSIC)
    book.on_price("BTCUSDT", 60000.0)
    assert list(book.on_price("ETHUSDT", 3000.0)) == [uid]
    assert list(book.on_price("ETHUSDT", 3001.0)) == [uid]  # still outside the (empty) band
    book.set_band(uid, 1.3, 1.5)
    assert list(book.on_price("ETHUSDT", 3002.0)) == []
    # Level 1.3 needs A = 42,120: with BTC at 60,000 ETH must fall to 2,424.
    assert list(book.on_price("ETHUSDT", 2430.0)) == []
    assert list(book.on_price("ETHUSDT", 2420.0)) == [uid]


def test_a_tick_touches_only_units_exposed_to_its_asset() -> None:
    """An ETH tick updates the ETH holders only: a BTC-only unit with an empty band is not reported."""
    book = make_book()
    eth = book.upsert_cross("eth", {"ETH": pos(free="10"), "USDT": pos(borrowed="10000")}, CLASSIC)
    btc = book.upsert_cross("btc", {"BTC": pos(free="1"), "USDT": pos(borrowed="10000")}, CLASSIC)
    book.on_price("ETHUSDT", 3000.0)
    assert book.drain_pending() == []
    before = book.updates
    assert list(book.on_price("ETHUSDT", 3100.0)) == [eth]
    assert book.updates - before == 1
    assert book.level(btc) is None and not book.is_priced(btc)


def test_bridge_and_stablecoin_pricing() -> None:
    """ETH is priced directly, XYZ through BTC (XYZBTC x BTCUSDT), USDC at 1; a listed-nowhere asset
    leaves the unit unpriced, and it is never reported while unpriced."""
    book = make_book(pinned=("USDC",))
    uid = book.upsert_cross(
        "a", {"XYZ": pos(free="1000"), "USDC": pos(free="500"), "USDT": pos(borrowed="1000")}, CLASSIC
    )
    assert book.symbols_needed() == {"XYZBTC", "BTCUSDT"}
    assert set(book.report(uid).unpriced_assets) == {"XYZ"}
    assert list(book.on_price("XYZBTC", 0.00001)) == []
    assert list(book.on_price("BTCUSDT", 50000.0)) == [uid]
    # A = 1000 x 0.00001 x 50,000 + 500 = 1,000; L = 1,000.
    assert book.level(uid) == pytest.approx(1.0)
    book.set_band(uid, 0.0, INF)
    book.on_price("BTCUSDT", 55000.0)
    assert book.level(uid) == pytest.approx(1.05)
    assert book.report(uid).liquidation_prices == {"XYZ": pytest.approx(0.6)}
    odd = book.upsert_cross("b", {"ABC": pos(free="1"), "USDT": pos(borrowed="1")}, CLASSIC)
    assert set(book.report(odd).unpriced_assets) == {"ABC"} and not book.is_priced(odd)
    r = book.report(odd)
    assert (
        r.margin_level is None
        and r.unpriced_assets == ["ABC"]
        and r.distances == dict.fromkeys(CLASSIC.levels)
    )
    assert odd not in book.on_price("BTCUSDT", 56000.0)


def test_unit_symbols_are_the_prices_a_unit_depends_on() -> None:
    """A unit depends on the symbols of its assets' routes (both legs through the bridge), not on
    quote-like assets; an isolated pair on its own symbol. ``position`` reads one balance back."""
    book = make_book()
    uid = book.upsert_cross(
        "a", {"XYZ": pos(free="1"), "ETH": pos(borrowed="1"), "USDC": pos(free="5")}, CLASSIC
    )
    pair = book.upsert_isolated("a", "ETHBTC", "ETH", "BTC", pos(free="1"), pos(borrowed="0.01"), CLASSIC)
    assert book.unit_symbols(uid) == {"XYZBTC", "BTCUSDT", "ETHUSDT"}
    assert book.unit_symbols(pair) == {"ETHBTC"}
    book.set_position(uid, "XYZ", pos())
    assert book.unit_symbols(uid) == {"ETHUSDT"}
    assert book.position(uid, "ETH") == pos(borrowed="1")
    assert book.position(uid, "SOL") is None


def test_balance_change_updates_one_unit_and_reports_a_band_exit() -> None:
    """A borrow changes one unit's level at once; leaving the band is reported on the next call."""
    book = make_book()
    uid = book.upsert_cross("alice", long_account(), CLASSIC)
    other = book.upsert_cross("bob", long_account(), CLASSIC)
    book.on_price("BTCUSDT", 60000.0)
    book.on_price("ETHUSDT", 3000.0)
    book.set_band(uid, 1.3, 1.5)
    book.set_band(other, 1.3, 1.5)
    book.set_position(uid, "USDT", pos(borrowed="40000"))  # level 45,000 / 40,000 = 1.125
    assert book.level(uid) == pytest.approx(1.125)
    assert book.level(other) == pytest.approx(45000 / 32400)
    assert book.drain_pending() == [uid]
    book.set_position(uid, "SOL", pos(free="100"))  # a new asset joins: SOL needs a price
    assert "SOLUSDT" in book.symbols_needed() and not book.is_priced(uid)
    book.set_band(uid, 1.0, 2.0)
    assert list(book.on_price("SOLUSDT", 100.0)) == []  # priced now: 55,000 / 40,000 = 1.375, inside
    assert book.level(uid) == pytest.approx(1.375)


def test_isolated_pair_reports_in_its_quote() -> None:
    """A 10x BTCUSDT pair: level 10,000 / 9,000, liquidation price 93,888.89 at 1.05 (the worked example)."""
    book = make_book()
    bars = Bars({"normal": D("1.111"), "margin_call": D("1.1"), "liquidation": D("1.05")})
    uid = book.upsert_isolated(
        "alice", "BTCUSDT", "BTC", "USDT", pos(free="0.09"), pos(free="1000", borrowed="9000"), bars
    )
    assert uid == unit_id("alice", "BTCUSDT")
    book.on_price("BTCUSDT", 100000.0)
    r = book.report(uid)
    assert r.kind == "isolated" and r.symbol == "BTCUSDT" and r.quote == "USDT"
    assert r.margin_level == pytest.approx(10000 / 9000)
    assert r.liquidation_prices == {"BTC": pytest.approx(93888.888889)}
    assert r.liquidation_distance == pytest.approx(-0.0611111)
    assert r.bars == {"normal": 1.111, "margin_call": 1.1, "liquidation": 1.05}
    with pytest.raises(ValueError, match="ETH"):
        book.set_position(uid, "ETH", pos(free="1"))


def test_isolated_pair_in_a_non_usdt_quote_uses_the_pair_price() -> None:
    """ETHBTC pair values in BTC at the ETHBTC price, unaffected by BTCUSDT."""
    book = make_book()
    uid = book.upsert_isolated("a", "ETHBTC", "ETH", "BTC", pos(free="10"), pos(borrowed="0.25"), CLASSIC)
    assert book.symbols_needed() == {"ETHBTC"}
    book.on_price("ETHBTC", 0.05)
    book.on_price("BTCUSDT", 60000.0)
    assert book.level(uid) == pytest.approx(2.0)
    assert book.report(uid).quote == "BTC"


def test_cross_margin_pro_uses_the_exchange_level_and_is_approximate() -> None:
    """A MARGIN_2 unit reports the exchange's level (1.2 where the classic formula says 1.389), scales it
    with prices, and flags every derived number approximate."""
    book = make_book()
    uid = book.upsert_cross("pro", long_account(), CLASSIC, approximate=True, exchange_level=D("1.2"))
    book.on_price("BTCUSDT", 60000.0)
    book.on_price("ETHUSDT", 3000.0)
    assert book.level(uid) == pytest.approx(1.2)
    r = book.report(uid)
    assert r.approximate and r.exchange_margin_level == 1.2 and r.margin_level == pytest.approx(1.2)
    assert r.state == "approximate" and r.reason.startswith("Cross Margin Pro account: priced by Binance's")
    # Scaled level 1.2 x A / A0 reaches 1.1 at A = 41,250: a uniform move of -8.33 %.
    assert r.liquidation_distance == pytest.approx(41250 / 45000 - 1)
    book.on_price("ETHUSDT", 1500.0)  # A = 37,500: 1.2 x 37,500 / 45,000 = 1.0
    assert book.level(uid) == pytest.approx(1.0)
    plain = book.upsert_cross("classic", long_account(), CLASSIC, exchange_level=D("1.2"))
    assert not book.report(plain).approximate and book.report(plain).exchange_margin_level == 1.2
    assert (book.report(plain).state, book.report(plain).reason) == ("known", "")


def test_liquidation_distance_matches_the_report() -> None:
    """The quick distance the alert policy asks for equals the report's; None while unpriced or debt-free."""
    book = make_book()
    uid = book.upsert_cross("alice", long_account(), CLASSIC)
    pro = book.upsert_cross("pro", long_account(), CLASSIC, approximate=True, exchange_level=D("1.2"))
    free = book.upsert_cross("free", {"BTC": pos(free="1")}, CLASSIC)
    book.on_price("BTCUSDT", 60000.0)
    assert book.liquidation_distance(uid) is None
    book.on_price("ETHUSDT", 3000.0)
    assert book.liquidation_distance(uid) == pytest.approx(-0.208)
    assert book.liquidation_distance(pro) == book.report(pro).liquidation_distance
    assert book.liquidation_distance(pro) == pytest.approx(41250 / 45000 - 1)
    assert book.liquidation_distance(free) is None


def test_no_debt_unit_is_static_and_reported_against_a_finite_band() -> None:
    """No debt: level None but priced; it does not move with prices, and a band that excludes an
    infinite level reports it (once, on the next call)."""
    book = make_book()
    uid = book.upsert_cross("saver", {"BTC": pos(free="1")}, CLASSIC)
    assert book.drain_pending() == []  # not priced yet
    assert list(book.on_price("BTCUSDT", 60000.0)) == [uid]
    assert book.is_priced(uid) and book.level(uid) is None
    book.set_band(uid, 1.5, INF)
    assert list(book.on_price("BTCUSDT", 1.0)) == []
    r = book.report(uid)
    assert r.margin_level == INF and r.state == "no_debt"  # never None: that is "unknown"
    assert r.distances == dict.fromkeys(CLASSIC.levels) and r.repay == {}
    book.set_band(uid, 1.5, 100.0)
    assert book.drain_pending() == [uid]


def test_zero_and_bad_prices_give_defined_results() -> None:
    """A zero price of the only debt leaves no debt value (level None), a zero collateral price gives
    level 0; NaN, negative and infinite prices are ignored."""
    book = make_book()
    uid = book.upsert_cross("a", {"BTC": pos(free="1"), "ETH": pos(borrowed="10")}, CLASSIC)
    book.on_price("BTCUSDT", 30000.0)
    book.on_price("ETHUSDT", 2000.0)
    book.set_band(uid, 1.0, 2.0)
    assert book.level(uid) == pytest.approx(1.5)
    assert list(book.on_price("ETHUSDT", 0.0)) == [uid]
    assert book.level(uid) is None and book.is_priced(uid)
    assert book.report(uid).margin_level == INF  # the debt is worth 0: infinite, never "unknown"
    book.on_price("ETHUSDT", 2000.0)
    assert book.level(uid) == pytest.approx(1.5)
    assert list(book.on_price("BTCUSDT", 0.0)) == [uid]
    assert book.level(uid) == 0.0
    for bad in (math.nan, -1.0, INF):
        assert list(book.on_price("BTCUSDT", bad)) == []
    assert book.level(uid) == 0.0


def test_report_restore_target_and_interest_hours() -> None:
    """Restoring to margin_call (1.3) asks less than to normal; 0.16 USDT/h of interest reaches 1.3 in
    13,846 h and 1.1 in 2,215.38 / ... hours as computed by hand in the worked examples."""
    book = make_book()
    uid = book.upsert_cross("alice", long_account(), CLASSIC)
    book.on_price("BTCUSDT", 60000.0)
    book.on_price("ETHUSDT", 3000.0)
    r = book.report(uid, restore_target="margin_call")
    assert r.restore_target == 1.3 and r.repay == {}  # 1.389 >= 1.3 already
    book.set_interest_rates(uid, {"USDT": D("0.000005")})
    hours = book.report(uid).hours_to_bars
    assert hours["normal"] is None
    assert hours["margin_call"] == pytest.approx(13846.153846)
    assert hours["liquidation"] == pytest.approx((45000 / 1.1 - 32400) / 0.16)
    with pytest.raises(KeyError):
        book.report(uid, restore_target="nope")


def test_catalog_change_reroutes_and_removal_forgets() -> None:
    """Without ETHUSDT, ETH goes through BTC; removing a unit drops its symbols and its reports."""
    book = make_book()
    uid = book.upsert_cross("alice", long_account(), CLASSIC)
    book.set_catalog({k: v for k, v in CATALOG.items() if k != "ETHUSDT"})
    assert book.symbols_needed() == {"BTCUSDT", "ETHBTC"}
    book.on_price("BTCUSDT", 60000.0)
    book.on_price("ETHBTC", 0.05)
    assert book.level(uid) == pytest.approx(45000 / 32400)
    book.remove_unit(uid)
    assert book.units() == [] and book.symbols_needed() == set()
    assert list(book.on_price("BTCUSDT", 1.0)) == []
    with pytest.raises(KeyError):
        book.level(uid)


def test_resync_erases_drift() -> None:
    """After a long random walk the exact recomputation moves levels by far less than 1e-9."""
    book = make_book(fanout_threshold=0)
    uid = book.upsert_cross("alice", long_account(), CLASSIC)
    book.set_band(uid, 0.0, INF)
    price = 3000.0
    book.on_price("BTCUSDT", 60000.0)
    for i in range(2000):
        price *= 1.001 if i % 3 else 0.998
        book.on_price("ETHUSDT", price)
    drift = book.resync()
    assert 0.0 <= drift < 1e-12
    exact = cross_level(long_account(), {"BTC": D(60000), "ETH": exact_price(price)}, {"USDT"})
    assert exact is not None and book.level(uid) == pytest.approx(float(exact), rel=1e-15)


def test_resync_in_slices_recomputes_only_the_named_units() -> None:
    """A sliced resync makes the named unit exact, keeps the drift bound, and skips unknown ids."""
    book = make_book(fanout_threshold=0)
    a = book.upsert_cross("alice", long_account(), CLASSIC)
    b = book.upsert_cross("bob", long_account(), CLASSIC)
    for uid in (a, b):
        book.set_band(uid, 0.0, INF)
    price = 3000.0
    book.on_price("BTCUSDT", 60000.0)
    for i in range(2000):
        price *= 1.001 if i % 3 else 0.998
        book.on_price("ETHUSDT", price)
    bound = book.stats()["drift_bound"]
    assert book.resync([a, "cross:nobody"]) < 1e-12
    exact = cross_level(long_account(), {"BTC": D(60000), "ETH": exact_price(price)}, {"USDT"})
    assert exact is not None and book.level(a) == pytest.approx(float(exact), rel=1e-15)
    assert book.stats()["drift_bound"] == bound


def test_router_and_price_book() -> None:
    """Routes: fixed for the quote and stablecoins, direct, through the bridge, or none."""
    router = Router("usdt", (), "BTC", pinned=["USDC"])
    assert router.route("USDC") is not None and router.route("USDC").fixed  # type: ignore[union-attr]
    assert router.route("ETH") == router.route("ETH")
    router.set_catalog({"ETHBTC": ("ETH", "BTC"), "BTCUSDT": ("BTC", "USDT")})
    route = router.route("ETH")
    assert route is not None and route.symbols == ("ETHBTC", "BTCUSDT")
    assert router.route("DOGE") is None
    now = [100.0]
    book = PriceBook(clock=lambda: now[0])
    assert book.age("ETHBTC") is None and book.exact(("ETHBTC",)) is None
    for symbol, price in (("ETHBTC", 0.05), ("BTCUSDT", 60000.0)):
        book.prices[symbol], book.stamps[symbol] = price, now[0]
    now[0] = 102.5
    assert book.age("ETHBTC") == 2.5
    assert book.exact(route.symbols) == D("3000.00")


# --- properties: the incremental float level agrees with the exact recomputation ----------------

ASSETS = ("BTC", "ETH", "XYZ", "SOL", "USDT", "USDC", "BRL", "ABC", "DEF")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "XYZBTC", "SOLUSDT", "USDTBRL", "BTCABC", "DEFETH")
amounts = st.one_of(
    st.just(D(0)),
    st.sampled_from([D("0.00000001"), D(10) ** 12]),
    st.decimals(min_value=0, max_value=10**12, places=8),
)
positions = st.builds(Position, amounts, st.just(D(0)), amounts, st.just(D(0)))
accounts = st.dictionaries(st.sampled_from(ASSETS), positions, max_size=6)
price_values = st.one_of(
    st.sampled_from([0.0, 1e-8, 1e6]),
    st.floats(min_value=1e-8, max_value=1e6, allow_nan=False, allow_infinity=False),
)
band_edges = st.one_of(st.sampled_from([0.0, INF]), st.floats(min_value=0.5, max_value=1.5))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.sampled_from(SYMBOLS), price_values),
        st.tuples(st.just("walk"), st.sampled_from(SYMBOLS), st.lists(st.floats(0.5, 2.0), max_size=40)),
        st.tuples(st.just("swing"), st.sampled_from(SYMBOLS), price_values),
        st.tuples(st.just("set"), st.integers(0, 3), st.sampled_from(ASSETS), positions),
        st.tuples(st.just("band"), st.integers(0, 3), band_edges, band_edges),
        st.tuples(st.just("resync")),
    ),
    max_size=40,
)


def exact_level(book: AccountBook, positions: dict[str, Position]) -> float | None:
    """The exact level as a float (inf: no debt value), or None while an asset is unpriced."""
    prices = {a: book.exact_asset_price(a) for a in ASSETS}
    if any(not p.is_empty and prices[a] is None for a, p in positions.items()):
        return None
    level = cross_level(positions, {a: p for a, p in prices.items() if p is not None}, {"USDT", "USDC"})
    return INF if level is None else float(level)


def outside(level: float, band: tuple[float, float]) -> bool | None:
    """True/False when clearly outside/inside the band (1e-9 relative margin), None when on an edge."""
    lo, hi = band
    margin = 1e-9 * level if level < INF else 0.0
    if level < lo - margin or level > hi + margin:
        return True
    if lo + margin < level < hi - margin or (level == INF and hi == INF):
        return False
    return None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(accounts, min_size=4, max_size=4),
    st.one_of(st.none(), st.tuples(*(price_values for _ in SYMBOLS))),
    ops,
    st.sampled_from([0, 2, 1000]),
)
def test_incremental_level_equals_exact_recomputation(
    start: list[dict[str, Position]],
    opening: tuple[float, ...] | None,
    steps: list[tuple[object, ...]],
    threshold: int,
) -> None:
    """After any sequence of ticks, walks, balance changes and bands, each float level equals the exact
    Decimal level within 1e-9 relative (routes direct, inverse 1/p, bridged through BTC with an
    inverse leg, and through ETH); a tick reports a unit it moved out of its band, and never one
    inside its band."""
    book = make_book(fanout_threshold=threshold, pinned=("USDC",))
    state = [dict(a) for a in start]
    ids = [book.upsert_cross(f"u{i}", a, CLASSIC) for i, a in enumerate(state)]
    for symbol, price in zip(SYMBOLS, opening or (), strict=False):
        book.on_price(symbol, price)
    bands = [(INF, -INF)] * 4
    for step in steps:
        before = [exact_level(book, a) for a in state]
        reported: set[str] | None = None
        if step[0] == "tick":
            reported = set(book.on_price(str(step[1]), float(step[2])))  # type: ignore[arg-type]
        elif step[0] == "walk":
            symbol, factors = str(step[1]), step[2]
            assert isinstance(factors, list)
            for f in factors:
                last = book.prices.prices.get(symbol) or 1.0
                reported = set(book.on_price(symbol, min(max(last * f, 1e-8), 1e6)))
        elif step[0] == "swing":  # from the top of the range straight down: the worst case for drift
            book.on_price(str(step[1]), 1e6)
            reported = set(book.on_price(str(step[1]), float(step[2])))  # type: ignore[arg-type]
        elif step[0] == "set":
            i, asset, p = step[1], step[2], step[3]
            assert isinstance(i, int) and isinstance(asset, str) and isinstance(p, Position)
            state[i][asset] = p
            book.set_position(ids[i], asset, p)
        elif step[0] == "band":  # edges are multiples of the current level (0 and inf are themselves)
            i, f_lo, f_hi = step[1], step[2], step[3]
            assert isinstance(i, int) and isinstance(f_lo, float) and isinstance(f_hi, float)
            level_now = before[i]
            now = level_now if level_now is not None and 0 < level_now < INF else 1.0
            lo, hi = f_lo * now, f_hi * now
            bands[i] = (lo, hi)
            book.set_band(ids[i], lo, hi)
        else:
            assert book.resync() < 1e-9
        pending = set(book.drain_pending())
        for i, uid in enumerate(ids):
            exact = exact_level(book, state[i])
            assert book.is_priced(uid) == (exact is not None)
            got = book.level(uid)
            if exact is None or exact == INF:
                assert got is None
                if exact is None:
                    assert uid not in (reported or set()) | pending
                    continue
            else:
                assert got is not None and abs(got - exact) <= 1e-9 * exact
            if reported is None:
                continue
            out = outside(exact, bands[i])
            if out is False:
                assert uid not in reported
            prev = before[i]
            moved = prev is None or abs(exact - prev) > 1e-9 * min(exact, prev)
            if out is True and moved and step[0] == "tick":
                assert uid in reported | pending


@pytest.mark.parametrize("threshold", [0, 1000])
def test_a_crash_from_a_huge_value_does_not_leave_drift(threshold: int) -> None:
    """1e12 BTC at 1e6 next to 1 USDT: after BTC falls to 1e-8 the float sum would have lost the 1 USDT
    (A = 1e18 + 1 rounds to 1e18); the drift bound forces a recomputation and the level stays exact."""
    book = make_book(fanout_threshold=threshold)
    account = {"BTC": pos(free="1000000000000"), "USDT": pos(free="1"), "ETH": pos(borrowed="1")}
    uid = book.upsert_cross("whale", account, CLASSIC)
    book.on_price("ETHUSDT", 100.0)
    book.on_price("BTCUSDT", 1e6)
    book.on_price("BTCUSDT", 1e-8)
    # A = 1e12 x 1e-8 + 1 = 10,001; L = 100.
    assert book.level(uid) == pytest.approx(100.01, rel=1e-12)


@pytest.mark.parametrize("threshold", [0, 1000])
def test_changes_on_a_laid_out_leg_apply_to_later_ticks(threshold: int) -> None:
    """A balance change or a new band on a unit whose leg is already laid out (vector or list) is used
    by the next tick: the level stays exact and a band exit above or below is reported."""
    book = make_book(fanout_threshold=threshold)
    uid = book.upsert_cross("a", {"BTC": pos(free="1"), "USDT": pos(borrowed="20000")}, CLASSIC)
    other = book.upsert_cross("b", {"BTC": pos(free="1"), "USDT": pos(borrowed="1000")}, CLASSIC)
    book.on_price("BTCUSDT", 30000.0)
    book.set_band(uid, 1.0, 2.0)
    book.set_band(other, 0.0, INF)
    assert list(book.on_price("BTCUSDT", 31000.0)) == []
    book.set_position(uid, "BTC", pos(free="2"))  # 62,000 / 20,000 = 3.1: above the band
    assert book.drain_pending() == [uid]
    book.set_band(uid, 3.0, 3.2)
    assert list(book.on_price("BTCUSDT", 31500.0)) == []  # 3.15
    assert book.level(uid) == pytest.approx(3.15, rel=1e-12)
    assert list(book.on_price("BTCUSDT", 33000.0)) == [uid]  # 3.3 > 3.2
    book.set_band(uid, 3.4, 3.6)
    assert book.drain_pending() == [uid]
    assert list(book.on_price("BTCUSDT", 35000.0)) == []  # 3.5
    assert list(book.on_price("BTCUSDT", 33000.0)) == [uid]  # 3.3 < 3.4
    assert book.level(other) == pytest.approx(33.0, rel=1e-12)
    book.on_price("BTCUSDT", 0.001)  # a fall of 3e7x forces a full recomputation from the terms
    assert book.level(uid) == pytest.approx(0.002 / 20000, rel=1e-12)
    assert book.level(other) == pytest.approx(0.001 / 1000, rel=1e-12)


@pytest.mark.parametrize("threshold", [0, 3, 1000])
def test_assets_through_the_bridge_follow_both_legs(threshold: int) -> None:
    """XYZ is valued XYZBTC x BTCUSDT: alternating ticks of both legs, and balance changes of XYZ and
    BTC in between, keep every level equal to the exact valuation (vector, list and mixed layouts)."""
    book = make_book(fanout_threshold=threshold)
    accounts = [
        {"XYZ": pos(free="1000"), "USDT": pos(borrowed="300")},
        {"XYZ": pos(free="500"), "BTC": pos(free="0.01"), "USDT": pos(borrowed="500")},
        {"BTC": pos(free="0.02"), "XYZ": pos(borrowed="100"), "USDT": pos(free="200")},
        {"BTC": pos(free="0.03"), "USDT": pos(borrowed="700")},
        {"BTC": pos(free="0.04"), "USDT": pos(borrowed="900")},
    ]
    ids = [book.upsert_cross(f"u{i}", a, CLASSIC) for i, a in enumerate(accounts)]
    xyz, btc = 0.00001, 50000.0
    book.on_price("XYZBTC", xyz)
    book.on_price("BTCUSDT", btc)
    for step in range(300):
        if step % 3:
            xyz *= 1.01 if step % 2 else 0.985
            book.on_price("XYZBTC", xyz)
        else:
            btc *= 1.02 if step % 4 else 0.97
            book.on_price("BTCUSDT", btc)
        if step == 100:
            accounts[1]["XYZ"] = pos(free="700")
            book.set_position(ids[1], "XYZ", accounts[1]["XYZ"])
        if step == 200:
            accounts[1]["BTC"] = pos(free="0.5")
            book.set_position(ids[1], "BTC", accounts[1]["BTC"])
        if step in (150, 250):  # a 1e7x fall and back forces full recomputations, bridge coefficients too
            before = book.stats()["full_recomputes"]
            book.on_price("XYZBTC", xyz / 1e7)
            book.on_price("XYZBTC", xyz)
            assert book.stats()["full_recomputes"] > before
        prices = {"XYZ": exact_price(xyz) * exact_price(btc), "BTC": exact_price(btc)}
        for uid, account in zip(ids, accounts, strict=True):
            exact = cross_level(account, prices, {"USDT"})
            assert exact is not None and book.level(uid) == pytest.approx(float(exact), rel=1e-10)


def test_isolated_level_follows_exact_formula() -> None:
    """Random pair prices keep the isolated level equal to the exact formula within 1e-12."""
    book = make_book()
    base, quote = pos(free="0.09", borrowed="0.01"), pos(free="1000", borrowed="9000")
    uid = book.upsert_isolated("a", "BTCUSDT", "BTC", "USDT", base, quote, CLASSIC)
    price = 100000.0
    for i in range(500):
        price *= 1.003 if i % 2 else 0.9975
        book.on_price("BTCUSDT", price)
    exact = isolated_level(base, quote, exact_price(price))
    assert exact is not None and book.level(uid) == pytest.approx(float(exact), rel=1e-12)
    assert value_positions({"BTC": base}, {"BTC": exact_price(price)}, ()).moving_assets > 0


# --- routes, halted pairs and unit states ------------------------------------------------------


def test_inverse_and_bridged_routes() -> None:
    """Direct, inverse (1/p), bridged through BTC with an inverse leg, through ETH, BNB or a
    stablecoin; a halted pair is no route; a stablecoin is priced at market unless pinned."""
    router = Router("USDT")
    router.set_catalog(
        {
            **CATALOG,
            "XYZFDUSD": ("XYZ2", "FDUSD"),
            "FDUSDUSDT": ("FDUSD", "USDT"),
            "CAKEBNB": ("CAKE", "BNB"),
            "BNBUSDT": ("BNB", "USDT"),
            "USDCUSDT": ("USDC", "USDT"),
        }
    )
    legs = {a: (r.legs if (r := router.route(a)) else None) for a in ("BRL", "ABC", "DEF", "OLD")}
    assert legs == {
        "BRL": ("1/USDTBRL",),
        "ABC": ("1/BTCABC", "BTCUSDT"),
        "DEF": ("DEFETH", "ETHUSDT"),
        "OLD": None,
    }

    def legs_of(asset: str) -> tuple[str, ...] | None:
        route = router.route(asset)
        return None if route is None else route.legs

    assert legs_of("XYZ2") == ("XYZFDUSD", "FDUSDUSDT")  # through a stablecoin
    assert legs_of("CAKE") == ("CAKEBNB", "BNBUSDT")  # through BNB
    assert legs_of("USDC") == ("USDCUSDT",)  # at market
    assert router.status("OLDUSDT") == "BREAK" and router.halted("OLD") == ["OLDUSDT BREAK"]
    pinned = Router("USDT", pinned=["usdc"])
    pinned.set_catalog({"USDCUSDT": ("USDC", "USDT")})
    assert pinned.route("USDC").fixed  # type: ignore[union-attr]
    prices = PriceBook()
    prices.prices.update({"USDTBRL": 5.0, "BTCABC": 4.0, "BTCUSDT": 60000.0})
    assert prices.exact(("1/USDTBRL",)) == D("0.2")
    assert prices.exact(("1/BTCABC", "BTCUSDT")) == D(15000)


@pytest.mark.parametrize("threshold", [0, 1000])
def test_inverse_and_bridged_levels_follow_ticks(threshold: int) -> None:
    """BRL 50,000 (USDTBRL 5: 10,000 USDT) + ABC 4 (BTCABC 4, BTC 60,000: 60,000 USDT) against
    40,000 USDT: level 70,000 / 40,000 = 1.75; USDTBRL 4 makes BRL worth 12,500 (1.8125); BTCABC 8
    halves ABC (30,000: 1.0625); a tick at 0 on an inverse pair is refused (no 1/0)."""
    book = make_book(fanout_threshold=threshold)
    account = {"BRL": pos(free="50000"), "ABC": pos(free="4"), "USDT": pos(borrowed="40000")}
    uid = book.upsert_cross("a", account, CLASSIC)
    assert book.symbols_needed() == {"USDTBRL", "BTCABC", "BTCUSDT"}
    for symbol, price in (("USDTBRL", 5.0), ("BTCABC", 4.0), ("BTCUSDT", 60000.0)):
        book.on_price(symbol, price)
    assert book.level(uid) == pytest.approx(1.75, rel=1e-12)
    book.set_band(uid, 1.0, 2.0)
    assert list(book.on_price("USDTBRL", 4.0)) == []
    assert book.level(uid) == pytest.approx(72500 / 40000, rel=1e-12)
    assert list(book.on_price("BTCABC", 8.0)) == []
    assert book.level(uid) == pytest.approx(42500 / 40000, rel=1e-12)
    book.on_price("BTCABC", 0.0)
    assert book.prices.prices.get("BTCABC") == 8.0 and book.level(uid) == pytest.approx(
        42500 / 40000, rel=1e-12
    )
    r = book.report(uid)
    assert r.state == "known" and r.margin_level == pytest.approx(1.0625)
    exact = cross_level(account, {"BRL": D("0.25"), "ABC": D(7500)}, {"USDT"})
    assert exact is not None and r.margin_level == pytest.approx(float(exact), rel=1e-15)


def held_account() -> dict[str, Position]:
    """BTC 1 + OLD 1,000 (OLDUSDT halted) against 25,000 USDT; Binance says 1.6 at BTC 30,000, so
    OLD is worth V = 1.6 x 25,000 - 30,000 = 10,000 and the level at BTC p is (p + 10,000) / 25,000."""
    return {"BTC": pos(free="1"), "OLD": pos(free="1000"), "USDT": pos(borrowed="25000")}


@pytest.mark.parametrize("threshold", [0, 1000])
def test_halted_asset_is_valued_from_binance_level_and_the_unit_is_approximate(threshold: int) -> None:
    """No live route for OLD: the unit waits for BTC's price (blind, no level, never "no debt"),
    then is approximate at Binance's level, carried live with BTC; its report says why."""
    book = make_book(fanout_threshold=threshold)
    uid = book.upsert_cross("h", held_account(), CLASSIC, exchange_level=D("1.6"))
    assert book.symbols_needed() == {"BTCUSDT"} and not book.is_priced(uid)
    assert book.state(uid) == ("blind", "no price yet for BTCUSDT") and book.unvalued(uid) is None
    r = book.report(uid)
    assert r.margin_level is None and r.state == "blind"
    assert list(book.on_price("BTCUSDT", 30000.0)) == [uid]
    assert book.level(uid) == pytest.approx(1.6, rel=1e-12)
    book.set_band(uid, 1.5, INF)
    assert list(book.on_price("BTCUSDT", 17000.0)) == [uid]
    assert book.level(uid) == pytest.approx(1.08, rel=1e-12)
    r = book.report(uid)
    assert (r.state, r.reason) == (
        "approximate",
        "priced by Binance's own level: no live price for OLD (OLDUSDT BREAK)",
    )
    assert r.approximate and r.unpriced_assets == ["OLD"] and r.implied_value == pytest.approx(10000)
    assert r.margin_level == pytest.approx(1.08) and r.liquidation_prices["BTC"] == pytest.approx(17500)
    assert r.liquidation_distance == pytest.approx(500 / 17000)  # BTC 17,000 -> 17,500 (a rise)
    # a balance event keeps the implied value; the next REST read re-implies it from Binance's level
    book.set_position(uid, "BTC", pos(free="2"))
    assert book.level(uid) == pytest.approx(44000 / 25000, rel=1e-12)
    book.upsert_cross("h", held_account(), CLASSIC, exchange_level=D("1.2"))  # 1.2 x 25,000 - 17,000
    assert book.report(uid).implied_value == pytest.approx(13000)
    assert book.level(uid) == pytest.approx(1.2, rel=1e-12)
    book.set_blind(uid, "no price for BTCUSDT for over 3 s")
    assert book.report(uid).state == "blind" and book.report(uid).reason.startswith("no price for BTCUSDT")
    book.set_blind(uid, None)
    assert book.report(uid).state == "approximate"


def test_halted_asset_without_binance_level_is_blind_and_no_debt_is_no_debt() -> None:
    """Without a level from Binance an unroutable asset leaves the unit unvalued (blind, reason
    given); with nothing owed the unit is no_debt (inf) whatever it holds; an isolated pair whose
    symbol is halted is approximate at the pair's reported level."""
    book = make_book()
    uid = book.upsert_cross("h", held_account(), CLASSIC)
    book.on_price("BTCUSDT", 30000.0)
    reason = "no live price for OLD (OLDUSDT BREAK) and no level from Binance to stand in"
    assert not book.is_priced(uid) and book.unvalued(uid) == reason
    r = book.report(uid)
    assert r.state == "blind" and r.margin_level is None and r.to_json()["margin_level"] is None
    saver = book.upsert_cross(
        "s", {"OLD": pos(free="5"), "BTC": pos(free="1")}, CLASSIC, exchange_level=D(999)
    )
    book.on_price("BTCUSDT", 30000.0)
    assert book.level(saver) is None  # Binance's 999 (no debt) implies no liability
    r = book.report(saver)
    assert (r.state, r.margin_level, r.to_json()["margin_level"]) == ("no_debt", INF, None)
    assert book.unvalued(saver) is None
    iso = book.upsert_isolated(
        "i", "OLDUSDT", "OLD", "USDT", pos(free="100"), pos(borrowed="500"), CLASSIC, exchange_level=D("1.5")
    )
    r = book.report(iso)
    assert r.state == "approximate" and r.reason.endswith("OLD (OLDUSDT BREAK)")
    assert r.margin_level == pytest.approx(1.5) and r.implied_value == pytest.approx(750)
    # owed only in the halted asset: Binance's level implies a liability W = A / E - L
    short = book.upsert_cross(
        "o", {"BTC": pos(free="1"), "OLD": pos(borrowed="100")}, CLASSIC, exchange_level=D("1.5")
    )
    r = book.report(short)  # W = 30,000 / 1.5 = 20,000
    assert r.state == "approximate" and r.implied_value == 0.0
    assert r.implied_liability == pytest.approx(20000)
    book.on_price("BTCUSDT", 24000.0)
    assert book.level(short) == pytest.approx(1.2, rel=1e-12)


def test_stablecoin_at_market_unless_pinned() -> None:
    """USDC is valued through USDCUSDT (0.87: the March 2023 depeg); pinned, it counts as 1."""
    catalog = {**CATALOG, "USDCUSDT": ("USDC", "USDT")}
    account = {"USDC": pos(free="20000"), "BTC": pos(free="0.1"), "USDT": pos(borrowed="16000")}
    market, pinned = AccountBook(), AccountBook(pinned=("USDC",))
    for book in (market, pinned):
        book.set_catalog(catalog)
        book.upsert_cross("s", account, CLASSIC)
        book.on_price("BTCUSDT", 30000.0)
        book.on_price("USDCUSDT", 0.87)
    assert market.level("cross:s") == pytest.approx(20400 / 16000, rel=1e-12)
    assert pinned.level("cross:s") == pytest.approx(23000 / 16000, rel=1e-12)
    assert pinned.symbols_needed() == {"BTCUSDT"}


small_amounts = st.one_of(st.just(D(0)), st.decimals(min_value=0, max_value=10**6, places=8))
small_positions = st.builds(Position, small_amounts, st.just(D(0)), small_amounts, st.just(D(0)))
positive_prices = st.floats(min_value=1e-4, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries({a: small_positions for a in ("BTC", "BRL", "OLD", "USDT")}),
    st.decimals(min_value=D("0.01"), max_value=D(999), places=4),
    st.tuples(positive_prices, positive_prices),
    st.lists(st.tuples(st.sampled_from(["BTCUSDT", "USDTBRL"]), positive_prices), max_size=20),
    st.sampled_from([0, 1000]),
)
def test_implied_value_level_equals_exact_recomputation(
    account: dict[str, Position],
    level: D,
    opening: tuple[float, float],
    ticks: list[tuple[str, float]],
    threshold: int,
) -> None:
    """An account holding the halted OLD: after the read (Binance's level E) and any ticks of BTC and
    of the inverse BRL, the float level equals the exact Decimal (A + V) / (L + W), V and W implied
    at the prices of the read; the state is approximate (no_debt when nothing is owed)."""
    book = make_book(fanout_threshold=threshold)
    uid = book.upsert_cross("h", account, CLASSIC, exchange_level=level)
    book.on_price("BTCUSDT", opening[0])
    book.on_price("USDTBRL", opening[1])

    def totals(btc: float, usdtbrl: float) -> tuple[D, D]:
        px = {"BTC": exact_price(btc), "BRL": 1 / exact_price(usdtbrl), "USDT": D(1)}
        routed = {a: p for a, p in account.items() if a != "OLD"}
        t = value_positions(routed, px, {"USDT"})
        return t.assets, t.liabilities

    a0, l0 = totals(*opening)
    old, owes = account["OLD"], any(p.owed > 0 for p in account.values())
    v = max(D(0), level * l0 - a0) if old.held > 0 and owes else D(0)
    w = max(D(0), a0 / level - l0) if old.owed > 0 and owes else D(0)
    for symbol, price in ticks:
        book.on_price(symbol, price)
    a1, l1 = totals(book.prices.prices["BTCUSDT"], book.prices.prices["USDTBRL"])
    r = book.report(uid)
    if not owes:
        assert r.state == "no_debt" and book.level(uid) is None
        return
    assert r.state == ("approximate" if not old.is_empty else "known")
    if l1 + w == 0:
        assert book.level(uid) is None and r.margin_level == INF
        return
    exact = float((a1 + v) / (l1 + w))
    got = book.level(uid)
    assert got is not None and abs(got - exact) <= 1e-9 * exact
    assert r.margin_level is not None and abs(r.margin_level - exact) <= 1e-9 * exact


def test_unvalued_units_are_the_units_unvalued_names() -> None:
    """``unvalued_units`` (the staleness step's question, asked each second) is ``unvalued`` asked of
    every unit, looking only at units with an unrouted asset; a unit re-routed or removed leaves it."""
    book = make_book()
    blind = book.upsert_cross("h", held_account(), CLASSIC)
    fine = book.upsert_cross("f", long_account(), CLASSIC)
    book.on_price("BTCUSDT", 30000.0)
    assert book.unvalued_units() == [u for u in book.units() if book.unvalued(u)] == [blind]
    book.upsert_cross("h", long_account(), CLASSIC)  # the halted asset sold: routed again
    assert book.unvalued_units() == [] and book.unvalued(fine) is None
    book.upsert_cross("h", held_account(), CLASSIC)
    book.remove_unit(blind)
    assert book.unvalued_units() == []


def test_a_snapshot_that_changed_nothing_keeps_the_books_objects() -> None:
    """Re-reading an unchanged account (fresh but equal objects, as a REST snapshot parses them) keeps
    the positions, bars and routes already in the book, so the fresh copies die young instead of
    being promoted into the collector's oldest generation. A value written differently (1.0 vs 1) is
    a change: the book keeps exactly what Binance said."""
    book = make_book()
    uid = book.upsert_cross("a", long_account(), Bars.classic())
    book.on_price("BTCUSDT", 30000.0)
    book.on_price("ETHUSDT", 2000.0)
    before = {asset: book.position(uid, asset) for asset in ("BTC", "ETH", "USDT")}
    report = book.report(uid)
    book.upsert_cross("a", long_account(), Bars.classic())
    assert all(book.position(uid, asset) is p for asset, p in before.items())
    assert book.report(uid) == report
    book.upsert_cross("a", {**long_account(), "BTC": pos(free="0.50")}, Bars.classic())
    btc = book.position(uid, "BTC")
    assert btc is not None and str(btc.free) == "0.50" and btc is not before["BTC"]
    assert book.position(uid, "ETH") is before["ETH"]


def test_ticks_through_the_book_make_no_cyclic_garbage() -> None:
    """The hot path (a tick, the units it moves out of their band) frees everything it allocates by
    reference counting: nothing is left for the collector, so ticks never bring a collection closer
    than their live objects do."""
    book = make_book()
    for n in range(50):
        book.upsert_cross(f"a{n}", long_account(), CLASSIC)
    gc.collect()
    gc.disable()
    try:
        for k in range(5000):
            symbol, price = ("BTCUSDT", 30000.0) if k % 2 else ("ETHUSDT", 2000.0)
            book.on_price(symbol, price * (1 + 0.1 * math.sin(k)))
            book.drain_pending()
        assert gc.collect() == 0
    finally:
        gc.enable()
