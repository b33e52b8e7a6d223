"""The stress table: a unit's level after price moves, exactly, and where BTC would cross each bar.

Two models, both on ``Decimal`` (pure, no I/O):

- *uniform*: every moving (non-quote, non-stablecoin) asset moves by the same fraction;
- *BTC beta*: BTC moves by ``x`` and every other moving asset by ``beta × x``, beta estimated from
  the recorded price history (:func:`estimate_beta`; 1 when there is none, said so). Under it the
  level is ``(A0 + A1 x) / (L0 + L1 x)`` with ``A0 = Σ held·p``, ``A1 = Σ held·p·beta`` (fixed
  assets count in ``A0`` only) and likewise for ``L``; the move that brings it to bar ``T`` is
  ``x = (T L0 - A0) / (A1 - T L1)``, reported as a BTC price ``p_btc (1 + x)``. While every price
  stays positive that level is monotonic in ``x``, so each bar has at most one such price.

Worked example: 1 BTC and 10 ETH held, 25,000 USDT owed, BTC at 30,000, ETH at 2,000, ETH's beta
1.5. A0 = 30,000 + 20,000 = 50,000, A1 = 30,000 + 1.5 × 20,000 = 60,000, L0 = 25,000, L1 = 0.
Level now 2.0. After BTC -10 %: (50,000 - 6,000) / 25,000 = 1.76. The liquidation bar 1.1 is met
at x = (1.1 × 25,000 - 50,000) / 60,000 = -0.375, i.e. BTC at 18,750 (ETH then at 2,000 × (1 -
0.5625) = 875). Uniformly, -10 % gives (50,000 × 0.9) / 25,000 = 1.8.

>>> from monitor.risk.holdings import Holdings
>>> from monitor.risk.margin import Bars, Position
>>> h = Holdings("cross:a", "USDT", {"BTC": Position(free=Decimal(1)), "ETH": Position(free=Decimal(10)),
...     "USDT": Position(borrowed=Decimal(25000))}, {"BTC": Decimal(30000), "ETH": Decimal(2000)},
...     frozenset({"USDT"}), Bars.classic())
>>> level_after(h, {"BTC": Decimal("-0.1"), "ETH": Decimal("-0.15")})
Decimal('1.76')
>>> crossing_move(h, {"BTC": Decimal(1), "ETH": Decimal("1.5")}, Decimal("1.1"))
Decimal('-0.375')
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from monitor.risk.holdings import Holdings
from monitor.risk.margin import value_positions

__all__ = [
    "MIN_SAMPLES",
    "MOVES",
    "Beta",
    "crossing_move",
    "estimate_beta",
    "level_after",
    "render_stress",
    "stress_table",
]

ZERO = Decimal(0)
ONE = Decimal(1)
MOVES = (Decimal("-0.05"), Decimal("-0.10"), Decimal("-0.20"), Decimal("-0.30"))
MIN_SAMPLES = 30  # one-minute returns needed before a beta is estimated rather than assumed 1
BETA_QUANTUM = Decimal("0.01")
PREC = 60


@dataclass(frozen=True, slots=True)
class Beta:
    """An asset's beta to BTC: ``samples`` one-minute returns between ``start`` and ``end``
    (epoch seconds); ``samples == 0`` means no usable history and a beta of 1."""

    value: Decimal
    samples: int = 0
    start: float | None = None
    end: float | None = None


def level_after(h: Holdings, moves: Mapping[str, Decimal]) -> Decimal | None:
    """The exact level after each moving asset's price is multiplied by (1 + its move) (absent: 0),
    a price never going below 0 (a beta of 4 times -30 % wipes the asset out: price 0); None for no
    debt. Scaled like the live level (Cross Margin Pro)."""
    with localcontext() as ctx:
        ctx.prec = PREC
        prices = {a: p * max(ZERO, ONE + moves.get(a, ZERO)) for a, p in h.prices.items()}
        level = value_positions(h.positions, prices, h.fixed).level()
        return None if level is None else level * h.scale


def _linear(h: Holdings, betas: Mapping[str, Decimal]) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    a0 = a1 = l0 = l1 = ZERO
    for asset, p in h.positions.items():
        if asset in h.fixed:
            a0 += p.held
            l0 += p.owed
            continue
        price = h.prices[asset]
        beta = betas.get(asset, ONE)
        a0 += p.held * price
        a1 += p.held * price * beta
        l0 += p.owed * price
        l1 += p.owed * price * beta
    return a0, a1, l0, l1


def crossing_move(h: Holdings, betas: Mapping[str, Decimal], bar: Decimal) -> Decimal | None:
    """The BTC move ``x`` (each asset moving ``beta × x``; absent beta: 1) at which the level meets
    ``bar``; None when no debt, when the level does not depend on ``x``, or when the move would need
    some price <= 0."""
    if h.unpriced:
        return None
    with localcontext() as ctx:
        ctx.prec = PREC
        a0, a1, l0, l1 = _linear(h, betas)
        if l0 <= 0:
            return None
        target = bar / h.scale
        denominator = a1 - target * l1
        if denominator == 0:
            return None
        x = (target * l0 - a0) / denominator
        if ONE + x <= 0:
            return None
        for asset in h.prices:
            if h.positions[asset].is_empty:
                continue
            if ONE + betas.get(asset, ONE) * x <= 0:
                return None
        return x


def estimate_beta(
    asset: Sequence[tuple[float, float]], btc: Sequence[tuple[float, float]], minimum: int = MIN_SAMPLES
) -> Beta:
    """Beta of ``asset`` to ``btc`` from (time, price) series sampled on the same minutes: the
    covariance of their one-minute returns over the variance of BTC's, on the minutes both have
    (rounded to 0.01). Fewer than ``minimum`` returns or a flat BTC: Beta(1), no history."""
    btc_at = dict(btc)
    pairs = [(t, p, btc_at[t]) for t, p in asset if t in btc_at and p > 0 and btc_at[t] > 0]
    pairs.sort()
    returns = [
        (p1 / p0 - 1.0, b1 / b0 - 1.0)
        for (t0, p0, b0), (t1, p1, b1) in itertools.pairwise(pairs)
        if t1 - t0 <= 60.0 + 1e-6
    ]
    if len(returns) < minimum:
        return Beta(ONE)
    n = len(returns)
    mean_a = sum(r for r, _ in returns) / n
    mean_b = sum(r for _, r in returns) / n
    var_b = sum((r - mean_b) ** 2 for _, r in returns) / n
    if not var_b > 0:
        return Beta(ONE)
    cov = sum((ra - mean_a) * (rb - mean_b) for ra, rb in returns) / n
    value = cov / var_b
    if not math.isfinite(value):
        return Beta(ONE)
    return Beta(Decimal(repr(value)).quantize(BETA_QUANTUM), n, pairs[0][0], pairs[-1][0])


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def stress_table(
    h: Holdings, betas: Mapping[str, Beta], btc_price: Decimal | None, btc: str = "BTC"
) -> dict[str, Any]:
    """The ``stress`` key of one unit in ``status --json``.

    ``uniform``: level after each move in :data:`MOVES`. ``btc``: with ``btc_price`` (BTC in the
    unit's quote; None: the model does not apply, e.g. an isolated pair not quoted in the book's
    quote) the level after BTC moves of the same sizes, each other asset moving ``beta ×``, the
    betas used with their windows, and per bar the BTC move and price at which it is crossed.
    """
    if h.unpriced:
        return {"available": False, "reason": "unpriced: " + ", ".join(h.unpriced)}
    moving = [a for a in h.prices if not h.positions[a].is_empty]
    uniform = [{"move": float(m), "level": _f(level_after(h, dict.fromkeys(moving, m)))} for m in MOVES]
    table: dict[str, Any] = {"available": True, "uniform": uniform}
    if btc_price is None:
        table["btc"] = None
        return table
    used = {a: (Beta(ONE, 1) if a == btc else betas.get(a, Beta(ONE))) for a in moving}
    values = {a: b.value for a, b in used.items()}
    moves = [
        {
            "move": float(m),
            "btc_price": float(btc_price * (ONE + m)),
            "level": _f(level_after(h, {a: v * m for a, v in values.items()})),
        }
        for m in MOVES
    ]
    bars: dict[str, Any] = {}
    for name, bar in h.bars.descending():
        x = crossing_move(h, values, bar)
        bars[name] = None if x is None else {"move": float(x), "btc_price": float(btc_price * (ONE + x))}
    table["btc"] = {
        "price": float(btc_price),
        "betas": {
            a: {"beta": float(b.value), "samples": b.samples, "from": b.start, "to": b.end}
            for a, b in sorted(used.items())
            if a != btc
        },
        "moves": moves,
        "bars": bars,
    }
    return table


def _lv(value: float | None) -> str:
    return "no debt" if value is None else f"{value:.3f}"


def render_stress(unit: Mapping[str, Any]) -> str:
    """A compact text rendering of a unit's ``stress`` key (for the console status), one or two lines.

    >>> render_stress({"stress": {"available": True, "uniform": [{"move": -0.05, "level": 1.52}],
    ...     "btc": None}})
    'stress (all assets): -5% 1.520'
    """
    table = unit.get("stress")
    if not isinstance(table, Mapping):
        return "stress: not computed"
    if not table.get("available"):
        return f"stress: not available ({table.get('reason', 'unknown')})"
    parts = [f"{row['move']:+.0%} {_lv(row['level'])}" for row in table.get("uniform", [])]
    lines = ["stress (all assets): " + " · ".join(parts)]
    btc = table.get("btc")
    if isinstance(btc, Mapping):
        betas = btc.get("betas", {})
        said = []
        for asset, b in betas.items():
            if b.get("samples"):
                said.append(f"{asset} {b['beta']:.2f} ({b['samples']} min)")
            else:
                said.append(f"{asset} 1 (no history)")
        bars = []
        for name, cross in btc.get("bars", {}).items():
            bars.append(f"{name} at BTC {cross['btc_price']:,.2f}" if cross else f"{name} unreachable")
        lines.append(
            "BTC model"
            + (f" (beta {', '.join(said)})" if said else "")
            + ": "
            + " · ".join(f"{m['move']:+.0%} {_lv(m['level'])}" for m in btc.get("moves", []))
            + ("; bars: " + ", ".join(bars) if bars else "")
        )
    return "\n".join(lines)
