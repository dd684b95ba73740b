"""The shared foundation: ids, rendering, terminology, bundles, file reading."""

from __future__ import annotations

import io
import json
import uuid

import pytest

from fhir_adapter import bundle, ids, render, sources, terminology


def test_ids_are_deterministic_and_distinguish_each_part():
    a = ids.resource_id("Patient", "urn:mrn", "1")
    assert a == ids.resource_id("Patient", "urn:mrn", "1")
    assert uuid.UUID(a).version == 5
    others = {ids.resource_id("Observation", "urn:mrn", "1"), ids.resource_id("Patient", "urn:x", "1"),
              ids.resource_id("Patient", "urn:mrn", "2")}
    assert a not in others and len(others) == 3


def test_ids_are_the_uuid5_of_type_system_and_value():
    """What `uuid.uuid5` gives, version and variant bits included, for values hitting every hex digit."""
    for n in range(2000):
        parts = ("Observation", f"https://example.org/rows/{n % 7}", f"row-{n}-\u00e9")
        assert ids.resource_id(*parts) == str(uuid.uuid5(ids.NAMESPACE, "|".join(parts)))


def test_ids_refuse_missing_parts():
    with pytest.raises(ValueError, match="needs a type, a system and a value"):
        ids.resource_id("Patient", "urn:mrn", "")


def test_prune_drops_only_empty_elements():
    assert render.prune({"a": [None, {"b": ""}], "c": 0, "d": False, "e": {"f": []}, "g": "x"}) == {
        "c": 0, "d": False, "g": "x"}


def test_json_filter_escapes_text_and_renders_dates():
    import datetime as dt
    text = 'He said "stop"\n\\ <b>'
    assert json.loads(render.to_json(text)) == text
    assert render.to_json(dt.date(2024, 2, 29)) == '"2024-02-29"'
    with pytest.raises(TypeError, match="cannot render"):
        render.to_json(object())


def test_unsupported_fhir_version_is_named():
    with pytest.raises(ValueError, match="unsupported FHIR version 'R3'"):
        render.check_version("R3")


def test_terminology_valuesets_name_known_concepts_and_codes_resolve():
    data = terminology.load()
    for name, members in data.valuesets.items():
        assert members, name
    # every code emitted for a concept indexes back to a concept that recognises it
    for concept in data.concepts.values():
        for coding in concept.codings:
            found = terminology.concept_of(coding["system"], coding["code"])
            assert (coding["system"], coding["code"]) in terminology.concept(found).recognised


def test_terminology_reads_old_atc_and_new_icd10cm_codes():
    atc = terminology.system("atc")
    assert terminology.concept_of(atc, "L04AA23") == "natalizumab"
    assert terminology.concept_of(atc, "L04AG03") == "natalizumab"
    assert terminology.concept_of(terminology.system("icd10cm"), "G35.C1") == "spms"
    assert (atc, "L04AA27") in terminology.recognised_codes("immunosuppressants")


def test_terminology_drug_names_are_read_and_must_name_one_drug(tmp_path, monkeypatch):
    assert "Ocrevus" in terminology.concept("ocrelizumab").names
    assert terminology.concept("ozanimod").names == ("Zeposia",)
    source = tmp_path / "terminology.yaml"
    source.write_text("systems: {atc: http://www.whocc.no/atc}\nconcepts:\n"
                      "  a: {codes: [[atc, L01, a]], names: [Brandy]}\n"
                      "  b: {codes: [[atc, L02, b]], names: [brandy]}\n", encoding="utf-8")
    monkeypatch.setattr(terminology, "SOURCE", source)
    with pytest.raises(ValueError, match="concept b: the name 'brandy' already names concept a"):
        terminology.load.__wrapped__()
    source.write_text("systems: {atc: http://www.whocc.no/atc}\nconcepts:\n"
                      "  a: {codes: [[atc, L01, a]], names: Brandy}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="concept a: names must be a list"):
        terminology.load.__wrapped__()


def test_value_set_words_are_its_display_or_its_name(tmp_path, monkeypatch):
    assert terminology.label("paracetamol-codeine-or-lidocaine") == "paracetamol, codeine or lidocaine"
    assert terminology.label("corticosteroids") == "corticosteroids"                   # a plain list: the name
    assert terminology.label("codeine") == "Codeine"                                   # a concept: its display
    assert terminology.members("paracetamol-codeine-or-lidocaine") == ("paracetamol", "codeine", "lidocaine")
    source = tmp_path / "terminology.yaml"
    source.write_text("systems: {atc: http://www.whocc.no/atc}\nconcepts:\n  a: {codes: [[atc, L01, a]]}\n"
                      "valuesets:\n  some: {display: some drugs}\n", encoding="utf-8")
    monkeypatch.setattr(terminology, "SOURCE", source)
    with pytest.raises(ValueError, match="value set some has no members"):
        terminology.load.__wrapped__()


def test_unknown_concept_says_where_to_add_it():
    with pytest.raises(KeyError, match="terminology.yaml"):
        terminology.codings("no-such-concept")


def test_transaction_puts_each_resource_at_its_id():
    b = bundle.transaction([{"resourceType": "Patient", "id": "a"}, {"resourceType": "Condition", "id": "b"}])
    assert [e["request"]["url"] for e in b["entry"]] == ["Patient/a", "Condition/b"]
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in b["entry"])
    with pytest.raises(ValueError, match="without an id"):
        bundle.entry({"resourceType": "Patient"})


