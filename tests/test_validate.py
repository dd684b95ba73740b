"""Validation checks: for each check, a resource that breaks it and one that passes."""

from __future__ import annotations

import copy
import json
import re

import pytest

from fhir_adapter.paths import EXAMPLES
from fhir_adapter.validation import Issue, structure_issues
from fhir_adapter.validation.bundles import bundle_issues
from fhir_adapter.validation.invariants import Evaluator
from fhir_adapter.validation.rules import known_codes
from fhir_adapter.validation.spec import element_tree, invariants, spec
from fhir_adapter.validation.ucum import is_ucum
from fhir_adapter.validation.validator import Validator, validate

SNOMED = "http://snomed.info/sct"
MS = "https://w3id.org/fhir-adapter/CodeSystem/ms"
UCUM = "http://unitsofmeasure.org"


def observation(**extra):
    resource = {"resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-01-02",
                "valueQuantity": {"value": 250, "unit": "10^9/L", "system": UCUM, "code": "10*9/L"}}
    resource.update(extra)
    return {k: v for k, v in resource.items() if v is not None}


def edss(value):
    return observation(code={"coding": [{"system": SNOMED, "code": "273554001"}]},
                       valueQuantity={"value": value, "system": UCUM, "code": "{score}"})


def lesions(value, code="gd-enhancing-lesion-count"):
    return observation(code={"coding": [{"system": MS, "code": code}]}, valueQuantity=None, valueInteger=value)


def rules(resource, version="R4", **options):
    """The rules of the findings on a resource, other than best-practice information."""
    return sorted({i.rule for i in Validator(version, **options).resource_issues(resource)
                   if i.severity != "information"})


@pytest.fixture(scope="module")
def r4():
    return Validator("R4")


# --- structure ---------------------------------------------------------------------------------------------

def test_structure_bad_type_and_good_resource():
    assert rules({"resourceType": "Patient", "birthDate": "1980-13-45"}) == ["structure"]
    assert rules({"resourceType": "Patient", "birthDate": "1980-12-31"}) == []
    assert rules({"resourceType": "Nonsense"}) == ["structure"]


def test_structure_remembered_shapes_still_catch_bad_values():
    """Resources of a shape seen before are checked value by value (ShapeCheck): a bad value is still found."""
    v = Validator("R4")
    for day in range(1, 20):
        assert v.resource_issues(observation(effectiveDateTime=f"2024-01-{day:02d}")) == []
    found = v.resource_issues(observation(effectiveDateTime="2024-01-32"))
    assert [(i.rule, i.location) for i in found] == [("structure", "Observation.effectiveDateTime")]
    found = v.resource_issues(observation(valueQuantity={"value": "high", "unit": "10^9/L", "system": UCUM,
                                                         "code": "10*9/L"}))
    assert [(i.rule, i.location) for i in found] == [("structure", "Observation.valueQuantity.value")]


def test_structure_api_kept_for_existing_callers():
    issues = structure_issues({"resourceType": "Patient", "birthDate": "x"}, "R4")
    assert issues[0].location == "Patient.birthDate" and isinstance(issues[0], Issue)
    assert Issue("error", "a", "b") == Issue("error", "a", "b")  # positional form still works


def test_r5_models_for_r5():
    # MedicationStatement.medication is a CodeableReference in R5, a choice in R4
    r5 = {"resourceType": "MedicationStatement", "status": "recorded", "subject": {"reference": "Patient/p"},
          "medication": {"concept": {"text": "natalizumab"}}}
    assert rules(r5, "R5") == []
    assert "structure" in rules(r5, "R4")


