"""The systemd notify protocol, spoken directly over an ``AF_UNIX`` datagram socket.

``sd_notify(3)`` in a few lines, with no dependency: systemd passes the socket's path in
``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket) and reads newline-separated
``KEY=value`` assignments from each datagram. Outside systemd (variable unset) every call is a
no-op, so the daemon calls it unconditionally.

- ``READY=1`` once every account has a snapshot and prices flow (``Type=notify``).
- ``WATCHDOG=1`` every ``watchdog_interval()`` seconds, but only while the daemon is healthy:
  :func:`watchdog_loop` stops petting the watchdog when the loop or the feeds stall, so systemd
  restarts the unit after ``WatchdogSec=``.
- ``STATUS=<one line>`` shown by ``systemctl status``; ``STOPPING=1`` at shutdown.

A send error (socket gone, buffer full) is logged once and never raised: losing a notification
must not take the monitor down.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)

__all__ = ["Notifier", "watchdog_interval", "watchdog_loop"]


def _socket_address(raw: str) -> str | bytes:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value (``@name`` → abstract namespace)."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class Notifier:
    """Sends notify-protocol datagrams to ``address`` (``$NOTIFY_SOCKET`` by default); no-op if unset."""

    def __init__(self, address: str | None = None) -> None:
        self._address = address or None
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for the socket named in ``env`` (``os.environ`` by default)."""
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured (i.e. we run under ``Type=notify``)."""
        return self._address is not None

    def __repr__(self) -> str:
        return f"Notifier(address={self._address!r})"

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=value`` lines; True when it left, False when off or failed."""
        if self._address is None:
            return False
        payload = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload.encode(), _socket_address(self._address))
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify_failed", socket=self._address, error=str(exc))
            self._failed = True
            return False
        if self._failed:
            log.info("sd_notify_recovered", socket=self._address)
            self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (with an optional ``STATUS=`` line): startup is complete."""
        return self.send(READY=1, **({"STATUS": status} if status is not None else {}))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the service is alive and healthy; resets systemd's watchdog timer."""
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """``STATUS=<text>``: the one-line summary ``systemctl status`` shows (newlines flattened)."""
        return self.send(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.send(STOPPING=1, **({"STATUS": status} if status is not None else {}))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: ask for ``seconds`` more to finish starting or stopping."""
        return self.send(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))

    def close(self) -> None:
        """Close the socket (sending again reopens it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _one_line(text: str) -> str:
    """A value safe inside one assignment: a newline would start a new ``KEY=`` field."""
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``; None when no watchdog is set.

    Also None when ``$WATCHDOG_PID`` names another process (the watchdog is not ours), as in
    ``sd_watchdog_enabled(3)``.
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


async def watchdog_loop(
    notifier: Notifier,
    healthy: Callable[[], bool],
    interval: float,
) -> None:
    """Send ``WATCHDOG=1`` every ``interval`` seconds while ``healthy()`` holds; runs until cancelled.

    While ``healthy()`` is false (or raises) nothing is sent, so systemd's ``WatchdogSec=`` expires
    and it restarts the service; a log event marks each transition. Because this coroutine runs on
    the daemon's event loop, a blocked loop also stops the pings.
    """
    was_healthy = True
    while True:
        try:
            ok = bool(healthy())
        except Exception as exc:  # a broken health check counts as unhealthy, loudly
            log.error("watchdog_health_check_failed", error_type=type(exc).__name__, error=str(exc))
            ok = False
        if ok:
            notifier.watchdog()
            if not was_healthy:
                log.info("watchdog_resumed")
        elif was_healthy:
            log.warning("watchdog_withheld", reason="daemon unhealthy", interval=interval)
        was_healthy = ok
        await asyncio.sleep(interval)
