"""structlog set-up: console on a terminal, JSON lines otherwise; stdlib logging joins the same stream.

Tracebacks are rendered without frame locals (a local could hold an API secret), and a last
processor scrubs any registered secret that reaches an event anyway.
"""

from __future__ import annotations

import bisect
import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

# structlog imports rich, when it is installed, for rich tracebacks and reprs of frame locals: this
# daemon renders tracebacks plainly and never shows locals, and rich is ~5 MiB of a one-account
# daemon's RSS. So structlog is imported with rich hidden (its own fallback when rich is absent)
# unless rich is loaded already; rich stays importable (the status view uses it). The daemon imports
# this module before any other that imports structlog (monitor/cli/__init__.py; tests/test_imports.py).
_HIDE_RICH = "structlog" not in sys.modules and "rich" not in sys.modules
if _HIDE_RICH:
    sys.modules["rich"] = None  # type: ignore[assignment]  # an import of rich raises ImportError
try:
    import structlog
    from structlog.types import EventDict, Processor, WrappedLogger
finally:
    if _HIDE_RICH:
        del sys.modules["rich"]

_SECRETS: set[str] = set()
_REDACTED = "«redacted»"
_GRAM = 4  # every secret is at least this long
_OPENINGS: set[str] = set()  # the first _GRAM characters of every secret
_SORTED: list[str] = []  # every secret, sorted: the longest one opening a text is found by bisection
_longest = 0


def register_secrets(values: Iterable[str]) -> None:
    """Remember secrets (keys, tokens) so that any log line containing one is scrubbed."""
    global _longest
    for value in values:
        if value and len(value) >= _GRAM and value not in _SECRETS:
            _SECRETS.add(value)
            _OPENINGS.add(value[:_GRAM])
            bisect.insort(_SORTED, value)
            _longest = max(_longest, len(value))


def _secret_at(text: str, at: int) -> int:
    """The end of the longest secret that ``text`` holds at ``at``, or 0. The largest secret not
    above the text there is tried; when it is not a prefix of it, any secret that is must be a
    prefix of their common part (a longer one would sort above it), so the search narrows to that."""
    head = text[at : at + _longest]
    while len(head) >= _GRAM:
        k = bisect.bisect_right(_SORTED, head) - 1
        if k < 0:
            return 0
        found = _SORTED[k]
        if head.startswith(found):
            return at + len(found)
        same = 0
        for a, b in zip(found, head, strict=False):
            if a != b:
                break
            same += 1
        head = head[:same]
    return 0


def scrub(text: str) -> str:
    """Replace every registered secret in ``text`` (leftmost first, the longest one there).

    Only the places where a secret's first four characters occur are looked at, each by bisection
    in the sorted secrets: a scan of the text for each of 2,000 secrets (1,000 accounts), in each
    field of each log line, was the start-up's largest CPU cost at level info."""
    if not _SECRETS or len(text) < _GRAM:
        return text
    places = [i for i in range(len(text) - _GRAM + 1) if text[i : i + _GRAM] in _OPENINGS]
    parts: list[str] = []
    done = 0
    for at in places:
        if at < done:
            continue  # inside a secret already replaced
        end = _secret_at(text, at)
        if end:
            parts += (text[done:at], _REDACTED)
            done = end
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _scrub_event(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    if not _SECRETS:
        return event
    for key, value in list(event.items()):
        event[key] = _scrub_value(value)
    return event


def _scrub_value(value: Any) -> Any:
    """``value`` with every registered secret replaced, keeping its JSON shape (a rendered traceback
    is a list of dicts); any other object is scrubbed through its ``str`` only when that holds one."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, int | float | bool | type(None)):
        return value
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    text = str(value)
    clean = scrub(text)
    return clean if clean != text else value


def _foreign_event(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """A stdlib record of Apprise (its own retries, HTTP errors) as a structured event: ``event`` is
    ``"apprise"`` and the text goes to ``message`` (it would otherwise be the event name itself)."""
    name = str(event.get("logger", ""))
    if name == "apprise" or name.startswith("apprise."):
        event["message"] = event.get("event")
        event["event"] = "apprise"
    return event


def _json_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging once, at start-up."""
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if as_json:
        exc: Processor = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
        tail: list[Processor] = [exc, _scrub_event, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )
        # the traceback is text before the scrub (the renderer would print it after, unscrubbed)
        tail = [structlog.processors.format_exc_info, _scrub_event, renderer]

    numeric = getattr(logging, level.upper())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _foreign_event],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for noisy in ("apscheduler", "websockets", "asyncio", "aiohttp.access", "apprise"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
