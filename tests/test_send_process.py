"""Apprise's sends in a worker process (monitor/notify/send_process.py, monitor/notify/send_worker.py):
a real child process running real Apprise json:// to a receiver on 127.0.0.1. Structural, never
timed: sends are delivered from another process and none on the daemon's threads; the URL never on
the worker's command line; a URL Apprise rejects dropped without a worker; a send past its timeout
not delivered; a worker killed with a send in flight answers it "not delivered" and the next send
starts another; a worker that cannot run hands the sends back to the daemon's threads, loudly;
Apprise's records come back in the send's log context; the Dispatcher stops the worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from daemon_harness import Receiver, deliver_and_stop
from structlog.testing import capture_logs

from monitor.config.model import ConfigError, load_config
from monitor.notify.apprise_sink import AppriseSender, PermanentFailure
from monitor.notify.dispatcher import Dispatcher
from monitor.notify.route import NotifyRoute
from monitor.notify.send_process import FALL_BACK_AFTER, PROCESS_FROM_ACCOUNTS, ProcessSender, sender_for
from monitor.store import Store

pytestmark = pytest.mark.timeout(60)


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def worker_pid(sender: ProcessSender) -> int:
    pid = sender.worker_pid
    assert pid is not None
    return pid


async def test_sends_are_delivered_from_the_worker_process(receiver: Receiver) -> None:
    """Twelve sends, eight at once: all delivered, by a process other than this one, none on a
    thread of the daemon's pool; the URL is not on the worker's command line."""
    sender = ProcessSender()
    await sender.start([receiver.url])
    pid = worker_pid(sender)
    assert pid != os.getpid()
    cmdline = command_line(pid)
    assert "send_worker" in cmdline and "127.0.0.1" not in cmdline and str(receiver.port) not in cmdline
    gate = asyncio.Semaphore(8)

    async def send(n: int) -> bool:
        async with gate:
            return await sender(receiver.url, f"t{n}", "b", "warning", 10.0)

    assert all(await asyncio.gather(*(send(n) for n in range(12))))
    assert sorted(receiver.titles()) == sorted(f"t{n}" for n in range(12))
    assert sender._pool is None  # the daemon's own send threads never started
    assert sender.started == 1 and not sender.fallen_back
    assert sender.concurrency(receiver.url, 8) == 8  # Apprise's spacing read as on threads
    await sender.aclose()
    assert sender._worker is None


async def test_a_url_apprise_rejects_is_dropped_without_a_worker() -> None:
    sender = ProcessSender()
    with pytest.raises(PermanentFailure):
        await sender("nonsense://x", "t", "b", "info", 1.0)
    assert sender.started == 0
    await sender.aclose()


async def test_a_send_past_its_timeout_is_not_delivered_and_the_worker_goes_on(
    receiver: Receiver, silent_port: int
) -> None:
    sender = ProcessSender()
    assert await sender(f"json://127.0.0.1:{silent_port}/hook?rto=1", "t", "b", "info", 0.2) is False
    assert await sender(receiver.url, "after", "b", "info", 10.0) is True
    assert receiver.titles() == ["after"] and sender.started == 1
    await sender.aclose()


async def test_a_worker_killed_with_a_send_in_flight(receiver: Receiver, silent_port: int) -> None:
    """The send in flight is answered "not delivered" at once (not at its timeout), the exit is
    logged, and the next send is delivered by a new worker."""
    sender = ProcessSender()
    await sender.start()
    stuck = asyncio.create_task(sender(f"json://127.0.0.1:{silent_port}/hook?rto=30", "t", "b", "info", 30.0))
    while sender._worker is None or not sender._worker.pending:  # noqa: ASYNC110 (a state of the sender)
        await asyncio.sleep(0.01)
    with capture_logs() as logs:
        os.kill(worker_pid(sender), signal.SIGKILL)
        assert await stuck is False
    exited = [e for e in logs if e["event"] == "send_worker_exited"]
    assert exited == [{"event": "send_worker_exited", "log_level": "warning",
                       "returncode": -signal.SIGKILL, "sends_not_delivered": 1}]  # fmt: skip
    assert await sender(receiver.url, "again", "b", "info", 10.0) is True
    assert receiver.titles() == ["again"] and sender.started == 2 and not sender.fallen_back
    await sender.aclose()


async def test_a_worker_that_cannot_run_hands_the_sends_to_threads(receiver: Receiver) -> None:
    """A worker that exits at once: its sends are not delivered (the retry stage sends them again);
    after FALL_BACK_AFTER such exits in a row the sends go on the daemon's own threads, and that
    is logged once, as an error."""
    sender = ProcessSender(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    with capture_logs() as logs:
        results = [await sender(receiver.url, f"t{n}", "b", "info", 10.0) for n in range(FALL_BACK_AFTER)]
        assert results == [False] * FALL_BACK_AFTER
        assert sender.fallen_back
        assert await sender(receiver.url, "on a thread", "b", "info", 10.0) is True
    assert receiver.titles() == ["on a thread"] and sender._pool is not None
    unavailable = [e for e in logs if e["event"] == "send_worker_unavailable"]
    assert len(unavailable) == 1 and unavailable[0]["log_level"] == "error"
    assert [e["returncode"] for e in logs if e["event"] == "send_worker_exited"] == [3] * FALL_BACK_AFTER
    await sender.aclose()


async def test_a_worker_that_cannot_start_hands_the_send_to_threads_at_once(receiver: Receiver) -> None:
    sender = ProcessSender(command=["/nonexistent/python"])
    with capture_logs() as logs:
        assert await sender(receiver.url, "t", "b", "info", 10.0) is True
    assert sender.fallen_back and receiver.titles() == ["t"]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "send_worker_failed",
        "send_worker_unavailable",
    ]
    await sender.aclose()


async def test_the_workers_standard_error_is_logged() -> None:
    complain = "import sys; print('worker trouble', file=sys.stderr)"
    sender = ProcessSender(command=[sys.executable, "-c", complain])
    with capture_logs() as logs:
        await sender.start()
        while not any(e["event"] == "send_worker_exited" for e in logs):  # noqa: ASYNC110 (a log line)
            await asyncio.sleep(0.01)
    assert {"event": "send_worker_stderr", "log_level": "warning", "line": "worker trouble"} in logs
    await sender.aclose()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.name, record.getMessage(), structlog.contextvars.get_contextvars()))


async def test_apprises_records_come_back_in_the_sends_context(receiver: Receiver) -> None:
    """A webhook answering 500: Apprise's warning, made in the worker, is logged here by the logger
    "apprise" while the send's own log context (its unit) is bound."""
    receiver.failing = True
    records = _Records()
    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(records)
    sender = ProcessSender()
    try:
        with structlog.contextvars.bound_contextvars(unit="acct:demo"):
            assert await sender(receiver.url, "t", "b", "warning", 10.0) is False
    finally:
        apprise_log.removeHandler(records)
        await sender.aclose()
    failed = [(n, m, c) for n, m, c in records.seen if "JSON" in m]
    assert failed and all(n.startswith("apprise") and c == {"unit": "acct:demo"} for n, _, c in failed)


