"""Benchmark: screen 100,000 patients (about 1.2 million resources, NDJSON) against every trial.

    python benchmarks/bench_screen.py [--patients 100000] [--workers 2] [--as-of 2025-06-01] [--keep DIR]

Writes a synthetic MS cohort as FHIR NDJSON (one file per resource type, the shape `patients map` writes),
then runs the same code as `fhir-adapter screen --input DIR` and prints the time of each stage, patients/s
and peak memory (the parent and each worker process). Loading, parsing, screening and the reports count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fhir_adapter import ids, terminology
from fhir_adapter.eligibility.run import screen_files
from fhir_adapter.eligibility.trials import load_trials

SYSTEM = "urn:fhir-adapter:bench"


def _ref(kind: str, value: str) -> str:
    return ids.reference(kind, SYSTEM, value)


def _obs(key: str, mrn: str, concept: str, when: dt.date, **value) -> dict:
    return {"resourceType": "Observation", "id": ids.resource_id("Observation", SYSTEM, key),
            "identifier": [{"system": SYSTEM, "value": key}], "status": "final",
            "code": terminology.codeable_concept(concept), "subject": {"reference": _ref("Patient", mrn)},
            "effectiveDateTime": when.isoformat(), **value}


def cohort(patients: int, as_of: dt.date, seed: int = 7):
    """Yield (resource type, resource) for a deterministic synthetic cohort, about 12 resources a patient."""
    rng = random.Random(seed)
    drugs = list(terminology.members("disease-modifying-therapies"))
    for n in range(patients):
        mrn = f"MRN{n:07d}"
        pid = ids.resource_id("Patient", SYSTEM, mrn)
        birth = as_of - dt.timedelta(days=rng.randint(16 * 365, 62 * 365))
        sex = rng.choice(("female", "female", "male"))
        yield "Patient", {"resourceType": "Patient", "id": pid, "identifier": [{"system": SYSTEM, "value": mrn}],
                          "gender": sex, "birthDate": birth.isoformat()}
        course = rng.choices(("rrms", "spms", "ppms", "multiple-sclerosis"), (60, 20, 12, 8))[0]
        onset = as_of - dt.timedelta(days=rng.randint(200, 20 * 365))
        yield "Condition", {"resourceType": "Condition", "id": ids.resource_id("Condition", SYSTEM, f"{mrn}-dx"),
                            "clinicalStatus": terminology.codeable_concept("condition-active"),
                            "code": terminology.codeable_concept(course), "subject": {"reference": f"Patient/{pid}"},
                            "onsetDateTime": onset.isoformat(),
                            "recordedDate": (onset + dt.timedelta(days=90)).isoformat()}
        score = rng.choice((1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0))
        for visit in range(rng.randint(2, 5)):
            when = as_of - dt.timedelta(days=rng.randint(10, 720))
            value = max(0.0, min(9.5, score + rng.choice((-1.0, -0.5, 0.0, 0.5, 1.0))))
            yield "Observation", _obs(f"{mrn}-edss-{visit}", mrn, "edss", when,
                                      valueQuantity={"value": value, "unit": "score",
                                                     "system": "http://unitsofmeasure.org", "code": "{score}"})
        for r in range(rng.choice((0, 0, 1, 1, 2))):
            when = as_of - dt.timedelta(days=rng.randint(5, 900))
            yield "Observation", _obs(f"{mrn}-relapse-{r}", mrn, "relapse", when,
                                      valueCodeableConcept=terminology.codeable_concept(
                                          rng.choice(("mild", "moderate", "severe"))))
        if rng.random() < 0.8:
            when = as_of - dt.timedelta(days=rng.randint(20, 600))
            yield "Observation", _obs(f"{mrn}-mri-gd", mrn, "gd-enhancing-lesion-count", when,
                                      valueInteger=rng.choice((0, 0, 0, 1, 2, 3)))
            yield "Observation", _obs(f"{mrn}-mri-t2", mrn, "new-or-enlarging-t2-lesion-count", when,
                                      valueInteger=rng.choice((0, 0, 1, 2)))
        for lab in rng.sample(("hiv", "hbsag", "hcv", "egfr", "platelets"), rng.randint(1, 4)):
            when = as_of - dt.timedelta(days=rng.randint(5, 400))
            if lab in ("egfr", "platelets"):
                value = {"valueQuantity": {"value": rng.randint(40, 120) if lab == "egfr" else rng.randint(80, 400),
                                           "unit": "mL/min/{1.73_m2}" if lab == "egfr" else "10*9/L"}}
            else:
                value = {"valueCodeableConcept": terminology.codeable_concept(
                    "positive" if rng.random() < 0.02 else "negative")}
            yield "Observation", _obs(f"{mrn}-lab-{lab}", mrn, lab, when, **value)
        for m in range(rng.randint(0, 2)):
            start = as_of - dt.timedelta(days=rng.randint(30, 3000))
            end = start + dt.timedelta(days=rng.randint(20, 1500))
            yield "MedicationStatement", {
                "resourceType": "MedicationStatement",
                "id": ids.resource_id("MedicationStatement", SYSTEM, f"{mrn}-med-{m}"),
                "status": "active" if end > as_of else "completed",
                "medicationCodeableConcept": terminology.codeable_concept(rng.choice(drugs)),
                "subject": {"reference": f"Patient/{pid}"},
                "effectivePeriod": {"start": start.isoformat(), **({} if end > as_of else {"end": end.isoformat()})}}


def write_cohort(directory: Path, patients: int, as_of: dt.date) -> int:
    streams = {}
    count = 0
    try:
        for kind, item in cohort(patients, as_of):
            stream = streams.get(kind)
            if stream is None:
                stream = streams[kind] = (directory / f"{kind}.ndjson").open("w", encoding="utf-8")
            stream.write(json.dumps(item, separators=(",", ":")) + "\n")
            count += 1
    finally:
        for stream in streams.values():
            stream.close()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2025, 6, 1))
    parser.add_argument("--keep", type=Path, help="write the cohort and reports here and keep them")
    args = parser.parse_args()
    trials = load_trials()
    if not trials:
        sys.exit("no trials with criteria in mappings/trials/")
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        data, out = base / "cohort", base / "screening"
        data.mkdir(parents=True, exist_ok=True)
        if not any(data.glob("*.ndjson")):
            started = time.perf_counter()
            count = write_cohort(data, args.patients, args.as_of)
            print(f"wrote {count:,} resources for {args.patients:,} patients in {time.perf_counter() - started:.1f} s")
        size = sum(f.stat().st_size for f in data.glob("*.ndjson"))
        # a first run, into an empty directory: replacing an earlier run's reports also frees their gigabytes
        # (about 0.7 s for 4 GB on ext4), which is the file system's time, not screening's
        shutil.rmtree(out, ignore_errors=True)
        cpu_before = _cpu()
        started = time.perf_counter()
        result = screen_files([data], trials, out, args.as_of, args.workers)
        elapsed = time.perf_counter() - started
        cpu = _cpu() - cpu_before
        patients = result.screening.patients
        mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.seconds.items())
        print(f"screened {patients:,} patients ({result.read:,} resources, {size / 1e6:.0f} MB) against "
              f"{len(trials)} trials in {elapsed:.2f} s: {patients / elapsed:,.0f} patients/s ({stages})")
        print(f"peak memory: parent {mine:.0f} MB, largest worker {children:.0f} MB; "
              f"screening.json {(out / 'screening.json').stat().st_size / 1e6:.0f} MB")
        print(f"CPU time (user + system, all processes): {cpu:.1f} s, {1000 * cpu / max(patients, 1):.2f} ms per "
              f"patient; on a shared machine wall time / CPU time shows the share of the cores this run got")


def _cpu() -> float:
    """User + system seconds of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
