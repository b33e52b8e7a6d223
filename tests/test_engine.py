"""The engine's helpers: bounded round-robin sweeps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitor.watch.engine import RoundRobin


@given(n=st.integers(0, 300), batch=st.integers(1, 50))
def test_round_robin_covers_everything_in_bounded_slices(n: int, batch: int) -> None:
    """Every item is handed out within ceil(n / batch) calls, never more than `batch` at once."""
    items = [f"u{i}" for i in range(n)]
    sweep = RoundRobin(batch)
    seen: set[str] = set()
    calls = max(1, -(-n // batch))
    for _ in range(calls):
        chunk = sweep.take(items)
        assert len(chunk) <= max(batch, n if n <= batch else 0)
        seen.update(chunk)
    assert seen == set(items)


def test_round_robin_survives_a_shrinking_list() -> None:
    """When the list shrinks between calls the sweep wraps instead of failing."""
    sweep = RoundRobin(3)
    assert sweep.take(["a", "b", "c", "d", "e"]) == ["a", "b", "c"]
    assert sweep.take(["a", "b", "c", "d"]) == ["d", "a", "b"]
    assert sweep.take(["a", "b"]) == ["a", "b"]
