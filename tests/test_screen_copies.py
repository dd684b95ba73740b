"""Screening input read twice: the same resource (Type/id, one patient) in an NDJSON export and a Bundle, or twice
in one file, is used once, from its first copy in input order, and each later copy is a problem; a Bundle written
as one NDJSON line is unpacked, each entry indexed once whatever the number of workers."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest
from test_facts import AS_OF, Chart
from test_screen import CMM_EM, candidate
from test_screen_input import transaction

from fhir_adapter.eligibility.load import Inputs, line_key, load, load_share, partition
from fhir_adapter.eligibility.run import screen_files
from fhir_adapter.eligibility.trials import load_trials


def ndjson(resources: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in resources)


def bundle(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def verdicts(out) -> dict[str, str]:
    return {v["patient"]: v["verdict"] for v in json.loads((out / "screening.json").read_text())}


def problem_rows(out) -> list[list[str]]:
    with (out / "problems.csv").open(newline="") as stream:
        return list(csv.reader(stream))[1:]


def edss_of(chart: Chart) -> dict:
    return next(r for r in chart.resources if r.get("code") == Chart.code("edss"))


@pytest.mark.parametrize("workers", [1, 2])
def test_an_ndjson_export_and_a_bundle_of_the_same_data_count_once(tmp_path, workers):
    charts = [candidate("p1"), candidate("p2", edss=8.0)]
    resources = [r for chart in charts for r in chart.resources]
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "all.ndjson").write_text(ndjson(resources))
    (tmp_path / "b.json").write_text(json.dumps(bundle(resources)))
    result = screen_files([tmp_path / "export", tmp_path / "b.json"], [CMM_EM], tmp_path / "out", AS_OF,
                          workers=workers)
    assert verdicts(tmp_path / "out") == {"Patient/p1": "eligible", "Patient/p2": "ineligible"}
    assert result.read == 2 * len(resources) and result.used == len(resources)
    first = tmp_path / "export" / "all.ndjson"
    assert problem_rows(tmp_path / "out") == [
        [f"{tmp_path / 'b.json'}#entry[{i}]", f"{r['resourceType']}/{r['id']} again (first at {first}:{i + 1}): "
                                              "this copy not used"] for i, r in enumerate(resources)]
    index = load([tmp_path / "export", tmp_path / "b.json"])
    assert [e[2] for e in index.patients["p1"].edss] == [f"Observation/{edss_of(charts[0])['id']}"]
    assert len(index.patients["p1"].exposures) == 1 and len(index.patients["p1"].labs["hiv"]) == 1


def test_the_file_given_first_holds_the_first_copy(tmp_path):
    """Given the other way round, the Bundle's entries are the first copies and the NDJSON lines the later ones;
    a Patient is a resource like any other."""
    resources = candidate("p1").resources
    (tmp_path / "all.ndjson").write_text(ndjson(resources))
    (tmp_path / "b.json").write_text(json.dumps(bundle(resources)))
    index = load([tmp_path / "b.json", tmp_path / "all.ndjson"])
    assert [p.where for p in index.problems] == [f"{tmp_path / 'all.ndjson'}:{n}" for n in
                                                 range(1, len(resources) + 1)]
    assert str(index.problems[0]) == (f"{tmp_path / 'all.ndjson'}:1: Patient/p1 again (first at "
                                      f"{tmp_path / 'b.json'}#entry[0]): this copy not used")
    assert index.read == 2 * len(resources) and index.used == len(resources)


def test_a_relapse_recorded_twice_in_one_file_is_one_relapse(tmp_path):
    """Genova (NCT01854957) asks RRMS with a relapse in 12 months, or two in 24, or a Gd-enhancing lesion. The
    relapse 400 days ago comes again with another date (300 days ago): counted twice, the patient would have two
    relapses in 24 months and one in 12, and not be excluded; the first copy alone leaves neither."""
    (genova,) = load_trials(["NCT01854957"])
    chart = candidate("p1", mri=False)
    chart.mri(100, gd=0, t2=0)
    relapse = chart.relapse(400)
    again = dict(relapse, effectiveDateTime=chart.ago(300))
    (tmp_path / "Observation.ndjson").write_text(ndjson([*chart.resources, again, relapse]))
    screen_files([tmp_path / "Observation.ndjson"], [genova], tmp_path / "out", AS_OF, workers=1)
    (verdict,) = json.loads((tmp_path / "out" / "screening.json").read_text())
    results = {c["linkId"]: c["result"] for c in verdict["criteria"]}
    assert verdict["verdict"] == "ineligible"
    assert (results["inc-1.a.i"], results["inc-1.a.ii"], results["inc-1.a"]) == ("not-met", "not-met", "not-met")
    file, n = tmp_path / "Observation.ndjson", len(chart.resources)
    ref = f"Observation/{relapse['id']}"
    assert problem_rows(tmp_path / "out") == [
        [f"{file}:{n + 1}", f"{ref} again (first at {file}:{n}): differs from the first in effectiveDateTime; "
                            "first used"],
        [f"{file}:{n + 2}", f"{ref} again (first at {file}:{n}): this copy not used"]]


def test_a_later_copy_that_differs_is_not_used_and_says_in_what(tmp_path):
    chart = candidate("p1")
    edss = edss_of(chart)
    worse = {**edss, "valueQuantity": {**edss["valueQuantity"], "value": 8.0}, "meta": {"versionId": "2"}}
    patient = {**chart.resources[0], "gender": "female"}
    (tmp_path / "a.ndjson").write_text(ndjson(chart.resources))
    (tmp_path / "b.ndjson").write_text(ndjson([worse, patient]))
    result = screen_files([tmp_path / "a.ndjson", tmp_path / "b.ndjson"], [CMM_EM], tmp_path / "ab", AS_OF,
                          workers=1)
    assert verdicts(tmp_path / "ab") == {"Patient/p1": "eligible"}             # EDSS 4.0, a man: the first copies
    a = tmp_path / "a.ndjson"
    assert [str(p) for p in result.problems] == [
        f"{tmp_path / 'b.ndjson'}:1: Observation/{edss['id']} again (first at {a}:3): differs from the first in "
        "meta, valueQuantity; first used",
        f"{tmp_path / 'b.ndjson'}:2: Patient/p1 again (first at {a}:1): differs from the first in gender; first used"]
    screen_files([tmp_path / "b.ndjson", tmp_path / "a.ndjson"], [CMM_EM], tmp_path / "ba", AS_OF, workers=1)
    assert verdicts(tmp_path / "ba") == {"Patient/p1": "ineligible"}           # EDSS 8.0 first


def test_numbers_written_otherwise_are_not_a_difference(tmp_path):
    edss = edss_of(candidate("p1"))
    same = {**edss, "valueQuantity": {**edss["valueQuantity"], "value": int(edss["valueQuantity"]["value"])}}
    assert json.dumps(same) != json.dumps(edss)
    (tmp_path / "o.ndjson").write_text(ndjson([edss, same]))
    assert [p.message for p in load([tmp_path / "o.ndjson"]).problems] == [
        f"Observation/{edss['id']} again (first at {tmp_path / 'o.ndjson'}:1): this copy not used"]


def test_bundle_entries_without_an_id_are_not_copies_of_each_other(tmp_path):
    """Two relapses without id, 60 days apart (two relapses), and the same one twice: none is a copy of another
    (an id-less entry has no identity to compare), so all count and nothing is reported."""
    chart = candidate("p1")
    first, second = chart.relapse(100), chart.relapse(40)
    for relapse in (first, second):
        del relapse["id"]
    doc = bundle([*chart.resources, dict(first)])
    (tmp_path / "b.json").write_text(json.dumps(doc))
    index = load([tmp_path / "b.json"])
    assert index.problems == []
    assert len(index.patients["p1"].relapses) == 3 and index.used == index.read == len(chart.resources) + 1


@pytest.mark.parametrize("workers", [2, 3])
def test_copies_are_reported_the_same_for_any_number_of_workers(tmp_path, workers):
    """Many patients, copies within a file, across files and in a Bundle, a Medication twice: problems.csv and the
    screening are those of one worker."""
    charts = [candidate(f"p{n}", edss=3.0 + n % 8) for n in range(16)]
    medication = {"resourceType": "Medication", "id": "m1", "code": Chart.code("prednisone")}
    for chart in charts[:4]:
        chart._add("MedicationStatement", status="completed", medicationReference={"reference": "Medication/m1"},
                   effectivePeriod={"start": chart.ago(20), "end": chart.ago(10)})
    resources = [r for chart in charts for r in chart.resources]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.ndjson").write_text(ndjson([medication, *resources, *resources[::7]]))
    (tmp_path / "in" / "b.json").write_text(json.dumps(bundle([*resources[::3], medication])))
    (tmp_path / "in" / "c.ndjson.gz").write_bytes(gzip.compress(ndjson([dict(r, meta={"source": "c"})
                                                                         for r in resources[::5]]).encode()))
    runs = {w: screen_files([tmp_path / "in"], [CMM_EM], tmp_path / f"w{w}", AS_OF, workers=w) for w in (1, workers)}
    assert (runs[1].read, runs[1].used) == (runs[workers].read, runs[workers].used)
    assert runs[1].used == len(resources) + 1
    one, many = (tmp_path / "w1" / "problems.csv").read_text(), (tmp_path / f"w{workers}" / "problems.csv").read_text()
    assert one == many
    rows = problem_rows(tmp_path / "w1")
    assert len(rows) == len(resources[::7]) + len(resources[::3]) + 1 + len(resources[::5])
    assert [row for row in rows if row[1].startswith("Medication/m1")] == [
        [f"{tmp_path / 'in' / 'b.json'}#entry[{len(resources[::3])}]",
         f"Medication/m1 again (first at {tmp_path / 'in' / 'a.ndjson'}:1): this copy not used"]]
    assert sum("differs from the first in meta; first used" in row[1] for row in rows) == len(resources[::5])
    assert verdicts(tmp_path / "w1") == verdicts(tmp_path / f"w{workers}")
    assert list(verdicts(tmp_path / "w1").values()).count("ineligible") >= 4         # the steroid takers


def test_a_copy_handed_over_by_another_worker_is_first_when_it_comes_first(tmp_path):
    """The first copy's raw line names another patient first (a `focus`), so with two workers the worker that
    parses it hands it over only after its owner has indexed a later copy: the owner reads its share again, in
    input order, and uses the first copy, as one worker does."""
    chart = candidate("p1")
    edss = edss_of(chart)
    decoy = next(pid for pid in (f"x{n}" for n in range(100)) if partition(pid, 2) != partition("p1", 2))
    tricky = {"resourceType": "Observation", "id": edss["id"], "focus": [{"reference": f"Patient/{decoy}"}],
              **{k: v for k, v in edss.items() if k not in ("resourceType", "id")}}
    assert line_key(json.dumps(tricky).encode()) == decoy.encode()
    worse = {**edss, "valueQuantity": {**edss["valueQuantity"], "value": 8.0}}
    (tmp_path / "a.ndjson").write_text(ndjson([r for r in chart.resources if r is not edss] + [tricky]))
    (tmp_path / "b.ndjson").write_text(ndjson([worse]))
    paths = [tmp_path / "a.ndjson", tmp_path / "b.ndjson"]
    for workers in (1, 2):
        result = screen_files(paths, [CMM_EM], tmp_path / f"w{workers}", AS_OF, workers=workers)
        assert verdicts(tmp_path / f"w{workers}") == {"Patient/p1": "eligible"}, workers      # EDSS 4.0
        assert [str(p) for p in result.problems] == [
            f"{tmp_path / 'b.ndjson'}:1: Observation/{edss['id']} again (first at {tmp_path / 'a.ndjson'}:"
            f"{len(chart.resources)}): differs from the first in focus, valueQuantity; first used"], workers
        assert result.used == len(chart.resources)
    for workers in (1, 2):                  # the other way round the stray comes later: a later copy as any other
        result = screen_files(paths[::-1], [CMM_EM], tmp_path / f"r{workers}", AS_OF, workers=workers)
        assert verdicts(tmp_path / f"r{workers}") == {"Patient/p1": "ineligible"}, workers    # EDSS 8.0
        assert [p.where for p in result.problems] == [f"{tmp_path / 'a.ndjson'}:{len(chart.resources)}"], workers


def test_a_copy_on_stdin_is_named_there(tmp_path, monkeypatch):
    resources = candidate("p1").resources
    (tmp_path / "all.ndjson").write_text(ndjson(resources))
    stdin = io.StringIO()
    stdin.buffer = io.BytesIO(ndjson(resources[:2]).encode())           # type: ignore[attr-defined]
    monkeypatch.setattr("sys.stdin", stdin)
    index = load(["-", tmp_path / "all.ndjson"])
    assert [str(p) for p in index.problems] == [
        f"{tmp_path / 'all.ndjson'}:{n}: {r['resourceType']}/{r['id']} again (first at <stdin>:{n}): this copy not "
        "used" for n, r in enumerate(resources[:2], 1)]


def test_the_same_id_about_two_patients_is_each_ones_own(tmp_path):
    """Not a copy: each patient's first resource of that Type/id is used (the same for any number of workers,
    since each patient is one worker's)."""
    one, two = candidate("p1"), candidate("p2")
    edss_of(two)["id"] = edss_of(one)["id"]
    (tmp_path / "all.ndjson").write_text(ndjson(one.resources + two.resources))
    index = load([tmp_path / "all.ndjson"])
    assert index.problems == [] and len(index.patients["p1"].edss) == len(index.patients["p2"].edss) == 1


