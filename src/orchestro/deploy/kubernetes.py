"""Kubernetes objects for each cell, as plain data: a pure function of the :class:`App`.

Per cell: ServiceAccount, ConfigMap, Deployment, Service, headless Service (``NAME-peers``, the
pods' own addresses for the ``dns://`` registry), NetworkPolicy, then a PodDisruptionBudget
(two or more replicas) and an autoscaler (HPA or KEDA ScaledObject; none for a fixed cell).
The mapping from ``@cell``/``Scaling``/settings to fields is the table of
``docs/deployment/kubernetes.md``.

```python
files = manifests(load_app("examples/shop.py", DeployOptions()))
files["orders.yaml"]        # the YAML of every object of the orders cell
```
"""

from __future__ import annotations

import math
from typing import Any, Final
from urllib.parse import urlsplit

from ..security import spiffe
from .app import App, CellModel
from .yaml import dump, dump_all

__all__ = ["STATE_DIR", "cell_objects", "hpa_behavior", "manifests", "quantity"]

STATE_DIR: Final = "/var/lib/orchestro"
IDENTITY_DIR: Final = "/var/run/secrets/orchestro"
# The development CA's leaf lifetime and renewal point (security/settings.py): 24 h, at 70 %.
LEAF_LIFETIME: Final = "24h0m0s"
RENEW_BEFORE: Final = "7h12m0s"
MANAGED_BY: Final = "orchestro"
# Custom metrics (through the Prometheus Adapter) an HPA sizes a replica by, per Scaling.metric.
POD_METRICS: Final = {
    "concurrency": "http_server_active_requests",
    "rps": "http_server_requests_per_second",
    "latency": "http_server_request_duration_p95_seconds",
}
# The same load as PromQL over the cell's own metrics, for KEDA's Prometheus trigger.
PROMQL: Final = {
    "concurrency": 'sum(http_server_active_requests{{orchestro_cell="{cell}"}})',
    "rps": 'sum(rate(http_server_request_duration_seconds_count{{orchestro_cell="{cell}"}}[1m]))',
    "latency": "histogram_quantile(0.95, sum by (le) (rate("
    'http_server_request_duration_seconds_bucket{{orchestro_cell="{cell}"}}[1m])))',
}


def manifests(app: App) -> dict[str, str]:
    """File name → YAML: one file per cell, a kustomization.yaml, and a namespace.yaml
    unless the namespace is ``default`` (which is not ours to relabel)."""
    files = {}
    if app.options.namespace != "default":
        files["namespace.yaml"] = dump(namespace(app))
    for cell in app.cells:
        files[f"{cell.name}.yaml"] = dump_all(cell_objects(app, cell))
    files["kustomization.yaml"] = dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": app.options.namespace,
            "labels": [{"pairs": {"app.kubernetes.io/part-of": app.name}}],
            "resources": list(files),
        }
    )
    return files


def namespace(app: App) -> dict[str, Any]:
    # The restricted Pod Security Standard, enforced: the pods are written to pass it.
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": app.options.namespace,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


def cell_objects(app: App, cell: CellModel) -> list[dict[str, Any]]:
    objects = [
        service_account(app, cell),
        config_map(app, cell),
        deployment(app, cell),
        service(app, cell),
        peers_service(app, cell),
        network_policy(app, cell),
    ]
    if app.options.certs == "cert-manager":
        objects.append(certificate(app, cell))
    if app.options.monitoring == "prometheus-operator":
        objects.append(pod_monitor(app, cell))
    if replicas(app, cell) >= 2:
        objects.append(disruption_budget(app, cell))
    if autoscaled(app, cell) and app.options.autoscaler == "hpa":
        objects.append(hpa(app, cell))
    elif autoscaled(app, cell) and app.options.autoscaler == "keda":
        objects.append(scaled_object(app, cell))
    return objects


def autoscaled(app: App, cell: CellModel) -> bool:
    """Whether an HPA or a ScaledObject owns the cell's replica count."""
    return cell.scaling.autoscales and app.options.autoscaler in ("hpa", "keda")


def selector(cell: CellModel) -> dict[str, str]:
    return _selector_of(cell.name)


