"""The Dispatcher end to end: real Apprise json:// to an aiohttp receiver on 127.0.0.1, a real
SQLite outbox, restarts, outages, flood control and secret hygiene."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from monitor.alerts.policy import AlertEvent, AlertPolicy, LevelRule, PolicyConfig
from monitor.notify.console import format_console
from monitor.notify.dispatcher import Delivery, Dispatcher, FloodGate, NotifyRoute, check_url, default_backoff
from monitor.notify.messages import Message
from monitor.store import Store

FAST: Callable[[int], float] = lambda attempt: 0.02  # noqa: E731


class Receiver:
    """A webhook endpoint for Apprise json://: records what it accepts, fails on demand."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.hits = 0
        self.fail_paths: set[str] = set()
        self.fail_next = 0
        self.hang_next = 0.0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        payload = await request.json()
        if self.hang_next:
            delay, self.hang_next = self.hang_next, 0.0
            await asyncio.sleep(delay)
            return web.Response(status=504)
        if self.fail_next or request.path in self.fail_paths:
            self.fail_next = max(0, self.fail_next - 1)
            return web.Response(status=500)
        self.received.append({"path": request.path, **payload})
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def titles(self) -> list[str]:
        return [r["title"] for r in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def crash_events(unit: str = "cross:alice", routes: tuple[str, ...] = ("chat",)) -> list[AlertEvent]:
    """The three events of one tick falling from 1.6 to 1.0 (1.5, 1.3, 1.1 in order)."""
    rules = (
        LevelRule("normal", 1.5, routes),
        LevelRule("margin_call", 1.3, routes),
        LevelRule("liquidation", 1.1, routes),
    )
    policy = AlertPolicy(PolicyConfig(levels=rules))
    now = time.time()
    policy.evaluate(unit, 1.6, None, now)
    return policy.evaluate(unit, 1.0, None, now)


RUNNING: list[Dispatcher] = []


def dispatcher(
    store: Store, *urls: str, max_per_window: int | None = None, window: float = 60.0, **kw: Any
) -> Dispatcher:
    route = NotifyRoute("chat", tuple(urls), max_per_window=max_per_window, window=window)
    kw.setdefault("backoff", FAST)
    kw.setdefault("timeout", 2.0)
    d = Dispatcher({"chat": route}, store, **kw)
    RUNNING.append(d)
    return d


@pytest.fixture(autouse=True)
async def stop_dispatchers() -> AsyncIterator[None]:
    """Whatever a test does, no dispatcher worker outlives it."""
    yield
    while RUNNING:
        await RUNNING.pop().stop()


def files_containing(directory: Path, needle: bytes) -> list[str]:
    return [p.name for p in directory.iterdir() if needle in p.read_bytes()]


async def send_all(d: Dispatcher, events: list[AlertEvent]) -> None:
    for e in events:
        await d.enqueue(e, f"{e.rule} {e.kind}", f"body of {e.dedupe_key}")


# -- pure parts ------------------------------------------------------------------------------------


def test_flood_gate_sliding_window() -> None:
    """FloodGate admits `limit` per sliding window, says when the next slot frees, and refunds."""
    gate = FloodGate(2, 10.0)
    assert gate.admit(0.0) and gate.admit(1.0) and not gate.admit(2.0)
    assert gate.next_free(2.0) == 10.0
    assert gate.admit(10.0) and not gate.admit(10.5)
    gate.refund()
    assert gate.admit(10.5)
    unlimited = FloodGate(None, 1.0)
    assert all(unlimited.admit(0.0) for _ in range(100)) and unlimited.next_free(0.0) == 0.0


def test_default_backoff_grows_with_jitter_and_is_capped() -> None:
    """Backoff doubles per attempt within a 0.5–1 jitter band and never exceeds five minutes."""
    assert all(0.5 <= default_backoff(1) <= 1.0 for _ in range(50))
    assert all(4.0 <= default_backoff(4) <= 8.0 for _ in range(50))
    assert max(default_backoff(100) for _ in range(50)) <= 300.0


def test_check_url_and_route_repr_hide_secrets() -> None:
    """URL validation messages and NotifyRoute's repr never contain the URL's token."""
    assert check_url("json://127.0.0.1:1/x") is None
    reason = check_url("nonsense://SECRETTOKEN@host")
    assert reason is not None and "SECRETTOKEN" not in reason
    assert "SECRETTOKEN" not in repr(NotifyRoute("r", ("tgram://SECRETTOKEN/123",)))


def test_console_format() -> None:
    """The console scheme prints a marked title line then the body."""
    assert format_console("T", "B", "failure") == "[✗] T\nB\n\n"


# -- delivery --------------------------------------------------------------------------------------


async def test_crossing_delivered_in_order_with_latency_hook(tmp_path: Path, receiver: Receiver) -> None:
    """Three events of one crash arrive once each, in severity order, and on_sent sees each."""
    deliveries: list[Delivery] = []
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url(), on_sent=deliveries.append)
        await d.start()
        await send_all(d, crash_events())
        await until(lambda: len(receiver.received) == 3)
        await d.stop()
        assert receiver.titles() == ["normal firing", "margin_call firing", "liquidation firing"]
        assert receiver.received[0]["type"] == "warning" and receiver.received[0]["message"].startswith(
            "body"
        )
        assert [x.scheme for x in deliveries] == ["json"] * 3
        assert all(0 <= x.latency < 5 and x.ok and x.attempts == 1 for x in deliveries)
        assert d.stats()["chat"].sent == 3 and d.stats()["chat"].queued == 0
        assert store.open_outbox() == []


