"""Binance's request checks: API key, HMAC signature, timestamp window and request weights.

- Signature: HMAC-SHA256 (lowercase hex) of the query string concatenated with the body, both
  exactly as sent on the wire, without the ``signature`` parameter (Binance's rule since
  2026-01-15: the payload is signed percent-encoded).
- Timestamp: accepted when ``timestamp < now + 1000`` and ``now - timestamp <= recvWindow``
  (default 5000 ms, at most 60000).
- Weights: ``/api`` shares one per-IP budget per minute (``X-MBX-USED-WEIGHT-1M``); past it, 429
  with ``Retry-After``, and 418 (IP ban, ``Retry-After`` = the ban) for a client that keeps going
  before the 429 has expired. ``/sapi`` endpoints each have their own per-IP or per-account budget
  (``X-SAPI-USED-IP-WEIGHT-1M`` / ``X-SAPI-USED-UID-WEIGHT-1M``) and answer 429 only.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from monitor.sim.scenario import Limits
from monitor.sim.state import AccountState

MAX_RECV_WINDOW = 60_000
DEFAULT_RECV_WINDOW = 5_000


class ApiError(Exception):
    """A Binance error answer: HTTP status, ``{"code", "msg"}`` body, extra headers."""

    def __init__(self, status: int, code: int, msg: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = dict(headers or {})


def bad_key() -> ApiError:
    """-2015: unknown, revoked or unpermitted key."""
    return ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")


def missing(name: str) -> ApiError:
    """-1102: a mandatory parameter is missing."""
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def sign(secret: str, payload: str) -> str:
    """Binance's HMAC-SHA256 signature of ``payload`` (lowercase hex)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _strip_signature(raw: str) -> str:
    return "&".join(part for part in raw.split("&") if part and not part.startswith("signature="))


def check_key(accounts: Mapping[str, AccountState], api_key: str | None) -> AccountState:
    """The account owning the ``X-MBX-APIKEY`` header; -2014 if absent, -2015 if unknown or revoked."""
    if not api_key:
        raise ApiError(401, -2014, "API-key format invalid.")
    account = accounts.get(api_key)
    if account is None or account.revoked:
        raise bad_key()
    return account


def check_signed(
    account: AccountState, params: Mapping[str, str], raw_query: str, raw_body: str, now_ms: int
) -> None:
    """Verify ``timestamp``/``recvWindow`` and the signature of a signed request."""
    for name in ("timestamp", "signature"):
        if not params.get(name):
            raise missing(name)
    try:
        timestamp = int(params["timestamp"])
        window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW))
    except ValueError:
        raise missing("timestamp") from None
    if window > MAX_RECV_WINDOW or window <= 0:
        raise ApiError(400, -1131, f"recvWindow must be less than {MAX_RECV_WINDOW}.")
    if timestamp > 10**14:  # microseconds
        timestamp //= 1000
    expected = sign(
        account.spec.api_secret.get_secret_value(), _strip_signature(raw_query) + _strip_signature(raw_body)
    )
    if not hmac.compare_digest(expected, params["signature"].lower()):
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    if timestamp >= now_ms + 1000:
        raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if now_ms - timestamp > window:
        raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


@dataclass(slots=True)
class _Bucket:
    minute: int = -1
    used: int = 0

    def add(self, minute: int, weight: int) -> int:
        if minute != self.minute:
            self.minute, self.used = minute, 0
        self.used += weight
        return self.used


@dataclass(slots=True)
class WeightMeter:
    """Per-minute request weights, 429s and 418 bans (see the module docstring)."""

    limits: Limits
    now_ms: Callable[[], int]
    _api: dict[str, _Bucket] = field(default_factory=dict)
    _sapi: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    _limited_until: dict[str, int] = field(default_factory=dict)
    _banned_until: dict[str, int] = field(default_factory=dict)
    _bans: dict[str, int] = field(default_factory=dict)

    def _retry_after(self, until_ms: int, now: int) -> str:
        return str(max(1, math.ceil((until_ms - now) / 1000)))

    def charge_api(self, ip: str, weight: int) -> dict[str, str]:
        """Count an ``/api`` request; returns the headers, raises 429/418 past the limit."""
        now = self.now_ms()
        banned = self._banned_until.get(ip, 0)
        if now < banned:
            raise ApiError(
                418,
                -1003,
                f"Way too much request weight used; IP banned until {banned}. "
                "Please use WebSocket Streams for live updates to avoid bans.",
                {"Retry-After": self._retry_after(banned, now)},
            )
        if now < self._limited_until.get(ip, 0):
            strikes = self._bans.get(ip, 0)
            self._bans[ip] = strikes + 1
            until = now + int(self.limits.ban_seconds * 1000 * 2**strikes)
            self._banned_until[ip] = until
            raise ApiError(
                418,
                -1003,
                f"Way too much request weight used; IP banned until {until}. "
                "Please use WebSocket Streams for live updates to avoid bans.",
                {"Retry-After": self._retry_after(until, now)},
            )
        minute = now // 60_000
        used = self._api.setdefault(ip, _Bucket()).add(minute, weight)
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        if used > self.limits.api_weight_per_minute:
            until = (minute + 1) * 60_000
            self._limited_until[ip] = until
            raise ApiError(
                429,
                -1003,
                f"Too much request weight used; current limit is {self.limits.api_weight_per_minute} "
                "request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling "
                "the API.",
                {**headers, "Retry-After": self._retry_after(until, now)},
            )
        return headers

    def charge_sapi(self, who: str, endpoint: str, weight: int, uid: bool) -> dict[str, str]:
        """Count a ``/sapi`` request against its own endpoint's budget (per IP or per account)."""
        now = self.now_ms()
        minute = now // 60_000
        used = self._sapi.setdefault((who, endpoint), _Bucket()).add(minute, weight)
        name = "X-SAPI-USED-UID-WEIGHT-1M" if uid else "X-SAPI-USED-IP-WEIGHT-1M"
        limit = self.limits.sapi_uid_weight_per_minute if uid else self.limits.sapi_ip_weight_per_minute
        headers = {name: str(used)}
        if used > limit:
            raise ApiError(
                429,
                -1003,
                f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE.",
                {**headers, "Retry-After": self._retry_after((minute + 1) * 60_000, now)},
            )
        return headers
