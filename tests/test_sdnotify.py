"""The notify protocol against a datagram socket the test binds itself, as systemd would."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from monitor.ops.sdnotify import Notifier, watchdog_interval, watchdog_loop

REPO = Path(__file__).resolve().parent.parent


class NotifySocket:
    """A bound ``AF_UNIX`` datagram socket collecting what the daemon sends."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.setblocking(False)

    def drain(self) -> list[str]:
        """Every datagram received so far, decoded."""
        out: list[str] = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def test_ready_status_stopping_reach_the_socket(notify_socket: NotifySocket) -> None:
    """READY=1 with a status, a STATUS line and STOPPING=1 arrive as separate datagrams in order."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.enabled
    assert notifier.ready("3 accounts, prices flowing")
    assert notifier.status("level 1.42 (min)")
    assert notifier.stopping()
    notifier.close()
    assert notify_socket.drain() == [
        "READY=1\nSTATUS=3 accounts, prices flowing",
        "STATUS=level 1.42 (min)",
        "STOPPING=1",
    ]


def test_abstract_socket_name_is_supported() -> None:
    """A ``@name`` NOTIFY_SOCKET reaches a socket in the abstract namespace."""
    sock = NotifySocket(f"@margin-monitor-test-{uuid.uuid4().hex}")
    try:
        with Notifier(sock.address) as notifier:
            assert notifier.ready()
        assert sock.drain() == ["READY=1"]
    finally:
        sock.close()


def test_status_newlines_cannot_inject_fields(notify_socket: NotifySocket) -> None:
    """A newline in a status text is flattened, so it cannot smuggle a READY=1 or WATCHDOG=1."""
    with Notifier(notify_socket.address) as notifier:
        notifier.status("bad\nWATCHDOG=1")
    assert notify_socket.drain() == ["STATUS=bad WATCHDOG=1"]


def test_unset_socket_is_a_silent_no_op() -> None:
    """Without NOTIFY_SOCKET every call returns False and opens nothing."""
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert notifier._sock is None


def test_missing_socket_fails_soft(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET that points nowhere makes sends return False instead of raising."""
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert not notifier.ready()
    assert not notifier.watchdog()
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], expected: float | None) -> None:
    """The ping interval is half of WATCHDOG_USEC, and None when unset, invalid or for another PID."""
    assert watchdog_interval(env) == expected


async def _collect_for(sock: NotifySocket, seconds: float) -> list[str]:
    await asyncio.sleep(seconds)
    return sock.drain()


async def test_watchdog_pings_only_while_healthy(notify_socket: NotifySocket) -> None:
    """WATCHDOG=1 arrives periodically while healthy, stops while the feed is dead, resumes after."""
    notifier = Notifier(notify_socket.address)
    healthy = {"feeds": True}
    task = asyncio.create_task(watchdog_loop(notifier, lambda: healthy["feeds"], 0.02))
    try:
        pings = await _collect_for(notify_socket, 0.25)
        assert len(pings) >= 5 and set(pings) == {"WATCHDOG=1"}

        healthy["feeds"] = False
        await asyncio.sleep(0.05)  # let a ping already in flight land
        notify_socket.drain()
        assert await _collect_for(notify_socket, 0.25) == []

        healthy["feeds"] = True
        pings = await _collect_for(notify_socket, 0.25)
        assert len(pings) >= 5 and set(pings) == {"WATCHDOG=1"}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


async def test_watchdog_withheld_when_health_check_raises(notify_socket: NotifySocket) -> None:
    """A health check that raises counts as unhealthy: no WATCHDOG=1 is sent and the loop keeps going."""
    notifier = Notifier(notify_socket.address)
    calls = 0

    def broken() -> bool:
        nonlocal calls
        calls += 1
        raise RuntimeError("feed state unavailable")

    task = asyncio.create_task(watchdog_loop(notifier, broken, 0.01))
    await asyncio.sleep(0.15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    notifier.close()
    assert calls >= 5
    assert notify_socket.drain() == []


async def test_blocked_event_loop_stops_the_pings(notify_socket: NotifySocket) -> None:
    """While the event loop is blocked no WATCHDOG=1 is sent, so systemd's timer would expire."""
    notifier = Notifier(notify_socket.address)
    task = asyncio.create_task(watchdog_loop(notifier, lambda: True, 0.02))
    await asyncio.sleep(0.1)
    notify_socket.drain()
    time.sleep(0.3)  # noqa: ASYNC251 -- deliberately block the loop, as a runaway computation would
    assert notify_socket.drain() == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    notifier.close()


def daemon_config(tmp_path: Path) -> Path:
    """The repository's config.yaml (simulator demo) with its state and HTTP port in ``tmp_path``."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["state_dir"] = str(tmp_path / "state")
    config["http"] = {"enabled": True, "listen": "127.0.0.1:0"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


async def test_daemon_sends_ready_watchdog_status_stopping(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """``margin-monitor run`` under a notify socket sends READY=1, STATUS=, WATCHDOG=1 often, STOPPING=1."""
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "run", "-c", str(daemon_config(tmp_path)),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any(m.startswith("READY=1") for m in seen):
            assert time.monotonic() < deadline, f"no READY=1 within 30 s; got {seen[-5:]}"
            assert process.returncode is None, "daemon exited before READY=1"
            seen += await _collect_for(notify_socket, 0.1)
        ready_at = len(seen)
        seen += await _collect_for(notify_socket, 1.1)
        after_ready = seen[ready_at:]
        assert after_ready.count("WATCHDOG=1") >= 3, after_ready  # interval 0.2 s
        assert any(m.startswith("STATUS=") and "units" in m for m in seen), seen
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    seen += notify_socket.drain()
    assert any(m.startswith("STOPPING=1") for m in seen), seen[-5:]
