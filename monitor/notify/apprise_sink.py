"""Apprise glue for the dispatcher: one ``Apprise`` object per URL (so each URL's outcome is known),
URL checks for the config, and the safe names used in logs (route and scheme, never the URL).

Apprise is imported at the first real URL, with only the plugins of the schemes in use
(:mod:`monitor.notify.plugins`); console:// is ours (:mod:`monitor.notify.console`) and needs no
Apprise at all.

A send is Apprise's synchronous ``Apprise.notify`` run on a thread of the sender's own pool
(:class:`AppriseSender`): the event loop only hands the call over and takes the answer back. Apprise's
``async_notify`` did its whole orchestration on the loop (a ``CallState``, the message prepared per
service, two ``asyncio.gather`` and a ``wait_for`` task, a retry runner, then ``run_in_executor``
into its own pool): ~0.45 ms of the loop's CPU per send against ~0.1 ms now; ``notify`` does the
same work (the plugin, its throttle, Apprise's retries, payload caps and formats) on the thread."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from monitor.notify.console import console, is_console
from monitor.notify.plugins import prepare

if TYPE_CHECKING:
    import apprise

# (url, title, body, notify_type, timeout seconds) -> delivered?  Raise PermanentFailure to give up.
Sender = Callable[[str, str, str, str, float], Awaitable[bool]]

ABANDON_GRACE = 0.1  # as Apprise's own wait on a service past its deadline (_ABANDON_GRACE_SECONDS)
SEND_THREADS = 32  # the sender's pool, threads started as sends need them; a URL's bound: the retry stage


def _new_apprise(url: str, *, service_timeout: float | None = None) -> apprise.Apprise:
    """An empty ``Apprise`` with the plugin for ``url``'s scheme loaded (imports Apprise);
    ``service_timeout`` (seconds, 0 for none) replaces Apprise's default limit per service (60 s)."""
    prepare(url_scheme(url))
    import apprise

    if service_timeout is None:
        return apprise.Apprise()
    return apprise.Apprise(asset=apprise.AppriseAsset(service_timeout=service_timeout))


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
    """The default sender: ``Apprise.notify`` for one URL on a thread of one pool of ``threads``.

    Each URL's ``Apprise`` object (its plugin, the URL parsed) is built once, at its first use, and
    reused. The call's timeout is kept here (a send not answered by then is not delivered, as
    Apprise's ``timeout=`` said): the objects are built without Apprise's own limit per service, so
    Apprise calls the plugin on the thread that runs ``notify`` instead of handing it to a thread of
    its shared pool and waiting there; a send that outlives the wait ends with the plugin's socket
    timeouts, as it did in Apprise's pool. How many sends of one URL run at once is the retry stage's bound
    (:meth:`concurrency`); the pool is shared by every URL and starts its threads as sends need them.
    """

    def __init__(self, threads: int = SEND_THREADS) -> None:
        self._objects: dict[str, apprise.Apprise] = {}
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def apprise_for(self, url: str) -> apprise.Apprise:
        """``url``'s ``Apprise`` object, built at its first use; PermanentFailure if Apprise rejects it."""
        obj = self._objects.get(url)
        if obj is None:
            obj = _new_apprise(url, service_timeout=0)
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
            plugins = list(self.apprise_for(url))
        except PermanentFailure:
            return 1
        return parallel if plugins and all(p.request_rate_per_sec <= 0 for p in plugins) else 1

    async def __call__(self, url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        if is_console(url):
            return console(url, title, body, notify_type)
        notify = functools.partial(
            self.apprise_for(url).notify, body=body, title=title, notify_type=notify_type
        )
        context = contextvars.copy_context()  # the caller's log context, as Apprise's pool had it
        sent = asyncio.get_running_loop().run_in_executor(self._executor(), context.run, notify)
        try:
            async with asyncio.timeout(seconds + ABANDON_GRACE):  # queued time counts, as in Apprise
                result = await sent
        except TimeoutError:
            return False  # Apprise's TIMEOUT: not delivered (the thread ends with the plugin's timeouts)
        return bool(result)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="notify-send")
        return self._pool

    async def start(self, urls: Iterable[str] = ()) -> None:
        """Nothing to start: threads start as sends need them (``ProcessSender`` starts its worker)."""

    async def aclose(self) -> None:
        """:meth:`close`, awaitable as :class:`~monitor.notify.send_process.ProcessSender`'s."""
        self.close()

    def close(self) -> None:
        """Let the pool's threads end once their sends are done (a later send starts a new pool)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