async def test_receiver_500_is_retried_then_delivered_once(tmp_path: Path, receiver: Receiver) -> None:
    """Two HTTP 500 answers are retried with backoff; the alert then arrives exactly once."""
    attempts: list[int] = []

    def backoff(n: int) -> float:
        attempts.append(n)
        return 0.02

    receiver.fail_next = 2
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url(), backoff=backoff)
        await d.start()
        await send_all(d, crash_events()[:1])
        await until(lambda: len(receiver.received) == 1)
        await asyncio.sleep(0.1)
        await d.stop()
    assert receiver.hits == 3 and len(receiver.received) == 1
    assert attempts == [1, 2]
    assert d.stats()["chat"].failed == 2 and d.stats()["chat"].sent == 1


async def test_receiver_down_then_back_keeps_order(tmp_path: Path, receiver: Receiver) -> None:
    """While the receiver is down alerts wait; when it returns they arrive once, in order."""
    await receiver.stop()
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url())
        await d.start()
        await send_all(d, crash_events())
        await asyncio.sleep(0.2)
        assert d.stats()["chat"].queued == 3 and d.stats()["chat"].failed >= 2
        await receiver.start()
        await until(lambda: len(receiver.received) == 3)
        await asyncio.sleep(0.1)
        await d.stop()
    assert receiver.titles() == ["normal firing", "margin_call firing", "liquidation firing"]


async def test_restart_with_queued_item_delivers_exactly_once(tmp_path: Path, receiver: Receiver) -> None:
    """A row queued in SQLite when the daemon stops is sent by the next start, and never again."""
    await receiver.stop()
    events = crash_events()[:1]
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url())
        await d.start()
        await send_all(d, events)
        await d.drain(0.2)
        await d.stop()
        assert len(store.open_outbox()) == 1
    await receiver.start()
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url())
        await d.start()
        await until(lambda: len(receiver.received) == 1)
        await send_all(d, events)  # the policy re-emitting the same crossing after restart
        await asyncio.sleep(0.2)
        await d.stop()
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url())
        await d.start()
        await asyncio.sleep(0.2)
        await d.stop()
    assert len(receiver.received) == 1


async def test_each_url_retries_on_its_own(tmp_path: Path, receiver: Receiver) -> None:
    """With two URLs on a route, a failing one is retried without resending to the good one."""
    receiver.fail_paths = {"/bad"}
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url("good"), receiver.url("bad"))
        await d.start()
        await send_all(d, crash_events()[:1])
        await until(lambda: d.stats()["chat"].failed >= 3)
        assert [r["path"] for r in receiver.received] == ["/good"]
        receiver.fail_paths = set()
        await until(lambda: len(receiver.received) == 2)
        await asyncio.sleep(0.1)
        await d.stop()
    assert sorted(r["path"] for r in receiver.received) == ["/bad", "/good"]


