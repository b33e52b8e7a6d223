"""The Binance exchange layer in one import: REST snapshots, user-data and risk streams.

Implementation lives in small modules: ``rest`` (client, retries), ``parse`` (typed REST bodies),
``frames`` (typed stream events), ``userdata`` (listen-token user-data stream), ``risk`` (Risk Data
Stream), ``streams`` (market data) and ``supervisor`` (the reconnect shape they share).
"""

from __future__ import annotations

from monitor.exchange.errors import (
    ExchangeDataError,
    ExchangeError,
    ExchangeRequestError,
    ExchangeUnavailable,
    FatalError,
    KeyRejected,
    RateLimited,
)
from monitor.exchange.events import (
    BalanceDelta,
    BalanceUpdate,
    ExchangeEvent,
    LiabilityChange,
    MarginStatus,
    StreamState,
)
from monitor.exchange.parse import CrossAccount, IsolatedPair, KeyPermissions, ListenToken
from monitor.exchange.rest import (
    DEFAULT_REST_URL,
    DEFAULT_RISK_STREAM_URL,
    DEFAULT_STREAM_URL,
    DEFAULT_WS_API_URL,
    BinanceRest,
    RetryPolicy,
    make_client,
)
from monitor.exchange.risk_group import Member, RiskGroup
from monitor.exchange.risk_stream import RiskStream
from monitor.exchange.streams import MarketStream
from monitor.exchange.supervisor import Backoff, Supervisor
from monitor.exchange.userdata import UserDataStream, UserSubscription

__all__ = [
    "DEFAULT_REST_URL",
    "DEFAULT_RISK_STREAM_URL",
    "DEFAULT_STREAM_URL",
    "DEFAULT_WS_API_URL",
    "Backoff",
    "BalanceDelta",
    "BalanceUpdate",
    "BinanceRest",
    "CrossAccount",
    "ExchangeDataError",
    "ExchangeError",
    "ExchangeEvent",
    "ExchangeRequestError",
    "ExchangeUnavailable",
    "FatalError",
    "IsolatedPair",
    "KeyPermissions",
    "KeyRejected",
    "LiabilityChange",
    "ListenToken",
    "MarginStatus",
    "MarketStream",
    "Member",
    "RateLimited",
    "RetryPolicy",
    "RiskGroup",
    "RiskStream",
    "StreamState",
    "Supervisor",
    "UserDataStream",
    "UserSubscription",
    "make_client",
]
