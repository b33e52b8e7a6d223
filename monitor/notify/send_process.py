"""Apprise's sends in a worker process (:mod:`monitor.notify.send_worker`), the daemon's side.

Why: a send on a thread of the daemon's own pool (:class:`AppriseSender`) runs ~1.5-2 ms of Python
(requests builds a session, merges the environment's proxy settings, opens a connection, parses the
answer) holding the interpreter lock; a burst of alerts on several threads then keeps the event loop
waiting for the lock, whatever the number of CPUs: the loop's 1 ms timer ran up to 17-24 ms late in
bursts of 40 sends, against 4-8 ms with the sends in another process and 1.4-5.5 ms with none
(``bench/send_gil.py``, docs/benchmarks.md "Session 16"). In a process of its own a send costs the
loop a JSON line each way.

:class:`ProcessSender` keeps :class:`AppriseSender`'s contract (``Sender``, ``concurrency``): a URL
Apprise rejects is refused here, before any worker (the daemon parses it as it always did); a send
not answered within its timeout (plus Apprise's grace) is not delivered; console:// stays in the
daemon. The worker is started at :meth:`start` (warmed with the routes' URLs, so the first alert of
a crash does not wait for Apprise's import) or at the first send. When it exits, the sends it had are
answered "not delivered" (the retry stage sends them again), ``send_worker_exited`` is logged, and
the next send starts another. A worker that cannot be started, or that exits
:data:`FALL_BACK_AFTER` times in a row without answering anything, is given up: the sends go on
threads of the daemon's own pool, as without a worker, and ``send_worker_unavailable`` is logged
once, at error level (delivery first, the loop's lag second).

The worker's standard error (a traceback, a warning) is logged line by line as
``send_worker_stderr``, through the daemon's scrubbing log (URLs are registered secrets); Apprise's
own records come back with their send and are logged in its context, as the thread pool's were.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import structlog

from monitor.notify.apprise_sink import ABANDON_GRACE, AppriseSender, PermanentFailure, url_scheme
from monitor.notify.console import console, is_console

log = structlog.get_logger(__name__)

__all__ = ["FALL_BACK_AFTER", "PROCESS_FROM_ACCOUNTS", "WORKER_MODULE", "ProcessSender", "sender_for"]

WORKER_MODULE = "monitor.notify.send_worker"
FALL_BACK_AFTER = 3  # workers in a row that exit (or cannot start) without one answer: sends on threads
EXIT_GRACE = 2.0  # s: at close, the worker's time to finish its sends before it is killed
LINE_LIMIT = 1 << 20  # bytes: an answer or log line longer than this ends the worker (never expected)

_Pending = tuple["asyncio.Future[dict[str, Any]]", list[dict[str, Any]]]


class _Worker:
    """One running worker: its process, the sends waiting for an answer, its two readers."""

    def __init__(self, process: asyncio.subprocess.Process, on_exit: Callable[[_Worker, int], None]) -> None:
        self.process = process
        self.pending: dict[int, _Pending] = {}
        self.answered = 0
        self._ids = itertools.count(1)
        self._on_exit = on_exit
        assert process.stdout is not None and process.stderr is not None
        self.readers = [
            asyncio.create_task(self._answers(process.stdout), name="send-worker-answers"),
            asyncio.create_task(self._stderr(process.stderr), name="send-worker-stderr"),
        ]

    def request(self, fields: dict[str, Any]) -> _Pending:
        """Write one request; its answer (``{"ok": …}``…) arrives on the future, Apprise's records
        for it in the list (before the answer)."""
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry: _Pending = (future, [])
        self.pending[rid] = entry
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps({"id": rid, **fields}) + b"\n")
        future.add_done_callback(lambda _: self.pending.pop(rid, None))
        return entry

    async def _answers(self, stream: asyncio.StreamReader) -> None:
        try:
            while line := await stream.readline():
                self._answer(orjson.loads(line))
        except (ValueError, orjson.JSONDecodeError) as exc:  # a line too long, or not JSON
            log.error("send_worker_garbled", error=type(exc).__name__)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        finally:
            code = await self.process.wait()
            self._on_exit(self, code)

    def _answer(self, answer: dict[str, Any]) -> None:
        entry = self.pending.get(answer.get("id", -1))
        if "log" in answer:
            if entry is None:  # its send gave up waiting: logged without the send's context
                _log_record(answer)
            else:
                entry[1].append(answer)
            return
        if entry is not None and not entry[0].done():
            self.answered += 1
            entry[0].set_result(answer)

    async def _stderr(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(ValueError):
            while line := await stream.readline():
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    log.warning("send_worker_stderr", line=text)

    def fail_pending(self) -> int:
        """Answer every waiting send "not delivered"; how many there were."""
        waiting = [f for f, _ in self.pending.values() if not f.done()]
        for future in waiting:
            future.set_result({"ok": False, "error": "worker exited"})
        return len(waiting)


def _log_record(record: dict[str, Any]) -> None:
    """One of Apprise's records from the worker, logged as the daemon logs Apprise's own."""
    level = logging.getLevelName(str(record.get("log", "WARNING")))
    name = str(record.get("logger", "apprise"))
    logging.getLogger(name if name.startswith("apprise") else "apprise").log(
        level if isinstance(level, int) else logging.WARNING, "%s", record.get("message", "")
    )


class ProcessSender(AppriseSender):
    """:class:`AppriseSender`'s contract, with ``Apprise.notify`` run in a worker process.

    ``command``: the worker's command line (default: this Python, ``-m`` :data:`WORKER_MODULE`);
    ``level``: the daemon's log level (Apprise's records at or above it, never below warning, come
    back). Never a URL on the command line."""

    def __init__(self, *, level: str = "info", command: Sequence[str] | None = None) -> None:
        super().__init__()
        self._command = list(command or [sys.executable, "-m", WORKER_MODULE])
        self._level = level
        self._worker: _Worker | None = None
        self._starting: asyncio.Future[_Worker | None] | None = None
        self._failed_in_a_row = 0
        self.fallen_back = False
        self.started = 0  # workers started so far
        self._closing = False

    @property
    def worker_pid(self) -> int | None:
        """The running worker's process id (None while none runs)."""
        return None if self._worker is None else self._worker.process.pid

    async def start(self, urls: Iterable[str] = ()) -> None:
        """Start the worker now and have it build each URL's ``Apprise`` object (its plugin imported)
        while the daemon goes on (not waited for: start-up does not wait for Apprise's import); URLs
        Apprise rejects and console:// are left out (their sends never reach the worker)."""
        worker = await self._running()
        if worker is None:
            return
        for url in urls:
            if is_console(url):
                continue
            try:
                self.apprise_for(url)
            except PermanentFailure:
                continue
            worker.request({"url": url, "warm": True})

    async def __call__(self, url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        if is_console(url):
            return console(url, title, body, notify_type)
        self.apprise_for(url)  # PermanentFailure for a URL Apprise rejects: no worker needed to know
        worker = None if self.fallen_back else await self._running()
        if worker is None:  # no worker can run: the daemon's own threads
            return await super().__call__(url, title, body, notify_type, seconds)
        answer, records = worker.request({"url": url, "title": title, "body": body, "type": notify_type})
        try:
            async with asyncio.timeout(seconds + ABANDON_GRACE):  # queued time counts, as on threads
                result = await answer
        except TimeoutError:
            return False  # not delivered, as on a thread (the worker's send ends with its timeouts)
        finally:
            for record in records:  # in the send's log context
                _log_record(record)
        if result.get("rejected"):
            raise PermanentFailure(f"Apprise rejected a {url_scheme(url)}:// URL")
        return bool(result.get("ok"))

    async def _running(self) -> _Worker | None:
        """The worker, started if none runs (one start for every send that waits on it); None once
        fallen back to threads."""
        if self._worker is not None:
            return self._worker
        if self.fallen_back:
            return None
        if self._starting is not None:
            return await asyncio.shield(self._starting)
        starting = self._starting = asyncio.get_running_loop().create_future()
        worker = None
        try:
            worker = self._worker = await self._spawn()
        finally:
            self._starting = None
            starting.set_result(worker)
        return worker

    async def _spawn(self) -> _Worker | None:
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command, "--level", self._level,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=LINE_LIMIT,
            )  # fmt: skip
        except OSError as exc:
            log.error("send_worker_failed", error=f"{type(exc).__name__}: {exc.strerror or exc}")
            self._give_up(reason="the worker could not be started")
            return None
        self.started += 1
        log.info("send_worker_started", pid=process.pid)
        return _Worker(process, self._exited)

    def _exited(self, worker: _Worker, code: int) -> None:
        lost = worker.fail_pending()
        if self._worker is worker:
            self._worker = None
        if worker.answered:
            self._failed_in_a_row = 0
        else:
            self._failed_in_a_row += 1
        if self._closing:
            return
        log.warning("send_worker_exited", returncode=code, sends_not_delivered=lost)
        if self._failed_in_a_row >= FALL_BACK_AFTER:
            self._give_up(reason=f"{self._failed_in_a_row} workers in a row exited without an answer")

    def _give_up(self, reason: str) -> None:
        if not self.fallen_back:
            self.fallen_back = True
            log.error("send_worker_unavailable", reason=reason, sends="on the daemon's own threads")

    async def aclose(self) -> None:
        """Close the worker's input: it finishes its sends and exits (killed after :data:`EXIT_GRACE`)."""
        self._closing = True
        worker, self._worker = self._worker, None
        if worker is not None:
            assert worker.process.stdin is not None
            worker.process.stdin.close()
            try:
                async with asyncio.timeout(EXIT_GRACE):
                    await worker.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
            await asyncio.gather(*worker.readers, return_exceptions=True)
        self.close()
        self._closing = False


PROCESS_FROM_ACCOUNTS = 20  # notify.sends: auto puts the sends in a worker from this many accounts


def sender_for(sends: str, accounts: int, *, level: str = "info") -> AppriseSender:
    """The daemon's Apprise sender for ``notify.sends``: ``threads`` (:class:`AppriseSender`),
    ``process`` (:class:`ProcessSender`), or ``auto``: the worker from :data:`PROCESS_FROM_ACCOUNTS`
    accounts, where a crash's burst of alerts is large enough for the sends' hold on the interpreter
    lock to delay the loop by milliseconds; below, the ~30 MiB of a second Python are not worth it.

    >>> cases = [("auto", 1), ("auto", 20), ("threads", 500), ("process", 1)]
    >>> [type(sender_for(s, n)).__name__ for s, n in cases]
    ['AppriseSender', 'ProcessSender', 'AppriseSender', 'ProcessSender']
    """
    if sends == "process" or (sends == "auto" and accounts >= PROCESS_FROM_ACCOUNTS):
        return ProcessSender(level=level)
    return AppriseSender()
