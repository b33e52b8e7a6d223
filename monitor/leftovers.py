"""Notices left in the outbox by an earlier run that no longer hold, dropped before delivery starts.

A notice ("key of demo refused", "demo is NOT being watched") says something about an account at
the time it was queued. When the account loads in this run, an undelivered notice from an earlier
run would tell the trader the opposite of the truth, retry against a dead route and hold up
shutdown: it is marked dropped in the outbox, with the reason, and logged. A notice that still
holds this run (a risky key) is queued afresh by this run's load.

The state file's own notices (``failing``, ``works again``: :mod:`monitor.app.state_health`) of an
earlier run are dropped whatever they say: this run opened and wrote the file to start, and its own
writes say anew if it fails again. A stale "failing" resent after a restart would be false.
"""

from __future__ import annotations

from collections.abc import Collection

import structlog

from monitor.store import OutboxItem, Store

log = structlog.get_logger(__name__)

NOTICE_PREFIX = "notice|"
STATE_FILE_RULE_PREFIX = "state_file_"  # the rules of the state file's notices (never an account's)


def notice_account(item: OutboxItem) -> str | None:
    """The account a notice row is about (its dedupe key is ``notice|ACCOUNT|RULE|TIME``), else None.

    >>> notice_account(OutboxItem("notice|demo|account_disabled|1700000000", "r#1", "r", "cross:demo",
    ...                           "firing", "t", "b", "failure", 0.0))
    'demo'
    """
    if not item.dedupe_key.startswith(NOTICE_PREFIX):
        return None
    return item.dedupe_key.split("|")[1]


def notice_rule(item: OutboxItem) -> str | None:
    """The rule of a notice row (``notice|ACCOUNT|RULE|TIME``), else None.

    >>> notice_rule(OutboxItem("notice|margin-monitor|state_file_failing|1700000000", "r#1", "r",
    ...                        "cross:margin-monitor", "firing", "t", "b", "failure", 0.0))
    'state_file_failing'
    """
    parts = item.dedupe_key.split("|")
    return parts[2] if item.dedupe_key.startswith(NOTICE_PREFIX) and len(parts) > 2 else None


def _stale_reason(item: OutboxItem, loaded: Collection[str]) -> str | None:
    rule = notice_rule(item)
    if rule is not None and rule.startswith(STATE_FILE_RULE_PREFIX):
        return "state file notice from an earlier run no longer holds: this start opened and wrote the file"
    account = notice_account(item)
    if account is None or account not in loaded:
        return None
    return f"notice from an earlier run no longer holds: account {account} loaded in this run"


def expire_notices(store: Store, loaded: Collection[str]) -> int:
    """Drop every open notice row of an earlier run about an account in ``loaded``, and every state
    file notice of an earlier run; returns how many.

    Call before the dispatcher starts: every notice row then open was queued by an earlier run.
    """
    dropped = 0
    for item in store.open_outbox():
        reason = _stale_reason(item, loaded)
        if reason is None:
            continue
        store.mark_dropped(item.id, reason)
        log.info(
            "notice_expired", account=notice_account(item), route=item.route, title=item.title, reason=reason
        )
        dropped += 1
    return dropped
