"""Each delivery stage alone (monitor/notify/stages.py): route, silence, flood control, outbox,
retry, send; then test-alert's two-stage path and the silence stage inside the Dispatcher.
Real SQLite files, real Apprise json:// to a receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from daemon_harness import Receiver
from structlog.testing import capture_logs

from monitor.alerts.opinion import FORCE, LIQUIDATION_RULE, OwnView, SecondOpinion
from monitor.alerts.policy import AlertEvent, AlertPolicy, LevelRule, PolicyConfig
from monitor.notify.apprise_sink import AppriseSender
from monitor.notify.dispatcher import Dispatcher
from monitor.notify.flood import FloodStage
from monitor.notify.messages import Message
from monitor.notify.outbox import OutboxStage
from monitor.notify.retry import RetryStage
from monitor.notify.route import NotifyRoute, RouteStage
from monitor.notify.send import Attempt, Delivery, SendStage, Tally
from monitor.notify.send_check import probe_routes
from monitor.notify.silence_stage import STORE_KEY, SilenceRegistry, SilenceStage
from monitor.notify.silences import is_protected
from monitor.notify.stages import Batch, Letter, Stage, Target
from monitor.store import OutboxItem, Store

pytestmark = pytest.mark.timeout(30)

RULES = (
    LevelRule("normal", 1.5, ("chat",)),
    LevelRule("margin_call", 1.3, ("chat",)),
    LevelRule("liquidation", 1.1, ("pager",)),
)
BARS = {"normal": 1.5, "margin_call": 1.3, "liquidation": 1.1}


def crossing(unit: str = "cross:alice") -> list[AlertEvent]:
    """A unit falling from 1.6 to 1.0: normal and margin_call on chat, liquidation on pager."""
    policy = AlertPolicy(PolicyConfig(levels=RULES))
    now = time.time()
    policy.evaluate(unit, 1.6, None, now)
    return policy.evaluate(unit, 1.0, None, now)


def letter(event: AlertEvent, *, protected: bool | None = None) -> Letter:
    if protected is None:
        protected = is_protected(event.rule, "level", BARS.get(event.rule), BARS["liquidation"])
    return Letter(
        event, Message(f"{event.unit} {event.rule}", f"body {event.dedupe_key}", "warning"), protected
    )


def routes(**urls: tuple[str, ...]) -> dict[str, NotifyRoute]:
    return {name: NotifyRoute(name, u) for name, u in urls.items()}


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    with Store(tmp_path) as s:
        yield s


# -- the shape -------------------------------------------------------------------------------------


def test_the_stages_share_one_shape_and_chain(store: Store) -> None:
    """Each stage is a Stage[In, Out] (mypy checks these annotations) and the chain runs by hand."""

    async def deliver(target: Target, item: OutboxItem) -> bool | None:
        return True

    table = RouteStage(routes(chat=("json://h/a",)))
    route: Stage[Letter, Letter] = table
    silence: Stage[Letter, Letter] = SilenceStage(SilenceRegistry(lambda: [], lambda v: None), lambda: {})
    flood: Stage[Letter, Letter] = FloodStage(table.routes.values())
    outbox: Stage[Letter, OutboxItem] = OutboxStage(store)
    retry: Stage[OutboxItem, OutboxItem] = RetryStage(table.all_targets(), deliver)
    batch = Batch(0.0)
    rows = outbox.exec(
        batch, flood.exec(batch, silence.exec(batch, route.exec(batch, [letter(crossing()[0])])))
    )
    assert [r.route for r in rows] == ["chat"] and retry.exec(batch, rows) == []


# -- route -----------------------------------------------------------------------------------------


def test_route_stage_resolves_names_to_every_url_and_drops_the_unroutable() -> None:
    """Each known route's URLs become targets (each route once); an unknown name is logged and
    skipped; an event left with no URL is logged and goes no further."""
    stage = RouteStage(routes(chat=("json://h/a", "json://h/b"), pager=("json://SECRET@h/p",)))
    normal, _, liquidation = crossing()
    twice = letter(replace(normal, routes=("chat", "nowhere", "chat")))
    lost = letter(replace(normal, routes=("nowhere",)))
    with capture_logs() as logs:
        out = stage.exec(Batch(0.0), [twice, letter(liquidation), lost])
    assert [x.routes for x in out] == [("chat",), ("pager",)]
    assert [[t.url for t in x.targets] for x in out] == [["json://h/a", "json://h/b"], ["json://SECRET@h/p"]]
    assert [e["event"] for e in logs] == ["notify_route_unknown", "notify_route_unknown", "notify_no_route"]
    assert "SECRET" not in repr(out[1]) and out[1].targets[0].scheme == "json"


def test_route_stage_targets_are_deduplicated_across_a_route_but_listed_per_url() -> None:
    """A URL repeated in a route is one queue (all_targets) but two lines of test-alert (targets)."""
    stage = RouteStage(routes(chat=("json://h/a", "json://h/a"), pager=("json://h/a",)))
    assert len(stage.targets("chat")) == 2
    assert [t.id for t in stage.all_targets()] == [
        Target.of("chat", "json://h/a").id,
        Target.of("pager", "json://h/a").id,
    ]


def test_force_liquidation_reaches_the_liquidation_rungs_routes() -> None:
    """Binance's FORCE_LIQUIDATION becomes an event on the liquidation rung's routes (pager), which
    the route stage resolves to that route's URL, and no silence without --bar holds it back."""
    own = OwnView(level=1.25, firing={"normal": "firing"}, rules=RULES, bars=BARS)
    opinion = SecondOpinion(grace=2.0)
    events = opinion.report("cross:alice", FORCE, 1.05, 100.0, own) + opinion.check("cross:alice", 103.0, own)
    liquidation = [e for e in events if e.rule == LIQUIDATION_RULE and e.kind == "firing"]
    assert liquidation and liquidation[0].routes == ("pager",)
    out = RouteStage(routes(chat=("json://h/c",), pager=("json://h/p",))).exec(
        Batch(0.0), [letter(liquidation[0], protected=True)]
    )
    assert [t.url for t in out[0].targets] == ["json://h/p"]


