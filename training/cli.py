"""The ``vjapp-train`` command."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vjapp-train",
        description="Train vjapp's models: synthscapes data, then the clip, audio, generator and "
        "sound2video stages into a bundle.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_subparsers(dest="command", metavar="STAGE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        print("\nNo training stage is available in this version yet.", file=sys.stderr)
        return 2
    return 0
