"""The `fhir-adapter` command line: one module per verb, each with `register(subparsers)`.

Exit status: 0 success, 1 the work ran but found problems (rejects, invalid resources, failed entries),
2 usage or input error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..sources import InputError

VERBS = ("trials", "patients", "push", "server", "screen", "validate", "demo")


class UsageError(Exception):
    """A command line the program cannot act on; exit status 2."""


def add_fhir_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fhir-version", choices=("R4", "R5"), default="R4", type=str.upper,
                        help="FHIR version to write (default R4: R4B-valid JSON, R4-compatible)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-adapter",
        description="Map MS stem-cell trials and EHR extracts to FHIR, push them to a server, screen patients.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for name in VERBS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except (UsageError, InputError, FileNotFoundError) as exc:
        print(f"fhir-adapter {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