# -- silence ---------------------------------------------------------------------------------------


def test_silence_stage_never_hides_a_liquidation_unless_its_bar_is_named(store: Store) -> None:
    """A silence on the account holds back normal and margin_call, not the (protected) liquidation;
    one naming --bar liquidation holds that too. Silences persist in the real state file."""
    registry = SilenceRegistry(lambda: store.get_json(STORE_KEY), lambda v: store.put_json(STORE_KEY, v))
    firing = {"cross:alice": [("normal", False), ("margin_call", False), ("liquidation", True)]}
    stage = SilenceStage(registry, lambda: firing)
    registry.add("alice", bar=None, duration=600.0, comment="", firing=firing, units=["cross:alice"])
    letters = [letter(e) for e in crossing()]
    assert [x.event.rule for x in stage.exec(Batch(0.0), letters)] == ["liquidation"]
    registry.add("alice", bar="liquidation", duration=600.0, comment="", firing=firing, units=["cross:alice"])
    assert stage.exec(Batch(0.0), letters) == []
    assert registry.held == {"firing": 5}
    assert len(store.get_json(STORE_KEY)) == 2


# -- flood control ---------------------------------------------------------------------------------


def routed(*events: AlertEvent, table: RouteStage) -> list[Letter]:
    return table.exec(Batch(0.0), [letter(e) for e in events])


def test_flood_stage_holds_past_the_limit_refunds_duplicates_and_summarises() -> None:
    """Limit 2 per window: the third letter is held; a duplicate's slot is given back; release()
    turns the held rows into one summary per URL and counts it against the window."""
    table = RouteStage({"chat": NotifyRoute("chat", ("json://h/a",), max_per_window=2, window=60.0)})
    stage = FloodStage(table.routes.values(), clock=lambda: 10.0)
    events = [crossing(f"cross:{u}")[0] for u in "abc"]
    batch = Batch(10.0)
    out = stage.exec(batch, routed(*events, table=table))
    assert [x.held for x in out] == [frozenset(), frozenset(), frozenset({"chat"})]
    assert batch.admitted == [(events[0].dedupe_key, "chat"), (events[1].dedupe_key, "chat")]
    stage.refund(batch, [])  # neither admitted letter was new: both slots come back
    assert [x.held for x in stage.exec(Batch(10.0), routed(*events[:2], table=table))] == [frozenset()] * 2
    target = table.targets("chat")[0]
    for i, e in enumerate(events):
        stage.hold(
            OutboxItem(
                e.dedupe_key,
                target.id,
                "chat",
                e.unit,
                "firing",
                f"t{i}",
                "b",
                "warning",
                1.0,
                "held",
                id=i + 1,
            )
        )
    assert stage.held("chat") == 3
    ids, summaries = stage.release("chat")
    assert ids == [1, 2, 3] and stage.held("chat") == 0
    assert [s.title for s in summaries] == ["[SUMMARY] 3 more alerts on route chat"]
    assert summaries[0].target == target.id and summaries[0].status == "queued"
    assert stage.release("chat") == ([], [])


