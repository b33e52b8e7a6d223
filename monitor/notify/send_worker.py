"""The send worker: ``python -m monitor.notify.send_worker``, a child of the daemon that runs
Apprise's sends, so that their Python (requests' ~1.5 ms of CPU per HTTP request on a 2 vCPU VM)
never holds the daemon's interpreter lock while its event loop waits (:mod:`monitor.notify.send_process`
is the daemon's side; why, measured: ``bench/send_gil.py``, docs/benchmarks.md "Session 16").

Requests and answers are JSON lines: one request per line on standard input, one answer per line on
the original standard output (the worker's own ``sys.stdout`` is pointed at standard error, so no
stray print can corrupt an answer). URLs arrive on the pipe, never on the command line (they carry
tokens).

- ``{"id": 7, "url": "json://…", "title": "…", "body": "…", "type": "warning"}``: send; answered
  ``{"id": 7, "ok": true|false}``, ``{"id": 7, "rejected": true}`` (Apprise refuses the URL) or
  ``{"id": 7, "ok": false, "error": "ValueError"}`` (a plugin raised; the type only: its text may
  hold the URL).
- ``{"id": 8, "url": "…", "warm": true}``: build the URL's ``Apprise`` object (imports its plugin)
  without sending; answered like a send.
- Apprise's log records at the daemon's level or above (``--level``) come back before their send's
  answer, as ``{"id": 7, "log": "WARNING", "logger": "apprise", "message": "…"}``; the daemon logs
  them in the send's context, through its scrubbing log.

Each send runs ``Apprise.notify`` on a thread of a pool of :data:`SEND_THREADS` (as the daemon's
own pool did), with each URL's object built once (:class:`AppriseSender`'s rules: no Apprise
limit per service, the daemon bounds each send's wait). At the end of its input (the daemon closed
the pipe, or died) the worker lets the sends in flight finish and exits. SIGTERM and SIGINT are
ignored: sent to every process of the daemon's group (systemd's stop, Ctrl-C), they are the
daemon's to act on, and it still sends its last alerts through the worker while it drains.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import orjson

import monitor.logs  # structlog without rich (~5 MiB), before anything imports structlog
import monitor.requests_lean  # noqa: F401  # requests without charset_normalizer, before Apprise
from monitor.notify.apprise_sink import SEND_THREADS, AppriseSender, PermanentFailure

_current = threading.local()  # .id: the request a thread is sending, for the log records it makes


class Answers:
    """The answer pipe: whole lines, one writer at a time."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def put(self, answer: dict[str, Any]) -> None:
        line = orjson.dumps(answer) + b"\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


class ToDaemon(logging.Handler):
    """Apprise's records, sent back with the id of the send that made them."""

    def __init__(self, answers: Answers, level: int) -> None:
        super().__init__(level)
        self._answers = answers

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._answers.put({"id": getattr(_current, "id", None), "log": record.levelname,
                               "logger": record.name, "message": record.getMessage()})  # fmt: skip
        except Exception:  # a record that cannot be rendered is not worth a send
            self.handleError(record)


def handle(sender: AppriseSender, answers: Answers, request: dict[str, Any]) -> None:
    """One request, on a pool thread: build (and send), answer."""
    rid = request.get("id")
    _current.id = rid
    try:
        url = str(request["url"])
        obj = sender.apprise_for(url)  # built by the daemon's own rules
        if request.get("warm"):
            answers.put({"id": rid, "ok": True})
            return
        ok = obj.notify(
            body=str(request["body"]), title=str(request["title"]), notify_type=str(request["type"])
        )
        answers.put({"id": rid, "ok": bool(ok)})
    except PermanentFailure:
        answers.put({"id": rid, "rejected": True})
    except Exception as exc:  # a plugin's bug must not end the worker; its text may hold the URL
        answers.put({"id": rid, "ok": False, "error": type(exc).__name__})
    finally:
        _current.id = None


def serve(requests: IO[bytes], answers: Answers, threads: int = SEND_THREADS) -> None:
    """Read requests until the end of input; each on the pool; then wait for the sends in flight."""
    sender = AppriseSender()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="notify-send")
    try:
        for line in requests:
            if not line.strip():
                continue
            try:
                request = orjson.loads(line)
            except orjson.JSONDecodeError:
                print("send_worker: a request line that is not JSON, ignored", file=sys.stderr, flush=True)
                continue
            pool.submit(handle, sender, answers, request)
    finally:
        pool.shutdown(wait=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor.notify.send_worker")
    parser.add_argument("--level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--threads", type=int, default=SEND_THREADS)
    args = parser.parse_args(argv)
    # a stop signal for the whole group (systemd's stop, a terminal's Ctrl-C) is the daemon's to act
    # on: it drains its last alerts through this worker, then closes its input, which ends it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")  # the answer pipe; fd 1 itself goes to standard error
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    answers = Answers(out)
    level = max(getattr(logging, args.level.upper()), logging.WARNING)  # as the daemon's log has Apprise
    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(ToDaemon(answers, level))
    apprise_log.setLevel(level)
    apprise_log.propagate = False
    serve(sys.stdin.buffer, answers, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
