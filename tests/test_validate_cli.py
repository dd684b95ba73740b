"""`fhir-adapter validate` on the command line: formats, exit status, inputs."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest

from fhir_adapter.bundle import transaction
from fhir_adapter.cli import main
from fhir_adapter.paths import EXAMPLES

COHORT = EXAMPLES / "ehr" / "cohort-fhir"
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}


def patient(pid: str, **extra):
    return {"resourceType": "Patient", "id": pid, "text": NARRATIVE, **extra}


@pytest.fixture
def mixed(tmp_path):
    """An NDJSON file with a valid Patient, a Patient with a bad gender, and a valid one again."""
    path = tmp_path / "patients.ndjson"
    path.write_text("\n".join(json.dumps(p) for p in [patient("a"), patient("b", gender="f"), patient("c")]) + "\n")
    return path


def test_text_valid_exit_0(capsys):
    assert main(["validate", str(COHORT)]) == 0
    out = capsys.readouterr().out
    assert "error" not in out.split("\n")[-2].split(":")[0]
    assert ": 0 error(s), 0 warning(s)" in out and "valid" in out


def test_text_errors_exit_1_with_source_and_location(mixed, capsys):
    assert main(["validate", str(mixed)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"{mixed}:2: error: Patient.gender: code 'f' is not in the required value set "
                        "http://hl7.org/fhir/ValueSet/administrative-gender [binding]")
    assert lines[1].startswith("3 resource(s) (R4): 1 error(s), 0 warning(s)") and lines[1].endswith("FAILED")


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "--format", "yaml", str(COHORT)])
    assert exit_.value.code == 2
    assert main(["validate", "--workers", "0", str(COHORT)]) == 2
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""      # no report of 0 resources beside the error
    assert captured.err == f"fhir-adapter validate: error: no resources in {tmp_path / 'empty'} (files: *.json, " \
                           "*.ndjson, or - for stdin)\n"
    assert main(["validate", "--format", "json", "-o", str(tmp_path / "r.json"), str(tmp_path / "empty")]) == 2
    assert not (tmp_path / "r.json").exists()


def test_help_says_fhir_version_is_the_inputs(capsys):
    for verb in ("validate", "push"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--fhir-version {R4,R5} FHIR version of the input" in text and "version to write" not in text, verb


def test_fail_on_warning(tmp_path, capsys):
    bundle = transaction([patient("p1")])
    bundle["entry"][0]["fullUrl"] = "urn:uuid:other"   # a warning: fullUrl and id differ
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    assert main(["validate", str(path)]) == 0
    assert "warning: Bundle.entry[0].fullUrl" in capsys.readouterr().out
    assert main(["validate", "--fail-on", "warning", str(path)]) == 1


def test_bundle_entries_name_their_line(tmp_path, capsys):
    bundle = transaction([patient("p1"), patient("p2", gender="f")])
    path = tmp_path / "bundle.json"
    text = json.dumps(bundle, indent=2)
    path.write_text(text)
    line = text[:text.index('"urn:uuid:p2"')].count("\n") + 1
    assert main(["validate", str(path)]) == 1
    assert f"{path}:{line}#entry[1]: error: Bundle.entry[1].resource.Patient.gender" in capsys.readouterr().out


def test_bundle_level_findings_name_their_entry_and_line(tmp_path, capsys):
    """fullUrl, request and reference findings carry the line of their entry's fullUrl, like the resource's
    own findings, and belong to that entry's resource (JSON `resource`)."""
    observation = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "Patient/9"}, "effectiveDateTime": "2024-01-01", "text": NARRATIVE}
    bundle = transaction([patient("p1"), patient("p2"), observation])
    bundle["entry"][0]["fullUrl"] = "http://example.org/fhir/Patient/p7"
    bundle["entry"][1]["request"]["url"] = "Patient/p3"
    bundle["entry"].append({"fullUrl": "urn:uuid:gone", "request": {"method": "DELETE"}})
    path = tmp_path / "bundle.json"
    text = json.dumps(bundle, indent=2)
    path.write_text(text)
    line = {i: text[:text.index(json.dumps(e["fullUrl"]))].count("\n") + 1 for i, e in enumerate(bundle["entry"])}
    assert len(set(line.values())) == 4 and min(line.values()) > 1
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    for i, rule in ((0, "bundle-fullurl"), (1, "bundle-request"), (2, "bundle-reference"), (3, "bundle-request")):
        found = [o for o in out if o.endswith(f"[{rule}]") and f"Bundle.entry[{i}]" in o]
        assert found and all(o.startswith(f"{path}:{line[i]}#entry[{i}]: error: Bundle.entry[{i}]") for o in found), \
            (i, rule, found)
    assert (f"{path}:{line[2]}#entry[2]: error: Bundle.entry[2].resource.Observation.subject.reference: Patient/9 "
            "does not resolve inside the bundle [bundle-reference]") in out
    assert main(["validate", "--format", "json", str(path)]) == 1
    issues = json.loads(capsys.readouterr().out)["issues"]
    assert {(i["resource"], i["rule"]) for i in issues if i["rule"].startswith("bundle-")} == {
        ("Patient/p1", "bundle-fullurl"), ("Patient/p2", "bundle-request"), ("Observation/o1", "bundle-reference"),
        ("Bundle", "bundle-request")}


