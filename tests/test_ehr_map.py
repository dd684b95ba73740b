"""`map_extract` and `fhir-adapter patients map`: golden patient, rejects end to end, streaming, workers, bundles."""

from __future__ import annotations

import csv
import datetime as dt
import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from fhir_adapter import render
from fhir_adapter.cli import main
from fhir_adapter.ehr import generate_cohort, load_column_map, map_extract, seen
from fhir_adapter.ehr.convert import RowConverter
from fhir_adapter.ehr.model import TABLES
from fhir_adapter.ehr.pipeline import blocks, read_header
from fhir_adapter.paths import EXAMPLES
from fhir_adapter.sources import InputError
from fhir_adapter.validation import structure_issues

GOLDEN = Path(__file__).parent / "golden" / "ehr"
TYPES = ("Patient", "Condition", "Observation", "MedicationStatement")


@pytest.fixture(scope="module")
def cohort_extract(tmp_path_factory) -> Path:
    return generate_cohort(300, 5, tmp_path_factory.mktemp("cohort"), reference_date=dt.date(2026, 6, 30))


def write_extract(directory: Path, tables: dict[str, str], encoding: str = "utf-8") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (directory / f"{name}.csv").write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return directory


def read_output(out: Path) -> list[dict]:
    return [json.loads(line) for t in TYPES for line in (out / f"{t}.ndjson").read_text(encoding="utf-8").splitlines()]


def read_rejects(out: Path) -> list[dict[str, str]]:
    with (out / "rejects.csv").open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


# --- the golden patient --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["R4", "R5"])
def test_golden_patient(tmp_path, version):
    summary = map_extract(GOLDEN / "patient", tmp_path, version, extracted_on="2024-12-31", workers=1)
    assert summary.rejected == 0
    resources = read_output(tmp_path)
    expected = json.loads((GOLDEN / f"patient.{version}.json").read_text(encoding="utf-8"))
    if os.environ.get("UPDATE_GOLDEN"):
        (GOLDEN / f"patient.{version}.json").write_text(json.dumps(resources, indent=2, ensure_ascii=False) + "\n")
    assert resources == expected
    # rule checks: valid, ids unique, every reference resolves, no empty elements, one identifier each
    assert all(structure_issues(r, version) == [] for r in resources)
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    assert len(set(keys)) == len(keys)
    assert all(r["subject"]["reference"] in keys for r in resources if "subject" in r)
    assert all(render.prune(r) == r for r in resources)
    assert all(len(r["identifier"]) == 1 and r["identifier"][0]["value"] for r in resources)
    assert summary.resources == {"Patient": 1, "Condition": 2, "Observation": 16, "MedicationStatement": 4}


def _facts(extract: Path, column_map: str) -> list:
    """Every fact of an extract, read with a column map (no FHIR)."""
    cmap = load_column_map(column_map)
    facts = []
    for table in TABLES:
        path = extract / cmap.table(table).file
        header = read_header(path, cmap)
        converter = RowConverter(table, cmap, header, "2024-12-31")
        with path.open(encoding=cmap.encoding, newline="") as stream:
            rows = list(csv.reader(stream, delimiter=cmap.delimiter))[1:]
        facts.extend(converter.convert(row) for row in rows)
    return facts


def test_a_new_hospital_is_a_column_map_not_code(tmp_path):
    """The other hospital's extract (Windows-1252, semicolons, German names, ICD-10-GM, ATC, mm3, /µl, decimal
    comma) holds the golden patient too: read with its column map, it gives the very same facts."""
    other = EXAMPLES / "ehr" / "other-hospital"
    golden = _facts(GOLDEN / "patient", "default")
    theirs = [f for f in _facts(other, "other-hospital") if f.mrn == "GOLD-1"]
    assert theirs == golden
    summary = map_extract(other, tmp_path, column_map="other-hospital", extracted_on="2024-12-31", workers=1)
    assert summary.rejected == 0 and summary.converted == summary.read == 32
    resources = read_output(tmp_path)
    assert all(structure_issues(r, "R4") == [] for r in resources)
    assert {r["identifier"][0]["system"] for r in resources if r["resourceType"] == "Patient"} == {
        "https://klinikum-nord.example/fhir/sid/patnr"}
    platelets = [r for r in resources if r["identifier"][0]["value"] == "KN-2-L2"][0]
    assert platelets["valueQuantity"]["value"] == 187.0 and platelets["valueQuantity"]["code"] == "10*9/L"


