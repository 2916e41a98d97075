"""The access line made in C (``_lines.c``) is the line ``AccessLines._make`` makes in Python,
for any entry: the C maker writes ASCII lines of expected types itself and hands every other
entry to the Python method."""

from __future__ import annotations

import math
import os
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from orchestro.observability import access
from orchestro.observability.access import AccessLines, url_path
from orchestro.observability.logs import iso_time

try:
    from orchestro.observability._lines import Lines
except ImportError:  # pragma: no cover - where orchestro was installed without a compiler
    if os.environ.get("ORCHESTRO_REQUIRE_SERVERS"):
        raise
    pytest.skip(
        "the C access line is not built: install gcc and the Python headers (python3-dev), "
        "then pip install --no-cache-dir --force-reinstall orchestro (or -e .)",
        allow_module_level=True,
    )


def test_the_gateway_s_lines_are_made_in_c_unless_told_not_to() -> None:
    assert access.EXTENSION is (not os.environ.get("ORCHESTRO_NO_EXTENSIONS"))
    made = AccessLines("orders", "orders-vm-1", "/items/{id}")
    if access.EXTENSION:
        assert type(made.make.__self__) is Lines
    else:
        assert made.make == made._make


# Text where the C path has work to do: ASCII with what JSON escapes, and what url_path cuts
# at or decodes; and now and then any character at all (the Python method's).
_ASCII = st.text(alphabet=string.printable + '\x00\x01\x1f\x7f"\\%?#', max_size=16)
_TEXT = st.one_of(_ASCII, _ASCII, _ASCII, st.text(max_size=8))
_TARGET = st.one_of(
    _TEXT.map(lambda t: "/" + t),
    _TEXT.map(lambda t: "/" + t),
    st.sampled_from(["*", "127.0.0.1:80", "http://h/a%2Fb?q", "/caf%C3%A9", "/a%zz", "/%41?%42"]),
    _TEXT,
)
_ID = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=2**128 - 1),
    st.integers(min_value=-(2**130), max_value=2**130),
    st.sampled_from([0, 1, 2**64 - 1, 2**64, 2**128 - 1, 2**128, -1, True]),
)
_SECONDS = st.one_of(
    st.integers(min_value=0, max_value=10**9).map(lambda micros: micros / 1e6),
    st.floats(min_value=-1e3, max_value=1e6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=0, max_value=10),  # an int, not a float
)
_CREATED = st.one_of(
    st.floats(min_value=1.6e9, max_value=1.9e9),
    st.floats(min_value=-1e10, max_value=1e11),
    st.sampled_from([1.7e9, 1.7e9 + 0.0005, 1.7e9 + 0.001, 0.0, -0.5, math.inf, math.nan, 17]),
)

_ENTRY = st.tuples(
    _CREATED,
    _ID,  # trace id
    _ID,  # span id
    st.one_of(st.none(), _TEXT),  # request id
    st.one_of(st.sampled_from(["GET", "POST", "DELETE"]), _TEXT),  # method
    _TARGET,
    st.one_of(st.integers(min_value=100, max_value=599), st.integers(), st.just(True)),
    _SECONDS,
    _TEXT,  # agent
    st.one_of(  # the client: the connection's peername, as aiohttp keeps it
        st.none(),
        st.just(("127.0.0.1", 50000)),
        st.just(("::1", 50000, 0, 0)),
        st.tuples(_TEXT, st.integers(0, 65535)),
        st.sampled_from([(), (None, 1), ["10.0.0.1", 1], 7, "/run/orchestro.sock"]),
        _TEXT,
    ),
    st.one_of(st.just(""), _TEXT.map(lambda t: f', "k": "{t}"')),  # extra fields' text
)


def _outcome(make: Callable[[tuple[Any, ...]], str], entry: tuple[Any, ...]) -> object:
    try:
        return make(entry)
    except Exception as e:
        return type(e)


