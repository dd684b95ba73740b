"""Benchmark: validate about 1 million resources (NDJSON, the shape `patients map` writes) on 2 processes.

    python benchmarks/bench_validate.py [--resources 1000000] [--workers 2] [--fhir-version R4] [--keep DIR]

Generates a synthetic MS cohort extract (`fhir_adapter.ehr.generate_cohort`, about 13 resources a patient),
maps it with the patients pipeline (not validated there), then runs the same code as
`fhir-adapter validate DIR --workers N` and prints resources/s. With `--keep DIR` the mapped NDJSON is kept
in DIR and reused by the next run (the generation is not timed either way).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

from fhir_adapter.ehr import map_extract
from fhir_adapter.ehr.cohort import generate_cohort
from fhir_adapter.validation.validator import validate

PER_PATIENT = 13.0    # resources a synthetic patient maps to (measured on 2,000 patients: 26,030)
REFERENCE_DATE = dt.date(2026, 1, 1)


def cohort(directory: Path, resources: int, fhir_version: str, workers: int) -> Path:
    """The mapped cohort's NDJSON directory, made unless it is already there."""
    out = directory / f"fhir-{fhir_version}-{resources}"
    if (out / "Observation.ndjson").exists():
        print(f"reusing {out}")
        return out
    patients = math.ceil(resources / PER_PATIENT)
    started = time.perf_counter()
    extract = generate_cohort(patients, 1, directory / f"extract-{patients}", reference_date=REFERENCE_DATE)
    summary = map_extract(extract, out, fhir_version, validate=False, workers=workers, extracted_on=REFERENCE_DATE)
    (out / "summary.json").unlink(missing_ok=True)
    print(f"generated {patients} patients, {summary.resource_count} resources in {time.perf_counter() - started:.0f} s")
    return out


def _cpu() -> tuple[float, float]:
    """CPU seconds used so far by this process and by its finished children (the workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fhir-version", default="R4", choices=("R4", "R5"))
    parser.add_argument("--keep", type=Path, help="directory to keep (and reuse) the generated cohort in")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        source = cohort(directory, args.resources, args.fhir_version, args.workers)
        before = _cpu()
        started = time.perf_counter()
        results, summary = validate([source], args.fhir_version, workers=args.workers, every_resource=False)
        for _ in results:
            pass
        seconds = time.perf_counter() - started
        parent, workers = (after - was for after, was in zip(_cpu(), before, strict=True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    counts = dict(summary.severities)
    print(f"validated {summary.resources} resources ({args.fhir_version}) on {args.workers} process(es) in "
          f"{seconds:.1f} s: {summary.resources / seconds:,.0f} resources/s; findings {counts}; "
          f"not evaluated {dict(summary.skipped)}; peak memory parent {peak:.0f} MB, worker {children:.0f} MB")
    print(f"CPU: workers {workers:.1f} s ({workers / summary.resources * 1e6:.0f} us a resource, start-up included), "
          f"parent {parent:.1f} s; on {args.workers} idle cores that is "
          f"{summary.resources / (workers / args.workers):,.0f} resources/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
