"""The scenario model: accounts, prices, limits, stream options and a timeline, with its validators.

A scenario is YAML. Every problem is reported as one line ``FILE: key.path: problem`` through
:class:`ScenarioError`, before anything starts. Amounts use Binance's field names and are
parsed with ``Decimal`` (strings preferred, numbers accepted). Times on the timeline are simulated
seconds, written as numbers or as ``"90s"``, ``"2m"``, ``"1h30m"``, ``"500ms"``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)

from monitor.config.duration import DurationError, parse_duration
from monitor.sim.sources import Tick, TimelineSourceError, load_path

BUNDLED_DIR = Path(__file__).resolve().parent / "scenarios"
KNOWN_QUOTES = ("USDT", "USDC", "FDUSD", "TUSD", "BUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL")


class ScenarioError(ValueError):
    """A scenario that cannot be used; ``str()`` is one line ``FILE: key.path: problem``."""


def _seconds(value: object) -> float:
    """A duration in the config's grammar (:mod:`monitor.config.duration`), worded for scenarios."""
    try:
        return parse_duration(value)
    except DurationError as exc:
        if exc.negative:
            raise ValueError(f"expected a duration >= 0, got {value!r}") from None
        raise ValueError(f"expected a duration such as 30, '90s', '2m' or '1h', got {value!r}") from None


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f'expected a decimal number such as "1.5", got {value!r}')
    else:
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f'expected a decimal number such as "1.5", got {value!r}') from None
    if not result.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


def _amount(value: object) -> Decimal:
    result = _decimal(value)
    if result < 0:
        raise ValueError(f"expected an amount >= 0, got {value!r}")
    return result


def _positive(value: object) -> Decimal:
    result = _decimal(value)
    if result <= 0:
        raise ValueError(f"expected a number > 0, got {value!r}")
    return result


