"""Which accounts this replica watches: shard ``i/n`` of the configured accounts.

The shard comes from ``run --shard``, else the environment variable ``MARGIN_MONITOR_SHARD``, else
the config's ``shard`` key. On Kubernetes the StatefulSet sets ``MARGIN_MONITOR_SHARD`` to
``$(POD_INDEX)/$(SHARDS)`` (``deploy/kubernetes/``); the index may also be given as a pod or host
name ending in its ordinal (``margin-monitor-2/4`` is shard 2 of 4), for clusters older than the
``apps.kubernetes.io/pod-index`` label.

An account belongs to the shard given by Lamping and Veach's *jump consistent hash* of its name.
Unlike ``hash % n``, growing from ``n`` to ``n + 1`` shards moves only the accounts that go to the
new shard (about ``1/(n + 1)`` of them) and shrinking moves only those of the removed shard; every
other account keeps its owner, so a re-shard disturbs as few alert states as possible
(docs/capacity.md, "Re-sharding").

Shrinking without a gap takes a *handover* spec, ``i/n>m`` (from ``n`` shards to ``m < n``): a
replica below ``m`` is shard ``i`` of ``m`` (it takes its share of the accounts leaving the removed
shards), one at ``m`` or above stays shard ``i`` of ``n`` (it keeps watching the accounts that are
leaving) until it is removed. Rolled out while all ``n`` replicas still run, every leaving account
has an owner throughout; then the replicas from ``m`` up are removed.

>>> parse_shard("2/4")
Shard(index=2, count=4)
>>> shard_of("acct-21", 5), shard_of("acct-21", 4)   # leaves shard 4 of 5 for shard 0 of 4
(4, 0)
>>> [parse_shard(f"{i}/5>4").owns("acct-21") for i in range(5)]   # both own it during the handover
[True, False, False, False, True]
>>> parse_shard("margin-monitor-2/4").index
2
>>> [shard_of("acct-7", n) for n in range(1, 9)]   # stays, or moves to the newest shard
[0, 0, 2, 3, 3, 3, 3, 3]
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

ENV_SHARD = "MARGIN_MONITOR_SHARD"
MAX_SHARDS = 10_000
_SPEC = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.\-]*-)?(\d{1,5})/(\d{1,5})(?:>(\d{1,5}))?")
_EXPECTED = (
    "expected i/n with 0 <= i < n (e.g. 0/4), or a pod name ending in -i (e.g. margin-monitor-0/4), "
    "or a handover i/n>m to fewer shards (e.g. 4/5>4)"
)


class ShardError(ValueError):
    """A shard spec that cannot be used; the message is one line saying what is wrong."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); with ``target``, of the handover to ``target`` shards."""

    index: int
    count: int
    target: int | None = None

    def owns(self, account: str) -> bool:
        """Whether ``account`` (its configured name) belongs to this shard: in a handover, shard
        ``index`` of ``target`` below ``target``, else (a replica about to be removed) of ``count``."""
        if self.target is not None and self.index < self.target:
            return shard_of(account, self.target) == self.index
        return shard_of(account, self.count) == self.index

    def __str__(self) -> str:
        handover = f">{self.target}" if self.target is not None else ""
        return f"{self.index}/{self.count}{handover}"

    def __repr__(self) -> str:
        handover = f", target={self.target}" if self.target is not None else ""
        return f"Shard(index={self.index}, count={self.count}{handover})"


def parse_shard(text: str) -> Shard:
    """``"i/n"`` (or ``"<name>-i/n"``) → :class:`Shard`; raises ShardError with a one-line reason.

    >>> parse_shard("1/0")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    monitor.config.shard.ShardError: '1/0': the shard count must be at least 1
    """
    match = _SPEC.fullmatch(text.strip())
    if match is None:
        raise ShardError(f"{text[:40]!r}: {_EXPECTED}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ShardError(f"{text!r}: the shard count must be at least 1")
    if count > MAX_SHARDS:
        raise ShardError(f"{text!r}: at most {MAX_SHARDS} shards")
    if index >= count:
        raise ShardError(f"{text!r}: the index must be below the count (shards are 0 to {count - 1})")
    if match.group(3) is None:
        return Shard(index, count)
    target = int(match.group(3))
    if not 1 <= target < count:
        raise ShardError(f"{text!r}: a handover goes to fewer shards, at least 1 (1 to {count - 1})")
    return Shard(index, count, target)


def resolve_shard(
    option: str | None, environ: Mapping[str, str], configured: str | None
) -> tuple[Shard | None, str]:
    """The shard to run and where it came from (``--shard``, the environment, the config key).

    Raises ShardError naming the source. An empty environment variable counts as unset.
    """
    for source, value in (
        ("--shard", option),
        (ENV_SHARD, environ.get(ENV_SHARD) or None),
        ("shard", configured),
    ):
        if value is not None:
            try:
                return parse_shard(value), source
            except ShardError as exc:
                raise ShardError(f"{source}: {exc}") from None
    return None, ""


def account_key(account: str) -> int:
    """A stable 64-bit key of an account name (the same in every process and version)."""
    return int.from_bytes(hashlib.blake2b(account.encode(), digest_size=8).digest(), "big")


def shard_of(account: str, count: int) -> int:
    """The shard (0..count-1) that owns ``account`` among ``count``."""
    return jump_hash(account_key(account), count)


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash (Lamping & Veach 2014): a bucket in ``0..buckets-1`` for a 64-bit key.

    Going from ``n`` to ``n + 1`` buckets, a key either stays or moves to bucket ``n``.
    """
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    key &= 0xFFFFFFFFFFFFFFFF
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b
