"""A cross margin account reply's parse with Binance's zero rows (not a CI test); prints JSON.

``GET /sapi/v1/margin/account`` lists assets with all-zero amounts in ``userAssets`` (two of the
four rows of Binance's own example; how many a real account gets is not documented: 400 here).
The daemon parses it at every re-read of every account, on the event loop. Timed here, in the
same run: ``cross_account`` as it is (zero rows skipped before their amounts are parsed) and the
baseline, every row parsed and the empty ones dropped after (what it did before); ``json.loads``
of the body beside them. Every run's figure is printed.

Usage: ``python bench/parse_rows.py [--rows 400] [--held 5] [--repeat 200] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from monitor.exchange import parse
from monitor.exchange.parse import cross_account


def every_row_parsed(body: dict[str, Any]) -> dict[str, Any]:
    """The baseline: each row's four amounts parsed, the empty ones dropped after."""
    positions = {}
    for i, row in enumerate(body["userAssets"]):
        at = f"margin/account.userAssets[{i}]"
        pos = parse.position(row, at)
        if not parse._is_empty(pos):
            positions[parse.name(row["asset"], at)] = pos
    return positions


def body(rows: int, held: int) -> str:
    zero = dict.fromkeys(("free", "locked", "borrowed", "interest", "netAsset"), "0.00000000")
    assets = [{"asset": f"A{i:03d}", **zero} for i in range(rows)]
    for i in range(held):
        assets[i] = {**assets[i], "free": "1.50000000", "netAsset": "1.50000000"}
    return json.dumps({"marginLevel": "1.5", "accountType": "MARGIN_1", "userAssets": assets})


def timed(f: Callable[[Any], Any], raw: str, repeat: int) -> float:
    """ms per call of ``f(json.loads(raw))``, less ``json.loads`` alone."""
    start = time.perf_counter()
    for _ in range(repeat):
        f(json.loads(raw))
    total = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeat):
        json.loads(raw)
    return (total - (time.perf_counter() - start)) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--held", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    raw = body(args.rows, args.held)
    kept = cross_account(json.loads(raw)).positions
    assert kept == every_row_parsed(json.loads(raw)) and len(kept) == args.held
    runs = [
        {
            "baseline_ms": round(timed(every_row_parsed, raw, args.repeat), 3),
            "cross_account_ms": round(timed(cross_account, raw, args.repeat), 3),
        }
        for _ in range(args.runs)
    ]
    start = time.perf_counter()
    for _ in range(args.repeat):
        json.loads(raw)
    loads = (time.perf_counter() - start) / args.repeat * 1000
    print(json.dumps({"rows": args.rows, "held": args.held, "json_loads_ms": round(loads, 3), "runs": runs}))


if __name__ == "__main__":
    main()
