"""Benchmark: map a 100,000-patient EHR extract (about 1.3 million resources) to validated NDJSON.

    python benchmarks/bench_ehr.py [--patients 100000] [--seed 1] [--workers 2] [--extract DIR] [--keep DIR]
                                   [--no-validate | --both]

Writes a synthetic MS cohort extract (`patients generate`, not timed; `--extract` reuses one), then runs the
same code as `fhir-adapter patients map EXTRACT --out DIR` and prints resources/s (wall clock), the CPU
seconds it took (this process and the workers) and the peak memory of this process and of the largest
worker. Targets (issue 3): validated >= 20,000 resources/s, `--no-validate` >= 100,000 resources/s on
2 cores, memory flat in the extract's size (compare peaks at two sizes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fhir_adapter.ehr import generate_cohort, map_extract

REFERENCE = dt.date(2026, 10, 1)


def _cpu() -> tuple[float, float]:
    me, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, workers.ru_utime + workers.ru_stime


def _run(extract: Path, out: Path, validate: bool, workers: int) -> None:
    cpu_before = _cpu()
    started = time.perf_counter()
    summary = map_extract(extract, out, validate=validate, workers=workers, extracted_on=REFERENCE)
    seconds = time.perf_counter() - started
    me, children = (after - before for after, before in zip(_cpu(), cpu_before, strict=True))
    peak_me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    size = sum(p.stat().st_size for p in out.glob("*.ndjson")) / 1e6
    label = "validated" if validate else "not validated"
    print(f"{label}: {summary.resource_count:,} resources from {summary.read:,} rows "
          f"({summary.rejected} rejected) in {seconds:.1f} s: {summary.resource_count / seconds:,.0f} resources/s; "
          f"CPU {me:.1f} s main + {children:.1f} s workers ({summary.resource_count / (me + children):,.0f} "
          f"resources per CPU second); peak memory {peak_me:.0f} MB main, {peak_worker:.0f} MB largest worker; "
          f"{size:,.0f} MB of NDJSON", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--extract", type=Path, help="an existing extract directory (default: generate one)")
    parser.add_argument("--keep", type=Path, help="write the output here and keep it (default: a temp directory)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-validate", action="store_true", help="only the run without validation")
    mode.add_argument("--both", action="store_true", help="validated, then not validated")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-ehr-"))
    try:
        extract = args.extract
        if extract is None:
            started = time.perf_counter()
            extract = generate_cohort(args.patients, args.seed, root / "extract", reference_date=REFERENCE)
            size = sum(p.stat().st_size for p in extract.glob("*.csv")) / 1e6
            print(f"extract: {args.patients:,} patients, {size:,.0f} MB of CSV "
                  f"(generated in {time.perf_counter() - started:.1f} s, not timed)", flush=True)
        out = args.keep or root / "fhir"
        runs = [False] if args.no_validate else [True, False] if args.both else [True]
        for validate in runs:
            _run(extract, out, validate, args.workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
