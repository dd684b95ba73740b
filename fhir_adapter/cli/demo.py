"""`fhir-adapter demo`: the whole job on the embedded examples against a local FHIR server (see `fhir_adapter.demo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import UsageError, date_option, plural

DEFAULT_OUT = Path("demo-output")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="the whole job on the embedded examples: map, push to a local server, screen, report",
        description="Start the local FHIR server (sekmet on 127.0.0.1, in memory), map the four trials and the "
                    "MESEMS umbrella study, generate and map a synthetic MS cohort, push everything, screen the "
                    "patients read back from the server and write the report. Outputs go to --out, which must be "
                    "new, empty or an earlier demo's.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help=f"output directory (default ./{DEFAULT_OUT}; a directory with other content is refused)")
    parser.add_argument("--patients", type=int, default=500, metavar="N", help="synthetic patients (default 500)")
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed of the cohort (default 1)")
    parser.add_argument("--port", type=int, default=None, metavar="P",
                        help="port of the local server on 127.0.0.1 (default: a free one)")
    parser.add_argument("--keep-server", action="store_true",
                        help="leave the server running afterwards (stop it with: fhir-adapter server stop)")
    parser.add_argument("--as-of", type=date_option, default=None, metavar="YYYY-MM-DD",
                        help="screening date; the cohort's histories end on it too (default today)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..client import FhirClientError
    from ..demo import DemoError, run_demo
    from ..server import PortInUseError, ServerError
    from .push import ProgressBar

    if args.patients < 1:
        raise UsageError("--patients must be at least 1")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    bars: list[ProgressBar] = []

    def progress(label: str) -> ProgressBar:
        for bar in bars:
            bar.close()
        bars.append(ProgressBar(label, enabled=False if args.no_progress else None))
        return bars[-1]

    def say(line: str) -> None:
        for bar in bars:
            bar.close()
        print(f"  {line}", file=sys.stderr)

    try:
        result = run_demo(args.out, args.patients, args.seed, port=args.port, keep_server=args.keep_server,
                          as_of=args.as_of, say=say, progress=progress)
    except DemoError as exc:
        raise UsageError(str(exc)) from None
    except PortInUseError as exc:
        raise UsageError(f"{exc} (choose another --port, or leave it out for a free one)") from None
    except (ServerError, FhirClientError) as exc:
        print(f"fhir-adapter demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for bar in bars:
            bar.close()
    print(summary(result))
    return 1 if result.failed else 0


def summary(result) -> str:  # noqa: ANN001 - a DemoResult
    """The short summary printed at the end: counts, where everything is, verdicts per trial."""
    out = result.out_dir
    lines = [f"demo done in {sum(result.seconds.values()):.0f} s; outputs in {out}/"]
    if result.trial_bundles:
        lines.append(f"  trial bundles    {out / 'trials'}/  ({plural(len(result.trial_bundles), 'file')})")
    lines.append(f"  cohort extract   {out / 'extract'}/  ({plural(result.patients, 'synthetic patient')}, "
                 f"seed {result.seed})")
    lines.append(f"  patients (FHIR)  {out / 'patients'}/  ({plural(len(result.patient_files), 'NDJSON file')}, "
                 f"{plural(result.rejected_rows, 'row')} rejected)")
    for label, pushed in result.pushes.items():
        lines.append(f"  pushed {label:<9} sent {pushed['sent']}, created {pushed['created']}, updated "
                     f"{pushed['updated']}, unchanged {pushed['unchanged']}, failed {pushed['failed']}"
                     + (f" ({pushed['duplicates']} identical copies merged)" if pushed["duplicates"] else ""))
    held = ", ".join(f"{n} {t}" for t, n in result.server_counts.items() if n)
    lines.append(f"  server holds     {held or 'nothing'}")
    if result.verdicts:
        lines.append(f"  screening as of {result.as_of} (patients and criteria read back from the server):")
        for trial, counts in result.verdicts.items():
            title = result.trial_titles.get(trial, trial)
            lines.append(f"    {trial} {title}: {counts.get('eligible', 0)} eligible, "
                         f"{counts.get('needs-review', 0)} need review, {counts.get('ineligible', 0)} ineligible")
        lines.append(f"  report           {result.screening_dir / 'report.html'}  (and screening.json, "
                     "screening.csv)")
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.server_kept:
        lines.append(f"  server still running at {result.base_url} (stop it with: fhir-adapter server stop)")
    else:
        lines.append("  server stopped")
    return "\n".join(lines)