# --- bad rows, end to end ------------------------------------------------------------------------------

BAD = {
    "patients": "mrn,birth_date,sex\nP1,1980-01-01,F\n,1981-01-01,M\nP1,1982-01-01,M\nP2,1979-05-06,male\n",
    "edss": ("edss_id,mrn,date,score\n"
             "E1,P1,2024-01-01,3.5\n"
             "E2,P1,2024-02-01,11\n"
             "E3,P1,2024-03-01,3.3\n"
             "E4,P1,15/03/2024,4.0\n"
             "E5,P9,2024-04-01,4.0\n"
             "E1,P2,2024-05-01,2.0\n"
             "E6,P2,2030-01-01,2.0\n"),
    "medications": ("medication_id,mrn,drug,start_date,end_date,route\n"
                    "M1,P1,Tysabri,2020-01-01,2021-01-01,IV\n"
                    "M2,P1,Aspirin,2020-01-01,,oral\n"),
    "mri": "mri_id,mrn,date,gd_lesions,new_t2_lesions,t2_volume_ml\nI1,P2,2024-01-01,-1,0,\nI2,P2,2024-02-01,1,2,\n",
}


def test_bad_rows_are_reported_written_and_counted(tmp_path):
    extract = write_extract(tmp_path / "x", BAD)
    summary = map_extract(extract, tmp_path / "out", extracted_on="2025-01-01", workers=1)
    counts = {name: (c.read, c.converted, c.rejected) for name, c in summary.tables.items() if c.file}
    assert counts == {"patients": (4, 2, 2), "edss": (7, 1, 6), "medications": (2, 1, 1), "mri": (2, 1, 1)}
    assert all(c.read == c.converted + c.rejected for c in summary.tables.values())
    assert summary.tables["labs"].file is None and summary.tables["labs"].read == 0
    rejects = {(r["file"], r["line"]): r for r in read_rejects(tmp_path / "out")}
    expected = {
        ("patients.csv", "3"): ("mrn", "missing mrn", ",1981-01-01,M"),
        ("patients.csv", "4"): ("mrn", "duplicate MRN 'P1'", "P1,1982-01-01,M"),
        ("edss.csv", "3"): ("score", "EDSS 11 is not on the scale", "E2,P1,2024-02-01,11"),
        ("edss.csv", "4"): ("score", "EDSS 3.3 is not on the scale", "E3,P1,2024-03-01,3.3"),
        ("edss.csv", "5"): ("date", "'15/03/2024' is not a date", "E4,P1,15/03/2024,4.0"),
        ("edss.csv", "6"): ("mrn", "orphan row: no patient with MRN 'P9'", "E5,P9,2024-04-01,4.0"),
        ("edss.csv", "7"): ("edss_id", "duplicate row id 'E1'", "E1,P2,2024-05-01,2.0"),
        ("edss.csv", "8"): ("date", "2030-01-01 is in the future (after the extract date 2025-01-01)",
                            "E6,P2,2030-01-01,2.0"),
        ("medications.csv", "3"): ("drug", "unknown drug 'Aspirin'", "M2,P1,Aspirin,2020-01-01,,oral"),
        ("mri.csv", "2"): ("gd_lesions", "'-1' is negative", "I1,P2,2024-01-01,-1,0,"),
    }
    assert set(rejects) == set(expected)
    for key, (column, reason, original) in expected.items():
        assert rejects[key]["column"] == column, key
        assert reason in rejects[key]["reason"], key
        assert rejects[key]["row"] == original, key
    resources = read_output(tmp_path / "out")
    assert sorted(r["identifier"][0]["value"] for r in resources) == [
        "E1", "I2/gd-enhancing-lesion-count", "I2/new-or-enlarging-t2-lesion-count", "M1", "P1", "P2"]


