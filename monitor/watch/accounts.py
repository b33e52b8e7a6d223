"""One configured account, watched: a thin coordinator of the pieces that do the work.

A watcher loads its account (its key checked, ``keys.py``; bars, cross and isolated snapshots and
interest rates read into the book, ``snapshots.py``), re-reads it on a schedule and after any
stream reconnect (``rereads.py``: a timer and a short-lived task only while a re-read is pending,
nothing while idle; reconciliation with the streams, ``settling.py``), applies its
user-data and risk events to the book through the engine (``events.py``), sets up each unit's
alert ladder (``ladder.py``), says which units are stale (``staleness.py``) and tells the trader
what is wrong with the account itself (``notices.py``). A rejected key disables only its own
account: the others keep being watched.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from monitor.alerts.policy import AlertPolicy
from monitor.config.model import AccountConfig, Config, read_secret
from monitor.exchange.binance import (
    BinanceRest,
    ExchangeError,
    ExchangeEvent,
    FatalError,
    KeyRejected,
    Member,
    RateLimited,
    StreamState,
    UserSubscription,
)
from monitor.exchange.conn_budget import ConnectionBudget, describe_wait
from monitor.exchange.diagnose import Diagnosis, diagnose
from monitor.exchange.rest import RetryPolicy
from monitor.exchange.supervisor import Backoff
from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars
from monitor.risk.report import unit_id
from monitor.watch.catalog import SharedCatalog
from monitor.watch.engine import Engine
from monitor.watch.events import AccountEvents
from monitor.watch.keys import key_verdict, rejected_reason
from monitor.watch.ladder import UnitLadders
from monitor.watch.notices import AccountNotices, Notice
from monitor.watch.rereads import DEBOUNCE, Rereads, Spawn
from monitor.watch.roster import accounts_in_shard
from monitor.watch.settling import Settling
from monitor.watch.snapshots import ExchangeWordHook, Snapshots
from monitor.watch.staleness import Freshness, silent_after, stale_units

log = structlog.get_logger(__name__)
StateHook = Callable[[StreamState], None]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the exchange is: Binance itself, a proxy, or the embedded simulator."""

    rest_url: str
    stream_url: str
    ws_api_url: str
    risk_stream_url: str