def test_json_format(mixed, capsys):
    assert main(["validate", "--format", "json", str(mixed)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and report["resources"] == 3
    assert report["counts"] == {"error": 1, "warning": 0, "information": 0}
    (issue,) = report["issues"]
    assert issue == {"resource": "Patient/b", "source": f"{mixed}:2", "severity": "error",
                     "location": "Patient.gender", "rule": "binding",
                     "message": "code 'f' is not in the required value set "
                                "http://hl7.org/fhir/ValueSet/administrative-gender"}
    # txt-1/txt-2 (xhtml checks) cannot be evaluated by fhirpathpy: counted, with the reason
    assert report["skipped_invariants"]["txt-1"]["elements"] == 3
    assert "htmlChecks()" in report["skipped_invariants"]["txt-1"]["reason"]


def test_text_notes_skipped_invariants(mixed, capsys):
    main(["validate", str(mixed)])
    out = capsys.readouterr().out
    assert "2 invariant(s) not evaluated" in out and "txt-1: 3 element(s) not checked" in out


def test_junit_one_testcase_per_resource(mixed, tmp_path):
    report = tmp_path / "report.xml"
    assert main(["validate", "--format", "junit", "-o", str(report), str(mixed)]) == 1
    suite = ET.parse(report).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and len(cases) == 3
    failing = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failing] == [f"Patient/b ({mixed}:2)"]
    assert "Patient.gender" in failing[0].find("failure").text
    assert "txt-1" in suite.find("properties/property").get("value")
    assert {c.get("classname") for c in cases} == {str(mixed)}                # one class per file


def test_junit_groups_a_bundles_entries_under_its_file(tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(transaction([patient("p1"), patient("p2", gender="f")]), indent=2))
    report = tmp_path / "report.xml"
    assert main(["validate", "--format", "junit", "-o", str(report), str(path)]) == 1
    cases = ET.parse(report).getroot().find("testsuite").findall("testcase")
    assert len(cases) == 3 and {c.get("classname") for c in cases} == {str(path)}, [c.get("classname") for c in cases]


def test_junit_escapes_text(tmp_path):
    path = tmp_path / "x.ndjson"
    path.write_text(json.dumps(patient("<b>&", gender="<script>")) + "\n")
    report = tmp_path / "report.xml"
    assert main(["validate", "--format", "junit", "-o", str(report), str(path)]) == 1
    case = ET.parse(report).getroot().find("testsuite/testcase")   # parses: every text escaped
    assert case.get("name").startswith("Patient/<b>&") and "<script>" in case.find("failure").text


def test_stdin_ndjson_and_bundle(monkeypatch, capsys):
    lines = "\n".join(json.dumps(p) for p in [patient("a"), patient("b", gender="f")])
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["validate", "-"]) == 1
    assert "<stdin>:2: error: Patient.gender" in capsys.readouterr().out
    bundle = transaction([patient("a"), {"resourceType": "Observation", "id": "o", "status": "final",
                                         "code": {"text": "x"}, "subject": {"reference": "Patient/zz"},
                                         "effectiveDateTime": "2024-01-01", "text": NARRATIVE}])
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(bundle)))
    assert main(["validate", "-"]) == 1
    out = capsys.readouterr().out
    assert ("<stdin>#entry[1]: error: Bundle.entry[1].resource.Observation.subject.reference: Patient/zz does not "
            "resolve "
            "inside the bundle [bundle-reference]") in out
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(bundle)))
    assert main(["validate", "--allow-external", "-"]) == 0


def test_malformed_json_is_an_error_with_line_and_column(tmp_path, capsys):
    path = tmp_path / "bad.ndjson"
    path.write_text(json.dumps(patient("a")) + "\n" + '{"resourceType": "Patient" "id": "b"}\n')
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2:28: error: (line): malformed JSON at line 2, column 28: Expecting ',' delimiter [json]" in out


def test_r5_flag(tmp_path, capsys):
    r5_only = {"resourceType": "MedicationStatement", "id": "m", "status": "recorded", "text": NARRATIVE,
               "subject": {"reference": "Patient/p"}, "medication": {"concept": {"text": "natalizumab"}}}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(r5_only))
    assert main(["validate", "--fhir-version", "R5", str(path)]) == 0
    assert main(["validate", str(path)]) == 1


