"""The stress table against an exact recomputation from the balances (hypothesis), and its examples."""

from __future__ import annotations

import doctest
from decimal import Decimal, localcontext

from hypothesis import assume, given, settings
from hypothesis import strategies as st

import monitor.risk.stress
from monitor.risk.holdings import Holdings
from monitor.risk.margin import Bars, Position
from monitor.risk.stress import MOVES, Beta, crossing_move, estimate_beta, render_stress, stress_table

FINITE = {"allow_nan": False, "allow_infinity": False}
amounts = st.decimals(min_value=0, max_value=10**6, places=8, **FINITE)
prices = st.decimals(min_value=Decimal("0.0001"), max_value=10**5, places=4, **FINITE)
betas = st.decimals(min_value=Decimal("-2"), max_value=Decimal("4"), places=2, **FINITE)


@st.composite
def holdings(draw: st.DrawFn) -> Holdings:
    positions = {
        asset: Position(free=draw(amounts), borrowed=draw(amounts)) for asset in ("BTC", "ETH", "SOL", "USDT")
    }
    priced = {a: draw(prices) for a in ("BTC", "ETH", "SOL")}
    return Holdings("cross:t", "USDT", positions, priced, frozenset({"USDT"}), Bars.classic())


def exact_level(h: Holdings, factors: dict[str, Decimal]) -> Decimal | None:
    """Σ held × price × factor / Σ owed × price × factor, fixed assets at 1: written out again."""
    with localcontext() as ctx:
        ctx.prec = 80
        assets = liabilities = Decimal(0)
        for asset, p in h.positions.items():
            price = Decimal(1) if asset in h.fixed else h.prices[asset] * factors.get(asset, Decimal(1))
            assets += (p.free + p.locked) * price
            liabilities += (p.borrowed + p.interest) * price
        return None if liabilities == 0 else assets / liabilities


@settings(max_examples=200, deadline=None)
@given(holdings())
def test_uniform_moves_match_exact_recomputation(h: Holdings) -> None:
    """Each uniform move's level is Σ held·p·(1+m) / Σ owed·p·(1+m) with the quote fixed."""
    table = stress_table(h, {}, h.prices["BTC"])
    for row, move in zip(table["uniform"], MOVES, strict=True):
        expected = exact_level(h, dict.fromkeys(h.prices, Decimal(1) + move))
        assert row["move"] == float(move)
        assert row["level"] == (None if expected is None else float(expected))


@settings(max_examples=200, deadline=None)
@given(holdings(), betas, betas, st.sampled_from(["normal", "margin_call", "liquidation"]))
def test_btc_price_at_each_bar_puts_the_level_on_the_bar(
    h: Holdings, eth_beta: Decimal, sol_beta: Decimal, bar_name: str
) -> None:
    """Where a crossing is reported, every asset moved by beta × x gives exactly the bar; the BTC
    price is p (1 + x); where none is, no positive-price move on that line reaches the bar."""
    beta = {"BTC": Decimal(1), "ETH": eth_beta, "SOL": sol_beta}
    bar = h.bars.levels[bar_name]
    x = crossing_move(h, beta, bar)
    table = stress_table(h, {"ETH": Beta(eth_beta, 60), "SOL": Beta(sol_beta, 60)}, h.prices["BTC"])
    cross = table["btc"]["bars"][bar_name]
    if x is None:
        assert cross is None
        return
    # the moved totals meet the bar: A(x) - bar L(x) is zero up to the rounding of x (60 digits),
    # measured against the size of the terms (the level itself is ill-conditioned near 1 + x = 0)
    with localcontext() as ctx:
        ctx.prec = 80
        factors = {a: Decimal(1) + b * x for a, b in beta.items()}
        assert all(f > 0 for a, f in factors.items() if not h.positions[a].is_empty)
        unmoved = {
            a: (p.held - bar * p.owed) * (Decimal(1) if a in h.fixed else h.prices[a])
            for a, p in h.positions.items()
        }
        moved = [c * (Decimal(1) if a in h.fixed else factors[a]) for a, c in unmoved.items()]
        residual = abs(sum(moved, Decimal(0)))
        # x carries a relative rounding of 1e-60: each term moves by at most |c beta x| times that
        scale = sum((abs(c) * (1 + abs(beta.get(a, Decimal(0)) * x)) for a, c in unmoved.items()), Decimal(0))
        assert residual <= Decimal("1e-50") * scale
    assert cross["btc_price"] == float(h.prices["BTC"] * (Decimal(1) + x))


