"""Fixtures of the security tests: a private state directory and development CAs in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestro.security.ca import DevelopmentCA


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv("ORCHESTRO_STATE_DIR", str(directory))
    return directory


@pytest.fixture
def ca(state: Path) -> DevelopmentCA:
    return DevelopmentCA.load_or_create(trust_domain="orchestro.local")


@pytest.fixture
def other_ca(tmp_path: Path) -> DevelopmentCA:
    """A second CA of the same trust domain: what a foreign issuer's certificates look like."""
    return DevelopmentCA.load_or_create(tmp_path / "other-ca", trust_domain="orchestro.local")
