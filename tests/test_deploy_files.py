"""Deployment files: alert rules and dashboard only use metrics the daemon exports; compose is sane."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitor.exchange.streams import FeedStats
from monitor.notify.dispatcher import RouteStats
from monitor.ops.metrics import Metrics
from monitor.risk.report import UnitReport, unit_id

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "margin-monitor.json"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
EXTERNAL = {"up"}  # added by Prometheus itself


def exported_names() -> set[str]:
    """Every sample name a scrape of a busy daemon shows (units, feeds, routes, latency, process)."""
    metrics = Metrics(version="test")
    metrics.observe_unit(
        UnitReport(
            unit=unit_id("main"),
            account="main",
            kind="cross",
            symbol=None,
            quote="USDT",
            margin_level=1.4,
            bars={"margin_call": 1.3, "liquidation": 1.1},
            liquidation_bar="liquidation",
            distances={"margin_call": -0.05, "liquidation": -0.2},
            liquidation_prices={"BTC": 50000.0},
            total_asset_value=140.0,
            total_liability_value=100.0,
            restore_target=1.5,
            approximate=True,
            exchange_margin_level=1.39,
        )
    )
    metrics.drift_source(lambda: {unit_id("main"): 0.001})
    metrics.feed_source("market", lambda: FeedStats(1, 0, 1, True, None))
    metrics.route_source(lambda: {"console": RouteStats(sent=1, failed=1, queued=1)})
    metrics.observe_latency(0.01)
    metrics.state_file_source(StateFileHealthStub())
    body, _ = metrics.render()
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}


class StateFileHealthStub:
    """The state file's write health as ``StateFileHealth`` shows it: failing, two writes failed."""

    failing = True
    write_failures = 2


def referenced_names(expr: str) -> set[str]:
    """Metric-like identifiers in a PromQL expression (label matchers and strings removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n.startswith(("margin_monitor_", "process_")) or n == "up"}


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_referenced_metric_is_exported(source: str) -> None:
    """Alert rules and dashboard panels only name series that /metrics really serves."""
    exprs = alert_exprs() if source == "alerts" else dashboard_exprs()
    assert exprs
    exported = exported_names() | EXTERNAL
    unknown = {name for expr in exprs for name in referenced_names(expr)} - exported
    assert not unknown, f"{source} uses metrics the daemon does not export: {sorted(unknown)}"


def test_alert_rules_cover_the_issue() -> None:
    """There are rules for a level below a bar, a stale feed, failing notifications and a dead daemon."""
    names = {rule["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for rule in g["rules"]}
    assert {
        "MarginLevelBelowMarginCall",
        "MarginLevelNearLiquidation",
        "MarginMonitorFeedStale",
        "MarginMonitorNotificationsFailing",
        "MarginMonitorDown",
        "MarginMonitorStateFileFailing",
    } <= names


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (deploy/ci-setup.sh)")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    """``promtool check rules`` accepts alerts.yml and ``promtool test rules`` passes alerts.test.yml."""
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run(
            ["promtool", *command], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_importable() -> None:
    """The dashboard is JSON with unique panel ids, a datasource variable and an account filter."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert "account" in variables
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


def test_compose_is_read_only_with_volume_and_secrets() -> None:
    """compose.yaml: read-only root, tmpfs /tmp, the state volume, the config as a secret, loopback port."""
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose["services"]["margin-monitor"]
    assert service["read_only"] is True
    assert any(t.split(":")[0] == "/tmp" for t in service["tmpfs"])
    assert "state:/var/lib/margin-monitor" in service["volumes"] and "state" in compose["volumes"]
    targets = {s["target"]: s["source"] for s in service["secrets"]}
    assert service["command"] == ["run", "-c", "/run/secrets/config.yaml"]
    assert targets["config.yaml"] in compose["secrets"]
    assert all(p.startswith("127.0.0.1:") for p in service["ports"])
    assert service["stop_signal"] == "SIGTERM"
    assert service["cap_drop"] == ["ALL"]
