"""Binance REST bodies → typed values, all or nothing.

Binance sends money and quantities as decimal strings: they become ``Decimal`` here and nowhere
else. A body that does not have the documented shape raises ``ExchangeDataError`` with one line
naming the endpoint, the field and what was wrong; no partially parsed value ever escapes.
Accepted numbers are plain decimals (``-?digits[.digits]``, at most 20 digits each side): exponent
form, NaN, infinities, empty strings and floats are refused.

Prices are the one exception to ``Decimal``: ``price`` reads a price field (REST ticker, market
stream frame) into the float the price book's hot path uses, with the same grammar, unsigned. It is
the only place a Binance price string becomes a number (the market stream's core and
``ticker_prices`` call it).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from monitor.exchange.errors import ExchangeDataError
from monitor.risk.margin import Bars, Position

_PRICE = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")
_DECIMAL = re.compile(r"-?" + _PRICE.pattern)
_ZERO = re.compile(r"0(?:\.0{1,20})?")  # zero as Binance writes it ("0.00000000"): a subset of _DECIMAL
_AMOUNTS = ("free", "locked", "borrowed", "interest")
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-.]{1,512}")
ZERO = Decimal(0)

# Isolated margin-call ratios by leverage class (Binance FAQ "Tiered Leverage Function on Isolated
# Margin": 10x liquidation 1.05 / margin call 1.1; 5x 1.15 / 1.19; 3x 1.18 / 1.22). The API gives
# only the liquidation ratio; the margin call comes from this table.
ISOLATED_MARGIN_CALL = {10: Decimal("1.1"), 5: Decimal("1.19"), 3: Decimal("1.22")}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def fail(where: str, what: str, value: Any = ...) -> ExchangeDataError:
    """An ``ExchangeDataError`` for ``where`` (endpoint and field path)."""
    got = "" if value is ... else f", got {_show(value)}"
    return ExchangeDataError(f"{where}: expected {what}{got}")


def obj(value: Any, where: str) -> dict[str, Any]:
    """``value`` as a JSON object."""
    if type(value) is not dict:
        raise fail(where, "an object", value)
    return value


def array(value: Any, where: str) -> list[Any]:
    """``value`` as a JSON array."""
    if type(value) is not list:
        raise fail(where, "an array", value)
    return value


def field(body: dict[str, Any], key: str, where: str) -> Any:
    """``body[key]``, which must be present."""
    if key not in body:
        raise fail(f"{where}.{key}", "a value (missing)")
    return body[key]


def decimal(value: Any, where: str, *, signed: bool = False) -> Decimal:
    """A plain decimal string (or an integer) as ``Decimal``; negative only when ``signed``."""
    if (type(value) is int and abs(value) < 10**20) or (type(value) is str and _DECIMAL.fullmatch(value)):
        number = Decimal(value)
    else:
        raise fail(where, "a decimal string", value)
    if number < 0 and not signed:
        raise fail(where, "a non-negative decimal", value)
    return number


def price(value: Any, where: str = "price") -> float:
    """A price field as Binance writes it, a plain unsigned decimal string, as float. Anything else
    (a JSON number or boolean, an exponent, a sign, ``NaN``, blanks, ``1_000``) raises: ``float()``
    alone would take ``true`` as 1.0 and ``"1_000"`` as 1000.0. Zero passes (a side with no quote)."""
    if type(value) is not str or _PRICE.fullmatch(value) is None:
        raise fail(where, "a plain decimal string", value)
    return float(value)


def ticker_prices(body: Any, wanted: Collection[str] | None = None) -> dict[str, float]:
    """``GET /api/v3/ticker/price`` (all symbols) → {symbol: price}, only the ``wanted`` ones if given."""
    where = "ticker/price"
    prices: dict[str, float] = {}
    for i, row in enumerate(array(body, where)):
        at = f"{where}[{i}]"
        symbol = name(field(obj(row, at), "symbol", at), f"{at}.symbol")
        if wanted is None or symbol in wanted:
            prices[symbol] = price(field(row, "price", at), f"{at}.price")
    return prices


def name(value: Any, where: str) -> str:
    """An asset or symbol name: 1–32 letters or digits."""
    if type(value) is not str or not 0 < len(value) <= 32 or not value.isalnum():
        raise fail(where, "an asset or symbol name", value)
    return value


def flag(value: Any, where: str) -> bool:
    """A JSON boolean."""
    if value is not True and value is not False:
        raise fail(where, "true or false", value)
    return bool(value)


def integer(value: Any, where: str) -> int:
    """A non-negative JSON integer."""
    if type(value) is not int or not 0 <= value < 2**63:
        raise fail(where, "a non-negative integer", value)
    return value


def position(row: dict[str, Any], where: str) -> Position:
    """free / locked / borrowed / interest of one asset row."""
    return Position(
        free=decimal(field(row, "free", where), f"{where}.free"),
        locked=decimal(field(row, "locked", where), f"{where}.locked"),
        borrowed=decimal(field(row, "borrowed", where), f"{where}.borrowed"),
        interest=decimal(field(row, "interest", where), f"{where}.interest"),
    )


def _is_empty(p: Position) -> bool:
    return p.free == ZERO and p.locked == ZERO and p.borrowed == ZERO and p.interest == ZERO


def _zero_row(row: dict[str, Any]) -> bool:
    """Every amount of the row is a zero string (``"0.00000000"``): a row :func:`position` would
    accept and :func:`_is_empty` drop, told without four ``Decimal`` conversions. Binance lists
    assets with all-zero amounts in ``userAssets`` (two of the four rows of its own example; how
    many a real account gets is not documented): 400 rows took 1.9 ms of the loop
    at every re-read of every account, 0.54 ms with the skip (``bench/parse_rows.py``)."""
    for key in _AMOUNTS:
        value = row.get(key)
        if type(value) is not str or _ZERO.fullmatch(value) is None:
            return False
    return True


@dataclass(frozen=True, slots=True)
class CrossAccount:
    """A cross margin account: positions of every asset that is not all zero."""

    account_type: str
    margin_level: Decimal
    positions: dict[str, Position]
    total_asset_of_btc: Decimal | None = None
    total_liability_of_btc: Decimal | None = None
    margin_level_status: str = ""  # not in Binance's documented cross body; read when present


def cross_account(body: Any) -> CrossAccount:
    """``GET /sapi/v1/margin/account``. ``accountType`` defaults to MARGIN_1 when absent."""
    where = "margin/account"
    root = obj(body, where)
    positions: dict[str, Position] = {}
    for i, row in enumerate(array(field(root, "userAssets", where), f"{where}.userAssets")):
        at = f"{where}.userAssets[{i}]"
        row = obj(row, at)
        asset = name(field(row, "asset", at), f"{at}.asset")
        if asset in positions:
            raise fail(f"{at}.asset", "each asset once", asset)
        if _zero_row(row):
            continue
        pos = position(row, at)
        if not _is_empty(pos):
            positions[asset] = pos
    account_type = root.get("accountType", "MARGIN_1")
    if type(account_type) is not str or not account_type.replace("_", "").isalnum():
        raise fail(f"{where}.accountType", "an account type", account_type)
    totals = [
        decimal(root[key], f"{where}.{key}") if key in root else None
        for key in ("totalAssetOfBtc", "totalLiabilityOfBtc")
    ]
    status = root.get("marginLevelStatus", "")
    if type(status) is not str or not (status == "" or status.replace("_", "").isalnum()):
        raise fail(f"{where}.marginLevelStatus", "a status name", status)
    return CrossAccount(
        margin_level_status=status,
        account_type=account_type.upper(),
        margin_level=decimal(field(root, "marginLevel", where), f"{where}.marginLevel"),
        positions=positions,
        total_asset_of_btc=totals[0],
        total_liability_of_btc=totals[1],
    )


@dataclass(frozen=True, slots=True)
class IsolatedPair:
    """One isolated margin pair as Binance reports it."""

    symbol: str
    base_asset: str
    quote_asset: str
    base: Position
    quote: Position
    margin_level: Decimal
    margin_level_status: str
    liquidate_price: Decimal | None  # None where Binance reports 0 (no liquidation price)
    index_price: Decimal | None
    enabled: bool


def isolated_account(body: Any) -> list[IsolatedPair]:
    """``GET /sapi/v1/margin/isolated/account``: every pair listed in ``assets``."""
    where = "margin/isolated/account"
    root = obj(body, where)
    pairs: list[IsolatedPair] = []
    seen: set[str] = set()
    for i, row in enumerate(array(field(root, "assets", where), f"{where}.assets")):
        at = f"{where}.assets[{i}]"
        row = obj(row, at)
        symbol = name(field(row, "symbol", at), f"{at}.symbol")
        if symbol in seen:
            raise fail(f"{at}.symbol", "each symbol once", symbol)
        seen.add(symbol)
        sides = []
        for side in ("baseAsset", "quoteAsset"):
            part = obj(field(row, side, at), f"{at}.{side}")
            sides.append(
                (
                    name(field(part, "asset", f"{at}.{side}"), f"{at}.{side}.asset"),
                    position(part, f"{at}.{side}"),
                )
            )
        status = row.get("marginLevelStatus", "")
        if type(status) is not str or not (status == "" or status.replace("_", "").isalnum()):
            raise fail(f"{at}.marginLevelStatus", "a status name", status)
        optional = {
            key: decimal(row[key], f"{at}.{key}") if key in row else None
            for key in ("liquidatePrice", "indexPrice")
        }
        enabled = flag(row["enabled"], f"{at}.enabled") if "enabled" in row else True
        pairs.append(
            IsolatedPair(
                symbol=symbol,
                base_asset=sides[0][0],
                quote_asset=sides[1][0],
                base=sides[0][1],
                quote=sides[1][1],
                margin_level=decimal(field(row, "marginLevel", at), f"{at}.marginLevel"),
                margin_level_status=status,
                liquidate_price=optional["liquidatePrice"] or None,
                index_price=optional["indexPrice"] or None,
                enabled=enabled,
            )
        )
    return pairs


def _bar(value: Any, where: str) -> Decimal:
    number = decimal(value, where)
    if not Decimal("0.5") <= number <= Decimal(100):
        raise fail(where, "a margin level between 0.5 and 100", value)
    return number


def _ladder(normal: Decimal, margin_call: Decimal, liquidation: Decimal, where: str) -> Bars:
    if not normal > margin_call > liquidation:
        raise fail(
            where, "bars in order normal > margin call > liquidation", (normal, margin_call, liquidation)
        )
    return Bars(levels={"normal": normal, "margin_call": margin_call, "liquidation": liquidation})


def trade_coeff(body: Any) -> Bars:
    """``GET /sapi/v1/margin/tradeCoeff`` → bars ``normal``, ``margin_call``, ``liquidation``."""
    where = "margin/tradeCoeff"
    root = obj(body, where)
    return _ladder(
        _bar(field(root, "normalBar", where), f"{where}.normalBar"),
        _bar(field(root, "marginCallBar", where), f"{where}.marginCallBar"),
        _bar(field(root, "forceLiquidationBar", where), f"{where}.forceLiquidationBar"),
        where,
    )


def isolated_tiers(
    symbol: str, body: Any, base_borrowed: Decimal = ZERO, quote_borrowed: Decimal = ZERO
) -> Bars:
    """``GET /sapi/v1/margin/isolatedMarginTier`` → the pair's bars.

    The tier is the lowest whose max borrowables cover what is borrowed (the highest tier if none
    does). ``liquidation`` = its ``liquidationRiskRatio``; ``normal`` = its ``initialRiskRatio``;
    ``margin_call`` = the FAQ ratio of its leverage class (``ISOLATED_MARGIN_CALL``; the nearest
    class at or below ``effectiveMultiple``), or halfway between the two when the table value
    does not fall strictly between them.
    """
    where = f"margin/isolatedMarginTier[{symbol}]"
    rows = array(body, where)
    tiers: list[tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal]] = []
    for i, row in enumerate(rows):
        at = f"{where}[{i}]"
        row = obj(row, at)
        tiers.append(
            (
                integer(field(row, "tier", at), f"{at}.tier"),
                decimal(field(row, "effectiveMultiple", at), f"{at}.effectiveMultiple"),
                _bar(field(row, "initialRiskRatio", at), f"{at}.initialRiskRatio"),
                _bar(field(row, "liquidationRiskRatio", at), f"{at}.liquidationRiskRatio"),
                decimal(field(row, "baseAssetMaxBorrowable", at), f"{at}.baseAssetMaxBorrowable"),
                decimal(field(row, "quoteAssetMaxBorrowable", at), f"{at}.quoteAssetMaxBorrowable"),
            )
        )
    if not tiers:
        raise fail(where, "at least one tier", rows)
    tiers.sort()
    chosen = next((t for t in tiers if base_borrowed <= t[4] and quote_borrowed <= t[5]), tiers[-1])
    _, multiple, initial, liquidation, _, _ = chosen
    classes = [m for m in sorted(ISOLATED_MARGIN_CALL) if m <= multiple]
    margin_call = ISOLATED_MARGIN_CALL[classes[-1]] if classes else ISOLATED_MARGIN_CALL[3]
    if not initial > margin_call > liquidation:
        margin_call = (initial + liquidation) / 2
    return _ladder(initial, margin_call, liquidation, where)


def hourly_rates(body: Any) -> dict[str, Decimal]:
    """``GET /sapi/v1/margin/next-hourly-interest-rate`` → {asset: rate per hour}."""
    where = "margin/next-hourly-interest-rate"
    rates: dict[str, Decimal] = {}
    for i, row in enumerate(array(body, where)):
        at = f"{where}[{i}]"
        row = obj(row, at)
        asset = name(field(row, "asset", at), f"{at}.asset")
        rate = decimal(field(row, "nextHourlyInterestRate", at), f"{at}.nextHourlyInterestRate")
        if rate >= 1:
            raise fail(
                f"{at}.nextHourlyInterestRate", "an hourly rate below 1", row["nextHourlyInterestRate"]
            )
        rates[asset] = rate
    return rates


def symbol_catalog(body: Any) -> dict[str, tuple[str, str]]:
    """``GET /api/v3/exchangeInfo`` → {symbol: (base, quote)} for symbols whose status is TRADING."""
    return {
        s: (base, quote) for s, (base, quote, status) in symbol_listings(body).items() if status == "TRADING"
    }


def symbol_listings(body: Any) -> dict[str, tuple[str, str, str]]:
    """``GET /api/v3/exchangeInfo`` → {symbol: (base, quote, status)} for every listed symbol
    (``TRADING``, or ``BREAK``/``HALT``/... for a pair that does not trade: no live price)."""
    where = "exchangeInfo"
    catalog: dict[str, tuple[str, str, str]] = {}
    for i, row in enumerate(array(field(obj(body, where), "symbols", where), f"{where}.symbols")):
        at = f"{where}.symbols[{i}]"
        row = obj(row, at)
        symbol = name(field(row, "symbol", at), f"{at}.symbol")
        base = name(field(row, "baseAsset", at), f"{at}.baseAsset")
        quote = name(field(row, "quoteAsset", at), f"{at}.quoteAsset")
        status = row.get("status", "TRADING")
        if type(status) is not str:
            raise fail(f"{at}.status", "a status name", status)
        catalog[symbol] = (base, quote, status)
    return catalog


@dataclass(frozen=True, slots=True)
class KeyPermissions:
    """What an API key may do (``GET /sapi/v1/account/apiRestrictions``)."""

    reading: bool
    margin: bool
    trading: bool
    withdrawals: bool
    transfer: bool
    futures: bool
    ip_restricted: bool

    @property
    def read_only(self) -> bool:
        """True when the key can neither trade, withdraw nor transfer."""
        return not (self.trading or self.withdrawals or self.transfer)


def api_restrictions(body: Any) -> KeyPermissions:
    """``GET /sapi/v1/account/apiRestrictions``; the trade/withdraw flags must be present."""
    where = "account/apiRestrictions"
    root = obj(body, where)

    def required(key: str) -> bool:
        return flag(field(root, key, where), f"{where}.{key}")

    def optional(key: str) -> bool:
        return flag(root[key], f"{where}.{key}") if key in root else False

    return KeyPermissions(
        reading=required("enableReading"),
        margin=optional("enableMargin"),
        trading=required("enableSpotAndMarginTrading"),
        withdrawals=required("enableWithdrawals"),
        transfer=optional("permitsUniversalTransfer") or optional("enableInternalTransfer"),
        futures=optional("enableFutures"),
        ip_restricted=optional("ipRestrict"),
    )


@dataclass(frozen=True, slots=True)
class ListenToken:
    """A user-data listen token and when it expires (ms since the epoch)."""

    token: str
    expires_at_ms: int

    def __repr__(self) -> str:
        return f"ListenToken(expires_at_ms={self.expires_at_ms})"


def _token(value: Any, where: str) -> str:
    if type(value) is not str or not _TOKEN.fullmatch(value):
        raise fail(where, "a token string", "<redacted>" if type(value) is str else value)
    return value


def expiration_ms(value: Any, where: str) -> int:
    """An expiration time in ms (microsecond values, > 1e14, are scaled down)."""
    number = integer(value, where)
    return number // 1000 if number > 10**14 else number


def listen_token(body: Any) -> ListenToken:
    """``POST /sapi/v1/userListenToken`` → token and expirationTime."""
    where = "userListenToken"
    root = obj(body, where)
    return ListenToken(
        token=_token(field(root, "token", where), f"{where}.token"),
        expires_at_ms=expiration_ms(field(root, "expirationTime", where), f"{where}.expirationTime"),
    )


def listen_key(body: Any) -> str:
    """``POST /sapi/v1/margin/listen-key`` → the key."""
    where = "margin/listen-key"
    return _token(field(obj(body, where), "listenKey", where), f"{where}.listenKey")


def server_time(body: Any) -> int:
    """``GET /api/v3/time`` → serverTime (ms)."""
    where = "time"
    return integer(field(obj(body, where), "serverTime", where), f"{where}.serverTime")
