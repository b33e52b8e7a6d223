"""When a Risk Data Stream first extends its listen key (``risk_group.first_extension``).

The streams connected together (1,000 at start-up, 250 per budget window) used to extend exactly
``keepalive`` after connecting: all their PUTs in one burst every 30 minutes. The first extension
is now drawn from the second half of the interval, and never later than one interval after the
key was last renewed. That the key keeps living through the extensions, against the simulator's
one-second keys, is ``test_userdata.py::TestShortLifetimes::test_risk_keepalive_keeps_the_key``.
"""

from __future__ import annotations

import doctest

from hypothesis import given
from hypothesis import strategies as st

import monitor.exchange.risk_group
from monitor.exchange.risk_group import first_extension

KEEPALIVE = st.floats(min_value=0.1, max_value=7200.0)


def test_doctests() -> None:
    assert doctest.testmod(monitor.exchange.risk_group).failed == 0


@given(keepalive=KEEPALIVE, age=st.floats(min_value=0.0, max_value=10_000.0), r=st.floats(0.0, 1.0))
def test_never_later_than_one_interval_after_the_last_renewal(keepalive: float, age: float, r: float) -> None:
    """Whatever the draw and however old the (reused) key: the first extension comes no later
    than ``keepalive`` after its last renewal (so it never reaches Binance's 60 minutes at the
    default 30), never in the past, and never later than one interval from now."""
    now = 50_000.0
    delay = first_extension(keepalive, now - age, now, r)
    assert 0.0 <= delay <= keepalive
    assert now + delay <= max(now, now - age + keepalive) + 1e-6


@given(keepalive=KEEPALIVE, thousandths=st.lists(st.integers(0, 999), min_size=2, max_size=50, unique=True))
def test_a_fresh_key_is_extended_in_the_second_half_spread_by_the_draw(
    keepalive: float, thousandths: list[int]
) -> None:
    """Fresh keys (renewed now) are first extended between ``keepalive / 2`` and ``keepalive``,
    at as many different moments as there are different draws: streams connected in the same
    turn no longer extend in the same turn."""
    delays = [first_extension(keepalive, 0.0, 0.0, n / 1000) for n in thousandths]
    assert all(keepalive / 2 <= d <= keepalive for d in delays)
    assert len(set(delays)) == len(thousandths)
