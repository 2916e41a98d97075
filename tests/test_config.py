"""The configuration file, its precedence, and its errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestro import ConfigurationError
from orchestro.config import (
    ConfigFile,
    GatewaySettings,
    RegistrySettings,
    find_config_file,
    load_settings,
)
from orchestro.mesh.policy import policies_from_file

from .conftest import run_cli

TOML = """
[gateway]
max_body_size = "2KiB"
drain_timeout = 7

[registry]
registry = "memory://"

[mesh]
timeout = 5

[mesh.cells.payments]
max_attempts = 1

[mesh.cells.payments.operations.charge]
timeout = 1.5
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_orchestro_toml_is_found_and_read(tmp_path: Path) -> None:
    path = write(tmp_path, "orchestro.toml", TOML)
    assert find_config_file(tmp_path) == path
    file = ConfigFile.load(path)
    settings = load_settings(GatewaySettings, file=file.section("gateway"), where="x")
    assert (int(settings.max_body_size), settings.drain_timeout) == (2048, 7)


def test_pyproject_tool_orchestro(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\n')
    assert find_config_file(tmp_path) is None  # no [tool.orchestro]
    path = write(tmp_path, "pyproject.toml", '[tool.orchestro.registry]\nregistry = "memory://"\n')
    assert find_config_file(tmp_path) == path
    file = ConfigFile.load(path)
    assert file.section("registry") == {"registry": "memory://"}
    # Errors name the tables as pyproject.toml spells them.
    typo = ConfigFile.load(write(tmp_path, "pyproject.toml", "[tool.orchestro.gateway]\nx = 1\n"))
    with pytest.raises(ConfigurationError, match=r"\[tool\.orchestro\.gateway\]: unknown key"):
        load_settings(GatewaySettings, {}, typo.section("gateway"), typo.where("gateway"))
    with pytest.raises(ConfigurationError, match=r"unknown section\(s\) tool\.orchestro\.gatway"):
        ConfigFile.load(write(tmp_path, "pyproject.toml", "[tool.orchestro.gatway]\n"))


def test_precedence_file_then_environment_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = ConfigFile.load(write(tmp_path, "orchestro.toml", TOML))
    section = file.section("gateway")
    monkeypatch.setenv("ORCHESTRO_DRAIN_TIMEOUT", "9")
    settings = load_settings(GatewaySettings, {}, section, file.where("gateway"))
    assert settings.drain_timeout == 9  # the environment beats the file
    assert int(settings.max_body_size) == 2048  # the file beats the default
    settings = load_settings(GatewaySettings, {"drain_timeout": "3"}, section)
    assert settings.drain_timeout == 3  # a flag beats both


def test_errors_name_the_file_the_table_and_the_key(tmp_path: Path) -> None:
    bad = write(tmp_path, "orchestro.toml", "[gateway]\ndrain_timeout = -1\n")
    file = ConfigFile.load(bad)
    with pytest.raises(ConfigurationError) as info:
        load_settings(GatewaySettings, {}, file.section("gateway"), file.where("gateway"))
    assert str(info.value).startswith(f"{bad}: [gateway] drain_timeout: Input should be greater")

    typo = ConfigFile.load(write(tmp_path, "typo.toml", "[gateway]\ndrain_timout = 1\n"))
    with pytest.raises(ConfigurationError, match=r"\[gateway\]: unknown key\(s\) drain_timout"):
        load_settings(GatewaySettings, {}, typo.section("gateway"), typo.where("gateway"))

    with pytest.raises(ConfigurationError, match=r"unknown section\(s\) gatway"):
        ConfigFile.load(write(tmp_path, "s.toml", "[gatway]\n"))
    with pytest.raises(ConfigurationError, match=r"not valid TOML"):
        ConfigFile.load(write(tmp_path, "broken.toml", "[gateway\n"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        ConfigFile.load(tmp_path / "missing.toml")


def test_mesh_policies_per_process_cell_and_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRO_MESH_TIMEOUT", "8")
    file = ConfigFile.load(write(tmp_path, "orchestro.toml", TOML))
    policies = policies_from_file(file)
    assert policies.default.timeout == 8  # the environment beats [mesh]
    assert policies.for_cell("orders") is policies.default
    payments = policies.for_cell("payments")
    assert (payments.max_attempts, payments.timeout) == (1, 8)
    charge = policies.for_operation("payments", "charge")
    assert (charge.max_attempts, charge.timeout) == (1, 1.5)
    bad = write(tmp_path, "bad.toml", "[mesh.cells.x]\nmax_attempts = 0\n")
    with pytest.raises(ConfigurationError, match=r"\[mesh.cells.x\] max_attempts: Input should"):
        policies_from_file(ConfigFile.load(bad))


def test_empty_when_there_is_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ConfigFile.load().sections == {}
    assert load_settings(RegistrySettings).registry == "local://"


@pytest.mark.slow
async def test_cli_reads_the_file_and_reports_its_errors(tmp_path: Path) -> None:
    write(tmp_path, "orchestro.toml", '[registry]\nregistry = "nope://"\n')
    code, _, err = await run_cli("ls", cwd=tmp_path)
    assert code == 2
    assert "registry URL 'nope://': unknown scheme" in err
    bad = write(tmp_path, "other.toml", '[gateway]\nmax_body_size = "lots"\n')
    code, _, err = await run_cli("run", "examples/hello.py", "--config", str(bad))
    assert code == 2
    assert err.strip().startswith(f"orchestro: error: {bad}: [gateway] max_body_size:")