def test_cli_exit_status_follows_rejects(tmp_path, capsys):
    extract = write_extract(tmp_path / "x", BAD)
    out = str(tmp_path / "out")
    assert main(["patients", "map", str(extract), "--out", out, "--extracted-on", "2025-01-01"]) == 1
    captured = capsys.readouterr()
    assert "edss.csv:3: column 'score': EDSS 11 is not on the scale" in captured.err
    assert "10 rows rejected: see" in captured.err
    assert "edss         edss.csv                   7         1         6" in captured.out
    assert main(["patients", "map", str(extract), "--out", out, "--extracted-on", "2025-01-01",
                 "--allow-rejects"]) == 0
    good = write_extract(tmp_path / "good", {"patients": "mrn,birth_date,sex\nP1,1980-01-01,F\n"})
    assert main(["patients", "map", str(good), "--out", out]) == 0
    assert main(["patients", "map", str(tmp_path / "missing"), "--out", out]) == 2
    assert main(["patients", "map", str(good), "--out", out, "--column-map", "nowhere"]) == 2
    assert "no column map named 'nowhere'" in capsys.readouterr().err


def test_cli_counts_one_bundle_and_one_reject_in_the_singular(tmp_path, capsys):
    extract = write_extract(tmp_path / "x", {"patients": "mrn,birth_date,sex\nP1,1980-01-01,F\n,1981-01-01,M\n"})
    out = str(tmp_path / "out")
    assert main(["patients", "map", str(extract), "--out", out, "--bundles", "200", "--allow-rejects"]) == 0
    captured = capsys.readouterr()
    assert "bundles: 1 transaction bundle in " in captured.out
    assert "\n1 row rejected: see " in captured.err
    write_extract(extract, {"patients": "mrn,birth_date,sex\nP1,1980-01-01,F\nP2,1981-01-01,M\n"})
    assert main(["patients", "map", str(extract), "--out", out, "--bundles", "1"]) == 0
    assert "bundles: 2 transaction bundles in " in capsys.readouterr().out


def test_wrong_encoding_rejects_the_row_and_names_the_column(tmp_path):
    extract = write_extract(tmp_path / "x", {
        "patients": "mrn,birth_date,sex\nP1,1980-01-01,F\n",
        "relapses": b"relapse_id,mrn,onset_date,severity\nR1,P1,2024-01-01,mild\nR2,P1,2024-02-01,s\xe9v\xe8re\n",
    })
    summary = map_extract(extract, tmp_path / "out", workers=1)
    assert (summary.tables["relapses"].converted, summary.tables["relapses"].rejected) == (1, 1)
    reject = read_rejects(tmp_path / "out")[0]
    assert (reject["line"], reject["column"]) == ("3", "severity")
    assert reject["reason"].startswith("not utf-8 text (byte 0xe9)")
    assert reject["row"] == "R2,P1,2024-02-01,s\\xe9v\\xe8re"


