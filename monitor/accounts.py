"""One configured account: its key, REST snapshots into the book, and its user-data events.

A watcher loads its account (permissions, bars, cross and isolated snapshots, interest rates),
re-reads it on a schedule and after any stream reconnect (reconciliation, with the drift between
our level and the exchange's logged and exported), and applies balance events to the book through
the engine. A rejected key disables only its own account: the others keep being watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import structlog

from monitor.alerts import AlertEvent, AlertPolicy
from monitor.book import AccountBook
from monitor.config import AccountConfig, Config, ConfigError, read_secret
from monitor.engine import Engine
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
    RiskStream,
    StreamState,
    UserSubscription,
)
from monitor.exchange.parse import CrossAccount, IsolatedPair
from monitor.ladder import policy_for_unit
from monitor.margin import Bars, Position
from monitor.report import unit_id

log = structlog.get_logger(__name__)
StateHook = Callable[[StreamState], None]


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
            dedupe_key=f"notice|{self.account}|{self.rule}|{int(now)}",
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
    ) -> None:
        self.cfg = account
        self.name = account.name
        self.config = config
        self.config_path = config_path
        self.endpoints = endpoints
        self.book = book
        self.on_state = on_state
        self.notices = notices
        self.clock = clock
        self.enabled = True
        self.loaded = False
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
        self._refreshing: asyncio.Lock = asyncio.Lock()
        self._refresh_wanted = asyncio.Event()

    def __repr__(self) -> str:
        return f"AccountWatcher({self.name!r})"

    def secret_values(self) -> tuple[str, str]:
        """The key and secret, so logging can scrub them wherever they might appear."""
        return self._key, self._secret

    # -- loading --------------------------------------------------------------------------------
    async def load(self) -> bool:
        """Connect, check the key, read bars and snapshots into the book. False when disabled."""
        try:
            self.rest = await BinanceRest.connect(
                self.name, self._key, self._secret, self.endpoints.rest_url, self.endpoints.ws_api_url
            )
            if not await self._check_permissions():
                return False
            self.book.set_catalog(await self.rest.symbol_listings())  # halted pairs: no live route
            await self._snapshot()
        except KeyRejected as exc:
            self.disable(f"API key rejected by Binance (code {exc.code}): {exc.message}")
            return False
        except ExchangeError as exc:
            log.error("account_load_failed", account=self.name, error=str(exc))
            self.disable(f"could not be loaded: {exc}")
            return False
        self.loaded = True
        log.info("account_loaded", account=self.name, units=sorted(self.units))
        return True

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
        log.warning("account_key_not_read_only", account=self.name, permissions=what)
        self._notice(
            "key_risky",
            f"margin-monitor: key of {self.name} can {what}",
            f"The API key of account {self.name} can {what}; allow_trading_keys is set, so it is used. "
            "A read-only key is safer.",
        )
        return True

    async def _snapshot(self) -> None:
        """Read the account (cross and isolated) and put it into the book."""
        assert self.rest is not None
        units: set[str] = set()
        if self.cfg.cross:
            bars = await self.rest.cross_bars()
            cross = await self.rest.cross_account()
            units.add(self._apply_cross(cross, bars))
            rates = await self._rates(cross.positions.items(), isolated=False)
            self.book.set_interest_rates(unit_id(self.name), rates)
        if self.cfg.isolated:
            symbols = None if self.cfg.isolated == "all" else list(self.cfg.isolated)
            for pair in await self.rest.isolated_pairs(symbols):
                if not pair.enabled and self.cfg.isolated == "all":
                    continue
                # the tier (and so the bars) follows what the pair has borrowed: re-read each time
                self.bars[pair.symbol] = await self.rest.isolated_bars(pair.symbol, pair)
                units.add(self._apply_isolated(pair, self.bars[pair.symbol]))
                items = ((pair.base_asset, pair.base), (pair.quote_asset, pair.quote))
                rates = await self._rates(items, isolated=True)
                self.book.set_interest_rates(unit_id(self.name, pair.symbol), rates)
        for gone in self.units - units:
            self.book.remove_unit(gone)
        self.units = units
        self.last_snapshot = self.clock()

    async def _rates(
        self, positions: Iterable[tuple[str, Position]], *, isolated: bool
    ) -> dict[str, Decimal]:
        assert self.rest is not None
        borrowed = [asset for asset, pos in positions if pos.borrowed > 0]
        try:
            return await self.rest.next_hourly_rates(borrowed, isolated=isolated)
        except ExchangeError as exc:
            log.warning("interest_rates_unavailable", account=self.name, error=str(exc))
            return {}

    def _apply_cross(self, cross: CrossAccount, bars: Bars) -> str:
        uid = unit_id(self.name)
        self.bars[""] = bars
        approximate = cross.account_type == "MARGIN_2"
        before = self.book.level(uid) if uid in self.units else None
        self.book.upsert_cross(
            self.name, cross.positions, bars, approximate=approximate, exchange_level=cross.margin_level
        )
        self._record_drift(uid, cross.margin_level, before)
        return uid

    def _apply_isolated(self, pair: IsolatedPair, bars: Bars) -> str:
        uid = self.book.upsert_isolated(
            self.name, pair.symbol, pair.base_asset, pair.quote_asset, pair.base, pair.quote, bars,
            exchange_level=pair.margin_level,
        )  # fmt: skip
        self._record_drift(uid, pair.margin_level, None)
        return uid

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
        """Apply a user-data or risk event; liability changes trigger a REST re-read."""
        if isinstance(event, StreamState):
            self.on_state(event)
            if event.fatal:
                self.disable(event.reason)
            return
        if isinstance(event, BalanceUpdate | BalanceDelta):
            uid = unit_id(self.name, event.unit_scope)
            current = self.book.position(uid, event.asset) if uid in self.units else None
            if current is None:
                self.request_refresh()
                return
            if isinstance(event, BalanceUpdate):
                new = Position(event.free, event.locked, current.borrowed, current.interest)
            elif current.free + event.delta >= 0:
                new = Position(current.free + event.delta, current.locked, current.borrowed, current.interest)
            else:  # a delta we cannot place (events out of order): the REST view decides
                self.request_refresh()
                return
            if self.engine is not None:
                self.engine.on_position(uid, event.asset, new)
            # a balance event may come with a borrow or repay: liabilities need the REST view
            self.request_refresh()
        elif isinstance(event, LiabilityChange):
            log.info("liability_changed", account=self.name, asset=event.asset, type=event.update_type)
            self.request_refresh()
        elif isinstance(event, MarginStatus):
            log.info("exchange_margin_status", account=self.name, level=str(event.level), status=event.status)

    async def on_reconnected(self, account: str, symbol: str | None) -> None:
        """After a stream (re)subscribes, events may have been missed: reconcile by REST."""
        self.request_refresh()

    def request_refresh(self) -> None:
        self._refresh_wanted.set()

    async def refresh_loop(self, debounce: float = 0.2) -> None:
        """Re-read the account whenever an event asks for it (coalescing bursts)."""
        while True:
            await self._refresh_wanted.wait()
            await asyncio.sleep(debounce)
            self._refresh_wanted.clear()
            await self.refresh()

    async def refresh(self) -> None:
        """Re-read the account by REST (schedule, reconnects, liability events)."""
        if not self.enabled or not self.loaded:
            return
        async with self._refreshing:
            try:
                await self._snapshot()
            except KeyRejected as exc:
                self.disable(f"API key rejected by Binance (code {exc.code}): {exc.message}")
                return
            except FatalError as exc:
                self.disable(str(exc))
                return
            except ExchangeError as exc:
                log.warning("account_refresh_failed", account=self.name, error=str(exc))
                return
        if self.engine is not None:
            self.configure_policy(self.engine.policy)  # a pair that appeared or changed tier
            for uid in self.units:
                self.engine.evaluate(uid)

    def stale_units(self, stale_symbols: set[str], limit: float) -> set[str]:
        """Units whose prices are stale; all units once REST has failed for longer than allowed."""
        if not self.loaded or not self.enabled:
            return set()
        snapshot_age = self.clock() - self.last_snapshot
        if snapshot_age > max(3 * self.config.exchange.snapshot_interval, limit):
            return set(self.units)
        return {u for u in self.units if self.book.unit_symbols(u) & stale_symbols}

    def disable(self, reason: str) -> None:
        if not self.enabled:
            return
        self.enabled = False
        log.error("account_disabled", account=self.name, reason=reason)
        self._notice(
            "account_disabled",
            f"margin-monitor: {self.name} is NOT being watched",
            f"Account {self.name}: {reason}. The other accounts are still watched. Fix the key and restart.",
        )
        for uid in self.units:
            self.book.remove_unit(uid)
        self.units = set()

    def _notice(self, rule: str, title: str, body: str) -> None:
        self.notices.append(Notice(self.name, rule, title, body))

    async def close(self) -> None:
        if self.rest is not None:
            await self.rest.close()


async def open_endpoints(config: Config, config_path: Path, stack: contextlib.AsyncExitStack) -> Endpoints:
    """Binance's URLs from the config, or those of an embedded simulator started on ``stack``."""
    exchange = config.exchange
    if exchange.kind == "binance":
        return Endpoints(
            exchange.rest_url, exchange.stream_url, exchange.ws_api_url, exchange.risk_stream_url
        )
    from monitor.exchange.sim import ScenarioError, load_scenario, run_simulator

    local = config_path.parent / exchange.scenario
    try:
        scenario = load_scenario(local if local.is_file() else exchange.scenario)
    except ScenarioError as exc:
        raise ConfigError(f"{config_path}: exchange.scenario: {exc}") from None
    sim = await stack.enter_async_context(run_simulator(scenario, realtime=True))
    log.info("simulator_started", url=sim.base_url, scenario=exchange.scenario)
    return Endpoints(sim.base_url, sim.stream_url, sim.ws_api_url, sim.risk_stream_url)


def build_watchers(
    config: Config,
    config_path: Path,
    endpoints: Endpoints,
    book: AccountBook,
    on_state: StateHook,
    notices: list[Notice],
) -> list[AccountWatcher]:
    """A watcher per configured account (in this replica's shard)."""
    accounts = [a for a in config.accounts if in_shard(a.name, config.shard)]
    return [AccountWatcher(a, config, config_path, endpoints, book, on_state, notices) for a in accounts]


def in_shard(name: str, shard: str | None) -> bool:
    """Stable assignment of an account to shard ``i/n`` (crc32 of its name)."""
    if not shard:
        return True
    import zlib

    index, count = (int(x) for x in shard.split("/"))
    return zlib.crc32(name.encode()) % count == index
