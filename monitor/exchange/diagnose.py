"""Why an account cannot be loaded, in words a trader can act on (pure).

``diagnose`` sorts an exchange-layer exception into a :class:`Diagnosis`: a stable ``kind`` (one
notice per kind, not one per retry) and a one-line ``reason``. Only a key refused for its
permissions is permanent (``AccountWatcher`` decides that one itself); everything here is retried.

>>> diagnose(ExchangeUnavailable("ping: gave up after 2 attempts: ClientConnectorDNSError: ...", "dns")).kind
'dns'
>>> diagnose(KeyRejected("main", -2015, "Invalid API-key, IP, or permissions for action.")).kind
'key_rejected'
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.exchange.errors import (
    ExchangeDataError,
    ExchangeError,
    ExchangeRequestError,
    ExchangeUnavailable,
    KeyRejected,
    RateLimited,
)

_CAUSES = {
    "dns": "the exchange's host name does not resolve (DNS failure: no network, or DNS down)",
    "refused": "the connection to the exchange is refused (nothing listening, a proxy or firewall)",
    "timeout": "the exchange does not answer in time (network down or very slow)",
    "network": "the network connection to the exchange fails",
    "server_error": "the exchange answers with server errors (HTTP 5xx: maintenance or overload)",
    "clock_skew": "this machine's clock is too far from Binance's (code -1021): sync it (NTP)",
    "rate_limited": "Binance rate-limits or bans this IP (HTTP 429/418): waiting it out",
}
_KEY_CODES = {
    -2015: "Binance rejected the API key (code -2015: a wrong, deleted or revoked key, or this "
    "machine's IP is not on the key's IP whitelist)",
    -2014: "Binance rejected the API key's format (code -2014): check api_key",
    -1022: "Binance rejected the request signature (code -1022): the api_secret does not match the key",
}


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """``kind`` is stable across retries of the same problem; ``reason`` is one line, no secret."""

    kind: str
    reason: str


def diagnose(exc: BaseException) -> Diagnosis:
    """The kind and a one-line reason of a failed load or re-read (see the module docstring)."""
    if isinstance(exc, KeyRejected):
        text = _KEY_CODES.get(exc.code, f"Binance rejected the API key (code {exc.code}: {exc.message})")
        return Diagnosis("key_rejected" if exc.code == -2015 else f"key_{-exc.code}", text)
    if isinstance(exc, RateLimited):
        return Diagnosis("rate_limited", f"{_CAUSES['rate_limited']} ({exc})")
    if isinstance(exc, ExchangeUnavailable):
        cause = exc.cause or "network"
        return Diagnosis(cause, f"{_CAUSES.get(cause, _CAUSES['network'])} ({exc})")
    if isinstance(exc, ExchangeRequestError):
        return Diagnosis(f"request_{-exc.code}", f"Binance refused a request: {exc}")
    if isinstance(exc, ExchangeDataError):
        return Diagnosis("bad_answer", f"the exchange answered something unexpected: {exc}")
    if isinstance(exc, ExchangeError):
        return Diagnosis("exchange", f"the exchange failed: {exc}")
    return Diagnosis("internal", f"unexpected error: {type(exc).__name__}: {exc}")