def test_csv_details_quoted_newlines_blank_lines_bom_nul(tmp_path):
    extract = write_extract(tmp_path / "x", {
        "patients": "\ufeffmrn,birth_date,sex\r\nP1,1980-01-01,F\r\n\r\nP2,1990-01-01,M\r\n",
        "labs": ('lab_id,mrn,date,test,value,unit\n'
                 'L1,P1,2024-01-01,"HIV\n1/2",negative,\n'        # one row on lines 2-3
                 'L2,P1,2024-01-01,egfr,80,mL/min/1.73m2\n'
                 'L3,P2,2024-01-01,egfr,8\x000,mL/min/1.73m2\n'
                 'L4,P2,2024-01-01,ferritin,80,ug/L\n'),
    })
    summary = map_extract(extract, tmp_path / "out", workers=1)
    assert (summary.tables["patients"].read, summary.tables["patients"].converted) == (2, 2)  # blank line: no row
    assert (summary.tables["labs"].read, summary.tables["labs"].rejected) == (4, 2)
    rejects = read_rejects(tmp_path / "out")
    assert [(r["line"], r["column"]) for r in rejects] == [("5", "value"), ("6", "test")]
    assert rejects[0]["row"] == "L3,P2,2024-01-01,egfr,8\x000,mL/min/1.73m2"
    hiv = [r for r in read_output(tmp_path / "out") if r["identifier"][0]["value"] == "L1"][0]
    assert hiv["code"]["coding"][0]["code"] == "56888-1"


def test_blocks_cut_only_between_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('h\n"a\nb"\nc\n"d\ne\nf"\ng\n', encoding="utf-8")
    assert list(blocks(path, size=1)) == [(2, b'"a\nb"\n'), (4, b"c\n"), (5, b'"d\ne\nf"\n'), (8, b"g\n")]
    assert list(blocks(path, size=4)) == [(2, b'"a\nb"\nc\n'), (5, b'"d\ne\nf"\n'), (8, b"g\n")]
    assert list(blocks(path, size=1000)) == [(2, b'"a\nb"\nc\n"d\ne\nf"\ng\n')]
    path.write_text('h\na\n"b\nc', encoding="utf-8")       # no final line end, a quote left open
    assert list(blocks(path, size=3)) == [(2, b"a\n"), (3, b'"b\nc')]


def test_missing_patients_table_and_missing_column_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no patients table"):
        map_extract(write_extract(tmp_path / "a", {"edss": "edss_id,mrn,date,score\n"}), tmp_path / "o")
    extract = write_extract(tmp_path / "b", {"patients": "mrn,sex\nP1,F\n"})
    with pytest.raises(ValueError, match="no column 'birth_date'"):
        map_extract(extract, tmp_path / "o")
    assert not (tmp_path / "o" / "Patient.ndjson").exists()   # nothing written before the check


# --- workers, bundles, outputs ------------------------------------------------------------------------

def test_two_workers_write_the_same_as_one(tmp_path, cohort_extract):
    one = map_extract(cohort_extract, tmp_path / "one", workers=1)
    two = map_extract(cohort_extract, tmp_path / "two", workers=2)
    assert two.workers == 2 and one.resources == two.resources and one.resource_count > 1000
    for t in TYPES:
        assert (tmp_path / "one" / f"{t}.ndjson").read_bytes() == (tmp_path / "two" / f"{t}.ndjson").read_bytes()


