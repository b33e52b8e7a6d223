"""Notices left in the outbox by an earlier run that no longer hold, dropped before delivery starts.

A notice ("key of demo refused", "demo is NOT being watched") says something about an account at
the time it was queued. When the account loads in this run, an undelivered notice from an earlier
run would tell the trader the opposite of the truth, retry against a dead route and hold up
shutdown: it is marked dropped in the outbox, with the reason, and logged. A notice that still
holds this run (a risky key) is queued afresh by this run's load.
"""

from __future__ import annotations

from collections.abc import Collection

import structlog

from monitor.store import OutboxItem, Store

log = structlog.get_logger(__name__)

NOTICE_PREFIX = "notice|"


def notice_account(item: OutboxItem) -> str | None:
    """The account a notice row is about (its dedupe key is ``notice|ACCOUNT|RULE|TIME``), else None.

    >>> notice_account(OutboxItem("notice|demo|account_disabled|1700000000", "r#1", "r", "cross:demo",
    ...                           "firing", "t", "b", "failure", 0.0))
    'demo'
    """
    if not item.dedupe_key.startswith(NOTICE_PREFIX):
        return None
    return item.dedupe_key.split("|")[1]


def expire_notices(store: Store, loaded: Collection[str]) -> int:
    """Drop every open notice row of an earlier run about an account in ``loaded``; returns how many.

    Call before the dispatcher starts: every notice row then open was queued by an earlier run.
    """
    dropped = 0
    for item in store.open_outbox():
        account = notice_account(item)
        if account is None or account not in loaded:
            continue
        reason = f"notice from an earlier run no longer holds: account {account} loaded in this run"
        store.mark_dropped(item.id, reason)
        log.info("notice_expired", account=account, route=item.route, title=item.title, reason=reason)
        dropped += 1
    return dropped
