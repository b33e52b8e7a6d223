"""Start-up holds the cyclic collector off until ready (monitor/ops/heap.py ``hold_collections``):
the real daemon on the simulator, the collector's state read at each step (no timing)."""

from __future__ import annotations

import gc
from pathlib import Path

from daemon_harness import Receiver, daemon_config, running_daemon, wait_until

from monitor.sim import Simulator


async def test_collections_are_held_from_startup_until_ready_or_shutdown(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """Off once startup() returns, on again when the daemon is ready; a daemon stopped before it was
    ready turns them on again at shutdown."""
    assert gc.isenabled()
    path = daemon_config(tmp_path, sim, receiver)
    async with running_daemon(path) as daemon:
        assert not gc.isenabled()
        assert not daemon.ready() or gc.isenabled()
    assert gc.isenabled()  # stopped before ready (or just at it): on again

    async with running_daemon(path) as daemon:
        assert not gc.isenabled() or daemon.ready()
        await wait_until(daemon.ready, what="ready")
        assert gc.isenabled()
    assert gc.isenabled()
