"""The `fhir-adapter` command line: one module per verb, each with `register(subparsers)`.

Exit status: 0 success, 1 the work ran but found problems (rejects, invalid resources, failed entries) or a
server failed (`main` prints its error, a FHIR server's OperationOutcome included), 2 usage or input error (a
server that cannot take what is asked, an output directory another run is writing, too); 141 (128 + SIGPIPE,
as a shell reports a command its pipe closed on) when the reader of stdout went away early (`... | head`),
quietly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import os
import select
import signal
import sys

from .. import __version__
from ..client import FhirClient
from ..client.exceptions import AuthError, CapabilityError, FhirClientError
from ..client.options import client_from_args
from ..outdir import OutputInUse
from ..server import ServerError
from ..sources import InputError

VERBS = ("trials", "patients", "push", "server", "screen", "validate", "demo")
#: The dates the options accept (--as-of, --reference-date, --extracted-on): windows and histories count back
#: years from them, and calendar arithmetic needs room on both sides.
EARLIEST, LATEST = dt.date(1900, 1, 1), dt.date(2999, 12, 31)


class UsageError(Exception):
    """A command line the program cannot act on; exit status 2."""


def client_of(args: argparse.Namespace, **options: object) -> FhirClient:
    """The FHIR client the server options describe, or a usage error saying what is wrong with them (an URL that
    is none, a token variable that is not set)."""
    try:
        return client_from_args(args, **options)
    except (AuthError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def date_option(text: str) -> dt.date:
    """An argparse type: a date YYYY-MM-DD from EARLIEST to LATEST."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD") from None
    if not EARLIEST <= day <= LATEST:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date from {EARLIEST} to {LATEST}")
    return day


def plural(count: int, noun: str) -> str:
    """`count` and `noun`, with an s unless the count is one.

    >>> plural(1, "transaction bundle"), plural(2, "row")
    ('1 transaction bundle', '2 rows')
    """
    return f"{count} {noun}{'' if count == 1 else 's'}"


def add_fhir_version(parser: argparse.ArgumentParser,
                     help: str = "FHIR version to write (default R4: R4B-valid JSON, R4-compatible)") -> None:
    parser.add_argument("--fhir-version", choices=("R4", "R5"), default="R4", type=str.upper, help=help)


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


def _stdout_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone away (True where poll() cannot tell)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no file descriptor: not what broke
        return False
    if not hasattr(select, "poll"):  # Windows
        return True
    poller = select.poll()
    poller.register(fd, 0)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is caught below rather than at exit
        return status
    except BrokenPipeError:
        if not _stdout_gone():  # another pipe broke: a fault, not the reader leaving
            raise
        # The reader of stdout is gone (`| head`): no traceback. Point stdout at devnull so that Python's own
        # flush at exit does not fail again (the recipe of the Python docs, signal module, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (UsageError, InputError, OutputInUse, FileNotFoundError) as exc:
        print(f"fhir-adapter {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except (FhirClientError, ServerError) as exc:   # unreachable, refused, or what the server said went wrong
        print(f"fhir-adapter {args.verb}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, CapabilityError) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
