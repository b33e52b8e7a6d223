"""When a listen token is renewed (monitor/exchange/userdata.py ``renew_delay``): within a window
ending ``renew_before`` ahead of its expiry, at a random point, so tokens created together do not
renew together; and, against the simulator, subscriptions made together renew apart and never lapse."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from exchange_fakes import until
from hypothesis import given
from hypothesis import strategies as st
from test_userdata import user_stream

import monitor.exchange.userdata
from monitor.exchange.events import StreamState
from monitor.exchange.rest import BinanceRest
from monitor.exchange.userdata import UserDataStream, UserSubscription, renew_delay
from monitor.sim import Simulator

lifetimes = st.floats(min_value=0.0, max_value=7 * 86400.0, allow_nan=False)
ahead = st.floats(min_value=0.01, max_value=86400.0, allow_nan=False)
unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(lifetimes, ahead, unit)
def test_never_later_than_renew_before_ahead_and_never_wasteful(
    remaining: float, before: float, r: float
) -> None:
    """A token with room for it is renewed within the last ``before`` seconds before the deadline
    (expiry − ``before``), and at least ``before`` after now; otherwise between a quarter and half
    of its time (at least 50 ms), never past its expiry."""
    delay = renew_delay(remaining, before, r)
    assert delay > 0
    if remaining > 2 * before:
        deadline = remaining - before
        assert deadline - before - 1e-6 <= delay <= deadline + 1e-6
        assert delay >= before - 1e-6
    else:
        assert delay == max(remaining * (0.5 - r / 4), 0.05)
        assert delay <= max(remaining / 2, 0.05) and (delay >= remaining / 4 or delay == 0.05)


@given(ahead, st.lists(unit, min_size=2, max_size=50, unique=True))
def test_fresh_tokens_created_together_are_spread_over_the_window(before: float, rs: list[float]) -> None:
    """Tokens of one lifetime (24 h) created together: each r gives its own moment, ``r × window``
    from the deadline, so n tokens spread over the whole window instead of one instant."""
    remaining = 86400.0
    if remaining <= 2 * before:
        return
    window = min(before, remaining - 2 * before)
    delays = sorted(renew_delay(remaining, before, r) for r in rs)
    assert delays[-1] - delays[0] == pytest.approx((max(rs) - min(rs)) * window, abs=1e-6)


def test_worked_examples() -> None:
    """The docstring's worked examples (``renew_delay``) run as doctests."""
    assert doctest.testmod(monitor.exchange.userdata).failed == 0


class TestRenewalsApart:
    """Two accounts' subscriptions (demo and other, cross; Binance allows one per account on a
    session) subscribed together, with 6-second tokens renewed within the second before the last."""

    @pytest.fixture
    def scenario_data(self, scenario_data: dict[str, Any]) -> dict[str, Any]:
        scenario_data["limits"] = {"listen_token_validity": 6.0}
        return scenario_data

    async def test_subscriptions_made_together_renew_apart_and_never_lapse(self, sim: Simulator) -> None:
        """With r of 0 and 0.99 the two first renewals come 5.0 and ~4.0 s after subscribing, about a
        second apart (before the change both came at 5.0 s, together), and both subscriptions stay up."""
        spread = itertools.cycle([0.0, 0.99]).__next__
        loop = asyncio.get_running_loop()
        subs: list[tuple[str, str | None]] = [("demo", None), ("other", None)]
        async with user_stream(sim, subs, renew_before=1.0, spread=spread) as (stream, rec):
            created: dict[tuple[str, str | None], list[float]] = {}
            for client in {id(s.rest): s.rest for s in stream.subscriptions}.values():
                make, account = client.create_listen_token, client.account

                async def observed(symbol: str | None = None, _make: Any = make, _acc: str = account) -> Any:
                    created.setdefault((_acc, symbol), []).append(loop.time())
                    return await _make(symbol)

                client.create_listen_token = observed  # type: ignore[method-assign]
            await until(lambda: len(created) == 2, within=15)
            assert all(s.up for s in stream.subscriptions)
            assert [s for s in rec.states if not s.up] == []  # none went down (before the shutdown)
        renewals = sorted(times[0] for times in created.values())
        assert len(renewals) == 2
        assert renewals[1] - renewals[0] > 0.5, f"renewed together: {renewals}"


N = 6  # accounts subscribed together


class TestManyRenewalsSpread:
    """Six accounts (Binance allows one subscription per account on a session) subscribed together on
    one connection, with 8-second tokens renewed within a 2-second window ending 2 s before expiry."""

    @pytest.fixture
    def scenario_data(self, scenario_data: dict[str, Any]) -> dict[str, Any]:
        scenario_data["limits"] = {"listen_token_validity": 8.0}
        scenario_data["accounts"] += [
            {"name": f"acct{i}", "api_key": f"key-{i}", "api_secret": f"secret-{i}", "cross": []}
            for i in range(N)
        ]
        return scenario_data

    async def test_renew_at_distinct_times_over_the_window_and_never_lapse(self, sim: Simulator) -> None:
        """With r = 0, 1/6, …, 5/6 the first renewals come a third of a second apart, over 1.7 s of
        the 2-second window (with r = 0 for all, as before the change, they came in one turn); each
        comes before the token it replaces expires, and no subscription ever goes down."""
        spread = iter([i / N for i in range(N)] * 4).__next__
        renewals: dict[str, list[tuple[float, float]]] = {}  # account -> (wall time, old expiry s)
        clients = [
            await BinanceRest.connect(f"acct{i}", f"key-{i}", f"secret-{i}", sim.base_url, sim.ws_api_url)
            for i in range(N)
        ]
        subs = [UserSubscription(c.account, c) for c in clients]
        states: list[StreamState] = []
        stream = UserDataStream(
            sim.ws_api_url, subs, lambda _: None, on_state=states.append, renew_before=2.0, spread=spread
        )
        task = asyncio.create_task(stream.run())
        try:
            await until(lambda: all(s.up for s in subs), within=5)
            for sub in subs:
                make = sub.rest.create_listen_token

                async def observed(symbol: str | None = None, _make: Any = make, _sub: Any = sub) -> Any:
                    renewals.setdefault(_sub.account, []).append(
                        (time.time(), _sub.token.expires_at_ms / 1000)
                    )
                    return await _make(symbol)

                sub.rest.create_listen_token = observed  # type: ignore[method-assign]
            await until(lambda: len(renewals) == N, within=15)
            await until(lambda: all(s.up for s in subs), within=5)
            assert [s for s in states if not s.up] == []  # none went down, none lapsed
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for client in clients:
                await client.close()
        firsts = sorted(times[0] for times in renewals.values())
        assert all(at < expiry for at, expiry in firsts), firsts  # each renewed before its expiry
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(firsts)]
        assert min(gaps) > 0.1, f"renewed together: {firsts}"  # 1/3 s apart, not one turn
        assert firsts[-1][0] - firsts[0][0] > 1.0, firsts  # spread over most of the window


def test_bench_day_scale() -> None:
    """``bench/renewals.py``'s figure for a day's tokens (1,000 of 24 h renewed 1 h ahead: at most
    3 renewals in any 100 ms with the spread, 1,000 at once without) runs as a doctest."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        renewals = importlib.import_module("renewals")
    finally:
        sys.path.pop(0)
    assert doctest.testmod(renewals).failed == 0
