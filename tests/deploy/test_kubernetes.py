"""Kubernetes objects of every example app: valid for the API server (offline), consistent
with themselves and with each cell's ``Scaling``, and pinned by golden files."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestro.cli.deploy import load_app
from orchestro.deploy import App, DeployOptions, compose, manifests
from orchestro.deploy.kubernetes import grace_period

from .conftest import EXAMPLES, ROOT, objects

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("ORCHESTRO_UPDATE_GOLDEN") == "1"
# The oldest and newest Kubernetes versions kubernetes-validate bundles that we support.
VERSIONS = ("1.27.0", "1.37.0")
DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def scaled(autoscaler: str = "hpa", **options: Any) -> App:
    from . import scaled_app

    return load_app(
        scaled_app.__file__,
        DeployOptions(namespace="ledger", autoscaler=autoscaler, **options),  # type: ignore[arg-type]
    )


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("example", EXAMPLES)
def test_golden(generated: dict[str, dict[str, str]], example: str) -> None:
    """ORCHESTRO_UPDATE_GOLDEN=1 pytest tests/deploy rewrites them; review the diff."""
    directory = GOLDEN / example
    files = generated[example]
    if UPDATE:
        shutil.rmtree(directory, ignore_errors=True)
        for name, text in files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(text)
    on_disk = {
        str(p.relative_to(directory)): p.read_text() for p in directory.rglob("*") if p.is_file()
    }
    assert sorted(on_disk) == sorted(files), "files added or gone: ORCHESTRO_UPDATE_GOLDEN=1"
    for name, text in files.items():
        assert on_disk[name] == text, f"{example}/{name} changed: ORCHESTRO_UPDATE_GOLDEN=1"


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_kubernetes_validate_strict(
    generated: dict[str, dict[str, str]], version: str, tmp_path: Path
) -> None:
    paths = []
    apps = dict(generated.items())
    apps["scaled-hpa"] = {f"k8s/{n}": t for n, t in manifests(scaled("hpa")).items()}
    secret = manifests(scaled("none", certs="secret"))
    apps["scaled-secret"] = {f"k8s/{n}": t for n, t in secret.items()}
    for example, files in apps.items():
        for name, text in files.items():
            if name.startswith("k8s/") and not name.endswith("kustomization.yaml"):
                path = tmp_path / f"{example}-{Path(name).name}"
                path.write_text(text)
                paths.append(str(path))
    tool = shutil.which("kubernetes-validate") or str(ROOT / ".venv/bin/kubernetes-validate")
    result = subprocess.run(
        [tool, "--strict", "--quiet", "-k", version, *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("example", EXAMPLES)
def test_semantics(generated: dict[str, dict[str, str]], example: str) -> None:
    docs = objects(generated[example])
    deployments = by_kind(docs, "Deployment")
    assert deployments
    for doc in docs:
        name = doc["metadata"]["name"]
        assert DNS_1123.fullmatch(name), name
        assert len(name) <= 63, name
        assert doc["metadata"].get("namespace", "shop") == "shop"  # not on the Namespace
    for dep in deployments:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        labels = _pod_labels(dep)
        assert _matches(dep["spec"]["selector"]["matchLabels"], labels)
        (container,) = pod["containers"]
        assert container["command"][:4] == ["python", "-m", "orchestro", "run"]
        assert container["command"][5:7] == ["--cell", name]
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pre_stop < pod["terminationGracePeriodSeconds"]
        assert pre_stop + 30 < pod["terminationGracePeriodSeconds"]  # the drain fits too
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"]
        assert not security["allowPrivilegeEscalation"]
        assert security["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        account = one(docs, "ServiceAccount", pod["serviceAccountName"])
        assert account["automountServiceAccountToken"] is False
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        config = one(docs, "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])
        assert config["data"]["ORCHESTRO_STATE_DIR"] in mounts
        port = container["ports"][0]["containerPort"]
        for svc_name in (name, f"{name}-peers"):
            svc = one(docs, "Service", svc_name)
            assert _matches(svc["spec"]["selector"], labels)
            assert svc["spec"]["ports"][0]["port"] == port
        assert one(docs, "Service", f"{name}-peers")["spec"]["clusterIP"] == "None"
        policy = one(docs, "NetworkPolicy", name)
        assert _matches(policy["spec"]["podSelector"]["matchLabels"], labels)
        assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": port}]
        # A fixed cell (the examples' default Scaling): no autoscaler, one replica, no PDB.
        assert dep["spec"]["replicas"] == 1
        assert not by_kind(docs, "HorizontalPodAutoscaler")
        assert not by_kind(docs, "PodDisruptionBudget")


def test_egress_reaches_exactly_the_cells_called(generated: dict[str, dict[str, str]]) -> None:
    docs = objects(generated["shop"])

    def callees(name: str) -> set[tuple[str, int]]:
        egress = one(docs, "NetworkPolicy", name)["spec"]["egress"]
        return {
            (rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], port["port"])
            for rule in egress
            if "to" in rule
            for port in rule["ports"]
        }

    assert callees("storefront") == {("orders", 8091), ("inventory", 8093)}
    assert callees("orders") == {("inventory", 8093), ("payments", 8092)}
    assert callees("payments") == set()
    registry = one(docs, "ConfigMap", "orders")["data"]["ORCHESTRO_REGISTRY"]
    assert registry == (
        "dns:///inventory=inventory-peers.shop.svc.cluster.local,"
        "payments=payments-peers.shop.svc.cluster.local"
    )


def test_hpa_mirrors_scaling() -> None:
    from .scaled_app import Api

    app = scaled("hpa")
    docs = [d for text in manifests(app).values() for d in yaml.safe_load_all(text) if d]
    hpa = one(docs, "HorizontalPodAutoscaler", "api")["spec"]
    s = Api.__orchestro_cell__.scaling  # type: ignore[attr-defined]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (s.min, s.max) == (2, 12)
    assert hpa["scaleTargetRef"]["name"] == "api"
    target = hpa["metrics"][0]["pods"]
    assert target["metric"]["name"] == "http_server_active_requests"
    assert target["target"]["averageValue"] == "35"  # 50 at 70 %
    down = hpa["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] == 120
    assert down["policies"] == [{"type": "Percent", "value": 75, "periodSeconds": 2}]
    up = hpa["behavior"]["scaleUp"]
    assert up["stabilizationWindowSeconds"] == 0
    assert up["policies"] == [{"type": "Percent", "value": 99900, "periodSeconds": 2}]
    # The HPA owns the count: an apply must not reset a scaled-out Deployment to min.
    assert "replicas" not in one(docs, "Deployment", "api")["spec"]
    assert "replicas" not in one(docs, "Deployment", "worker")["spec"]
    assert one(docs, "Deployment", "ledger")["spec"]["replicas"] >= 1
    pdb = one(docs, "PodDisruptionBudget", "api")["spec"]
    assert pdb["maxUnavailable"] == 1
    # cpu, from min 0: the HPA cannot go below 1; a CPU quantity per replica.
    worker = one(docs, "HorizontalPodAutoscaler", "worker")["spec"]
    assert worker["minReplicas"] == 1
    assert worker["maxReplicas"] == 5
    assert worker["metrics"][0]["resource"]["target"]["averageValue"] == "350m"
    # The ledger is fixed: no autoscaler.
    assert not [
        d for d in docs if d["kind"].endswith("Autoscaler") and d["metadata"]["name"] == "ledger"
    ]


def test_keda_scaled_object_and_scale_to_zero() -> None:
    docs = [d for t in manifests(scaled("keda")).values() for d in yaml.safe_load_all(t) if d]
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    api = one(docs, "ScaledObject", "api")["spec"]
    assert (api["minReplicaCount"], api["maxReplicaCount"]) == (2, 12)
    assert api["cooldownPeriod"] == 120
    (trigger,) = api["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == 'sum(http_server_active_requests{orchestro_cell="api"})'
    assert trigger["metadata"]["threshold"] == "35"
    worker = one(docs, "ScaledObject", "worker")["spec"]
    assert worker["minReplicaCount"] == 0
    # KEDA owns the count: no `replicas: 0` that would stop a scaled-out worker on apply.
    assert "replicas" not in one(docs, "Deployment", "worker")["spec"]
    assert "replicas" not in one(docs, "Deployment", "api")["spec"]
    assert worker["triggers"][0]["type"] == "cpu"


def test_no_autoscaler() -> None:
    docs = [d for t in manifests(scaled("none")).values() for d in yaml.safe_load_all(t) if d]
    assert not [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    assert one(docs, "Deployment", "worker")["spec"]["replicas"] == 1


def test_internal_cell_admits_only_its_callers_and_monitoring() -> None:
    docs = [d for t in manifests(scaled()).values() for d in yaml.safe_load_all(t) if d]
    (rule,) = one(docs, "NetworkPolicy", "ledger")["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9001}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "api",
                                         "app.kubernetes.io/component": "cell"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]  # fmt: skip
    egress = one(docs, "NetworkPolicy", "api")["spec"]["egress"]
    search = [r for r in egress if r.get("to", [{}])[0].get("podSelector", {}).get(
        "matchLabels", {}).get("app.kubernetes.io/name") == "search"]  # fmt: skip
    assert search == [{"to": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "search", "app.kubernetes.io/component": "cell"}}}]}]  # fmt: skip
    assert {"ports": [{"protocol": "TCP", "port": 443}]} in egress  # the https URL
    # DNS to any address: NodeLocal DNSCache (hostNetwork, 169.254.20.10) is no kube-dns pod.
    dns = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert egress[0] == {"ports": dns}


def test_free_port_cell_gets_a_fixed_one() -> None:
    docs = [d for t in manifests(scaled()).values() for d in yaml.safe_load_all(t) if d]
    container = one(docs, "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["--port", "8080"]
    assert container["ports"][0]["containerPort"] == 8080


def test_etcd_registry_and_grace_period() -> None:
    app = scaled(registry="etcd://10.0.0.10:2379,10.0.0.11:2380")
    docs = [d for t in manifests(app).values() for d in yaml.safe_load_all(t) if d]
    assert one(docs, "ConfigMap", "api")["data"]["ORCHESTRO_REGISTRY"].startswith("etcd://")
    egress = one(docs, "NetworkPolicy", "api")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 2379}, {"protocol": "TCP", "port": 2380}]} in (
        egress
    )
    assert grace_period(app) == 5 + 30 + 5


def test_kubernetes_and_compose_share_the_grace_arithmetic() -> None:
    # A fractional drain rounds up in both, and both add the same margin (compose has no
    # preStop): a kill never cuts the last half second of a drain.
    app = dataclasses.replace(scaled(grace_margin_seconds=7), drain_timeout=2.5)
    assert grace_period(app) == 5 + 3 + 7
    services = yaml.safe_load(compose(app))["services"]
    assert {s["stop_grace_period"] for s in services.values()} == {"10s"}


def test_kustomization_lists_every_file(generated: dict[str, dict[str, str]]) -> None:
    files = generated["shop"]
    kustomization = yaml.safe_load(files["k8s/kustomization.yaml"])
    assert kustomization["namespace"] == "shop"
    listed = {f"k8s/{r}" for r in kustomization["resources"]}
    assert listed == {n for n in files if n.startswith("k8s/")} - {"k8s/kustomization.yaml"}


@pytest.mark.parametrize("certs", ["secret", "cert-manager"])
def test_identity_secret_is_mounted_for_the_security_settings(certs: str) -> None:
    docs = [d for t in manifests(scaled(certs=certs)).values() for d in yaml.safe_load_all(t) if d]
    pod = one(docs, "Deployment", "api")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "identity"]
    assert volume["secret"]["secretName"] == "api-identity"
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "identity"]
    assert mount["readOnly"] is True
    data = one(docs, "ConfigMap", "api")["data"]
    assert data["ORCHESTRO_CERT_FILE"] == f"{mount['mountPath']}/tls.crt"
    assert data["ORCHESTRO_KEY_FILE"] == f"{mount['mountPath']}/tls.key"
    assert data["ORCHESTRO_BUNDLE_FILE"] == f"{mount['mountPath']}/ca.crt"
    assert data["ORCHESTRO_TRUST_DOMAIN"] == "orchestro.local"
    assert bool(by_kind(docs, "Certificate")) is (certs == "cert-manager")


def test_behaviour_edges() -> None:
    from orchestro import Scaling
    from orchestro.deploy.kubernetes import hpa_behavior

    app = scaled()
    model = app.cell("api")
    still = Scaling(min=1, max=3, max_scale_down_rate=1, max_scale_up_rate=1, scale_down_delay=7200)
    behavior = hpa_behavior(dataclasses.replace(model, scaling=still))
    assert behavior["scaleDown"] == {"stabilizationWindowSeconds": 3600, "selectPolicy": "Disabled"}
    assert behavior["scaleUp"]["selectPolicy"] == "Disabled"


def test_allow_list_replaces_the_derived_callers() -> None:
    """``@cell(allow=[...])`` is the ingress list, not the callers derived from the code."""
    from orchestro.deploy.kubernetes import network_policy

    app = scaled()
    ledger = app.cell("ledger")
    allowing = dataclasses.replace(
        ledger, spec=dataclasses.replace(ledger.spec, allow=("auditor",))
    )
    assert allowing.allow == ("auditor",)
    (rule,) = network_policy(app, allowing)["spec"]["ingress"]
    names = [s["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
             for s in rule["from"] if "podSelector" in s]  # fmt: skip
    assert names == ["auditor"]  # not the derived caller, api


def test_with_identities_the_mesh_port_admits_exactly_the_allowed_callers() -> None:
    """examples/vault.py: ``@cell("vault", allow=["teller"])`` and ``/audit`` with
    ``allow=["auditor"]``: the mesh port (internal services) admits those two cells' pods
    (and scrapes), not the shop that calls it; the public port answers anyone."""
    app = load_app(str(ROOT / "examples" / "vault.py"), DeployOptions(certs="cert-manager"))
    docs = [d for t in manifests(app).values() for d in yaml.safe_load_all(t) if d]
    vault = app.cell("vault")
    public, mesh = one(docs, "NetworkPolicy", "vault")["spec"]["ingress"]
    assert public == {"ports": [{"protocol": "TCP", "port": vault.port}]}
    assert mesh["ports"] == [{"protocol": "TCP", "port": vault.mesh_port}]
    names = [s["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
             for s in mesh["from"] if "podSelector" in s]  # fmt: skip
    assert names == ["auditor", "teller"]
    # The pod, its headless Service (SRV _mesh._tcp) and the settings name the same port.
    container = one(docs, "Deployment", "vault")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "mesh", "containerPort": vault.mesh_port, "protocol": "TCP"} in container[
        "ports"
    ]
    peers = one(docs, "Service", "vault-peers")["spec"]["ports"]
    assert {"name": "mesh", "port": vault.mesh_port, "targetPort": "mesh"} in peers
    settings = one(docs, "ConfigMap", "vault")["data"]
    assert settings["ORCHESTRO_MESH_PORT"] == str(vault.mesh_port)
    assert "ORCHESTRO_MESH_TLS" not in settings
    # A caller may reach both of the vault's ports.
    egress = one(docs, "NetworkPolicy", "teller")["spec"]["egress"]
    (to_vault,) = [r for r in egress if "to" in r]
    assert to_vault["ports"] == [
        {"protocol": "TCP", "port": vault.port},
        {"protocol": "TCP", "port": vault.mesh_port},
    ]


def test_without_identities_internal_calls_across_pods_are_warned_about(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from orchestro.cli.main import main

    assert main(["deploy", "k8s", str(ROOT / "examples" / "vault.py"), "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "orchestro: warning: teller, auditor, shop call cell 'vault'" in err
    assert "--certs cert-manager" in err
    app = load_app(str(ROOT / "examples" / "vault.py"), DeployOptions())
    docs = [d for t in manifests(app).values() for d in yaml.safe_load_all(t) if d]
    # No shared issuer: no mesh listener (each pod would trust only a CA of its own).
    assert one(docs, "ConfigMap", "vault")["data"]["ORCHESTRO_MESH_TLS"] == "false"