class AccountWatcher:
    """Everything the daemon does for one configured account (see the module docstring)."""

    def __init__(
        self,
        account: AccountConfig,
        config: Config,
        config_path: Path,
        endpoints: Endpoints,
        book: AccountBook,
        on_state: StateHook,
        notices: list[Notice],
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        catalog: SharedCatalog | None = None,
        engine: Engine | None = None,
        on_exchange_word: ExchangeWordHook | None = None,
        connections: ConnectionBudget | None = None,
    ) -> None:
        self.connections = connections  # the daemon's WebSocket connection budget (None: no limit)
        self.risk: Member | None = None  # the account on a Risk Data Stream connection, once loaded
        self.catalog = catalog if catalog is not None else SharedCatalog(book)  # shared by the service
        self.cfg = account
        self.name = account.name
        self.config = config
        self.endpoints = endpoints
        self.book = book
        self.on_state = on_state
        self.notices = notices
        self.clock = clock
        self.enabled = True  # False only for good: a key refused for its permissions
        self._loaded = False
        self.on_unloaded: list[Callable[[AccountWatcher], None]] = []  # told when ``loaded`` turns False
        self.loaded_at = 0.0
        self.rest: BinanceRest | None = None
        self.on_exchange_word = on_exchange_word  # Binance's own status (monitor.alerts.opinion)
        self._key = read_secret(
            account.api_key, account.api_key_file, f"accounts.{self.name}.api_key", config_path
        )
        self._secret = read_secret(
            account.api_secret, account.api_secret_file, f"accounts.{self.name}.api_secret", config_path
        )
        self._wait_at_least = 0.0
        self._refreshing = asyncio.Lock()
        self.tell = AccountNotices(self.name, notices)
        self.settling = Settling(book, clock, engine)
        self.snapshots = Snapshots(account, book, self.settling, clock, self._exchange_word)
        self.ladders = UnitLadders(config, account)
        self.rereads = Rereads(clock, rand, read=self._reread, name=f"reread-{self.name}")
        self.events = AccountEvents(
            self.name, book, self.settling, lambda: self.snapshots.units, clock,
            reread=self.request_refresh, word=self._exchange_word, on_state=on_state, on_fatal=self.disable,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"AccountWatcher({self.name!r})"

    # -- what the service and the surfaces read ---------------------------------------------------
    @property
    def loaded(self) -> bool:
        """Loaded and watched now: set by :meth:`load`, cleared by :meth:`disable`, which tells
        ``on_unloaded`` (the service retries loading it without looking at every account each second)."""
        return self._loaded

    @loaded.setter
    def loaded(self, value: bool) -> None:
        was, self._loaded = self._loaded, value
        if was and not value:
            for hook in self.on_unloaded:
                hook(self)

    @property
    def engine(self) -> Engine | None:
        """The tick glue this account's units are held, released and evaluated in (None: not yet)."""
        return self.settling.engine

    @engine.setter
    def engine(self, engine: Engine | None) -> None:
        self.settling.engine = engine

    @property
    def problem(self) -> Diagnosis | None:
        """Why the account is not watched now (retried), or None."""
        return self.tell.problem

    @property
    def units(self) -> set[str]:
        return self.snapshots.units

    @property
    def bars(self) -> dict[str, Bars]:
        return self.snapshots.bars

    @property
    def last_snapshot(self) -> float:
        return self.snapshots.last_snapshot

    @property
    def drift(self) -> dict[str, float]:
        return self.snapshots.drift

    def secret_values(self) -> tuple[str, str]:
        """The key and secret, so logging can scrub them wherever they might appear."""
        return self._key, self._secret

    # -- loading --------------------------------------------------------------------------------
    async def load(self, policy: RetryPolicy | None = None) -> bool:
        """One attempt to connect, check the key, read bars and snapshots into the book.

        True when loaded. False when not: ``enabled`` is False for a key refused for its
        permissions (for good), else ``problem`` says why and a later attempt may succeed."""
        created = self.rest is None  # a reload after a revoked key keeps the client its streams use
        try:
            if self.rest is None:
                self.rest = await BinanceRest.connect(
                    self.name, self._key, self._secret, self.endpoints.rest_url, self.endpoints.ws_api_url,
                    policy=policy,
                )  # fmt: skip
            rest = self.rest
            if not await self._check_key(rest):
                return False
            await self.catalog.ensure(rest)  # one exchangeInfo per daemon (monitor/watch/catalog.py)
            await self.snapshots.read(rest)
        except ExchangeError as exc:
            if created and self.rest is not None:
                await self.rest.close()
                self.rest = None
            self._wait_at_least = exc.retry_after if isinstance(exc, RateLimited) else 0.0
            self.tell.unreachable(diagnose(exc))
            return False
        if policy is not None:
            rest.caller.policy = RetryPolicy()  # the quick start-up policy was for this attempt only
        self.loaded = True
        self.loaded_at = self.clock()
        self.tell.watched()
        log.info("account_loaded", account=self.name, units=sorted(self.units))
        return True

    async def load_until_loaded(
        self,
        backoff: Backoff,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> bool:
        """Retry :meth:`load` with jittered, capped backoff until loaded (True) or refused for good."""
        attempt = 0
        while self.enabled and not self.loaded:
            # a ban (418/429 Retry-After) is waited out whole: asking during it lengthens it
            delay = max(backoff.delay(attempt), self._wait_at_least)
            attempt += 1
            log.info(
                "account_load_retry",
                account=self.name,
                kind=self.problem.kind if self.problem else None,
                attempt=attempt,
                delay=round(delay, 3),
            )
            await sleep(delay)
            if await self.load(policy):
                return True
        return self.loaded

    async def _check_key(self, rest: BinanceRest) -> bool:
        """Whether the key may be used (``monitor/watch/keys.py``); a refused one disables for good."""
        verdict = key_verdict(await rest.key_permissions(), self.cfg.allow_trading_keys)
        if verdict.kind == "read_only":
            log.info("account_key_read_only", account=self.name)
        elif verdict.kind == "allowed":
            self.tell.key_risky(verdict.what)  # once, when the account is first loaded
        else:
            self.tell.key_refused(verdict.what)
            self.enabled = False
        return verdict.usable

    def _exchange_word(self, uid: str, status: str, level: Decimal | None, source: str) -> None:
        if self.on_exchange_word is not None:
            self.on_exchange_word(uid, status, level, source)

    # -- running --------------------------------------------------------------------------------
    def configure_policy(self, policy: AlertPolicy) -> None:
        """Give each of this account's units its ladder, resolved against the unit's own bars."""
        self.ladders.configure(policy, self.units, self.snapshots.bars_of)

    def subscriptions(self) -> list[UserSubscription]:
        """The user-data subscriptions of this account: the cross account and each isolated pair."""
        if not self.loaded or self.rest is None:
            return []
        subs = [UserSubscription(self.name, self.rest)] if self.cfg.cross else []
        for uid in sorted(self.units):
            if uid.startswith("isolated:"):
                subs.append(UserSubscription(self.name, self.rest, symbol=uid.split(":", 2)[2]))
        return subs

    def risk_member(self) -> Member | None:
        """The cross account on a Risk Data Stream connection (``monitor.app.risk_groups`` puts it on
        one); None when it has none (not loaded, or no cross account). Made once: its key lives on."""
        if not self.loaded or self.rest is None or not self.cfg.cross:
            return None
        if self.risk is None:
            self.risk = Member(
                self.name, self.rest, self.on_event, on_reconnected=self.on_reconnected,
                on_state=self.on_state, on_rejected=self._key_rejected,
            )  # fmt: skip
        return self.risk

    def risk_stream_state(self) -> tuple[str, str, dict[str, float] | None] | None:
        """``(state, reason, wait)`` of the Risk Data Stream (Binance's own word on the cross
        account): ``up``; ``waiting`` for a connection slot (``wait``: how many ahead, ETA in
        seconds); ``connecting`` (first attempt under way); ``down`` with the last failure (retried).
        None when the account has none (not loaded, or no cross account)."""
        member = self.risk
        group = member.group if member is not None else None
        if group is None or not self.loaded or not self.cfg.cross:
            return None
        wait = self.connections.wait_of(group.name) if self.connections is not None else None
        if wait is not None:
            return "waiting", describe_wait(wait), {"ahead": wait.ahead, "eta": round(max(0.0, wait.eta), 1)}
        up, reason = group.member_state(self.name)
        if up:
            return "up", "", None
        if not reason:
            return "connecting", "connecting", None
        return "down", f"reconnecting after: {reason}", None

    def on_event(self, event: ExchangeEvent) -> None:
        """Apply a user-data or risk event through the ledger (``monitor/watch/events.py``)."""
        self.events.on_event(event)

    async def on_reconnected(self, account: str, symbol: str | None) -> None:
        """After a stream (re)subscribes, events may have been missed: reconcile by REST."""
        self.events.reconnected()

    def request_refresh(self, delay: float = DEBOUNCE) -> None:
        """Re-read the account by REST in ``delay`` seconds (or sooner, if already due sooner)."""
        self.rereads.request(delay)

    def run_rereads(self, spawn: Spawn) -> None:
        """Re-read the account whenever one is due (after events, a burst coalesced; while the views
        disagree; at once with backoff after a failed read), each time in a short-lived task started
        by ``spawn``: an idle account holds no task, coroutine or timer (``monitor/watch/rereads.py``)."""
        self.rereads.run(spawn)

    def stop_rereads(self) -> None:
        """No re-read timer left and none started any more (shutdown)."""
        self.rereads.stop()

    async def reread_if_due(self) -> None:
        """Do the re-read that is due by now, if any (tests on manual time, without ``run_rereads``)."""
        if self.rereads.take_due():
            await self._reread()

    async def _reread(self) -> None:
        await self.refresh(full=False)

    async def refresh(self, *, full: bool = True) -> None:
        """Re-read the account by REST (schedule, reconnects, events, disagreement). A failure is
        retried at once with jittered backoff; a REST answer that disagrees with the streams is
        asked again shortly (``monitor/watch/rereads.py``)."""
        if not self.enabled or not self.loaded or self.rest is None:
            return
        async with self._refreshing:
            try:
                await self.snapshots.read(self.rest, full=full)
            except KeyRejected as exc:
                self._key_rejected(exc)
                return
            except FatalError as exc:
                self.disable(str(exc))
                return
            except ExchangeError as exc:
                retry = self.rereads.failed()
                log.warning(
                    "account_refresh_failed", account=self.name, error=str(exc),
                    failures=self.rereads.failures, retry_in=round(retry, 3),
                )  # fmt: skip
                return
        self.rereads.answered(disagreed=self.snapshots.disagreed)
        if self.engine is not None:
            self.configure_policy(self.engine.policy)  # a pair that appeared or changed tier
            for uid in self.units:
                self.engine.evaluate(uid)

    def stale_units(self, stale_symbols: set[str], limit: float) -> set[str]:
        """Units whose prices are stale; all units once REST has failed for longer than allowed."""
        if not self.loaded or not self.enabled:
            return set()
        times = Freshness(
            self.clock(), self.loaded_at, self.last_snapshot, self.config.exchange.snapshot_interval, limit
        )
        settling = self.engine.settling if self.engine is not None else {}
        return stale_units(self.units, times, settling, stale_symbols, self.book.unit_symbols)

    def rest_silent(self, now: float, limit: float) -> bool:
        """REST has not answered for so long that every unit is stale (``stale_units``' own test)."""
        return now - self.last_snapshot > silent_after(self.config.exchange.snapshot_interval, limit)

    def rest_deadline(self, limit: float) -> float:
        """When REST silence first makes every unit stale, unless it answers before."""
        return self.last_snapshot + silent_after(self.config.exchange.snapshot_interval, limit)

    def disable(self, reason: str, *, kind: str = "disabled") -> None:
        """Stop watching this account now (its key rejected or revoked mid-run): its units leave the
        book and the trader is told once. The account stays ``enabled``: the service retries loading
        it in the background, so a key fixed on Binance is picked up without a restart. ``kind``:
        the problem as the retries will diagnose it (told once)."""
        if not self.loaded or not self.enabled:
            return
        self.loaded = False
        self.tell.disabled(kind, reason)
        self.snapshots.remove_all()
        self.ladders.forget()

    def _key_rejected(self, exc: KeyRejected) -> None:
        self.disable(rejected_reason(exc), kind=diagnose(exc).kind)

    def blind_entry(self, quote: str) -> dict[str, Any]:
        """The ``status`` entry of this account while it is not loaded: blind, with the reason."""
        if not self.enabled:
            reason = "key refused for its permissions (not watched until the config or key changes)"
        else:
            reason = self.problem.reason if self.problem is not None else "loading"
        return {
            "unit": unit_id(self.name),
            "account": self.name,
            "kind": "cross" if self.cfg.cross else "isolated",
            "symbol": None,
            "quote": quote,
            "state": "blind",
            "reason": reason,
            "margin_level": None,
            "bars": {},
            "distances": {},
            "liquidation_prices": {},
            "total_asset_value": 0.0,
            "total_liability_value": 0.0,
            "loaded": False,  # only on this entry: the page and the console say "not loaded"
        }

    @property
    def key_checkable(self) -> bool:
        """Whether the key is checked now (loaded and enabled: ``monitor/watch/key_checks.py``)."""
        return self.loaded and self.enabled and self.rest is not None

    async def check_key(self) -> None:
        """Check the key once with the cheapest signed call there is (``GET
        /sapi/v1/account/apiRestrictions``, weight 1), for ``KeyChecks`` every key interval: a
        revoked key is noticed within seconds instead of at the next snapshot. Other failures are
        left to the snapshot path."""
        if self.rest is None:
            return
        try:
            await self.rest.key_permissions()
        except KeyRejected as exc:
            self._key_rejected(exc)
        except ExchangeError as exc:
            log.info("key_check_failed", account=self.name, error=str(exc))

    async def close(self) -> None:
        if self.rest is not None:
            await self.rest.close()


def build_watchers(
    config: Config,
    config_path: Path,
    endpoints: Endpoints,
    book: AccountBook,
    on_state: StateHook,
    notices: list[Notice],
    catalog: SharedCatalog | None = None,
    *,
    engine: Engine | None = None,
    on_exchange_word: ExchangeWordHook | None = None,
    connections: ConnectionBudget | None = None,
) -> list[AccountWatcher]:
    """A watcher per configured account in this replica's shard, all sharing one symbol catalog
    (and, when given, the engine and the hook for Binance's own word on each unit)."""
    shared = catalog if catalog is not None else SharedCatalog(book)

    def watcher(account: AccountConfig) -> AccountWatcher:
        return AccountWatcher(
            account, config, config_path, endpoints, book, on_state, notices,
            catalog=shared, engine=engine, on_exchange_word=on_exchange_word, connections=connections,
        )  # fmt: skip

    return [watcher(a) for a in accounts_in_shard(config)]
