from __future__ import annotations

import stat
from pathlib import Path

import pytest

from orchestro.errors import ConfigurationError
from orchestro.state import state_dir


def test_the_environment_names_it_and_it_is_created_private(state: Path) -> None:
    assert state_dir() == state
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_default_is_where_the_local_registry_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCHESTRO_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert state_dir(create=False) == tmp_path / "run" / "orchestro"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert state_dir(create=False) == tmp_path / "xdg-state" / "orchestro"


def test_an_unwritable_place_is_one_line_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ORCHESTRO_STATE_DIR", str(blocker / "state"))
    with pytest.raises(ConfigurationError, match="set ORCHESTRO_STATE_DIR"):
        state_dir()


async def test_the_first_command_that_opens_the_registry_makes_the_directory_private(
    tmp_path: Path,
) -> None:
    from ..conftest import run_cli

    state = tmp_path / "fresh" / "state"
    code, _, err = await run_cli("ls", env={"ORCHESTRO_STATE_DIR": str(state)})
    assert code == 0, err
    assert (state / "registry.db").exists()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700  # as documented: it will hold a CA key
