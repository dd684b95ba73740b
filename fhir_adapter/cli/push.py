"""`fhir-adapter push PATH ... --server URL`: push Bundles, NDJSON files or directories of them, idempotently.

Prints the counts (sent, created, updated, unchanged, failed), every server refusal with its
OperationOutcome, and writes the failed resources to an NDJSON file that can be pushed again.
Exit status 1 when anything failed; 2, with nothing sent, for input of the other FHIR version than
`--fhir-version` or a server that cannot take that version.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from .. import sources
from ..client import PushResult
from ..client.options import add_arguments
from ..client.push import DEFAULT_CHUNK, DEFAULT_WORKERS, ID_STRATEGIES
from ..client.push import push as push_resources
from . import UsageError, add_fhir_version, client_of

SHOWN_FAILURES = 20


class ProgressBar:
    """A one-line progress bar on stderr, drawn only on a terminal; call it with (done, total)."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None,
                 width: int = 28) -> None:
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        share = done / total if total else 1.0
        filled = int(self.width * share)
        rate = done / (now - self.started) if now > self.started else 0.0
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%} "
                          f"{done:,}/{total:,} resources {rate:,.0f}/s ")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "push", help="push Bundles / NDJSON files / directories to a FHIR server, idempotently",
        description="Push FHIR resources to a server in transaction chunks. PATH is a Bundle file, an NDJSON "
                    "file or a directory of them (what `trials map` and `patients map` write). Re-running a "
                    "push changes nothing on the server.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="Bundle (.json), NDJSON (.ndjson) or directory")
    add_arguments(parser)
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, metavar="N",
                        help=f"resources per transaction (default {DEFAULT_CHUNK})")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="W",
                        help=f"transactions in flight at once (default {DEFAULT_WORKERS})")
    parser.add_argument("--id-strategy", choices=ID_STRATEGIES, default="put",
                        help="put: PUT to the deterministic id (default); conditional: PUT Type?identifier=... "
                             "for servers that refuse client ids (types the server cannot search by identifier "
                             "fall back to PUT by id, and the run says so)")
    parser.add_argument("--no-compare", action="store_true",
                        help="send everything without first reading what the server holds (faster first load "
                             "into an empty server; identical resources then count as updated, not unchanged)")
    parser.add_argument("--failed", type=Path, default=Path("push-failed.ndjson"), metavar="FILE",
                        help="where to write failed resources, re-pushable (default push-failed.ndjson; a "
                             ".txt report with every OperationOutcome goes beside it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_fhir_version(parser, help="FHIR version of the input, which the server must speak (default R4)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.chunk < 1 or args.workers < 1:
        raise UsageError("--chunk and --workers must be at least 1")
    client = client_of(args, pool_size=max(10, args.workers * 2))
    items, skipped = read_inputs(args.paths)
    for path in skipped:
        print(f"note: skipped {path}: not a FHIR resource (no resourceType)", file=sys.stderr)
    if not items:
        raise UsageError(f"no FHIR resources found in {', '.join(args.paths)}")
    wrong = other_version_files(items, args.fhir_version)
    for line in wrong:
        print(f"fhir-adapter push: error: {line}", file=sys.stderr)
    if wrong:
        return 2
    bar = ProgressBar("push", enabled=False if args.no_progress else None)
    try:
        with client:
            result = push_resources(client, items, chunk_size=args.chunk, workers=args.workers,
                                    id_strategy=args.id_strategy, compare=not args.no_compare,
                                    fhir_release=args.fhir_version, progress=bar)
    finally:                                    # before `main` prints a client error
        bar.close()
    return report(result, args.server, args.failed)


def read_inputs(paths: list[str]) -> tuple[list[tuple[str, dict]], list[Path]]:
    """Every resource in the paths. In a directory, JSON files that are not FHIR (such as the `summary.json`
    that `patients map` writes) are skipped and listed; a file named explicitly must be FHIR."""
    skipped: list[Path] = []
    return list(sources.resources(paths, skipped=skipped)), skipped


def other_version_files(items: list[tuple[str, dict]], fhir_version: str) -> list[str]:
    """One line per file whose resources are of the other FHIR version, naming the first resource (file:line,
    file#entry[i]) and element that show it."""
    from ..validation.versions import other_version_element

    found: dict[str, str] = {}
    for location, resource in items:
        path = sources.file_of(location)
        if path in found:
            continue
        marker = other_version_element(resource, fhir_version)
        if marker:
            found[path] = f"{location}: looks like FHIR {marker[0]} ({marker[1]}); use --fhir-version {marker[0]}"
    return list(found.values())


def report(result: PushResult, server: str, failed_path: Path, out: TextIO | None = None,
           err: TextIO | None = None) -> int:
    """Print notices, failures and counts; write the failed resources. Returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    for notice in result.notices:
        print(f"note: {notice}", file=err)
    for failure in result.failures[:SHOWN_FAILURES]:
        print(f"FAILED {failure.describe()}", file=err)
    if result.failed > SHOWN_FAILURES:
        print(f"... and {result.failed - SHOWN_FAILURES} more failures", file=err)
    print(f"pushed to {server}: {result.summary()}", file=out)
    if result.failures:
        failed_path.parent.mkdir(parents=True, exist_ok=True)
        written = result.write_failed(failed_path)
        report_path = failed_path.with_suffix(".txt")
        result.write_report(report_path)
        print(f"{result.failed} failed: {written} resources written to {failed_path} (every OperationOutcome in "
              f"{report_path}); fix them and push that file again", file=err)
        return 1
    return 0
