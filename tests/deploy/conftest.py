"""Generate the deployment files of every example app once per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestro.cli.deploy import load_app
from orchestro.deploy import DeployOptions, compose, dockerfile, dockerignore, manifests

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ("hello", "orders", "catalog", "frontend", "shop")
# Pinned so that the golden files do not depend on defaults that may change.
OPTIONS = DeployOptions(image="registry.example.com/orchestro-examples:1.0.0", namespace="shop")


def generate(example: str, options: DeployOptions = OPTIONS) -> dict[str, str]:
    """Every file `deploy k8s`, `deploy docker` and `deploy compose` write for ``example``."""
    app = load_app(f"examples/{example}.py", options)
    files = {f"k8s/{name}": text for name, text in manifests(app).items()}
    files["docker/Dockerfile"] = dockerfile(app, context=ROOT)
    files["docker/.dockerignore"] = dockerignore(app)
    files["compose/compose.yaml"] = compose(app)
    return files


def objects(files: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects of the cell files (not the kustomization)."""
    found = []
    for name, text in files.items():
        if name.startswith("k8s/") and not name.endswith("kustomization.yaml"):
            found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


@pytest.fixture(scope="session")
def generated() -> dict[str, dict[str, str]]:
    import os

    before = Path.cwd()
    os.chdir(ROOT)  # targets are relative to the build context, as a user runs it
    try:
        return {example: generate(example) for example in EXAMPLES}
    finally:
        os.chdir(before)