def test_chunks():
    assert list(bundle.chunks(range(5), 2)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        list(bundle.chunks([], 0))


def test_sources_read_ndjson_bundles_and_directories(tmp_path):
    sources.write_ndjson(tmp_path / "Patient.ndjson", [{"resourceType": "Patient", "id": "1"},
                                                       {"resourceType": "Patient", "id": "2"}])
    sources.write_json(tmp_path / "b.json", bundle.transaction([{"resourceType": "Group", "id": "g"}]))
    found = list(sources.resources([tmp_path]))
    assert [(loc.rsplit("/", 1)[-1], r["id"]) for loc, r in found] == [
        ("Patient.ndjson:1", "1"), ("Patient.ndjson:2", "2"), ("b.json#entry[0]", "g")]
    with_bundles = list(sources.resources([tmp_path / "b.json"], bundles=True))
    assert [r["resourceType"] for _, r in with_bundles] == ["Bundle", "Group"]


def test_sources_read_jsonl_gzip_and_a_byte_order_mark_as_screen_does(tmp_path, monkeypatch):
    """What push and demo read: .jsonl, gzipped files, any case, a byte order mark; files of other kinds in a
    directory are not inputs; a line that is not UTF-8 or a damaged gzip file is an error naming it."""
    import gzip
    bom = "\ufeff".encode()
    (tmp_path / "a.JSONL").write_bytes(bom + b'{"resourceType": "Patient", "id": "1"}\n')
    (tmp_path / "b.ndjson.gz").write_bytes(gzip.compress(b'{"resourceType": "Patient", "id": "2"}\n'))
    (tmp_path / "c.json.GZ").write_bytes(gzip.compress(bom + b'{"resourceType": "Patient", "id": "3"}'))
    (tmp_path / "notes.txt").write_text("not FHIR")
    found = [(loc.rsplit("/", 1)[-1], r["id"]) for loc, r in sources.resources([tmp_path])]
    assert found == [("a.JSONL:1", "1"), ("b.ndjson.gz:1", "2"), ("c.json.GZ", "3")]
    (tmp_path / "latin.ndjson").write_bytes(b'{"resourceType": "Patient", "id": "4"}\n'
                                            b'{"resourceType": "Patient", "name": [{"text": "J\xfcrgen"}]}\n')
    with pytest.raises(sources.InputError, match=r"latin.ndjson:2: not UTF-8 text \(byte 48\)"):
        list(sources.resources([tmp_path / "latin.ndjson"]))
    (tmp_path / "cut.json.gz").write_bytes(gzip.compress(b'{"resourceType": "Patient"}')[:-6])
    with pytest.raises(sources.InputError, match="cut.json.gz: not a readable gzip file"):
        list(sources.resources([tmp_path / "cut.json.gz"]))
    monkeypatch.setattr("sys.stdin", io.StringIO('\ufeff{"resourceType":"Patient","id":"s"}\n'))
    assert [r["id"] for _, r in sources.resources(["-"])] == ["s"]


def test_sources_name_file_line_and_column_of_malformed_json(tmp_path):
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"resourceType": "Patient"}\n{"resourceType": "Patient",, }\n', encoding="utf-8")
    with pytest.raises(sources.InputError, match=r"bad.ndjson:2:28: malformed JSON"):
        list(sources.resources([bad]))
    missing = tmp_path / "nope.json"
    with pytest.raises(sources.InputError, match="no such file"):
        list(sources.resources([missing]))


def test_sources_read_stdin_as_json_or_ndjson(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"resourceType":"Patient","id":"a"}\n'
                                                 '{"resourceType":"Patient","id":"b"}\n'))
    assert [r["id"] for _, r in sources.resources(["-"])] == ["a", "b"]
    monkeypatch.setattr("sys.stdin", io.StringIO('{\n "resourceType": "Patient",\n "id": "c"\n}\n'))
    assert [r["id"] for _, r in sources.resources(["-"])] == ["c"]
