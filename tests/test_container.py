"""Container smoke test: build the image from the real Dockerfile with buildah, run it, see it healthy.

No Docker engine here, so the container is run the way an engine would: the image's rootfs
(``buildah mount``) mounted read-only in fresh mount, PID and network namespaces, a tmpfs on
/tmp, a host directory as the state volume, the image's user, environment, working directory,
entrypoint and command; health is probed with the image's own HEALTHCHECK command run inside
the container, and the stop signal is the image's STOPSIGNAL sent to the container's PID 1.
Needs root, buildah, debootstrap and util-linux (deploy/ci-setup.sh installs them).
Run alone with ``make container`` (``pytest -m container``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BUILD_SH = REPO / "deploy" / "docker" / "build.sh"
IMAGE = "localhost/margin-monitor:test"
CACHE_DIR = Path(os.environ.get("CACHE_DIR", "/var/cache/margin-monitor-ci"))
BUILDAH = [
    "buildah",
    "--storage-driver",
    "vfs",
    "--root",
    os.environ.get("STORAGE_ROOT", str(CACHE_DIR / "storage")),
    "--runroot",
    os.environ.get("RUN_ROOT", "/run/margin-monitor-ci"),
]
TOOLS = ("buildah", "debootstrap", "unshare", "nsenter", "chroot", "ip", "mount")


def _skip_reason() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "container test needs root on Linux (buildah --isolation chroot, debootstrap, namespaces)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"container test needs {', '.join(missing)}: run deploy/ci-setup.sh"
    return None


pytestmark = [
    pytest.mark.container,
    pytest.mark.timeout(900),
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]

# Runs as root in new mount+net+pid namespaces (PID 1 of the new PID namespace), then becomes the
# container: read-only root, tmpfs /tmp, the volume, minimal /dev, loopback up, image user.
SANDBOX = r"""
set -eu
root="$1"; volume="$2"; user="$3"; workdir="$4"; shift 4
ip link set lo up
mount --make-rprivate /
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount --bind "$volume" "$root/var/lib/margin-monitor"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
for dev in null zero random urandom; do
    touch "$root/dev/$dev"
    mount --bind "/dev/$dev" "$root/dev/$dev"
done
exec chroot --userspec="$user" "$root" /usr/bin/env -i --chdir="$workdir" "$@"
"""

PROBE = r"""
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
        status, body = response.status, response.read().decode()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read().decode()
