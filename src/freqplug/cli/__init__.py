"""Command line: ``freqplug <command>`` (also ``python -m freqplug <command>``)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .._version import __version__


def _smoke(args: argparse.Namespace) -> int:
    from .smoke import run_smoke

    run_smoke(radii=args.radii, out=sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freqplug", description="Frequency robustness tools for image classifiers.")
    parser.add_argument("--version", action="version", version=f"freqplug {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    smoke = commands.add_parser(
        "smoke", help="run the spectral core on the embedded CIFAR-10 ResNet-18 and its 20 sample images")
    smoke.add_argument("--radii", type=float, nargs="+", default=[16, 12, 10, 8, 6, 4],
                       help="low/high split radii in bins (default: %(default)s)")
    smoke.set_defaults(handler=_smoke)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return args.handler(args)
