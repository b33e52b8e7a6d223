"""Helpers for tests that drive the command line against a daemon running in the test: a config with a
fixed free port (the CLI finds the daemon through ``http.listen``) and the CLI in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from daemon_harness import Receiver, daemon_config

from monitor.sim import Simulator

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "monitor.cli"]
TOKEN = "t0ken-for-ops-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block lasts: bound but never listening,
    so no other test (or xdist worker) can take it meanwhile, as it could a closed ``free_port``."""
    with refused_socket() as s:
        yield int(s.getsockname()[1])


@contextlib.contextmanager
def refused_socket() -> Iterator[socket.socket]:
    """:func:`refused_port`'s socket itself: a server started later on it (``run_simulator(sock=)``)
    listens on the very port that was refused, with no moment where another test could take it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s


def ops_config(
    tmp_path: Path, sim: Simulator, receiver: Receiver, *, token: str | None = TOKEN, **top: Any
) -> Path:
    """:func:`daemon_config` with HTTP on a fixed free loopback port (and ``token``), plus ``top`` keys."""
    path = daemon_config(tmp_path, sim, receiver)
    data = yaml.safe_load(path.read_text())
    data["http"] = {"enabled": True, "listen": f"127.0.0.1:{free_port()}"}
    if token:
        data["http"]["token"] = token
    data.update(top)
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess (output captured as text)."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


async def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """:func:`run_cli` off the event loop, so the daemon in this test keeps answering."""
    return await asyncio.to_thread(run_cli, *map(str, args))
