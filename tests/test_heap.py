"""Settling the heap at ready: one collection, survivors frozen, free pages handed back."""

from __future__ import annotations

import gc

from monitor import heap


def test_settle_freezes_survivors_and_reports_what_it_did() -> None:
    """After ``settle`` the live objects sit in the permanent generation; a cycle made before is gone."""

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle: only the collector frees it
    del a, b
    try:
        done = heap.settle()
        assert done["collected"] >= 2
        assert done["frozen"] == gc.get_freeze_count() > 0
        assert done["trimmed"] in (0.0, 1.0) and done["seconds"] >= 0
        assert not any(isinstance(o, Node) for o in gc.get_objects())
    finally:
        gc.unfreeze()
