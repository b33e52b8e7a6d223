"""Typed parsing of Binance bodies and stream events: worked examples and hostile input."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tree_paths import paths

from monitor.exchange import frames, parse
from monitor.exchange.errors import ExchangeDataError
from monitor.exchange.events import BalanceDelta, BalanceUpdate, LiabilityChange, MarginStatus

CROSS = {  # Binance's documented example
    "created": True,
    "borrowEnabled": True,
    "marginLevel": "11.64405625",
    "collateralMarginLevel": "3.2",
    "totalAssetOfBtc": "6.82728457",
    "totalLiabilityOfBtc": "0.58633215",
    "totalNetAssetOfBtc": "6.24095242",
    "TotalCollateralValueInUSDT": "5.82728457",
    "tradeEnabled": True,
    "accountType": "MARGIN_1",
    "userAssets": [
        {"asset": "BTC", "borrowed": "0.00000000", "free": "0.00499500", "interest": "0.00000000",
         "locked": "0.00000000", "netAsset": "0.00499500"},
        {"asset": "BNB", "borrowed": "201.66666672", "free": "2346.50000000", "interest": "0.00000000",
         "locked": "0.00000000", "netAsset": "2144.83333328"},
        {"asset": "ETH", "borrowed": "0", "free": "0", "interest": "0", "locked": "0", "netAsset": "0"},
    ],
}  # fmt: skip


def side(asset: str, **values: str) -> dict[str, Any]:
    row: dict[str, Any] = {"asset": asset, "borrowed": "0", "free": "0", "interest": "0", "locked": "0"}
    row.update(values, netAsset="0", totalAsset="0", borrowEnabled=True, repayEnabled=True)
    return row


ISOLATED = {
    "assets": [
        {
            "baseAsset": side("BTC", free="0.5", borrowed="0.1", interest="0.0001"),
            "quoteAsset": side("USDT", free="1000", locked="10"),
            "symbol": "BTCUSDT",
            "isolatedCreated": True,
            "enabled": True,
            "marginLevel": "4.2",
            "marginLevelStatus": "EXCESSIVE",
            "marginRatio": "10",
            "indexPrice": "60000.5",
            "liquidatePrice": "0",
            "liquidateRate": "1",
            "tradeEnabled": True,
        }
    ],
    "totalAssetOfBtc": "0.6",
    "totalLiabilityOfBtc": "0.1",
}

TIERS = [
    {"symbol": "BTCUSDT", "tier": 2, "effectiveMultiple": "5", "initialRiskRatio": "1.25",
     "liquidationRiskRatio": "1.15", "baseAssetMaxBorrowable": "20", "quoteAssetMaxBorrowable": "200000"},
    {"symbol": "BTCUSDT", "tier": 1, "effectiveMultiple": "10", "initialRiskRatio": "1.111",
     "liquidationRiskRatio": "1.05", "baseAssetMaxBorrowable": "9", "quoteAssetMaxBorrowable": "70000"},
]  # fmt: skip

RESTRICTIONS = {
    "ipRestrict": False,
    "createTime": 1698645219000,
    "enableReading": True,
    "enableMargin": False,
    "enableSpotAndMarginTrading": False,
    "enableWithdrawals": False,
    "enableInternalTransfer": False,
    "permitsUniversalTransfer": False,
    "enableFutures": False,
}


def test_cross_account_example() -> None:
    """Binance's documented cross account parses to exact Decimals; the all-zero ETH row is dropped."""
    account = parse.cross_account(CROSS)
    assert account.account_type == "MARGIN_1"
    assert account.margin_level == Decimal("11.64405625")
    assert list(account.positions) == ["BTC", "BNB"]
    bnb = account.positions["BNB"]
    assert (bnb.free, bnb.borrowed) == (Decimal("2346.5"), Decimal("201.66666672"))
    assert bnb.net == Decimal("2144.83333328")  # Binance's netAsset
    assert account.total_liability_of_btc == Decimal("0.58633215")


def test_cross_account_type_defaults_and_normalises() -> None:
    """An old body without accountType is MARGIN_1; a lower-case one is upper-cased."""
    body = {k: v for k, v in CROSS.items() if k != "accountType"}
    assert parse.cross_account(body).account_type == "MARGIN_1"
    assert parse.cross_account({**CROSS, "accountType": "Margin_2"}).account_type == "MARGIN_2"


