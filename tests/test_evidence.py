"""EvidenceVariable: the four trials' criteria to R4B / R5 and back without loss, valid FHIR, the local CodeSystem.

The round trips run on the curated protocols (`load_protocols`) and on made-up criteria that use every fact and
every shape of the model (open and closed bounds, codes, windows, nested combinations, sub-items of sub-items).
"""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
import yaml

from fhir_adapter import ids, terminology
from fhir_adapter.criteria import FACTS, Criterion, CriterionError
from fhir_adapter.eligibility.trials import load_trials, trials_from_evidence
from fhir_adapter.paths import MAPPINGS
from fhir_adapter.protocol import load_protocols
from fhir_adapter.protocol.evidence import (
    CANONICAL,
    LINK_ID,
    RULE,
    code_system,
    criteria_from_evidence_variable,
    evidence_variable,
)
from fhir_adapter.validation.elements import ElementCheck
from fhir_adapter.validation.structure import structure_issues

MS = "https://w3id.org/fhir-adapter/CodeSystem/ms"
VERSIONS = ("R4", "R5")
TRIALS = ("NCT01854957", "NCT02035514", "NCT02403947", "NCT04749667")
PROTOCOLS = {p.nct_id: p for p in load_protocols() if p.criteria}


def _trial(nct: str):
    return PROTOCOLS[nct]


def _by_link(characteristics: list[dict], version: str) -> dict[str, dict]:
    """Top-level characteristics by linkId (R5 element, R4B extension)."""
    if version == "R5":
        return {c["linkId"]: c for c in characteristics}
    return {next(e["valueString"] for e in c["extension"] if e["url"] == LINK_ID): c for c in characteristics}


def _empty_elements(value, path="") -> list[str]:
    if isinstance(value, dict):
        found = [path or "(root)"] if not value else []
        for key, item in value.items():
            found += _empty_elements(item, f"{path}.{key}")
        return found
    if isinstance(value, list):
        found = [path] if not value else []
        for i, item in enumerate(value):
            found += _empty_elements(item, f"{path}[{i}]")
        return found
    return [path] if value is None or value == "" else []


# ------------------------------------------------------------------------------------------ the four trials

def test_the_four_trials_have_criteria():
    assert sorted(PROTOCOLS) == list(TRIALS)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("nct", TRIALS)
def test_round_trip_is_lossless(nct, version):
    protocol = _trial(nct)
    resource = evidence_variable(protocol, version)
    assert criteria_from_evidence_variable(resource, version) == list(protocol.criteria)
    # and through JSON text, as a server or a file gives it back
    again = json.loads(json.dumps(resource))
    assert criteria_from_evidence_variable(again, version) == list(protocol.criteria)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("nct", TRIALS)
def test_evidence_variable_validates_and_has_no_empty_elements(nct, version):
    resource = evidence_variable(_trial(nct), version)
    assert structure_issues(resource, version) == []
    assert _empty_elements(resource) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_the_project_validator_finds_no_errors(version):
    """Invariants (FHIRPath), required bindings, ele-1 and the ms codes (fhir_adapter.validation)."""
    check = ElementCheck(version)
    for resource in [code_system(version), *(evidence_variable(p, version) for p in PROTOCOLS.values())]:
        errors = [str(i) for i in check.issues(resource) if i.severity == "error"]
        assert errors == [], (resource["resourceType"], resource.get("url"))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("nct", TRIALS)
def test_identity_and_one_characteristic_per_line(nct, version):
    protocol = _trial(nct)
    resource = evidence_variable(protocol, version)
    assert resource["id"] == ids.resource_id("EvidenceVariable", "https://clinicaltrials.gov", nct)
    assert resource["url"] == CANONICAL + nct
    assert resource["identifier"] == [{"system": "https://clinicaltrials.gov", "value": nct}]
    assert resource["status"] == "active"
    lines = _by_link(resource["characteristic"], version)
    assert list(lines) == [c.link_id for c in protocol.criteria]
    for criterion in protocol.criteria:
        line = lines[criterion.link_id]
        assert line["description"] == criterion.text
        assert line["exclude"] is (criterion.kind == "exclusion")
        manual = (line.get("definitionCodeableConcept") or {}).get("coding", [{}])[0].get("code") == "manual-review"
        assert manual is (not criterion.children and criterion.rule is None), criterion.link_id


