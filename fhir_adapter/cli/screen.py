"""`fhir-adapter screen`: which patients may enter which trial, why, and what is missing to decide."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from ..client import FailedEntry, describe_outcome, options
from ..criteria import CriterionError
from . import UsageError, client_of, date_option


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "screen", help="screen patients for the trials: eligible / ineligible / needs review, with reasons",
        description="Screen patients for each trial from EHR data, criterion by criterion (met / not met / "
                    "unknown, with the FHIR resources used). Writes DIR/screening.json, DIR/screening.csv and "
                    "DIR/report.html.")
    parser.add_argument("--input", metavar="PATH", nargs="+",
                        help="read patients from NDJSON files (one per resource type), Bundles or directories "
                             "(or give --server)")
    parser.add_argument("--trial", metavar="ID", action="append", default=[],
                        help="screen for this trial only (NCT id; repeat for more; default: every trial)")
    parser.add_argument("--as-of", metavar="DATE", type=date_option, default=None,
                        help="screening date that every time window counts back from (YYYY-MM-DD; default today)")
    parser.add_argument("--from-server", action="store_true",
                        help="read the criteria from the EvidenceVariables on --server instead of mappings/")
    parser.add_argument("--write-back", action="store_true",
                        help="write a ResearchSubject per patient and trial to --server (candidate, "
                             "potential-candidate or ineligible); re-running changes nothing")
    parser.add_argument("--per-patient", action="store_true",
                        help="read the data from --server patient by patient ($everything, or searches by patient) "
                             "instead of type by type")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes for file input (default: one per core)")
    parser.add_argument("--html-candidates", type=int, default=None, metavar="N",
                        help="candidates shown in full per trial and verdict in report.html (default 200)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the reports")
    options.add_arguments(parser, server_required=False)
    parser.set_defaults(run=run)


#: How many files skipped in the input directories are named one by one (the rest are counted).
SHOWN_SKIPPED = 10
#: How many ResearchSubjects kept by the write-back (a status set on the server) are named one by one.
SHOWN_KEPT = 20


def _output_directory(out: Path) -> None:
    """Make --out, or say why it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {out}: exists and is not a directory") from None
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot make the directory: {exc.strerror}") from None


def alike_once(failures: list[FailedEntry]) -> list[str]:
    """The write-back's failures, those refused alike (same status, message and OperationOutcome) told once
    with their number: a token without write scope fails every subject the same way."""
    alike: dict[tuple[str | None, str, str], list[FailedEntry]] = {}
    for failure in failures:
        alike.setdefault((failure.status, failure.message, describe_outcome(failure.outcome)), []).append(failure)
    return [same[0].describe() if len(same) == 1 else f"{len(same)} ResearchSubjects failed alike; the first, "
            f"{same[0].describe()}" for same in alike.values()]


def run(args: argparse.Namespace) -> int:
    from ..eligibility.run import screen_files, screen_server
    from ..eligibility.trials import load_trials
    from ..report.writers import HTML_CANDIDATES

    if bool(args.server) == bool(args.input):
        raise UsageError("give either --server URL or --input PATH")
    if args.from_server and not args.server:
        raise UsageError("--from-server reads the criteria from a server: give --server URL")
    if args.per_patient and not args.server:
        raise UsageError("--per-patient reads patients from a server: give --server URL")
    if args.write_back and not args.server:
        raise UsageError("--write-back writes ResearchSubjects to a server: give --server URL")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, not {args.workers}")
    if args.html_candidates is not None and args.html_candidates < 0:
        raise UsageError(f"--html-candidates must be 0 or more, not {args.html_candidates}")
    args.trial = list(dict.fromkeys(args.trial))        # a trial named twice is screened once
    client = client_of(args) if args.server else None
    _output_directory(args.out)
    as_of = args.as_of or dt.date.today()
    html_candidates = HTML_CANDIDATES if args.html_candidates is None else args.html_candidates
    written, kept = None, []
    try:
        if args.server:
            done = screen_server(client, args.trial, args.out, as_of,
                                 from_server=args.from_server, write_back=args.write_back,
                                 per_patient=args.per_patient, html_candidates=html_candidates)
            trials, result, written, kept = done.trials, done.run, done.written, done.kept
        else:
            trials = load_trials(args.trial)
            if not trials:
                raise UsageError("no trial with computable criteria found (mappings/trials/<NCT id>.yaml)")
            result = screen_files(args.input, trials, args.out, as_of, args.workers, html_candidates)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    except CriterionError as exc:               # criteria in mappings/ or on the server that cannot be read
        raise UsageError(str(exc)) from None
    except OSError as exc:                      # an input file that cannot be read, a report that cannot be written
        if exc.filename is None:
            raise
        raise UsageError(f"{exc.filename}: {exc.strerror}") from None
    for path, why in result.skipped[:SHOWN_SKIPPED]:
        print(f"note: skipped {path}: {why}", file=sys.stderr)
    if len(result.skipped) > SHOWN_SKIPPED:
        print(f"note: skipped {len(result.skipped) - SHOWN_SKIPPED} more files in the input directories",
              file=sys.stderr)
    screening = result.screening
    if not result.read:
        where = ", ".join(map(str, args.input)) if args.input else args.server
        print(f"note: no FHIR resources found in {where}: no patient screened", file=sys.stderr)
    print(f"screened {screening.patients} patients ({result.read} resources read, {result.used} used) "
          f"against {len(trials)} trial(s) as of {as_of.isoformat()}")
    for trial in trials:
        counts = screening.funnels[trial.id].verdicts
        print(f"  {trial.id} {trial.title}: {counts['eligible']} eligible, {counts['needs-review']} need review, "
              f"{counts['ineligible']} ineligible")
    status = 0
    if written is not None:
        also = f"; kept {len(kept)} whose status was set on the server" if kept else ""
        print(f"write-back of {len(screening.statuses)} ResearchSubjects: {written.summary()}{also}")
        for subject in kept[:SHOWN_KEPT]:
            print(f"  {subject}")
        if len(kept) > SHOWN_KEPT:
            print(f"  ... and {len(kept) - SHOWN_KEPT} more kept")
        for line in alike_once(written.failures):
            print(line, file=sys.stderr)
        status = 0 if written.ok else 1
    for name in screening.reports:
        print(f"wrote {args.out / name}")
    if result.problems:                         # where only: a problem's text may quote patient data
        print(f"{len(result.problems)} input record(s) could not be used (the first at {result.problems[0].where}): "
              f"see {args.out / 'problems.csv'}", file=sys.stderr)
        status = 1
    return status