async def test_flood_stage_timer_flushes_once_the_window_frees() -> None:
    """Once started, a held row makes the route's timer call flush(route) when a slot frees."""
    table = RouteStage({"chat": NotifyRoute("chat", ("json://h/a",), max_per_window=1, window=0.05)})
    stage = FloodStage(table.routes.values())
    flushed: list[str] = []

    def flush(route: str) -> None:
        flushed.append(route)
        stage.release(route)

    e = crossing()[0]
    stage.exec(Batch(time.time()), routed(e, table=table))
    stage.hold(OutboxItem(e.dedupe_key, "chat#x", "chat", e.unit, "firing", "t", "b", "warning", 1.0, "held"))
    assert flushed == []  # not started: nothing is timed
    stage.start(flush)
    await until(lambda: flushed == ["chat"])
    await stage.stop()


# -- outbox ----------------------------------------------------------------------------------------


def gated(table: RouteStage, *events: AlertEvent) -> list[Letter]:
    return routed(*events, table=table)


def test_outbox_stage_writes_each_letter_per_url_once_with_the_state(tmp_path: Path) -> None:
    """One row per letter × URL, with the alert state in the same transaction; the same batch again
    adds nothing; after reopening the file, recover() returns the open rows."""
    table = RouteStage(routes(chat=("json://h/a", "json://h/b"), pager=("json://h/p",)))
    letters = gated(table, *crossing())
    with Store(tmp_path) as store:
        stage = OutboxStage(store)
        added = stage.exec(Batch(0.0, {"cross:alice": {"x": 1}}), letters)
        assert [(i.route, i.status) for i in added] == [("chat", "queued")] * 4 + [("pager", "queued")]
        assert all(i.id > 0 for i in added)
        assert stage.exec(Batch(0.0), letters) == []
        assert store.load_alert_state() == {"cross:alice": {"x": 1}}
    with Store(tmp_path) as store:
        stage = OutboxStage(store)
        kept = {t.id for t in table.all_targets() if t.route == "chat"}
        with capture_logs() as logs:
            recovered = stage.recover(kept)  # pager's URL left the config
        assert [i.route for i in recovered] == ["chat"] * 4
        assert store.outbox_counts() == {("chat", "queued"): 4, ("pager", "dropped"): 1}
        assert {e["event"] for e in logs} == {"notify_target_gone", "outbox_recovered"}


def test_outbox_stage_held_rows_and_state_only_batches(store: Store) -> None:
    """A letter flood control held is stored as held; a batch with no letter still saves the state."""
    table = RouteStage(routes(chat=("json://h/a",)))
    (only,) = gated(table, crossing()[0])
    stage = OutboxStage(store)
    assert [
        i.status
        for i in stage.exec(
            Batch(0.0),
            [
                Letter(
                    only.event,
                    only.message,
                    routes=only.routes,
                    targets=only.targets,
                    held=frozenset({"chat"}),
                )
            ],
        )
    ] == ["held"]
    assert stage.exec(Batch(0.0, {"cross:bob": {"y": 2}}), []) == []
    assert store.load_alert_state() == {"cross:bob": {"y": 2}}


def test_outbox_stage_without_a_state_file_deduplicates_in_memory(tmp_path: Path) -> None:
    """The file unusable: rows get negative ids (never written), a key remembered is not re-added,
    and the failure is logged."""
    store = Store(tmp_path)
    store.close()
    table = RouteStage(routes(chat=("json://h/a",)))
    stage = OutboxStage(store)
    letters = gated(table, crossing()[0])
    with capture_logs() as logs:
        first = stage.exec(Batch(0.0), letters)
        for item in first:
            stage.remember(item)
        again = stage.exec(Batch(0.0), letters)
        stage.mark_sent(first[0], 1.0)  # no row to mark: nothing raised, nothing logged
    assert [i.id < 0 for i in first] == [True] and again == []
    assert [e["event"] for e in logs] == ["outbox_write_failed", "outbox_write_failed"]


