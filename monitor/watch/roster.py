"""Which configured accounts this replica watches: all, or its shard ``i/n`` of them (``--shard``)."""

from __future__ import annotations

from monitor.config.model import AccountConfig, Config
from monitor.config.shard import parse_shard


def in_shard(name: str, shard: str | None) -> bool:
    """Whether account ``name`` belongs to shard ``i/n`` (jump consistent hash;
    see monitor/config/shard.py)."""
    if not shard:
        return True
    return parse_shard(shard).owns(name)


def accounts_in_shard(config: Config) -> list[AccountConfig]:
    """The configured accounts this replica watches, in config order."""
    return [a for a in config.accounts if in_shard(a.name, config.shard)]
