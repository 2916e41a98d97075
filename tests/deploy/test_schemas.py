"""The kinds kubernetes-validate has no schema for, checked against the projects' own
published schemas (kept in ``schemas/``, see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from orchestro.deploy import manifests

from .test_kubernetes import scaled

SCHEMAS = Path(__file__).parent / "schemas"


def closed(schema: Any) -> Any:
    """``schema`` with unknown fields refused wherever it lists the known ones."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def test_keda_scaled_objects_match_the_crd() -> None:
    schema = closed(json.loads((SCHEMAS / "keda.sh_scaledobject_v1alpha1.json").read_text()))
    docs = [d for t in manifests(scaled("keda")).values() for d in yaml.safe_load_all(t) if d]
    found = [d for d in docs if d["kind"] == "ScaledObject"]
    assert {d["metadata"]["name"] for d in found} == {"api", "worker"}
    for doc in found:
        jsonschema.validate(doc, schema)
    broken = {**found[0], "spec": {**found[0]["spec"], "minReplicas": 1}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)  # the check does catch a wrong field


@pytest.mark.parametrize("example", ["hello", "frontend", "shop"])
def test_compose_matches_the_compose_spec(
    generated: dict[str, dict[str, str]], example: str
) -> None:
    validator = jsonschema.Draft7Validator(json.loads((SCHEMAS / "compose-spec.json").read_text()))
    spec = yaml.safe_load(generated[example]["compose/compose.yaml"])
    validator.validate(spec)
    name = next(iter(spec["services"]))
    broken = {**spec, "services": {name: {**spec["services"][name], "stop_grace": "1s"}}}
    assert not validator.is_valid(broken)


def test_cert_manager_certificates_match_the_crd() -> None:
    schema = closed(json.loads((SCHEMAS / "cert-manager.io_certificate_v1.json").read_text()))
    app = scaled(certs="cert-manager", trust_domain="prod.example.com")
    docs = [d for t in manifests(app).values() for d in yaml.safe_load_all(t) if d]
    found = [d for d in docs if d["kind"] == "Certificate"]
    assert {d["metadata"]["name"] for d in found} == {"api", "ledger", "worker"}
    for doc in found:
        jsonschema.validate(doc, schema)
    api = next(d for d in found if d["metadata"]["name"] == "api")["spec"]
    assert api["uris"] == ["spiffe://prod.example.com/cell/api"]
    assert api["dnsNames"] == ["api.cell.prod.example.com"]
    assert api["secretName"] == "api-identity"


def test_pod_monitors_match_the_crd() -> None:
    schema = closed(json.loads((SCHEMAS / "monitoring.coreos.com_podmonitor_v1.json").read_text()))
    docs = [
        d
        for t in manifests(scaled(monitoring="prometheus-operator")).values()
        for d in yaml.safe_load_all(t)
        if d
    ]
    found = [d for d in docs if d["kind"] == "PodMonitor"]
    assert {d["metadata"]["name"] for d in found} == {"api", "ledger", "worker"}
    for doc in found:
        jsonschema.validate(doc, schema)
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        assert "annotations" not in dep["spec"]["template"]["metadata"]  # no double scrape
