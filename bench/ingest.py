"""Ingest speed of one market connection: frames/s from the socket to ``on_prices``; one JSON document.

A server in a child process (so its CPU is not ours) accepts each connection and writes a
pre-framed burst of ``--frames`` combined-stream bookTicker frames (``{"stream": ..., "data":
{"u", "s", "b", "B", "a", "A"}}``, as Binance sends them) over ``--symbols`` symbols in one
write, then idles. Two clients read the same burst, alternately, ``--runs`` times each:

- ``market``: ``MarketStream`` (one connection: the symbols fit in the URL), timed from the
  connection coming up (``on_state``) to the last frame's price reaching ``on_prices``;
- ``bare``: a bare websockets client (the same connection options) doing ``orjson.loads`` and the
  bookTicker mid into a dict per frame, timed from connect to the last frame.

Prints, for each, the median msg/s (wall clock) and CPU µs per frame (this process's CPU time over
the same span: steadier than msg/s on a busy machine), and ``ratio`` = market / bare msg/s,
``cpu_ratio`` = market / bare CPU per frame.

Usage: ``python bench/ingest.py [--frames 200000] [--symbols 100] [--runs 7]``. About 40 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from monitor.exchange.events import StreamState
from monitor.exchange.streams import MarketStream, default_connect
from monitor.logs import configure_logging

LAST_BID = "99999.0"  # the last frame's price, seen nowhere before it


def symbols(count: int) -> list[str]:
    return [f"S{i:03d}USDT" for i in range(count)]


def frame(payload: bytes) -> bytes:
    """One unmasked server text frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def burst(frames: int, names: list[str]) -> bytes:
    """``frames`` bookTicker frames round-robin over ``names``, the last one priced ``LAST_BID``."""
    out = []
    for i in range(frames):
        s = names[i % len(names)]
        bid = LAST_BID if i == frames - 1 else f"{100 + (i % 997) / 100:.8f}"
        data = {"u": 400900217 + i, "s": s, "b": bid, "B": "31.21000000", "a": bid, "A": "40.66000000"}
        out.append(frame(orjson.dumps({"stream": f"{s.lower()}@bookTicker", "data": data})))
    return b"".join(out)


async def serve_bursts(frames: int, count: int) -> None:
    """The child: print the port, then write the burst to every connection."""
    blob = burst(frames, symbols(count))

    async def handler(ws: ServerConnection) -> None:
        ws.transport.write(blob)  # bypasses websockets' per-frame send: the server costs ~nothing
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


async def run_market(url: str, frames: int, names: list[str]) -> tuple[float, float]:
    done = asyncio.Event()
    up: list[float] = []
    last = names[(frames - 1) % len(names)]
    target = float(LAST_BID)

    def on_prices(batch: dict[str, float]) -> None:
        if batch.get(last) == target:
            done.set()

    def on_state(state: StreamState) -> None:
        if state.up and not up:
            up.extend((time.perf_counter(), time.process_time()))

    stream = MarketStream(url, names, on_prices, on_state=on_state)
    task = asyncio.create_task(stream.run())
    try:
        await asyncio.wait_for(done.wait(), 120)
        elapsed, cpu = time.perf_counter() - up[0], time.process_time() - up[1]
        assert stream.stats().messages == frames, stream.stats()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return frames / elapsed, cpu / frames * 1e6


async def run_bare(url: str, frames: int, names: list[str]) -> tuple[float, float]:
    path = "/stream?streams=" + "/".join(f"{s.lower()}@bookTicker" for s in names)
    latest: dict[str, float] = {}
    loads = orjson.loads
    count = 0
    async with default_connect(url + path) as ws:
        started, cpu = time.perf_counter(), time.process_time()
        async for raw in ws:
            data = loads(raw)["data"]
            latest[data["s"]] = (float(data["b"]) + float(data["a"])) / 2.0
            count += 1
            if count == frames:
                break
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return frames / elapsed, cpu / frames * 1e6


async def measure(port: int, frames: int, count: int, runs: int) -> dict[str, object]:
    url = f"ws://127.0.0.1:{port}"
    names = symbols(count)
    market: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    await run_bare(url, frames, names)  # warm-up: imports, caches, the server's first burst
    for _ in range(runs):
        market.append(await run_market(url, frames, names))
        bare.append(await run_bare(url, frames, names))
    m, b = statistics.median(r[0] for r in market), statistics.median(r[0] for r in bare)
    mc, bc = statistics.median(r[1] for r in market), statistics.median(r[1] for r in bare)
    return {
        "frames": frames,
        "symbols": count,
        "runs": runs,
        "market_msg_s": round(m),
        "bare_msg_s": round(b),
        "ratio": round(m / b, 3),
        "market_cpu_us_per_msg": round(mc, 2),
        "bare_cpu_us_per_msg": round(bc, 2),
        "cpu_ratio": round(mc / bc, 3),
        "market_runs": [round(x[0]) for x in market],
        "bare_runs": [round(x[0]) for x in bare],
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.symbols <= 200:
        parser.error("--symbols must be 1..200 (they go in the URL, one connection)")
    if args.serve:
        asyncio.run(serve_bursts(args.frames, args.symbols))
        return
    configure_logging("json", "warning", stream=sys.stderr)  # stdout: the JSON document only
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", f"--frames={args.frames}", f"--symbols={args.symbols}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        print(json.dumps(asyncio.run(measure(port, args.frames, args.symbols, args.runs)), indent=2))
    finally:
        child.terminate()
        child.wait()


if __name__ == "__main__":
    main()
