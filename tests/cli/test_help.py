"""Every command's --help renders (argparse formats help strings: a stray % breaks it)."""

from __future__ import annotations

import argparse

from orchestro.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_commands_help_renders() -> None:
    parsers = _parsers(build_parser())
    names = {p.prog for p in parsers}
    assert {"orchestro run", "orchestro certs issue", "orchestro certs show"} <= names
    for parser in parsers:
        assert parser.format_help().startswith("usage: ")
