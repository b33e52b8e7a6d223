"""deploy/docker as Docker users expect: the Dockerfile builds from a clone on python:3.x-slim with a
wheel stage, compose builds it and runs the demo with no setup, and the demo config is the
repository's config.yaml with only the container's two changes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from monitor.config.model import load_config

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "deploy" / "docker"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_defaults_to_official_slim_python_and_builds_from_source() -> None:
    """ARG BASE defaults to python:3.x-slim; a build stage copies the source and builds a wheel."""
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", args["BASE"])
    copies = [a for w, a in instructions() if w == "COPY" and "--from" not in a]
    sources = {part for a in copies for part in a.split()[:-1]}
    assert {"pyproject.toml", "monitor/", "config.yaml"} <= sources
    for source in sources:  # every COPY source exists in a clone: `docker build .` works
        assert (REPO / source).exists(), source
    runs = " ".join(a for w, a in instructions() if w == "RUN")
    assert "pip wheel" in runs and "/src" in runs
    stages = [a for w, a in instructions() if w == "FROM"]
    assert stages[0].startswith("${BASE} AS ") and stages[-1] == "${RUNTIME_BASE}"
    assert args["RUNTIME_BASE"] == "${BASE}"  # one base unless the runtime one is given (build.sh)


def test_dockerignore_keeps_the_context_small() -> None:
    """The build context leaves out the venv, git and caches."""
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)


def test_compose_builds_from_the_clone_and_runs_the_demo_without_setup() -> None:
    """compose.yaml builds deploy/docker/Dockerfile from the repository root; its default config
    secret is the committed demo (a real config through MARGIN_MONITOR_CONFIG)."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    build = compose["services"]["margin-monitor"]["build"]
    assert (DOCKER / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).is_file()
    default = re.fullmatch(r"\$\{MARGIN_MONITOR_CONFIG:-(.+)\}", compose["secrets"]["config"]["file"])
    assert default is not None and (DOCKER / default.group(1)).is_file()


def test_demo_config_is_the_repository_config_for_a_container() -> None:
    """demo.yaml = config.yaml with the state in the volume and the endpoint on 0.0.0.0, and valid."""
    ours = (REPO / "config.yaml").read_text()
    expected = re.sub(r"(?m)^state_dir:.*$", "state_dir: /var/lib/margin-monitor", ours)
    expected = expected.replace('listen: "127.0.0.1:9108"', 'listen: "0.0.0.0:9108"')
    demo = (DOCKER / "demo.yaml").read_text()
    body = "\n".join(line for line in demo.splitlines()[3:])
    assert body.strip() == expected.strip()
    config = load_config(DOCKER / "demo.yaml")
    assert str(config.state_dir) == "/var/lib/margin-monitor" and config.http.host == "0.0.0.0"