def test_isolated_account_example() -> None:
    """An isolated pair keeps base/quote positions, status and prices; liquidatePrice 0 means none."""
    (pair,) = parse.isolated_account(ISOLATED)
    assert (pair.symbol, pair.base_asset, pair.quote_asset) == ("BTCUSDT", "BTC", "USDT")
    assert pair.base.owed == Decimal("0.1001") and pair.quote.held == Decimal("1010")
    assert pair.margin_level == Decimal("4.2") and pair.margin_level_status == "EXCESSIVE"
    assert pair.liquidate_price is None and pair.index_price == Decimal("60000.5")


def test_trade_coeff_bars() -> None:
    """tradeCoeff maps to the normal / margin_call / liquidation ladder."""
    bars = parse.trade_coeff({"normalBar": "1.5", "marginCallBar": "1.3", "forceLiquidationBar": "1.1"})
    assert dict(bars.levels) == {
        "normal": Decimal("1.5"),
        "margin_call": Decimal("1.3"),
        "liquidation": Decimal("1.1"),
    }


def test_trade_coeff_out_of_order_is_rejected() -> None:
    """Bars that are not normal > margin call > liquidation are refused, not silently used."""
    with pytest.raises(ExchangeDataError, match="normal > margin call > liquidation"):
        parse.trade_coeff({"normalBar": "1.1", "marginCallBar": "1.3", "forceLiquidationBar": "1.5"})


def test_isolated_tiers_pick_the_tier_by_borrowed_amounts() -> None:
    """Tier 1 (10x) gives 1.111 / 1.1 / 1.05; borrowing past its limit: tier 2 (5x), 1.25 / 1.19 / 1.15."""
    low = parse.isolated_tiers("BTCUSDT", TIERS)
    assert dict(low.levels) == {
        "normal": Decimal("1.111"),
        "margin_call": Decimal("1.1"),
        "liquidation": Decimal("1.05"),
    }
    high = parse.isolated_tiers("BTCUSDT", TIERS, base_borrowed=Decimal(10))
    assert dict(high.levels) == {
        "normal": Decimal("1.25"),
        "margin_call": Decimal("1.19"),
        "liquidation": Decimal("1.15"),
    }


def test_isolated_tier_without_table_value_uses_the_midpoint() -> None:
    """When the FAQ ratio does not fall between liquidation and initial, the margin call is their midpoint."""
    odd = [
        {**TIERS[1], "effectiveMultiple": "20", "initialRiskRatio": "1.06", "liquidationRiskRatio": "1.02"}
    ]
    bars = parse.isolated_tiers("BTCUSDT", odd)
    assert bars.levels["margin_call"] == Decimal("1.04")


def test_small_bodies() -> None:
    """Rates, catalog, restrictions, tokens and server time parse to their typed values."""
    assert parse.hourly_rates([{"asset": "BTC", "nextHourlyInterestRate": "0.00000571"}]) == {
        "BTC": Decimal("0.00000571")
    }
    info = {
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"},
            {"symbol": "OLDBTC", "status": "BREAK", "baseAsset": "OLD", "quoteAsset": "BTC"},
        ]
    }
    assert parse.symbol_catalog(info) == {"BTCUSDT": ("BTC", "USDT")}
    permissions = parse.api_restrictions(RESTRICTIONS)
    assert permissions.read_only and permissions.reading and not permissions.ip_restricted
    assert not parse.api_restrictions({**RESTRICTIONS, "permitsUniversalTransfer": True}).read_only
    token = parse.listen_token({"token": "abc+/=", "expirationTime": 1749094553955907})  # µs
    assert token.expires_at_ms == 1749094553955
    assert parse.listen_key({"listenKey": "T3ee22BIYuWqmvne0HNq2A2WsFlEtLhvWCtItw6ffhhdmjifQ2tRbuKkTHhr"})
    assert parse.server_time({"serverTime": 1499827319559}) == 1499827319559


def test_user_and_risk_events() -> None:
    """Stream payloads become typed events carrying the account and the unit scope."""
    position = {"e": "outboundAccountPosition", "E": 5, "u": 5, "B": [{"a": "ETH", "f": "10.5", "l": "0.25"}]}
    assert frames.user_events("a", "ETHUSDT", position) == [
        BalanceUpdate("a", "ETHUSDT", "ETH", Decimal("10.5"), Decimal("0.25"), 5)
    ]
    delta = {"e": "balanceUpdate", "E": 6, "a": "BTC", "d": "-1.5", "T": 6}
    assert frames.user_events("a", None, delta) == [BalanceDelta("a", None, "BTC", Decimal("-1.5"), 6)]
    liability = {"e": "USER_LIABILITY_CHANGE", "E": 7, "a": "USDT", "t": "BORROW", "p": "100", "i": "0.01"}
    assert frames.risk_events("a", liability) == [
        LiabilityChange("a", "USDT", Decimal(100), Decimal("0.01"), "BORROW", 7)
    ]
    status = {"e": "MARGIN_LEVEL_STATUS_CHANGE", "E": 8, "l": "1.25", "s": "MARGIN_CALL"}
    assert frames.user_events("a", None, status) == [MarginStatus("a", Decimal("1.25"), "MARGIN_CALL", 8)]
    assert frames.user_events("a", None, {"e": "executionReport", "E": 9}) == []


