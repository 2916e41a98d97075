from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestro.security.ca import DevelopmentCA
from orchestro.security.spiffe import IdentityError

# Each process waits for the go file, then creates (or loads) the CA and prints its
# fingerprint: they all reach the creation at once.
RACER = """
import os, sys, time
from pathlib import Path
from orchestro.security.ca import DevelopmentCA
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
ca = DevelopmentCA.load_or_create(Path(sys.argv[2]), trust_domain="orchestro.local")
print(ca.cert.fingerprint(__import__("cryptography.hazmat.primitives.hashes",
      fromlist=["SHA256"]).SHA256()).hex())
"""


def test_processes_creating_the_ca_at_once_end_with_one_ca(tmp_path: Path) -> None:
    go, directory = tmp_path / "go", tmp_path / "state" / "ca"
    outputs = [tmp_path / f"out-{i}" for i in range(4)]
    procs = []
    for out in outputs:
        with out.open("w") as handle:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", RACER, str(go), str(directory)],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            )
    time.sleep(0.5)  # let them import; correctness does not depend on it
    go.touch()
    codes = [proc.wait(timeout=60) for proc in procs]
    texts = [out.read_text() for out in outputs]
    assert codes == [0, 0, 0, 0], texts
    assert len({text.strip() for text in texts}) == 1
    assert sorted(os.listdir(directory.parent)) == ["ca"]  # no staging directory left behind
    assert sorted(os.listdir(directory)) == ["ca.key", "ca.pem"]


def test_the_ca_key_is_private_and_the_directory_too(ca: DevelopmentCA) -> None:
    assert stat.S_IMODE((ca.directory / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.directory.stat().st_mode) == 0o700
    assert ca.trust_domain == "orchestro.local"


def test_a_second_start_loads_the_same_ca(ca: DevelopmentCA) -> None:
    again = DevelopmentCA.load_or_create(trust_domain="orchestro.local")
    assert again.cert == ca.cert


def test_a_ca_of_another_trust_domain_says_how_to_fix_it(ca: DevelopmentCA) -> None:
    with pytest.raises(IdentityError, match=r"ORCHESTRO_TRUST_DOMAIN=orchestro\.local"):
        DevelopmentCA.load_or_create(trust_domain="prod.example.com")


def test_a_ca_key_readable_by_others_is_refused(ca: DevelopmentCA) -> None:
    (ca.directory / "ca.key").chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        DevelopmentCA.load(ca.directory)


def test_an_empty_ca_directory_is_filled(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    ca = DevelopmentCA.load_or_create(tmp_path / "ca", trust_domain="orchestro.local")
    assert sorted(os.listdir(tmp_path / "ca")) == ["ca.key", "ca.pem"]
    assert ca.trust_domain == "orchestro.local"