def test_workers_drop_duplicates_and_orphans_and_write_bundles_as_one_does(tmp_path, cohort_extract):
    """On a pool, blocks come back through spool files: rows refused by the main process (a duplicate row
    id, an orphan MRN) are cut out of them, bundles read them, and the spool is removed."""
    extract = tmp_path / "extract"
    shutil.copytree(cohort_extract, extract)
    edss = (extract / "edss.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = edss[0], edss[1:]
    orphan = rows[5].split(",", 2)
    orphan[1] = "NOBODY"
    (extract / "edss.csv").write_text(header + "".join(rows) + rows[3] + ",".join(orphan), encoding="utf-8")
    one = map_extract(extract, tmp_path / "one", workers=1, bundle_size=500)
    two = map_extract(extract, tmp_path / "two", workers=2, bundle_size=500)
    assert two.workers == 2 and one.tables["edss"].rejected == two.tables["edss"].rejected == 2
    assert one.resources == two.resources
    for t in TYPES:
        assert (tmp_path / "one" / f"{t}.ndjson").read_bytes() == (tmp_path / "two" / f"{t}.ndjson").read_bytes()
    assert [Path(b).read_bytes() for b in one.bundles] == [Path(b).read_bytes() for b in two.bundles]
    assert not list((tmp_path / "two").glob(".spool-*"))


@pytest.mark.parametrize("kernel", ["refuses", "lacks"])
def test_spooled_blocks_are_copied_where_the_kernel_cannot(tmp_path, cohort_extract, monkeypatch, kernel):
    """copy_file_range failing (another file system) or missing (macOS, Windows): read and written instead."""
    one = map_extract(cohort_extract, tmp_path / "one", workers=1)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    if kernel == "refuses":
        monkeypatch.setattr(os, "copy_file_range", refuse)
    else:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    two = map_extract(cohort_extract, tmp_path / "two", workers=2)
    assert two.workers == 2 and one.resources == two.resources and bool(calls) == (kernel == "refuses")
    for t in TYPES:
        assert (tmp_path / "one" / f"{t}.ndjson").read_bytes() == (tmp_path / "two" / f"{t}.ndjson").read_bytes()


def test_no_validate_writes_the_same_resources(tmp_path, cohort_extract):
    checked = map_extract(cohort_extract, tmp_path / "a", workers=1)
    unchecked = map_extract(cohort_extract, tmp_path / "b", workers=1, validate=False)
    assert checked.validated and not unchecked.validated
    assert read_output(tmp_path / "a") == read_output(tmp_path / "b")


def test_bundles_put_every_resource_patients_first(tmp_path, cohort_extract):
    summary = map_extract(cohort_extract, tmp_path, bundle_size=250, workers=1)
    entries = [e for path in summary.bundles for e in json.loads(Path(path).read_text())["entry"]]
    assert len(summary.bundles) == -(-summary.resource_count // 250)
    assert len(entries) == summary.resource_count
    assert all(e["request"] == {"method": "PUT", "url": f"{e['resource']['resourceType']}/{e['resource']['id']}"}
               for e in entries)
    types = [e["resource"]["resourceType"] for e in entries]
    assert types[:summary.resources["Patient"]] == ["Patient"] * summary.resources["Patient"]


def test_r5_output_validates(tmp_path, cohort_extract):
    summary = map_extract(cohort_extract, tmp_path, "R5", workers=1)
    assert summary.rejected == 0
    statements = [json.loads(line) for line in (tmp_path / "MedicationStatement.ndjson").read_text().splitlines()]
    assert statements and all(s["status"] == "recorded" and "concept" in s["medication"] for s in statements)
    assert all(structure_issues(r, "R5") == [] for r in read_output(tmp_path)[::7])


def test_stale_outputs_are_replaced_and_summary_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "MedicationStatement.ndjson").write_text("stale\n")
    extract = write_extract(tmp_path / "x", {"patients": "mrn,birth_date,sex\nP1,1980-01-01,F\n"})
    map_extract(extract, out, workers=1)
    assert (out / "MedicationStatement.ndjson").read_text() == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tables"]["patients"] == {"file": "patients.csv", "read": 1, "converted": 1, "rejected": 0}
    assert summary["resources"]["Patient"] == 1 and summary["rejected"] == 0


def test_a_second_mapping_into_the_same_directory_stops_and_leaves_the_first_alone(tmp_path, capsys):
    """While one run writes into `out`, another one there stops before truncating its files (exit 2); a lock file
    left by a killed run stops nobody; a screening run is kept out of a directory being mapped into, too."""
    from fhir_adapter.outdir import LOCK, OutputInUse, exclusive
    extract = write_extract(tmp_path / "x", {"patients": "mrn,birth_date,sex\nP1,1980-01-01,F\n"})
    out = tmp_path / "out"
    out.mkdir()
    first = '{"resourceType": "Patient", "id": "first-run"}\n'
    with exclusive(out, "writing mapped resources"):
        (out / "Patient.ndjson").write_text(first)
        with pytest.raises(OutputInUse, match="another run is writing mapped resources there"):
            map_extract(extract, out, workers=1)
        assert main(["patients", "map", str(extract), "--out", str(out)]) == 2
        assert "out: another run is writing mapped resources there" in capsys.readouterr().err
        assert main(["screen", "--input", str(out), "--as-of", "2025-06-01", "--out", str(out)]) == 2
        assert "out: another run is writing mapped resources there" in capsys.readouterr().err
        assert (out / "Patient.ndjson").read_text() == first
    assert not (out / LOCK).exists()
    (out / LOCK).write_text("")                                         # left by a killed run
    assert map_extract(extract, out, workers=1).resources["Patient"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{t}.ndjson" for t in ("Condition", "MedicationStatement", "Observation", "Patient")]
        + ["rejects.csv", "summary.json"])


def test_shipped_example_maps_to_the_shipped_fhir(tmp_path):
    example = EXAMPLES / "ehr"
    summary = map_extract(example / "cohort", tmp_path, extracted_on="2026-10-01", workers=1)
    assert summary.rejected == 0
    for t in TYPES:
        assert (tmp_path / f"{t}.ndjson").read_text() == (example / "cohort-fhir" / f"{t}.ndjson").read_text(), t


# --- codes ---------------------------------------------------------------------------------------------

#: Every code `patients map` may write, each checked against ../shared/terminology.md (verified rows) or, for
#: HL7 FHIR's own code systems, the R4/R5 specification. LOINC 7942-6 (HTLV) is the one row terminology.md
#: marks unverified; RxNorm only where the ingredient is verified there. Qualitative results and relapse
#: severities are written as text: their SNOMED qualifier codes are not in terminology.md.
EMITTED = {
    "http://snomed.info/sct": {"24700007", "426373005", "425500002", "428700003", "192929006", "273554001",
                               "363346000", "109995007", "42399005", "64779008", "370143000", "42345000",
                               "66590003", "191816009", "77386006", "60001007", "47625008", "34206005",
                               "78421000", "26643006", "72607000"},
    "http://hl7.org/fhir/sid/icd-10": {"G35"},
    "http://hl7.org/fhir/sid/icd-10-cm": {"C80.1", "D46.9", "N19", "F32.9", "F10.20", "F19.20"},
    "http://loinc.org": {"98979-8", "777-3", "6690-2", "56888-1", "5196-1", "13955-0", "20507-0", "7942-6",
                         "2106-3", "100756-6", "82810-3", "63895-7"},
    "http://www.nlm.nih.gov/research/umls/rxnorm": {"1876366", "121191", "712566", "6902", "8640"},
    "http://www.whocc.no/atc": {"L03AB07", "L03AB08", "L03AX13", "L04AG03", "L04AE01", "L01DB07", "L04AX07",
                                "L04AK02", "L04AE03", "L04AA40", "L04AG08", "L01FA01", "L04AG06", "N07XX07",
                                "L04AG12", "H02AB04", "H02AB07"},
    "https://w3id.org/fhir-adapter/CodeSystem/ms": {
        "gd-enhancing-lesion-count", "new-or-enlarging-t2-lesion-count", "t2-lesion-volume", "kfss-visual",
        "kfss-brainstem", "kfss-pyramidal", "kfss-cerebellar", "kfss-sensory", "kfss-bowel-bladder", "kfss-cerebral"},
    "http://unitsofmeasure.org": {"{score}", "mL", "mL/min/{1.73_m2}", "10*9/L"},
    "http://terminology.hl7.org/CodeSystem/observation-category": {"exam", "imaging", "laboratory", "social-history"},
    "http://terminology.hl7.org/CodeSystem/condition-category": {"problem-list-item"},
    "http://terminology.hl7.org/CodeSystem/condition-clinical": {"active", "remission", "resolved", "inactive"},
    "http://terminology.hl7.org/CodeSystem/condition-ver-status": {"confirmed"},
    "http://terminology.hl7.org/CodeSystem/v2-0203": {"MR"},
}


def _codes(value, found: set) -> set:
    if isinstance(value, dict):
        if "system" in value and "code" in value:
            found.add((value["system"], value["code"]))
        for item in value.values():
            _codes(item, found)
    elif isinstance(value, list):
        for item in value:
            _codes(item, found)
    return found


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_only_reviewed_codes_are_written(tmp_path, cohort_extract, version):
    map_extract(cohort_extract, tmp_path, version, workers=1, validate=False, extracted_on="2026-06-30")
    found = _codes(read_output(tmp_path), set())
    unreviewed = {(s, c) for s, c in found if c not in EMITTED.get(s, ())}
    assert not unreviewed
    assert {s for s, _ in found} == set(EMITTED)           # every system shows up in a 300-patient cohort
    results = [r for r in read_output(tmp_path) if r["resourceType"] == "Observation" and "valueCodeableConcept" in r
               and r["code"]["coding"][0]["code"] in ("56888-1", "192929006")]
    assert results and all(set(r["valueCodeableConcept"]) == {"text"} for r in results)  # no code asserted


@pytest.mark.parametrize("workers", [1, 2])
def test_last_line_without_newline_and_lone_carriage_returns(tmp_path, workers):
    """Blocks travel to workers as one bytes object and are cut into lines again, only at line feeds."""
    extract = write_extract(tmp_path / "x", {
        "patients": "mrn,birth_date,sex\r\nP1,1980-01-01,F\r\nP2,1981-02-03,M",
        "relapses": 'relapse_id,mrn,onset_date,severity\nR1,P1,2024-01-01,"mild"\nR2,P2,2024-02-01,bad\rvalue\n',
    })
    summary = map_extract(extract, tmp_path / "out", workers=workers, extracted_on="2025-01-01")
    assert (summary.tables["patients"].read, summary.tables["patients"].converted) == (2, 2)
    assert (summary.tables["relapses"].read, summary.tables["relapses"].rejected) == (2, 1)
    reject = read_rejects(tmp_path / "out")[0]
    assert (reject["line"], reject["row"]) == ("3", "R2,P2,2024-02-01,bad\rvalue")


def test_duplicates_and_orphans_are_found_among_keys_moved_to_disk(tmp_path, monkeypatch):
    """The MRNs and row ids seen are kept in bounded memory; older ones move to disk and still count."""
    extract = write_extract(tmp_path / "x", BAD)
    in_memory = map_extract(extract, tmp_path / "a", extracted_on="2025-01-01", workers=1)
    monkeypatch.setattr(seen, "LIMIT", 1)   # every key goes to disk at once
    spilled = map_extract(extract, tmp_path / "b", extracted_on="2025-01-01", workers=1)
    assert spilled.tables == in_memory.tables and spilled.rejected == 10
    assert (tmp_path / "b" / "rejects.csv").read_text() == (tmp_path / "a" / "rejects.csv").read_text()
    for t in TYPES:
        assert (tmp_path / "b" / f"{t}.ndjson").read_text() == (tmp_path / "a" / f"{t}.ndjson").read_text()
    keys = seen.SeenKeys(limit=3)
    for n in range(10):
        keys.add(f"k{n}")
    assert keys.known(["k0", "k5", "k9", "x"]) == {"k0", "k5", "k9"} and len(keys) == 10
    directory = keys._dir
    keys.close()
    assert directory is not None and not directory.exists()


def test_keys_on_disk_are_all_found_and_absent_ones_never():
    """The hash bitmap in front of the disk only spares queries: it never hides a stored key."""
    keys = seen.SeenKeys(limit=1000)
    stored = [f"row-{n}" for n in range(30_000)]
    for start in range(0, len(stored), 700):
        keys.update(stored[start:start + 700])
    absent = [f"other-{n}" for n in range(30_000)]
    assert keys.known(stored) == set(stored) and keys.known(absent) == set() and len(keys) == 30_000
    keys.close()
