"""The ``console://`` Apprise scheme: prints each alert to standard output.

The default config routes alerts here, so the demo shows alerts with no network. It is ours, not an
Apprise plugin: the sender (:mod:`monitor.notify.apprise_sink`) prints console:// alerts itself, so a
console-only daemon never imports Apprise.
"""

from __future__ import annotations

import sys
import threading
from urllib.parse import parse_qs, urlsplit

_LOCK = threading.Lock()  # Apprise sends from a thread pool: keep each alert's lines together
ICONS = {"info": "i", "success": "✓", "warning": "!", "failure": "✗"}


def format_console(title: str, body: str, notify_type: str) -> str:
    """The text printed for one alert: a marked title line, the body, a blank line."""
    icon = ICONS.get(notify_type, "•")
    return f"[{icon}] {title}\n{body}\n\n" if body else f"[{icon}] {title}\n\n"


def is_console(url: str) -> bool:
    """``url`` is a console:// URL (the scheme, any case).

    >>> is_console("console://?stream=stderr"), is_console("json://h/x")
    (True, False)
    """
    return url[:10].lower() == "console://"


def console(url: str, title: str, body: str, notify_type: str) -> bool:
    """Print one alert for a console:// URL; ``console://?stream=stderr`` prints to stderr."""
    stream_name = parse_qs(urlsplit(url).query).get("stream", [""])[-1]
    stream = sys.stderr if stream_name == "stderr" else sys.stdout
    with _LOCK:
        stream.write(format_console(title, body, notify_type))
        stream.flush()
    return True
