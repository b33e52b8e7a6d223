"""A webhook receiver in its own process, for Apprise ``json://`` (used by ``bench/crash.py``).

``python bench/webhook_receiver.py`` listens on 127.0.0.1 (a free port), prints ``{"port": N}``, and
records ``(time.monotonic(), title)`` for each POST the moment its body is read (one clock for all
processes on Linux, so it compares with the simulator's send times). Commands, one a line, on stdin:
``{"cmd": "dump", "out": FILE}`` writes every record so far to FILE (JSON) and answers
``{"received": n}``; ``{"cmd": "quit"}``. ``--delay-ms N`` answers each POST N ms after reading it
(a remote service's round trip); the record is still taken when the body is read.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RECORDS: list[tuple[float, str]] = []
LOCK = threading.Lock()
DELAY = [0.0]  # seconds before answering


class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        at = time.monotonic()
        try:
            title = str(json.loads(body).get("title", ""))
        except ValueError:
            title = "?"
        with LOCK:
            RECORDS.append((at, title))
        if DELAY[0]:
            time.sleep(DELAY[0])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        return


@contextlib.contextmanager
def running(on_start: Callable[[int], None] = lambda pid: None) -> Iterator[int]:
    """This receiver as a child process, for a synchronous bench: yields its port, quits it at the
    end; ``on_start`` gets its pid first (to pin it)."""
    hook = subprocess.Popen(
        [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert hook.stdin is not None and hook.stdout is not None
    try:
        on_start(hook.pid)
        yield int(json.loads(hook.stdout.readline())["port"])
    finally:
        hook.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        hook.stdin.close()
        hook.wait(5)


def main() -> None:
    if "--delay-ms" in sys.argv:
        DELAY[0] = float(sys.argv[sys.argv.index("--delay-ms") + 1]) / 1000
    ThreadingHTTPServer.request_queue_size = 128  # listen backlog; 5 by default overflowed in a burst
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        with LOCK:
            records = list(RECORDS)
        Path(cmd["out"]).write_text(json.dumps(records))
        print(json.dumps({"received": len(records)}), flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
