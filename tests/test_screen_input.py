"""Screening input as it comes: stdin, byte order marks, file names, Bundles (nested, transaction), bad lines;
every record used or reported, the same output for any number of workers, and usage errors without tracebacks."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest
from test_facts import AS_OF, Chart
from test_screen import CMM_EM, candidate

from fhir_adapter import sources
from fhir_adapter.cli import main
from fhir_adapter.client import SCREENING_TYPES
from fhir_adapter.eligibility import trials
from fhir_adapter.eligibility.data import READ_TYPES
from fhir_adapter.eligibility.load import load
from fhir_adapter.eligibility.run import screen_files
from fhir_adapter.report import writers
from fhir_adapter.sources import InputError

BOM = b"\xef\xbb\xbf"


def ndjson(resources: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in resources)


def verdicts(out) -> dict[str, str]:
    return {v["patient"]: v["verdict"] for v in json.loads((out / "screening.json").read_text())}


def problem_rows(out) -> list[list[str]]:
    with (out / "problems.csv").open(newline="") as stream:
        return list(csv.reader(stream))[1:]


@pytest.fixture
def cmm_em_only(monkeypatch):
    monkeypatch.setattr(trials, "load_trials", lambda only=(): [CMM_EM])


class Stdin(io.StringIO):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize("workers", [1, 2])
def test_stdin_is_read_by_any_number_of_workers(tmp_path, monkeypatch, workers):
    resources = candidate("p1").resources + candidate("p2", edss=8.0).resources
    monkeypatch.setattr("sys.stdin", Stdin(ndjson(resources)))
    result = screen_files(["-"], [CMM_EM], tmp_path / "a", AS_OF, workers=workers)
    assert result.read == len(resources)
    assert verdicts(tmp_path / "a") == {"Patient/p1": "eligible", "Patient/p2": "ineligible"}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    monkeypatch.setattr("sys.stdin", Stdin(BOM + json.dumps(bundle, indent=1).encode()))   # one document
    screen_files(["-", "-"], [CMM_EM], tmp_path / "b", AS_OF, workers=workers)
    assert verdicts(tmp_path / "b") == {"Patient/p1": "eligible", "Patient/p2": "ineligible"}


def test_problems_exit_1_and_the_summary_names_where_not_what(tmp_path, capsys, cmm_em_only):
    patient = {"resourceType": "Patient", "id": "p9", "birthDate": "1990-02-30"}
    (tmp_path / "Patient.ndjson").write_bytes(ndjson(candidate("p1").resources[:1] + [patient]))
    assert main(["screen", "--input", str(tmp_path / "Patient.ndjson"), "--as-of", "2025-06-01",
                 "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "1990-02-30" not in captured.out + captured.err
    assert f"1 input record(s) could not be used (the first at {tmp_path / 'Patient.ndjson'}:2): see " \
           f"{tmp_path / 'out' / 'problems.csv'}" in captured.err
    assert f"wrote {tmp_path / 'out' / 'problems.csv'}" in captured.out
    assert problem_rows(tmp_path / "out") == [[f"{tmp_path / 'Patient.ndjson'}:2",
                                               "birthDate '1990-02-30' is not a FHIR date"]]


def test_a_byte_order_mark_is_accepted_before_the_first_line_only(tmp_path):
    chart = candidate("p1")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "all.ndjson").write_bytes(BOM + ndjson(chart.resources))
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in
                                                                       candidate("p2").resources]}
    (tmp_path / "in" / "b.json").write_bytes(BOM + json.dumps(bundle).encode())
    screen_files([tmp_path / "in"], [CMM_EM], tmp_path / "out", AS_OF, workers=1)
    assert verdicts(tmp_path / "out") == {"Patient/p1": "eligible", "Patient/p2": "eligible"}
    (tmp_path / "late.ndjson").write_bytes(ndjson(chart.resources[:1]) + BOM + ndjson(chart.resources[1:2]))
    with pytest.raises(InputError, match=r"late.ndjson:2:1: malformed JSON"):
        load([tmp_path / "late.ndjson"])


def test_directories_read_jsonl_any_case_and_gzip_and_note_what_they_skip(tmp_path, capsys, cmm_em_only):
    resources = candidate("p1").resources
    patients, others = resources[:1], resources[1:]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "Patient.JSONL").write_bytes(ndjson(patients))
    (tmp_path / "in" / "Condition.NDJSON").write_bytes(ndjson([r for r in others if r["resourceType"] == "Condition"]))
    (tmp_path / "in" / "Observation.ndjson.gz").write_bytes(
        gzip.compress(ndjson([r for r in others if r["resourceType"] == "Observation"])))
    rest = [r for r in others if r["resourceType"] not in ("Condition", "Observation")]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in rest]}
    (tmp_path / "in" / "rest.JSON.gz").write_bytes(gzip.compress(json.dumps(bundle).encode()))
    (tmp_path / "in" / "notes.txt").write_text("not FHIR")
    (tmp_path / "in" / "rows.csv.gz").write_bytes(gzip.compress(b"a,b\n"))
    result = screen_files([tmp_path / "in"], [CMM_EM], tmp_path / "out", AS_OF, workers=2)
    assert result.read == len(resources) and verdicts(tmp_path / "out") == {"Patient/p1": "eligible"}
    assert [p.name for p, _ in result.skipped] == ["notes.txt", "rows.csv.gz"]
    twice = screen_files([tmp_path / "in", tmp_path / "in" / ".."  / "in"], [CMM_EM], tmp_path / "twice", AS_OF)
    assert [p.name for p, _ in twice.skipped] == ["notes.txt", "rows.csv.gz"]        # a directory named twice
    assert main(["screen", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "cli")]) == 0
    assert f"note: skipped {tmp_path / 'in' / 'notes.txt'}: not .json, .ndjson or .jsonl" in capsys.readouterr().err
    (tmp_path / "bad.ndjson.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match=r"bad.ndjson.gz: not a readable gzip file"):
        load([tmp_path / "bad.ndjson.gz"])


def test_a_file_named_twice_or_also_in_a_directory_is_read_once(tmp_path):
    (tmp_path / "in").mkdir()
    resources = candidate("p1").resources
    (tmp_path / "in" / "all.ndjson").write_bytes(ndjson(resources))
    twice = [tmp_path / "in", tmp_path / "in" / "all.ndjson", tmp_path / "in" / ".." / "in" / "all.ndjson"]
    result = screen_files(twice, [CMM_EM], tmp_path / "out", AS_OF, workers=2)
    assert result.read == len(resources) and result.screening.patients == 1


def test_a_null_line_is_an_error_naming_it(tmp_path):
    (tmp_path / "p.ndjson").write_bytes(ndjson(candidate("p1").resources[:1]) + b"\nnull\n")
    with pytest.raises(InputError, match=r"p.ndjson:3: null, not a FHIR resource"):
        load([tmp_path / "p.ndjson"])


def test_malformed_json_names_the_column_in_its_line_and_hints_at_pretty_printed_documents(tmp_path):
    (tmp_path / "cut.ndjson").write_text('{"resourceType": "Patient", "id": "a",\n{"resourceType": "Patient"}\n')
    with pytest.raises(InputError, match=r"cut.ndjson:1:39: malformed JSON: Expecting property name") as error:
        load([tmp_path / "cut.ndjson"])
    assert "pretty-printed" not in str(error.value)
    pretty = {"resourceType": "Bundle", "type": "collection", "entry": []}
    (tmp_path / "pretty.ndjson").write_text(json.dumps(pretty, indent=2))
    with pytest.raises(InputError, match=r"pretty.ndjson:1:2: .*is this a pretty-printed JSON document\? NDJSON "
                                         r"needs one resource per line"):
        load([tmp_path / "pretty.ndjson"])
    with pytest.raises(InputError, match=r"cut.ndjson:1:39: malformed JSON"):      # push and validate's reader
        list(sources.resources([tmp_path / "cut.ndjson"]))


@pytest.mark.parametrize("workers", [1, 2])
def test_nested_bundles_are_read_and_unusable_entries_reported(tmp_path, workers):
    inner = {"resourceType": "Bundle", "type": "collection",
             "entry": [{"resource": r} for r in candidate("p2").resources]}
    outer = {"resourceType": "Bundle", "type": "collection", "entry": [
        *({"resource": r} for r in candidate("p1").resources),
        {"resource": inner}, "text", {"request": {"method": "DELETE", "url": "Patient/x"}}, {"resource": [1]}]}
    n = len(candidate("p1").resources)
    (tmp_path / "b.json").write_text(json.dumps(outer))
    (tmp_path / "odd.json").write_text(json.dumps({"resourceType": "Bundle", "entry": {"resource": {}}}))
    result = screen_files([tmp_path / "b.json", tmp_path / "odd.json"], [CMM_EM], tmp_path / "out", AS_OF,
                          workers=workers)
    assert verdicts(tmp_path / "out") == {"Patient/p1": "eligible", "Patient/p2": "eligible"}
    assert result.read == 2 * n
    evidence = json.dumps(json.loads((tmp_path / "out" / "screening.json").read_text()))
    assert "Observation/p2-observation-" in evidence
    b = tmp_path / "b.json"
    assert problem_rows(tmp_path / "out") == [
        [f"{b}#entry[{n + 1}]", "Bundle entry is not an object: not read"],
        [f"{b}#entry[{n + 2}]", "Bundle entry without a resource: not read"],
        [f"{b}#entry[{n + 3}]", "Bundle entry's resource is not a FHIR resource (no resourceType): not read"],
        [str(tmp_path / "odd.json"), "Bundle entry is not a list: not read"]]


def transaction(chart: Chart, patient_id: bool) -> dict:
    """A chart as a Synthea-style transaction: urn:uuid fullUrls and references, POST entries."""
    urls = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}-uuid" for r in chart.resources}
    entries = []
    for r in chart.resources:
        r = json.loads(json.dumps(r))
        url = urls[f"{r['resourceType']}/{r['id']}"]
        if r["resourceType"] == "Patient" and not patient_id:
            del r["id"]
        for name in ("subject", "medicationReference"):
            if name in r:
                r[name]["reference"] = urls[r[name]["reference"]]
        entries.append({"fullUrl": url, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.mark.parametrize("workers", [1, 2])
def test_transaction_bundles_resolve_urn_uuid_references_through_full_urls(tmp_path, workers):
    """The Patient without id takes it from its fullUrl; a Medication too, which a MedicationStatement refers to."""
    steroid = candidate("p1")
    steroid.resources.append({"resourceType": "Medication", "id": "m1", "code": Chart.code("prednisone")})
    steroid._add("MedicationStatement", status="completed", medicationReference={"reference": "Medication/m1"},
                 effectivePeriod={"start": steroid.ago(20), "end": steroid.ago(10)})
    (tmp_path / "a.json").write_text(json.dumps(transaction(steroid, patient_id=False)))
    (tmp_path / "b.json").write_text(json.dumps(transaction(candidate("p2"), patient_id=True)))
    result = screen_files([tmp_path], [CMM_EM], tmp_path / "out", AS_OF, workers=workers)
    assert verdicts(tmp_path / "out") == {"Patient/p1-uuid": "ineligible", "Patient/p2": "eligible"}
    everything = len(steroid.resources) + len(candidate("p2").resources)
    assert result.problems == [] and result.used == result.read == everything
    (verdict,) = [v for v in json.loads((tmp_path / "out" / "screening.json").read_text())
                  if v["patient"] == "Patient/p1-uuid"]
    assert next(c for c in verdict["criteria"] if c["linkId"] == "exc-5")["result"] == "met"


def test_references_that_name_no_patient_say_what_they_name(tmp_path):
    edss = {"resourceType": "Observation", "code": Chart.code("edss"), "subject": {"reference": "urn:uuid:elsewhere"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "male"}},           # no id, no fullUrl
        {"fullUrl": "urn:uuid:o1", "resource": edss}]}
    (tmp_path / "t.json").write_text(json.dumps(bundle))
    (tmp_path / "o.ndjson").write_bytes(ndjson([{"resourceType": "Observation", "id": "o1",
                                                 "subject": {"reference": "Group/g1"}, "code": Chart.code("edss")},
                                                {"resourceType": "Condition", "id": "c1"},
                                                {"resourceType": "Patient", "id": 5}]))
    index = load([tmp_path / "t.json", tmp_path / "o.ndjson"])
    assert list(map(str, index.problems)) == [
        f"{tmp_path / 't.json'}#entry[0]: Patient without an id",
        f"{tmp_path / 't.json'}#entry[1]: Observation subject 'urn:uuid:elsewhere' is not a Patient's fullUrl in "
        "its Bundle",
        f"{tmp_path / 'o.ndjson'}:1: Observation subject 'Group/g1' is not a Patient/<id> reference",
        f"{tmp_path / 'o.ndjson'}:2: Condition without a subject or patient reference",
        f"{tmp_path / 'o.ndjson'}:3: Patient id 5 is not a string"]


def test_a_reference_or_id_with_spaces_around_it_is_reported_not_a_second_patient(tmp_path):
    chart = candidate("p1")
    edss = [{"resourceType": "Observation", "id": f"o{n}", "code": Chart.code("edss"),
             "effectiveDateTime": "2025-05-01", "valueQuantity": {"value": 4}, "subject": {"reference": ref}}
            for n, ref in enumerate(["Patient/p1 ", " Patient/p1"])]
    (tmp_path / "o.ndjson").write_bytes(ndjson([*chart.resources, *edss, {"resourceType": "Patient", "id": "p2 "}]))
    index = load([tmp_path / "o.ndjson"])
    assert sorted(index.patients) == ["p1"]
    n = len(chart.resources)
    assert list(map(str, index.problems)) == [
        f"{tmp_path / 'o.ndjson'}:{n + 1}: Observation subject 'Patient/p1 ' is not a Patient/<id> reference "
        "(spaces around it)",
        f"{tmp_path / 'o.ndjson'}:{n + 2}: Observation subject ' Patient/p1' is not a Patient/<id> reference "
        "(spaces around it)",
        f"{tmp_path / 'o.ndjson'}:{n + 3}: Patient id 'p2 ' has spaces around it"]


def test_problems_csv_is_in_file_and_line_order_for_any_number_of_workers(tmp_path):
    lines = []
    for n in range(12):
        lines += candidate(f"p{n}").resources[:1]
        lines.append({"resourceType": "Observation", "id": f"e{n}", "subject": {"reference": f"Patient/p{n}"},
                      "code": Chart.code("edss"), "valueQuantity": {"value": 4}})     # no date: a problem
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "all.ndjson").write_bytes(ndjson(lines))
    texts = set()
    for workers in (1, 2, 3):
        screen_files([tmp_path / "in"], [CMM_EM], tmp_path / f"w{workers}", AS_OF, workers=workers)
        texts.add((tmp_path / f"w{workers}" / "problems.csv").read_text())
    assert len(texts) == 1
    assert [row[0].rsplit(":", 1)[1] for row in problem_rows(tmp_path / "w2")] == [str(2 * n + 2) for n in range(12)]


def test_usage_errors_exit_2_with_a_message(tmp_path, capsys, cmm_em_only, monkeypatch):
    (tmp_path / "in.ndjson").write_bytes(ndjson(candidate("p1").resources))
    screen = ["screen", "--input", str(tmp_path / "in.ndjson")]
    with pytest.raises(SystemExit) as stop:
        main([*screen, "--as-of", "0001-01-01", "--out", str(tmp_path / "o")])
    assert stop.value.code == 2 and "is not a date from 1900-01-01" in capsys.readouterr().err
    for workers in ("0", "-1"):
        assert main([*screen, "--workers", workers, "--out", str(tmp_path / "o")]) == 2
        assert f"--workers must be at least 1, not {workers}" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main([*screen, "--out", str(tmp_path / "file")]) == 2
    assert "file: exists and is not a directory" in capsys.readouterr().err
    assert main([*screen, "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "sub: cannot make the directory: Not a directory" in capsys.readouterr().err

    def refused(out, parts):
        raise PermissionError(13, "Permission denied", str(out / ".screening.json.partial"))

    monkeypatch.setattr("fhir_adapter.eligibility.run.plan", refused)
    assert main([*screen, "--out", str(tmp_path / "ro"), "--workers", "1"]) == 2
    assert f"error: {tmp_path / 'ro' / '.screening.json.partial'}: Permission denied" in capsys.readouterr().err
    assert writers.REPORTS[0] == "screening.json" and not (tmp_path / "ro" / "screening.json").exists()


def test_a_server_is_asked_for_every_type_screening_reads():
    """client.SCREENING_TYPES (what a server is searched for) and data.READ_TYPES (what the index reads) name the
    same resource types, besides the Patient and the Medications therapies refer to."""
    assert set(SCREENING_TYPES) == READ_TYPES - {"Patient", "Medication"}