def labels(app: App, cell: CellModel) -> dict[str, str]:
    return {
        **selector(cell),
        "app.kubernetes.io/part-of": app.name,
        "app.kubernetes.io/version": cell.spec.version,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def _meta(app: App, cell: CellModel, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or cell.name,
        "namespace": app.options.namespace,
        "labels": labels(app, cell),
    }


def replicas(app: App, cell: CellModel) -> int:
    """The fewest replicas the cell runs: ``Scaling.min``; at least 1 unless KEDA (which
    scales from zero) owns the count."""
    if app.options.autoscaler == "keda" and cell.scaling.autoscales:
        return cell.scaling.min
    return max(cell.scaling.min, 1)


def grace_period(app: App) -> int:
    """preStop + the drain timeout + a margin: the kubelet's SIGKILL never cuts a drain."""
    return app.stop_grace(app.options.pre_stop_seconds)


def registry_url(app: App, cell: CellModel) -> str:
    if app.options.registry != "dns":
        return app.options.registry
    domain = f"{app.options.namespace}.svc.cluster.local"
    entries = [f"{name}={name}-peers.{domain}" for name in cell.calls]
    return "dns:///" + ",".join(entries)


def service_account(app: App, cell: CellModel) -> dict[str, Any]:
    # No Kubernetes API access: the token is not mounted (the pod spec says so too).
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(app, cell),
        "automountServiceAccountToken": False,
    }


def config_map(app: App, cell: CellModel) -> dict[str, Any]:
    data = {
        "ORCHESTRO_HOST": "0.0.0.0",
        "ORCHESTRO_REGISTRY": registry_url(app, cell),
        "ORCHESTRO_DRAIN_TIMEOUT": _number(app.drain_timeout),
        "ORCHESTRO_LOG_FORMAT": "json",
        "ORCHESTRO_STATE_DIR": STATE_DIR,
    }
    if app.options.certs == "none":
        # Without identities from one issuer, each pod would make its own development CA and
        # no pod could verify another: the mesh listener is off, every service on one port
        # (internal services then refuse calls from other pods: see deploy's warning).
        data["ORCHESTRO_MESH_TLS"] = "false"
    else:
        data |= {
            "ORCHESTRO_MESH_PORT": str(cell.mesh_port),
            "ORCHESTRO_TRUST_DOMAIN": app.options.trust_domain,
            "ORCHESTRO_CERT_FILE": f"{IDENTITY_DIR}/tls.crt",
            "ORCHESTRO_KEY_FILE": f"{IDENTITY_DIR}/tls.key",
            "ORCHESTRO_BUNDLE_FILE": f"{IDENTITY_DIR}/ca.crt",
        }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(app, cell), "data": data}


