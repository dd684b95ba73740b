"""`fhir-adapter server` (under construction)."""

from __future__ import annotations

import argparse

from . import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("server", help="(under construction)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise UsageError("'server' is not built yet")
