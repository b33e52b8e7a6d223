"""The default sender (monitor/notify/apprise_sink.py): real Apprise json:// to a receiver on
127.0.0.1. Structural, never timed: each URL's Apprise object is built once; Apprise's synchronous
``notify`` runs on a thread of the sender's pool, never ``async_notify`` on the event loop; a send
past its timeout is not delivered; the Dispatcher closes the pool when it stops."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import apprise
import pytest
from daemon_harness import Receiver, deliver_and_stop

import monitor.notify.apprise_sink as sink
from monitor.notify.apprise_sink import AppriseSender
from monitor.notify.dispatcher import Dispatcher
from monitor.notify.route import NotifyRoute
from monitor.store import Store

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Counts ``Apprise`` objects built by the sender and the threads ``Apprise.notify`` ran on;
    ``Apprise.async_notify`` fails the test if anything calls it."""
    seen: dict[str, list[Any]] = {"built": [], "threads": []}
    build, notify = sink._new_apprise, apprise.Apprise.notify

    def counted_build(url: str, **kwargs: Any) -> apprise.Apprise:
        seen["built"].append(url)
        return build(url, **kwargs)

    def recorded_notify(self: apprise.Apprise, *args: Any, **kwargs: Any) -> Any:
        seen["threads"].append(threading.current_thread())
        return notify(self, *args, **kwargs)

    async def no_async_notify(self: apprise.Apprise, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Apprise.async_notify was called")

    monkeypatch.setattr(sink, "_new_apprise", counted_build)
    monkeypatch.setattr(apprise.Apprise, "notify", recorded_notify)
    monkeypatch.setattr(apprise.Apprise, "async_notify", no_async_notify)
    return seen


async def test_a_url_is_built_once_and_sent_on_the_pools_threads(
    receiver: Receiver, calls: dict[str, list[Any]]
) -> None:
    """Twelve sends, eight at once, and the URL's concurrency asked: one Apprise object; every send
    on a ``notify-send`` thread, none on the loop's; all delivered."""
    sender = AppriseSender()
    assert sender.concurrency(receiver.url, 8) == 8
    gate = asyncio.Semaphore(8)

    async def send(n: int) -> bool:
        async with gate:
            return await sender(receiver.url, f"t{n}", "b", "warning", 5.0)

    assert all(await asyncio.gather(*(send(n) for n in range(12))))
    sender.close()
    assert calls["built"] == [receiver.url]
    assert len(calls["threads"]) == 12
    assert {t.name.split("_")[0] for t in calls["threads"]} == {"notify-send"}
    assert threading.current_thread() not in calls["threads"]
    assert sorted(receiver.titles()) == sorted(f"t{n}" for n in range(12))


async def test_a_url_apprise_rejects_is_dropped_without_a_thread(calls: dict[str, list[Any]]) -> None:
    sender = AppriseSender()
    with pytest.raises(sink.PermanentFailure):
        await sender("nonsense://x", "t", "b", "info", 1.0)
    assert calls["threads"] == [] and sender._pool is None


async def test_a_send_past_its_timeout_is_not_delivered(silent_port: int) -> None:
    """The call's timeout is the sender's (Apprise's own limit per service is off on its objects):
    a webhook that never answers is not delivered; the loop kept running (the silent server is
    served by it)."""
    sender = AppriseSender()
    assert await sender(f"json://127.0.0.1:{silent_port}/hook?rto=1", "t", "b", "info", 0.2) is False
    sender.close()


async def test_the_dispatcher_sends_on_the_pool_and_closes_it_at_stop(
    tmp_path: Path, receiver: Receiver, calls: dict[str, list[Any]]
) -> None:
    """Through the whole Dispatcher (outbox, retry stage, send stage): each alert sent once from a
    pool thread, the route's URL built once (its concurrency and its sends), the pool gone at stop."""
    with Store(tmp_path) as store:
        d = Dispatcher({"chat": NotifyRoute("chat", (receiver.url,))}, store)
        await d.start()
        events = await deliver_and_stop(d, receiver)
        assert store.open_outbox() == []
        assert d._apprise is not None and d._apprise._pool is None
    assert calls["built"] == [receiver.url]
    assert sorted(receiver.titles()) == sorted(e.dedupe_key for e in events)
    assert {t.name.split("_")[0] for t in calls["threads"]} == {"notify-send"}
