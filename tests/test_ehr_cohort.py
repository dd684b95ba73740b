"""The synthetic MS cohort: deterministic, plausible, read back exactly, and rich enough for every trial."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter

import pytest

from fhir_adapter.cli import main
from fhir_adapter.ehr import TABLES, generate_cohort, load_column_map
from fhir_adapter.ehr.cohort import REFERRED_SHARE, WASHOUT_LIMITS, cohort_records, write_extract
from fhir_adapter.ehr.convert import RowConverter
from fhir_adapter.ehr.mapping import FhirMapper
from fhir_adapter.ehr.model import EDSS_STEPS, PatientRecord
from fhir_adapter.ehr.pipeline import read_header
from fhir_adapter.eligibility import ELIGIBLE, INELIGIBLE, NEEDS_REVIEW, index_resources, screen
from fhir_adapter.eligibility.trials import load_trials

REFERENCE = dt.date(2026, 6, 30)
ON = REFERENCE.isoformat()


@pytest.fixture(scope="module")
def records() -> list[PatientRecord]:
    return list(cohort_records(2000, seed=11, reference_date=REFERENCE))


def days_before(day: str) -> int:
    return (REFERENCE - dt.date.fromisoformat(day)).days


def age(record: PatientRecord) -> float:
    return days_before(record.patient.birth_date) / 365.25


def test_same_seed_same_extract_and_a_smaller_cohort_is_a_prefix(tmp_path):
    a = generate_cohort(60, 3, tmp_path / "a", reference_date=REFERENCE)
    b = generate_cohort(60, 3, tmp_path / "b", reference_date=REFERENCE)
    c = generate_cohort(60, 4, tmp_path / "c", reference_date=REFERENCE)
    small = generate_cohort(20, 3, tmp_path / "small", reference_date=REFERENCE)
    for name in TABLES:
        file = f"{name}.csv"
        assert (a / file).read_bytes() == (b / file).read_bytes()
        header, *rows = (a / file).read_text().splitlines(keepends=True)
        first_20 = tuple(f"MS{n:06d}" for n in range(1, 21))
        assert (small / file).read_text() == header + "".join(row for row in rows if row.startswith(first_20))
    assert (a / "edss.csv").read_bytes() != (c / "edss.csv").read_bytes()


def test_the_extract_reads_back_to_the_same_facts(tmp_path):
    """Whatever spelling the extract uses (brands, LOINC codes, F/M, unit variants), the facts come back."""
    records = list(cohort_records(150, seed=2, reference_date=REFERENCE))
    extract = write_extract(records, tmp_path, seed=2)
    cmap = load_column_map()
    read = []
    for table in TABLES:
        path = extract / cmap.table(table).file
        converter = RowConverter(table, cmap, read_header(path, cmap), ON)
        with path.open(encoding="utf-8", newline="") as stream:
            read.extend(converter.convert(row) for row in list(csv.reader(stream))[1:])
    written = [fact for table in TABLES for r in records for fact in _table_facts(r, table)]
    assert read == written


def _table_facts(record: PatientRecord, table: str) -> list:
    return [record.patient] if table == "patients" else list(getattr(record, table))


def test_cli_generate(tmp_path, capsys):
    assert main(["patients", "generate", "--patients", "5", "--seed", "9", "--out", str(tmp_path),
                 "--reference-date", ON]) == 0
    assert "5 patients (seed 9, histories up to 2026-06-30)" in capsys.readouterr().out
    assert len((tmp_path / "patients.csv").read_text().splitlines()) == 6
    assert main(["patients", "generate", "--patients", "-1", "--out", str(tmp_path)]) == 2


def test_cli_generate_refuses_an_empty_cohort_and_counts_one_patient(tmp_path, capsys):
    assert main(["patients", "generate", "--patients", "0", "--out", str(tmp_path / "empty")]) == 2
    assert "fhir-adapter patients: error: --patients must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()  # refused before writing anything
    assert main(["patients", "generate", "--patients", "1", "--out", str(tmp_path / "one"),
                 "--reference-date", ON]) == 0
    assert capsys.readouterr().out.startswith("1 patient (seed 1, ")


# --- plausible histories ------------------------------------------------------------------------------

def test_demographics_and_courses(records):
    ages = [age(r) for r in records]
    assert 16 <= min(ages) < 18 and 60 < max(ages) < 66.5
    assert sum(a < 18 for a in ages) and sum(a > 55 for a in ages)
    sexes = Counter(r.patient.sex for r in records)
    assert sexes["female"] > 1.8 * sexes["male"]
    courses = Counter(next(d.diagnosis for d in r.diagnoses if d.status == "active" and d.diagnosis in
                           ("rrms", "spms", "ppms", "multiple-sclerosis")) for r in records)
    assert set(courses) == {"rrms", "spms", "ppms", "multiple-sclerosis"}
    assert courses["rrms"] > courses["spms"] > courses["ppms"] > courses["multiple-sclerosis"]


def test_nothing_after_the_reference_date_and_everything_on_its_scale(records):
    for r in records:
        for fact in r.facts()[1:]:
            for name in ("date", "onset", "recorded", "abated", "start", "end"):
                value = getattr(fact, name, None)
                assert value is None or value <= ON, (fact, name)
        assert all(e.score in EDSS_STEPS for e in r.edss)
        assert all(m.gd_lesions is None or m.gd_lesions >= 0 for m in r.mri)
        onset = min(d.onset for d in r.diagnoses if d.onset and d.diagnosis in ("rrms", "spms", "ppms",
                                                                                  "multiple-sclerosis"))
        assert onset >= r.patient.birth_date[:len(onset)]


def _course(r: PatientRecord) -> str:
    return [d.diagnosis for d in r.diagnoses if d.diagnosis in ("rrms", "spms", "ppms", "multiple-sclerosis")][-1]


def test_disability_relapses_and_mri_follow_the_course(records):
    by_course: dict[str, list[PatientRecord]] = {}
    for r in records:
        by_course.setdefault(_course(r), []).append(r)

    def mean(values):
        values = list(values)
        return sum(values) / len(values)

    last_edss = {c: mean(r.edss[-1].score for r in rs if r.edss) for c, rs in by_course.items()}
    assert last_edss["rrms"] + 1.5 < last_edss["spms"] and last_edss["rrms"] + 1 < last_edss["ppms"]
    progressed = sum(r.edss[-1].score > r.edss[0].score for r in records if len(r.edss) > 1)
    improved = sum(r.edss[-1].score < r.edss[0].score for r in records if len(r.edss) > 1)
    assert progressed > 1.5 * improved
    relapses = {c: mean(len(r.relapses) for r in rs) for c, rs in by_course.items()}
    assert relapses["rrms"] > 2 * relapses["spms"] > 0 and relapses["spms"] > relapses["ppms"]
    active = {c: mean(sum(m.gd_lesions or 0 for m in r.mri) for r in rs) for c, rs in by_course.items()}
    assert active["rrms"] > active["ppms"] > 0
    assert any(_course(r) == "ppms" and any(m.gd_lesions for m in r.mri) for r in records)


def test_realistic_gaps(records):
    no_recent_edss = sum(not any(days_before(e.date) <= 365 for e in r.edss) for r in records)
    no_recent_mri = sum(not any(days_before(m.date) <= 365 for m in r.mri) for r in records)
    partial_onsets = sum(any(d.onset and len(d.onset) < 10 for d in r.diagnoses) for r in records)
    assert 0.1 * len(records) < no_recent_edss < 0.5 * len(records)
    assert 0.2 * len(records) < no_recent_mri < 0.7 * len(records)
    assert sum(not r.edss for r in records) > 0 and sum(not r.mri for r in records) > 0
    assert partial_onsets > 0.1 * len(records)
    assert sum(not any(lab.test == "hiv" for lab in r.labs) for r in records) > 0.5 * len(records)


def test_therapies_sequences_and_washout_boundaries(records):
    drugs = Counter(m.drug for r in records for m in r.medications)
    for drug in ("interferon-beta-1a", "interferon-beta-1b", "glatiramer", "natalizumab", "fingolimod", "ocrelizumab",
                 "teriflunomide", "dimethyl-fumarate", "cladribine", "alemtuzumab", "siponimod", "mitoxantrone",
                 "methylprednisolone", "fampridine"):
        assert drugs[drug] > 0, drug
    switched = sum(len({m.drug for m in r.medications if m.drug not in ("methylprednisolone", "prednisone",
                                                                         "fampridine")}) > 1 for r in records)
    assert switched > 0.2 * len(records)
    ongoing = sum(any(m.end is None and m.drug != "fampridine" for m in r.medications) for r in records)
    assert ongoing > 0.3 * len(records)
    stops = [days_before(m.end) for r in records for m in r.medications if m.end]
    for limit in WASHOUT_LIMITS:       # stops on both sides of each washout limit
        assert any(limit - 12 <= s < limit for s in stops) and any(limit < s <= limit + 12 for s in stops), limit
    recent_pulse = sum(any(m.drug == "methylprednisolone" and days_before(m.start) <= 60 for m in r.medications)
                       for r in records)
    assert recent_pulse > 0


def test_labs_pregnancy_and_comorbidities_cover_the_exclusions(records):
    labs = [lab for r in records for lab in r.labs]
    assert any(lab.test == "egfr" and lab.value < 60 for lab in labs)
    assert any(lab.test == "platelets" and lab.value < 100 for lab in labs)
    assert any(lab.test == "white-cells" and (lab.value < 3 or lab.value > 11) for lab in labs)
    for test in ("hiv", "hbsag", "hcv", "syphilis"):
        results = Counter(lab.result for lab in labs if lab.test == test)
        assert results["negative"] > 0, test
    assert sum(lab.result == "positive" for lab in labs if lab.test in ("hiv", "hbsag", "hcv", "syphilis", "htlv"))
    ocb = Counter(lab.result for lab in labs if lab.test == "csf-oligoclonal-bands")
    assert ocb["positive"] > 3 * ocb["negative"] > 0
    pregnant = [r for r in records if any(s.fact == "pregnancy" and s.value and days_before(s.date) < 200
                                          for s in r.status)]
    assert pregnant and all(r.patient.sex == "female" and 18 <= age(r) < 47 for r in pregnant)
    assert any(s.fact == "lactation" and s.value for r in records for s in r.status)
    conditions = Counter((d.diagnosis, d.status) for r in records for d in r.diagnoses)
    assert conditions[("malignancy", "active")] and conditions[("malignancy", "remission")]
    for concept in ("myelodysplasia", "renal-failure", "major-depression", "polyneuropathy", "alcohol-dependence"):
        assert any(c == concept for c, _ in conditions), concept


def test_every_trial_has_candidates_and_exclusions(records):
    """A rough reading of the seeds' core inclusion lines on the reference date (the screening engine decides
    for real): some patients pass the core of each trial, many do not."""
    def core(r: PatientRecord, low_age, high_age, low_dur, high_dur, low_edss, high_edss, courses) -> bool | None:
        if not r.edss:
            return None
        onset = min(d.onset for d in r.diagnoses if d.onset)
        duration = days_before(onset + "-01-01"[len(onset) - 4:] if len(onset) < 10 else onset) / 365.25
        return (low_age <= age(r) <= high_age and low_dur <= duration <= high_dur
                and low_edss <= r.edss[-1].score <= high_edss and _course(r) in courses)

    trials = {"MESEMS / CMM-EM": (18, 50, 2, 10, 3.0, 6.5, ("rrms", "spms", "ppms")),
              "SMART-MS": (18, 55, 2, 15, 4.0, 7.0, ("spms", "ppms"))}
    for name, spec in trials.items():
        outcome = Counter(core(r, *spec) for r in records)
        assert outcome[True] > 20 and outcome[False] > 5 * outcome[True] and outcome[None] > 0, (name, outcome)


# --- referred for trial screening ---------------------------------------------------------------------------

SEROLOGY = ("hiv", "hbsag", "hcv", "syphilis", "htlv")


def test_a_small_share_was_referred_with_the_work_up_done(records):
    """Referred patients carry the pre-screening work-up (serologies and blood tests on one recent day) and
    the trials' profile; the general population's serologies are not done with its blood tests."""
    def worked_up(r: PatientRecord) -> bool:
        days = {lab.date for lab in r.labs if lab.test in SEROLOGY and days_before(lab.date) <= 120}
        return any(len({lab.test for lab in r.labs if lab.date == day} & {*SEROLOGY, "egfr", "platelets"}) >= 5
                   for day in days)

    referred = [r for r in records if worked_up(r)]
    assert 0.5 * REFERRED_SHARE * len(records) < len(referred) < 1.5 * REFERRED_SHARE * len(records)
    in_profile = [r for r in referred if r.edss and 3.0 <= r.edss[-1].score <= 7.0 and 18 <= age(r) < 56
                  and days_before(r.edss[-1].date) <= 60]
    assert len(in_profile) > 0.8 * len(referred)
    women = [r for r in referred if r.patient.sex == "female"]
    assert women and sum(any(lab.test == "pregnancy-test" and days_before(lab.date) <= 30 for lab in r.labs)
                         for r in women) > 0.8 * len(women)
    assert sum(any(lab.test == "platelets" for lab in r.labs) for r in referred) > 0.9 * len(referred)
    assert sum(any(m.end is None and m.drug not in ("fampridine", "methylprednisolone", "prednisone")
                   for m in r.medications) for r in referred) < 0.1 * len(referred)   # DMT stopped


def test_screening_500_patients_finds_each_verdict_for_every_trial_and_few_candidates():
    """What `fhir-adapter demo` shows: the cohort of 500 (seed 1) screened on its reference date, in memory."""
    cohort = list(cohort_records(500, seed=1, reference_date=REFERENCE))
    mapper = FhirMapper.for_map("R4", load_column_map())
    index = index_resources([resource for record in cohort for resource in mapper.record(record)])
    assert len(index.patients) == 500
    trials = load_trials()
    assert len(trials) == 4
    verdicts = {t.id: Counter() for t in trials}
    candidates = set()
    for v in screen(index.patients.values(), trials, REFERENCE):
        verdicts[v.trial][v.verdict] += 1
        if v.verdict != INELIGIBLE:
            candidates.add(v.patient)
    for trial, counts in verdicts.items():
        assert counts[ELIGIBLE] >= 1 and counts[NEEDS_REVIEW] >= 1, (trial, counts)
        assert counts[INELIGIBLE] > 0.9 * 500, (trial, counts)
    assert 0 < len(candidates) < 0.15 * 500, len(candidates)
