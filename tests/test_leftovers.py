"""Leftovers of the first hour: stale notices expire, the chmod warning only for files holding a
secret, a clean stop is quiet, and every subcommand's --help explains itself."""

from __future__ import annotations

import argparse
import doctest
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from daemon_harness import Receiver, daemon_config, events, one_long_account, running_daemon, wait_until
from structlog.testing import capture_logs

import monitor.leftovers
from monitor.cli import _parser
from monitor.config.model import exposed_files, holds_secret, load_config
from monitor.leftovers import expire_notices
from monitor.notify.apprise_sink import fingerprint
from monitor.sim import Simulator, bundled_scenarios
from monitor.store import OutboxItem, Store

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "monitor.cli"]


@pytest.fixture
def scenario_data() -> dict[str, object]:
    """One cross account, level 1.6 at the start."""
    return one_long_account()


def notice_row(account: str, route: str, url: str, at: float = 1_700_000_000.0) -> OutboxItem:
    return OutboxItem(
        f"notice|{account}|account_disabled|{int(at)}", f"{route}#{fingerprint(url)}", route,
        f"cross:{account}", "firing", f"margin-monitor: {account} is NOT being watched",
        f"Account {account}: could not be loaded.", "failure", at,
    )  # fmt: skip


def test_leftover_examples_in_docstrings() -> None:
    """The worked example in monitor/leftovers.py holds."""
    assert doctest.testmod(monitor.leftovers).failed == 0


def test_notices_of_loaded_accounts_are_dropped_with_a_reason(tmp_path: Path) -> None:
    """Open notice rows about an account that loads are dropped; other accounts' and alerts stay open."""
    url = "json://127.0.0.1:1/x"
    with Store(tmp_path) as store:
        alert = OutboxItem("cross:demo|normal|1", f"r#{fingerprint(url)}", "r", "cross:demo", "firing",
                           "[NORMAL]", "b", "warning", 1.0)  # fmt: skip
        store.add_outbox([notice_row("demo", "r", url), notice_row("other", "r", url), alert])
        assert expire_notices(store, {"demo"}) == 1
        still = {
            item.dedupe_key.split("|")[0] + "|" + item.dedupe_key.split("|")[1]
            for item in store.open_outbox()
        }
        assert still == {"notice|other", "cross:demo|normal"}
        reason = store._query("SELECT status, last_error FROM outbox WHERE dedupe_key LIKE 'notice|demo|%'")
        assert reason == [
            ("dropped", "notice from an earlier run no longer holds: account demo loaded in this run")
        ]


async def test_a_stale_notice_is_not_delivered_and_a_clean_stop_is_quiet(
    tmp_path: Path, sim: Simulator, receiver: Receiver
) -> None:
    """An earlier run's undelivered "demo is NOT being watched" never reaches the route once demo loads,
    and stopping the daemon logs the feeds going down at info, not as warnings."""
    config = daemon_config(tmp_path, sim, receiver)
    config.chmod(0o600)  # it holds the route's URL: readable by others it would be warned about
    with Store(tmp_path / "state") as store:
        store.add_outbox([notice_row("demo", "hook", receiver.url)])
    with capture_logs() as logs:
        async with running_daemon(config) as daemon:
            await wait_until(daemon.ready, what="daemon ready")
            await sim.set_price("BTCUSDT", "27000")  # an alert after it, so the route is proven alive
            await receiver.wait_for(lambda m: len(m) >= 1)
    assert not any("NOT being watched" in t for t in receiver.titles()), receiver.titles()
    assert [e["account"] for e in events(logs, "notice_expired")] == ["demo"]
    downs = events(logs, "feed_down")
    assert downs and all(e["log_level"] == "info" and e["stopping"] for e in downs), downs
    assert not [e for e in logs if e["log_level"] == "warning"], [
        e for e in logs if e["log_level"] == "warning"
    ]


def _config_file(tmp_path: Path, mode: int, **notify_urls: str) -> Path:
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    for name, url in notify_urls.items():
        data["notify"]["routes"][name] = {"urls": [url]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("urls", "secret"),
    [
        ({}, False),  # the demo: simulator keys and console:// only
        ({"phone": "tgram://123456:ABCdef/987"}, True),  # a bot token written in the file
        ({"phone": "${MM_TEST_PHONE_URL}"}, False),  # the URL comes from the environment
    ],
)
def test_readable_config_is_warned_about_only_when_it_holds_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, urls: dict[str, str], secret: bool
) -> None:
    """A world-readable config is flagged only when it holds a secret (a literal token, key or URL)."""
    monkeypatch.setenv("MM_TEST_PHONE_URL", "json://127.0.0.1:1/x")
    path = _config_file(tmp_path, 0o644, **urls)
    config = load_config(path)
    assert holds_secret(config, path) is secret
    assert exposed_files(config, path) == ([path] if secret else [])


def test_literal_binance_keys_are_secrets(tmp_path: Path) -> None:
    """With exchange.kind binance, a key written in the file makes it a secret file; ${ENV} does not."""
    path = _config_file(tmp_path, 0o644)
    data = yaml.safe_load(path.read_text())
    data["exchange"] = {"kind": "binance"}
    path.write_text(yaml.safe_dump(data))
    assert holds_secret(load_config(path), path)
    data["accounts"][0].update(api_key="${MM_K}", api_secret="${MM_S}")
    path.write_text(yaml.safe_dump(data))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MM_K", "k")
        env.setenv("MM_S", "s")
        assert not holds_secret(load_config(path), path)


@pytest.mark.parametrize("command", ["run", "check", "status", "test-alert", "replay", "simulate"])
def test_every_subcommand_help_has_a_description_and_every_option_help(command: str) -> None:
    """`margin-monitor COMMAND --help` explains the command in a paragraph, and every option has help."""
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    assert parser.description is not None and len(parser.description.split()) >= 10
    for action in parser._actions:
        assert action.help, f"{command} {action.option_strings} has no help"
    result = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 0 and parser.description.split()[0] in result.stdout


def test_simulate_help_lists_the_bundled_scenarios_and_documents_each_option() -> None:
    """`simulate --help` names crash, flash_wick and interest_bleed and says what --host and --port do."""
    result = subprocess.run(
        [*CLI, "simulate", "--help"], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    text = " ".join(result.stdout.split())
    assert "(crash, flash_wick, interest_bleed)" in text
    assert f"({', '.join(bundled_scenarios())})" in text  # the list the simulator itself loads from
    assert "--host HOST address to listen on" in text and "--port PORT port to listen on" in text