print(json.dumps({"status": status, "body": body}))
"""


# The goal for the image (issue #14), uncompressed: the sum of its layers' tar sizes, as `buildah
# images` and `docker images` show it (decimal MB).
SIZE_GOAL = 150_000_000


@dataclass
class Image:
    name: str
    config: dict[str, Any]
    build_seconds: float
    layer_sizes: list[int]

    @property
    def user(self) -> str:
        return str(self.config["User"])

    @property
    def env(self) -> list[str]:
        return list(self.config["Env"])


def buildah(*args: str, timeout: float = 120) -> str:
    result = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def image() -> Image:
    """The image built by deploy/docker/build.sh from the working tree."""
    env = {**os.environ, "IMAGE": IMAGE, "PYTHON": sys.executable}
    started = time.monotonic()
    result = subprocess.run([str(BUILD_SH)], env=env, capture_output=True, text=True, timeout=840, cwd=REPO)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"build.sh failed after {elapsed:.0f} s:\n{result.stderr[-4000:]}"
    inspected = json.loads(buildah("inspect", "--type", "image", IMAGE))
    layers = json.loads(inspected["Manifest"])["layers"]
    return Image(IMAGE, inspected["Docker"]["config"], elapsed, [int(layer["size"]) for layer in layers])


class Container:
    """One run of the image in the sandbox; the host-side handle on its PID 1."""

    def __init__(self, image: Image, volume: Path, logs: Path, argv: list[str] | None = None) -> None:
        self.image = image
        self.logs = logs
        self.name = f"margin-monitor-test-{uuid.uuid4().hex[:8]}"
        self.ctr = buildah("from", "--quiet", "--name", self.name, image.name)
        self.root = buildah("mount", self.ctr)
        config = image.config
        command = argv if argv is not None else [*config["Entrypoint"], *config["Cmd"]]
        self.stdout = (logs / "stdout.log").open("wb")
        self.stderr = (logs / "stderr.log").open("wb")
        sandbox = [
            "unshare", "--mount", "--net", "--pid", "--fork", "--kill-child=SIGKILL",
            "sh", "-c", SANDBOX, "sandbox",
            self.root, str(volume), image.user, config.get("WorkingDir") or "/",
            *image.env, *command,
        ]  # fmt: skip
        self.process = subprocess.Popen(sandbox, stdout=self.stdout, stderr=self.stderr)
        self.pid1 = self._find_pid1()

    def _find_pid1(self) -> int:
        """The host PID of the container's PID 1 (unshare's only child)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            pids = children.read_text().split() if children.exists() else []
            if pids:
                return int(pids[0])
            time.sleep(0.02)
        raise AssertionError(f"container did not start:\n{self.log_tail()}")

    def exec(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the running container, as its user, with its environment."""
        uid, _, gid = self.image.user.partition(":")
        enter = ["nsenter", "-t", str(self.pid1), "-m", "-n", "-p", "-r", "-w", "-S", uid, "-G", gid or uid]
        return subprocess.run(
            [*enter, "/usr/bin/env", "-i", *self.image.env, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def healthcheck(self) -> bool:
        """The image's HEALTHCHECK command, run inside the container as Docker would."""
        test = self.image.config["Healthcheck"]["Test"]
        assert test[0] == "CMD", test
        return self.exec(test[1:]).returncode == 0

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the daemon's HTTP endpoint from inside the container."""
        result = self.exec(["/opt/margin-monitor/bin/python", "-c", PROBE, f"http://127.0.0.1:9108{path}"])
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        return int(answer["status"]), str(answer["body"])

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        self.stdout.flush()
        self.stderr.flush()
        out = (self.logs / "stdout.log").read_text(errors="replace").splitlines()[-lines:]
        err = (self.logs / "stderr.log").read_text(errors="replace").splitlines()[-lines:]
        return "--- stdout ---\n" + "\n".join(out) + "\n--- stderr ---\n" + "\n".join(err)

    def remove(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.stdout.close()
        self.stderr.close()
        subprocess.run([*BUILDAH, "umount", self.ctr], capture_output=True, timeout=60)
        subprocess.run([*BUILDAH, "rm", self.ctr], capture_output=True, timeout=120)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """An empty state volume owned by the image's user."""
    path = tmp_path / "state"
    path.mkdir()
    os.chown(path, 10001, 10001)
    return path


Starter = Callable[..., Container]


@pytest.fixture
def run_container(image: Image, volume: Path, tmp_path: Path) -> Iterator[Starter]:
    """Starts containers of the image (``argv`` overrides entrypoint + command); removes them after."""
    started: list[Container] = []

    def start(argv: list[str] | None = None) -> Container:
        container = Container(image, volume, tmp_path, argv)
        started.append(container)
        return container

    yield start
    for container in started:
        container.remove()


def wait_for(what: str, check: Callable[[], bool], container: Container, timeout: float) -> None:
    """Poll ``check()`` until true; fail with the container's log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        assert container.running(), f"container exited ({container.process.returncode}) before {what}:\n" + (
            container.log_tail()
        )
        time.sleep(1)
    raise AssertionError(f"no {what} within {timeout:.0f} s:\n{container.log_tail()}")


def test_image_config_is_production_shaped(image: Image) -> None:
    """Non-root user, state volume, HEALTHCHECK on /healthz, SIGTERM, entrypoint + default config."""
    config = image.config
    print(f"image built in {image.build_seconds:.0f} s")
    assert image.user.split(":")[0] not in ("", "0", "root")
    assert "/var/lib/margin-monitor" in config["Volumes"]
    assert config["StopSignal"] == "SIGTERM"
    assert "MARGIN_MONITOR_HEALTH_URL=http://127.0.0.1:9108/healthz" in config["Env"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["Entrypoint"] == ["/opt/margin-monitor/bin/margin-monitor"]
    assert config["Cmd"] == ["run", "-c", "/etc/margin-monitor/config.yaml"]


def test_image_size_within_goal(image: Image) -> None:
    """The image, uncompressed, stays within the 150 MB goal (base layer + ours)."""
    total = sum(image.layer_sizes)
    layers = [round(size / 1e6, 1) for size in image.layer_sizes]
    print(f"image {total / 1e6:.1f} MB uncompressed; layers {layers} MB")
    assert total <= SIZE_GOAL, f"image is {total / 1e6:.1f} MB, over the {SIZE_GOAL / 1e6:.0f} MB goal"


def test_cli_runs_read_only_as_non_root(run_container: Starter) -> None:
    """``margin-monitor --help`` runs in the image on a read-only root, as uid 10001."""
    container = run_container(
        ["sh", "-c", "margin-monitor --help && id -u && ! touch /opt/probe 2>/dev/null"]
    )
    assert container.wait(timeout=60) == 0, container.log_tail()
    out = (container.logs / "stdout.log").read_text()
    assert "usage: margin-monitor" in out
    assert out.strip().splitlines()[-1] == "10001"


def test_daemon_in_container_reports_healthy(run_container: Starter, volume: Path) -> None:
    """The default command runs the bundled scenario: healthy, ready, status lists units, stops on SIGTERM."""
    container = run_container()
    started = time.monotonic()
    wait_for("passing HEALTHCHECK", container.healthcheck, container, timeout=120)
    healthy_after = time.monotonic() - started
    wait_for("/readyz 200", lambda: container.get("/readyz")[0] == 200, container, timeout=120)

    status, body = container.get("/status")
    assert status == 200, body
    units = json.loads(body)
    assert units and {unit["account"] for unit in units} == {"demo"}, units
    status, metrics = container.get("/metrics")
    assert status == 200 and 'margin_monitor_margin_level{account="demo"' in metrics
    print(f"healthy {healthy_after:.1f} s after start; {len(units)} units")

    os.kill(container.pid1, signal.Signals[container.image.config["StopSignal"]])
    assert container.wait(timeout=60) == 0, container.log_tail()
    assert (volume / "state.sqlite3").stat().st_size > 0, "the daemon wrote no state to its volume"

    again = run_container()  # a new container on the same volume: the state is reused, not refused
    wait_for("passing HEALTHCHECK after a restart", again.healthcheck, again, timeout=120)
    wait_for("/readyz 200 after a restart", lambda: again.get("/readyz")[0] == 200, again, timeout=120)
    os.kill(again.pid1, signal.SIGTERM)
    assert again.wait(timeout=60) == 0, again.log_tail()


def test_corrupt_state_volume_exits_3_at_once(run_container: Starter, volume: Path) -> None:
    """A corrupt state file in the volume: one error line naming it, exit code 3, no traceback."""
    state = volume / "state.sqlite3"
    state.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    os.chown(state, 10001, 10001)
    container = run_container()
    assert container.wait(timeout=60) == 3, container.log_tail()
    err = (container.logs / "stderr.log").read_text()
    failed = [json.loads(line) for line in err.splitlines() if '"startup_failed"' in line]
    assert len(failed) == 1 and "is corrupt" in failed[0]["error"], err
    assert "/var/lib/margin-monitor/state.sqlite3" in failed[0]["error"] and "Traceback" not in err


def test_binance_config_in_container_watches_the_simulator(run_container: Starter, volume: Path) -> None:
    """A ``kind: binance`` config on the image: ``margin-monitor simulate`` in the same container plays
    Binance (python-binance's REST client, market and user-data streams, the WebSocket API, Apprise's
    console route): ready, /status lists the scenario's account, exits 0 on SIGTERM."""
    sim = "127.0.0.1:18080"
    config = {
        "exchange": {
            "kind": "binance",
            "rest_url": f"http://{sim}",
            "stream_url": f"ws://{sim}",
            "ws_api_url": f"ws://{sim}/ws-api/v3",
            "risk_stream_url": f"ws://{sim}",
        },
        "accounts": [{"name": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}],
        "notify": {"routes": {"console": {"urls": ["console://"]}}},
        "state_dir": "/var/lib/margin-monitor",
        "log": {"format": "json"},
        "http": {"enabled": True, "listen": "127.0.0.1:9108"},
    }
    path = volume / "binance.yaml"
    path.write_text(yaml.safe_dump(config))
    os.chown(path, 10001, 10001)
    path.chmod(0o600)
    script = (
        f"margin-monitor simulate --scenario crash --port {sim.split(':')[1]} > /tmp/sim.log 2>&1 & "
        "i=0; until grep -q listening /tmp/sim.log; do "
        "i=$((i + 1)); [ $i -lt 600 ] || exit 9; sleep 0.1; done; "
        "exec margin-monitor run -c /var/lib/margin-monitor/binance.yaml"
    )
    container = run_container(["sh", "-c", script])
    wait_for("passing HEALTHCHECK", container.healthcheck, container, timeout=120)
    wait_for("/readyz 200", lambda: container.get("/readyz")[0] == 200, container, timeout=120)
    status, body = container.get("/status")
    assert status == 200, body
    assert {unit["account"] for unit in json.loads(body)} == {"demo"}, body
    os.kill(container.pid1, signal.SIGTERM)
    assert container.wait(timeout=60) == 0, container.log_tail()
