"""Secrets never leak: the whole daemon, run as a process through a scenario with faults, is scanned.

The keys, secrets, the HTTP token and the Apprise URL passwords are distinctive random values; the
daemon's stderr (JSON logs, tracebacks included), every notification body, ``/metrics``,
``/status`` and the output of ``check`` and ``status`` are searched for them. Logging itself is
checked in a subprocess too (it configures process-wide state): tracebacks carry no frame locals
and a secret inside an exception message is scrubbed, in JSON and console format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from daemon_harness import Receiver
from ops_harness import free_port

from monitor.sim import Simulator, parse_scenario, run_simulator

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent

DEMO_KEY = "mmKEY" + secrets.token_hex(16)
DEMO_SECRET = "mmSECRET" + secrets.token_hex(24)
OTHER_KEY = "mmKEY" + secrets.token_hex(16)
OTHER_SECRET = "mmSECRET" + secrets.token_hex(24)
HTTP_TOKEN = "mmTOKEN" + secrets.token_hex(16)
HOOK_PASSWORD = "mmHOOKPW" + secrets.token_hex(12)
DEAD_PASSWORD = "mmDEADPW" + secrets.token_hex(12)
ALL_SECRETS = (DEMO_KEY, DEMO_SECRET, OTHER_KEY, OTHER_SECRET, HTTP_TOKEN, HOOK_PASSWORD, DEAD_PASSWORD)


def leaks(text: str) -> list[str]:
    """The secrets (shown by their first characters only) that occur in ``text``."""
    return [s[:10] for s in ALL_SECRETS if s in text]


def scenario_data() -> dict[str, Any]:
    """Two cross accounts: demo is crashed through its bars, other gets its key revoked."""
    return {
        "quote": "USDT",
        "prices": {"BTCUSDT": "30000", "ETHUSDT": "2000"},
        "accounts": [
            {
                "name": "demo",
                "api_key": DEMO_KEY,
                "api_secret": DEMO_SECRET,
                "cross": [
                    {"asset": "BTC", "free": "1", "borrowed": "0"},
                    {"asset": "USDT", "free": "0", "borrowed": "18750"},
                ],
            },
            {
                "name": "other",
                "api_key": OTHER_KEY,
                "api_secret": OTHER_SECRET,
                "cross": [{"asset": "ETH", "free": "3"}, {"asset": "USDT", "borrowed": "3000"}],
            },
        ],
    }


@pytest.fixture
async def live_sim() -> AsyncIterator[Simulator]:
    """A realtime simulator (the daemon runs in another process and needs a moving clock)."""
    async with run_simulator(parse_scenario(scenario_data(), source="<secrets>"), realtime=True) as sim:
        yield sim


def write_config(tmp_path: Path, sim: Simulator, receiver: Receiver, http_port: int, dead_port: int) -> Path:
    """Keys literal and from files, a live route and a dead one on ``dead_port`` (both URLs with
    passwords), a token."""
    (tmp_path / "demo.secret").write_text(DEMO_SECRET + "\n")
    (tmp_path / "demo.secret").chmod(0o600)
    hook = f"json://hook:{HOOK_PASSWORD}@127.0.0.1:{receiver.port}/hook?cto=1&rto=2"
    dead = f"json://hook:{DEAD_PASSWORD}@127.0.0.1:{dead_port}/hook?cto=1&rto=1"
    data = {
        "exchange": sim.exchange_config(snapshot_interval="2s", resync_interval="5s"),
        "accounts": [
            {"name": "demo", "api_key": DEMO_KEY, "api_secret_file": "demo.secret"},
            {"name": "other", "api_key": OTHER_KEY, "api_secret": OTHER_SECRET},
        ],
        "alerts": {"stale_after": "3s"},
        "notify": {"routes": {"hook": {"urls": [hook]}, "dead": {"urls": [dead]}}},
        "state_dir": str(tmp_path / "state"),
        "log": {"format": "json", "level": "debug"},
        "http": {"listen": f"127.0.0.1:{http_port}", "token": HTTP_TOKEN},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


async def cli(*args: str) -> tuple[int, str]:
    """Run ``python -m monitor.cli ARGS``; exit code and stdout + stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def fetch(session: aiohttp.ClientSession, url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as response:
        return response.status, await response.text()


async def poll(session: aiohttp.ClientSession, url: str, token: str | None, within: float = 20.0) -> str:
    """GET ``url`` until it answers 200 (the daemon starting); its body."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            status, body = await fetch(session, url, token)
            if status == 200:
                return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{url} did not answer 200")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_no_secret_anywhere_through_a_faulty_run(
    tmp_path: Path, live_sim: Simulator, receiver: Receiver, refused_port: int
) -> None:
    """Through a crash with drops, REST errors, a revoked key and a dead route, no secret appears anywhere."""
    sim = live_sim
    http_port = free_port()
    config = write_config(tmp_path, sim, receiver, http_port, refused_port)
    base = f"http://127.0.0.1:{http_port}"
    log_file = (tmp_path / "daemon.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "run", "-c", str(config), cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
    )  # fmt: skip
    surfaces: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            await poll(session, base + "/readyz", None)
            assert (await fetch(session, base + "/status", None))[0] == 401
            assert (await fetch(session, base + "/metrics", "wrong-" + HTTP_TOKEN[:8]))[0] == 401
            await sim.set_price("BTCUSDT", "27000")
            await receiver.wait_for(lambda m: len(m) >= 1, within=15)
            await sim.inject_fault({"kind": "drop", "target": "all"})
            await sim.inject_fault({"kind": "malformed_frame", "target": "all"})
            await sim.inject_fault({"kind": "rest_5xx", "status": 503, "duration": 2})
            await sim.inject_fault({"kind": "revoke_key", "account": "other"})
            await sim.set_price("BTCUSDT", "23000")
            await sim.inject_fault({"kind": "close_1001"})
            await sim.inject_fault({"kind": "rest_429", "duration": 2})
            await receiver.wait_for(
                lambda m: (
                    any("other" in str(x.get("title")) and "NOT" in str(x.get("title")) for x in m)
                    and any("1.3" in str(x.get("title")) for x in m)
                ),
                within=30,
            )
            surfaces["status"] = await poll(session, base + "/status", HTTP_TOKEN)
            surfaces["metrics"] = await poll(session, base + "/metrics", HTTP_TOKEN)
            assert "margin_monitor_feed_reconnects_total" in surfaces["metrics"]
            assert json.loads(surfaces["status"])[0]["account"] == "demo"
            code, surfaces["cli status"] = await cli("status", "-c", str(config), "--json")
            assert code == 0 and '"demo"' in surfaces["cli status"]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        log_file.close()
    code, surfaces["cli check"] = await cli("check", "-c", str(config))
    assert "other: FAIL" in surfaces["cli check"] and "demo: OK" in surfaces["cli check"]
    surfaces["notifications"] = json.dumps(receiver.messages)
    logs = (tmp_path / "daemon.log").read_text(errors="replace")
    events = [json.loads(line) for line in logs.splitlines()]  # every line is one JSON event
    names = {e["event"] for e in events}
    assert {"account_disabled", "notify_retry", "feed_down", "daemon_stopped"} <= names, names
    surfaces["logs"] = logs
    for where, text in surfaces.items():
        assert leaks(text) == [], f"secret in {where}"
    # the state directory (outbox, alert state) holds bodies and titles: no secret either
    for file in (tmp_path / "state").rglob("*"):
        if file.is_file():
            assert leaks(file.read_bytes().decode(errors="replace")) == [], f"secret in {file.name}"


LOGGING_SCRIPT = """
import logging, sys
import structlog
from monitor.logs import configure_logging, register_secrets

configure_logging(sys.argv[1], "info", stream=sys.stdout)
register_secrets([SECRET])
log = structlog.get_logger("probe")

def fails(api_secret):
    local_copy = api_secret * 2
    raise RuntimeError("signature for " + api_secret + " refused")

for emit in (log.exception, logging.getLogger("thirdparty").exception):
    try:
        fails(SECRET)
    except RuntimeError:
        emit("probe_failed")
log.error("probe_nested", detail={"urls": [SECRET], "n": 1})
"""


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_tracebacks_have_no_locals_and_no_secret(fmt: str) -> None:
    """A traceback (ours or a library's) shows no frame locals and a secret in its message is scrubbed."""
    secret = "mmSECRET" + secrets.token_hex(20)
    script = f"SECRET = {secret!r}\n" + LOGGING_SCRIPT
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, fmt, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 30)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, err
    assert secret not in out and secret not in err
    assert out.count("RuntimeError") >= 2 and out.count("«redacted»") >= 3
    assert "local_copy" not in out and "locals" not in out
    if fmt == "json":
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["event"] for e in events] == ["probe_failed", "probe_failed", "probe_nested"]
        assert isinstance(events[0]["exception"], list)  # still structured after the scrub
        assert events[2]["detail"] == {"urls": ["«redacted»"], "n": 1}
