"""The dead man's switch: ping a healthchecks-style URL only while monitoring works.

Every ``every`` seconds, if ``ok()`` says every account is fresh and the loop is healthy, one GET
to the URL (healthchecks.io, Uptime Kuma push monitors, cronitor…). When the daemon dies, the box
loses power or the data goes stale, the pings stop and that service alerts on its own: the trader
hears that monitoring stopped even without Prometheus. Nothing is sent on a bad tick (a "fail"
ping would need a second, service-specific URL; silence is what every such service understands).

The URL may carry a token, so it is never logged: log lines name only its host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import structlog

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class HeartbeatStats:
    """Counters since start: pings ``sent`` (2xx), ``failed``, ``skipped`` (monitoring not healthy)."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    last_ok_at: float | None = None


async def heartbeat_loop(
    url: str,
    every: float,
    ok: Callable[[], bool],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (per-request bound handed to aiohttp)
    stats: HeartbeatStats | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Run until cancelled: a ping each ``every`` seconds while ``ok()`` is true."""
    stats = stats if stats is not None else HeartbeatStats()
    host = urlsplit(url).hostname or "?"
    healthy_before: bool | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        while True:
            try:
                healthy = bool(ok())
            except Exception as exc:  # a failing check counts as "not healthy", reported
                log.error("heartbeat_check_failed", error=f"{type(exc).__name__}: {exc}")
                healthy = False
            if healthy != healthy_before:
                reason = None if healthy else "an account is stale or the loop is not healthy"
                log.info("heartbeat_pinging" if healthy else "heartbeat_withheld", host=host, reason=reason)
                healthy_before = healthy
            if healthy:
                await _ping(session, url, host, stats, clock)
            else:
                stats.skipped += 1
            await asyncio.sleep(every)


async def _ping(
    session: aiohttp.ClientSession, url: str, host: str, stats: HeartbeatStats, clock: Callable[[], float]
) -> None:
    try:
        async with session.get(url) as response:
            await response.read()
            if response.status < 300:
                stats.sent += 1
                stats.last_ok_at = clock()
                return
            error = f"HTTP {response.status}"
    except TimeoutError:
        error = "timed out"
    except aiohttp.ClientError as exc:
        error = type(exc).__name__
    stats.failed += 1
    log.warning("heartbeat_failed", host=host, error=error)