def test_r5_cmm_em_reads_like_the_protocol():
    """CMM-EM inclusion 4 "EDSS 3.0 - 6.5", 5.2 ">= 1 moderate-severe relapses in past 18 months", exclusion 5
    "Corticosteroid treatment <= 30 days", inclusion 1 (any of three MS courses) and 6 (consent, manual)."""
    lines = _by_link(evidence_variable(_trial("NCT02035514"), "R5")["characteristic"], "R5")
    edss = lines["inc-4"]["definitionByTypeAndValue"]
    assert {(c["system"], c["code"]) for c in edss["type"]["coding"]} == {(MS, "edss"),
                                                                          ("http://snomed.info/sct", "273554001")}
    assert edss["valueRange"]["low"]["value"] == 3.0 and edss["valueRange"]["high"]["value"] == 6.5
    assert edss["valueRange"]["low"]["code"] == "{score}"

    activity = lines["inc-5"]["definitionByCombination"]
    assert activity["code"] == "any-of"
    # inclusion 5.2 is the relapses "after at least a year of attempted therapy": both parts of a combination
    line = next(c for c in activity["characteristic"] if c["linkId"] == "inc-5.2")["definitionByCombination"]
    relapses, therapy = line["characteristic"]
    assert line["code"] == "all-of"
    assert therapy["definitionByTypeAndValue"]["type"]["coding"][0]["code"] == "therapy-duration"
    assert therapy["definitionByTypeAndValue"]["valueQuantity"] == {
        "comparator": ">=", "value": 365, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}
    assert relapses["definitionByTypeAndValue"]["type"]["coding"][0]["code"] == "relapse-count"
    assert relapses["definitionByTypeAndValue"]["valueCodeableConcept"]["coding"][0]["code"] == "6736007"  # moderate
    assert relapses["instancesQuantity"] == {"comparator": ">=", "value": 1}
    window = relapses["timeFromEvent"][0]
    assert window["eventCodeableConcept"]["coding"][0]["code"] == "screening-date"
    assert (window["range"]["low"]["value"], window["range"]["low"]["code"]) == (-18, "mo")

    steroids = lines["exc-5"]
    assert steroids["exclude"] is True
    typed = steroids["definitionByTypeAndValue"]
    assert typed["type"]["coding"][0]["code"] == "therapy-exposure"
    assert typed["valueCodeableConcept"] == {"text": "corticosteroids: methylprednisolone, prednisone, "
                                                  "other corticosteroids for systemic use (ATC H02)"}
    assert typed["extension"] == [{"url": "https://w3id.org/fhir-adapter/StructureDefinition/criterion-subject",
                                   "valueCode": "corticosteroids"}]
    assert steroids["timeFromEvent"][0]["range"]["low"] == {"value": -30, "unit": "days",
                                                            "system": "http://unitsofmeasure.org", "code": "d"}

    courses = lines["inc-1"]["definitionByCombination"]
    assert courses["code"] == "any-of" and [c["linkId"] for c in courses["characteristic"]] == [
        "inc-1.1", "inc-1.2", "inc-1.3"]
    ppms = courses["characteristic"][2]["definitionByCombination"]
    assert ppms["code"] == "all-of" and all("linkId" not in part for part in ppms["characteristic"])
    assert ppms["characteristic"][0]["definitionByTypeAndValue"]["valueCodeableConcept"]["coding"][0]["code"] \
        == "428700003"                                                            # SNOMED PPMS
    assert "exclude" not in courses["characteristic"][0]          # sub-items take their line's exclude
    assert lines["inc-6"]["note"][0]["text"].startswith("manual review")


def test_r5_open_bounds_use_quantity_comparators():
    """SMART-MS exclusion 16 "Platelet (thrombocyte) count <100 x 10*9/L": below 100, exclusive."""
    lines = _by_link(evidence_variable(_trial("NCT04749667"), "R5")["characteristic"], "R5")
    platelets = lines["exc-16"]["definitionByTypeAndValue"]
    assert platelets["valueQuantity"] == {"comparator": "<", "value": 100, "unit": "10*9/L",
                                          "system": "http://unitsofmeasure.org", "code": "10*9/L"}
    fampridine = lines["exc-9"]["definitionByTypeAndValue"]["valueCodeableConcept"]
    assert fampridine["coding"][0] == {"system": "http://www.whocc.no/atc", "code": "N07XX07", "display": "fampridine"}
    subtype = lines["inc-2"]["definitionByTypeAndValue"]["valueCodeableConcept"]
    assert [c["code"] for c in subtype["coding"]] == ["425500002", "428700003"]  # SPMS or PPMS