Amount = Annotated[Decimal, BeforeValidator(_amount)]
Positive = Annotated[Decimal, BeforeValidator(_positive)]
Seconds = Annotated[float, BeforeValidator(_seconds)]
AssetName = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,12}$")]
SymbolName = Annotated[str, Field(pattern=r"^[A-Z0-9]{4,24}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Balance(_Strict):
    """One asset of a margin account, with Binance's ``userAssets`` field names."""

    asset: AssetName
    free: Amount = Decimal(0)
    locked: Amount = Decimal(0)
    borrowed: Amount = Decimal(0)
    interest: Amount = Decimal(0)


class ScenarioBars(_Strict):
    """Margin-level thresholds: initial (``normalBar``), margin call and liquidation."""

    normal: Positive
    margin_call: Positive
    liquidation: Positive

    @model_validator(mode="after")
    def _ordered(self) -> ScenarioBars:
        if not self.normal >= self.margin_call >= self.liquidation:
            raise ValueError("expected normal >= margin_call >= liquidation")
        return self


CROSS_BARS = {
    "MARGIN_1": ScenarioBars(normal=Decimal("1.5"), margin_call=Decimal("1.3"), liquidation=Decimal("1.1")),
    "MARGIN_2": ScenarioBars(normal=Decimal("1.25"), margin_call=Decimal("1.05"), liquidation=Decimal("1.0")),
}
ISOLATED_BARS = {  # Binance's FAQ "Tiered Leverage Function on Isolated Margin" (tier 1 initial ratio)
    10: ScenarioBars(normal=Decimal("1.111"), margin_call=Decimal("1.1"), liquidation=Decimal("1.05")),
    5: ScenarioBars(normal=Decimal("1.25"), margin_call=Decimal("1.19"), liquidation=Decimal("1.15")),
    3: ScenarioBars(normal=Decimal("1.5"), margin_call=Decimal("1.22"), liquidation=Decimal("1.18")),
}


class Tier(_Strict):
    """One row of ``GET /sapi/v1/margin/isolatedMarginTier``."""

    tier: int = Field(ge=1)
    effectiveMultiple: Positive
    initialRiskRatio: Positive
    liquidationRiskRatio: Positive
    baseAssetMaxBorrowable: Amount
    quoteAssetMaxBorrowable: Amount


class ScenarioPair(_Strict):
    """One isolated margin pair of an account."""

    symbol: SymbolName
    base: Balance
    quote: Balance
    leverage: Literal[3, 5, 10] = 10
    bars: ScenarioBars | None = None
    interest_rates: dict[AssetName, Amount] = {}
    tiers: list[Tier] | None = None
    enabled: bool = True

    @property
    def effective_bars(self) -> ScenarioBars:
        """The pair's bars: explicit ones, else the preset of its leverage class."""
        return self.bars or ISOLATED_BARS[self.leverage]


class Restrictions(_Strict):
    """The API key's permissions as ``GET /sapi/v1/account/apiRestrictions`` reports them."""

    ipRestrict: bool = False
    enableReading: bool = True
    enableWithdrawals: bool = False
    enableInternalTransfer: bool = False
    enableMargin: bool = False
    enableFutures: bool = False
    permitsUniversalTransfer: bool = False
    enableVanillaOptions: bool = False
    enableFixApiTrade: bool = False
    enableFixReadOnly: bool = False
    enableSpotAndMarginTrading: bool = False
    enablePortfolioMarginTrading: bool = False


class Account(_Strict):
    """A simulated Binance user: one API key, a cross margin account and isolated pairs."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    api_key: str = Field(min_length=1, max_length=128)
    api_secret: SecretStr
    account_type: Literal["MARGIN_1", "MARGIN_2"] = "MARGIN_1"
    cross: list[Balance] = []
    isolated: list[ScenarioPair] = []
    interest_rates: dict[AssetName, Amount] = {}
    bars: ScenarioBars | None = None
    restrictions: Restrictions = Restrictions()

    @property
    def effective_bars(self) -> ScenarioBars:
        """The cross bars: explicit ones, else Binance's defaults for the account type."""
        return self.bars or CROSS_BARS[self.account_type]


class Limits(_Strict):
    """Rate limits and validity periods (Binance's values by default)."""

    api_weight_per_minute: int = Field(default=6000, ge=1)
    sapi_ip_weight_per_minute: int = Field(default=12000, ge=1)
    sapi_uid_weight_per_minute: int = Field(default=180000, ge=1)
    ban_seconds: Seconds = 120.0
    listen_token_validity: Seconds = 86400.0
    listen_key_validity: Seconds = 3600.0
    # WebSocket connection attempts per client IP in any sliding window, over every WebSocket
    # endpoint (market streams, Risk Data Stream, WebSocket API): monitor/sim/conn_limit.py
    ws_connections: int = Field(default=300, ge=1)
    ws_connection_window: Seconds = 300.0


class Streams(_Strict):
    """WebSocket behaviour: pings, ticker cadence, spread, and where risk events go."""

    ping_interval: Seconds = 20.0
    pong_timeout: Seconds = 60.0
    ticker_interval: Seconds = 1.0
    quote_refresh: Seconds = 1.0  # real seconds between bookTicker refreshes of unchanged prices (0 = never)
    spread: Amount = Decimal("0.0001")
    max_incoming_per_second: int = Field(default=5, ge=1)
    risk_events_on_ws_api: bool = False


class Delivery(_Strict):
    """How late each view of an account change reaches the client, in simulated seconds: the
    user-data stream (balances), the Risk Data Stream (liabilities) and REST (``rest_lag``: REST
    shows the change only this long after it happened). Unset = the scenario's (default 0)."""

    user_data: Seconds | None = None
    risk: Seconds | None = None
    rest_lag: Seconds | None = None

    def over(self, base: Delivery) -> Delivery:
        """These delays where set, else ``base``'s."""
        return Delivery(
            user_data=self.user_data if self.user_data is not None else base.user_data,
            risk=self.risk if self.risk is not None else base.risk,
            rest_lag=self.rest_lag if self.rest_lag is not None else base.rest_lag,
        )

    def seconds(self, channel: Literal["user_data", "risk", "rest_lag"]) -> float:
        """The delay of ``channel`` (0 when unset)."""
        value: float | None = getattr(self, channel)
        return value or 0.0


class PricePath(_Strict):
    """One price source: a tick CSV, a Binance kline CSV, or an inline ramp between points."""

    csv: str | None = None
    klines: str | None = None
    ramp: SymbolName | None = None
    symbol: SymbolName | None = None
    points: list[tuple[Seconds, Positive]] | None = None
    every: Seconds = 1.0
    offset: Seconds = 0.0

    @model_validator(mode="after")
    def _one_kind(self) -> PricePath:
        kinds = [k for k in ("csv", "klines", "ramp") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("expected exactly one of csv, klines or ramp")
        if self.klines is not None and self.symbol is None:
            raise ValueError("klines needs symbol (the pair the candles belong to)")
        if self.ramp is not None and not self.points:
            raise ValueError("ramp needs points: [[seconds, price], ...]")
        if self.ramp is not None and self.every <= 0:
            raise ValueError("every must be > 0")
        return self

    @property
    def kind_key(self) -> str:
        """The key naming this source's kind: ``csv``, ``klines`` or ``ramp``."""
        return "csv" if self.csv is not None else "klines" if self.klines is not None else "ramp"


EventType = Literal[
    "borrow",
    "repay",
    "deposit",
    "transfer_in",
    "transfer_out",
    "withdraw",
    "liquidation",
    "set_balance",
    "trade",
    "interest",
]
_NEEDS_AMOUNT = {"borrow", "repay", "deposit", "transfer_in", "transfer_out", "withdraw", "trade", "interest"}


class Event(_Strict):
    """An account event: changes balances and emits the user-data events Binance would send."""

    at: Seconds = 0.0
    type: EventType
    account: str
    asset: AssetName | None = None
    amount: Positive | None = None
    symbol: SymbolName | None = None
    free: Amount | None = None
    locked: Amount | None = None
    borrowed: Amount | None = None
    interest: Amount | None = None
    side: Literal["buy", "sell"] | None = None
    price: Positive | None = None
    delivery: Delivery | None = None

    @model_validator(mode="after")
    def _fields(self) -> Event:
        if self.type in _NEEDS_AMOUNT and (self.asset is None or self.amount is None):
            raise ValueError(f"{self.type} needs asset and amount")
        if self.type == "trade" and self.side is None:
            raise ValueError("trade needs side (buy or sell)")
        if self.type == "set_balance":
            if self.asset is None:
                raise ValueError("set_balance needs asset")
            if all(getattr(self, f) is None for f in ("free", "locked", "borrowed", "interest")):
                raise ValueError("set_balance needs at least one of free, locked, borrowed, interest")
        return self


FaultKind = Literal[
    "drop",
    "stall",
    "close_1001",
    "malformed_frame",
    "expire_listen_token",
    "rest_5xx",
    "rest_timeout",
    "rest_429",
    "revoke_key",
    "server_shutdown",
]


class Fault(_Strict):
    """A fault at a time: on websockets (``target``), on REST for a window, or on a key."""

    at: Seconds = 0.0
    kind: FaultKind
    target: Literal["streams", "ws_api", "all"] = "streams"
    symbol: SymbolName | None = None
    duration: Seconds = 0.0
    status: int = Field(default=503, ge=500, le=599)
    account: str | None = None

    @model_validator(mode="after")
    def _fields(self) -> Fault:
        windowed = {"stall", "rest_5xx", "rest_timeout", "rest_429"}
        if self.kind in windowed and self.duration <= 0:
            raise ValueError(f"{self.kind} needs duration > 0")
        if self.kind == "revoke_key" and self.account is None:
            raise ValueError("revoke_key needs account")
        return self


class Timeline(_Strict):
    """Prices over simulated time, account events and faults; ``speed`` = simulated s per real s."""

    speed: float = Field(default=1.0, gt=0)
    loop: bool = False
    duration: Seconds | None = None
    paths: list[PricePath] = []
    events: list[Event] = []
    faults: list[Fault] = []


class SymbolInfo(_Strict):
    """Base and quote asset of a symbol (inferred from the name when not given)."""

    base: AssetName
    quote: AssetName


SymbolStatus = Literal[
    "TRADING", "BREAK", "HALT", "END_OF_DAY", "PRE_TRADING", "POST_TRADING", "AUCTION_MATCH"
]


class Scenario(_Strict):
    """A whole simulated exchange: prices, accounts, limits, stream options and the timeline."""

    quote: AssetName = "USDT"
    prices: dict[SymbolName, Positive]
    symbols: dict[SymbolName, SymbolInfo] = {}
    # exchangeInfo status per symbol (default TRADING); a symbol not TRADING streams nothing, while
    # accounts are still valued at its standing price (as Binance values a halted pair's asset)
    symbol_status: dict[SymbolName, SymbolStatus] = {}
    interest_rates: dict[AssetName, Amount] = {}
    accounts: list[Account] = []
    limits: Limits = Limits()
    streams: Streams = Streams()
    delivery: Delivery = Delivery()
    timeline: Timeline = Timeline()
    source: str = Field(default="<scenario>", exclude=True)
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    _ticks: list[Tick] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _statuses(self) -> Scenario:
        unknown = sorted(set(self.symbol_status) - set(self.prices))
        if unknown:
            raise ValueError(f"symbol_status: unknown symbol {unknown[0]} (not in prices)")
        return self

    def trading(self, symbol: str) -> bool:
        """The symbol trades (streams prices): its ``symbol_status`` is TRADING (the default)."""
        return self.symbol_status.get(symbol, "TRADING") == "TRADING"

    def symbol_info(self, symbol: str) -> SymbolInfo:
        """Base and quote asset of a simulated symbol."""
        info = self.symbols.get(symbol) or split_symbol(symbol, self.quote)
        if info is None:
            raise KeyError(symbol)
        return info

    def ticks(self) -> list[Tick]:
        """Every price tick of the timeline, sorted by time (files are read once)."""
        if self._ticks is None:
            ticks: list[Tick] = []
            for i, path in enumerate(self.timeline.paths):
                loc: tuple[str | int, ...] = ("timeline", "paths", i, path.kind_key)
                try:
                    loaded = load_path(path, self.base_dir)
                except TimelineSourceError as exc:
                    raise located_error(self.source, loc, str(exc)) from None
                unknown = sorted({t.symbol for t in loaded} - set(self.prices))
                if unknown:
                    raise located_error(self.source, loc, f"unknown symbol {unknown[0]} (not in prices)")
                ticks.extend(loaded)
            ticks.sort(key=lambda tick: tick.t)
            self._ticks = ticks
        return self._ticks

    def account(self, name: str) -> Account:
        """The account called ``name``."""
        for account in self.accounts:
            if account.name == name:
                return account
        raise KeyError(name)

    def hourly_rate(self, account: Account, asset: str, symbol: str | None = None) -> Decimal:
        """The hourly interest rate of ``asset`` (isolated pair, then account, then scenario, then 0)."""
        if symbol is not None:
            for pair in account.isolated:
                if pair.symbol == symbol and asset in pair.interest_rates:
                    return pair.interest_rates[asset]
        if asset in account.interest_rates:
            return account.interest_rates[asset]
        return self.interest_rates.get(asset, Decimal(0))


def split_symbol(symbol: str, quote: str) -> SymbolInfo | None:
    for candidate in (quote, *KNOWN_QUOTES):
        if symbol.endswith(candidate) and len(symbol) > len(candidate) + 1:
            return SymbolInfo(base=symbol[: -len(candidate)], quote=candidate)
    return None


def _path_text(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top)"


def located_error(source: str, loc: tuple[str | int, ...], problem: str) -> ScenarioError:
    return ScenarioError(f"{source}: {_path_text(loc)}: {' '.join(problem.split())}")
