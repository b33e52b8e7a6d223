"""Price legs: one price and the units exposed to it, laid out for the hot path (``monitor.risk._fanout``).

A leg's ``members`` map every exposed unit to its coefficients (h held, o owed) in the leg's price.
Its *layout* holds the dynamic units only (static ones never move): plain lists for a small
fan-out, numpy arrays (unit slots interleaved as A, L) for a large one. numpy is imported at the
first large layout (:func:`numpy`): a daemon whose legs all stay small never loads it (~12 MiB).

Assets priced through the bridge (X = XBTC x BTCUSDT) are *inner* legs of the bridge leg BTCUSDT:
the bridge leg's coefficient for a unit is its BTC-equivalent holding Q = h_BTC + sum h_X x p_XBTC
(likewise for owed), so a BTCUSDT tick is one ordinary update and an XBTC tick moves Q by h x dp.

An *inverse* leg (name ``1/`` + symbol, e.g. ``1/USDTBRL`` for BRL) has price 1 / the symbol's
price: the engine inverts the tick once per leg and the rest of the hot path is unchanged. Either
leg of a bridged route may be inverse (``1/BTCXYZ``, ``1/USDTBTC``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, cast

from monitor.risk.prices import INVERSE

if TYPE_CHECKING:
    import numpy.typing as npt
    from numpy import float64, int64

    FloatArray = npt.NDArray[float64]
    IntArray = npt.NDArray[int64]

__all__ = ["FloatArray", "IntArray", "Key", "Leg", "numpy"]

NAN = math.nan
Key = tuple[str, ...]
# A list leg's array attributes: never read (every use is behind ``vector``), so not numpy's.
_UNSET_F = cast("FloatArray", ())
_UNSET_I = cast("IntArray", ())


def numpy() -> ModuleType:
    """numpy, imported on first use (the vectorised path of a large fan-out only)."""
    import numpy as np

    return np


class Leg:
    """One price and the units exposed to it.

    ``members`` maps every exposed unit (static ones too) to its own coefficients (h, o). The layout
    (lists ``pu``/``ph``/``po`` or the numpy arrays) holds the dynamic units only, with the bridge
    leg's coefficients including its inner legs (Q); ``base`` keeps the leg's own coefficients.
    ``parent`` is the bridge leg of an inner leg.
    """

    __slots__ = (
        "base",
        "bhi",
        "blo",
        "coef",
        "dirty",
        "gen",
        "idx2",
        "inners",
        "inverse",
        "members",
        "parent",
        "pgen",
        "ph",
        "po",
        "pos",
        "ppos",
        "price",
        "pu",
        "size",
        "symbols",
        "units",
        "vector",
    )

    def __init__(self, symbols: Key, price: float, parent: Leg | None) -> None:
        self.symbols = symbols
        self.inverse = symbols[0].startswith(INVERSE)  # its price is 1 / the symbol's
        self.price = price
        self.parent = parent
        self.inners: list[Leg] = []
        self.members: dict[int, tuple[float, float]] = {}
        self.dirty = True
        self.size = 0
        self.vector = False
        self.gen = 0  # bumped by each rebuild: inner legs' ``ppos`` into this layout are then stale
        self.pgen = -1
        self.pos: dict[int, int] = {}
        self.ppos: IntArray = _UNSET_I  # vector: interleaved slots in the parent's ``coef``
        self.pu: list[int] = []
        self.ph: list[float] = []
        self.po: list[float] = []
        self.units: IntArray = _UNSET_I
        self.idx2: IntArray = _UNSET_I
        self.coef: FloatArray = _UNSET_F
        self.base: FloatArray = _UNSET_F
        self.blo: FloatArray = _UNSET_F
        self.bhi: FloatArray = _UNSET_F

    @property
    def effective_price(self) -> float:
        """The leg's price in the quote (an inner leg's times its bridge's)."""
        return self.price if self.parent is None else self.price * self.parent.price

    def layout(
        self, dynamic: Sequence[bool], lo: Sequence[float], hi: Sequence[float], threshold: int
    ) -> None:
        """Lay out the dynamic members (bands from ``lo``/``hi``): lists up to ``threshold``, else arrays."""
        base = {i: c for i, c in self.members.items() if dynamic[i]}
        q = {i: list(c) for i, c in base.items()}
        for inner in self.inners:
            p = inner.price
            for i, (h, o) in inner.members.items():
                row = q.get(i)
                if row is not None:
                    row[0] += h * p
                    row[1] += o * p
        self.size = n = len(q)
        self.pos = {i: k for k, i in enumerate(q)}
        self.vector = n > threshold
        self.gen += 1
        self.pgen = -1
        if self.vector:
            np = numpy()
            units = np.fromiter(q, np.int64, n)
            self.units = units
            self.idx2 = np.empty(2 * n, np.int64)
            self.idx2[0::2], self.idx2[1::2] = 2 * units, 2 * units + 1
            self.coef = np.fromiter((c for row in q.values() for c in row), np.float64, 2 * n)
            self.base = np.fromiter((c for row in base.values() for c in row), np.float64, 2 * n)
            self.blo = np.fromiter((lo[i] for i in q), np.float64, n)
            self.bhi = np.fromiter((hi[i] for i in q), np.float64, n)
            self.pu, self.ph, self.po = [], [], []
        else:
            self.pu = list(q)
            self.ph = [row[0] for row in q.values()]
            self.po = [row[1] for row in q.values()]
        self.dirty = False

    def patch(self, i: int, coefs: tuple[float, float]) -> None:
        """New own coefficients of unit ``i`` in a laid-out leg without inner legs."""
        k = self.pos[i]
        if self.vector:
            self.coef[2 * k], self.coef[2 * k + 1] = coefs
            self.base[2 * k], self.base[2 * k + 1] = coefs
        else:
            self.ph[k], self.po[k] = coefs

    def set_band(self, i: int, lo: float, hi: float) -> None:
        """Unit ``i``'s band in a laid-out vector leg (list legs read the engine's lists)."""
        if self.vector and not self.dirty:
            k = self.pos[i]
            self.blo[k], self.bhi[k] = lo, hi

    def parent_slots(self, parent: Leg) -> IntArray:
        """This (vector) inner leg's units' slots in its (vector) parent's interleaved ``coef``."""
        if self.pgen != parent.gen:
            pos = parent.pos
            np = numpy()
            slots = np.fromiter((pos[int(r)] for r in self.units), np.int64, self.size)
            self.ppos = np.empty(2 * self.size, np.int64)
            self.ppos[0::2], self.ppos[1::2] = 2 * slots, 2 * slots + 1
            self.pgen = parent.gen
        return self.ppos

    def rows(self) -> Sequence[tuple[int, float, float]]:
        """(unit, h, o) of the laid-out units (the layout's coefficients)."""
        if self.vector:
            c = self.coef.tolist()
            return list(zip(self.units.tolist(), c[0::2], c[1::2], strict=True))
        return list(zip(self.pu, self.ph, self.po, strict=True))

    def move_q(self, dp: float) -> None:
        """This inner leg moved by ``dp``: its units' bridge coefficients move by (h, o) x dp (a dirty
        bridge leg is laid out again from the current prices when next used)."""
        parent = self.parent
        if parent is None or parent.dirty or not parent.size:
            return
        if self.vector and parent.vector:
            parent.coef[self.parent_slots(parent)] += self.coef * dp
            return
        pos = parent.pos
        for i, h, o in self.rows():
            k = pos[i]
            if parent.vector:
                parent.coef[2 * k] += h * dp
                parent.coef[2 * k + 1] += o * dp
            else:
                parent.ph[k] += h * dp
                parent.po[k] += o * dp

    def refresh_q(
        self, dynamic: Sequence[bool], lo: Sequence[float], hi: Sequence[float], threshold: int
    ) -> None:
        """A bridge leg's coefficients Q from scratch: its own plus each inner leg's at its price."""
        if not self.vector:
            self.layout(dynamic, lo, hi, threshold)
            return
        coef = self.base.copy()
        pos = self.pos
        for inner in self.inners:
            if inner.dirty:
                inner.layout(dynamic, lo, hi, threshold)
            if not inner.size:
                continue
            p = inner.price
            if inner.vector:
                coef[inner.parent_slots(self)] += inner.coef * p
            else:
                for i, h, o in inner.rows():
                    k = pos[i]
                    coef[2 * k] += h * p
                    coef[2 * k + 1] += o * p
        self.coef = coef