def test_r4b_carries_link_ids_rules_and_sub_items():
    """R4B: linkId, note and rule as extensions; sub-items as contained EvidenceVariables with a combination."""
    protocol = _trial("NCT02403947")
    resource = evidence_variable(protocol, "R4")
    assert resource["characteristicCombination"] == "intersection"
    lines = _by_link(resource["characteristic"], "R4")
    diagnosis = lines["inc-2"]
    assert diagnosis["definitionReference"] == {"reference": "#inc-2"}
    contained = {r["id"]: r for r in resource["contained"]}
    assert contained["inc-2"]["characteristicCombination"] == "union"
    assert contained["inc-2.3"]["characteristicCombination"] == "intersection"     # PPMS: all the features
    assert sorted(contained) == ["inc-2", "inc-2.1", "inc-2.2", "inc-2.3"]
    duration = lines["inc-1"]
    rule = next(e["valueString"] for e in duration["extension"] if e["url"] == RULE)
    assert json.loads(rule) == {"fact": "disease-duration", "range": [2, 10]}
    assert duration["definitionExpression"]["expression"] == "disease-duration in [2, 10]"
    washout = lines["exc-2"]
    assert washout["timeFromStart"]["range"]["low"]["value"] == -1 and washout["exclude"] is True


def test_trials_read_back_from_evidence_variables_screen_like_the_mappings():
    """The screening's reader (`trials_from_evidence`) gets the same criteria as `load_trials`."""
    for version in VERSIONS:
        resources = [evidence_variable(p, version) for p in PROTOCOLS.values()]
        read = {t.id: t.criteria for t in trials_from_evidence(resources, version)}
        assert read == {t.id: t.criteria for t in load_trials()}


# ------------------------------------------------------------------------------------------ every shape

def _rule(fact: str, **spec) -> dict:
    return {"fact": fact, **{k.replace("_", "-"): v for k, v in spec.items()}}


