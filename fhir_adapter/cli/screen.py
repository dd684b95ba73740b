"""`fhir-adapter screen` (under construction)."""

from __future__ import annotations

import argparse

from . import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("screen", help="(under construction)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise UsageError("'screen' is not built yet")
