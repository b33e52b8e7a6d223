"""CPU per HTTP POST of one alert, layer by layer: Apprise's ``notify`` and what it runs on; prints JSON.

Each variant posts the same ~350-byte JSON body to ``bench/webhook_receiver.py`` (another process)
``--sends`` times after 20 to warm up, one at a time on this thread, and reports this thread's CPU
per send (``time.thread_time``: what other processes do is not counted; a variant's waits for the
receiver are not CPU): ``requests.request`` (a new session per call, as Apprise's plugins call it),
a kept ``requests.Session``, the same with ``trust_env`` off (no proxy settings read from the
environment per call), ``http.client`` on one kept connection, and ``Apprise.notify`` through the
daemon's own ``AppriseSender`` object for a ``json://`` URL. This is the Python that a send on a
thread of the daemon runs while it holds the interpreter lock (``bench/send_gil.py`` measures what
that costs the event loop).

Usage: ``python bench/send_layers.py [--sends 300] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import webhook_receiver
from latency import machine

import monitor.requests_lean  # noqa: F401  # requests as the daemon loads it
from monitor.notify.apprise_sink import AppriseSender

WARM = 20


def cpu_ms(send: Callable[[], object], n: int) -> float:
    for _ in range(WARM):
        send()
    started = time.thread_time()
    for _ in range(n):
        send()
    return round((time.thread_time() - started) / n * 1000, 3)


def variants(port: int) -> dict[str, Callable[[], object]]:
    import requests  # after monitor.requests_lean, as the daemon imports it

    url = f"http://127.0.0.1:{port}/hook"
    body = json.dumps({"version": "1.0", "title": "MARGIN CALL", "message": "x" * 300, "type": "warning"})
    headers = {"User-Agent": "Apprise", "Content-Type": "application/json"}
    timeout = (4, 4)
    kept = requests.Session()
    plain = requests.Session()
    plain.trust_env = False
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def raw() -> None:
        conn.request("POST", "/hook", body=body, headers=headers)
        conn.getresponse().read()

    apprise = AppriseSender().apprise_for(f"json://127.0.0.1:{port}/hook")
    return {
        "requests.request (new session per call)": lambda: requests.request(
            "POST", url, data=body, headers=headers, timeout=timeout
        ),
        "requests.Session kept": lambda: kept.post(url, data=body, headers=headers, timeout=timeout),
        "requests.Session kept, trust_env off": lambda: plain.post(
            url, data=body, headers=headers, timeout=timeout
        ),
        "http.client, one kept connection": raw,
        "Apprise.notify (json://, the daemon's object)": lambda: apprise.notify(
            body="x" * 300, title="MARGIN CALL", notify_type="warning"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with webhook_receiver.running() as port:
        for round_no in range(1, args.rounds + 1):
            for name, send in variants(port).items():
                runs.append({"round": round_no, "variant": name, "cpu_ms_per_send": cpu_ms(send, args.sends)})
    print(json.dumps({
        "benchmark": "CPU per alert's HTTP POST on the sending thread, by layer",
        "command": " ".join([Path(sys.executable).name, "bench/send_layers.py", *sys.argv[1:]]),
        "machine": machine(),
        "environment_variables": len(os.environ),  # requests reads the proxy settings from them per call
        "runs": runs,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