SHAPES = [
    {"linkId": "a", "kind": "inclusion", "text": "age", "rule": _rule("age", range=[18, 50])},
    {"linkId": "b", "kind": "inclusion", "text": "sex", "rule": _rule("sex", any_of=["female", "other"])},
    {"linkId": "c", "kind": "inclusion", "text": "course", "rule": _rule("ms-subtype", any_of=["rrms", "spms"])},
    {"linkId": "d", "kind": "inclusion", "text": "duration", "rule": _rule("disease-duration", above=2, at_most=15)},
    {"linkId": "e", "kind": "inclusion", "text": "EDSS", "rule": _rule("edss", above=3.5, below=7)},
    {"linkId": "f", "kind": "inclusion", "text": "EDSS", "rule": _rule("edss", range=[4.5, 4.5], window="12 mo")},
    {"linkId": "g", "kind": "inclusion", "text": "no progression",
     "rule": _rule("edss-progression", window="12 mo", present=False)},
    {"linkId": "h", "kind": "exclusion", "text": "relapses",
     "rule": _rule("relapse-count", subject="severe", window="6 wk", range=[1, 3])},
    {"linkId": "i", "kind": "exclusion", "text": "relapse", "rule": _rule("relapse-count", window="60 d", above=0)},
    {"linkId": "j", "kind": "inclusion", "text": "lesions",
     "rule": {"any-of": [_rule("gd-lesion-count", window="12 mo", at_least=1),
                         {"all-of": [_rule("new-t2-lesion-count", at_most=0),
                                     _rule("csf-oligoclonal-bands", present=False)]}]}},
    {"linkId": "k", "kind": "exclusion", "text": "current", "rule": _rule("therapy", subject="fampridine",
                                                                          window="0 d", present=True)},
    {"linkId": "l", "kind": "exclusion", "text": "ever", "rule": _rule("therapy", subject="rituximab", present=True)},
    {"linkId": "l2", "kind": "inclusion", "text": "a year of attempted therapy",
     "rule": _rule("therapy-duration", subject="disease-modifying-therapies", at_least=365)},
    {"linkId": "l3", "kind": "exclusion", "text": "a transplant within a year",
     "rule": _rule("procedure", subject="stem-cell-transplants", window="12 mo", present=True)},
    {"linkId": "l4", "kind": "exclusion", "text": "an allergy", "rule": _rule("allergy", subject="codeine",
                                                                           present=True)},
    {"linkId": "m", "kind": "exclusion", "text": "labs",
     "rule": {"all-of": [_rule("lab-value", subject="white-cells", window="< 3 mo", below=3.5),
                         _rule("lab-value", subject="egfr", at_least=30),
                         _rule("lab-positive", subject="htlv", window="2 a", present=False)]}},
    {"linkId": "n", "kind": "exclusion", "text": "states", "note": "two notes\nin one",
     "rule": {"any-of": [_rule("pregnant", present=True), _rule("lactating", present=True),
                         _rule("condition", subject="renal-failure", present=True)]}},
    {"linkId": "o", "kind": "inclusion", "text": "Nested", "combine": "all-of", "note": "a line with sub-items",
     "children": [
         {"linkId": "o.1", "text": "first", "combine": "any-of", "children": [
             {"linkId": "o.1.a", "text": "deep", "rule": _rule("age", at_least=18)},
             {"linkId": "o.1.b", "text": "manual", "note": "by hand"}]},
         {"linkId": "o.2-X", "text": "second", "rule": _rule("edss", at_most=6)}]},
    {"linkId": "p", "kind": "exclusion", "text": "By hand <b>&</b> \"quoted\" – ünïcode"},
]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_fact_and_shape_round_trips(version):
    criteria = tuple(Criterion.from_dict(c) for c in SHAPES)
    used = {r["fact"] for c in criteria for x in c.walk() if x.rule for r in _leaves(x.rule.to_dict())}
    assert used == set(FACTS)                                   # the shapes cover every fact
    protocol = SimpleNamespace(nct_id="NCT00000000", acronym=None, title="Shapes", criteria=criteria)
    resource = evidence_variable(protocol, version)
    assert structure_issues(resource, version) == []
    assert _empty_elements(resource) == []
    back = criteria_from_evidence_variable(json.loads(json.dumps(resource)), version)
    assert back == list(criteria)
    assert back[4].rule.low == Decimal("3.5") and back[4].rule.low_open and back[4].rule.high_open


def _leaves(definition: dict) -> list[dict]:
    for operator in ("all-of", "any-of"):
        if operator in definition and "fact" not in definition:
            return [leaf for part in definition[operator] for leaf in _leaves(part)]
    return [definition]


def test_duplicate_link_ids_are_refused():
    criteria = tuple(Criterion.from_dict(c) for c in [
        {"linkId": "x", "kind": "inclusion", "text": "one", "combine": "any-of", "children": [
            {"linkId": "y", "text": "a", "rule": _rule("age", at_least=1)},
            {"linkId": "x", "text": "b", "rule": _rule("age", at_most=9)}]}])
    with pytest.raises(CriterionError, match="linkId x is used twice"):
        evidence_variable(SimpleNamespace(nct_id="NCT1", acronym=None, title="t", criteria=criteria), "R5")


def test_a_link_id_must_be_a_fhir_id():
    criteria = (Criterion.from_dict({"linkId": "inc 1/a", "kind": "inclusion", "text": "t"}),)
    with pytest.raises(CriterionError, match="linkId 'inc 1/a' is not a FHIR id"):
        evidence_variable(SimpleNamespace(nct_id="NCT1", acronym=None, title="t", criteria=criteria), "R4")


def test_no_criteria_is_an_error():
    with pytest.raises(CriterionError, match="NCT1: no criteria"):
        evidence_variable(SimpleNamespace(nct_id="NCT1", acronym=None, title="t", criteria=()), "R4")


# ------------------------------------------------------------------------------------------ bad input read back

def _cmm_em(version: str) -> dict:
    return json.loads(json.dumps(evidence_variable(_trial("NCT02035514"), version)))


