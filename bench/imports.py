"""What the daemon's imports cost in RSS, one step at a time, in a fresh interpreter (not a CI test).

Imports the daemon's dependencies and modules in the order ``monitor.service`` pulls them in and
prints, as a markdown table, the RSS (``VmRSS``) after each step and its increase: where the
memory of a one-account daemon goes before it does anything.

Usage: ``python bench/imports.py``.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

STEPS = (
    "asyncio",
    "structlog",
    "yaml",
    "pydantic",
    "numpy",
    "aiohttp",
    "requests",
    "dateparser",
    "binance",
    "websockets.asyncio.client",
    "apprise",
    "prometheus_client",
    "apscheduler.schedulers.asyncio",
    "monitor.config",
    "monitor.book",
    "monitor.notify",
    "monitor.exchange.binance",
    "monitor.accounts",
    "monitor.http",
    "monitor.service",
)


def rss_mib() -> float:
    found = re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())
    assert found is not None
    return int(found.group(1)) / 1024


def main() -> None:
    rows = ["| import | + MiB | RSS MiB |", "|---|---|---|", f"| (interpreter) | | {rss_mib():.1f} |"]
    before = rss_mib()
    for name in STEPS:
        importlib.import_module(name)
        now = rss_mib()
        rows.append(f"| `{name}` | {now - before:+.1f} | {now:.1f} |")
        before = now
    print("\n".join(rows))


if __name__ == "__main__":
    main()
