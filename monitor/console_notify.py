"""The ``console://`` Apprise scheme: prints each alert to standard output.

The default config routes alerts here, so the demo shows alerts with no network. Importing this
module registers the scheme with Apprise (once per process; :mod:`monitor.notify` imports it).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from apprise.decorators import notify

_LOCK = threading.Lock()  # Apprise sends from a thread pool: keep each alert's lines together
ICONS = {"info": "i", "success": "✓", "warning": "!", "failure": "✗"}


def format_console(title: str, body: str, notify_type: str) -> str:
    """The text printed for one alert: a marked title line, the body, a blank line."""
    icon = ICONS.get(notify_type, "•")
    return f"[{icon}] {title}\n{body}\n\n" if body else f"[{icon}] {title}\n\n"


def console(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
    """Apprise entry point for ``console://``; ``console://?stream=stderr`` prints to stderr."""
    meta = kwargs.get("meta") or {}
    stream = sys.stderr if (meta.get("qsd") or {}).get("stream") == "stderr" else sys.stdout
    with _LOCK:
        stream.write(format_console(title, body, notify_type))
        stream.flush()
    return True


_register: Any = notify  # apprise's decorator is untyped
_register(on="console", name="Console (margin-monitor)")(console)
