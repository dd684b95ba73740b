"""The ClinicalTrials.gov API v2 reader on small hand-made records with the shapes real records have: missing
arms, ages in weeks or "120 Years", crossover without arm groups, observational studies, odd characters, modules
of the wrong type. A warning names the field; only a study without its NCT id is an error."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from fhir_adapter.protocol.bundle import protocol_resources
from fhir_adapter.protocol.ctgov import parse_study, read_studies
from fhir_adapter.protocol.model import Age
from fhir_adapter.sources import InputError
from fhir_adapter.validation.structure import structure_issues


def study(**modules) -> dict:
    ident = {"nctId": "NCT00000001", "briefTitle": "A small study"}
    ident.update(modules.pop("identificationModule", {}))
    return {"protocolSection": {"identificationModule": ident, "statusModule": {"overallStatus": "COMPLETED"},
                                "designModule": {"studyType": "INTERVENTIONAL"}, **modules}}


def warned(protocol, field: str) -> list[str]:
    return [w for w in protocol.warnings if f": {field}:" in w]


def valid_everywhere(protocol) -> None:
    for version in ("R4", "R5"):
        resources, _ = protocol_resources(protocol, version)
        for resource in resources:
            assert structure_issues(resource, version) == [], (version, resource["resourceType"])


def test_a_study_without_arms_or_locations_reads_and_maps():
    protocol = parse_study(study(), "min.json")
    assert (protocol.nct_id, protocol.title, protocol.status, protocol.arms, protocol.sites) == (
        "NCT00000001", "A small study", "COMPLETED", (), ())
    assert protocol.warnings == ()
    valid_everywhere(protocol)


@pytest.mark.parametrize(("text", "expected"), [
    ("6 Weeks", Age(Decimal(6), "wk")), ("18 Years", Age(Decimal(18), "a")), ("1 Year", Age(Decimal(1), "a")),
    ("6 Hours", Age(Decimal(6), "h")), ("24 Months", Age(Decimal(24), "mo")), ("3 Days", Age(Decimal(3), "d")),
])
def test_ages_in_any_unit(text, expected):
    protocol = parse_study(study(eligibilityModule={"minimumAge": text}), "ages.json")
    assert protocol.minimum_age == expected
    assert protocol.warnings == ()


def test_120_years_is_no_upper_limit_and_odd_ages_are_warned_not_fatal():
    protocol = parse_study(study(eligibilityModule={"minimumAge": "eighteen", "maximumAge": "120 Years"}), "a.json")
    assert (protocol.minimum_age, protocol.maximum_age) == (None, None)
    assert warned(protocol, "protocolSection.eligibilityModule.maximumAge") == [
        "a.json: protocolSection.eligibilityModule.maximumAge: 120 Years read as no upper limit"]
    assert "'eighteen'" in warned(protocol, "protocolSection.eligibilityModule.minimumAge")[0]
    assert parse_study(study(eligibilityModule={"maximumAge": "N/A"}), "na.json").warnings == ()


def test_crossover_without_arm_groups_is_warned():
    record = study(designModule={"studyType": "INTERVENTIONAL", "phases": ["PHASE3"],
                                 "designInfo": {"allocation": "RANDOMIZED", "interventionModel": "CROSSOVER"}})
    protocol = parse_study(record, "x.json")
    assert protocol.model == "CROSSOVER" and protocol.arms == ()
    assert "crossover design without arm groups" in warned(
        protocol, "protocolSection.armsInterventionsModule.armGroups")[0]
    valid_everywhere(protocol)


def test_observational_study_has_no_phase_and_its_model_is_kept_as_text():
    record = study(designModule={"studyType": "OBSERVATIONAL",
                                 "designInfo": {"observationalModel": "COHORT", "timePerspective": "PROSPECTIVE"},
                                 "enrollmentInfo": {"count": 150, "type": "ESTIMATED"}},
                   eligibilityModule={"minimumAge": "5 Weeks", "maximumAge": "24 Months", "sex": "ALL"})
    protocol = parse_study(record, "obs.json")
    assert (protocol.study_type, protocol.phases, protocol.enrollment) == ("OBSERVATIONAL", (), 150)
    assert warned(protocol, "protocolSection.designModule.designInfo.observationalModel")
    resources, _ = protocol_resources(protocol, "R5")
    study_r5 = resources[0]
    assert "phase" not in study_r5 and study_r5["recruitment"] == {"targetNumber": 150}
    valid_everywhere(protocol)


def test_control_characters_are_removed_and_unicode_is_kept():
    record = study(identificationModule={"briefTitle": "Fatigue\x07 in MS \u00e5 \u03bcg"},
                   conditionsModule={"conditions": ["Multiple Sclerosis", "Fatigue\x00"]})
    protocol = parse_study(record, "odd.json")
    assert protocol.title == "Fatigue in MS \u00e5 \u03bcg"
    assert protocol.conditions == ("Multiple Sclerosis", "Fatigue")
    assert protocol.condition_concepts == ("multiple-sclerosis",)
    assert warned(protocol, "protocolSection.identificationModule.briefTitle") == [
        "odd.json: protocolSection.identificationModule.briefTitle: control characters removed"]
    valid_everywhere(protocol)


def test_modules_of_the_wrong_shape_are_warned_and_skipped():
    record = study(armsInterventionsModule=[], contactsLocationsModule={"locations": [{"city": "Bergen"}, "x", {}]},
                   sponsorCollaboratorsModule={"leadSponsor": {"name": 7}})
    protocol = parse_study(record, "shape.json")
    assert warned(protocol, "protocolSection.armsInterventionsModule")
    assert [s.facility for s in protocol.sites] == ["Bergen"]
    assert warned(protocol, "protocolSection.contactsLocationsModule.locations[1]")
    assert warned(protocol, "protocolSection.contactsLocationsModule.locations[2]")
    assert protocol.sponsor.name == "7"
    valid_everywhere(protocol)


def test_unknown_codes_are_kept_as_text_with_a_warning():
    record = study(designModule={"studyType": "INTERVENTIONAL", "phases": ["PHASE5"],
                                 "designInfo": {"primaryPurpose": "ECT", "maskingInfo": {"masking": "SEXTUPLE"}}},
                   statusModule={"overallStatus": "PAUSED", "startDateStruct": {"date": "June 2020"}})
    protocol = parse_study(record, "codes.json")
    for field in ("protocolSection.designModule.phases", "protocolSection.designModule.designInfo.primaryPurpose",
                  "protocolSection.designModule.designInfo.maskingInfo.masking",
                  "protocolSection.statusModule.overallStatus", "protocolSection.statusModule.startDateStruct.date"):
        assert warned(protocol, field), field
    resources, warnings = protocol_resources(protocol, "R4")
    assert resources[0]["phase"] == {"text": "PHASE5"} and resources[0]["status"] == "active"
    assert "codes.json: protocolSection.statusModule.overallStatus: 'PAUSED' has no ResearchStudy.status code; " \
           "written as 'active'" in warnings
    resources, warnings = protocol_resources(protocol, "R5")
    assert resources[0]["status"] == "unknown" and "progressStatus" not in resources[0]
    assert "codes.json: protocolSection.statusModule.overallStatus: 'PAUSED' has no ResearchStudy.status code; " \
           "written as 'unknown' with no progressStatus" in warnings
    valid_everywhere(protocol)


@pytest.mark.parametrize(("record", "message"), [
    ({"studies": []}, "x.json: protocolSection: missing"),
    ({"protocolSection": {"identificationModule": {"briefTitle": "no id"}}},
     "x.json: protocolSection.identificationModule.nctId: missing"),
    ([1, 2], "x.json: protocolSection: missing"),
])
def test_a_study_without_protocol_section_or_nct_id_is_an_error_naming_file_and_field(record, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        parse_study(record, "x.json")


def test_a_search_page_is_read_study_by_study(tmp_path):
    page = {"studies": [study(), {"protocolSection": {"identificationModule": {"nctId": "NCT00000002"}}}],
            "nextPageToken": "abc"}
    path = tmp_path / "page.json"
    path.write_text(json.dumps(page), encoding="utf-8")
    protocols = read_studies(path)
    assert [p.nct_id for p in protocols] == ["NCT00000001", "NCT00000002"]
    assert protocols[1].title == "NCT00000002"
    assert any(f"{path}#studies[1]: protocolSection.identificationModule.briefTitle" in w
               for w in protocols[1].warnings)


def test_identifiers_parties_and_references_are_read():
    record = study(
        identificationModule={"orgStudyIdInfo": {"id": "12 394 03"}, "organization": {"fullName": "CHU"},
                              "secondaryIdInfos": [{"id": "2011-001295-19", "type": "EUDRACT_NUMBER"}, {"type": "x"}]},
        sponsorCollaboratorsModule={"leadSponsor": {"name": "CHU"}, "collaborators": [{"name": "Ulm"}]},
        contactsLocationsModule={"overallOfficials": [{"name": "Dr A", "role": "PRINCIPAL_INVESTIGATOR"},
                                                      {"name": "Dr B", "role": "SOMETHING"}]},
        referencesModule={"references": [{"pmid": "31072380", "citation": "Uccelli A. Trials. doi: 10.1186/x-1."}]})
    protocol = parse_study(record, "ids.json")
    assert [(i.kind, i.value) for i in protocol.identifiers] == [("org", "12 394 03"), ("eudract", "2011-001295-19")]
    assert [(p.name, p.role) for p in protocol.parties] == [("CHU", "lead-sponsor"), ("Ulm", "collaborator"),
                                                           ("Dr A", "primary-investigator")]
    assert warned(protocol, "protocolSection.contactsLocationsModule.overallOfficials[1]")
    assert warned(protocol, "protocolSection.identificationModule.secondaryIdInfos[1].id")
    assert protocol.citations[0].doi == "10.1186/x-1" and protocol.citations[0].pmid == "31072380"
    r4 = protocol_resources(protocol, "R4")[0][0]
    assert r4["relatedArtifact"][0]["url"] == "https://doi.org/10.1186/x-1"
    assert r4["note"] == [{"text": "Collaborators: Ulm"}]
    r5 = protocol_resources(protocol, "R5")[0][0]
    assert [p["role"]["coding"][0]["code"] for p in r5["associatedParty"]] == [
        "lead-sponsor", "collaborator", "primary-investigator"]
    valid_everywhere(protocol)


@pytest.mark.parametrize(("overall", "last", "r4", "r5", "progress"), [
    ("RECRUITING", None, "active", "active", "recruiting"),
    ("NOT_YET_RECRUITING", None, "approved", "active", "not-yet-recruiting"),
    ("ACTIVE_NOT_RECRUITING", None, "closed-to-accrual", "active", "active-but-not-recruiting"),
    ("TERMINATED", None, "administratively-completed", "retired", "administratively-completed"),
    ("WITHDRAWN", None, "withdrawn", "retired", "withdrawn"),
    ("UNKNOWN", "RECRUITING", "active", "active", "recruiting"),
    ("UNKNOWN", None, "active", "unknown", None),
])
def test_status_in_r4_and_r5(overall, last, r4, r5, progress):
    record = study(statusModule={"overallStatus": overall, **({"lastKnownStatus": last} if last else {})})
    protocol = parse_study(record, "s.json")
    assert protocol_resources(protocol, "R4")[0][0]["status"] == r4
    study_r5 = protocol_resources(protocol, "R5")[0][0]
    assert study_r5["status"] == r5
    states = [s["state"]["coding"][0]["code"] for s in study_r5.get("progressStatus", [])]
    assert states == ([progress] if progress else [])


def test_both_phases_of_phase1_phase2_are_kept_in_one_code():
    protocol = parse_study(study(designModule={"studyType": "INTERVENTIONAL", "phases": ["PHASE1", "PHASE2"]}), "p")
    for version in ("R4", "R5"):
        phase = protocol_resources(protocol, version)[0][0]["phase"]
        assert phase["coding"][0]["code"] == "phase-1-phase-2"


def test_narratives_escape_the_registry_text():
    record = study(identificationModule={"briefTitle": "MSC <script>alert(1)</script> & MS"},
                   armsInterventionsModule={"armGroups": [{"label": "A <b>", "description": "x < y"}]})
    protocol = parse_study(record, "html.json")
    for resource in protocol_resources(protocol, "R4")[0]:
        div = resource["text"]["div"]
        assert "<script>" not in div and "<b>" not in div, resource["resourceType"]
    div = protocol_resources(protocol, "R4")[0][0]["text"]["div"]
    assert "MSC &lt;script&gt;alert(1)&lt;/script&gt; &amp; MS" in div and "A &lt;b&gt;: x &lt; y" in div
    valid_everywhere(protocol)
