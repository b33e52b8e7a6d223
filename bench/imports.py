"""What the daemon's imports cost in RSS, one step at a time, in a fresh interpreter (not a CI test).

Imports the daemon's dependencies and modules in the order ``monitor.service`` pulls them in and
prints, as a markdown table, the RSS (``VmRSS``) after each step and its increase: where the
memory of a one-account daemon goes before it does anything. The last step checks a ``json://``
URL as the daemon does at start (Apprise and its JSON plugin only); the table ends with the
packages the daemon does not need at this point and that are not loaded (numpy: until a leg's
fan-out is large; every other Apprise plugin; the simulator; rich; dateparser, which stays a
``_Deferred`` stand-in; pydantic, which only the simulator's scenarios use; charset_normalizer).

Usage: ``python bench/imports.py``.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

STEPS = (
    "asyncio",
    "monitor.logs",  # structlog, imported without rich
    "yaml",
    "aiohttp",
    # requests, without charset_normalizer: read at import by python-binance (binance/client.py
    # annotations); Apprise sends with it
    "monitor.requests_lean",
    "monitor.exchange.rest",  # python-binance (its dateparser and pytz deferred)
    "websockets.asyncio.client",
    "prometheus_client",
    "apscheduler.schedulers.asyncio",
    "monitor.config.model",
    "monitor.risk.book",
    "monitor.notify.dispatcher",
    "monitor.exchange.binance",
    "monitor.watch.accounts",
    "monitor.ops.http",
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
    from monitor.notify.apprise_sink import check_url

    assert check_url("json://127.0.0.1:9/hook") is None
    now = rss_mib()
    rows.append(f"| `check_url('json://…')` (Apprise, its JSON plugin) | {now - before:+.1f} | {now:.1f} |")
    plugins = sum(m.startswith("apprise.plugins.") for m in sys.modules)
    loaded = {
        "numpy": "numpy" in sys.modules,
        "Apprise plugin modules": plugins,
        "simulator": any(m.startswith("monitor.sim") for m in sys.modules),
        "rich": "rich" in sys.modules,
        "dateparser": type(sys.modules.get("dateparser")).__name__,
        "pydantic": "pydantic" in sys.modules,
        "charset_normalizer": "charset_normalizer" in sys.modules,
    }
    print("\n".join(rows))
    print("\nloaded: " + ", ".join(f"{k} {v}" for k, v in loaded.items()))


if __name__ == "__main__":
    main()