async def test_timeout_counts_as_failure_and_is_retried(tmp_path: Path, receiver: Receiver) -> None:
    """A receiver that hangs past the timeout is a failed attempt; the retry delivers."""
    receiver.hang_next = 1.0
    failures: list[Delivery] = []
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url(), timeout=0.3, on_failed=failures.append)
        await d.start()
        await send_all(d, crash_events()[:1])
        await until(lambda: len(receiver.received) == 1)
        await d.stop()
    assert len(failures) == 1 and not failures[0].ok
    assert failures[0].finished - failures[0].started < 0.9


async def test_flood_control_coalesces_into_one_summary(tmp_path: Path, receiver: Receiver) -> None:
    """max 2 per 0.4 s: two alerts go at once, the other three as one summary when the window allows."""
    events = [e for u in ("a", "b", "c", "d", "e") for e in crash_events(f"cross:{u}")[:1]]
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url(), max_per_window=2, window=0.4)
        await d.start()
        started = time.monotonic()
        await send_all(d, events)
        assert d.stats()["chat"].held == 3
        await until(lambda: len(receiver.received) == 3)
        waited = time.monotonic() - started
        await asyncio.sleep(0.1)
        await d.stop()
    assert len(receiver.received) == 3 and waited >= 0.35
    summary = receiver.received[2]
    assert summary["title"] == "[SUMMARY] 3 more alerts on route chat"
    assert summary["message"].count("normal firing") == 3


async def test_held_alerts_survive_a_restart_as_one_summary(tmp_path: Path, receiver: Receiver) -> None:
    """Alerts held by flood control when the daemon stops are sent as one summary after restart."""
    events = [e for u in ("a", "b", "c") for e in crash_events(f"cross:{u}")[:1]]
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url(), max_per_window=1, window=60.0)
        await d.start()
        await send_all(d, events)
        await until(lambda: len(receiver.received) == 1)
        await d.stop()
    for _ in range(2):
        with Store(tmp_path) as store:
            d = dispatcher(store, receiver.url(), max_per_window=1, window=60.0)
            await d.start()
            await asyncio.sleep(0.3)
            await d.stop()
    assert receiver.titles() == ["normal firing", "[SUMMARY] 2 more alerts on route chat"]


async def test_drain_is_bounded_and_keeps_the_rest_queued(tmp_path: Path, receiver: Receiver) -> None:
    """drain() against a dead receiver returns within its bound and leaves the row queued."""
    await receiver.stop()
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url(), backoff=lambda n: 30.0)
        await d.start()
        await send_all(d, crash_events()[:1])
        started = time.monotonic()
        await d.drain(0.3)
        assert 0.25 <= time.monotonic() - started < 1.0
        await d.stop()
        assert d.stats()["chat"].failed >= 2  # the drain retried at once despite the 30 s backoff
        assert len(store.open_outbox()) == 1


async def test_drain_flushes_when_the_receiver_is_up(tmp_path: Path, receiver: Receiver) -> None:
    """drain() returns as soon as the queue is empty."""
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url())
        await send_all(d, crash_events())  # before start: persisted, sent once started
        await d.start()
        started = time.monotonic()
        await d.drain(5.0)
        assert time.monotonic() - started < 2.0
        await d.stop()
    assert len(receiver.received) == 3


async def test_unusable_state_file_still_delivers_from_memory(tmp_path: Path, receiver: Receiver) -> None:
    """If the outbox cannot be written, alerts are still sent (from memory) and the failure is logged."""
    store = Store(tmp_path)
    store.close()
    d = dispatcher(store, receiver.url())
    with capture_logs() as logs:
        await d.start()
        await send_all(d, crash_events()[:1])
        await send_all(d, crash_events()[:1])  # same key: still deduplicated in memory
        await until(lambda: len(receiver.received) == 1)
        await asyncio.sleep(0.1)
        await d.stop()
    assert len(receiver.received) == 1
    assert any(e["event"] == "outbox_write_failed" for e in logs)