HOSTILE_NUMBERS = [
    "1e5", "1E-3", "NaN", "nan", "Infinity", "-Infinity", "inf", "", " ", " 1", "1 ", "1,5", "0x10",
    "1_000", "+1", ".5", "5.", "--1", "1" * 21, "0." + "1" * 21, "١٢", 1.5, None, True, [], {}, 10**25,
]  # fmt: skip

# (parser, body, path to a decimal field, the field's name in the error)
Target = tuple[Callable[[Any], Any], Any, tuple[Any, ...], str]
TARGETS: list[Target] = [
    (parse.cross_account, CROSS, ("marginLevel",), "margin/account.marginLevel"),
    (parse.cross_account, CROSS, ("userAssets", 1, "borrowed"), "margin/account.userAssets[1].borrowed"),
    (parse.cross_account, CROSS, ("userAssets", 0, "free"), "margin/account.userAssets[0].free"),
    (
        parse.isolated_account,
        ISOLATED,
        ("assets", 0, "baseAsset", "interest"),
        "assets[0].baseAsset.interest",
    ),
    (parse.isolated_account, ISOLATED, ("assets", 0, "indexPrice"), "assets[0].indexPrice"),
    (
        parse.trade_coeff,
        {"normalBar": "1.5", "marginCallBar": "1.3", "forceLiquidationBar": "1.1"},
        ("marginCallBar",),
        "tradeCoeff.marginCallBar",
    ),
    (
        lambda b: parse.isolated_tiers("BTCUSDT", b),
        TIERS,
        (1, "liquidationRiskRatio"),
        "liquidationRiskRatio",
    ),
    (
        parse.hourly_rates,
        [{"asset": "BTC", "nextHourlyInterestRate": "0.1"}],
        (0, "nextHourlyInterestRate"),
        "Rate",
    ),
    (
        lambda b: frames.user_events("a", None, b),
        {"e": "outboundAccountPosition", "B": [{"a": "ETH", "f": "1", "l": "0"}]},
        ("B", 0, "f"),
        "outboundAccountPosition.B[0].f",
    ),
    (
        lambda b: frames.risk_events("a", b),
        {"e": "MARGIN_LEVEL_STATUS_CHANGE", "l": "1.2", "s": "NORMAL"},
        ("l",),
        "MARGIN_LEVEL_STATUS_CHANGE.l",
    ),
]


def replaced(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    copied = copy.deepcopy(body)
    node = copied
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copied


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t[3])
@pytest.mark.parametrize("value", HOSTILE_NUMBERS, ids=repr)
def test_hostile_numbers_are_rejected_naming_the_field(target: Target, value: Any) -> None:
    """Exponents, NaN, infinities, blanks, floats and oversized numbers raise one line naming the field."""
    parser, body, path, where = target
    with pytest.raises(ExchangeDataError) as caught:
        parser(replaced(body, path, value))
    message = str(caught.value)
    assert where in message and "\n" not in message and len(message) < 300


@pytest.mark.parametrize("target", TARGETS[:4], ids=lambda t: t[3])
def test_negative_quantities_are_rejected(target: Target) -> None:
    """A negative balance or level is refused."""
    parser, body, path, _where = target
    with pytest.raises(ExchangeDataError, match="non-negative"):
        parser(replaced(body, path, "-1.5"))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["1e5", "NaN", "", "-1", "0.1", "BTC", "1" * 40]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)

PARSERS: list[Callable[[Any], Any]] = [
    parse.cross_account,
    parse.isolated_account,
    parse.trade_coeff,
    lambda b: parse.isolated_tiers("BTCUSDT", b),
    parse.hourly_rates,
    parse.symbol_catalog,
    parse.api_restrictions,
    parse.listen_token,
    parse.listen_key,
    parse.server_time,
    lambda b: frames.user_events("a", None, b),
    lambda b: frames.risk_events("a", b),
]


def mutations(body: Any) -> st.SearchStrategy[Any]:
    """The body with one leaf or key replaced, deleted or retyped."""

    def mutate(path: tuple[Any, ...], value: Any, delete: bool) -> Any:
        copied = copy.deepcopy(body)
        node = copied
        for key in path[:-1]:
            node = node[key]
        if delete and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return copied

    return st.builds(mutate, st.sampled_from(paths(body)), json_values, st.booleans())


