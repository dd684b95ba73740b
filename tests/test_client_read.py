"""Reading: capabilities, read by id, search with paging, one patient's data, error reporting."""

from __future__ import annotations

import json

import pytest
import responses
from responses import matchers

from fhir_adapter.client import (
    AccessDenied,
    CapabilityError,
    FhirClient,
    FhirHttpError,
    ResourceGone,
    ResourceNotFound,
    UnexpectedAnswer,
)

BASE = "https://fhir.example.org/r4"


def statement(*resources: dict, interactions=("transaction", "batch")) -> dict:
    return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "software": {"name": "Test", "version": "1"},
            "rest": [{"mode": "server", "interaction": [{"code": c} for c in interactions],
                      "resource": list(resources)}]}


def searchable(rtype: str, *params: str, operations=()) -> dict:
    return {"type": rtype, "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [{"name": p, "type": "reference"} for p in params],
            "operation": [{"name": o, "definition": f"http://hl7.org/fhir/OperationDefinition/{rtype}-{o}"}
                          for o in operations]}


def page(resources: list[dict], next_url: str | None = None) -> dict:
    links = [{"relation": "self", "url": "x"}] + ([{"relation": "next", "url": next_url}] if next_url else [])
    return {"resourceType": "Bundle", "type": "searchset", "link": links,
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources]}


def obs(n: int) -> dict:
    return {"resourceType": "Observation", "id": f"o{n}"}


@responses.activate
def test_capabilities_are_read_once_and_describe_the_server():
    responses.get(f"{BASE}/metadata", json=statement(searchable("Patient", "identifier", operations=["everything"])))
    client = FhirClient(BASE)
    caps = client.capabilities()
    assert client.capabilities() is caps and len(responses.calls) == 1
    assert (caps.fhir_version, caps.transaction, caps.batch, caps.software) == ("4.0.1", True, True, "Test 1")
    assert caps.has_operation("Patient", "$everything") and not caps.has_operation("Observation", "everything")
    assert caps.searchable("Patient", "identifier") and not caps.searchable("Patient", "name")


@responses.activate
def test_a_server_of_another_fhir_version_is_refused_clearly():
    responses.get(f"{BASE}/metadata", json={**statement(), "fhirVersion": "3.0.2"})
    with pytest.raises(CapabilityError, match="speaks FHIR 3.0.2, which cannot take R4 resources"):
        FhirClient(BASE).require("R4")


@responses.activate
def test_metadata_that_is_not_a_capability_statement_is_a_clear_error():
    responses.get(f"{BASE}/metadata", json={"hello": "world"})
    with pytest.raises(CapabilityError, match="is this the FHIR base URL"):
        FhirClient(BASE).capabilities()


@responses.activate
def test_read_errors_carry_the_operation_outcome():
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "not-found", "diagnostics": "Patient/x not found"}]}
    responses.get(f"{BASE}/Patient/x", status=404, json=outcome)
    responses.get(f"{BASE}/Patient/y", status=410, json=outcome)
    responses.get(f"{BASE}/Patient/z", status=500, body="<html>boom</html>")
    client = FhirClient(BASE)
    with pytest.raises(ResourceNotFound) as missing:
        client.read("Patient", "x")
    assert missing.value.outcome == outcome and "not-found: Patient/x not found" in str(missing.value)
    with pytest.raises(ResourceGone):
        client.read("Patient", "y")
    with pytest.raises(FhirHttpError, match="HTTP 500: <html>boom</html>"):
        client.read("Patient", "z")


@responses.activate
def test_search_follows_next_links_and_sends_strict_handling():
    responses.get(f"{BASE}/Observation", json=page([obs(1), obs(2)], f"{BASE}?_getpages=abc&page=2"),
                  match=[matchers.query_param_matcher({"subject": "Patient/1", "code": ["a", "b"],
                                                       "value-quantity": "gt5"}),
                         matchers.header_matcher({"Prefer": "handling=strict"})])
    responses.get(f"{BASE}?_getpages=abc&page=2", json=page([obs(3)], f"{BASE}?_getpages=abc&page=3"))
    responses.get(f"{BASE}?_getpages=abc&page=3", json=page([obs(4)]))
    found = FhirClient(BASE).search("Observation", {"value-quantity": "gt5"}, subject="Patient/1", code=["a", "b"])
    assert [o["id"] for o in found] == ["o1", "o2", "o3", "o4"]
    assert len(responses.calls) == 3


