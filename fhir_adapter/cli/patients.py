"""`fhir-adapter patients`: map a hospital's EHR extract to FHIR; generate a synthetic MS cohort extract."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from . import UsageError, add_fhir_version, date_option, plural

SHOWN_REJECTS = 20


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("patients", help="EHR extracts (CSV) to FHIR; synthetic MS cohorts",
                            description="Map a hospital's EHR extract (one CSV per table) to FHIR Patient, Condition, "
                                        "Observation and MedicationStatement, or generate a synthetic MS cohort.")
    verbs = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    mapping = verbs.add_parser("map", help="map an extract directory to NDJSON (one file per resource type)",
                               description="Map an extract directory to OUT/Patient.ndjson, Condition.ndjson, "
                                           "Observation.ndjson, MedicationStatement.ndjson; rejected rows go to "
                                           "OUT/rejects.csv with file, line, column and reason.")
    mapping.add_argument("extract", type=Path, metavar="EXTRACT_DIR", help="directory of the extract's CSV files")
    mapping.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    add_fhir_version(mapping)
    mapping.add_argument("--column-map", metavar="MAP",
                         help="column map: a .yaml file or a name in mappings/ehr/ (default: default)")
    mapping.add_argument("--bundles", type=int, metavar="N",
                         help="also write transaction bundles of N resources to DIR/bundles/")
    mapping.add_argument("--no-validate", action="store_true", help="skip validating each resource")
    mapping.add_argument("--allow-rejects", action="store_true",
                         help="exit 0 even when rows were rejected (they are still reported)")
    mapping.add_argument("--extracted-on", type=date_option, metavar="YYYY-MM-DD",
                         help="date the extract was taken; later dates are rejected as future (default: today)")
    mapping.add_argument("--workers", type=int, metavar="N",
                         help="processes (default: one per core; one for a small extract)")
    mapping.set_defaults(run=run_map)

    generate = verbs.add_parser("generate", help="write a synthetic MS cohort as an extract (default format)",
                                description="Write a synthetic MS cohort as an extract in the default format: "
                                            "deterministic for a seed and a reference date.")
    generate.add_argument("--patients", type=int, required=True, metavar="N", help="number of patients")
    generate.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    generate.add_argument("--out", type=Path, required=True, metavar="DIR", help="extract directory to write")
    generate.add_argument("--reference-date", type=date_option, metavar="YYYY-MM-DD",
                          help="the histories end on this date, the screening date to use (default: today)")
    generate.set_defaults(run=run_generate)


def run_map(args: argparse.Namespace) -> int:
    from ..ehr import ColumnMapError, map_extract

    if args.bundles is not None and args.bundles < 1:
        raise UsageError("--bundles takes a bundle size of at least 1")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers takes at least 1")
    try:
        summary = map_extract(args.extract, args.out, args.fhir_version, validate=not args.no_validate,
                              bundle_size=args.bundles, column_map=args.column_map, workers=args.workers,
                              extracted_on=args.extracted_on, keep_rejects=SHOWN_REJECTS)
    except ColumnMapError as exc:
        raise UsageError(str(exc)) from None
    width = max(len(name) for name in summary.tables)
    print(f"{'table':<{width}}  {'file':<18} {'read':>9} {'converted':>9} {'rejected':>9}")
    for name, count in summary.tables.items():
        file = count.file or "(not in extract)"
        print(f"{name:<{width}}  {file:<18} {count.read:>9} {count.converted:>9} {count.rejected:>9}")
    print(f"{'total':<{width}}  {'':<18} {summary.read:>9} {summary.converted:>9} {summary.rejected:>9}")
    made = ", ".join(f"{n} {t}" for t, n in summary.resources.items())
    checked = f"validated {summary.fhir_version}" if summary.validated else f"{summary.fhir_version}, not validated"
    print(f"resources: {made} ({summary.resource_count} in {summary.seconds:.1f} s, "
          f"{summary.resources_per_second:,.0f}/s, {checked}) -> {summary.out_dir}")
    if summary.bundles:
        print(f"bundles: {plural(len(summary.bundles), 'transaction bundle')} in {Path(summary.out_dir) / 'bundles'}")
    if summary.rejected:
        for reject in summary.first_rejects:
            print(f"rejected: {reject}", file=sys.stderr)
        more = summary.rejected - len(summary.first_rejects)
        if more:
            print(f"... and {more} more", file=sys.stderr)
        print(f"{plural(summary.rejected, 'row')} rejected: see {summary.rejects_file}", file=sys.stderr)
        return 0 if args.allow_rejects else 1
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from ..ehr import generate_cohort

    if args.patients < 1:
        raise UsageError(f"--patients must be at least 1, got {args.patients}")
    out = generate_cohort(args.patients, args.seed, args.out, reference_date=args.reference_date)
    reference = (args.reference_date or dt.date.today()).isoformat()
    print(f"{plural(args.patients, 'patient')} (seed {args.seed}, histories up to {reference}) -> {out}")
    return 0
