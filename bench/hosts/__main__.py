"""``python -m bench.hosts [SCENARIO ...]`` runs scenarios (all by default), one line each;
``python -m bench.hosts cleanup`` removes what a killed run left; ``list`` names them."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from .net import BedError, cleanup, netns_available, remove_run_dirs
from .scenarios import SCENARIOS, run_scenario


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM tears the bed down as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"cleanup, list, or of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs)")
    args = parser.parse_args(argv)
    if args.scenarios == ["cleanup"]:
        removed = cleanup() + remove_run_dirs()
        print("removed: " + (", ".join(removed) if removed else "nothing"))
        return 0
    if args.scenarios == ["list"]:
        print("\n".join(SCENARIOS))
        return 0
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; the scenarios are {', '.join(SCENARIOS)}")
    why = netns_available()
    if why is not None:
        print(f"cannot run the bed: {why}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    missed = 0
    for name in args.scenarios or list(SCENARIOS):
        try:
            fig = run_scenario(name, keep=args.keep)
        except BedError as exc:
            print(f"{name:<18} FAILED: {exc}", flush=True)
            missed += 1
            continue
        except KeyboardInterrupt:
            print("interrupted: the bed was deleted", file=sys.stderr)
            return 130
        print(fig.line(), flush=True)
        missed += bool(fig.missed)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
