"""REST renderings of account state, with Binance's field names and numbers as 8-decimal strings.

Choices where Binance is silent (also in monitor/sim/scenarios/README.md):
- ``marginLevel`` with no debt is ``"999.00000000"``; ``collateralMarginLevel`` equals
  ``marginLevel`` (no haircuts are simulated).
- ``totalLiabilityOfBtc`` includes interest (so marginLevel = totalAssetOfBtc / totalLiabilityOfBtc).
- ``TotalCollateralValueInUSDT`` is the asset value in the scenario's quote asset.
- ``borrowEnabled``: level above the initial bar; ``transferOutEnabled``: level above 2 (or no debt).
- Isolated: ``liquidatePrice`` solves level = the pair's liquidation bar ("0" when no price does);
  ``liquidateRate`` is the relative move from the index price to it; ``marginRatio`` is the
  pair's leverage class; ``indexPrice`` is the current price. With ``symbols=`` the answer holds
  only ``assets`` (no totals), as in Binance's documentation.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from monitor.sim.levels import Holding, fmt, liquidation_price, status
from monitor.sim.state import AccountState, ExchangeState, PairState

TRANSFER_OUT_LEVEL = Decimal(2)


def _btc(state: ExchangeState, value_in_quote: Decimal) -> Decimal:
    return state.value_in(value_in_quote, state.quote, "BTC")


def cross_account(state: ExchangeState, acc: AccountState) -> dict[str, Any]:
    """``GET /sapi/v1/margin/account``."""
    level = state.cross_level(acc)
    ml = level.margin_level
    bars = acc.spec.effective_bars
    return {
        "created": True,
        "borrowEnabled": ml is None or ml > bars.normal,
        "marginLevel": fmt(level.reported),
        "collateralMarginLevel": fmt(level.reported),
        "totalAssetOfBtc": fmt(_btc(state, level.assets)),
        "totalLiabilityOfBtc": fmt(_btc(state, level.liabilities)),
        "totalNetAssetOfBtc": fmt(_btc(state, level.assets - level.liabilities)),
        "TotalCollateralValueInUSDT": fmt(level.assets),
        "totalOpenOrderLossInUSDT": fmt(Decimal(0)),
        "tradeEnabled": True,
        "transferInEnabled": True,
        "transferOutEnabled": ml is None or ml > TRANSFER_OUT_LEVEL,
        "accountType": acc.spec.account_type,
        "userAssets": [
            {
                "asset": h.asset,
                "borrowed": fmt(h.borrowed),
                "free": fmt(h.free),
                "interest": fmt(h.interest),
                "locked": fmt(h.locked),
                "netAsset": fmt(h.net),
            }
            for h in acc.cross.values()
        ],
    }


def _pair_asset(state: ExchangeState, h: Holding, price_in_quote: Decimal, quote: str) -> dict[str, Any]:
    return {
        "asset": h.asset,
        "borrowEnabled": True,
        "borrowed": fmt(h.borrowed),
        "free": fmt(h.free),
        "interest": fmt(h.interest),
        "locked": fmt(h.locked),
        "netAsset": fmt(h.net),
        "netAssetOfBtc": fmt(state.value_in(h.net * price_in_quote, quote, "BTC")),
        "repayEnabled": True,
        "totalAsset": fmt(h.held),
    }


def isolated_pair(state: ExchangeState, pair: PairState) -> dict[str, Any]:
    """One entry of ``assets`` in ``GET /sapi/v1/margin/isolated/account``."""
    price = state.prices[pair.spec.symbol]
    level = state.pair_level(pair)
    bars = pair.spec.effective_bars
    liq = liquidation_price(pair.base, pair.quote, bars.liquidation)
    quote = pair.quote.asset
    return {
        "baseAsset": _pair_asset(state, pair.base, price, quote),
        "quoteAsset": _pair_asset(state, pair.quote, Decimal(1), quote),
        "symbol": pair.spec.symbol,
        "isolatedCreated": True,
        "enabled": pair.spec.enabled,
        "marginLevel": fmt(level.reported),
        "marginLevelStatus": status(level.margin_level, bars),
        "marginRatio": fmt(Decimal(pair.spec.leverage)),
        "indexPrice": fmt(price),
        "liquidatePrice": fmt(liq or Decimal(0)),
        "liquidateRate": fmt(abs(price - liq) / price if liq is not None else Decimal(0)),
        "tradeEnabled": True,
    }


def isolated_account(state: ExchangeState, acc: AccountState, symbols: list[str] | None) -> dict[str, Any]:
    """``GET /sapi/v1/margin/isolated/account`` (all pairs, or the ``symbols=`` ones)."""
    pairs = [acc.pairs[s] for s in symbols if s in acc.pairs] if symbols else list(acc.pairs.values())
    body: dict[str, Any] = {"assets": [isolated_pair(state, p) for p in pairs]}
    if symbols:
        return body
    assets = liabilities = Decimal(0)
    for pair in pairs:
        level = state.pair_level(pair)
        assets += state.value_in(level.assets, pair.quote.asset, "BTC")
        liabilities += state.value_in(level.liabilities, pair.quote.asset, "BTC")
    body["totalAssetOfBtc"] = fmt(assets)
    body["totalLiabilityOfBtc"] = fmt(liabilities)
    body["totalNetAssetOfBtc"] = fmt(assets - liabilities)
    return body


def tiers(pair: PairState) -> list[dict[str, Any]]:
    """``GET /sapi/v1/margin/isolatedMarginTier`` rows: the scenario's, else three generated tiers."""
    spec = pair.spec
    bars = spec.effective_bars
    rows: list[dict[str, Any]] = [{"symbol": spec.symbol, **t.model_dump()} for t in spec.tiers or []]
    for tier in () if rows else (1, 2, 3):
        # higher tiers allow less leverage, never below 2x (1x would make the ratio infinite)
        multiple = Decimal(max(2, spec.leverage - (tier - 1) * max(1, spec.leverage // 5)))
        rows.append(
            {
                "symbol": spec.symbol,
                "tier": tier,
                "effectiveMultiple": multiple,
                "initialRiskRatio": (multiple / (multiple - 1)).quantize(Decimal("0.001")),
                "liquidationRiskRatio": bars.liquidation,
                "baseAssetMaxBorrowable": Decimal(10 * tier * tier),
                "quoteAssetMaxBorrowable": Decimal(100_000 * tier * tier),
            }
        )
    return [{k: (f"{v:f}" if isinstance(v, Decimal) else v) for k, v in row.items()} for row in rows]