# -- retry -----------------------------------------------------------------------------------------


def row(unit: str, n: int, target: Target) -> OutboxItem:
    return OutboxItem(
        f"{unit}|{n}", target.id, target.route, unit, "firing", f"{unit} {n}", "b", "warning", 1.0
    )


async def test_retry_stage_retries_a_failure_first_then_the_rest_in_order() -> None:
    """deliver() fails once: the row is retried (backoff told attempt 1) before later rows start."""
    target = Target.of("chat", "json://h/a")
    calls: list[str] = []
    backoffs: list[int] = []

    async def deliver(t: Target, item: OutboxItem) -> bool | None:
        calls.append(item.title)
        return not (item.title == "a 1" and item.attempts == 0)

    def backoff(attempt: int) -> float:
        backoffs.append(attempt)
        return 0.0

    stage = RetryStage([target], deliver, backoff=backoff)
    stage.exec(Batch(0.0), [row("a", 1, target), row("a", 2, target), row("b", 1, target)])
    assert stage.queued() == {"chat": 3}
    stage.start()
    await until(lambda: stage.queued() == {"chat": 0})
    await stage.stop(1.0)
    assert calls == ["a 1", "a 1", "a 2", "b 1"] and backoffs == [1]


async def test_retry_stage_runs_sends_in_parallel_but_never_two_of_one_unit() -> None:
    """Limit 2: two units' sends overlap; a unit's second row waits for its first."""
    target = Target.of("chat", "json://h/a")
    release = asyncio.Event()
    in_flight: dict[str, int] = {}
    most: list[int] = []
    order: list[str] = []

    async def deliver(t: Target, item: OutboxItem) -> bool | None:
        in_flight[item.unit] = in_flight.get(item.unit, 0) + 1
        assert in_flight[item.unit] == 1
        most.append(sum(in_flight.values()))
        order.append(item.title)
        await release.wait()
        in_flight[item.unit] -= 1
        return True

    stage = RetryStage([target], deliver, limit=lambda url: 2)
    stage.exec(Batch(0.0), [row("a", 1, target), row("a", 2, target), row("b", 1, target)])
    stage.start()
    await until(lambda: len(order) == 2)
    assert order == ["a 1", "b 1"]
    release.set()
    await until(lambda: stage.queued() == {"chat": 0})
    await stage.stop(1.0)
    assert max(most) == 2 and order == ["a 1", "b 1", "a 2"]


async def test_retry_stage_drain_is_bounded_and_stop_keeps_the_queue() -> None:
    """Against a target that always fails, drain() retries at once despite a long backoff, returns the
    rows left within its bound, and stop() leaves them queued; a dropped row leaves the queue."""
    target = Target.of("chat", "json://h/a")
    tries: list[int] = []

    async def deliver(t: Target, item: OutboxItem) -> bool | None:
        tries.append(item.attempts)
        return None if item.unit == "gone" else False

    stage = RetryStage([target], deliver, backoff=lambda n: 30.0)
    stage.put(row("gone", 1, target))
    stage.put(row("a", 1, target))
    stage.start()
    assert await stage.drain(0.3) == 1
    await stage.stop(1.0)
    assert stage.queued() == {"chat": 1} and tries[:3] == [0, 0, 1]


# -- send ------------------------------------------------------------------------------------------


async def test_send_stage_sorts_outcomes_from_a_real_receiver(receiver: Receiver) -> None:
    """json:// through Apprise: delivered → sent; HTTP 500 → failed; a URL Apprise rejects → dropped."""
    stage = SendStage(AppriseSender(), timeout=2.0)
    good = Target.of("chat", receiver.url)
    sent = await stage.attempt(good, "t", "b", "info")
    assert sent.ok and sent.status == "sent" and sent.raised is None
    assert receiver.titles() == ["t"]
    receiver.failing = True
    failed = await stage.attempt(good, "t", "b", "info")
    assert failed.status == "failed" and failed.error == "not delivered"
    dropped = await stage.attempt(Target.of("chat", "nonsense://x"), "t", "b", "info")
    assert dropped.status == "dropped" and dropped.raised == "PermanentFailure"