def deployment(app: App, cell: CellModel) -> dict[str, Any]:
    o = app.options
    container: dict[str, Any] = {
        "name": "cell",
        "image": app.image,
        "imagePullPolicy": "IfNotPresent",
        "command": cell.command(app.target),
        "ports": _ports(app, cell, "containerPort"),
        "envFrom": [{"configMapRef": {"name": cell.name}}],
        "env": [
            # Peers reach the pod at its own address (etcd registrations advertise it).
            {
                "name": "ORCHESTRO_ADVERTISE_HOST",
                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
            }
        ],
        "startupProbe": {**_probe("/readyz"), "periodSeconds": 1, "failureThreshold": 60},
        "readinessProbe": {
            **_probe("/readyz"),
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            **_probe("/healthz"),
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # Endpoints drop (and kube-proxy, DNS and peers notice) before SIGTERM starts the drain.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(o.pre_stop_seconds)]}}},
        "resources": {
            "requests": {"cpu": o.cpu_request, "memory": o.memory_request},
            # No CPU limit: throttling a cell adds latency while the node has idle cores.
            "limits": {"memory": o.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    template_meta: dict[str, Any] = {"labels": labels(app, cell)}
    if o.monitoring == "annotations":
        template_meta["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(cell.port),
            "prometheus.io/path": "/metrics",
        }
    volumes: list[dict[str, Any]] = [
        {"name": "state", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    if o.certs != "none":
        # The cell's identity, where its security settings point; the kubelet swaps the files.
        container["volumeMounts"].append(
            {"name": "identity", "mountPath": IDENTITY_DIR, "readOnly": True}
        )
        volumes.append(
            {
                "name": "identity",
                "secret": {"secretName": f"{cell.name}-identity", "defaultMode": 0o440},
            }
        )
    spec: dict[str, Any] = {}
    if not autoscaled(app, cell):
        # An autoscaler owns the count otherwise: a `replicas` here would reset a scaled-out
        # Deployment to the minimum on every `kubectl apply` (KEDA's min 0: to none at all).
        spec["replicas"] = replicas(app, cell)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(app, cell),
        "spec": {
            **spec,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(cell)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": template_meta,
                "spec": {
                    "serviceAccountName": cell.name,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": grace_period(app),
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": o.user_id,
                        "runAsGroup": o.user_id,
                        "fsGroup": o.user_id,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": key,
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector(cell)},
                        }
                        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
                    ],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service(app: App, cell: CellModel) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(app, cell),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(cell),
            "ports": [{"name": "http", "port": cell.port, "targetPort": "http"}],
        },
    }


def peers_service(app: App, cell: CellModel) -> dict[str, Any]:
    """Headless: DNS answers with the ready pods themselves (A/AAAA, and SRV
    ``_http._tcp.NAME-peers``), which the mesh balances over with its own P2C."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(app, cell, f"{cell.name}-peers"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": selector(cell),
            "ports": _ports(app, cell, "port"),
        },
    }


def _ports(app: App, cell: CellModel, key: str) -> list[dict[str, Any]]:
    """The gateway's port, and the mesh listener's when cells have identities."""
    found = [("http", cell.port)]
    if mesh_tls(app):
        found.append(("mesh", cell.mesh_port))
    if key == "containerPort":
        return [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in found]
    return [{"name": n, "port": p, "targetPort": n} for n, p in found]


def mesh_tls(app: App) -> bool:
    """Whether the pods serve a mesh listener (mutual TLS with identities from one issuer)."""
    return app.options.certs != "none"


def network_policy(app: App, cell: CellModel) -> dict[str, Any]:
    """Ingress to the gateway's port from anyone when the cell has public services (else
    from its callers), to the mesh port only from the cells its policy allows (its ``allow``
    list, else the app's cells that call it), and from the monitoring namespace; egress to
    DNS, the registry and its callees."""
    port = [{"protocol": "TCP", "port": cell.port}]
    sources: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": _selector_of(name)}} for name in cell.mesh_callers
    ]
    sources.append(
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": app.options.monitoring_namespace}
            }
        }
    )
    # Public services answer anyone; the gateway's access policy decides per service.
    ingress: list[dict[str, Any]] = (
        [{"ports": port}] if cell.public else [{"from": sources, "ports": port}]
    )
    if mesh_tls(app):
        # Internal services are on the mesh port: its allowed callers (and scrapes) only.
        ingress.append({"from": sources, "ports": [{"protocol": "TCP", "port": cell.mesh_port}]})
    # DNS on port 53 to any address: the cluster DNS is not always kube-dns pods in
    # kube-system (NodeLocal DNSCache answers on a link-local address from the host network,
    # which no pod or namespace selector matches).
    egress: list[dict[str, Any]] = [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    ]
    if app.options.registry.startswith("etcd://"):
        egress.append({"ports": [{"protocol": "TCP", "port": p} for p in _etcd_ports(app)]})
    for name in cell.calls:
        # A callee of this app listens where its cell says; one of another app (deployed by
        # its own manifests, in this namespace) where its @cell class says, if the client
        # names the class; a raw client by name leaves the port open.
        in_app = {c.name: c for c in app.cells}
        callee = in_app.get(name)
        port_of = callee.port if callee is not None else cell.call_ports.get(name)
        rule: dict[str, Any] = {"to": [{"podSelector": {"matchLabels": _selector_of(name)}}]}
        if port_of is not None:
            rule["ports"] = [{"protocol": "TCP", "port": port_of}]
            if callee is not None and mesh_tls(app):
                rule["ports"].append({"protocol": "TCP", "port": callee.mesh_port})
        egress.append(rule)
    if cell.urls:
        # http(s) URLs outside the mesh: their addresses are not known here.
        egress.append({"ports": [{"protocol": "TCP", "port": p} for p in _url_ports(cell)]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(app, cell),
        "spec": {
            "podSelector": {"matchLabels": selector(cell)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def certificate(app: App, cell: CellModel) -> dict[str, Any]:
    """A cert-manager Certificate: the cell's SPIFFE ID as its URI SAN (and its DNS SAN), in
    the Secret the pod mounts, renewed at 70 % of its life like the development CA's."""
    o = app.options
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": _meta(app, cell),
        "spec": {
            "secretName": f"{cell.name}-identity",
            "uris": [spiffe.cell_spiffe_id(o.trust_domain, cell.name)],
            "dnsNames": [spiffe.cell_dns_name(o.trust_domain, cell.name)],
            "duration": LEAF_LIFETIME,
            "renewBefore": RENEW_BEFORE,
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["digital signature", "server auth", "client auth"],
            "issuerRef": {"name": o.issuer, "kind": o.issuer_kind, "group": "cert-manager.io"},
        },
    }


def pod_monitor(app: App, cell: CellModel) -> dict[str, Any]:
    """A prometheus-operator PodMonitor: every pod of the cell, each scraped on its own (the
    metrics are per replica; a Service scrape would sample one pod at random)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _meta(app, cell),
        "spec": {
            "selector": {"matchLabels": selector(cell)},
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }


def disruption_budget(app: App, cell: CellModel) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(app, cell),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(cell)}},
    }


def hpa_behavior(cell: CellModel) -> dict[str, Any]:
    """The scaler's limits as HPA policies: scale-down held for ``scale_down_delay`` and at
    most ``1 - 1/max_scale_down_rate`` of the pods per tick; scale-up at once, up to
    ``max_scale_up_rate`` times per tick."""
    s = cell.scaling
    period = min(1800, max(1, math.ceil(s.tick)))  # the API's bounds
    down = math.floor(100 - 100 / s.max_scale_down_rate)
    up = math.ceil((s.max_scale_up_rate - 1) * 100)
    return {
        "scaleUp": _direction(0, up, period),
        # The API caps the window at an hour; the local scaler has no cap.
        "scaleDown": _direction(min(3600, math.ceil(s.scale_down_delay)), down, period),
    }


def _direction(window: int, percent: int, period: int) -> dict[str, Any]:
    if percent <= 0:  # a rate of 1: the scaler never moves this way
        return {"stabilizationWindowSeconds": window, "selectPolicy": "Disabled"}
    return {
        "stabilizationWindowSeconds": window,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": percent, "periodSeconds": period}],
    }


def hpa(app: App, cell: CellModel) -> dict[str, Any]:
    s = cell.scaling
    if s.metric == "cpu":
        metric: dict[str, Any] = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "AverageValue", "averageValue": quantity(s.per_replica)},
            },
        }
    else:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": POD_METRICS[s.metric]},
                "target": {"type": "AverageValue", "averageValue": quantity(s.per_replica)},
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(app, cell),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": cell.name},
            # The HPA cannot scale to zero without a feature gate: KEDA can.
            "minReplicas": max(s.min, 1),
            "maxReplicas": s.max,
            "metrics": [metric],
            "behavior": hpa_behavior(cell),
        },
    }


def scaled_object(app: App, cell: CellModel) -> dict[str, Any]:
    s = cell.scaling
    if s.metric == "cpu":
        trigger: dict[str, Any] = {
            "type": "cpu",
            "metricType": "AverageValue",
            "metadata": {"value": quantity(s.per_replica)},
        }
    else:
        trigger = {
            "type": "prometheus",
            "metricType": "Value" if s.metric == "latency" else "AverageValue",
            "metadata": {
                "serverAddress": app.options.prometheus_url,
                "query": PROMQL[s.metric].format(cell=cell.name),
                "threshold": _number(s.per_replica),
            },
        }
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(app, cell),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": cell.name},
            "minReplicaCount": s.min,
            "maxReplicaCount": s.max,
            "pollingInterval": max(1, math.ceil(s.tick)),
            "cooldownPeriod": math.ceil(s.scale_down_delay),
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa_behavior(cell)}},
            "triggers": [trigger],
        },
    }


def quantity(value: float) -> str:
    """A Kubernetes quantity: whole numbers as they are, fractions in thousandths (``700m``)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _probe(path: str) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}}


def _selector_of(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "cell"}


def _etcd_ports(app: App) -> list[int]:
    ports = []
    for endpoint in app.options.registry.removeprefix("etcd://").split(","):
        _, _, port = endpoint.rpartition(":")
        ports.append(int(port) if port.isdigit() else 2379)
    return sorted(set(ports))


def _url_ports(cell: CellModel) -> list[int]:
    ports = set()
    for url in cell.urls:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        ports.add(port or (443 if parts.scheme == "https" else 80))
    return sorted(ports)
