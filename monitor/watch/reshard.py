"""Re-sharding: what a shard does with alert state when the shard count changes.

When ``n`` shards become ``m``, some accounts change owner (with the jump consistent hash of
:mod:`monitor.config.shard`: on growth only those that move to the new shards, on shrinking only those
of the removed shards). Each shard keeps its alert states in its own state file, so:

- **departed** units, whose account this shard no longer owns, are dropped from its state file
  at start (a later move back starts from what the level is then, never from a stale "firing");
  notifications still queued for them in its outbox are sent as usual;
- **adopted** units, owned now but with no saved state here, start as if restored from a restart
  with every rule *ok*: the existing "crossed while down" logic of the alert policy then fires,
  on the first evaluation, every bar the level is already past (``while_down``). Nothing that
  holds when the new owner first looks is lost;
- such a first-look alert may repeat one the previous owner already sent (it cannot know): each
  one is counted in ``margin_monitor_shard_takeover_alerts_total`` and says so in its message.
  While old and new owner both watch a moved unit (growth: from the new shard's start to the old
  owner's restart), a crossing is reported by both. The old owner counts, when it drops a unit,
  the rules it had firing (``margin_monitor_shard_departed_firing_rules_total``): each duplicate
  of a growth is one of these. Per moved unit: at most one duplicate per rule, once per re-shard.

Shrinking in one step leaves the removed shards' accounts unwatched until their new owners
restart; the handover spec ``i/n>m`` (:mod:`monitor.config.shard`) rolled out before the replicas
go down closes that gap. docs/capacity.md ("Re-sharding") has the whole procedure and the
measured figures.

>>> account_of("cross:desk-1"), account_of("isolated:desk-1:BTCUSDT")
('desk-1', 'desk-1')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.alerts.policy import AlertPolicy
from monitor.alerts.rules import AlertEvent
from monitor.alerts.state import STATE_VERSION
from monitor.config.shard import Shard
from monitor.notify.messages import Message

log = structlog.get_logger(__name__)

TAKEOVER_NOTE = (
    "Taken over by shard {shard} after a change of the shard count: the level was already past this "
    "bar when this shard first looked, so the shard that watched the account before may have sent "
    "this alert too."
)


def account_of(unit: str) -> str:
    """The account of a unit id (``cross:<account>`` or ``isolated:<account>:<SYMBOL>``)."""
    kind, _, rest = unit.partition(":")
    return rest.rpartition(":")[0] if kind == "isolated" else rest


def _firing_rules(blob: Any) -> int:
    """How many rules of a saved unit state are firing (0 for a malformed one)."""
    rules = blob.get("rules") if isinstance(blob, dict) else None
    if not isinstance(rules, dict):
        return 0
    return sum(1 for rule in rules.values() if isinstance(rule, dict) and rule.get("phase") == "firing")


def _all_ok(policy: AlertPolicy, unit: str) -> dict[str, Any]:
    """The saved-state form of a unit whose every rule is ok (as after a restart with no alert)."""
    rules = {rule.name: {"phase": "ok"} for rule in policy.config_for(unit).rules}
    return {"v": STATE_VERSION, "rules": rules}


class Handoff:
    """This shard's side of a re-shard: drop departed units, adopt new ones, count takeovers."""

    def __init__(self, shard: Shard | None, registry: CollectorRegistry | None = None) -> None:
        self.shard = shard
        self.adopted: set[str] = set()
        self._adopted = Counter(
            "margin_monitor_shard_units_adopted",
            "Units this shard started watching without alert state of its own (moved here by a re-shard).",
            registry=registry,
        )
        self._departed = Counter(
            "margin_monitor_shard_units_departed",
            "Units whose saved alert state this shard dropped because another shard owns them now.",
            registry=registry,
        )
        self._departed_firing = Counter(
            "margin_monitor_shard_departed_firing_rules",
            "Rules firing in units handed to another shard: the new owner reports each again if it "
            "still holds, or reported it too if it crossed while both watched (the re-shard duplicates "
            "are at most this many).",
            registry=registry,
        )
        self._takeovers = Counter(
            "margin_monitor_shard_takeover_alerts",
            "Alerts sent on this shard's first look at an adopted unit (the bar was already crossed): "
            "each may repeat one the previous owner sent.",
            registry=registry,
        )
        info = Gauge(
            "margin_monitor_shard_info", "This replica's shard (i/n), 1.", ["shard"], registry=registry
        )
        info.labels(shard=str(shard) if shard else "all").set(1)

    def departed(self, saved: Mapping[str, Any]) -> list[str]:
        """Saved units whose account belongs to another shard now (empty when not sharded)."""
        if self.shard is None:
            return []
        gone = sorted(unit for unit in saved if not self.shard.owns(account_of(unit)))
        if gone:
            firing = sum(_firing_rules(saved[unit]) for unit in gone)
            self._departed.inc(len(gone))
            self._departed_firing.inc(firing)
            log.info("shard_units_departed", shard=str(self.shard), units=len(gone), firing_rules=firing)
        return gone

    def adopt(self, policy: AlertPolicy, units: Iterable[str], saved: Mapping[str, Any]) -> list[str]:
        """Give every unit without saved state a restored, all-ok state (a sharded daemon only), so
        that a bar already crossed fires on the first evaluation as "crossed while down"."""
        if self.shard is None:
            return []
        new = sorted(unit for unit in units if unit not in saved)
        blobs = {unit: _all_ok(policy, unit) for unit in new}
        policy.import_state(blobs)
        self.adopted.update(new)
        if new:
            self._adopted.inc(len(new))
            log.info("shard_units_adopted", shard=str(self.shard), units=len(new))
        return new

    def is_takeover(self, event: AlertEvent) -> bool:
        """Whether ``event`` is a first-look alert of an adopted unit (a possible duplicate)."""
        return event.unit in self.adopted and event.while_down and event.kind == "firing"

    def annotate(self, event: AlertEvent, message: Message) -> Message:
        """Count a takeover alert and say in its body what it is; other messages pass unchanged."""
        if not self.is_takeover(event):
            return message
        self._takeovers.inc()
        return replace(message, body=f"{message.body}\n{TAKEOVER_NOTE.format(shard=self.shard)}")
