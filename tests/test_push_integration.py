"""Push against the real sekmet server: a mapped cohort and trial-like resources go in, come back identical,
a second push changes nothing (same versionIds), a refused resource is reported with its OperationOutcome,
conditional writes, paging, one patient's data, SMART Backend Services and bearer auth end to end."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fhir_adapter.cli import main
from fhir_adapter.cli.push import read_inputs
from fhir_adapter.client import (
    AccessDenied,
    FhirClient,
    ResourceNotFound,
    SmartBackendAuth,
    bearer_from_env,
    public_jwk,
)
from fhir_adapter.ehr import generate_cohort, map_extract
from fhir_adapter.server import LocalServer

PATIENTS = 25
COHORT_TYPES = ("Patient", "Condition", "Observation", "MedicationStatement")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, list[tuple[str, dict]]]:
    """A small synthetic cohort, mapped to NDJSON by the project's own EHR mapping."""
    root = tmp_path_factory.mktemp("cohort")
    extract = generate_cohort(PATIENTS, 11, root / "extract")
    summary = map_extract(extract, root / "fhir")
    assert summary.rejected == 0
    items, skipped = read_inputs([str(root / "fhir")])
    assert [p.name for p in skipped] == ["summary.json"]
    return root / "fhir", items


def trial_resources() -> list[dict]:
    """Trial-shaped resources of the kinds `trials map` writes (R4B-valid), linked as the design describes."""
    nct = "https://clinicaltrials.gov"
    return [
        {"resourceType": "ResearchStudy", "id": "it-umbrella", "status": "completed", "title": "MESEMS umbrella",
         "identifier": [{"system": "https://w3id.org/fhir-adapter/sid/protocol", "value": "MESEMS"}]},
        {"resourceType": "ResearchStudy", "id": "it-genova", "status": "completed", "title": "MESEMS Genova",
         "identifier": [{"system": nct, "value": "NCT01854957"}],
         "partOf": [{"reference": "ResearchStudy/it-umbrella"}],
         "protocol": [{"reference": "PlanDefinition/it-plan"}], "enrollment": [{"reference": "Group/it-group"}]},
        {"resourceType": "PlanDefinition", "id": "it-plan", "status": "active", "title": "Crossover schedule",
         "action": [{"title": "Infusion", "timingDuration": {"value": 0, "unit": "wk"}}]},
        {"resourceType": "Group", "id": "it-group", "type": "person", "actual": False,
         "characteristic": [{"code": {"text": "EDSS"}, "valueRange": {"low": {"value": 3}, "high": {"value": 6.5}},
                             "exclude": False}]},
        {"resourceType": "EvidenceVariable", "id": "it-ev", "status": "active", "description": "Eligibility",
         "characteristic": [{"description": "Age 18 to 50", "definitionExpression": {
             "language": "text/fhirpath", "expression": "Patient.birthDate"}, "exclude": False}]},
    ]


def versions(client: FhirClient, types=COHORT_TYPES) -> dict[str, str]:
    """Every resource of the types on the server: Type/id -> versionId (searching, page after page)."""
    found = {}
    for rtype in types:
        for resource in client.search(rtype, _count=200):
            found[f"{rtype}/{resource['id']}"] = resource["meta"]["versionId"]
    return found


def without_meta(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "meta"}


def test_a_cohort_comes_back_identical_and_a_second_push_changes_nothing(fresh_fhir_server, cohort):
    _, items = cohort
    with FhirClient(fresh_fhir_server) as client:
        first = client.push(items, chunk_size=50, workers=2)
        assert (first.total, first.created, first.failed, first.unchanged) == (len(items), len(items), 0, 0)

        before = versions(client)
        assert Counter(key.split("/")[0] for key in before) == Counter(r["resourceType"] for _, r in items)
        for _, resource in items:
            assert without_meta(client.read(resource["resourceType"], resource["id"])) == resource

        second = client.push(items, chunk_size=50, workers=2)
        assert (second.sent, second.created, second.updated, second.unchanged) == (0, 0, 0, len(items))
        assert versions(client) == before  # no new resources, no new versions

        edited = copy.deepcopy(items)
        where, observation = next((w, r) for w, r in edited if r["resourceType"] == "Observation")
        observation["status"] = "amended"
        third = client.push(edited)
        assert (third.updated, third.unchanged, third.created) == (1, len(items) - 1, 0)
        after = versions(client)
        changed = {key for key in after if after[key] != before[key]}
        assert changed == {f"Observation/{observation['id']}"} and after[f"Observation/{observation['id']}"] == "2"


