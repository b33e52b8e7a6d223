"""The key policy (pure): whether an API key may be used, and how a rejected key is worded.

A monitor needs only a read-only key. A key that can trade, withdraw or transfer is refused unless
the account says ``allow_trading_keys: true`` (then it is used, with a warning). The daemon
(``AccountWatcher``) and ``margin-monitor check`` both ask :func:`key_verdict`.

>>> from monitor.exchange.parse import KeyPermissions
>>> perms = KeyPermissions(reading=True, margin=True, trading=True, withdrawals=False,
...                        transfer=False, futures=False, ip_restricted=False)
>>> key_verdict(perms, allow_trading_keys=False)
KeyVerdict(kind='refused', powers=('trade',))
>>> key_verdict(perms, allow_trading_keys=True).kind
'allowed'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from monitor.exchange.errors import KeyRejected
from monitor.exchange.parse import KeyPermissions

__all__ = ["KeyVerdict", "key_flags", "key_verdict", "rejected_reason"]

VerdictKind = Literal["read_only", "allowed", "refused"]


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """``read_only``: used; ``allowed``: can do more but the account allows it (used, with a
    warning); ``refused``: can do more and is not used. ``powers``: what it can do beyond reading."""

    kind: VerdictKind
    powers: tuple[str, ...]

    @property
    def usable(self) -> bool:
        return self.kind != "refused"

    @property
    def what(self) -> str:
        """The powers as one phrase, e.g. ``trade, withdraw``."""
        return ", ".join(self.powers)


def key_verdict(perms: KeyPermissions, allow_trading_keys: bool) -> KeyVerdict:
    """The verdict on a key with permissions ``perms`` (see the module docstring)."""
    powers = tuple(
        n
        for n, on in (("trade", perms.trading), ("withdraw", perms.withdrawals), ("transfer", perms.transfer))
        if on
    )
    if perms.read_only:
        return KeyVerdict("read_only", powers)
    return KeyVerdict("allowed" if allow_trading_keys else "refused", powers)


def key_flags(perms: KeyPermissions) -> tuple[str, ...]:
    """Every permission the key has, for people (``check``): reading, margin, trade, … ip-restricted."""
    return tuple(n for n, on in (("reading", perms.reading), ("margin", perms.margin),
                 ("trade", perms.trading), ("withdraw", perms.withdrawals),
                 ("transfer", perms.transfer), ("ip-restricted", perms.ip_restricted)) if on)  # fmt: skip


def rejected_reason(exc: KeyRejected) -> str:
    """Why an account stops being watched when Binance rejects its key mid-run (one wording)."""
    return f"API key rejected by Binance (code {exc.code}): {exc.message}"
