"""The bound on one URL's sends in flight (monitor/notify/pace.py) and the retry stage keeping to it:
as many sends as a burst needs at the URL's measured time per send, never more than its ceiling."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from monitor.notify.pace import FLOOR, RATE, SLACK, SMOOTHING, Pace, in_flight
from monitor.notify.retry import RetryStage
from monitor.notify.stages import Batch, Target
from monitor.store import OutboxItem

seconds = st.floats(min_value=0.0, max_value=120.0, allow_nan=False)
ceilings = st.integers(min_value=1, max_value=64)


@given(seconds, ceilings)
def test_in_flight_is_rate_times_time_rounded_up_and_clamped(s: float, ceiling: int) -> None:
    """Against the exact product (Fraction), less SLACK: enough sends in flight for RATE a second,
    the fewest that are, clamped to [FLOOR, ceiling]; a ceiling under the floor wins."""
    n = in_flight(s, ceiling)
    needed = Fraction(RATE) * Fraction(s) - Fraction(SLACK)
    assert n == min(ceiling, max(FLOOR, math.ceil(needed)))


@given(seconds, seconds, ceilings)
def test_a_slower_url_never_gets_fewer_sends_in_flight(a: float, b: float, ceiling: int) -> None:
    lo, hi = sorted((a, b))
    assert in_flight(lo, ceiling) <= in_flight(hi, ceiling)


@given(st.lists(seconds, max_size=40), ceilings)
def test_pace_starts_at_the_ceiling_and_follows_the_smoothed_time(times: list[float], ceiling: int) -> None:
    """No send delivered yet: the ceiling (nothing known). Then the limit is in_flight() of the
    exponentially smoothed time, recomputed here exactly with Fractions."""
    pace = Pace(ceiling)
    assert pace.limit == ceiling and pace.seconds is None
    exact: Fraction | None = None
    for t in times:
        pace.observe(t)
        exact = Fraction(t) if exact is None else exact + Fraction(SMOOTHING) * (Fraction(t) - exact)
        assert pace.seconds is not None
        assert math.isclose(pace.seconds, float(exact), rel_tol=1e-9, abs_tol=1e-12)
        assert min(FLOOR, ceiling) <= pace.limit <= ceiling
        assert pace.limit == in_flight(pace.seconds, ceiling)


class Clock:
    """The retry stage's clock: time moves only when a send is answered, by ``step`` seconds."""

    def __init__(self) -> None:
        self.now = 0.0


def row(unit: str, target: Target) -> OutboxItem:
    return OutboxItem(f"{unit}|1", target.id, target.route, unit, "firing", unit, "b", "warning", 1.0)


async def burst(step: float, units: int = 40, ceiling: int = 8) -> tuple[list[int], list[int]]:
    """``units`` rows through a RetryStage whose sends each take ``step`` s on its clock: the sends
    in flight when each started, and the stage's bound then."""
    target = Target.of("chat", "json://h/a")
    clock = Clock()
    in_flight_now = 0
    seen: list[int] = []
    bounds: list[int] = []
    stage: RetryStage

    async def deliver(t: Target, item: OutboxItem) -> bool | None:
        nonlocal in_flight_now
        in_flight_now += 1
        seen.append(in_flight_now)
        bounds.append(stage._queues[target.id].pace.limit)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        clock.now += step
        in_flight_now -= 1
        return True

    stage = RetryStage([target], deliver, limit=lambda url: ceiling, clock=lambda: clock.now)
    stage.exec(Batch(0.0), [row(f"u{i}", target) for i in range(units)])
    stage.start()
    for _ in range(2000):
        if stage.queued() == {"chat": 0}:
            break
        await asyncio.sleep(0)
    await stage.stop(1.0)
    assert stage.queued() == {"chat": 0}
    return seen, bounds


async def test_a_fast_url_keeps_two_sends_in_flight_once_one_is_answered() -> None:
    """Sends answered in 2 ms (a webhook on the same host): the first burst goes out at the
    ceiling (nothing measured yet), then never more than 2 at once: 200/s × 2 ms < 1. A send's
    measured time may span other answers (up to 8 × 2 ms), which still stays under 3."""
    seen, bounds = await burst(0.002)
    first_answer = next(i for i, b in enumerate(bounds) if b < 8)
    assert max(seen[:first_answer]) == 8
    assert max(seen[first_answer + 8 :]) <= 2 and set(bounds[first_answer:]) <= {2}


async def test_a_distant_url_keeps_its_ceiling() -> None:
    """Sends answered in 300 ms: 200/s × 0.3 s = 60, so the ceiling, 8, all along."""
    seen, bounds = await burst(0.3)
    assert max(seen) == 8 and set(bounds) == {8}


async def test_a_spaced_service_stays_one_at_a_time() -> None:
    """Ceiling 1 (Apprise spaces the service's requests): one send at a time, fast or slow."""
    for step in (0.001, 1.0):
        seen, bounds = await burst(step, units=10, ceiling=1)
        assert max(seen) == 1 and set(bounds) == {1}


def test_worked_examples() -> None:
    """The docstrings' worked examples (monitor/notify/pace.py) run as doctests."""
    import doctest

    import monitor.notify.pace

    assert doctest.testmod(monitor.notify.pace).failed == 0
