"""Screening from files: NDJSON per type and Bundles, on several processes, gives the in-memory verdicts."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re

import pytest
from test_facts import AS_OF, Chart
from test_screen import CMM_EM, candidate

from fhir_adapter.eligibility import index_resources, screen
from fhir_adapter.eligibility.load import line_key, load, partition
from fhir_adapter.eligibility.run import screen_files
from fhir_adapter.sources import InputError, write_ndjson


def cohort() -> list[dict]:
    charts = [candidate(f"p{n}", age=20 + n, edss=2.5 + 0.5 * (n % 10), mri=n % 3 != 0) for n in range(40)]
    return [r for chart in charts for r in chart.resources]


def write_by_type(resources: list[dict], directory) -> None:
    by_type: dict[str, list[dict]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, items in by_type.items():
        write_ndjson(directory / f"{rtype}.ndjson", items)


def expected(resources: list[dict]) -> dict:
    return {(v.patient, v.trial): v.to_dict() for v in screen(index_resources(resources).patients.values(),
                                                               [CMM_EM], AS_OF)}


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_files_on_several_processes_give_the_in_memory_verdicts(tmp_path, workers):
    resources = cohort()
    (tmp_path / "in").mkdir()
    write_by_type(resources, tmp_path / "in")
    result = screen_files([tmp_path / "in"], [CMM_EM], tmp_path / "out", AS_OF, workers=workers)
    written = json.loads((tmp_path / "out" / "screening.json").read_text())
    assert {(v["patient"], v["trial"]): v for v in written} == expected(resources)
    assert result.read == len(resources) and result.screening.patients == 40
    rows = list(csv.DictReader((tmp_path / "out" / "screening.csv").open()))
    assert [(r["patient"], r["verdict"]) for r in rows] == [(v["patient"], v["verdict"]) for v in written]
    funnel = result.screening.funnels["NCT02035514"]
    assert sum(funnel.verdicts.values()) == 40
    edss = [next(c for c in v["criteria"] if c["linkId"] == "inc-4")["result"] for v in written]
    assert funnel.criteria["inc-4"]["loses"] == edss.count("not-met") > 0


def test_the_output_does_not_depend_on_the_number_of_processes(tmp_path, monkeypatch):
    """Also the report, whose few candidates shown in full are chosen among more than it shows."""
    from fhir_adapter.report import html
    monkeypatch.setattr(html, "generated_at", lambda: "2025-06-01 12:00 UTC")   # runs across a minute's turn
    (tmp_path / "in").mkdir()
    write_by_type(cohort(), tmp_path / "in")
    runs = {w: screen_files([tmp_path / "in"], [CMM_EM], tmp_path / f"w{w}", AS_OF, workers=w, html_candidates=2)
            for w in (1, 2, 3)}
    assert len(runs[1].screening.candidates["NCT02035514"]) == 4        # 2 eligible and 2 needs-review of more
    for name in ("screening.csv", "report.html"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes() \
            == (tmp_path / "w3" / name).read_bytes(), name
    # screening.json: the same bytes but for the spaces that pad a part joined in place (before a ",\n")
    texts = {w: (tmp_path / f"w{w}" / "screening.json").read_bytes() for w in (1, 2, 3)}
    assert texts[1] == re.sub(rb" +(?=,\n)", b"", texts[2]) == re.sub(rb" +(?=,\n)", b"", texts[3])
    assert json.loads(texts[1]) == json.loads(texts[2]) == json.loads(texts[3])
    assert all(len(text.splitlines()) == 42 for text in texts.values())      # "[", 40 verdicts, "]"


def test_a_line_whose_raw_guess_is_wrong_reaches_its_patient(tmp_path):
    """`Patient/` first in the line names another patient: the worker that parsed it hands it over."""
    chart = candidate("p1")
    resources = chart.resources
    edss = next(r for r in resources if r.get("code") == Chart.code("edss"))
    decoy = next(pid for pid in (f"x{n}" for n in range(100)) if partition(pid, 2) != partition("p1", 2))
    tricky = {"resourceType": "Observation", "id": edss["id"], "focus": [{"reference": f"Patient/{decoy}"}],
              **{k: v for k, v in edss.items() if k not in ("resourceType", "id")}}
    assert line_key(json.dumps(tricky).encode()) == decoy.encode()
    (tmp_path / "in").mkdir()
    write_by_type([tricky if r is edss else r for r in resources], tmp_path / "in")
    screen_files([tmp_path / "in"], [CMM_EM], tmp_path / "out", AS_OF, workers=2)
    (verdict,) = json.loads((tmp_path / "out" / "screening.json").read_text())
    assert verdict["verdict"] == "eligible" and f"Observation/{edss['id']}" in json.dumps(verdict)


def test_bundles_and_medication_references(tmp_path):
    chart = candidate("p1")
    chart.resources.append({"resourceType": "Medication", "id": "m1",
                            "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "H02AB04"}]}})
    chart._add("MedicationStatement", status="completed", medicationReference={"reference": "Medication/m1"},
               effectivePeriod={"start": chart.ago(20), "end": chart.ago(10)})
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in chart.resources]}
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    for workers in (1, 2):
        screen_files([tmp_path / "b.json"], [CMM_EM], tmp_path / f"out{workers}", AS_OF, workers=workers)
        (verdict,) = json.loads((tmp_path / f"out{workers}" / "screening.json").read_text())
        steroids = next(c for c in verdict["criteria"] if c["linkId"] == "exc-5")
        assert verdict["verdict"] == "ineligible" and steroids["result"] == "met"


def test_bad_input_names_file_line_and_column_and_unusable_records_are_reported(tmp_path):
    (tmp_path / "Observation.ndjson").write_text('{"resourceType": "Observation", "id": "a"}\n{"resourceType": \n')
    with pytest.raises(InputError, match=r"Observation.ndjson:2:\d+: malformed JSON"):
        load([tmp_path])
    edss = {"resourceType": "Observation", "id": "e1", "subject": {"reference": "Patient/p1"},
            "code": Chart.code("edss"), "valueQuantity": {"value": 4}}
    (tmp_path / "Observation.ndjson").write_text("".join(json.dumps(r) + "\n" for r in (
        edss, {**edss, "id": "e2", "effectiveDateTime": "2024-03"},
        {**edss, "id": "e3", "effectivePeriod": {"start": "2024-13-01"}})))
    result = screen_files([tmp_path], [CMM_EM], tmp_path / "out", AS_OF, workers=2)
    assert [str(p) for p in result.problems] == [
        f"{tmp_path / 'Observation.ndjson'}:1: edss Observation without an effective date",
        f"{tmp_path / 'Observation.ndjson'}:2: edss Observation with effectiveDateTime '2024-03', not a full, "
        "valid date",
        f"{tmp_path / 'Observation.ndjson'}:3: edss Observation with effectivePeriod '2024-13-01', not a full, "
        "valid date"]
    with (tmp_path / "out" / "problems.csv").open(newline="") as stream:
        assert list(csv.reader(stream))[:2] == [["where", "problem"], [f"{tmp_path / 'Observation.ndjson'}:1",
                                                                       "edss Observation without an effective date"]]


@pytest.mark.parametrize("workers", [1, 3])
def test_reports_are_valid_with_no_patient_and_with_empty_parts(tmp_path, workers):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "Patient.ndjson").write_text("")
    screen_files([tmp_path / "empty"], [CMM_EM], tmp_path / "none", AS_OF, workers=workers)
    assert json.loads((tmp_path / "none" / "screening.json").read_text()) == []
    assert (tmp_path / "none" / "screening.csv").read_text().count("\n") == 1          # the header only
    (tmp_path / "one").mkdir()
    write_by_type(candidate("p1").resources, tmp_path / "one")                         # two parts of three empty
    screen_files([tmp_path / "one"], [CMM_EM], tmp_path / "out", AS_OF, workers=workers)
    assert [v["patient"] for v in json.loads((tmp_path / "out" / "screening.json").read_text())] == ["Patient/p1"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "screening.csv", "screening.json"]


@pytest.mark.parametrize("workers", [1, 2])
def test_what_patients_map_writes_is_screened_as_it_is(tmp_path, workers):
    """`patients map` writes summary.json beside the NDJSON: screening the directory notes it as skipped (not an
    input record, so not a problem), and does not crash."""
    from fhir_adapter.cli import main
    from fhir_adapter.paths import EXAMPLES

    assert main(["patients", "map", str(EXAMPLES / "ehr" / "cohort"), "--out", str(tmp_path / "fhir"),
                 "--allow-rejects"]) == 0
    summary = tmp_path / "fhir" / "summary.json"
    assert summary.exists()
    result = screen_files([tmp_path / "fhir"], [CMM_EM], tmp_path / "out", AS_OF, workers=workers)
    assert sorted(result.skipped) == [(tmp_path / "fhir" / "rejects.csv", "not .json, .ndjson or .jsonl (or one of "
                                       "them gzipped)"), (summary, "not a FHIR resource (no resourceType)")]
    assert not result.problems
    patients = sum(1 for _ in (tmp_path / "fhir" / "Patient.ndjson").open())
    assert result.screening.patients == patients > 0
    with pytest.raises(InputError, match="summary.json: not a FHIR resource"):
        load([summary])             # named explicitly, it must be FHIR


@pytest.mark.parametrize("workers", [1, 2])
def test_the_dead_are_reported_not_screened(tmp_path, workers):
    """A patient who died on or before the screening date is no candidate: listed in problems.csv, no verdict."""
    charts = [candidate(f"p{n}") for n in range(8)]
    charts[0].resources[0]["deceasedBoolean"] = True
    charts[1].resources[0]["deceasedDateTime"] = "2025-02-01"
    charts[2].resources[0]["deceasedDateTime"] = (AS_OF + dt.timedelta(days=30)).isoformat()   # alive at as-of
    charts[3].resources[0]["deceasedBoolean"] = False
    charts[4].resources[0]["deceasedDateTime"] = "2030"           # a year after the screening date: alive then
    charts[5].resources[0]["deceasedDateTime"] = "2025-05"
    charts[6].resources[0]["deceasedDateTime"] = AS_OF.isoformat()[:7]     # its month: perhaps dead, not screened
    charts[7].resources[0]["deceasedDateTime"] = "unknown"
    (tmp_path / "in").mkdir()
    write_by_type([r for chart in charts for r in chart.resources], tmp_path / "in")
    result = screen_files([tmp_path / "in"], [CMM_EM], tmp_path / "out", AS_OF, workers=workers)
    screened = {v["patient"] for v in json.loads((tmp_path / "out" / "screening.json").read_text())}
    assert screened == {"Patient/p2", "Patient/p3", "Patient/p4"}
    patients = tmp_path / "in" / "Patient.ndjson"         # where each Patient was read, as for any problem
    assert sorted(map(str, result.problems)) == [
        f"{patients}:1: Patient/p0 deceased: not screened",
        f"{patients}:2: Patient/p1 deceased on 2025-02-01: not screened",
        f"{patients}:6: Patient/p5 deceased in 2025-05: not screened",
        f"{patients}:7: Patient/p6 deceased in 2025-06, perhaps after 2025-06-01: not screened",
        f"{patients}:8: Patient/p7 deceased (deceasedDateTime 'unknown' is not a FHIR date): not screened"]
    with (tmp_path / "out" / "problems.csv").open(newline="", encoding="utf-8") as f:
        assert len(list(csv.reader(f))) == 6                # header and the five


@pytest.mark.parametrize("workers", [1, 2])
def test_impossible_values_in_files_are_reported_by_line_and_not_used(tmp_path, workers):
    """JSON `NaN` (which Python's json reads), a negative eGFR and a birth date after the screening date: each in
    problems.csv at its file and line; the patients are still screened, with the lab or the age left unknown."""
    from fhir_adapter.eligibility.trials import load_trials

    charts = [candidate(f"p{n}") for n in range(3)]
    bad = [charts[0].lab("egfr", 10, value=float("nan"), unit="mL/min/{1.73_m2}")["id"],
           charts[1].lab("egfr", 10, value=-5, unit="mL/min/{1.73_m2}")["id"]]
    charts[2].resources[0]["birthDate"] = "2030-01-01"
    (tmp_path / "in").mkdir()
    write_by_type([r for chart in charts for r in chart.resources], tmp_path / "in")
    observations = (tmp_path / "in" / "Observation.ndjson").read_text().splitlines()
    lines = [next(n for n, line in enumerate(observations, 1) if f'"id":"{rid}"' in line) for rid in bad]
    assert '"value":NaN' in observations[lines[0] - 1]     # a JSON literal, not a string
    smart_ms = load_trials(["NCT04749667"])[0]              # exc-14: eGFR < 60 (-5 would exclude)
    result = screen_files([tmp_path / "in"], [CMM_EM, smart_ms], tmp_path / "out", AS_OF, workers=workers)
    files = tmp_path / "in"
    assert [str(p) for p in result.problems] == [
        f"{files / 'Observation.ndjson'}:{lines[0]}: eGFR NaN mL/min/1.73m2 is not a possible value (0 to 250): "
        "not used",
        f"{files / 'Observation.ndjson'}:{lines[1]}: eGFR -5 mL/min/1.73m2 is not a possible value (0 to 250): "
        "not used",
        f"{files / 'Patient.ndjson'}:3: birthDate 2030-01-01 is after the screening date 2025-06-01: the age is "
        "unknown"]
    with (tmp_path / "out" / "problems.csv").open(newline="", encoding="utf-8") as f:
        assert len(list(csv.reader(f))) == 4                # header and the three
    verdicts = {(v["patient"], v["trial"]): {c["linkId"]: c for c in v["criteria"]} | {"verdict": v["verdict"]}
                for v in json.loads((tmp_path / "out" / "screening.json").read_text())}
    assert len(verdicts) == 6                               # every patient screened for both trials
    for pid in ("Patient/p0", "Patient/p1"):
        egfr = verdicts[pid, "NCT04749667"]["exc-14"]
        assert egfr["result"] == "unknown" and "no eGFR result" in egfr["reason"]
    age = verdicts["Patient/p2", "NCT02035514"]["inc-2"]
    assert age["result"] == "unknown" and "2030-01-01 is after the screening date" in age["reason"]
    assert verdicts["Patient/p2", "NCT02035514"]["verdict"] == "needs-review"
    assert verdicts["Patient/p0", "NCT02035514"]["verdict"] == "eligible"          # the rest as before


def test_records_dated_before_the_birth_date_are_reported_and_not_used(tmp_path):
    """An EDSS, a relapse and a therapy dated before the patient was born (a wrong date, or another patient's
    record) are each in problems.csv by reference and cited nowhere; the verdicts are those without them."""
    chart = candidate("p0")                                  # born 35 years before 2025-06-01
    early = [chart.edss(7.5, 40 * 365)["id"], chart.relapse(38 * 365)["id"],
             chart.med("natalizumab", start=37 * 365, end=36 * 365)["id"]]
    (tmp_path / "in").mkdir()
    (tmp_path / "clean").mkdir()
    write_by_type(chart.resources, tmp_path / "in")
    result = screen_files([tmp_path / "in"], [CMM_EM], tmp_path / "out", AS_OF, workers=1)
    born = chart.resources[0]["birthDate"]
    assert sorted(map(str, result.problems)) == sorted(
        f"{kind}/{rid}: dated {(AS_OF - dt.timedelta(days=days)).isoformat()}, before the birth date {born} of "
        f"Patient/p0: not used"
        for kind, rid, days in zip(("Observation", "Observation", "MedicationStatement"), early,
                                   (40 * 365, 38 * 365, 37 * 365), strict=True))
    written = (tmp_path / "out" / "screening.json").read_text()
    assert not any(rid in written for rid in early)
    clean = candidate("p0")
    write_by_type(clean.resources, tmp_path / "clean")
    screen_files([tmp_path / "clean"], [CMM_EM], tmp_path / "without", AS_OF, workers=1)
    assert json.loads(written) == json.loads((tmp_path / "without" / "screening.json").read_text())

