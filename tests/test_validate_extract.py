"""tools/extract_fhir_spec.py on a small package built here (the real tarballs are not in the repository)."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile

import pytest

from fhir_adapter.paths import HOME


@pytest.fixture(scope="module")
def extractor():
    loaded = importlib.util.spec_from_file_location("extract_fhir_spec", HOME / "tools" / "extract_fhir_spec.py")
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def _sd(name, elements, kind="resource"):
    return {"resourceType": "StructureDefinition", "id": name, "url": f"http://hl7.org/fhir/StructureDefinition/{name}",
            "kind": kind, "type": name, "snapshot": {"element": elements}}


def _package(tmp_path, extractor, extra):
    files = {"package.json": {"name": "hl7.fhir.test.core", "version": "0.1.0", "fhirVersions": ["4.3.0"]}}
    for name in extractor.RESOURCES:
        files[f"StructureDefinition-{name}.json"] = _sd(name, [{"path": name}])
    files.update(extra)
    path = tmp_path / "package.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_invariants_bindings_and_skips_are_extracted(tmp_path, extractor):
    observation = _sd("Observation", [
        {"path": "Observation", "constraint": [
            {"key": "obs-6", "severity": "error", "human": "no value with a reason",
             "expression": "dataAbsentReason.empty() or value.empty()"},
            {"key": "dom-6", "severity": "warning", "human": "narrative", "expression": "text.`div`.exists()",
             "extension": [{"url": extractor.BEST_PRACTICE, "valueBoolean": True}]}]},
        {"path": "Observation.status", "type": [{"code": "code"}],
         "binding": {"strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/observation-status|4.3.0"},
         "constraint": [{"key": "ele-1", "severity": "error", "human": "value or children",
                         "expression": "hasValue() or (children().count() > id.count())",
                         "source": "http://hl7.org/fhir/StructureDefinition/Element"}]},
        {"path": "Observation.value[x]", "type": [{"code": "Quantity"}, {"code": "string"}]},
        {"path": "Observation.note", "type": [{"code": "string"}], "constraint": [
            {"key": "obs-99", "severity": "error", "human": "html", "expression": "htmlChecks()"}]},
    ])
    quantity = _sd("Quantity", [
        {"path": "Quantity", "constraint": [{"key": "qty-3", "severity": "error", "human": "system with code",
                                             "expression": "code.empty() or system.exists()"}]},
        {"path": "Quantity.unit", "type": [{"code": "string"}],
         "binding": {"strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/not-here"}}],
        kind="complex-type")
    valueset = {"resourceType": "ValueSet", "url": "http://hl7.org/fhir/ValueSet/observation-status",
                "compose": {"include": [{"system": "http://hl7.org/fhir/observation-status"}]}}
    codesystem = {"resourceType": "CodeSystem", "url": "http://hl7.org/fhir/observation-status",
                  "content": "complete", "concept": [{"code": "final", "concept": [{"code": "amended"}]}]}
    tarball = _package(tmp_path, extractor, {
        "StructureDefinition-Observation.json": observation, "StructureDefinition-Quantity.json": quantity,
        "ValueSet-observation-status.json": valueset, "CodeSystem-observation-status.json": codesystem})
    data = extractor.extract(tarball)

    assert data["package"] == "hl7.fhir.test.core#0.1.0" and len(data["tarball_sha1"]) == 40
    elements = data["types"]["Observation"]["elements"]
    assert elements[""]["invariants"] == ["obs-6", "dom-6"]
    assert elements["status"]["binding"] == "http://hl7.org/fhir/ValueSet/observation-status"
    assert "invariants" not in elements["status"]          # ele-1 is checked natively
    assert elements["value[x]"]["types"] == ["Quantity", "string"]
    assert data["types"]["Quantity"]["elements"][""]["invariants"] == ["qty-3"]   # reached through value[x]
    assert data["invariants"]["dom-6"]["best_practice"] is True
    assert data["invariants"]["obs-6"] == {"key": "obs-6", "severity": "error", "human": "no value with a reason",
                                           "expression": "dataAbsentReason.empty() or value.empty()"}
    assert data["skipped"] == {"obs-99": "fhirpathpy lacks htmlChecks()"}
    assert data["valuesets"]["http://hl7.org/fhir/ValueSet/observation-status"] == {
        "codes": {"http://hl7.org/fhir/observation-status": ["amended", "final"]}}
    assert data["valuesets"]["http://hl7.org/fhir/ValueSet/not-here"] == {
        "not_enumerable": "value set not in the package"}


def test_a_missing_resource_type_stops_the_extraction(tmp_path, extractor):
    tarball = _package(tmp_path, extractor, {})
    with tarfile.open(tarball) as tar:
        names = [m.name for m in tar]
    assert "package/StructureDefinition-Bundle.json" in names
    broken = tmp_path / "broken.tgz"
    with tarfile.open(tarball) as src, tarfile.open(broken, "w:gz") as dst:
        for member in src:
            if not member.name.endswith("StructureDefinition-Bundle.json"):
                dst.addfile(member, src.extractfile(member))
    with pytest.raises(SystemExit, match="no StructureDefinition for Bundle"):
        extractor.extract(broken)
