"""``deploy k8s|docker|compose``: files written where -o says; a bad input is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestro.cli.main import main

from .conftest import ROOT


def test_k8s_writes_one_file_per_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "k8s"
    code = main(["deploy", "k8s", "examples/shop.py", "-o", str(out), "--namespace", "shop",
                 "--cell", "orders", "--cell", "payments"])  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["kustomization.yaml", "namespace.yaml", "orders.yaml", "payments.yaml"]
    assert str(out / "orders.yaml") in capsys.readouterr().out


def test_docker_and_compose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["deploy", "docker", "examples/hello.py", "-o", str(tmp_path)]) == 0
    assert main(["deploy", "compose", "examples/hello.py", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".dockerignore",
        "Dockerfile",
        "compose.yaml",
    ]


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--image", "Shop:1"], "--image 'Shop:1' is not an image reference"),
        (["--image", "shop:bad tag"], "--image 'shop:bad tag'"),
        (["--namespace", "Shop_1"], "--namespace 'Shop_1' is not a DNS-1123 label"),
        (["--registry", "consul://x"], "--registry 'consul://x': use dns"),
        (["--cell", "nope"], "no cell named 'nope'"),
        (["--trust-domain", "Prod Domain"], "--trust-domain 'Prod Domain'"),
        (["--memory-limit", "lots"], "--memory-limit: String should match pattern"),
        (["--user-id", "0"], "--user-id: Input should be greater than or equal to 1"),
        (["--monitoring-namespace", "Mon"], "--monitoring-namespace 'Mon'"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    flags: list[str],
    names: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["deploy", "k8s", "examples/shop.py", "-o", str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert names in err
    assert not (tmp_path / "x").exists()


def test_docker_refuses_what_the_image_could_not_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An old Python: named, with what would do.
    monkeypatch.chdir(ROOT)
    code = main(["deploy", "docker", "examples/hello.py", "-o", str(tmp_path / "a"),
                 "--python", "3.10"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "--python: 3.10: orchestro needs Python 3.11 or newer" in err
    # A project with no pyproject.toml and no requirements.txt: nothing to install from.
    project = tmp_path / "plain"
    project.mkdir()
    (project / "hello.py").write_text((ROOT / "examples" / "hello.py").read_text())
    monkeypatch.chdir(project)
    code = main(["deploy", "docker", "hello.py", "-o", "dk"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "neither pyproject.toml nor requirements.txt" in err
    assert not (project / "dk").exists()
    (project / "requirements.txt").write_text("orchestro\n")
    assert main(["deploy", "docker", "hello.py", "-o", "dk"]) == 0
    assert "-r requirements.txt" in (project / "dk" / "Dockerfile").read_text()


def test_image_references_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for image in ("shop", "shop:1.0.0", "registry.example.com:5000/team/shop:v1-rc.2",
                  "ghcr.io/o/shop@sha256:" + "a" * 64):  # fmt: skip
        assert main(["deploy", "k8s", "examples/hello.py", "-o", str(tmp_path),
                     "--image", image]) == 0  # fmt: skip


@pytest.mark.slow
def test_module_entry_point(tmp_path: Path) -> None:
    """The command as a user runs it."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestro",
            "deploy",
            "k8s",
            "examples/nope.py",
            "-o",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == "orchestro: error: file 'examples/nope.py' does not exist: check the path\n"
    )


def test_scaling_from_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The how-to's orchestro.toml (docs/deployment/shop-on-kubernetes.md) scales two cells."""
    import yaml

    monkeypatch.chdir(ROOT)
    config = "docs/deployment/shop.orchestro.toml"
    assert main(["deploy", "k8s", "examples/shop.py", "-o", str(tmp_path), "--namespace",
                 "shop", "--config", config]) == 0  # fmt: skip
    bounds = {}
    for path in tmp_path.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "HorizontalPodAutoscaler":
                spec = doc["spec"]
                bounds[doc["metadata"]["name"]] = (spec["minReplicas"], spec["maxReplicas"])
    assert bounds == {"storefront": (2, 10), "orders": (2, 6)}


def test_option_flags_reach_the_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    monkeypatch.chdir(ROOT)
    assert main(["deploy", "k8s", "examples/hello.py", "-o", str(tmp_path), "--cpu-request",
                 "250m", "--memory-limit", "1Gi", "--pre-stop-seconds", "10"]) == 0  # fmt: skip
    docs = list(yaml.safe_load_all((tmp_path / "greeter.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "250m"
    assert resources["limits"]["memory"] == "1Gi"
    assert pod["terminationGracePeriodSeconds"] == 10 + 30 + 5
    assert main(["deploy", "docker", "examples/hello.py", "-o", str(tmp_path), "--python",
                 "3.13", "--user-id", "20000"]) == 0  # fmt: skip
    dockerfile = (tmp_path / "Dockerfile").read_text()
    assert "FROM python:3.13-slim AS build" in dockerfile
    assert "USER 20000:20000" in dockerfile


def test_deploy_flags_come_from_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    # Literal fields get their values as choices (from DeployOptions, not a hand-written copy).
    with pytest.raises(SystemExit) as exit_:
        main(["deploy", "k8s", "examples/shop.py", "-o", "x", "--autoscaler", "vpa"])
    assert exit_.value.code == 2
    assert "invalid choice: 'vpa'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["deploy", "k8s", "--help"])
    help_text = capsys.readouterr().out
    assert "--autoscaler {hpa,keda,none}" in help_text
    assert "--certs {none,secret,cert-manager}" in help_text
    assert "--monitoring {annotations,prometheus-operator}" in help_text
    assert "env ORCHESTRO_" not in help_text  # no environment variable sets these
