"""The Dockerfile passes hadolint with no warnings; compose.yaml wires the cells together."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import EXAMPLES, ROOT


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES)
def test_hadolint_no_warnings(
    generated: dict[str, dict[str, str]], example: str, tmp_path: Path
) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(generated[example]["docker/Dockerfile"])
    tool = shutil.which("hadolint") or str(ROOT / ".venv/bin/hadolint")
    result = subprocess.run(
        [tool, "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape(generated: dict[str, dict[str, str]]) -> None:
    text = generated["shop"]["docker/Dockerfile"]
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2
    assert stages[1].startswith("FROM python:3.12-slim")  # the runtime: no build stage tools
    assert "USER 10001:10001" in text  # numeric: runAsNonRoot can verify it
    assert 'CMD ["python", "-m", "orchestro", "run", "examples/shop.py"]' in text
    assert "PYTHONUNBUFFERED=1" in text
    assert "urllib.request.urlopen" in text  # slim images have no curl
    assert "ORCHESTRO_HEALTHCHECK_URL=http://127.0.0.1:8093/healthz" in text
    assert ".venv" in generated["shop"]["docker/.dockerignore"].splitlines()


def test_compose_services(generated: dict[str, dict[str, str]]) -> None:
    spec = yaml.safe_load(generated["shop"]["compose/compose.yaml"])
    services = spec["services"]
    assert set(services) == {"inventory", "payments", "orders", "storefront"}
    orders = services["orders"]
    assert orders["command"] == ["python", "-m", "orchestro", "run", "examples/shop.py",
                                 "--cell", "orders"]  # fmt: skip
    assert orders["environment"]["ORCHESTRO_REGISTRY"] == (
        "static://inventory=http://inventory:8093,payments=http://payments:8092"
    )
    assert orders["depends_on"] == {
        "inventory": {"condition": "service_healthy"},
        "payments": {"condition": "service_healthy"},
    }
    assert "ports" not in orders  # only cells nobody in the app calls are published
    assert services["storefront"]["ports"] == ["8090:8090"]
    assert orders["read_only"] is True
