"""User-data and Risk Data Stream event payloads → typed events, all or nothing.

``user_events`` reads the ``event`` object of a WebSocket API user-data frame
(``outboundAccountPosition``, ``balanceUpdate``; the risk events too, should Binance route them
there); ``risk_events`` reads a Risk Data Stream payload (``USER_LIABILITY_CHANGE``,
``MARGIN_LEVEL_STATUS_CHANGE``). Order events and unknown kinds yield nothing. A malformed event
raises ``ExchangeDataError`` (one line); the stream logs and skips it.
"""

from __future__ import annotations

from typing import Any

from monitor.exchange.events import BalanceDelta, BalanceUpdate, ExchangeEvent, LiabilityChange, MarginStatus
from monitor.exchange.parse import decimal, fail, field, name, obj

IGNORED = frozenset({"executionReport", "listStatus", "externalLockUpdate", "listenKeyExpired"})


def _event_time(event: dict[str, Any]) -> int:
    value = event.get("E", 0)
    return value if type(value) is int and value >= 0 else 0


def _status(value: Any, where: str) -> str:
    if type(value) is not str or not value.replace("_", "").isalnum():
        raise fail(where, "a status name", value)
    return value


def user_events(account: str, unit_scope: str | None, payload: Any) -> list[ExchangeEvent]:
    """The typed events in one user-data ``event`` object (``[]`` for kinds we do not use)."""
    event = obj(payload, "user event")
    kind = event.get("e")
    when = _event_time(event)
    if kind == "outboundAccountPosition":
        where = "outboundAccountPosition"
        rows = field(event, "B", where)
        if type(rows) is not list:
            raise fail(f"{where}.B", "an array", rows)
        updates: list[ExchangeEvent] = []
        for i, row in enumerate(rows):
            at = f"{where}.B[{i}]"
            row = obj(row, at)
            updates.append(
                BalanceUpdate(
                    account=account,
                    unit_scope=unit_scope,
                    asset=name(field(row, "a", at), f"{at}.a"),
                    free=decimal(field(row, "f", at), f"{at}.f"),
                    locked=decimal(field(row, "l", at), f"{at}.l"),
                    event_time=when,
                )
            )
        return updates
    if kind == "balanceUpdate":
        where = "balanceUpdate"
        return [
            BalanceDelta(
                account=account,
                unit_scope=unit_scope,
                asset=name(field(event, "a", where), f"{where}.a"),
                delta=decimal(field(event, "d", where), f"{where}.d", signed=True),
                event_time=when,
            )
        ]
    if kind in ("USER_LIABILITY_CHANGE", "MARGIN_LEVEL_STATUS_CHANGE"):
        return risk_events(account, event)
    if type(kind) is not str:
        raise fail("user event.e", "an event type", kind)
    return []


def risk_events(account: str, payload: Any) -> list[ExchangeEvent]:
    """The typed event in one Risk Data Stream payload (``[]`` for other kinds)."""
    event = obj(payload, "risk event")
    kind = event.get("e")
    when = _event_time(event)
    if kind == "USER_LIABILITY_CHANGE":
        where = kind
        update_type = event.get("t", "")
        return [
            LiabilityChange(
                account=account,
                asset=name(field(event, "a", where), f"{where}.a"),
                principal=decimal(field(event, "p", where), f"{where}.p", signed=True),
                interest=decimal(field(event, "i", where), f"{where}.i", signed=True),
                update_type=_status(update_type, f"{where}.t") if update_type else "",
                event_time=when,
            )
        ]
    if kind == "MARGIN_LEVEL_STATUS_CHANGE":
        where = kind
        return [
            MarginStatus(
                account=account,
                level=decimal(field(event, "l", where), f"{where}.l"),
                status=_status(field(event, "s", where), f"{where}.s"),
                event_time=when,
            )
        ]
    if type(kind) is not str:
        raise fail("risk event.e", "an event type", kind)
    return []
