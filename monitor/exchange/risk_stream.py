"""The Risk Data Stream of one cross account on a connection of its own (``/ws/<listenKey>``).

:class:`RiskStream` is a :class:`~monitor.exchange.risk_group.RiskGroup` of one member, named
``risk:<account>``: the form Binance documents for one key, and what the daemon falls back to for
every account when a server does not confirm several accounts' keys on one connection
(``monitor/app/risk_groups.py``). Its revoked key ends ``run()`` with ``KeyRejected`` (a group
takes that member off instead). The stream itself (keys, keepalives, routing, states) is
``monitor/exchange/risk_group.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from monitor.exchange.rest import BinanceRest
from monitor.exchange.risk_group import Member, RiskGroup
from monitor.exchange.streams import ConnectFactory, probed_connect
from monitor.exchange.supervisor import Backoff, StateHook
from monitor.exchange.userdata import PONG_TIMEOUT, EventHook, ReconcileHook


class RiskStream(RiskGroup):
    """The Risk Data Stream of one cross margin account on a connection of its own (``/ws/<key>``):
    a :class:`RiskGroup` of one member, named ``risk:<account>``, whose revoked key ends it
    (``run`` raises ``KeyRejected``)."""

    def __init__(
        self,
        risk_stream_url: str,
        rest: BinanceRest,
        account: str,
        on_event: EventHook,
        *,
        on_reconnected: ReconcileHook | None = None,
        on_state: StateHook | None = None,
        keepalive: float = 1800.0,
        backoff: Backoff | None = None,
        silence: float = 60.0,
        probe_interval: float | None = None,
        pong_timeout: float = PONG_TIMEOUT,
        connect: ConnectFactory = probed_connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            risk_stream_url, f"risk:{account}", keepalive=keepalive, backoff=backoff, silence=silence,
            probe_interval=probe_interval, pong_timeout=pong_timeout, connect=connect, clock=clock,
        )  # fmt: skip
        self.account = account
        self.member = Member(account, rest, on_event, on_reconnected=on_reconnected, on_state=on_state)
        self.add(self.member)