def test_trial_resources_are_pushed_in_order_and_read_back_by_id(fhir_client):
    resources = trial_resources()
    result = fhir_client.push(list(reversed(resources)), chunk_size=2, workers=3)
    assert result.ok and result.created + result.updated + result.unchanged == len(resources)
    stored = {r["id"]: fhir_client.read(r["resourceType"], r["id"]) for r in resources}
    assert all(without_meta(stored[r["id"]]) == r for r in resources)
    again = fhir_client.push(resources)
    assert again.unchanged == len(resources) and again.sent == 0
    assert {r["id"]: fhir_client.read(r["resourceType"], r["id"])["meta"]["versionId"] for r in resources} == \
        {i: s["meta"]["versionId"] for i, s in stored.items()}


def test_a_refused_resource_is_reported_with_its_outcome_and_can_be_pushed_again(fhir_server, tmp_path, capsys):
    good = [{"resourceType": "Patient", "id": f"it-refused-{n}", "gender": "female"} for n in range(4)]
    bad = {"resourceType": "Patient", "id": "it-refused-bad", "birthDate": "last spring"}
    source = tmp_path / "patients.ndjson"
    source.write_text("\n".join(json.dumps(r) for r in [*good[:2], bad, *good[2:]]) + "\n")
    failed = tmp_path / "out" / "failed.ndjson"

    status = main(["push", str(source), "--server", fhir_server, "--failed", str(failed), "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 1
    assert f"FAILED Patient/it-refused-bad ({source}:3): 400" in err
    assert "Patient.birthDate" in err  # the server's OperationOutcome, shown
    assert "sent 5, created 4, updated 0, unchanged 0, failed 1" in out
    assert [json.loads(line) for line in failed.read_text().splitlines()] == [bad]
    assert "Patient.birthDate" in failed.with_suffix(".txt").read_text()
    with FhirClient(fhir_server) as client:
        assert all(client.read("Patient", r["id"])["gender"] == "female" for r in good)

    failed.write_text(json.dumps({**bad, "birthDate": "1990-04-01"}) + "\n")
    assert main(["push", str(failed), "--server", fhir_server, "--no-progress"]) == 0
    assert "created 1" in capsys.readouterr().out


def test_conditional_writes_let_the_server_choose_ids(fresh_fhir_server, cohort):
    _, items = cohort
    trial = trial_resources()
    with FhirClient(fresh_fhir_server) as client:
        result = client.push([*items, *trial], id_strategy="conditional")
        assert result.ok and result.created == len(items) + len(trial)
        notes = " ".join(result.notices)
        assert "ResearchStudy: the server declares no conditional update" in notes  # sekmet cannot search them
        patients = {p["identifier"][0]["value"]: p["id"] for p in client.search("Patient", _count=100)}
        ours = {r["id"]: r["identifier"][0]["value"] for _, r in items if r["resourceType"] == "Patient"}
        assert len(patients) == PATIENTS and not set(patients.values()) & set(ours)  # ids are the server's
        for observation in client.search("Observation", _count=100):
            assert observation["subject"]["reference"].removeprefix("Patient/") in patients.values()
        assert client.read("ResearchStudy", "it-genova")["partOf"] == [{"reference": "ResearchStudy/it-umbrella"}]
        again = client.push([*items, *trial], id_strategy="conditional")
        assert again.unchanged == len(items) + len(trial) and again.sent == 0


def test_search_pages_and_one_patients_data(fhir_client, cohort):
    _, items = cohort
    assert fhir_client.push(items).ok
    mine = {r["id"] for _, r in items if r["resourceType"] == "Observation"}
    pages = list(fhir_client.search_pages("Observation", _count=7))
    assert len(pages) > 2
    found = {e["resource"]["id"] for p in pages for e in p.get("entry", [])}
    assert mine <= found

    patient = next(r for _, r in items if r["resourceType"] == "Patient")
    expected = {(r["resourceType"], r["id"]) for _, r in items
                if r["resourceType"] == "Patient" and r["id"] == patient["id"]
                or r.get("subject", {}).get("reference") == f"Patient/{patient['id']}"}
    got = fhir_client.patient_data(patient["id"])
    assert {(r["resourceType"], r["id"]) for r in got} == expected


def test_smart_backend_services_end_to_end():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client_entry = {"client_id": "fhir-adapter-test", "jwks": {"keys": [public_jwk(key)]}, "scopes": "system/*.*"}
    with LocalServer(overrides={"server_auth": {"types": ["smart"], "smart_clients": [client_entry]}}) as server:
        with pytest.raises(AccessDenied):
            FhirClient(server.base_url).read("Patient", "anything")
        auth = SmartBackendAuth("fhir-adapter-test", key)  # token endpoint discovered from the server
        with FhirClient(server.base_url, auth=auth) as client:
            result = client.push(trial_resources())
            assert result.ok and result.created == len(trial_resources())
            assert client.read("ResearchStudy", "it-genova")["title"] == "MESEMS Genova"
        assert auth.fetches == 1 and auth.token_url.endswith("/auth/token")


def test_bearer_token_from_the_environment_end_to_end(monkeypatch):
    monkeypatch.setenv("IT_FHIR_TOKEN", "loopback-test-token")
    with LocalServer(overrides={"server_auth": {"types": ["bearer"], "tokens": ["loopback-test-token"]}}) as server:
        with FhirClient(server.base_url, auth=bearer_from_env("IT_FHIR_TOKEN")) as client:
            assert client.push([{"resourceType": "Patient", "id": "bearer-1"}]).created == 1
        monkeypatch.setenv("IT_FHIR_TOKEN", "wrong")
        with pytest.raises(AccessDenied), FhirClient(server.base_url, auth=bearer_from_env("IT_FHIR_TOKEN")) as c:
            c.read("Patient", "bearer-1")


def test_a_server_that_cannot_take_the_fhir_version_is_a_clear_error(fhir_server, tmp_path, capsys):
    source = tmp_path / "patient.ndjson"
    source.write_text(json.dumps({"resourceType": "Patient", "id": "it-r5-refused"}) + "\n")
    status = main(["push", str(source), "--server", fhir_server, "--fhir-version", "R5", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2  # the server cannot take what is sent: nothing ran
    assert "speaks FHIR 4.0.1, which cannot take R5 resources" in err
    with FhirClient(fhir_server) as client, pytest.raises(ResourceNotFound):
        client.read("Patient", "it-r5-refused")  # nothing was sent


def test_cli_conditional_id_strategy_writes_under_server_ids_and_a_rerun_is_unchanged(fhir_server, tmp_path,
                                                                                       capsys):
    system = "https://w3id.org/fhir-adapter/test/cli-conditional"
    patients = [{"resourceType": "Patient", "id": f"cli-cond-{n}", "identifier": [{"system": system, "value": f"C{n}"}],
                 "gender": "male"} for n in range(3)]
    source = tmp_path / "patients.ndjson"
    source.write_text("\n".join(json.dumps(p) for p in patients) + "\n")
    args = ["push", str(source), "--server", fhir_server, "--id-strategy", "conditional", "--no-progress"]
    assert main(args) == 0
    assert "sent 3, created 3, updated 0, unchanged 0, failed 0" in capsys.readouterr().out
    with FhirClient(fhir_server) as client:
        found = list(client.search("Patient", identifier=f"{system}|C1"))
        assert len(found) == 1 and found[0]["id"] != "cli-cond-1"  # the server chose the id
        with pytest.raises(ResourceNotFound):
            client.read("Patient", "cli-cond-1")
    assert main(args) == 0
    assert "sent 0, created 0, updated 0, unchanged 3, failed 0" in capsys.readouterr().out


def test_the_mapped_trials_go_in_through_the_cli_come_back_identical_and_a_rerun_changes_nothing(
        fhir_server, tmp_path, capsys):
    from fhir_adapter.protocol import map_trials

    bundles = map_trials([], tmp_path / "trials", "R4")
    resources = {(e["resource"]["resourceType"], e["resource"]["id"]): e["resource"]
                 for path in bundles for e in json.loads(Path(path).read_text())["entry"]}
    assert Counter(t for t, _ in resources)["ResearchStudy"] >= 5  # the four trials and the MESEMS umbrella
    args = ["push", str(tmp_path / "trials"), "--server", fhir_server, "--no-progress",
            "--failed", str(tmp_path / "failed.ndjson")]
    assert main(args) == 0
    assert "failed 0" in capsys.readouterr().out
    with FhirClient(fhir_server) as client:
        stored = {key: client.read(*key) for key in resources}
    assert {key: without_meta(r) for key, r in stored.items()} == resources
    assert main(args) == 0
    assert f"sent 0, created 0, updated 0, unchanged {len(resources)}, failed 0" in capsys.readouterr().out
    with FhirClient(fhir_server) as client:
        assert {key: client.read(*key)["meta"]["versionId"] for key in resources} == \
            {key: r["meta"]["versionId"] for key, r in stored.items()}