# ------------------------------------------------------------------------------------------ Bundle lines

@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_bundle_written_as_one_ndjson_line_is_unpacked(tmp_path, workers):
    """Its entries are indexed once each (every worker parses the line and keeps its own patients), at
    `file:line#entry[i]`, nested Bundles' and urn:uuid references too; its unusable entries are reported once."""
    charts = [candidate(f"p{n}", edss=3.0 + n) for n in range(6)]
    undated = {"resourceType": "Observation", "id": "e9", "subject": {"reference": "Patient/p0"},
               "code": Chart.code("edss"), "valueQuantity": {"value": 4}}
    inner = bundle(charts[5].resources + [undated])
    outer = bundle([r for chart in charts[1:5] for r in chart.resources])
    medication = {"resourceType": "Medication", "id": "m1", "code": Chart.code("prednisone")}
    outer["entry"] += [{"resource": medication}, {"resource": inner}, {"fullUrl": "urn:uuid:x"}]
    synthea = transaction(candidate("p6"), patient_id=False)
    lines = [*charts[0].resources[:1], outer, synthea, *charts[0].resources[1:]]
    (tmp_path / "mixed.ndjson").write_text(ndjson(lines))
    result = screen_files([tmp_path / "mixed.ndjson"], [CMM_EM], tmp_path / "out", AS_OF, workers=workers)
    expected = {f"Patient/p{n}": "eligible" if n < 4 else "ineligible" for n in range(6)}
    assert verdicts(tmp_path / "out") == {**expected, "Patient/p6-uuid": "eligible"}
    entries = sum(len(chart.resources) for chart in charts[1:6]) + 2 + len(synthea["entry"])
    assert result.read == len(charts[0].resources) + entries
    assert result.used == result.read - 1
    written = json.loads((tmp_path / "out" / "screening.json").read_text())
    assert len(written) == 7                                        # no patient screened twice
    f = tmp_path / "mixed.ndjson"
    n_outer = len(outer["entry"])
    assert problem_rows(tmp_path / "out") == [
        [f"{f}:2#entry[{n_outer - 2}].resource.entry[{len(charts[5].resources)}]",
         "edss Observation without an effective date"],
        [f"{f}:2#entry[{n_outer - 1}]", "Bundle entry without a resource: not read"]]
    p3 = next(v for v in written if v["patient"] == "Patient/p3")
    assert f"Observation/{edss_of(charts[3])['id']}" in json.dumps(p3)
    shares = [load_share(Inputs.of([f]), part, workers)[0] for part in range(workers)]
    assert sum(share.read for share in shares) == result.read                 # the Medication counted once
    told = [str(p) for share in shares for p in share.problems]
    assert len(told) == len(set(told)) == 2                                 # each problem by one worker


def test_a_bundle_line_copy_names_its_entry(tmp_path):
    chart = candidate("p1")
    (tmp_path / "a.ndjson").write_text(ndjson(chart.resources) + json.dumps(bundle(chart.resources[:2])) + "\n")
    index = load([tmp_path / "a.ndjson"])
    n = len(chart.resources)
    assert [str(p) for p in index.problems] == [
        f"{tmp_path / 'a.ndjson'}:{n + 1}#entry[{i}]: {r['resourceType']}/{r['id']} again (first at "
        f"{tmp_path / 'a.ndjson'}:{i + 1}): this copy not used" for i, r in enumerate(chart.resources[:2])]
