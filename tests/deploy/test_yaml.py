"""The emitter writes what a YAML reader reads back as the same data."""

from __future__ import annotations

import pytest
import yaml

from orchestro.deploy.yaml import dump, dump_all

TRICKY = [
    "yes", "No", "on", "off", "true", "null", "~", "", "0", "8080", "1.0", "1e3", "-m",
    "a: b", "#x", "x #y", "'q'", '"dq"', "multi\nline", "tab\there", "{}", "[a]", "*ref",
    "&anchor", "!tag", "%pct", "@at", "`tick`", "ünï", "- item", "?q", "0x1F", "0o17",
    ".inf", "2026-12-01", "12:30", "http://host:80/x?y=1",
]  # fmt: skip


@pytest.mark.parametrize("value", TRICKY)
def test_strings_read_back_as_strings(value: str) -> None:
    data = {"key": value, value or "k": [value, {"inner": value}]}
    assert yaml.safe_load(dump(data)) == data


def test_types_nesting_and_order() -> None:
    data = {
        "b": 1,
        "a": [{"x": True, "y": [1, 2]}, {"z": {}}, "s"],
        "empty": [],
        "f": 0.5,
        "nested": {"m": {"n": False}},
    }
    text = dump(data)
    assert yaml.safe_load(text) == data
    assert list(yaml.safe_load(text)) == ["b", "a", "empty", "f", "nested"]


def test_documents() -> None:
    docs = [{"a": 1}, {"b": [2]}]
    assert list(yaml.safe_load_all(dump_all(docs))) == docs
