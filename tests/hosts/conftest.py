"""The multi-host bed needs root and ``ip netns``: skipped with why otherwise, except under
``ORCHESTRO_REQUIRE_SERVERS=1`` (CI), where a missing piece fails."""

from __future__ import annotations

import os

import pytest
from bench.hosts.net import netns_available


@pytest.fixture
def bed_available() -> None:
    why = netns_available()
    if why is not None:
        if os.environ.get("ORCHESTRO_REQUIRE_SERVERS") == "1":
            pytest.fail(why)
        pytest.skip(why)
