"""The exceptions the exchange layer raises, sorted once into retryable and fatal.

Every message is one line, names what failed, and never carries an API key, a secret or a
signature. ``FatalError`` subclasses stop a supervisor (retrying cannot help); everything else
is retried with backoff.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base class of every error raised by ``monitor.exchange``."""


class FatalError(ExchangeError):
    """An error retrying cannot fix (revoked key, bad configuration): stop and say so loudly."""


class KeyRejected(FatalError):
    """Binance rejected the API key or its signature (-2015, -2014, -1022)."""

    def __init__(self, account: str, code: int, message: str) -> None:
        self.account = account
        self.code = code
        self.message = message
        super().__init__(f"account {account!r}: API key rejected by Binance (code {code}: {message})")


class ExchangeDataError(ExchangeError):
    """A body or frame from the exchange did not have the expected shape; nothing was half-parsed."""


class ExchangeRequestError(ExchangeError):
    """Binance refused a request for a reason retrying will not change (e.g. -1121 invalid symbol)."""

    def __init__(self, operation: str, status: int, code: int, message: str) -> None:
        self.operation = operation
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{operation}: HTTP {status}, code {code}: {message}")


class ExchangeUnavailable(ExchangeError):
    """A request kept failing with transient errors (5xx, timeouts, refused connections) past its budget.

    ``cause`` sorts the last failure for people (``monitor.exchange.diagnose``): ``dns``,
    ``refused``, ``timeout``, ``network``, ``server_error``, ``clock_skew``, ``rate_limited`` or ``""``.
    """

    def __init__(self, message: str, cause: str = "") -> None:
        self.cause = cause
        super().__init__(message)


class RateLimited(ExchangeUnavailable):
    """Binance asked us to wait (429/418 ``Retry-After``) longer than this call may wait."""

    def __init__(self, operation: str, retry_after: float) -> None:
        self.operation = operation
        self.retry_after = retry_after
        super().__init__(
            f"{operation}: rate limited by Binance, retry after {retry_after:.0f} s", "rate_limited"
        )


class Reconnect(ExchangeError):
    """Raised inside a connection session to end it and reconnect (server shutdown notice, lost sub)."""
