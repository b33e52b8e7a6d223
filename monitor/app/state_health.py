"""The state file failing mid-run, told to the trader on every route, once per streak.

When a write to the state file fails (disk full, read-only remount, handle gone) the daemon goes on
alerting from memory (:mod:`monitor.notify.outbox`), but what was sent and the alert states are no
longer saved: a restart could resend or lose alerts. :class:`StateFileHealth` listens to the store's
write path (:meth:`monitor.store.Store.on_write_health`) and puts a notice on the list the service
drains to every route (as a refused key's: delivered from memory when the file cannot hold it):

- at the first failed write of a streak, "margin-monitor: state file failing, alerts not saved" with
  the error's one line (it names the configured state file, nothing else of the machine);
- "margin-monitor: state file works again" only once writes have succeeded for ``hold`` seconds
  (:data:`RECOVERY_HOLD`) with no failure between: a failure meanwhile cancels the wait and the
  streak goes on, unsaid, so a flapping disk pages once, not on every flap.

While writes fail, a probe write (:meth:`monitor.store.Store.probe`: room for a page, nothing kept) is
tried every ``min(PROBE_EVERY, hold)`` seconds, so a file that works again is found even when nothing
else writes. Time is passed
in as ``call_later`` (the running loop's by default): tests drive it on a clock of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog

from monitor.leftovers import STATE_FILE_RULE_PREFIX
from monitor.store import StateError, Store
from monitor.watch.notices import Notice

log = structlog.get_logger(__name__)

RECOVERY_HOLD = 60.0  # seconds of successful writes before "works again" is said
PROBE_EVERY = 5.0  # seconds between probe writes while the file fails
FAILING_RULE = STATE_FILE_RULE_PREFIX + "failing"
WORKS_RULE = STATE_FILE_RULE_PREFIX + "works_again"
FAILING_TITLE = "margin-monitor: state file failing, alerts not saved"
WORKS_TITLE = "margin-monitor: state file works again"


class Timer(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Timer]


class StateFileHealth:
    """Notices for the state file's write health; ``failing`` is what ``/metrics`` shows (1 from the
    first failure until "works again" was said)."""

    def __init__(
        self,
        store: Store,
        notices: list[Notice],
        *,
        hold: float = RECOVERY_HOLD,
        call_later: CallLater | None = None,
    ) -> None:
        self._store = store
        self._notices = notices
        self.hold = hold
        self._call_later: CallLater = call_later or asyncio.get_running_loop().call_later
        self.failing = False  # told "failing", not yet "works again"
        self.reason: str | None = None  # the error that began the streak, while failing
        self._streak_failures = 0  # store.write_failures when the streak began
        self._recovery: Timer | None = None  # "works again" after the hold
        self._probe: Timer | None = None  # the next probe write while writes fail
        store.on_write_health(self._changed)

    @property
    def write_failures(self) -> int:
        return self._store.write_failures

    def close(self) -> None:
        """Stop the timers (at shutdown): nothing is said after the store closes."""
        for timer in (self._recovery, self._probe):
            if timer is not None:
                timer.cancel()
        self._recovery = self._probe = None

    def _changed(self, error: str | None) -> None:
        if error is None:
            self._writes_work()
        else:
            self._writes_fail(error)

    def _writes_fail(self, error: str) -> None:
        if self._recovery is not None:  # failed again within the hold: the same streak, unsaid
            self._recovery.cancel()
            self._recovery = None
            log.warning("state_file_failing_again", error=error)
        if not self.failing:
            self.failing = True
            self.reason = error
            self._streak_failures = self._store.write_failures - 1
            log.error("state_file_failing", error=error)
            self._tell(
                FAILING_RULE,
                FAILING_TITLE,
                f"{error}. Alerts are still watched and sent, from memory, but neither they nor the "
                "alert states are saved: a restart now may resend or lose alerts. Said once; "
                f"'{WORKS_TITLE}' follows once it has been written without error for {self.hold:g} s.",
            )
        self._schedule_probe()

    def _writes_work(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        if self.failing and self._recovery is None:
            self._recovery = self._call_later(self.hold, self._recovered)

    def _recovered(self) -> None:
        self._recovery = None
        if not self.failing or self._store.write_error is not None:
            return
        self.failing = False
        self.reason = None
        failed = self._store.write_failures - self._streak_failures
        log.info("state_file_recovered", failed_writes=failed, hold=self.hold)
        self._tell(
            WORKS_RULE,
            WORKS_TITLE,
            f"The state file {self._store.path.name} has been written without error for {self.hold:g} s: "
            f"alerts and alert states are saved again ({failed} writes failed meanwhile).",
        )

    def _schedule_probe(self) -> None:
        if self._probe is None:
            self._probe = self._call_later(min(PROBE_EVERY, self.hold), self._probe_now)

    def _probe_now(self) -> None:
        """One small write while the file fails: its success starts the recovery hold."""
        self._probe = None
        try:
            self._store.probe()
        except StateError:
            self._schedule_probe()  # already failing: the store told nothing new

    def _tell(self, rule: str, title: str, body: str) -> None:
        self._notices.append(Notice("margin-monitor", rule, title, body))