@settings(max_examples=800, deadline=None)
@given(
    route=st.one_of(st.just("/items/{id}"), _TEXT),
    cell=st.one_of(st.just("orders"), _TEXT),
    entries=st.lists(_ENTRY, min_size=1, max_size=6),
)
@example(
    route="/items/{id}",
    cell="orders",
    entries=[
        (1.7e9, 2**127 + 5, 2**63, "r\x01", "GET", '/a"b\\c?x', 200, 0.0004995, "ua", None, "")
    ],
)
def test_the_c_line_is_the_python_line_for_any_entry(
    route: str, cell: str, entries: list[tuple[Any, ...]]
) -> None:
    """Entries in a row (the caches of both makers see the same sequence); a line, or the
    same exception when the Python method raises."""
    made = AccessLines(cell, "orders-vm-1", route)
    reference = AccessLines(cell, "orders-vm-1", route)
    c_make = Lines(made._head, made._route, made._make, iso_time, url_path).make
    for values in entries:
        entry = (c_make, *values)
        assert _outcome(c_make, entry) == _outcome(reference._make, entry), entry


def test_ascii_entries_are_made_in_c_and_others_handed_to_the_python_method() -> None:
    """The parity above says nothing if C hands every entry over: it makes an ASCII line
    itself, with every field filled in."""
    handed: list[tuple[Any, ...]] = []
    reference = AccessLines("orders", "orders-vm-1", "/items/{id}")

    def fallback(entry: tuple[Any, ...]) -> str:
        handed.append(entry)
        return reference._make(entry)

    make = Lines(reference._head, reference._route, fallback, iso_time, url_path).make
    ascii_entries = [
        (
            1.7e9,
            2**127 + 1,
            2**63 + 1,
            'id"1',
            "GET",
            "/items/7?x=%41",
            200,
            0.0021,
            "ua",
            ("::1", 9, 0, 0),
            "",
        ),
        (1.7e9, None, None, None, "POST", "/items/%41b", 201, 12.5, 'a"\\\n', None, ', "k": 1'),
        (1.7e9 + 1, 5, None, "r", "GET", "/items/a#f", 404, 0.0, "", ("10.0.0.1", 5), ""),
        (1.7e9 + 1, 5, None, "r", "GET", "/items/a", 200, 0.0, "", "/run/a.sock", ""),
    ]
    for values in ascii_entries:
        entry = (make, *values)
        assert make(entry) == reference._make(entry)
    assert handed == []
    other = [
        (1.7e9, None, None, None, "GET", "/café", 200, 0.001, "ua", None, ""),  # not ASCII
        (1.7e9, None, None, None, "GET", "/%C3%A9", 200, 0.001, "ua", None, ""),  # decodes to é
        (1.7e9, None, None, None, "OPTIONS", "*", 200, 0.001, "ua", None, ""),
        (1.7e9, -1, None, None, "GET", "/", 200, 0.001, "ua", None, ""),  # no 32-digit id
        (1.7e9, None, None, None, "GET", "/", 10**30, 0.001, "ua", None, ""),
        (1.7e9, None, None, None, "GET", "/", 200, 0.001, "ua", (None, 1), ""),  # "None"
    ]
    for values in other:
        entry = (make, *values)
        assert make(entry) == reference._make(entry)
    assert len(handed) == len(other)


def test_a_maker_is_made_once() -> None:
    """make() reads the route's text after calling back into Python: it cannot change."""
    reference = AccessLines("orders", "orders-vm-1", "/items/{id}")
    lines = Lines(reference._head, reference._route, reference._make, iso_time, url_path)
    with pytest.raises(TypeError, match="once"):
        lines.__init__(reference._head, "é", reference._make, iso_time, url_path)  # type: ignore[misc]
    with pytest.raises(TypeError, match="__init__"):
        Lines.__new__(Lines).make((None,))


def test_a_time_just_before_1970_has_its_text() -> None:
    """-1 is a millisecond: no cache takes it for "nothing made yet"."""
    made = AccessLines("orders", "orders-vm-1", "/items/{id}")
    entry = (made.make, -0.001, None, None, None, "GET", "/x", 200, 0.001, "ua", None, "")
    assert '"time": "1969-12-31T23:59:59.999Z"' in made.make(entry)
    assert '"time": "1969-12-31T23:59:59.999Z"' in made._make(entry)


def test_a_route_or_cell_that_is_not_ascii_is_made_in_python() -> None:
    reference = AccessLines("caisse-é", "vm-1", "/articles/{nom}")
    handed: list[object] = []

    def fallback(entry: tuple[Any, ...]) -> str:
        handed.append(entry)
        return reference._make(entry)

    make = Lines(reference._head, reference._route, fallback, iso_time, url_path).make
    entry = (make, 1.7e9, None, None, None, "GET", "/articles/x", 200, 0.001, "ua", None, "")
    assert make(entry) == reference._make(entry)
    assert len(handed) == 1