def test_best_practice_counted_by_default_reported_on_request(tmp_path, capsys):
    path = tmp_path / "bare.json"
    path.write_text(json.dumps({"resourceType": "Patient", "id": "bare"}))   # no narrative: dom-6
    assert main(["validate", "--fail-on", "warning", str(path)]) == 0
    assert "best practice not followed: dom-6 x1" in capsys.readouterr().out
    assert main(["validate", "--best-practice", "warning", "--fail-on", "warning", str(path)]) == 1
    assert "warning: Patient: A resource should have narrative" in capsys.readouterr().out
    main(["validate", "--format", "json", str(path)])
    assert json.loads(capsys.readouterr().out)["best_practice_not_followed"] == {"dom-6": 1}


def test_a_run_summary_beside_the_resources_is_noted_not_judged(tmp_path, capsys):
    out = tmp_path / "patients"
    assert main(["patients", "map", str(EXAMPLES / "ehr" / "cohort"), "--out", str(out), "--no-validate",
                 "--allow-rejects", "--extracted-on", "2026-01-01"]) == 0
    assert (out / "summary.json").exists()
    capsys.readouterr()
    assert main(["validate", "--fail-on", "warning", str(out)]) == 0
    assert f"{out / 'summary.json'}: information: (file): not a FHIR resource" in capsys.readouterr().out
    assert main(["validate", str(out / "summary.json")]) == 1   # named explicitly: an error


def test_a_line_that_is_not_utf8_is_reported_and_the_others_checked(tmp_path, capsys):
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(json.dumps(patient("a")).encode() + b"\n" + b'{"resourceType": "Patient", "id": "\xff"}\n'
                     + json.dumps(patient("c", gender="f")).encode() + b"\n")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: error: (line): not UTF-8 text at line 2, byte 36" in out
    assert f"{path}:3: error: Patient.gender" in out and "3 resource(s)" in out


def test_ndjson_chunks_keep_line_numbers(tmp_path, monkeypatch, capsys):
    from fhir_adapter.validation import validator

    monkeypatch.setattr(validator, "CHUNK_BYTES", 300)   # several chunks, lines cut across blocks
    path = tmp_path / "many.ndjson"
    rows = [patient(f"p{i}", gender="f" if i in (7, 23) else "male") for i in range(30)]
    path.write_text("\n".join(json.dumps(r) for r in rows))                 # no final newline
    assert main(["validate", "--workers", "2", str(path)]) == 1
    out = capsys.readouterr().out
    assert [line.split(": ")[0] for line in out.splitlines() if ": error: " in line] == [f"{path}:8", f"{path}:24"]
    assert "30 resource(s)" in out


def test_validate_reads_what_screen_reads_jsonl_gzip_and_a_byte_order_mark(tmp_path, capsys):
    """.jsonl, gzipped files and a leading byte order mark, in a directory too, as bulk exports and EHRs write
    them; the names keep their lines; a damaged gzip file is an error naming it. They used to be left out of a
    directory without a word, or fail as malformed JSON."""
    import gzip
    folder = tmp_path / "export"
    folder.mkdir()
    bom = b"\xef\xbb\xbf"
    (folder / "Patient.JSONL").write_bytes(bom + json.dumps(patient("a")).encode() + b"\n"
                                           + json.dumps(patient("b", gender="f")).encode() + b"\n")
    (folder / "more.ndjson.gz").write_bytes(gzip.compress(json.dumps(patient("c", gender="x")).encode() + b"\n"))
    text = json.dumps(transaction([patient("d"), patient("e", gender="y")]), indent=2)
    (folder / "bundle.json.gz").write_bytes(gzip.compress(bom + text.encode()))
    assert main(["validate", str(folder)]) == 1
    out = capsys.readouterr().out
    line = text[:text.index('"urn:uuid:e"')].count("\n") + 1
    assert f"{folder / 'Patient.JSONL'}:2: error: Patient.gender" in out
    assert f"{folder / 'more.ndjson.gz'}:1: error: Patient.gender" in out
    assert f"{folder / 'bundle.json.gz'}:{line}#entry[1]: error: Bundle.entry[1].resource.Patient.gender" in out
    assert "6 resource(s) (R4): 3 error(s)" in out, out
    for broken in ("broken.ndjson.gz", "broken.json.gz"):
        (folder / broken).write_bytes(gzip.compress(b'{"resourceType": "Patient"}\n')[:-6])
        assert main(["validate", str(folder / broken)]) == 2
        assert f"{broken}: not a readable gzip file" in capsys.readouterr().err
