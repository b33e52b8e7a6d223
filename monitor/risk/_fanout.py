"""The account book's hot path: per-price fan-out of units and their incremental float sums.

Every unit has a float asset value A and liability value L, interleaved in one numpy array
(``al[2i] = A``, ``al[2i + 1] = L``). A tick on a leg (``monitor.risk._legs``: one price, its units and
their coefficients h held, o owed) moves A by h x dp and L by o x dp for the units of that leg only:
O(1) per unit, vectorised with numpy when the leg's fan-out is large and a plain loop when it is
small. Then each touched unit's level A / L is checked against its band. An XBTC tick (an asset
priced through the bridge) moves A by h x dp x p_BTCUSDT and the unit's BTC-equivalent coefficient
in the BTCUSDT leg by h x dp, both O(1) per unit. An inverse leg (``1/USDTBRL``) is moved by the
tick's inverse 1/p, one division per leg (a tick at 0 leaves it at its last price).

Drift control. All terms are >= 0, so when a price moves from p_old to p_new a sum S cannot shrink
by more than the price did (S_old <= rho S_new, rho = max(1, p_old / p_new)) and the moved part is
small (|h dp| <= m S_new, m = |dp| / min(p_old, p_new)). With unit roundoff eps / 2, the update
S + h dp carries the old error (delta rho), rounds dp and the product (eps m) and the sum (eps), and
on a bridge tick adds the coefficient's own error (delta_q m). So

    delta' = delta rho + (delta_q + eps) m + eps

bounds the relative error of every unit's A and L (``delta``), and the same recursion without the
delta_q term bounds every Q (``delta_q``). When either passes ``tol`` (1e-11 by default) every sum
is recomputed from its terms (relative error <= (k + 2) eps for k terms, all >= 0). So the float
levels stay within ~2 tol of the exact value after any sequence of ticks (the benchmark's random
walk over 50 symbols recomputes about once per 8,000 ticks, 0.25 ms for 1,000 accounts).

Units that no price can move are *static*: no debt (level infinite) or only quote-like assets. They
are in no leg's arrays, so every unit in the arrays has L > 0 unless some leg price is 0 (``zeros``),
the only case that needs a division guard.

Until the first large leg the sums are a plain list and numpy is not imported (a small daemon never
loads it); from the first large layout on they are one numpy array for good (``Fanout.vector_sums``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, cast

from monitor.risk._legs import Key, Leg, numpy
from monitor.risk.prices import INVERSE, leg_symbol

if TYPE_CHECKING:
    from monitor.risk._legs import FloatArray

__all__ = ["Fanout"]

INF = math.inf
NAN = math.nan
EPS = sys.float_info.epsilon
NONE: Sequence[int] = ()


class Fanout:
    """Units' float sums, their bands and the legs that move them.

    The account book (``monitor.risk.book``) uses only these methods, by slot index: ``add``,
    ``remove``, ``set_exposure``, ``set_band``; ``apply`` a tick; ``level``, ``outside``, ``priced``,
    ``unit_ids``, ``symbols``, ``inverted``, ``stats`` and the ``updates`` counter; ``resync`` with
    exact sums. The attributes are this module's own, and so is the drift bound (``delta``,
    ``delta_q``, ``tol``: when it restarts).
    ``on_priced(i)`` is called when unit ``i``'s last unpriced leg gets its first price.
    """

    def __init__(
        self,
        prices: dict[str, float],
        threshold: int = 8,
        tol: float = 1e-11,
        on_priced: Callable[[int], None] | None = None,
    ) -> None:
        self.prices = prices
        self.threshold = threshold
        self.legs: dict[Key, Leg] = {}
        self.by_symbol: dict[str, list[Leg]] = {}
        self.ids: list[str] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.dynamic: list[bool] = []
        self.static_level: list[float] = []
        self.unpriced: list[int] = []
        self.exposure: list[dict[Key, tuple[float, float]]] = []
        self.free: list[int] = []
        self.al: list[float] | FloatArray = []  # a numpy array from the first large leg on
        self.fixed: list[float] = []
        self.vectorised = False
        self.tol_base = tol
        self.kmax = 1
        self.floor = 3 * EPS
        self.tol = tol
        self.delta = self.floor
        self.delta_q = self.floor
        self.zeros = 0
        self.updates = 0
        self.full_recomputes = 0
        self.priced_hook = on_priced

    # --- units ----------------------------------------------------------------------------------

    def add(self, uid: str) -> int:
        """A slot for a new unit (no exposure, empty band)."""
        if self.free:
            i = self.free.pop()
            self.ids[i] = uid
            self.lo[i], self.hi[i] = INF, -INF
            return i
        i = len(self.ids)
        self.ids.append(uid)
        self.lo.append(INF)
        self.hi.append(-INF)
        self.dynamic.append(False)
        self.static_level.append(INF)
        self.unpriced.append(0)
        self.exposure.append({})
        if 2 * i + 2 > len(self.al):
            size = max(64, 4 * i + 4)
            grow = size - len(self.al)
            if self.vectorised:
                np = numpy()
                self.al = np.concatenate([self.al, np.full(grow, NAN)])
            else:
                cast("list[float]", self.al).extend([NAN] * grow)
            self.fixed.extend([0.0] * (size - len(self.fixed)))
        return i

    def remove(self, i: int) -> None:
        """Forget unit ``i`` and free its slot."""
        self.set_exposure(i, {}, 0.0, 0.0, 0)
        self.ids[i] = ""
        self.free.append(i)

    def unit_ids(self, indices: Sequence[int]) -> list[str]:
        """The unit ids of slot indices (as ``apply`` returns them)."""
        ids = self.ids
        return [ids[i] for i in indices]

    def symbols(self) -> Iterator[str]:
        """The legs' symbols (``1/`` marking an inverse leg) of every leg some unit is exposed to."""
        return (s for key, leg in self.legs.items() if leg.members for s in key)

    def priced(self, i: int) -> bool:
        """Every leg unit ``i`` is exposed to has a price, and it has no asset without a route."""
        return not self.unpriced[i]

    def stats(self) -> dict[str, float]:
        """Unit updates by ticks, full recomputations (drift bound), legs with units, their mean
        fan-out, how many run vectorised, and the current drift bound."""
        sizes = [len(leg.members) for leg in self.legs.values() if leg.members]
        return {
            "updates": self.updates,
            "full_recomputes": self.full_recomputes,
            "legs": len(sizes),
            "mean_fanout": sum(sizes) / len(sizes) if sizes else 0.0,
            "vector_legs": sum(1 for leg in self.legs.values() if leg.vector and leg.size),
            "drift_bound": self.delta,
        }

    def resync(
        self, exact: Callable[[int], tuple[float, float] | None], units: Iterable[int] | None = None
    ) -> float:
        """Set priced, price-moved units' sums to ``exact(i)`` (assets, liabilities; None: leave it),
        for every unit or only ``units`` (a sweep in slices); return the largest relative level drift
        erased (0.0 when none). The drift bound restarts only when every unit was reset at once: a
        slice leaves the others' accumulated error in place."""
        worst = 0.0
        al, ids = self.al, self.ids
        for i in range(len(ids)) if units is None else units:
            if not ids[i] or self.unpriced[i] or not self.dynamic[i]:
                continue
            sums = exact(i)
            if sums is None:  # pragma: no cover - priced here means priced exactly
                continue
            before = self.level(i)
            al[2 * i], al[2 * i + 1] = sums
            after = self.level(i)
            if before != after:
                scale = after if 0.0 < after < INF else 1.0
                worst = max(worst, abs(before - after) / scale if after < INF else INF)
        if units is None:
            self.delta = self.floor
        return worst

    def leg(self, symbols: Key) -> Leg:
        """The leg for a route's symbols (created on first use, priced from the book). A two-symbol
        route (asset x bridge, bridge x quote) is an inner leg of the bridge's leg."""
        leg = self.legs.get(symbols)
        if leg is None:
            parent = self.leg(symbols[1:]) if len(symbols) == 2 else None
            symbol = leg_symbol(symbols[0])
            price = self.prices.get(symbol, NAN)
            if symbols[0].startswith(INVERSE):
                price = 1.0 / price if price else NAN
            leg = self.legs[symbols] = Leg(symbols, price, parent)
            if parent is not None:
                parent.inners.append(leg)
            self.zeros += leg.price == 0.0
            self.by_symbol.setdefault(symbol, []).append(leg)
        return leg

    def inverted(self, symbol: str) -> bool:
        """Some leg prices 1 / ``symbol`` (a tick at 0 cannot be applied to it)."""
        return any(leg.inverse for leg in self.by_symbol.get(symbol, ()))

    def _dirty(self, leg: Leg) -> None:
        leg.dirty = True
        if leg.parent is not None:
            leg.parent.dirty = True

    def set_exposure(
        self, i: int, exposure: dict[Key, tuple[float, float]], fa: float, fl: float, unroutable: int
    ) -> None:
        """Unit ``i``'s legs with coefficients (h, o), its fixed asset/liability value, and how many of
        its assets have no price route at all. Legs whose membership changes are rebuilt lazily."""
        exposure = dict(exposure)
        for bridge in [k[1:] for k in exposure if len(k) == 2]:
            exposure.setdefault(bridge, (0.0, 0.0))  # an inner leg's unit belongs to the bridge leg
        old = self.exposure[i]
        was_dynamic = self.dynamic[i]
        owes = fl > 0 or any(o > 0 for _, o in exposure.values())
        dynamic = bool(exposure) and owes
        self.dynamic[i] = dynamic
        for key in old.keys() - exposure.keys():
            leg = self.legs[key]
            del leg.members[i]
            self._dirty(leg)
        for key, coefs in exposure.items():
            leg = self.leg(key)
            before = leg.members.get(i)
            leg.members[i] = coefs
            if before is None or dynamic != was_dynamic or leg.parent is not None or leg.inners:
                if before != coefs or dynamic != was_dynamic:
                    self._dirty(leg)
            elif before != coefs and not leg.dirty and dynamic:
                leg.patch(i, coefs)
        if exposure != old:  # equal (a snapshot that changed nothing): the old dict stays, no new object
            self.exposure[i] = exposure
        self.fixed[2 * i], self.fixed[2 * i + 1] = fa, fl
        self.static_level[i] = fa / fl if owes and not dynamic else INF
        self.unpriced[i] = unroutable + sum(self.legs[k].price != self.legs[k].price for k in exposure)
        if len(exposure) + 1 > self.kmax:
            self.kmax = len(exposure) + 1
            self.floor = (self.kmax + 2) * EPS
            self.tol = max(self.tol_base, 16 * self.floor)
            self.delta = max(self.delta, self.floor)
            self.delta_q = max(self.delta_q, self.floor)
        if dynamic:
            self.recompute(i)

    def set_band(self, i: int, lo: float, hi: float) -> None:
        """Unit ``i`` is reported when its (engine) level leaves [lo, hi]; lo > hi is an empty band."""
        self.lo[i], self.hi[i] = lo, hi
        if not self.dynamic[i]:
            return
        for key in self.exposure[i]:
            self.legs[key].set_band(i, lo, hi)

    def level(self, i: int) -> float:
        """Unit ``i``'s float level: NaN while unpriced, inf with no debt value."""
        if self.unpriced[i]:
            return NAN
        if not self.dynamic[i]:
            return self.static_level[i]
        a, lia = float(self.al[2 * i]), float(self.al[2 * i + 1])
        if lia > 0.0:
            return a / lia
        return INF if lia == 0.0 else NAN

    def outside(self, i: int) -> bool:
        """Unit ``i`` is priced and its level is outside its band."""
        lv = self.level(i)
        return lv < self.lo[i] or lv > self.hi[i]

    def recompute(self, i: int) -> None:
        """Unit ``i``'s sums from its terms (relative error <= (k + 2) eps)."""
        a, lia = float(self.fixed[2 * i]), float(self.fixed[2 * i + 1])
        legs = self.legs
        for key, (h, o) in self.exposure[i].items():
            p = legs[key].effective_price
            a += h * p
            lia += o * p
        self.al[2 * i], self.al[2 * i + 1] = a, lia

    def recompute_all(self) -> None:
        """Every unit's sums (and bridge coefficients) from their terms; resets the drift bounds."""
        for leg in self.legs.values():
            if leg.dirty:
                self.rebuild(leg)
        if any(leg.vector for leg in self.legs.values()):
            self.vector_sums()
        al = numpy().array(self.fixed) if self.vectorised else list(self.fixed)
        for leg in self.legs.values():
            if not leg.size:
                continue
            p = leg.effective_price
            if leg.vector:
                cast("FloatArray", al)[leg.idx2] += leg.base * p
            else:
                members = leg.members
                for i in leg.pu:
                    h, o = members[i]
                    al[2 * i] += h * p
                    al[2 * i + 1] += o * p
        for leg in self.legs.values():
            if leg.inners and leg.size:
                leg.refresh_q(self.dynamic, self.lo, self.hi, self.threshold)
        self.al = al
        self.delta = self.delta_q = self.floor
        self.full_recomputes += 1

    def rebuild(self, leg: Leg) -> None:
        """Lay a leg out again from its members (see ``Leg.layout``); the first large one turns the
        sums into a numpy array."""
        leg.layout(self.dynamic, self.lo, self.hi, self.threshold)
        if leg.vector:
            self.vector_sums()

    def vector_sums(self) -> FloatArray:
        """The sums as a numpy array (converted from the list once, at the first large leg)."""
        if not self.vectorised:
            self.al = numpy().array(self.al, dtype=float)
            self.vectorised = True
        return cast("FloatArray", self.al)

    # --- ticks ----------------------------------------------------------------------------------

    def apply(self, symbol: str, price: float) -> Sequence[int]:
        """A new price for ``symbol``: update the exposed units; return those now outside their band."""
        legs = self.by_symbol.get(symbol)
        if legs is None:
            return NONE
        if len(legs) == 1:
            leg = legs[0]
            if leg.inverse:
                if not price:  # 1/0: an inverse leg keeps its last price
                    return NONE
                return self.update(leg, 1.0 / price, True) or NONE
            return self.update(leg, price, True) or NONE
        # Several legs move (an isolated pair and an inner leg on one symbol): update them all, then
        # check each unit once.
        found: dict[int, None] = {}
        small: dict[int, None] = {}
        vector: list[Leg] = []
        for leg in legs:
            if leg.inverse and not price:
                continue
            result = self.update(leg, 1.0 / price if leg.inverse else price, False)
            if result is None:
                continue
            found.update(dict.fromkeys(result))
            if leg.vector:
                vector.append(leg)
            else:
                small.update(dict.fromkeys(leg.pu))
        for leg in vector:
            found.update(dict.fromkeys(self.check(leg)))
        outside = self.outside
        found.update(dict.fromkeys(i for i in small if outside(i)))
        return list(found) if found else NONE

    def update(self, leg: Leg, p_new: float, check: bool) -> Sequence[int] | None:
        """Move ``leg`` to ``p_new``. With ``check``, return the units now outside their band; without,
        return None if nothing changed, else the units that a later ``check`` of the leg cannot see."""
        p_old = leg.price
        if p_new == p_old or (p_new != p_new and p_old != p_old):
            return NONE if check else None
        parent = leg.parent
        if not (p_old > 0.0 and p_new > 0.0) or (parent is not None and not parent.price > 0.0):
            return self.reprice(leg, p_new, check)
        leg.price = p_new
        if leg.dirty:
            self.rebuild(leg)
        if not leg.size:
            return NONE if check else None
        self.updates += leg.size
        if p_new < p_old:
            rho = p_old / p_new
            move = rho - 1.0
        else:
            rho = 1.0
            move = p_new / p_old - 1.0
        dp = p_new - p_old
        if parent is None:
            dpa = dp
            self.delta = self.delta * rho + ((self.delta_q if leg.inners else 0.0) + EPS) * move + EPS
        else:
            dpa = dp * parent.price
            self.delta = self.delta * rho + 2 * EPS * move + EPS
            self.delta_q = self.delta_q * rho + EPS * move + EPS
        if self.delta > self.tol or self.delta_q > self.tol:
            self.recompute_all()
            return self.check(leg) if check else NONE
        if parent is not None:
            leg.move_q(dp)
        if leg.vector:
            vec = self.vector_sums()
            al = vec.take(leg.idx2)
            al += leg.coef * dpa
            vec.put(leg.idx2, al)
            if not check:
                return NONE
            return self._outside(leg, al)
        sums = self.al
        lo, hi = self.lo, self.hi
        found: list[int] | None = None
        for i, h, o in zip(leg.pu, leg.ph, leg.po, strict=True):
            j = i + i
            a = sums[j] + h * dpa
            lia = sums[j + 1] + o * dpa
            sums[j] = a
            sums[j + 1] = lia
            if not check:
                continue
            if lia > 0.0:
                lv = a / lia
            elif lia == 0.0:
                lv = INF
            else:
                continue
            if lv < lo[i] or lv > hi[i]:
                if found is None:
                    found = [i]
                else:
                    found.append(i)
        return found or NONE

    def _outside(self, leg: Leg, al: FloatArray) -> Sequence[int]:
        np = numpy()
        if self.zeros:
            with np.errstate(divide="ignore", invalid="ignore"):
                lvl = al[0::2] / al[1::2]
            lvl[np.isnan(lvl) & (al[1::2] == 0.0) & (al[0::2] == 0.0)] = INF
        else:
            lvl = al[0::2] / al[1::2]
        out = (lvl < leg.blo) | (lvl > leg.bhi)
        if np.count_nonzero(out):
            units: list[int] = leg.units[out].tolist()
            return units
        return NONE

    def check(self, leg: Leg) -> Sequence[int]:
        """The leg's dynamic units outside their band (from the stored sums)."""
        if leg.dirty:
            self.rebuild(leg)
        if leg.vector:
            return self._outside(leg, self.vector_sums().take(leg.idx2))
        return [i for i in leg.pu if self.outside(i)]

    def reprice(self, leg: Leg, p_new: float, check: bool) -> Sequence[int]:
        """The slow path: a leg's first price, a move to or from 0, or an inner leg whose bridge has no
        usable price. Recompute the leg's units in full."""
        p_old = leg.price
        leg.price = p_new
        self.zeros += (p_new == 0.0) - (p_old == 0.0)
        first = p_old != p_old
        self._dirty(leg)
        self.rebuild(leg)
        if leg.parent is not None:
            self.rebuild(leg.parent)
        self.updates += len(leg.members)
        found: list[int] = []
        hook = self.priced_hook
        for i in leg.members:
            if first:
                self.unpriced[i] -= 1
                if self.unpriced[i] == 0 and hook is not None:
                    hook(i)
            if self.unpriced[i]:
                continue
            if self.dynamic[i]:
                self.recompute(i)
                if check and self.outside(i):
                    found.append(i)
            elif first and self.outside(i):
                found.append(i)
        return found
