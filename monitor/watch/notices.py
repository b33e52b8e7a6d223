"""What one account tells the trader about itself (not a level): unreachable, refused, disabled, back.

A notice goes onto the list the service drains to every route (or to the blind routes, for an
account not watched now). Each problem is said once per kind until the account is watched again,
so a flapping network or a retried load does not page on every attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from monitor.alerts.policy import AlertEvent
from monitor.exchange.diagnose import Diagnosis
from monitor.risk.report import unit_id

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something about an account (not a level) the trader must hear: a rejected or risky key."""

    account: str
    rule: str
    title: str
    body: str
    blind: bool = False  # to the blind routes (an account not watched now), else to every route

    def event(self, routes: tuple[str, ...], now: float) -> AlertEvent:
        return AlertEvent(
            kind="firing",
            unit=unit_id(self.account),
            rule=self.rule,
            bar=None,
            level=None,
            distance=None,
            at=now,
            since=now,
            routes=routes,
            dedupe_key=f"notice|{self.account}|{self.rule}|{int(now * 1000)}",
            crossing=0,
            severity=0,
            detail=self.body,
        )


class AccountNotices:
    """The notices of account ``name`` onto ``sink``, and why it is not watched now (``problem``)."""

    def __init__(self, name: str, sink: list[Notice]) -> None:
        self.name = name
        self.sink = sink
        self.problem: Diagnosis | None = None  # why the account is not watched now (retried)
        self._told: set[str] = set()  # problem kinds told since the account was last watched
        self._risky_told = False

    def unreachable(self, problem: Diagnosis) -> None:
        """The account cannot be read now: say why once per kind of problem (log and blind routes)."""
        self.problem = problem
        if problem.kind in self._told:  # once per kind: a flapping network does not page every retry
            log.info("account_still_unreachable", account=self.name, kind=problem.kind)
            return
        self._told.add(problem.kind)
        log.error("account_unreachable", account=self.name, kind=problem.kind, reason=problem.reason)
        self._tell(
            "account_unreachable",
            f"margin-monitor: {self.name} is NOT being watched",
            f"Account {self.name} cannot be read from the exchange: {problem.reason}. "
            "It is retried with backoff and watched as soon as it can be read; no restart is needed.",
            blind=True,
        )

    def watched(self) -> None:
        """The account is loaded: say it is watched again if it was said not to be; forget the problem."""
        if self._told:
            self._tell(
                "account_loaded",
                f"margin-monitor: {self.name} is watched again",
                f"Account {self.name} could be loaded and is being watched (it was not: "
                f"{self.problem.reason if self.problem else 'unknown'}).",
                blind=True,
            )
        self.problem = None
        self._told.clear()

    def disabled(self, kind: str, reason: str) -> None:
        """The account stopped being watched mid-run (``kind`` as its retries will diagnose it)."""
        self.problem = Diagnosis(kind, reason)
        self._told.add(kind)
        log.error("account_disabled", account=self.name, reason=reason)
        self._tell(
            "account_disabled",
            f"margin-monitor: {self.name} is NOT being watched",
            f"Account {self.name}: {reason}. The other accounts are still watched. This one is retried "
            "with backoff and watched again as soon as its key works (fix the key or its IP whitelist "
            "on Binance; no restart is needed).",
            blind=True,
        )

    def key_refused(self, powers: str) -> None:
        """The key can ``powers`` (trade, withdraw, transfer) and the account does not allow that."""
        log.error("account_key_refused", account=self.name, permissions=powers)
        self._tell(
            "key_refused",
            f"margin-monitor: key of {self.name} refused",
            f"The API key of account {self.name} can {powers}. A monitor needs only a read-only key, so "
            "this account is NOT being watched. Make a read-only key (README: 'A read-only key') or "
            "set allow_trading_keys: true for this account.",
        )

    def key_risky(self, powers: str) -> None:
        """The key can ``powers`` and the account allows it: said once, when first loaded."""
        if self._risky_told:
            return
        self._risky_told = True
        log.warning("account_key_not_read_only", account=self.name, permissions=powers)
        self._tell(
            "key_risky",
            f"margin-monitor: key of {self.name} can {powers}",
            f"The API key of account {self.name} can {powers}; allow_trading_keys is set, so it is used. "
            "A read-only key is safer.",
        )

    def _tell(self, rule: str, title: str, body: str, *, blind: bool = False) -> None:
        self.sink.append(Notice(self.name, rule, title, body, blind))
