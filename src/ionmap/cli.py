"""The ``ionmap`` command. Thin: parse arguments, call the API, map errors to exit codes.

Exit codes: 0 success, 1 some work failed (bulk runs), 2 bad input or usage (one line on
stderr naming the file and the problem, no traceback).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import IonmapError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ionmap",
        description="Spatial metabolomics: imzML to OME-Zarr ion images and immune-excluded "
        "metabolic hotspots.",
    )
    parser.add_argument("--version", action="version", version=f"ionmap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ionmap`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except IonmapError as exc:
        print(f"ionmap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ionmap: interrupted", file=sys.stderr)
        return 130


# Each command is a pair: _add_NAME(subparsers) declares it and sets ``run`` to _run_NAME.

_COMMANDS: tuple = ()

if __name__ == "__main__":
    sys.exit(main())
