"""The history job: levels of priced, not blind units go to the file; betas come from the recorded
minutes (a real SQLite file, a real AccountBook)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from monitor.alerts.policy import AlertEvent
from monitor.ops.history import History
from monitor.ops.recorder import Recorder
from monitor.risk.book import AccountBook
from monitor.risk.margin import Bars, Position

T0 = 1_767_225_600.0


def book() -> AccountBook:
    b = AccountBook(quote="USDT")
    b.upsert_cross("a", {"BTC": Position(free=Decimal(1)), "ETH": Position(free=Decimal(10)),
                         "USDT": Position(borrowed=Decimal(30_000))}, Bars.classic())  # fmt: skip
    b.upsert_cross(
        "b", {"SOL": Position(free=Decimal(1)), "USDT": Position(borrowed=Decimal(10))}, Bars.classic()
    )
    return b


async def test_samples_levels_skip_blind_and_unpriced_and_keep_alerts(tmp_path: Path) -> None:
    """A priced unit's level is recorded; a blind one and one without a price are gaps; alerts noted
    by the pump land in the file with the next sample."""
    now = [T0]
    b = book()
    b.on_price("BTCUSDT", 30_000.0)
    b.on_price("ETHUSDT", 2_000.0)
    rec = Recorder(History(tmp_path / "h.sqlite"), b, lambda: now[0])
    rec.note(AlertEvent("firing", "cross:a", "normal", 1.5, 1.49, None, T0, T0, ("r",), "k", 1, 1))
    await rec.sample()
    now[0] += 5
    await rec.sample(blind={"cross:a"})
    series = rec.history.series("cross:a", now[0])
    assert [p.level for p in series] == [round(50_000 / 30_000, 6)]  # one sample (millionths): blind = gap
    assert rec.history.series("cross:b", now[0]) == []  # SOL has no price: never sampled
    assert [(e.kind, e.rule) for e in rec.history.events("cross:a", now[0])] == [("firing", "normal")]
    rec.history.close()


async def test_betas_come_from_the_recorded_minutes(tmp_path: Path) -> None:
    """ETH moving 1.5 × BTC's one-minute returns for an hour gets beta 1.5; before 30 minutes of
    history it is 1, marked as no history."""
    now = [T0]
    b = book()
    rec = Recorder(History(tmp_path / "h.sqlite"), b, lambda: now[0])
    btc, eth = 30_000.0, 2_000.0
    for m in range(61):
        r = 0.001 * ((m * 7) % 5 - 2)
        btc, eth = btc * (1 + r), eth * (1 + 1.5 * r)
        b.on_price("BTCUSDT", btc)
        b.on_price("ETHUSDT", eth)
        await rec.sample()
        if m == 10:
            assert rec.betas["ETH"].samples == 0
        now[0] += 60
    assert rec.betas["ETH"].value == Decimal("1.50") and rec.betas["ETH"].samples >= 30
    rec.history.close()
