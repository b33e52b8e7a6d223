"""The latency benchmark's workload and its offline replay (used by ``bench/latency.py``).

- :func:`make_workload`: N cross accounts, each holding ``per_account`` of ``symbols`` assets
  (random, random value weights) against a USDT loan, levels spread around the 1.5 bar; and the
  simulator scenario that serves them (limits raised so 1,000 keys can start at once; the
  WebSocket connection limit is lifted by ``bench/latency_sim.py``, the simulator's process).
- :func:`make_path`: the price path the simulator pushes: each tick one random symbol, a
  mean-reverting log step, written as a bookTicker bid/ask pair (the daemon takes the mid).
- :func:`expected_events`: the daemon's alert rules (level ≤ bar fires, > bar + hysteresis
  resolves) replayed exactly over every tick, giving the tick that caused each alert.
- :func:`match_latencies` (the old matcher, kept to compare): each recorded Apprise call ↔ the
  expected event of the same account, bar and kind that is the latest one sent before the call. It
  can pair an alert with a tick the daemon had read in an earlier batch and never alerted on (a level
  over the bar for one tick, back within the next one read together): hundreds of ms of "latency".
- :func:`match_evaluations` (the exact matcher): each call ↔ the event the daemon itself queued in
  one recorded evaluation of a price batch (``Evaluation``, from a bench hook on
  ``Engine.on_prices``), checked by the level printed in the title; the causing tick is the first
  tick from which the account's replayed level stayed on the alert's side through the newest tick
  of that batch (:class:`Replay`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

BARS = (1.5, 1.3, 1.1)  # Binance's classic cross-margin tradeCoeff: the daemon's default ladder
LOAN = 10_000.0
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_TITLE = re.compile(
    r"^\[(?P<resolved>resolved )?[^\]]*\] (?P<account>\S+) \(cross\): "
    r"margin level (?P<level>\S+) \S (?P<bar>\S+)$"
)


@dataclass
class Workload:
    """Accounts (as holdings) and the symbols they need."""

    symbols: list[str]  # e.g. "BTCUSDT", "X01USDT"
    prices: F64  # initial price per symbol
    names: list[str]  # account names
    holdings: list[list[tuple[int, float]]]  # per account: (symbol index, quantity)

    def scenario(self) -> dict[str, object]:
        """The simulator scenario: every account cross, a USDT loan, no timeline (the driver ticks)."""
        accounts = []
        for name, held in zip(self.names, self.holdings, strict=True):
            cross = [
                {"asset": self.symbols[s].removesuffix("USDT"), "free": f"{q:.8f}", "borrowed": "0"}
                for s, q in held
            ]
            cross.append({"asset": "USDT", "free": "0", "borrowed": f"{LOAN:.8f}", "interest": "0"})
            accounts.append(
                {"name": name, "api_key": f"key-{name}", "api_secret": f"secret-{name}", "cross": cross}
            )
        return {
            "quote": "USDT",
            "prices": {s: f"{p:.4f}" for s, p in zip(self.symbols, self.prices, strict=True)},
            "interest_rates": {"USDT": "0"},
            "limits": {
                "api_weight_per_minute": 10_000_000,
                "sapi_ip_weight_per_minute": 10_000_000,
                "sapi_uid_weight_per_minute": 10_000_000,
            },
            "streams": {"max_incoming_per_second": 1000, "quote_refresh": 0},
            "accounts": accounts,
        }

    def level_matrix(self) -> tuple[list[I64], list[F64]]:
        """Per symbol: the accounts holding it and their quantities (the replay's fan-out)."""
        idx: list[list[int]] = [[] for _ in self.symbols]
        qty: list[list[float]] = [[] for _ in self.symbols]
        for a, held in enumerate(self.holdings):
            for s, q in held:
                idx[s].append(a)
                qty[s].append(q)
        return [np.array(i, dtype=np.int64) for i in idx], [np.array(q, dtype=np.float64) for q in qty]


def make_workload(
    accounts: int, symbols: int, per_account: int, seed: int, levels: tuple[float, float] = (1.51, 1.62)
) -> Workload:
    """Accounts whose levels start uniformly in ``levels`` (around the 1.5 bar)."""
    rng = np.random.default_rng(seed)
    names = ["BTCUSDT", *[f"X{i:02d}USDT" for i in range(1, symbols)]]
    prices = np.round(rng.uniform(20.0, 200.0, symbols), 4)
    prices[0] = 30_000.0
    holdings: list[list[tuple[int, float]]] = []
    for _ in range(accounts):
        chosen = rng.choice(symbols, per_account, replace=False)
        weights = rng.uniform(0.5, 1.5, per_account)
        value = LOAN * rng.uniform(*levels)
        qty = [
            round(float(value * w / weights.sum() / prices[s]), 8)
            for s, w in zip(chosen, weights, strict=True)
        ]
        holdings.append([(int(s), q) for s, q in zip(chosen, qty, strict=True)])
    return Workload(names, prices, [f"a{i:04d}" for i in range(accounts)], holdings)


@dataclass
class Path:
    """One continuous price path: tick i moves ``symbol[i]`` to bid ``bid[i]`` / ask ``ask[i]``."""

    symbol: I64
    bid: F64
    ask: F64

    def mid(self) -> F64:
        """The price the daemon takes from a bookTicker: ``(b + a) / 2``."""
        return (self.bid + self.ask) / 2.0

    def save(self, file: str) -> None:
        np.savez(file, symbol=self.symbol, bid=self.bid, ask=self.ask)

    @classmethod
    def load(cls, file: str) -> Path:
        data = np.load(file)
        return cls(data["symbol"], data["bid"], data["ask"])


def make_path(start: F64, segments: list[tuple[int, float, float]], seed: int) -> Path:
    """Segments of ``(ticks, sigma, reversion)`` per tick, continuous; log-prices revert to the start."""
    rng = np.random.default_rng(seed + 1)
    n = sum(t for t, _, _ in segments)
    sym = rng.integers(0, len(start), n)
    shocks = rng.standard_normal(n) * np.concatenate([np.full(t, s) for t, s, _ in segments])
    revert = np.concatenate([np.full(t, r) for t, _, r in segments])
    log0 = np.log(start)
    x = log0.copy()
    mid = np.empty(n)
    for i in range(n):
        s = sym[i]
        x[s] += shocks[i] - revert[i] * (x[s] - log0[s])
        mid[i] = np.exp(x[s])
    mid = np.round(mid, 4)
    half = np.maximum(np.round(mid * 0.00005, 4), 0.0001)
    return Path(sym.astype(np.int64), np.round(mid - half, 4), np.round(mid + half, 4))


@dataclass
class Expected:
    """Alerts the daemon must send: per (account, bar, kind) the tick indices, in order."""

    events: dict[tuple[str, float, str], list[int]]

    def count(self, start: int, stop: int) -> int:
        return sum(1 for ticks in self.events.values() for t in ticks if start <= t < stop)


def expected_events(work: Workload, path: Path, hysteresis: float, restart: int = 0) -> Expected:
    """Replay every tick; a rule fires at level ≤ bar when armed and resolves at level > bar + h.
    At tick ``restart`` the daemon starts: rules are engaged exactly where level ≤ bar."""
    idx, qty = work.level_matrix()
    price = work.prices.astype(np.float64).copy()
    value = np.zeros(len(work.names))
    for s in range(len(work.symbols)):
        value[idx[s]] += qty[s] * price[s]
    bars = np.array(BARS)
    engaged = (value / LOAN)[:, None] <= bars[None, :]  # fired at start-up already
    events: dict[tuple[str, float, str], list[int]] = {}
    mids = path.mid()
    for i in range(len(mids)):
        if i == restart:
            engaged = (value / LOAN)[:, None] <= bars[None, :]
        s = int(path.symbol[i])
        accts = idx[s]
        value[accts] += qty[s] * (mids[i] - price[s])
        price[s] = mids[i]
        level = value[accts] / LOAN
        eng = engaged[accts]
        fire = ~eng & (level[:, None] <= bars[None, :])
        resolve = eng & (level[:, None] > bars[None, :] + hysteresis)
        if fire.any() or resolve.any():
            for (r, b), kind in [
                *((p, "firing") for p in np.argwhere(fire)),
                *((p, "resolved") for p in np.argwhere(resolve)),
            ]:
                events.setdefault((work.names[accts[r]], float(BARS[b]), kind), []).append(i)
            engaged[accts] = (eng | fire) & ~resolve
    return Expected(events)


def parse_title(title: str) -> tuple[str, float, str] | None:
    """``(account, bar, kind)`` of a level alert's title, None for anything else."""
    m = _TITLE.match(title)
    if m is None:
        return None
    return m["account"], float(m["bar"]), "resolved" if m["resolved"] else "firing"


def on_side(level: float, bar: float, kind: str, hysteresis: float) -> bool:
    """Whether ``level`` is on an alert's side of ``bar``: firing ≤ bar, resolved > bar + hysteresis."""
    return level <= bar if kind == "firing" else level > bar + hysteresis


@dataclass
class Matched:
    """Latencies (seconds) of the calls that matched an expected event, and the rest."""

    latency: list[float]
    kinds: list[str]
    ticks: list[int]
    unmatched: int
    samples: list[str]
    at: list[float] = field(default_factory=list)  # the calls paired, in the order of ``ticks``


def match_latencies(calls: list[tuple[float, str]], expected: Expected, sent: F64) -> Matched:
    """``calls``: (monotonic time, title); ``sent``: send time per tick index (NaN if not sent)."""
    used: set[tuple[tuple[str, float, str], int]] = set()
    out = Matched([], [], [], 0, [])
    for at, title in sorted(calls):
        key = parse_title(title)
        ticks = expected.events.get(key, []) if key is not None else []
        best = next((t for t in reversed(ticks) if sent[t] <= at), None)  # the latest sent before
        if key is None or best is None or (key, best) in used:
            out.unmatched += 1
            if len(out.samples) < 3:
                out.samples.append(title)
            continue
        used.add((key, best))
        out.latency.append(at - float(sent[best]))
        out.kinds.append(key[2])
        out.ticks.append(best)
        out.at.append(at)
    return out


def title_level(title: str) -> tuple[float, float] | None:
    """The level printed in a level alert's title and half its last printed digit (the rounding)."""
    m = _TITLE.match(title)
    if m is None:
        return None
    text = m["level"].replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return None
    decimals = len(text.split(".", 1)[1]) if "." in text else 0
    return value, 0.5 * 10.0**-decimals


@dataclass
class Evaluation:
    """One ``Engine.on_prices`` call that queued alerts, as the bench hook saw it: when (monotonic),
    the batch of prices it applied, and the events it queued: (account, bar, kind, level)."""

    at: float
    prices: dict[str, float]
    events: list[tuple[str, float, str, float]]


class Replay:
    """Levels of one account at any tick of the path (the daemon's inputs replayed exactly)."""

    def __init__(self, work: Workload, path: Path) -> None:
        self.work = work
        self.mid = path.mid()
        self.ticks = [np.flatnonzero(path.symbol == s) for s in range(len(work.symbols))]
        self.symbol = path.symbol
        self.index = {s: i for i, s in enumerate(work.symbols)}
        self.account = {n: i for i, n in enumerate(work.names)}

    def price(self, s: int, t: int) -> float:
        """Symbol ``s``'s mid after tick ``t`` (its start price before its first tick)."""
        k = int(np.searchsorted(self.ticks[s], t, side="right")) - 1
        return float(self.mid[self.ticks[s][k]]) if k >= 0 else float(self.work.prices[s])

    def _held(self, account: str) -> tuple[list[tuple[int, float]], I64]:
        """The account's holdings, and the ticks that move it (of any of its symbols), in order."""
        held = self.work.holdings[self.account[account]]
        return held, np.sort(np.concatenate([self.ticks[s] for s, _ in held]))

    def level(self, account: str, t: int) -> float:
        held = self.work.holdings[self.account[account]]
        return sum(q * self.price(s, t) for s, q in held) / LOAN

    def tick_of(self, symbol: str, price: float, at: float, sent: F64, slack: float = 0.002) -> int | None:
        """The tick that gave ``symbol`` this ``price``: the newest one with that mid sent by ``at``
        (+ ``slack`` for the two processes' reads of the clock), None if no tick sent had it."""
        s = self.index.get(symbol)
        if s is None:
            return None
        ticks = self.ticks[s]
        when = sent[ticks]
        k = int(np.searchsorted(np.where(np.isnan(when), -np.inf, when), at + slack, side="right")) - 1
        for j in range(k, max(-1, k - 64), -1):
            if not np.isnan(when[j]) and abs(float(self.mid[ticks[j]]) - price) <= 1e-9 * abs(price):
                return int(ticks[j])
        return None

    def held_ms(
        self, account: str, bar: float, kind: str, tick: int, hysteresis: float, sent: F64
    ) -> float | None:
        """How long the replay's event at ``tick`` stayed on its side (firing: ≤ bar; resolved: > bar
        + hysteresis), in ms of the simulator's send clock: from ``tick`` to the account's next tick
        that took it back; None if it held to the end of what was sent. A lost alert held for a
        fraction of a ms was a level between two ticks read together: the daemon evaluates each
        batch it reads once, after all its prices (as it should: the level it alerts on existed),
        and never saw that one."""
        held, mine = self._held(account)
        if np.isnan(sent[tick]):
            return None
        price = {s: self.price(s, tick) for s, _ in held}
        for t in mine[np.searchsorted(mine, tick, side="right") :]:
            t = int(t)
            if np.isnan(sent[t]):
                return None
            price[int(self.symbol[t])] = float(self.mid[t])
            if not on_side(sum(q * price[s] for s, q in held) / LOAN, bar, kind, hysteresis):
                return float(sent[t] - sent[tick]) * 1000
        return None

    def onset(self, account: str, bar: float, kind: str, end: int, hysteresis: float) -> int | None:
        """The first tick from which ``account``'s level stayed on ``kind``'s side of ``bar``
        (firing: ≤ bar; resolved: > bar + hysteresis) through tick ``end``; None if it is not there
        at ``end`` (the replay disagrees with the daemon)."""
        held, mine = self._held(account)
        price = {s: self.price(s, end) for s, _ in held}
        if not on_side(sum(q * price[s] for s, q in held) / LOAN, bar, kind, hysteresis):
            return None
        j = int(np.searchsorted(mine, end, side="right")) - 1
        onset = end
        while j >= 0:
            t = int(mine[j])  # side() held from tick t on; before t, t's symbol had its previous price
            onset = t
            s = int(self.symbol[t])
            price[s] = self.price(s, t - 1)
            if not on_side(sum(q * price[x] for x, q in held) / LOAN, bar, kind, hysteresis):
                return onset
            j -= 1
        return 0


@dataclass
class Exact:
    """The exact matcher's pairs: latencies (s), kinds and causing ticks; calls it could not pair
    (no queued event of that key before the call); pairs whose title level disagrees with the
    evaluated one (0 when pairing is exact); events whose level the replay does not reproduce."""

    latency: list[float]
    kinds: list[str]
    ticks: list[int]
    unmatched: int
    samples: list[str]
    level_disagree: int = 0
    replay_disagree: int = 0
    batch_ticks: list[int] | None = None
    at: list[float] = field(default_factory=list)  # the calls paired, in the order of ``ticks``


def match_evaluations(
    calls: list[tuple[float, str]],
    evaluations: list[Evaluation],
    replay: Replay,
    sent: F64,
    hysteresis: float,
) -> Exact:
    """Pair each call (monotonic time, title) with the event the daemon queued for it, earliest
    first among those of its (account, bar, kind) evaluated before the call whose level prints as
    the title's; latency = call − send of the causing tick (:meth:`Replay.onset`)."""
    queued: dict[tuple[str, float, str], list[tuple[float, int | None, float]]] = {}
    out = Exact([], [], [], 0, [], batch_ticks=[])
    for ev in evaluations:
        found = [replay.tick_of(sym, p, ev.at, sent) for sym, p in ev.prices.items()]
        end = max((t for t in found if t is not None), default=None)
        for account, bar, kind, level in ev.events:
            kind = "resolved" if kind == "resolved" else "firing"
            onset = None if end is None else replay.onset(account, bar, kind, end, hysteresis)
            if end is not None and onset is None:
                out.replay_disagree += 1
            queued.setdefault((account, bar, kind), []).append((ev.at, onset, level))
        assert out.batch_ticks is not None
        out.batch_ticks.append(-1 if end is None else end)
    used: set[tuple[tuple[str, float, str], int]] = set()
    for at, title in sorted(calls):
        key = parse_title(title)
        printed = title_level(title)
        options = [(i, item) for i, item in enumerate(queued.get(key, []) if key else []) if item[0] <= at]
        options = [(i, item) for i, item in options if (key, i) not in used]
        same = [(i, it) for i, it in options if printed and abs(it[2] - printed[0]) <= printed[1] + 1e-12]
        candidates = same or options
        onset = candidates[0][1][1] if candidates else None
        if key is None or onset is None or math.isnan(sent[onset]):
            out.unmatched += 1
            if len(out.samples) < 3:
                out.samples.append(title)
            continue
        used.add((key, candidates[0][0]))
        if not same:
            out.level_disagree += 1
        out.latency.append(at - float(sent[onset]))
        out.kinds.append(key[2])
        out.ticks.append(onset)
        out.at.append(at)
    return out


def pairs_differ(a: Matched | Exact, b: Matched | Exact) -> int:
    """How many calls paired by both matchers were paired with different ticks."""
    tick = dict(zip(a.at, a.ticks, strict=True))
    return sum(1 for at, t in zip(b.at, b.ticks, strict=True) if at in tick and tick[at] != t)
