"""Settling the heap at ready: what is alive is frozen (out of the collector's walks), free pages
handed back."""

from __future__ import annotations

import gc

from monitor import heap


def test_settle_freezes_what_is_alive_and_reports_what_it_did() -> None:
    """After ``settle`` an object alive before it is no longer in any generation the collector walks."""

    class Node:
        other: object = None

    keep = Node()
    keep.other = keep  # tracked by the collector
    try:
        assert any(o is keep for o in gc.get_objects())
        done = heap.settle()
        assert done["frozen"] == gc.get_freeze_count() > 0
        assert done["trimmed"] in (0.0, 1.0) and done["seconds"] >= 0
        assert not any(o is keep for o in gc.get_objects())  # frozen: out of every generation
        later = Node()
        later.other = later
        assert any(o is later for o in gc.get_objects())  # what comes after is collected as usual
    finally:
        gc.unfreeze()