@responses.activate
def test_search_leaves_out_included_resources_and_outcomes():
    bundle = page([obs(1)])
    bundle["entry"] += [{"resource": {"resourceType": "Patient", "id": "1"}, "search": {"mode": "include"}},
                        {"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}}]
    responses.get(f"{BASE}/Observation", json=bundle)
    assert [r["id"] for r in FhirClient(BASE).search("Observation", _include="Observation:subject")] == ["o1"]


@responses.activate
def test_a_next_link_to_another_server_is_not_followed():
    responses.get(f"{BASE}/Observation", json=page([obs(1)], "https://elsewhere.example.com/fhir?page=2"))
    found = FhirClient(BASE).search("Observation")
    assert next(found)["id"] == "o1"
    with pytest.raises(FhirHttpError, match="refusing to follow a link to another server"):
        next(found)


@responses.activate
def test_patient_data_uses_everything_where_declared():
    responses.get(f"{BASE}/metadata", json=statement(searchable("Patient", "identifier", operations=["everything"])))
    responses.get(f"{BASE}/Patient/1/$everything", json=page(
        [{"resourceType": "Patient", "id": "1"}, obs(1), {"resourceType": "Encounter", "id": "e"}],
        f"{BASE}/Patient/1/$everything?page=2"))
    responses.get(f"{BASE}/Patient/1/$everything?page=2", json=page([obs(2)]))
    data = FhirClient(BASE).patient_data("1")
    assert [(r["resourceType"], r["id"]) for r in data] == [("Patient", "1"), ("Observation", "o1"),
                                                           ("Observation", "o2")]


@responses.activate
def test_patient_data_searches_each_type_without_everything():
    responses.get(f"{BASE}/metadata", json=statement(searchable("Patient", "_id"), searchable("Observation", "patient"),
                                                     searchable("Condition", "subject")))
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    responses.get(f"{BASE}/Observation", json=page([obs(1)]),
                  match=[matchers.query_param_matcher({"patient": "Patient/1", "_count": "200"})])
    responses.get(f"{BASE}/Condition", json=page([{"resourceType": "Condition", "id": "c1"}]),
                  match=[matchers.query_param_matcher({"subject": "Patient/1", "_count": "200"})])
    data = FhirClient(BASE).patient_data("1", types=["Condition", "Observation", "MedicationStatement"])
    assert sorted(r["id"] for r in data) == ["1", "c1", "o1"]  # MedicationStatement: not on this server at all
    reads = [c.request.url for c in responses.calls if c.request.url.startswith(f"{BASE}/Patient/")]
    data = FhirClient(BASE).patient_data("1", types=["Observation"], patient={"resourceType": "Patient", "id": "1"})
    assert sorted(r["id"] for r in data) == ["1", "o1"]
    assert [c.request.url for c in responses.calls if c.request.url.startswith(f"{BASE}/Patient/")] == reads


@responses.activate
def test_patient_data_refuses_a_type_the_server_holds_but_cannot_search_by_patient():
    responses.get(f"{BASE}/metadata", json=statement(searchable("Patient", "_id"), searchable("Observation", "code")))
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    with pytest.raises(CapabilityError, match="cannot search Observation by patient or subject"):
        FhirClient(BASE).patient_data("1", types=["Observation"])


@responses.activate
def test_read_many_reads_by_id_in_batches_or_one_by_one_and_says_what_is_not_there():
    responses.get(f"{BASE}/metadata", json=statement())
    subject = {"resourceType": "ResearchSubject", "id": "a"}
    responses.post(BASE, json={"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"resource": subject, "response": {"status": "200 OK"}}, {"response": {"status": "404 Not Found"}},
        {"response": {"status": "410 Gone"}}]})
    assert FhirClient(BASE).read_many("ResearchSubject", ["a", "b", "c", "a"]) == {"a": subject, "b": None, "c": None}
    sent = json.loads(responses.calls[1].request.body)
    assert [e["request"] for e in sent["entry"]] == [{"method": "GET", "url": f"ResearchSubject/{i}"} for i in "abc"]

    responses.replace(responses.POST, BASE, json={"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"response": {"status": "403 Forbidden", "outcome": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "forbidden", "diagnostics": "no read scope"}]}}}]})
    with pytest.raises(AccessDenied, match="GET ResearchSubject/a: HTTP 403: error forbidden: no read scope"):
        FhirClient(BASE).read_many("ResearchSubject", ["a"])


@responses.activate
def test_read_many_without_batch_reads_one_by_one():
    responses.get(f"{BASE}/metadata", json=statement(interactions=("transaction",)))
    responses.get(f"{BASE}/ResearchSubject/a", json={"resourceType": "ResearchSubject", "id": "a"})
    responses.get(f"{BASE}/ResearchSubject/b", status=404)
    assert FhirClient(BASE).read_many("ResearchSubject", ["a", "b"]) == {
        "a": {"resourceType": "ResearchSubject", "id": "a"}, "b": None}


@responses.activate
def test_a_search_answered_200_with_an_operation_outcome_is_an_error_naming_the_request():
    """Not an empty page: the request and what the server said."""
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "processing", "diagnostics": "invalid search parameter"}]}
    responses.get(f"{BASE}/Observation", json=outcome)
    with pytest.raises(UnexpectedAnswer) as caught:
        list(FhirClient(BASE).search("Observation", subject="Patient/1"))
    assert str(caught.value) == ("GET Observation: HTTP 200, but OperationOutcome instead of a Bundle: "
                                 "error processing: invalid search parameter")
    assert caught.value.outcome == outcome
    responses.get(f"{BASE}/Condition", json=page([obs(1)], f"{BASE}?page=2"))
    responses.get(f"{BASE}?page=2", json={"hello": "world"})
    with pytest.raises(UnexpectedAnswer, match=r"^GET .*: HTTP 200, but no FHIR resource instead of a Bundle$"):
        list(FhirClient(BASE).search("Condition"))
