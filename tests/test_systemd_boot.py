"""The unit under a real systemd: a Debian 12 rootfs booted with systemd-nspawn runs margin-monitor.

This machine's PID 1 is not systemd, so the test boots one: a debootstrapped Debian 12 with
systemd and python3 (cached as a tarball in /var/cache/margin-monitor-ci), margin-monitor
installed as deploy/systemd/README.md says (a venv in /opt/margin-monitor, from wheels built on
the host), the repository's config in /etc/margin-monitor with ``state_dir: ${STATE_DIRECTORY}``,
and the unit enabled. It then checks that the service reaches "active" through READY=1 under
the unit's sandbox (DynamicUser, credentials, hardening), shows a STATUS= line, pets the watchdog,
answers /readyz, and stops cleanly. Marked ``container`` (root, slow): ``make container``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "systemd" / "margin-monitor.service"
CACHE_DIR = Path(os.environ.get("CACHE_DIR", "/var/cache/margin-monitor-ci"))
MIRROR = os.environ.get("MIRROR", "http://deb.debian.org/debian")
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates"
TARBALL = CACHE_DIR / "debian-bookworm-systemd-python3.tar"
TOOLS = ("systemd-nspawn", "debootstrap", "nsenter", "chroot")


def _skip_reason() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "booting systemd with systemd-nspawn needs root on Linux"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)}: run deploy/ci-setup.sh"
    return None


pytestmark = [
    pytest.mark.container,
    pytest.mark.timeout(900),
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]


def run(
    *argv: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(argv[:4])}…: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def base_tarball() -> Path:
    """Debian 12 minbase with systemd and python3, debootstrapped once and cached."""
    if TARBALL.exists():
        return TARBALL
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    rootfs = Path(CACHE_DIR / f"rootfs-systemd.{uuid.uuid4().hex[:8]}")
    try:
        run(
            "debootstrap",
            "--variant=minbase",
            f"--include={PACKAGES}",
            "bookworm",
            str(rootfs),
            MIRROR,
            timeout=600,
        )
        run("tar", "--numeric-owner", "-C", str(rootfs), "-cf", f"{TARBALL}.tmp", ".")
        os.replace(f"{TARBALL}.tmp", TARBALL)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return TARBALL


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rootfs with margin-monitor installed, configured and enabled as the README says."""
    tarball = base_tarball()
    root = tmp_path_factory.mktemp("machine") / "root"
    root.mkdir()
    run("tar", "--numeric-owner", "-C", str(root), "-xf", str(tarball))
    wheels = root / "tmp" / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", str(REPO), "-w", str(wheels), timeout=600)
    run("chroot", str(root), "python3", "-m", "venv", "/opt/margin-monitor")
    pip = ["/opt/margin-monitor/bin/pip", "install", "--quiet", "--no-index", "--find-links", "/tmp/wheels"]
    path = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    run("chroot", str(root), *pip, "margin-monitor", env=path, timeout=600)
    shutil.rmtree(wheels)

    etc = root / "etc" / "margin-monitor"
    etc.mkdir(mode=0o700)
    config = (REPO / "config.yaml").read_text()
    config, n = re.subn(r"(?m)^state_dir:.*$", "state_dir: ${STATE_DIRECTORY}", config)
    assert n == 1, "config.yaml has no top-level state_dir line"
    (etc / "config.yaml").write_text(config)
    (etc / "config.yaml").chmod(0o600)

    system = root / "etc" / "systemd" / "system"
    shutil.copy(UNIT, system / UNIT.name)
    # A short watchdog so the test sees several pings; everything else is the shipped unit.
    dropin = system / f"{UNIT.name}.d"
    dropin.mkdir()
    (dropin / "test.conf").write_text("[Service]\nWatchdogSec=4s\n")
    wants = system / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / UNIT.name).symlink_to(f"/etc/systemd/system/{UNIT.name}")
    # no login prompt on the console
    (system / "console-getty.service").symlink_to("/dev/null")
    return root


class Booted:
    """A running systemd-nspawn container; commands run inside it through nsenter."""

    def __init__(self, root: Path, log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            ["systemd-nspawn", "-D", str(root), "--boot", "--register=no", "--keep-unit", "-q",
             f"--machine=mm-test-{uuid.uuid4().hex[:8]}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.pid1 = self._find_init()

    def _find_init(self) -> int:
        """The host PID of the container's systemd (a grandchild of systemd-nspawn)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "systemd-nspawn exited"
            pending = [self.process.pid]
            while pending:
                pid = pending.pop()
                try:
                    if pid != self.process.pid and Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return pid
                    pending += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
                except FileNotFoundError:
                    continue
            time.sleep(0.1)
        raise AssertionError("systemd did not start in the container")

    def sh(self, *argv: str, check: bool = True) -> str:
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", *argv], capture_output=True, text=True, timeout=60
        )
        assert not check or result.returncode == 0, f"{' '.join(argv)}: {result.stdout}{result.stderr}"
        return result.stdout.strip()

    def show(self, *properties: str) -> dict[str, str]:
        out = self.sh("systemctl", "show", UNIT.name, *(f"--property={p}" for p in properties), check=False)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.sh("journalctl", "--no-pager", "-n", "40", "-u", UNIT.name, check=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nspawn asks systemd for an orderly poweroff
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def booted(machine: Path, tmp_path: Path) -> Iterator[Booted]:
    container = Booted(machine, tmp_path / "console.log")
    yield container
    container.stop()


def test_service_runs_under_systemd(booted: Booted) -> None:
    """READY=1 makes the unit active in its sandbox; it reports STATUS=, pets the watchdog, stops cleanly."""
    deadline = time.monotonic() + 120
    state: dict[str, str] = {}
    while time.monotonic() < deadline:
        state = booted.show("ActiveState", "SubState", "Result")
        if state.get("ActiveState") in ("active", "failed"):
            break
        time.sleep(1)
    assert state.get("ActiveState") == "active", f"{state}\n{booted.journal()}"

    info = booted.show("StatusText", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
    assert "units" in info["StatusText"], info
    assert info["NRestarts"] == "0"
    uid_line = booted.sh("grep", "^Uid:", f"/proc/{info['MainPID']}/status")
    assert uid_line.split()[1] != "0", f"the service runs as root: {uid_line}"

    time.sleep(5)  # WatchdogSec=4s in the test drop-in: pings every 2 s
    later = booted.show("WatchdogTimestampMonotonic", "NRestarts")
    assert int(later["WatchdogTimestampMonotonic"]) > int(info["WatchdogTimestampMonotonic"]) > 0
    assert later["NRestarts"] == "0", booted.journal()

    probe = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9108/readyz').status)"
    assert booted.sh("/opt/margin-monitor/bin/python", "-c", probe) == "200"

    booted.sh("systemctl", "stop", UNIT.name)
    final = booted.show("ActiveState", "Result", "ExecMainStatus")
    assert final == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, booted.journal()
