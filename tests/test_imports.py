"""Import only what the config uses (issue 12's memory goal): structural checks in a fresh interpreter,
not timed ones. A binance-kind daemon with one json:// route (imported, its URLs checked, its line at
ready said) loads neither the simulator, nor numpy (until a leg's fan-out is large), nor any Apprise
plugin but the JSON one, nor rich, nor python-binance's dateparser, nor pydantic, nor requests'
charset_normalizer; a console-only one loads no Apprise at all."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.notify.console import format_console
from monitor.notify.messages import Message
from monitor.notify.send_check import send_once
from monitor.risk._fanout import Fanout

PROBE = """
import json, sys
from pathlib import Path
import monitor.cli  # the daemon's order: the command line, then the service (monitor/cli/__init__.py)
import monitor.service
from monitor.config.model import load_config
from monitor.notify.apprise_sink import check_url

config = load_config(sys.argv[1])
monitor.service.Service(config, Path(sys.argv[1]))._say_what_is_ahead()  # what the daemon does at ready
bad = [check_url(u.get_secret_value()) for route in config.notify.routes.values() for u in route.urls]
mods = sorted(sys.modules)
print(json.dumps({
    "bad": [b for b in bad if b],
    "sim": [m for m in mods if m.startswith("monitor.sim")],
    "numpy": "numpy" in sys.modules,
    "apprise": "apprise" in sys.modules,
    "plugins": [m for m in mods if m.startswith("apprise.plugins.")],
    "rich": [m for m in mods if m == "rich" or m.startswith("rich.")],
    "dateparser": type(sys.modules.get("dateparser")).__name__,
    "regex": "regex" in sys.modules,
    "pydantic": [m for m in mods if m == "pydantic" or m.startswith(("pydantic.", "pydantic_core"))],
    "detectors": [m for m in mods if m.startswith(("charset_normalizer", "chardet"))],
}))
"""


def probe(tmp_path: Path, urls: list[str]) -> dict[str, object]:
    data = {
        "exchange": {"kind": "binance", "rest_url": "http://127.0.0.1:9", "stream_url": "ws://127.0.0.1:9"},
        "accounts": [{"name": "a", "api_key": "k" * 16, "api_secret": "s" * 16}],
        "notify": {"routes": {"hook": {"urls": urls}}},
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_binance_daemon_with_a_json_route_imports_only_what_it_uses(tmp_path: Path) -> None:
    got = probe(tmp_path, ["json://127.0.0.1:9/hook"])
    assert got["bad"] == []
    assert got["sim"] == []
    assert got["numpy"] is False
    assert got["apprise"] is True
    assert got["plugins"] == ["apprise.plugins.base", "apprise.plugins.custom_json"]
    assert got["rich"] == []  # structlog's optional rich (monitor/logs.py), the CLI's tables (cli/silence.py)
    assert got["dateparser"] == "_Deferred" and got["regex"] is False  # monitor/exchange/rest.py


def fresh_python(code: str) -> str:
    """What ``code`` prints in a fresh interpreter (which must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_binance_daemon_imports_no_pydantic_and_no_charset_detector(tmp_path: Path) -> None:
    """The config is validated by monitor/config/schema.py, not pydantic (which only the simulator's
    scenarios use), and requests is imported without charset_normalizer (monitor/requests_lean.py):
    ~11 MiB of a one-account daemon."""
    got = probe(tmp_path, ["json://127.0.0.1:9/hook"])
    assert got["pydantic"] == []
    assert got["detectors"] == []


def test_requests_without_a_detector_decodes_as_utf8_and_warns_nothing() -> None:
    """A response naming no charset decodes as UTF-8 (bad bytes replaced), a ``text/*`` one by its
    headers as before; the detector stays importable; no RequestsDependencyWarning (warnings are errors)."""
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import monitor.requests_lean, requests\n"
        "r = requests.Response(); r._content = 'café'.encode() + b'\\xff'; r.encoding = None\n"
        "t = requests.Response(); t._content = 'café'.encode('latin-1')\n"
        "t.encoding = requests.utils.get_encoding_from_headers({'content-type': 'text/plain'})\n"
        "print(r.apparent_encoding, ascii(r.text), ascii(t.text), requests.compat.chardet)\n"
        "import charset_normalizer\n"
    )
    assert fresh_python(code).split() == ["utf-8", "'caf\\xe9\\ufffd'", "'caf\\xe9'", "None"]


