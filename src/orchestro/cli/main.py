"""``python -m orchestro``: the entry point of every command.

An :class:`~orchestro.errors.OrchestroError` becomes one line on stderr and exit code 2 (1 for
an unreachable registry); an error raised while the user's module is imported prints the
user's own frames and the cause, with exit code 1; any other exception keeps its traceback.
A fatal signal (SIGSEGV, SIGABRT, ...) prints every thread's Python stack to stderr
(:mod:`faulthandler`): a replica that dies that way leaves where it was, not only its exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import DiscoveryError, OrchestroError, UserModuleError
from . import certs, control, deploy, ls, policy, run

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestro",
        description="Run Python microservice cells: gateway, mesh, scaling, observability.",
    )
    parser.add_argument("--version", action="version", version=f"orchestro {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    run.add_parser(subparsers)
    ls.add_parser(subparsers)
    deploy.add_parser(subparsers)
    control.add_parsers(subparsers)
    certs.add_parser(subparsers)
    policy.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        faulthandler.enable()  # needs a real stderr file descriptor (not pytest's capture)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except UserModuleError as exc:  # the user's code: their frames, not importlib's
        print(f"orchestro: error: {exc}", file=sys.stderr)
        return 1
    except DiscoveryError as exc:  # the registry is down: not the user's input
        print(f"orchestro: error: {exc}", file=sys.stderr)
        return 1
    except OrchestroError as exc:
        print(f"orchestro: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
