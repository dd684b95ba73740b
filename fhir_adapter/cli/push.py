"""`fhir-adapter push` (under construction)."""

from __future__ import annotations

import argparse

from . import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("push", help="(under construction)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise UsageError("'push' is not built yet")