@settings(max_examples=100, deadline=None)
@given(holdings(), betas)
def test_btc_model_levels_match_exact_recomputation(h: Holdings, eth_beta: Decimal) -> None:
    """The BTC-model row: BTC moves m, ETH beta × m, SOL (no history) m."""
    table = stress_table(h, {"ETH": Beta(eth_beta, 60)}, h.prices["BTC"])
    if not h.positions["SOL"].is_empty:  # an asset with no history is said to have beta 1
        assert table["btc"]["betas"]["SOL"] == {"beta": 1.0, "samples": 0, "from": None, "to": None}
    for row, m in zip(table["btc"]["moves"], MOVES, strict=True):
        with localcontext() as ctx:
            ctx.prec = 80
            factors = {"BTC": 1 + m, "ETH": max(Decimal(0), 1 + eth_beta * m), "SOL": 1 + m}
        expected = exact_level(h, factors)
        assert row["level"] == (None if expected is None else float(expected))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=-0.02, max_value=0.02, allow_nan=False), min_size=40, max_size=200),
    st.sampled_from([Decimal("0.5"), Decimal("1.25"), Decimal("2"), Decimal("-0.75")]),
)
def test_beta_recovers_a_known_beta(returns: list[float], beta: Decimal) -> None:
    """An asset whose every one-minute return is beta × BTC's has that beta (rounded to 0.01)."""
    assume(len({round(r, 6) for r in returns}) > 3)
    btc, asset = [(0.0, 30_000.0)], [(0.0, 2_000.0)]
    for i, r in enumerate(returns, start=1):
        btc.append((60.0 * i, btc[-1][1] * (1 + r)))
        asset.append((60.0 * i, asset[-1][1] * (1 + float(beta) * r)))
    found = estimate_beta(asset, btc)
    assert found.value == beta and found.samples == len(returns)
    assert (found.start, found.end) == (0.0, 60.0 * len(returns))


def test_beta_without_enough_history_is_one_and_says_so() -> None:
    """Fewer than 30 paired minutes: beta 1, marked as assumed, rendered as "no history"."""
    minutes = [60.0 * i for i in range(10)]
    found = estimate_beta([(t, 100.0 + t) for t in minutes], [(t, 1.0 + t) for t in minutes])
    assert found == Beta(Decimal(1)) and found.samples == 0
    h = Holdings(
        "cross:t", "USDT",
        {"ETH": Position(free=Decimal(10)), "USDT": Position(borrowed=Decimal(10_000))},
        {"ETH": Decimal(2000)}, frozenset({"USDT"}), Bars.classic(),
    )  # fmt: skip
    text = render_stress({"stress": stress_table(h, {"ETH": found}, Decimal(30_000))})
    assert "ETH 1 (no history)" in text
    assert "liquidation at BTC 16,500.00" in text  # 20,000 (1 + x) = 11,000 → x = -0.45


def test_unpriced_unit_has_no_stress() -> None:
    """A unit with an unpriced asset gets no numbers, and says why."""
    h = Holdings("cross:t", "USDT", {"XYZ": Position(free=Decimal(1))}, {}, frozenset(), Bars.classic(),
                 unpriced=("XYZ",))  # fmt: skip
    assert stress_table(h, {}, None) == {"available": False, "reason": "unpriced: XYZ"}
    assert "not available (unpriced: XYZ)" in render_stress({"stress": stress_table(h, {}, None)})


def test_docstring_examples() -> None:
    """The worked example in monitor.risk.stress holds."""
    assert doctest.testmod(monitor.risk.stress).failed == 0