def test_deferred_modules_load_when_used() -> None:
    """What the daemon keeps out loads when something uses it: python-binance's date strings still
    parse (dateparser), and rich still renders (the status view imports it)."""
    code = (
        "import sys, monitor.cli, monitor.service\n"
        "from binance.helpers import date_to_milliseconds\n"
        "print(date_to_milliseconds('1 Jan 2020 UTC'), type(sys.modules['dateparser']).__name__)\n"
        "from monitor.cli.status_view import make_console\n"
        "print(type(make_console()).__name__)\n"
    )
    assert fresh_python(code).split() == ["1577836800000", "module", "Console"]


def test_console_only_daemon_imports_no_apprise(tmp_path: Path) -> None:
    got = probe(tmp_path, ["console://"])
    assert got["bad"] == [] and got["apprise"] is False and got["plugins"] == []


def test_sums_turn_into_numpy_at_the_first_large_leg_and_keep_their_values() -> None:
    """Two units on BTCUSDT stay a list (threshold 2); a third makes the leg vectorised: the sums become
    a numpy array once, and every level stays exact (h p / owed)."""
    engine = Fanout({"BTCUSDT": 100.0}, threshold=2)
    units = []
    for k in range(3):
        i = engine.add(f"u{k}")
        engine.set_exposure(i, {("BTCUSDT",): (1.0 + k, 0.0)}, 0.0, 50.0, 0)
        engine.set_band(i, 0.0, math.inf)
        units.append(i)
        if k < 2:
            engine.apply("BTCUSDT", 100.0 + k)
            assert not engine.vectorised and isinstance(engine.al, list)
    engine.apply("BTCUSDT", 120.0)
    assert engine.vectorised and not isinstance(engine.al, list)
    for k, i in enumerate(units):
        assert engine.level(i) == (1.0 + k) * 120.0 / 50.0
    assert list(engine.apply("BTCUSDT", 10.0)) == []
    engine.set_band(units[0], 0.5, math.inf)
    assert list(engine.apply("BTCUSDT", 20.0)) == [units[0]]


async def test_test_alert_prints_console_urls_itself(capsys: pytest.CaptureFixture[str]) -> None:
    """console:// is not an Apprise plugin any more: test-alert's direct send prints it itself."""
    outcome = await send_once("console://", Message("Test title", "Test body", "info"), timeout=2)
    assert outcome.ok and outcome.masked == "console://"
    assert capsys.readouterr().out == format_console("Test title", "Test body", "info")


async def test_a_client_keeps_no_websocket_api_clients() -> None:
    """python-binance makes two WebSocket-API clients (each with an asyncio.Queue, ~7.7 KiB) per
    AsyncClient; the daemon never connects them (its user-data streams are its own), so each
    account's client drops them: 7.5 MiB less at 1,000 accounts."""
    from binance.ws.websocket_api import WebsocketAPI

    from monitor.exchange.rest import SharedTransport, client_class

    shared = SharedTransport.acquire("http://127.0.0.1:9")
    client = client_class("http://127.0.0.1:9", "ws://127.0.0.1:9/ws-api/v3", 10.0)(
        "k" * 16, "s" * 16, session_params={"shared": shared}
    )
    try:
        assert client.ws_api is None and client.ws_future is None
        assert not [v for v in vars(client).values() if isinstance(v, WebsocketAPI)]
    finally:
        await client.close_connection()
