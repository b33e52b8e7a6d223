"""The state file failing mid-run is told once per streak, and "works again" only after the hold.

A real SQLite state file each time: made read-only (``PRAGMA query_only``), filled to disk-full
(``PRAGMA max_page_count``) or its handle closed. Time is a virtual clock the test moves
(:class:`VirtualTime`), passed in as ``call_later``: no test waits for real seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client.parser import text_string_to_metric_families
from virtual_time import VirtualTime

from monitor.app.state_health import (
    FAILING_RULE,
    FAILING_TITLE,
    PROBE_EVERY,
    WORKS_RULE,
    WORKS_TITLE,
    StateFileHealth,
)
from monitor.leftovers import expire_notices
from monitor.ops.metrics import Metrics
from monitor.store import OutboxItem, StateError, Store
from monitor.watch.notices import Notice

HOLD = 10.0


class Said(list[Notice]):
    """The notices list, each notice noted with the virtual time it was put on."""

    def __init__(self, time: VirtualTime) -> None:
        super().__init__()
        self.time = time
        self.log: list[tuple[float, str]] = []
        self.transitions: list[tuple[float, bool]] = []  # the store's, as a test records them
        self.after: list[int] = []  # per notice: how many transitions came before it

    def append(self, notice: Notice) -> None:
        self.log.append((self.time.now, notice.rule))
        self.after.append(len(self.transitions))
        super().append(notice)


def watched(store: Store, hold: float = HOLD) -> tuple[VirtualTime, Said, StateFileHealth]:
    time = VirtualTime()
    said = Said(time)
    health = StateFileHealth(store, said, hold=hold, call_later=time.call_later)
    return time, said, health


def expected_notices(
    transitions: list[tuple[float, bool]], now: float, hold: float
) -> list[tuple[float, str]]:
    """The specification, from the store's transitions (time, failing): "failing" at the first failure
    of a streak; "works again" at ok + hold when no failure came at or after ok and before ok + hold."""
    out: list[tuple[float, str]] = []
    streak, ok_at = False, None
    for at, failing in [*transitions, (now, None)]:
        if ok_at is not None and at >= ok_at + hold:
            out.append((ok_at + hold, WORKS_RULE))
            streak, ok_at = False, None
        if failing is None:
            break
        if failing:
            if not streak:
                out.append((at, FAILING_RULE))
            streak, ok_at = True, None
        elif streak:
            ok_at = at
    return out


class StateFileStreaks(RuleBasedStateMachine):
    """Writes that fail or work on a real state file (read-only or not), time moving between them."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.store = Store(Path(self.dir.name))
        self.time, self.said, self.health = watched(self.store)
        self.transitions = self.said.transitions
        self.store.on_write_health(lambda error: self.transitions.append((self.time.now, error is not None)))
        self.read_only = False
        self.failed_writes = 0
        self.n = 0

    def teardown(self) -> None:
        self.health.close()
        self.store.close()
        self.dir.cleanup()

    def set_read_only(self, read_only: bool) -> None:
        assert self.store._conn is not None
        self.store._conn.execute(f"PRAGMA query_only = {'ON' if read_only else 'OFF'}")
        self.read_only = read_only

    @rule(read_only=st.booleans())
    def write(self, read_only: bool) -> None:
        """One write, the file read-only or writable (as it stays until the next write)."""
        self.set_read_only(read_only)
        self.n += 1
        try:
            self.store.put_json("k", self.n)
        except StateError as exc:
            assert read_only and "is not writable" in str(exc)
            assert self.store.write_error == str(exc)
            self.failed_writes += 1
        else:
            assert not read_only and self.store.write_error is None

    @rule(seconds=st.sampled_from([0.0, 0.5, 3.0, PROBE_EVERY, HOLD - 0.01, HOLD, 2.5 * HOLD]))
    def advance(self, seconds: float) -> None:
        self.time.advance(seconds)

    @precondition(lambda self: self.health.failing)
    @rule()
    def disk_fixed_for_good(self) -> None:
        """Writable again, nothing else writes: the probe finds it, "works again" after the hold."""
        self.set_read_only(False)
        self.time.advance(PROBE_EVERY + HOLD)
        assert not self.health.failing and self.said.log[-1][1] == WORKS_RULE

    @invariant()
    def told_as_specified(self) -> None:
        assert self.said.log == expected_notices(self.transitions, self.time.now, HOLD)
        kinds = [kind for _, kind in self.said.log]
        assert kinds == [FAILING_RULE, WORKS_RULE] * (len(kinds) // 2) + [FAILING_RULE] * (len(kinds) % 2)
        assert self.health.failing == (kinds[-1:] == [FAILING_RULE])
        assert self.store.write_failures >= self.failed_writes

    @invariant()
    def works_again_only_after_a_hold_without_failure(self) -> None:
        for (at, kind), seen in zip(self.said.log, self.said.after, strict=True):
            if kind == WORKS_RULE:
                before = self.transitions[:seen]
                last_failure = max(i for i, (_, failing) in enumerate(before) if failing)
                oks = [t for t, failing in before[last_failure:] if not failing]
                assert oks and at >= oks[0] + HOLD


TestStateFileStreaks = StateFileStreaks.TestCase
TestStateFileStreaks.settings = settings(max_examples=200, stateful_step_count=25, deadline=None)


def test_expected_notices_examples() -> None:
    """The specification on hand-made timelines: one notice per streak, a flap within the hold unsaid."""
    flap = [(0.0, True), (1.0, False), (5.0, True), (6.0, False)]
    assert expected_notices(flap, 15.9, HOLD) == [(0.0, FAILING_RULE)]
    assert expected_notices(flap, 16.0, HOLD) == [(0.0, FAILING_RULE), (16.0, WORKS_RULE)]
    again = [*flap, (30.0, True)]
    assert expected_notices(again, 30.0, HOLD) == [
        (0.0, FAILING_RULE),
        (16.0, WORKS_RULE),
        (30.0, FAILING_RULE),
    ]


def test_disk_full_is_told_once_with_its_reason_then_works_again(tmp_path: Path) -> None:
    """A real file filled to its page limit ("disk full"): one notice with the reason however many
    writes fail, the count on /metrics, and "works again" only a hold after space came back."""
    store = Store(tmp_path)
    time, said, health = watched(store)
    metrics = Metrics(process_metrics=False)
    metrics.state_file_source(health)
    assert store._conn is not None
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StateError, match="disk is full"):
        for n in range(1000):
            store.put_json(f"key{n}", "x" * 500)
    for n in range(5):
        with pytest.raises(StateError):
            store.put_json(f"more{n}", "x" * 2000)
    assert [n.title for n in said] == [FAILING_TITLE]
    body = said[0].body
    assert "disk is full" in body and str(store.path) in body and "\n" not in body
    assert store.write_failures == 6 and health.failing
    assert scraped(metrics) == {"margin_monitor_state_file_failing": 1.0,
                                "margin_monitor_state_file_write_failures_total": 6.0}  # fmt: skip
    time.advance(HOLD * 3)  # the probe keeps failing: still one notice, still failing
    assert len(said) == 1 and health.failing and store.write_failures > 6
    store._conn.execute(f"PRAGMA max_page_count = {pages * 100}")
    time.advance(PROBE_EVERY)  # the probe works: the hold starts
    assert health.failing and store.write_error is None
    time.advance(HOLD)
    assert [n.title for n in said] == [FAILING_TITLE, WORKS_TITLE] and not health.failing
    assert scraped(metrics)["margin_monitor_state_file_failing"] == 0.0
    health.close()
    store.close()


