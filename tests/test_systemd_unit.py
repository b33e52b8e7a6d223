"""The systemd unit: ``systemd-analyze verify`` and ``security`` accept it, and it keeps its promises."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "margin-monitor.service"
EXEC = "/opt/margin-monitor/bin/margin-monitor"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (deploy/ci-setup.sh installs the systemd package)",
)


def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at a stub, since verify insists the binary exists."""
    stub = tmp_path / "bin" / "margin-monitor"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    text = UNIT.read_text()
    assert EXEC in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(EXEC, str(stub)))
    return copy


def directives(section: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a section of the unit, repeated keys kept in order."""
    found: dict[str, list[str]] = {}
    current = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_systemd_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """``systemd-analyze verify`` exits 0 and prints nothing (it only warns on unknown keys)."""
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


@needs_systemd_analyze
def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    """The offline security review rates the unit's exposure at 2.0 or lower (on systemd's 0–10 scale)."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_unit_keeps_the_operational_contract() -> None:
    """Type=notify with a watchdog, bounded restarts, a state dir, the config as a credential, hardening."""
    unit, service = directives("Unit"), directives("Service")
    assert service["Type"] == ["notify"]
    assert int(service["WatchdogSec"][0].removesuffix("s")) >= 10
    assert service["Restart"] == ["on-failure"]
    assert int(unit["StartLimitBurst"][0]) >= 1 and unit["StartLimitIntervalSec"][0] not in ("0", "infinity")
    assert service["DynamicUser"] == ["yes"]
    assert service["StateDirectory"] == ["margin-monitor"]
    assert service["LoadCredential"] == ["margin-monitor:/etc/margin-monitor"]
    assert service["ExecStart"][0].endswith(" run -c %d/margin-monitor_config.yaml")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key
    assert service["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in service["SystemCallFilter"]
    assert "ProcSubset" not in service  # it would hide /proc/stat from the process_* metrics