async def test_invalid_url_is_dropped_not_retried(tmp_path: Path) -> None:
    """A URL Apprise rejects is dropped once with an error, not retried forever."""
    with Store(tmp_path) as store:
        d = dispatcher(store, "nonsense://x")
        await d.start()
        await send_all(d, crash_events()[:1])
        await until(lambda: d.stats()["chat"].dropped == 1)
        await asyncio.sleep(0.1)
        await d.stop()
        assert d.stats()["chat"].failed == 0 and store.open_outbox() == []
        assert store.outbox_counts() == {("chat", "dropped"): 1}


async def test_unknown_route_and_removed_url_do_not_crash(tmp_path: Path, receiver: Receiver) -> None:
    """An event naming an unknown route is logged; a queued row whose URL left the config is dropped."""
    await receiver.stop()
    with Store(tmp_path) as store:
        d = dispatcher(store, receiver.url("old"))
        await send_all(d, crash_events(routes=("chat", "nowhere"))[:1])
        assert store.outbox_counts() == {("chat", "queued"): 1}
    await receiver.start()
    with Store(tmp_path) as store, capture_logs() as logs:
        d = dispatcher(store, receiver.url("new"))
        await d.start()
        await d.stop()
        assert store.outbox_counts() == {("chat", "dropped"): 1}
    assert any(e["event"] == "notify_target_gone" for e in logs)


async def test_secrets_never_logged_or_stored(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A token in the URL appears in no structlog event, no stdlib log record and not in the state file."""
    caplog.set_level(logging.INFO)
    secret = "SECRETTOKEN42"
    receiver.fail_next = 1
    with Store(tmp_path) as store, capture_logs() as logs:
        d = dispatcher(store, f"json://user:{secret}@127.0.0.1:{receiver.port}/{secret}")
        await d.start()
        await send_all(d, crash_events()[:1])
        await until(lambda: len(receiver.received) == 1)
        await d.stop()
    assert logs and all(secret not in repr(e) for e in logs)
    assert {e["event"] for e in logs} >= {"notify_sent", "notify_retry"}
    ours = [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]  # that is the receiver's
    assert ours and all(secret not in line for line in ours)
    assert files_containing(tmp_path, secret.encode()) == []


async def test_console_route_prints_the_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The console:// scheme prints the alert title and body to stdout."""
    with Store(tmp_path) as store:
        d = dispatcher(store, "console://")
        await d.start()
        event = crash_events()[0]
        await d.enqueue_message(event, Message("[NORMAL] alice", "level 1.0", "warning"))
        await until(lambda: d.stats()["chat"].sent == 1)
        await d.stop()
    assert "[!] [NORMAL] alice\nlevel 1.0" in capsys.readouterr().out


async def test_crash_before_state_save_refires_same_key_and_sends_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    """State saved behind the outbox is safe: after a crash the policy re-fires the same dedupe key,
    which the outbox ignores, so the trader gets the crossing exactly once."""
    rules = (LevelRule("margin_call", 1.3, ("chat",)),)
    policy = AlertPolicy(PolicyConfig(levels=rules))
    now = time.time()
    policy.evaluate("cross:alice", 1.4, None, now)
    with Store(tmp_path) as store:
        store.save_alert_state(policy.export_state())  # saved before the crossing
        d = dispatcher(store, receiver.url())
        await d.start()
        await send_all(d, policy.evaluate("cross:alice", 1.2, None, now + 1))  # outbox written …
        await until(lambda: d.stats()["chat"].sent == 1)
        await d.stop()  # … and the process dies before the new alert state is saved
    with Store(tmp_path) as store:
        restarted = AlertPolicy(PolicyConfig(levels=rules))
        assert restarted.import_state(store.load_alert_state()) == {}
        again = restarted.evaluate("cross:alice", 1.2, None, now + 60)
        assert [e.while_down for e in again] == [True]
        d = dispatcher(store, receiver.url())
        await d.start()
        await send_all(d, again)
        await asyncio.sleep(0.2)
        await d.stop()
    assert len(receiver.received) == 1
