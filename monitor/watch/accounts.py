"""One configured account: its key, REST snapshots into the book, and its user-data events.

A watcher loads its account (permissions, bars, cross and isolated snapshots, interest rates),
re-reads it on a schedule and after any stream reconnect (reconciliation, with the drift between
our level and the exchange's logged and exported), and applies balance events to the book through
the engine. A rejected key disables only its own account: the others keep being watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from monitor.alerts.policy import AlertEvent, AlertPolicy
from monitor.config.model import AccountConfig, Config, read_secret
from monitor.exchange.binance import (
    BalanceDelta,
    BalanceUpdate,
    BinanceRest,
    ExchangeError,
    ExchangeEvent,
    FatalError,
    KeyRejected,
    LiabilityChange,
    MarginStatus,
    RateLimited,
    RiskStream,
    StreamState,
    UserSubscription,
)
from monitor.exchange.diagnose import Diagnosis, diagnose
from monitor.exchange.parse import CrossAccount, IsolatedPair
from monitor.exchange.rest import RetryPolicy
from monitor.exchange.supervisor import Backoff
from monitor.risk.book import AccountBook
from monitor.risk.ledger import REST_WINS_AFTER, Ledger
from monitor.risk.margin import Bars, Position
from monitor.risk.report import unit_id
from monitor.watch.catalog import SharedCatalog
from monitor.watch.engine import Engine
from monitor.watch.ladder import policy_for_unit

log = structlog.get_logger(__name__)
StateHook = Callable[[StreamState], None]
# (unit, Binance's marginLevelStatus or "" to derive it from the level, its level, source)
ExchangeWordHook = Callable[[str, str, Decimal | None, str], None]
DEBOUNCE = 0.2  # s: a burst of events is re-read once
AGAIN = 0.25  # s: REST answered but disagreed with the streams (behind or ahead): ask again soon
RATES_EVERY = 3600.0  # s: next-hourly interest rates change at most hourly (weight 100 a read)
RATES_RETRY = 60.0  # s: a failed rates read is tried again after this
REREAD_BACKOFF = Backoff(initial=0.25, maximum=2.0, factor=2.0, jitter=0.5)  # a failed re-read


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the exchange is: Binance itself, a proxy, or the embedded simulator."""

    rest_url: str
    stream_url: str
    ws_api_url: str
    risk_stream_url: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something about an account (not a level) the trader must hear: a rejected or risky key."""

    account: str
    rule: str
    title: str
    body: str
    blind: bool = False  # to the blind routes (an account not watched now), else to every route

    def event(self, routes: tuple[str, ...], now: float) -> AlertEvent:
        return AlertEvent(
            kind="firing",
            unit=unit_id(self.account),
            rule=self.rule,
            bar=None,
            level=None,
            distance=None,
            at=now,
            since=now,
            routes=routes,
            dedupe_key=f"notice|{self.account}|{self.rule}|{int(now * 1000)}",
            crossing=0,
            severity=0,
            detail=self.body,
        )


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
    ) -> None:
        self.catalog = catalog if catalog is not None else SharedCatalog(book)  # shared by the service
        self._rates_read: dict[str, tuple[float, frozenset[str]]] = {}  # unit → (read at, borrowed)
        self.cfg = account
        self.name = account.name
        self.config = config
        self.config_path = config_path
        self.endpoints = endpoints
        self.book = book
        self.on_state = on_state
        self.notices = notices
        self.clock = clock
        self.enabled = True  # False only for good: a key refused for its permissions
        self.loaded = False
        self.problem: Diagnosis | None = None  # why the account is not watched now (retried)
        self.loaded_at = 0.0
        self._told: set[str] = set()  # problem kinds told since the account was last watched
        self._risky_told = False
        self._wait_at_least = 0.0
        self.rest: BinanceRest | None = None
        self.engine: Engine | None = None
        self.units: set[str] = set()
        self.bars: dict[str, Bars] = {}
        self.last_snapshot = 0.0
        self.drift: dict[str, float] = {}
        self._configured: dict[str, Bars] = {}
        self._key = read_secret(
            account.api_key, account.api_key_file, f"accounts.{self.name}.api_key", config_path
        )
        self._secret = read_secret(
            account.api_secret, account.api_secret_file, f"accounts.{self.name}.api_secret", config_path
        )
        self.on_exchange_word: ExchangeWordHook | None = None  # Binance's own status (monitor.alerts.opinion)
        self._refreshing: asyncio.Lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._rand = rand
        self.ledger = Ledger()  # the three views of each unit (monitor/risk/ledger.py)
        self.reread_at: float | None = None  # when the next REST re-read is due (clock time)
        self.failures = 0  # re-reads failed in a row
        self._disagreed = False

    def __repr__(self) -> str:
        return f"AccountWatcher({self.name!r})"

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
            if not await self._check_permissions():
                return False
            await self.catalog.ensure(rest)  # one exchangeInfo per daemon (monitor/watch/catalog.py)
            await self._snapshot()
        except ExchangeError as exc:
            if created and self.rest is not None:
                await self.rest.close()
                self.rest = None
            self._wait_at_least = exc.retry_after if isinstance(exc, RateLimited) else 0.0
            self._unreachable(diagnose(exc))
            return False
        if policy is not None:
            rest.caller.policy = RetryPolicy()  # the quick start-up policy was for this attempt only
        self.loaded = True
        self.loaded_at = self.clock()
        if self._told:
            self._notice(
                "account_loaded",
                f"margin-monitor: {self.name} is watched again",
                f"Account {self.name} could be loaded and is being watched (it was not: "
                f"{self.problem.reason if self.problem else 'unknown'}).",
                blind=True,
            )
        self.problem = None
        self._told.clear()
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

    def _unreachable(self, problem: Diagnosis) -> None:
        """The account cannot be read now: say why once per kind of problem (log and blind routes)."""
        self.problem = problem
        if problem.kind in self._told:  # once per kind: a flapping network does not page every retry
            log.info("account_still_unreachable", account=self.name, kind=problem.kind)
            return
        self._told.add(problem.kind)
        log.error("account_unreachable", account=self.name, kind=problem.kind, reason=problem.reason)
        self._notice(
            "account_unreachable",
            f"margin-monitor: {self.name} is NOT being watched",
            f"Account {self.name} cannot be read from the exchange: {problem.reason}. "
            "It is retried with backoff and watched as soon as it can be read; no restart is needed.",
            blind=True,
        )

    async def _check_permissions(self) -> bool:
        assert self.rest is not None
        perms = await self.rest.key_permissions()
        if perms.read_only:
            log.info("account_key_read_only", account=self.name)
            return True
        powers = [n for n, on in (("trade", perms.trading), ("withdraw", perms.withdrawals),
                                  ("transfer", perms.transfer)) if on]  # fmt: skip
        what = ", ".join(powers)
        if not self.cfg.allow_trading_keys:
            log.error("account_key_refused", account=self.name, permissions=what)
            self._notice(
                "key_refused",
                f"margin-monitor: key of {self.name} refused",
                f"The API key of account {self.name} can {what}. A monitor needs only a read-only key, so "
                "this account is NOT being watched. Make a read-only key (README: 'A read-only key') or "
                "set allow_trading_keys: true for this account.",
            )
            self.enabled = False
            return False
        if self._risky_told:
            return True  # already said when the account was first loaded
        self._risky_told = True
        log.warning("account_key_not_read_only", account=self.name, permissions=what)
        self._notice(
            "key_risky",
            f"margin-monitor: key of {self.name} can {what}",
            f"The API key of account {self.name} can {what}; allow_trading_keys is set, so it is used. "
            "A read-only key is safer.",
        )
        return True

    async def _snapshot(self, *, full: bool = True) -> None:
        """Read the account (cross and isolated) and put it into the book. ``full=False`` (a settle
        re-read, maybe every 0.25 s) skips the cross bars; an isolated pair's tier is re-read
        always (weight 1), as a borrow can move it. Interest rates (weight 100) only when due
        (:meth:`_rates`: hourly, or a newly borrowed asset)."""
        assert self.rest is not None
        units: set[str] = set()
        self._disagreed = False
        if self.cfg.cross:
            known = self.bars.get("")
            bars = known if known is not None and not full else await self.rest.cross_bars()
            cross = await self.rest.cross_account()
            units.add(self._apply_cross(cross, bars))
            await self._rates(unit_id(self.name), cross.positions.items(), isolated=False)
        if self.cfg.isolated:
            symbols = None if self.cfg.isolated == "all" else list(self.cfg.isolated)
            for pair in await self.rest.isolated_pairs(symbols):
                if not pair.enabled and self.cfg.isolated == "all":
                    continue
                # the tier (and so the bars) follows what the pair has borrowed: re-read each time
                self.bars[pair.symbol] = await self.rest.isolated_bars(pair.symbol, pair)
                units.add(self._apply_isolated(pair, self.bars[pair.symbol]))
                items = ((pair.base_asset, pair.base), (pair.quote_asset, pair.quote))
                await self._rates(unit_id(self.name, pair.symbol), items, isolated=True)
        for gone in self.units - units:
            self.book.remove_unit(gone)
            self._drop_unit(gone)
        self.units = units
        self.last_snapshot = self.clock()

    async def _rates(self, uid: str, positions: Iterable[tuple[str, Position]], *, isolated: bool) -> None:
        """Read the unit's next hourly interest rates (weight 100) when due: never read, an hour
        old (Binance changes them at most hourly), or an asset borrowed that was not at the last
        read. A failed read keeps the rates in use and is tried again after :data:`RATES_RETRY`."""
        assert self.rest is not None
        borrowed = frozenset(asset for asset, pos in positions if pos.borrowed > 0)
        now = self.clock()
        last = self._rates_read.get(uid)
        if last is not None and now - last[0] < RATES_EVERY and borrowed <= last[1]:
            return
        try:
            rates = await self.rest.next_hourly_rates(sorted(borrowed), isolated=isolated)
        except ExchangeError as exc:
            log.warning("interest_rates_unavailable", account=self.name, error=str(exc))
            self._rates_read[uid] = (now - RATES_EVERY + RATES_RETRY, borrowed)
            return
        self._rates_read[uid] = (now, borrowed)
        self.book.set_interest_rates(uid, rates)

    def _apply_cross(self, cross: CrossAccount, bars: Bars) -> str:
        uid = unit_id(self.name)
        self.bars[""] = bars
        if not self._admit(uid, cross.positions):
            return uid
        approximate = cross.account_type == "MARGIN_2"
        before = self.book.level(uid) if uid in self.units else None
        self.book.upsert_cross(
            self.name, cross.positions, bars, approximate=approximate, exchange_level=cross.margin_level
        )
        self._settled(uid)
        self._record_drift(uid, cross.margin_level, before)
        self._exchange_word(uid, cross.margin_level_status, cross.margin_level, "rest")
        return uid

    def _apply_isolated(self, pair: IsolatedPair, bars: Bars) -> str:
        uid = unit_id(self.name, pair.symbol)
        if not self._admit(uid, {pair.base_asset: pair.base, pair.quote_asset: pair.quote}):
            return uid
        uid = self.book.upsert_isolated(
            self.name, pair.symbol, pair.base_asset, pair.quote_asset, pair.base, pair.quote, bars,
            exchange_level=pair.margin_level,
        )  # fmt: skip
        self._settled(uid)
        self._record_drift(uid, pair.margin_level, None)
        self._exchange_word(uid, pair.margin_level_status, pair.margin_level, "rest")
        return uid

    def _exchange_word(self, uid: str, status: str, level: Decimal | None, source: str) -> None:
        if self.on_exchange_word is not None:
            self.on_exchange_word(uid, status, level, source)

    # -- the ledger: three views, one state -------------------------------------------------------
    def _admit(self, uid: str, positions: dict[str, Position]) -> bool:
        """Whether a REST snapshot of ``uid`` may go into the book: it shows every balance the user
        stream reported since the views last agreed (else REST is behind or ahead: settling)."""
        if uid not in self.book.units():
            self.ledger.accept_rest(uid)
            return True
        held = {asset: p.held for asset, p in positions.items()}
        verdict = self.ledger.rest_verdict(uid, held, now=self.clock())
        if verdict == "stands":
            log.warning("stream_never_confirmed_taking_rest", unit=uid, after=REST_WINS_AFTER)
        if verdict != "disagrees":
            return True
        self._disagreed = True
        self.ledger.disagree(uid, now=self.clock())
        since = self.ledger.since(uid)
        if self.engine is not None and since is not None:
            self.engine.hold(uid, since)
        log.info("rest_disagrees_with_stream", unit=uid, settling_for=round(self.clock() - (since or 0), 3))
        return False

    def _settled(self, uid: str) -> None:
        """A REST snapshot that agrees is in the book: the unit's views agree."""
        self.ledger.accept_rest(uid)
        if self.engine is not None:
            self.engine.release(uid)

    def _drop_unit(self, uid: str) -> None:
        self.ledger.drop(uid)
        if self.engine is not None:
            self.engine.settling.pop(uid, None)

    def _apply(self, uid: str, asset: str, position: Position | None) -> None:
        """Put one streamed change into the book; the engine evaluates it only once settled."""
        since = self.ledger.since(uid)
        if self.engine is None:
            if position is not None:
                self.book.set_position(uid, asset, position)
            return
        if since is not None:
            self.engine.hold(uid, since)
        if position is not None:
            self.engine.on_position(uid, asset, position)  # evaluated there unless settling
        if since is None:
            self.engine.release(uid)
        else:
            self.request_refresh()  # the streams alone cannot settle it (or not yet): ask REST

    def _record_drift(self, uid: str, exchange_level: Decimal, before: float | None) -> None:
        ours = self.book.level(uid) if self.book.is_priced(uid) else before
        if ours is None or exchange_level <= 0 or exchange_level >= 999:
            return
        drift = ours / float(exchange_level) - 1.0
        self.drift[uid] = drift
        level = "warning" if abs(drift) > 0.01 else "info"
        getattr(log, level)(
            "level_reconciled", unit=uid, ours=round(ours, 6), exchange=float(exchange_level), drift=drift
        )

    # -- running --------------------------------------------------------------------------------
    def configure_policy(self, policy: AlertPolicy) -> None:
        """Give each of this account's units its ladder, resolved against the unit's own bars."""
        override = self.cfg.alerts
        for uid in self.units:
            symbol = uid.split(":", 2)[2] if uid.startswith("isolated:") else ""
            bars = self.bars.get(symbol) or self.bars.get("")
            if bars is None or self._configured.get(uid) == bars:
                continue  # a unit is (re)configured when it is new or its bars changed (tier)
            self._configured[uid] = bars
            values = {name: float(value) for name, value in bars.levels.items()}
            policy.configure_unit(
                uid,
                policy_for_unit(
                    self.config.alerts,
                    values,
                    self.config.route_names(),
                    levels=override.levels if override else None,
                    routes=override.routes if override else None,
                ),
            )

    def subscriptions(self) -> list[UserSubscription]:
        """The user-data subscriptions of this account: the cross account and each isolated pair."""
        if not self.loaded or self.rest is None:
            return []
        subs = [UserSubscription(self.name, self.rest)] if self.cfg.cross else []
        for uid in sorted(self.units):
            if uid.startswith("isolated:"):
                subs.append(UserSubscription(self.name, self.rest, symbol=uid.split(":", 2)[2]))
        return subs

    async def run_risk_stream(self) -> None:
        """The Risk Data Stream until cancelled; a rejected key disables this account only."""
        stream = self.risk_stream()
        if stream is None:
            return
        try:
            await stream.run()
        except KeyRejected as exc:
            self.disable(f"API key rejected by Binance (code {exc.code}): {exc.message}")

    def risk_stream(self) -> RiskStream | None:
        """The cross account's Risk Data Stream (liabilities and margin status)."""
        if not self.loaded or self.rest is None or not self.cfg.cross:
            return None
        return RiskStream(
            self.endpoints.risk_stream_url,
            self.rest,
            self.name,
            self.on_event,
            on_reconnected=self.on_reconnected,
            on_state=self.on_state,
        )

    def on_event(self, event: ExchangeEvent) -> None:
        """Apply a user-data or risk event through the ledger: the unit settles when its balance and
        liability views agree (see monitor/risk/ledger.py), else a REST re-read decides."""
        if isinstance(event, StreamState):
            self.on_state(event)
            if event.fatal:
                self.disable(event.reason)
            return
        if isinstance(event, BalanceUpdate | BalanceDelta):
            self._on_balance(event)
        elif isinstance(event, LiabilityChange):
            log.info("liability_changed", account=self.name, asset=event.asset, type=event.update_type)
            self._on_liability(event)
        elif isinstance(event, MarginStatus):
            log.info("exchange_margin_status", account=self.name, level=str(event.level), status=event.status)
            self._exchange_word(unit_id(self.name), event.status, event.level, "risk")

    def _on_balance(self, event: BalanceUpdate | BalanceDelta) -> None:
        uid = unit_id(self.name, event.unit_scope)
        if uid not in self.units:
            self.request_refresh()
            return
        now = self.clock()
        current = self.book.position(uid, event.asset)
        if current is None:  # an asset the book has no row for: REST brings it with its price route
            after = event.free + event.locked if isinstance(event, BalanceUpdate) else event.delta
            self.ledger.balance(uid, event.asset, Decimal(0), after, now=now)
            self.ledger.unplaceable(uid, now=now)
            self._apply(uid, event.asset, None)
            return
        if isinstance(event, BalanceUpdate):
            new = Position(event.free, event.locked, current.borrowed, current.interest)
        elif current.free + event.delta >= 0:
            new = Position(current.free + event.delta, current.locked, current.borrowed, current.interest)
        else:  # a delta we cannot place (events out of order): the REST view decides
            self.ledger.unplaceable(uid, now=now)
            self._apply(uid, event.asset, None)
            return
        self.ledger.balance(uid, event.asset, current.held, new.held, now=now)
        self._apply(uid, event.asset, new)

    def _on_liability(self, event: LiabilityChange) -> None:
        """A borrow, repay or interest posting of the cross account (amounts of this change)."""
        uid = unit_id(self.name)
        if uid not in self.units:
            self.request_refresh()
            return
        now = self.clock()
        current = self.book.position(uid, event.asset)
        p, i = abs(event.principal), abs(event.interest)
        sign = {"BORROW": 1, "INTEREST": 1, "REPAY": -1}.get(event.update_type)
        borrowed = current.borrowed + sign * p if current is not None and sign is not None else None
        interest = current.interest + sign * i if current is not None and sign is not None else None
        if current is None or borrowed is None or interest is None or borrowed < 0 or interest < 0:
            self.ledger.liability(uid, event.asset, event.update_type or "?", p, i, now=now)
            self.ledger.unplaceable(uid, now=now)
            self._apply(uid, event.asset, None)
            return
        self.ledger.liability(uid, event.asset, event.update_type, p, i, now=now)
        self._apply(uid, event.asset, Position(current.free, current.locked, borrowed, interest))

    async def on_reconnected(self, account: str, symbol: str | None) -> None:
        """After a stream (re)subscribes, events may have been missed: reconcile by REST, which
        then decides alone (what the streams said before may be incomplete)."""
        for uid in self.units:
            self.ledger.forget(uid)
        self.request_refresh()

    def request_refresh(self, delay: float = DEBOUNCE) -> None:
        """Re-read the account by REST in ``delay`` seconds (or sooner, if already due sooner)."""
        at = self.clock() + delay
        if self.reread_at is None or at < self.reread_at:
            self.reread_at = at
            self._wake.set()

    async def refresh_loop(self) -> None:
        """Re-read the account whenever one is due: after events (a burst is coalesced), while the
        views disagree, and at once with backoff after a failed read."""
        while True:
            self._wake.clear()
            due = self.reread_at
            if due is None:
                await self._wake.wait()
                continue
            delay = due - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            await self.reread_if_due()

    async def reread_if_due(self) -> None:
        """Do the re-read that is due by now, if any (the loop above; tests on manual time)."""
        if self.reread_at is None or self.reread_at > self.clock():
            return
        self.reread_at = None
        await self.refresh(full=False)

    async def refresh(self, *, full: bool = True) -> None:
        """Re-read the account by REST (schedule, reconnects, events, disagreement). A failure is
        retried at once with jittered backoff (capped at 2 s); a REST answer that disagrees with
        the streams is asked again in :data:`AGAIN` seconds."""
        if not self.enabled or not self.loaded:
            return
        async with self._refreshing:
            try:
                await self._snapshot(full=full)
            except KeyRejected as exc:
                self.disable(f"API key rejected by Binance (code {exc.code}): {exc.message}")
                return
            except FatalError as exc:
                self.disable(str(exc))
                return
            except ExchangeError as exc:
                retry = REREAD_BACKOFF.delay(self.failures, self._rand)
                self.failures += 1
                log.warning(
                    "account_refresh_failed", account=self.name, error=str(exc),
                    failures=self.failures, retry_in=round(retry, 3),
                )  # fmt: skip
                self.request_refresh(retry)
                return
        self.failures = 0
        if self._disagreed:
            self.request_refresh(AGAIN * (0.8 + 0.4 * self._rand()))
        if self.engine is not None:
            self.configure_policy(self.engine.policy)  # a pair that appeared or changed tier
            for uid in self.units:
                self.engine.evaluate(uid)

    def stale_units(self, stale_symbols: set[str], limit: float) -> set[str]:
        """Units whose prices are stale; all units once REST has failed for longer than allowed."""
        if not self.loaded or not self.enabled:
            return set()
        now = self.clock()
        if now - self.loaded_at < limit:
            return set()  # loaded just now (late, after an outage): its symbols' first prices are due
        snapshot_age = now - self.last_snapshot
        if snapshot_age > max(3 * self.config.exchange.snapshot_interval, limit):
            return set(self.units)
        settling = self.engine.settling if self.engine is not None else {}
        unconfirmed = {u for u in self.units if u in settling and now - settling[u] > limit}
        if not stale_symbols:  # the usual case: skip building every unit's symbol set each second
            return unconfirmed
        return unconfirmed | {u for u in self.units if self.book.unit_symbols(u) & stale_symbols}

    def disable(self, reason: str) -> None:
        """Stop watching this account now (its key rejected or revoked mid-run): its units leave the
        book and the trader is told once. The account stays ``enabled``: the service retries loading
        it in the background, so a key fixed on Binance is picked up without a restart."""
        if not self.loaded or not self.enabled:
            return
        self.loaded = False
        code = re.search(r"\(code (-\d+)\)", reason)  # a key rejection: the same kind its retries get
        kind = diagnose(KeyRejected(self.name, int(code[1]), "")).kind if code else "disabled"
        self.problem = Diagnosis(kind, reason)
        self._told.add(kind)
        log.error("account_disabled", account=self.name, reason=reason)
        self._notice(
            "account_disabled",
            f"margin-monitor: {self.name} is NOT being watched",
            f"Account {self.name}: {reason}. The other accounts are still watched. This one is retried "
            "with backoff and watched again as soon as its key works (fix the key or its IP whitelist "
            "on Binance; no restart is needed).",
            blind=True,
        )
        for uid in self.units:
            self.book.remove_unit(uid)
            self._drop_unit(uid)
        self.units = set()
        self._configured.clear()

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

    async def watch_key(self, interval: float) -> None:
        """Check the key every ``interval`` s with the cheapest signed call there is
        (``GET /sapi/v1/account/apiRestrictions``, weight 1): a revoked key is noticed within
        seconds instead of at the next snapshot. Other failures are left to the snapshot path."""
        while True:
            await asyncio.sleep(interval)
            if not (self.loaded and self.enabled) or self.rest is None:
                continue
            try:
                await self.rest.key_permissions()
            except KeyRejected as exc:
                self.disable(f"API key rejected by Binance (code {exc.code}): {exc.message}")
            except ExchangeError as exc:
                log.info("key_check_failed", account=self.name, error=str(exc))

    def _notice(self, rule: str, title: str, body: str, *, blind: bool = False) -> None:
        self.notices.append(Notice(self.name, rule, title, body, blind))

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
) -> list[AccountWatcher]:
    """A watcher per configured account (in this replica's shard), all sharing one symbol catalog."""
    accounts = [a for a in config.accounts if in_shard(a.name, config.shard)]
    shared = catalog if catalog is not None else SharedCatalog(book)
    return [
        AccountWatcher(a, config, config_path, endpoints, book, on_state, notices, catalog=shared)
        for a in accounts
    ]


def in_shard(name: str, shard: str | None) -> bool:
    """Whether account ``name`` belongs to shard ``i/n`` (jump consistent hash;
    see monitor/config/shard.py)."""
    if not shard:
        return True
    from monitor.config.shard import parse_shard

    return parse_shard(shard).owns(name)