def test_reading_names_what_is_wrong():
    r5 = _cmm_em("R5")
    del r5["characteristic"][2]["linkId"]
    with pytest.raises(CriterionError, match=r"EvidenceVariable/.*\.characteristic\[2\]: no linkId"):
        criteria_from_evidence_variable(r5, "R5")

    r5 = _cmm_em("R5")
    r5["characteristic"][1]["definitionByTypeAndValue"]["type"]["coding"] = [{"system": "http://loinc.org",
                                                                              "code": "30525-0"}]
    with pytest.raises(CriterionError, match=r"characteristic\[1\]\.definitionByTypeAndValue\.type: no fact code"):
        criteria_from_evidence_variable(r5, "R5")

    r4 = _cmm_em("R4")
    for extension in r4["characteristic"][1]["extension"]:
        if extension["url"] == RULE:
            extension["valueString"] = "{not json"
    with pytest.raises(CriterionError, match=r"characteristic\[1\]: the .*criterion-rule extension is not JSON"):
        criteria_from_evidence_variable(r4, "R4")

    r4 = _cmm_em("R4")
    r4["contained"] = r4["contained"][1:]
    with pytest.raises(CriterionError, match=r"characteristic\[0\]\.definitionReference: no contained resource #inc-1"):
        criteria_from_evidence_variable(r4, "R4")

    with pytest.raises(CriterionError, match="not an EvidenceVariable"):
        criteria_from_evidence_variable({"resourceType": "Group", "id": "g"}, "R4")


# ------------------------------------------------------------------------------------------ the CodeSystem

@pytest.mark.parametrize("version", VERSIONS)
def test_code_system_validates_and_is_deterministic(version):
    resource = code_system(version)
    assert structure_issues(resource, version) == []
    assert _empty_elements(resource) == []
    assert resource["url"] == MS and resource["content"] == "complete"
    assert resource["id"] == ids.resource_id("CodeSystem", "urn:ietf:rfc:3986", MS) == code_system(version)["id"]
    codes = [c["code"] for c in resource["concept"]]
    assert len(codes) == len(set(codes)) == resource["count"]


def _ms_rows(value) -> list[list]:
    """Every `[ms, code, display]` row in a mapping file."""
    if isinstance(value, dict):
        return [row for item in value.values() for row in _ms_rows(item)]
    if isinstance(value, list):
        if len(value) == 3 and value[0] == "ms":
            return [value]
        return [row for item in value for row in _ms_rows(item)]
    return []


def test_every_local_code_in_the_mappings_is_defined_with_its_display():
    defined = {c["code"]: c["display"] for c in code_system("R4")["concept"]}
    rows = []
    for name in ("terminology.yaml", "ctgov.yaml"):
        rows += _ms_rows(yaml.safe_load((MAPPINGS / name).read_text(encoding="utf-8")))
    assert len(rows) >= 17                           # edss, lesions, KFSS, protocol steps
    assert {code: defined.get(code) for _, code, _ in rows} == {code: display for _, code, display in rows}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_local_code_an_evidence_variable_uses_is_defined(version):
    defined = {c["code"]: c["display"] for c in code_system(version)["concept"]}
    used = {}
    for protocol in PROTOCOLS.values():
        _collect_codings(evidence_variable(protocol, version), used)
    local = {code: display for (system, code), display in used.items() if system == MS}
    assert local and all(defined.get(code) == display for code, display in local.items()), local
    for (system, code), display in used.items():          # the standard codes come from terminology.yaml
        if system != MS:
            name = terminology.concept_of(system, code)
            assert name and display == terminology.concept(name).codings[[c["code"] for c in
                                                                           terminology.concept(name).codings]
                                                                          .index(code)]["display"]


def _collect_codings(value, found: dict) -> None:
    if isinstance(value, dict):
        if "system" in value and "code" in value and "display" in value:
            found[value["system"], value["code"]] = value["display"]
        for item in value.values():
            _collect_codings(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_codings(item, found)


# ------------------------------------------------------------------------------------------ a real server

def test_evidence_variables_survive_a_fhir_server(fhir_client):
    """PUT each trial's R4 EvidenceVariable and the CodeSystem to sekmet (R4B), read them back by id: same criteria."""
    fhir_client.update(code_system("R4"))
    for protocol in PROTOCOLS.values():
        resource = evidence_variable(protocol, "R4")
        fhir_client.update(resource)
        stored = fhir_client.read("EvidenceVariable", resource["id"])
        assert criteria_from_evidence_variable(stored, "R4") == list(protocol.criteria)
    stored = fhir_client.read("CodeSystem", code_system("R4")["id"])
    assert len(stored["concept"]) == code_system("R4")["count"]
