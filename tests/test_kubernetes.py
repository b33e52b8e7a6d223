"""deploy/kubernetes/: every manifest valid against Kubernetes' schemas (kubernetes-validate, offline),
and the pieces the daemon relies on wired as the docs say (shard from the ordinal and the replica
count, probes, key files, state volume, the config a valid margin-monitor config)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from monitor.config.model import load_config
from monitor.config.shard import ENV_SHARD, parse_shard

KUBE = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]  # 1.28: first with the pod-index label
CRDS = {"ServiceMonitor"}  # Prometheus Operator kinds: not in Kubernetes' own schemas


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((KUBE / "kustomization.yaml").read_text()))


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file, document) of every manifest in the directory but the kustomization and the config."""
    out = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name in ("kustomization.yaml", "config.yaml"):
            continue
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def statefulset() -> dict[str, Any]:
    return next(doc for _, doc in documents() if doc["kind"] == "StatefulSet")


def container() -> dict[str, Any]:
    return dict(statefulset()["spec"]["template"]["spec"]["containers"][0])


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_valid(version: str) -> None:
    """Each manifest passes strict schema validation (unknown fields rejected)."""
    checked = 0
    for _, doc in documents():
        if doc["kind"] in CRDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 6


def test_validator_can_fail() -> None:
    """The validation has teeth: a misspelt field or a wrong type is refused."""
    broken = copy.deepcopy(statefulset())
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    broken = copy.deepcopy(statefulset())
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    """kustomization.yaml names each resource file that exists, and all but the optional CRD one."""
    listed = set(kustomization()["resources"])
    files = {name for name, _ in documents()}
    assert listed <= files
    assert files - listed == {"servicemonitor.yaml"}
    assert kustomization()["configMapGenerator"][0]["files"] == ["config.yaml"]


def test_shard_from_ordinal_and_replica_count() -> None:
    """POD_INDEX from the pod-index label; MARGIN_MONITOR_SHARD = $(POD_INDEX)/replicas, kept in sync."""
    env = {e["name"]: e for e in container()["env"]}
    label = env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert label == "metadata.labels['apps.kubernetes.io/pod-index']"
    names = list(env)
    assert names.index("POD_INDEX") < names.index(ENV_SHARD)  # $(VAR) expands only earlier vars
    replicas = statefulset()["spec"]["replicas"]
    assert env[ENV_SHARD]["value"] == f"$(POD_INDEX)/{replicas}"
    assert kustomization()["replicas"] == [{"name": "margin-monitor", "count": replicas}]
    for index in range(replicas):  # what each pod gets after the kubelet expands it
        assert parse_shard(env[ENV_SHARD]["value"].replace("$(POD_INDEX)", str(index))).index == index
    (replacement,) = kustomization()["replacements"]
    assert replacement["source"]["fieldPath"] == "spec.replicas"
    assert replacement["targets"][0]["options"] == {"delimiter": "/", "index": 1}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("count", [3, 5])
def test_kustomize_build_keeps_the_count_in_sync(tmp_path: Path, count: int) -> None:
    """`kubectl kustomize` with another replica count: the pods' shard count follows, output valid."""
    overlay = tmp_path / "deploy"
    shutil.copytree(KUBE, overlay)
    text = (overlay / "kustomization.yaml").read_text().replace("count: 3", f"count: {count}")
    (overlay / "kustomization.yaml").write_text(text)
    built = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert sts["spec"]["replicas"] == count
    assert env[ENV_SHARD] == f"$(POD_INDEX)/{count}"
    assert all(d["metadata"]["namespace"] == "margin-monitor" for d in docs if d["kind"] != "Namespace")


def test_probes_state_keys_and_config_mounts() -> None:
    """Liveness /healthz, readiness /readyz, a state volume per pod, keys as files, read-only root."""
    c = container()
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["state"] == "/var/lib/margin-monitor"
    spec = statefulset()["spec"]
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["state"]
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["keys"]["secret"]["secretName"] == "margin-monitor-keys"
    assert volumes["keys"]["secret"]["defaultMode"] & 0o007 == 0  # not world-readable
    assert volumes["config"]["configMap"]["name"] == "margin-monitor-config"
    assert c["args"][-1] == f"{mounts['config']}/config.yaml"
    assert c["resources"]["requests"]["memory"]


def test_config_is_a_valid_margin_monitor_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap's config.yaml loads, with key files where the Secret is mounted."""
    keys = container()["volumeMounts"]
    keys_dir = next(m["mountPath"] for m in keys if m["name"] == "keys")
    text = (KUBE / "config.yaml").read_text()
    assert f"{keys_dir}/main.key" in text
    text = text.replace(keys_dir, str(tmp_path))
    for name in ("main.key", "main.secret"):
        (tmp_path / name).write_text("x\n")
        (tmp_path / name).chmod(0o600)
    monkeypatch.setenv("MARGIN_MONITOR_NOTIFY_URL", "json://127.0.0.1:1/hook")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = load_config(path)
    assert config.exchange.kind == "binance"
    assert str(config.state_dir) == "/var/lib/margin-monitor"
    assert config.http.host == "0.0.0.0" and config.http.port == 9108


def test_pdb_service_and_network_policy() -> None:
    """A PDB of one, a headless Service with scrape annotations, and a policy restricting egress."""
    by_kind = {doc["kind"]: doc for _, doc in documents()}
    assert by_kind["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    service = by_kind["Service"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    policy = by_kind["NetworkPolicy"]["spec"]
    assert "Egress" in policy["policyTypes"]
    ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert ports == {53, 443, 9443}