# --- invariants (FHIRPath) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, good, key, location", [
    (observation(dataAbsentReason={"text": "lost"}), observation(valueQuantity=None, dataAbsentReason={"text": "x"}),
     "obs-6", "Observation"),
    (observation(referenceRange=[{"appliesTo": [{"text": "adults"}]}]),
     observation(referenceRange=[{"text": "150-400"}]), "obs-3", "Observation.referenceRange[0]"),
    (observation(valueQuantity={"value": 1, "code": "mg"}), observation(valueQuantity={"value": 1, "code": "mg",
     "system": UCUM}), "qty-3", "Observation.valueQuantity"),
    (observation(effectiveDateTime=None, effectivePeriod={"start": "2024-02-01", "end": "2024-01-01"}),
     observation(effectiveDateTime=None, effectivePeriod={"start": "2024-01-01", "end": "2024-02-01"}),
     "per-1", "Observation.effectivePeriod"),
])
def test_invariant_breaks_and_holds(bad, good, key, location):
    found = [i for i in Validator("R4").resource_issues(bad) if i.rule == key]
    assert [(i.severity, i.location) for i in found] == [("error", location)]
    assert found[0].message == invariants("R4")[key].human
    assert key not in rules(good)


def test_component_code_differs_from_the_observation_code_obs_7():
    same = {"code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]}, "valueInteger": 1}
    other = {"code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]}, "valueInteger": 1}
    for version in ("R4", "R5"):
        assert "obs-7" in rules(observation(component=[same]), version)
        assert "obs-7" not in rules(observation(component=[other]), version)
        assert "obs-7" not in rules(observation(component=[same], valueQuantity=None, dataAbsentReason={"text": "x"}),
                                    version)


def test_condition_invariant_con_4_r4():
    resolved = {"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                               "code": "active"}]}, "abatementDateTime": "2020-01-01"}
    assert "con-4" in rules(resolved)
    resolved["clinicalStatus"]["coding"][0]["code"] = "resolved"
    assert "con-4" not in rules(resolved)


def test_r5_invariant_obs_8():
    body = {"bodySite": {"text": "arm"}, "bodyStructure": {"reference": "BodyStructure/b"}}
    assert "obs-8" in rules(observation(**body), "R5")
    assert "obs-8" not in rules(observation(bodySite={"text": "arm"}), "R5")


def test_contained_resource_must_be_referenced_dom_3():
    contained = [{"resourceType": "Patient", "id": "pt"}]
    assert "dom-3" in rules(observation(contained=contained), "R5")
    assert "dom-3" not in rules(observation(contained=contained, subject={"reference": "#pt"}), "R5")
    # R4B's dom-3 uses as() on a collection, which fhirpathpy refuses: counted as not evaluated, with the reason
    v = Validator("R4")
    v.resource_issues(observation(contained=contained))
    counts = v.counts()
    assert counts.skipped["dom-3"] == 1 and counts.reasons["dom-3"].startswith("fhirpathpy raised ValueError")


def test_new_r4b_resource_contained_in_an_r4_resource_dom_r4b():
    """dom-r4b (R4B DomainResource.contained): `($this is EvidenceVariable or ...) implies (%resource is
    EvidenceVariable or ...)`; %resource is the containing resource. An EvidenceVariable inside an
    EvidenceVariable (how `trials map` carries sub-criteria) is fine; inside an Observation it is warned."""
    sub = {"resourceType": "EvidenceVariable", "id": "sub", "status": "active",
           "characteristic": [{"definitionCodeableConcept": {"text": "x"}}]}
    outer = {"resourceType": "EvidenceVariable", "id": "ev", "status": "active", "contained": [sub],
             "characteristic": [{"definitionReference": {"reference": "#sub"}}]}
    assert "dom-r4b" not in rules(outer)
    found = [i for i in Validator("R4").resource_issues(observation(contained=[sub], hasMember=[
        {"reference": "#sub"}])) if i.rule == "dom-r4b"]
    assert [(i.severity, i.location) for i in found] == [("warning", "Observation.contained[0]")]


def test_local_reference_must_match_contained_ref_1():
    assert "ref-1" in rules(observation(subject={"reference": "#nobody"}))
    assert "ref-1" not in rules(observation(subject={"reference": "Patient/x"}))
    # inside a contained resource, '#id' names a sibling in the container (%rootResource)
    contained = [{"resourceType": "Patient", "id": "pt"},
                 {"resourceType": "Observation", "id": "c1", "status": "final", "code": {"text": "x"},
                  "subject": {"reference": "#pt"}}]
    ok = observation(contained=contained, subject={"reference": "#pt"}, hasMember=[{"reference": "#c1"}])
    assert "ref-1" not in rules(ok)
    contained[1]["subject"]["reference"] = "#elsewhere"
    found = [i.location for i in Validator("R4").resource_issues(ok) if i.rule == "ref-1"]
    assert found == ["Observation.contained[1].subject"]


def test_memo_keeps_results_apart():
    """Memoized results are keyed by what the expression sees: alternating inputs keep their own verdicts."""
    check = Validator("R4")
    bad, good = observation(dataAbsentReason={"text": "x"}), observation()
    for _ in range(3):
        assert "obs-6" in {i.rule for i in check.resource_issues(bad)}
        assert "obs-6" not in {i.rule for i in check.resource_issues(good)}
    for start, end, broken in [("2024-02-01", "2024-01-01", True), ("2024-01-01", "2024-02-01", False)] * 2:
        found = check.resource_issues(observation(effectiveDateTime=None,
                                                  effectivePeriod={"start": start, "end": end}))
        assert ("per-1" in {i.rule for i in found}) is broken


def test_best_practice_is_counted_or_reported_at_a_chosen_severity():
    bare = {"resourceType": "Patient"}
    quiet = Validator("R4")
    assert quiet.resource_issues(bare) == [] and quiet.counts().best_practice == {"dom-6": 1}
    for severity in ("information", "warning"):
        issues = Validator("R4", best_practice=severity).resource_issues(bare)
        assert [(i.rule, i.severity) for i in issues] == [("dom-6", severity)]
    narrated = {"resourceType": "Patient", "text": {"status": "generated",
                                                    "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}}
    loud = Validator("R4", best_practice="warning")
    assert loud.resource_issues(narrated) == [] and loud.counts().best_practice == {}


def test_bundle_invariant_bdl_1():
    bundle = {"resourceType": "Bundle", "type": "collection", "total": 1, "entry": []}
    assert "bdl-1" in rules({**bundle, "entry": [{"resource": {"resourceType": "Basic"}}]})
    assert "bdl-1" not in rules({**bundle, "type": "searchset"})


# --- skipped invariants are reported, not silent -----------------------------------------------------------

def test_skipped_invariants_are_counted():
    v = Validator("R4")
    narrated = {"resourceType": "Patient", "text": {"status": "generated",
                                                    "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}}
    v.resource_issues(narrated)
    counts = v.counts()
    assert counts.skipped == {"txt-1": 1, "txt-2": 1}
    assert "htmlChecks()" in counts.reasons["txt-1"]
    assert v.counts().skipped == {}  # reset after each call
    v5 = Validator("R5")
    v5.resource_issues(observation(effectiveDateTime=None, effectivePeriod={"start": "2024-01-01"}))
    assert v5.counts().skipped == {}    # an open period satisfies per-1 whatever lowBoundary() would say
    v5.resource_issues(observation(effectiveDateTime=None, effectivePeriod={"start": "2024-01-01",
                                                                            "end": "2024-02-01"}))
    counts = v5.counts()
    assert counts.skipped["per-1"] == 1 and "lowBoundary()" in counts.reasons["per-1"]


def test_invariant_failing_in_the_engine_is_counted_not_hidden():
    from fhir_adapter.validation.spec import Invariant

    ev = Evaluator("R4")
    broken = Invariant("test-1", "error", "never", "value.toInteger() / 0 = 'x'.toInteger(1, 2)")
    assert ev.holds(broken, {"valueInteger": 1}, "Observation", None) is None
    assert ev.skipped["test-1"] == 1 and "fhirpathpy raised" in ev.failed["test-1"]


# --- the data file ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, package", [("R4", "hl7.fhir.r4b.core#4.3.0"), ("R5", "hl7.fhir.r5.core#5.0.0")])
def test_data_file_comes_from_the_official_package(version, package):
    data = spec(version)
    assert data["package"] == package and re.fullmatch(r"[0-9a-f]{40}", data["tarball_sha1"])
    for name in ("Patient", "Condition", "Observation", "MedicationStatement", "ResearchStudy", "ResearchSubject",
                 "PlanDefinition", "ActivityDefinition", "EvidenceVariable", "Group", "CodeSystem", "Bundle"):
        assert element_tree(name, version) is not None, name
    used = {k for t in data["types"].values() for e in t["elements"].values() for k in e.get("invariants", [])}
    assert used <= set(data["invariants"])
    assert data["invariants"]["obs-6"]["expression"] == "dataAbsentReason.empty() or value.empty()"
    assert data["valuesets"]["http://hl7.org/fhir/ValueSet/administrative-gender"]["codes"] == {
        "http://hl7.org/fhir/administrative-gender": ["female", "male", "other", "unknown"]}


def _extractor():
    import importlib.util

    path = EXAMPLES.parent / "tools" / "extract_fhir_spec.py"
    loaded = importlib.util.spec_from_file_location("extract_fhir_spec", path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_skip_list_matches_what_fhirpathpy_lacks(version):
    """Every skipped invariant names a function fhirpathpy lacks, and every other one compiles."""
    extractor = _extractor()
    supported = extractor._supported_functions()
    data = spec(version)
    for key, inv in data["invariants"].items():
        if key in data["native"]:
            continue
        assert (extractor._unsupported(inv["expression"], supported) or None) == inv.get("skip"), key
    assert set(data["skipped"]) >= {"txt-1", "txt-2"}


# --- ele-1 --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, location", [
    ({"category": []}, "Observation.category"),
    ({"category": [{}]}, "Observation.category[0]"),
    ({"note": [{"id": "n"}]}, "Observation.note[0]"),
    ({"issued": None}, "Observation.issued"),
])
def test_empty_elements_ele_1(r4, extra, location):
    found = [i.location for i in r4.resource_issues({**observation(), **extra}) if i.rule == "ele-1"]
    assert found == [location]
    assert [i for i in r4.resource_issues(observation()) if i.rule == "ele-1"] == []


# --- required bindings and UCUM -----------------------------------------------------------------------------

def test_required_binding_on_codes():
    assert rules({"resourceType": "Patient", "gender": "f"}) == ["binding"]
    assert rules({"resourceType": "Patient", "gender": "female"}) == []
    assert "binding" in rules(observation(status="done"))


def test_required_binding_on_codeable_concept():
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p"}, "clinicalStatus": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}}
    assert rules(condition) == []
    condition["clinicalStatus"]["coding"][0]["system"] = "http://example.org/status"
    assert rules(condition) == ["binding"]


def test_ucum_syntax():
    assert "ucum" in rules(observation(valueQuantity={"value": 1, "system": UCUM, "code": "mg//dL"}))
    assert "ucum" not in rules(observation(valueQuantity={"value": 1, "system": UCUM, "code": "mg/dL"}))
    assert "ucum" not in rules(observation(valueQuantity={"value": 1, "system": "http://x", "code": "mg//dL"}))
    assert [is_ucum(u) for u in ("mL/min/{1.73_m2}", "10*9/L", "mm[Hg]", "mg dL", "(mg", "")] == \
        [True, True, True, False, False, False]


# --- codes of the project's code systems ---------------------------------------------------------------------

def test_project_codes_exist():
    assert "code-exists" in rules(lesions(1, code="gd-lesions"))
    assert "code-exists" not in rules(lesions(1))
    category = "http://terminology.hl7.org/CodeSystem/observation-category"
    assert "code-exists" in rules(observation(category=[{"coding": [{"system": category, "code": "exams"}]}]))
    assert "code-exists" not in rules(observation(category=[{"coding": [{"system": category, "code": "exam"}]}]))
    # SNOMED and LOINC cannot be checked offline: any code passes
    assert "code-exists" not in rules(observation(code={"coding": [{"system": SNOMED, "code": "1"}]}))
    assert {"edss", "gd-enhancing-lesion-count", "new-or-enlarging-t2-lesion-count"} <= known_codes()[MS]


# --- the project's rules -----------------------------------------------------------------------------------

def test_observation_has_subject_and_effective_time():
    assert rules(observation(subject=None)) == ["observation-subject"]
    assert rules(observation(effectiveDateTime=None)) == ["observation-effective"]
    assert rules(observation(effectiveDateTime=None, effectivePeriod={"start": "2024-01-01"})) == []


@pytest.mark.parametrize("value, ok", [(0, True), (4.5, True), (10, True), (10.5, False), (3.25, False),
                                       (-0.5, False)])
def test_edss_in_half_steps(value, ok):
    assert ("edss-value" not in rules(edss(value))) is ok


@pytest.mark.parametrize("value, ok", [(0, True), (7, True), (-1, False), (2.5, False)])
def test_lesion_count_non_negative_integer(value, ok):
    assert ("lesion-count" not in rules(lesions(value))) is ok
    as_quantity = observation(code={"coding": [{"system": MS, "code": "new-or-enlarging-t2-lesion-count"}]},
                              valueQuantity={"value": value})
    assert ("lesion-count" not in rules(as_quantity)) is ok


# --- bundles ------------------------------------------------------------------------------------------------

def transaction(*resources, **entry_extra):
    from fhir_adapter.bundle import transaction as build

    bundle = build(copy.deepcopy(list(resources)))
    for item in bundle["entry"]:
        item.update(entry_extra)
    return bundle


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female"}


def bundle_rules(bundle, **options):
    return sorted({i.rule for i in bundle_issues(bundle, **options)})


def test_references_resolve_inside_the_bundle():
    assert bundle_rules(transaction(PATIENT, observation())) == []
    lonely = transaction(observation())
    assert bundle_rules(lonely) == ["bundle-reference"]
    assert bundle_rules(lonely, allow_external=True) == []
    by_uuid = transaction(observation(subject={"reference": "urn:uuid:p2"}))
    assert bundle_rules(by_uuid, allow_external=True) == ["bundle-reference"]  # urn:uuid is never external
    assert bundle_rules(transaction(PATIENT, observation(subject={"reference": "urn:uuid:p1"}))) == []


def test_full_url_and_id_agree():
    bundle = transaction(PATIENT)
    bundle["entry"][0]["fullUrl"] = "http://example.org/fhir/Patient/p2"
    assert [(i.rule, i.severity) for i in bundle_issues(bundle)] == [("bundle-fullurl", "error")]
    bundle["entry"][0]["fullUrl"] = "http://example.org/fhir/Patient/p1"
    assert bundle_issues(bundle) == []
    bundle["entry"][0]["fullUrl"] = "urn:uuid:other"
    assert [(i.rule, i.severity) for i in bundle_issues(bundle)] == [("bundle-fullurl", "warning")]
    del bundle["entry"][0]["resource"]["id"]
    assert bundle_issues(bundle) == []          # a new resource posted under a urn:uuid
    bundle["entry"][0]["fullUrl"] = "http://example.org/fhir/Patient/p1"
    assert [i.message for i in bundle_issues(bundle) if i.rule == "bundle-fullurl"] == [
        "fullUrl http://example.org/fhir/Patient/p1 names Patient/p1 but the resource has no id"]


def test_transaction_entries_need_request_method_and_url():
    bundle = transaction(PATIENT)
    del bundle["entry"][0]["request"]["url"]
    assert bundle_rules(bundle) == ["bundle-request"]
    bundle["entry"][0]["request"]["url"] = "Patient/p9"
    assert [i.message for i in bundle_issues(bundle)] == ["PUT Patient/p9 does not match the resource Patient/p1"]
    collection = {**transaction(PATIENT), "type": "collection"}
    del collection["entry"][0]["request"]
    assert bundle_rules(collection) == []


def test_no_duplicate_ids():
    twice = transaction(PATIENT, copy.deepcopy(PATIENT))
    assert bundle_rules(twice) == ["bundle-duplicate"]
    assert len(bundle_issues(twice)) == 2  # the id and the fullUrl


def test_bundle_issue_locations_name_the_entry(r4):
    bundle = transaction(PATIENT, observation(valueQuantity={"value": 1, "system": UCUM, "code": "mg//dL"}))
    results = r4.document("b.json", bundle)
    assert [r.label for r in results] == ["Bundle", "Patient/p1", "Observation/o1"]
    (issue,) = [i for i in results[2].issues if i.rule == "ucum"]
    assert issue.location == "Bundle.entry[1].resource.Observation.valueQuantity.code"
    assert issue.source == "b.json#entry[1]"
    lonely = r4.document("b.json", transaction(PATIENT, observation(subject={"reference": "Patient/p9"})))
    assert lonely[0].issues == () and lonely[1].issues == ()   # the bundle-level finding is the entry's
    (issue,) = lonely[2].issues
    assert (issue.rule, issue.source, issue.location) == (
        "bundle-reference", "b.json#entry[1]", "Bundle.entry[1].resource.Observation.subject.reference")


# --- inputs -------------------------------------------------------------------------------------------------

def test_one_bad_resource_does_not_hide_the_others(tmp_path):
    lines = [observation(id="a", status="done"), observation(id="b"), observation(id="c", subject=None)]
    (tmp_path / "obs.ndjson").write_text("".join(json.dumps(r) + "\n" for r in lines))
    results, summary = validate([tmp_path], workers=1)
    found = {(r.source.rsplit("/", 1)[1], i.rule) for r in results for i in r.issues if i.severity == "error"}
    assert found == {("obs.ndjson:1", "binding"), ("obs.ndjson:3", "observation-subject")}
    assert summary.resources == 3 and summary.severities["error"] == 2


def test_malformed_json_has_line_and_column(tmp_path):
    (tmp_path / "a.ndjson").write_text(json.dumps(observation()) + "\n" + '{"resourceType": "Patient",, }\n')
    (tmp_path / "b.json").write_text('{\n  "resourceType": "Patient"\n  "id": "x"\n}\n')
    results, summary = validate([tmp_path], workers=1)
    errors = [(r.source, i.message) for r in results for i in r.issues if i.rule == "json"]
    assert errors[0][0].endswith("a.ndjson:2") and "line 2, column 28" in errors[0][1]
    assert errors[1][0].endswith("b.json") and "b.json:3:3: malformed JSON" in errors[1][1]
    assert summary.resources == 3  # the good line, and each bad record


def test_several_processes_give_the_same_results(tmp_path, monkeypatch):
    from fhir_adapter.validation import validator

    monkeypatch.setattr(validator, "CHUNK_BYTES", 20_000)   # several tasks per file
    source = EXAMPLES / "ehr" / "cohort-fhir"
    one, s1 = validate([source], workers=1)
    one = list(one)
    two, s2 = validate([source], workers=2)
    assert list(two) == one and s1 == s2 and s1.resources > 500


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_shipped_examples_are_valid(version, tmp_path):
    """The canary: what the project ships validates without errors or warnings, so `--fail-on warning` passes
    (R4: the files in examples/; R5: the same inputs mapped again)."""
    from fhir_adapter.cli import main

    cohort, trials = EXAMPLES / "ehr" / "cohort-fhir", EXAMPLES / "trials"
    if version == "R5":
        cohort, trials = tmp_path / "cohort", tmp_path / "trials"
        assert main(["patients", "map", str(EXAMPLES / "ehr" / "cohort"), "--out", str(cohort), "--fhir-version",
                     "R5", "--bundles", "1000", "--allow-rejects", "--extracted-on", "2026-01-01"]) == 0
        (cohort / "summary.json").unlink()
        assert main(["trials", "map", "--out", str(trials), "--fhir-version", "R5"]) == 0
    results, summary = validate([cohort], version, workers=1)
    problems = [str(i) for r in results for i in r.issues if i.severity != "information"]
    assert problems == [] and summary.resources >= 540
    assert trials.is_dir()
    results, summary = validate([trials], version, workers=1)
    assert [str(i) for r in results for i in r.issues if i.severity != "information"] == []
    assert summary.resources >= 5 * 4