def test_closed_handle_is_told_and_never_said_to_work(tmp_path: Path) -> None:
    """The SQLite handle gone: told once; the probes go on failing, nothing more is said; close()
    stops them."""
    store = Store(tmp_path)
    time, said, health = watched(store)
    assert store._conn is not None
    store._conn.close()
    with pytest.raises(StateError, match="closed database"):
        store.save_alert_state({"cross:demo": {}})
    time.advance(HOLD * 10)
    assert [n.rule for n in said] == [FAILING_RULE] and health.failing
    assert store.write_failures > 1  # the probes
    assert said[0].account == "margin-monitor" and not said[0].blind  # to every route
    health.close()
    assert time.pending() == 0
    store.close()


def test_state_file_notices_of_an_earlier_run_expire(tmp_path: Path) -> None:
    """An earlier run's open "failing" and "works again" rows are dropped at start; an account's
    notice about an account not loaded, and the alert history lost notice, stay."""

    def row(account: str, rule: str) -> OutboxItem:
        return OutboxItem(f"notice|{account}|{rule}|1700000000000", "r#1", "r", f"cross:{account}",
                          "firing", "t", "b", "failure", 1.0)  # fmt: skip

    with Store(tmp_path) as store:
        store.add_outbox([row("margin-monitor", FAILING_RULE), row("margin-monitor", WORKS_RULE),
                          row("margin-monitor", "state_lost"), row("other", "account_disabled")])  # fmt: skip
        assert expire_notices(store, {"demo"}) == 2
        assert sorted(i.dedupe_key.split("|")[2] for i in store.open_outbox()) == [
            "account_disabled",
            "state_lost",
        ]


def scraped(metrics: Metrics) -> dict[str, Any]:
    body = metrics.render()[0].decode()
    return {
        s.name: s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if s.name.startswith("margin_monitor_state_file")
    }