async def test_send_stage_timeout_and_a_plugins_exception_are_failures() -> None:
    """A sender still busy past the timeout (and grace) is a failure; a sender's exception keeps only
    its type (its text may hold the URL)."""

    async def slow(url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        await asyncio.sleep(30)
        return True

    late = await SendStage(slow, timeout=0.1, grace=0.1).attempt(
        Target.of("chat", "json://h/x"), "t", "b", "i"
    )
    assert (late.status, late.error, late.raised) == ("failed", "timed out after 0.1 s", "TimeoutError")

    async def broken(url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        raise ValueError(f"cannot reach {url}")

    bad = await SendStage(broken).attempt(Target.of("chat", "json://SECRET@h/x"), "t", "b", "info")
    assert (bad.status, bad.error, bad.raised) == ("failed", "ValueError", "ValueError")


def test_tally_counts_logs_and_survives_a_broken_hook() -> None:
    """Sent, failed and dropped are counted per route; the hooks see a Delivery; a hook that raises
    is logged, not raised."""
    target = Target.of("chat", "json://h/a")
    seen: list[Delivery] = []

    def broken(delivery: Delivery) -> None:
        raise RuntimeError("metrics down")

    tally = Tally(["chat"], on_sent=seen.append, on_failed=broken)
    with capture_logs() as logs:
        tally.record(Attempt(target, "sent", 1.0, 2.0), "k", "cross:a", "firing", 0.5, 1)
        tally.record(Attempt(target, "failed", 1.0, 2.0, "not delivered"), "k", "cross:a", "firing", 0.5, 1)
        tally.record(Attempt(target, "dropped", 1.0, 2.0, "rejected"), "k", "cross:a", "firing", 0.5, 1)
    stats = tally.stats["chat"]
    assert (stats.sent, stats.failed, stats.dropped) == (1, 1, 1)
    assert seen[0].latency == 1.5 and seen[0].ok
    assert [e["event"] for e in logs] == ["notify_sent", "notify_callback_failed", "notify_dropped"]


# -- the compositions ------------------------------------------------------------------------------


async def test_probe_routes_uses_no_state_file(tmp_path: Path, receiver: Receiver) -> None:
    """test-alert's path (route + send stages) reports each URL in config order, with no store at all,
    beside a Store holding the state file's lock."""
    secret = receiver.url.replace("json://", "json://alice:hunter2secret@").replace("/hook", "/nope")
    with Store(tmp_path):
        found = [
            (name, i, o.ok, o.masked, o.reason)
            async for name, i, o in probe_routes(
                routes(hook=(receiver.url,), broken=(secret,)), Message("[TEST] t", "b", "info"), timeout=2.0
            )
        ]
    assert [(n, i, ok) for n, i, ok, _, _ in found] == [("hook", 1, True), ("broken", 1, False)]
    assert "alice:****@" in found[1][3] and "hunter2secret" not in repr(found)
    assert receiver.titles() == ["[TEST] t"]


async def test_dispatcher_with_the_silence_stage(store: Store, receiver: Receiver) -> None:
    """Composed with a silence stage, the Dispatcher delivers only the letters no silence holds back:
    the protected liquidation goes out, the silenced rungs are neither stored nor sent; a notice
    (enqueue, not a letter) on the same account skips the silence stage."""
    registry = SilenceRegistry(lambda: [], lambda v: None)
    firing = {"cross:alice": [("normal", False)]}
    registry.add("alice", bar=None, duration=600.0, comment="", firing=firing, units=["cross:alice"])
    d = Dispatcher(
        routes(chat=(receiver.url,), pager=(receiver.url,)), store, timeout=2.0,
        silence=SilenceStage(registry, lambda: firing),
    )  # fmt: skip
    await d.start()
    try:
        events = crossing()
        await d.enqueue_letters([letter(e) for e in events])
        await receiver.wait_for(lambda m: len(m) == 1)
        notice = replace(events[0], rule="key_refused", dedupe_key="notice|alice|key_refused|1")
        await d.enqueue(notice, "alice: API key refused", "b", notify_type="failure")
        await receiver.wait_for(lambda m: len(m) == 2)
        await d.drain(2.0)
    finally:
        await d.stop()
    assert receiver.titles() == ["cross:alice liquidation", "alice: API key refused"]
    assert store.outbox_counts() == {("pager", "sent"): 1, ("chat", "sent"): 1}
