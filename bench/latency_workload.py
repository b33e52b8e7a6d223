"""The latency benchmark's workload and its offline replay (used by ``bench/latency.py``).

- :func:`make_workload`: N cross accounts, each holding ``per_account`` of ``symbols`` assets
  (random, random value weights) against a USDT loan, levels spread around the 1.5 bar; and the
  simulator scenario that serves them (limits raised so 1,000 keys can start at once).
- :func:`make_path`: the price path the simulator pushes: each tick one random symbol, a
  mean-reverting log step, written as a bookTicker bid/ask pair (the daemon takes the mid).
- :func:`expected_events`: the daemon's alert rules (level ≤ bar fires, > bar + hysteresis
  resolves) replayed exactly over every tick, giving the tick that caused each alert.
- :func:`match_latencies`: each recorded Apprise call ↔ the expected event of the same account,
  bar and kind that is the latest one sent before the call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BARS = (1.5, 1.3, 1.1)  # Binance's classic cross-margin tradeCoeff: the daemon's default ladder
LOAN = 10_000.0
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_TITLE = re.compile(
    r"^\[(?P<resolved>resolved )?[^\]]*\] (?P<account>\S+) \(cross\): margin level \S+ \S (?P<bar>\S+)$"
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


@dataclass
class Matched:
    """Latencies (seconds) of the calls that matched an expected event, and the rest."""

    latency: list[float]
    kinds: list[str]
    ticks: list[int]
    unmatched: int
    samples: list[str]


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
    return out