async def test_the_dispatcher_sends_through_the_worker_and_stops_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    with Store(tmp_path) as store:
        sender = ProcessSender()
        d = Dispatcher({"chat": NotifyRoute("chat", (receiver.url,))}, store, apprise=sender)
        await d.start()
        assert sender.started == 1  # started (and warmed) with the dispatcher, before any alert
        process = sender._worker.process if sender._worker else None
        events = await deliver_and_stop(d, receiver)
        assert store.open_outbox() == []
    assert process is not None and process.returncode == 0  # the worker ended at its input's end
    assert sender._pool is None
    assert sorted(receiver.titles()) == sorted(e.dedupe_key for e in events)


def test_notify_sends_auto_puts_the_sends_in_a_worker_from_many_accounts() -> None:
    assert type(sender_for("auto", 1)) is AppriseSender
    assert type(sender_for("auto", PROCESS_FROM_ACCOUNTS - 1)) is AppriseSender
    assert type(sender_for("auto", PROCESS_FROM_ACCOUNTS)) is ProcessSender
    assert type(sender_for("threads", 1000)) is AppriseSender
    assert type(sender_for("process", 1)) is ProcessSender


def test_notify_sends_refuses_anything_else(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "exchange: {kind: simulator}\n"
        "accounts: [{name: demo, api_key: k, api_secret: s}]\n"
        "notify: {routes: {console: {urls: ['console://']}}, sends: fork}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "notify.sends" in text and "'auto', 'threads' or 'process'" in text and "\n" not in text.strip()


async def test_a_worker_left_alone_exits_when_its_input_ends() -> None:
    """The daemon dies: the worker's input ends and it exits by itself (no orphan sending on)."""
    sender = ProcessSender()
    await sender.start()
    assert sender._worker is not None
    process = sender._worker.process
    assert process.stdin is not None
    process.stdin.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            await process.wait()
    assert process.returncode == 0
    await sender.aclose()


async def test_the_worker_outlives_a_stop_signal_sent_to_the_whole_group(receiver: Receiver) -> None:
    """systemd's stop (SIGTERM to every process of the unit) and a terminal's Ctrl-C (SIGINT to the
    process group) reach the worker too: it keeps sending while the daemon drains its last alerts,
    and ends when the daemon closes its input."""
    sender = ProcessSender()
    await sender.start([receiver.url])
    pid = worker_pid(sender)
    assert await sender(receiver.url, "warm", "b", "info", 10.0) is True  # the worker is past its set-up
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    assert await sender(receiver.url, "draining", "b", "info", 10.0) is True
    assert worker_pid(sender) == pid and sender.started == 1
    assert receiver.titles() == ["warm", "draining"]
    await sender.aclose()


def test_the_worker_imports_neither_rich_nor_a_charset_detector() -> None:
    """The worker is a second Python beside the daemon: it loads structlog without rich and
    requests without charset_normalizer, as the daemon does (monitor/logs.py, monitor/requests_lean.py)."""
    probe = (
        "import sys, monitor.notify.send_worker; "
        "print(sorted(m for m in ('rich', 'charset_normalizer', 'chardet') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
