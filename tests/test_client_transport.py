"""Transport on the session: retries with backoff and Retry-After, idempotency rules, timeouts, TLS default."""

from __future__ import annotations

import pytest
import requests
import responses

from fhir_adapter.client import FhirClient, FhirHttpError, RetryPolicy, ServerUnreachable
from fhir_adapter.client.transport import DEFAULT_TIMEOUT, new_session

BASE = "https://fhir.example.org/r4"
OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "transient",
                                                           "diagnostics": "busy"}]}


def client_with(waits: list[float], retries: int = 3, **kwargs) -> FhirClient:
    policy = RetryPolicy(retries=retries, backoff=0.5, jitter=0)
    return FhirClient(BASE, session=new_session(retry=policy, sleep=waits.append, **kwargs))


@responses.activate
def test_429_waits_as_long_as_retry_after_says_then_succeeds():
    responses.get(f"{BASE}/Patient/1", status=429, headers={"Retry-After": "3"}, json=OUTCOME)
    responses.get(f"{BASE}/Patient/1", status=429, headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    waits: list[float] = []
    assert client_with(waits).read("Patient", "1")["id"] == "1"
    assert waits[0] == 3.0
    assert waits[1] == RetryPolicy().max_retry_after  # a far-away date is capped
    assert len(responses.calls) == 3


@responses.activate
def test_503_backs_off_exponentially_and_gives_up_with_the_outcome():
    for _ in range(4):
        responses.get(f"{BASE}/Patient/1", status=503, json=OUTCOME)
    waits: list[float] = []
    with pytest.raises(FhirHttpError) as caught:
        client_with(waits).read("Patient", "1")
    assert waits == [0.5, 1.0, 2.0]
    assert len(responses.calls) == 4
    assert caught.value.status == 503 and "transient: busy" in str(caught.value)


@responses.activate
@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retried_for_reads(status):
    responses.get(f"{BASE}/metadata", status=status)
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
    waits: list[float] = []
    assert client_with(waits).capabilities().fhir_version == "4.0.1"
    assert len(waits) == 1


@responses.activate
def test_connection_reset_is_retried_for_idempotent_requests():
    reset = requests.ConnectionError("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))")
    responses.post(BASE, body=reset)
    responses.post(BASE, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []})
    waits: list[float] = []
    reply = client_with(waits).bundle({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert reply["type"] == "transaction-response"
    assert waits == [0.5]


@responses.activate
def test_a_create_is_not_resent_after_a_reset_or_a_gateway_error():
    """POST Type (server-assigned id) may have been done: resending could duplicate it."""
    reset = requests.ConnectionError("Connection reset by peer")
    responses.post(f"{BASE}/Patient", body=reset)
    waits: list[float] = []
    with pytest.raises(ServerUnreachable, match="Connection reset"):
        client_with(waits).create({"resourceType": "Patient"})
    responses.replace(responses.POST, f"{BASE}/Patient", status=502)
    with pytest.raises(FhirHttpError):
        client_with(waits).create({"resourceType": "Patient"})
    assert waits == []


@responses.activate
def test_a_create_is_resent_after_503_because_the_server_did_not_act():
    responses.post(f"{BASE}/Patient", status=503)
    responses.post(f"{BASE}/Patient", status=201, json={"resourceType": "Patient", "id": "new"})
    waits: list[float] = []
    assert client_with(waits).create({"resourceType": "Patient"})["id"] == "new"
    assert waits == [0.5]


def test_connection_refused_is_retried_then_reported_plainly():
    waits: list[float] = []
    client = FhirClient("http://127.0.0.1:9", session=new_session(retry=RetryPolicy(retries=2, jitter=0),
                                                                   sleep=waits.append))
    with pytest.raises(ServerUnreachable, match="cannot reach the server: Connection refused"):
        client.capabilities()
    assert waits == [0.5, 1.0]


@responses.activate
def test_default_timeouts_and_tls_verification_are_on_every_request():
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    FhirClient(BASE).read("Patient", "1")
    sent = responses.calls[0].request.req_kwargs
    assert sent["timeout"] == DEFAULT_TIMEOUT
    assert sent["verify"] not in (False, None, "")  # True, or the CA bundle named by REQUESTS_CA_BUNDLE
    FhirClient(BASE, timeout=5, verify=False).read("Patient", "1")
    assert responses.calls[1].request.req_kwargs["timeout"] == 5
    assert responses.calls[1].request.req_kwargs["verify"] is False


@responses.activate
def test_requests_send_fhir_json():
    responses.put(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    FhirClient(BASE).update({"resourceType": "Patient", "id": "1"})
    headers = responses.calls[0].request.headers
    assert headers["Content-Type"] == "application/fhir+json"
    assert headers["Accept"] == "application/fhir+json"
    assert headers["User-Agent"].startswith("fhir-adapter/")