@settings(max_examples=300, deadline=None)
@given(parser=st.sampled_from(PARSERS), body=json_values)
def test_arbitrary_json_is_parsed_or_rejected_cleanly(parser: Callable[[Any], Any], body: Any) -> None:
    """Any JSON value either parses or raises ExchangeDataError with one line; nothing else escapes."""
    try:
        parser(body)
    except ExchangeDataError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(
    case=st.sampled_from(
        [
            (parse.cross_account, CROSS),
            (parse.isolated_account, ISOLATED),
            (lambda b: parse.isolated_tiers("BTCUSDT", b), TIERS),
            (parse.api_restrictions, RESTRICTIONS),
        ]
    ).flatmap(lambda c: st.tuples(st.just(c[0]), mutations(c[1])))
)
def test_mutated_documents_never_half_parse(case: tuple[Callable[[Any], Any], Any]) -> None:
    """A documented body with one field broken parses fully (every number exact) or is rejected whole."""
    parser, body = case
    try:
        result = parser(body)
    except ExchangeDataError as exc:
        assert "\n" not in str(exc)
        return
    if isinstance(result, parse.CrossAccount):  # accepted: every position is exactly the body's row
        for row in body["userAssets"]:
            keys = ("free", "locked", "borrowed", "interest")
            expected = [Decimal(row[k]) for k in keys]
            got = result.positions.get(row["asset"])
            assert [getattr(got, k) for k in keys] == expected if got else not any(expected)
    assert result is not None


@given(
    rows=st.lists(
        st.tuples(
            st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=10),
            st.lists(st.decimals(min_value=0, max_value=10**12, places=8), min_size=4, max_size=4),
        ),
        max_size=8,
        unique_by=lambda r: r[0],
    )
)
def test_valid_accounts_round_trip_exactly(rows: list[tuple[str, list[Decimal]]]) -> None:
    """Every decimal string Binance could send comes back as the exact same Decimal."""
    keys = ("free", "locked", "borrowed", "interest")
    body = {
        "marginLevel": "999",
        "userAssets": [
            {"asset": a, **{k: f"{v:f}" for k, v in zip(keys, values, strict=True)}} for a, values in rows
        ],
    }
    account = parse.cross_account(body)
    for asset, values in rows:
        if any(values):
            position = account.positions[asset]
            assert [position.free, position.locked, position.borrowed, position.interest] == values
        else:
            assert asset not in account.positions


def test_cross_account_margin_level_status_when_present() -> None:
    """Binance's documented cross body has no ``marginLevelStatus``; read it when present, refuse junk."""
    assert parse.cross_account(CROSS).margin_level_status == ""
    assert (
        parse.cross_account({**CROSS, "marginLevelStatus": "MARGIN_CALL"}).margin_level_status
        == "MARGIN_CALL"
    )
    with pytest.raises(ExchangeDataError, match=r"margin/account\.marginLevelStatus: expected a status name"):
        parse.cross_account({**CROSS, "marginLevelStatus": "MARGIN CALL; DROP"})


@pytest.mark.parametrize("value", [True, 1, 1.5, "1e4", "1_000", "+1", "-1", " 1", "0x1", "NaN", "", None])
def test_price_is_a_plain_unsigned_decimal_string(value: Any) -> None:
    """The one reader of Binance prices refuses what ``float()`` would take."""
    with pytest.raises(ExchangeDataError, match=r"ticker\.b: expected a plain decimal string"):
        parse.price(value, "ticker.b")
    assert parse.price("0.00012345") == 0.00012345 and parse.price("0") == 0.0


def test_ticker_prices_reads_the_wanted_symbols_all_or_nothing() -> None:
    """``GET /api/v3/ticker/price``: the wanted symbols' prices; a malformed row fails the whole body."""
    body = [{"symbol": "BTCUSDT", "price": "30000.5"}, {"symbol": "ETHUSDT", "price": "2000"}]
    assert parse.ticker_prices(body, {"BTCUSDT", "XRPUSDT"}) == {"BTCUSDT": 30000.5}
    assert parse.ticker_prices(body) == {"BTCUSDT": 30000.5, "ETHUSDT": 2000.0}
    with pytest.raises(ExchangeDataError, match=r"ticker/price\[1\]\.price: expected a plain decimal string"):
        parse.ticker_prices([*body[:1], {"symbol": "ETHUSDT", "price": 2000}])
