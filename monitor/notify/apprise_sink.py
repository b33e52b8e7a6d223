"""Apprise glue for the dispatcher: one ``Apprise`` object per URL (so each URL's outcome is known),
URL checks for the config, and the safe names used in logs (route and scheme, never the URL).

Apprise is imported at the first real URL, with only the plugins of the schemes in use
(:mod:`monitor.notify.plugins`); console:// is ours (:mod:`monitor.notify.console`) and needs no
Apprise at all."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from monitor.notify.console import console, is_console
from monitor.notify.plugins import prepare

if TYPE_CHECKING:
    import apprise

# (url, title, body, notify_type, timeout seconds) -> delivered?  Raise PermanentFailure to give up.
Sender = Callable[[str, str, str, str, float], Awaitable[bool]]


def _new_apprise(url: str) -> apprise.Apprise:
    """An empty ``Apprise`` with the plugin for ``url``'s scheme loaded (imports Apprise)."""
    prepare(url_scheme(url))
    import apprise

    return apprise.Apprise()


class PermanentFailure(Exception):
    """A URL that can never deliver (Apprise rejects it); the message holds no secret."""


def url_scheme(url: str) -> str:
    """The scheme of an Apprise URL (``json``, ``tgram``…): the only part of a URL that is logged."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep and scheme.isascii() and len(scheme) <= 32 else "?"


def fingerprint(url: str) -> str:
    """A short stable id for a URL, stored in the outbox instead of the URL (which may hold tokens)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def check_url(url: str) -> str | None:
    """None when Apprise accepts ``url``, else a one-line reason that does not repeat the URL."""
    if is_console(url):
        return None
    if not _new_apprise(url).add(url):
        return f"not a valid Apprise URL (scheme {url_scheme(url)!r}); see https://appriseit.com"
    return None


class AppriseSender:
    """The default sender: ``Apprise.async_notify`` for one URL with a per-call timeout."""

    def __init__(self) -> None:
        self._objects: dict[str, apprise.Apprise] = {}

    def _apprise(self, url: str) -> apprise.Apprise:
        obj = self._objects.get(url)
        if obj is None:
            obj = _new_apprise(url)
            if not obj.add(url):
                raise PermanentFailure(f"Apprise rejected a {url_scheme(url)}:// URL")
            self._objects[url] = obj
        return obj

    def concurrency(self, url: str, parallel: int = 4) -> int:
        """Sends to ``url`` that may be in flight at once: ``parallel`` where Apprise sets no spacing
        between requests for the service (``request_rate_per_sec`` 0: json, discord…), else 1, so
        Apprise's per-service throttle (ntfy 5.5 s, slack 1.2 s…) still spaces them. A URL Apprise
        rejects gets 1 (its first send drops it), console:// 1 (its lines stay in order)."""
        if is_console(url):
            return 1
        try:
            plugins = list(self._apprise(url))
        except PermanentFailure:
            return 1
        return parallel if plugins and all(p.request_rate_per_sec <= 0 for p in plugins) else 1

    async def __call__(self, url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        if is_console(url):
            return console(url, title, body, notify_type)
        result = await self._apprise(url).async_notify(
            body=body, title=title, notify_type=notify_type, timeout=seconds
        )
        return bool(result)
