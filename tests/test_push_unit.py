"""Push logic against a small fake FHIR server (HTTP mocked with `responses`): chunking, dependency waves,
unchanged detection, conditional writes and their fallback, per-entry failures, counts, re-pushable failures.
The same behaviours against the real sekmet server are in test_push_integration.py."""

from __future__ import annotations

import json
import threading
import uuid
from urllib.parse import parse_qs, unquote

import pytest
import requests
import responses

from fhir_adapter import sources
from fhir_adapter.client import FhirClient, RetryPolicy
from fhir_adapter.client.transport import new_session

BASE = "https://fhir.example.org/r4"


def outcome(text: str, where: str) -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "structure", "diagnostics": text, "expression": [where]}]}


class FakeServer:
    """Enough of a FHIR server for push: batch/transaction of GET and PUT (by id or conditional on identifier).
    Refuses a Patient whose birthDate is "bad" (400 with an OperationOutcome). Records every bundle."""

    def __init__(self, conditional_types=("Patient", "Observation"), transaction=True, batch=True) -> None:
        self.store: dict[tuple[str, str], dict] = {}
        self.bundles: list[dict] = []
        self.lock = threading.Lock()
        self.unavailable = 0        # answer this many bundle requests with 503
        self.down_after: int | None = None  # refuse connections after this many bundle requests
        resources = [{"type": t, "conditionalUpdate": True, "searchParam": [{"name": "identifier", "type": "token"}],
                      "interaction": [{"code": "update"}, {"code": "search-type"}]} for t in conditional_types]
        interactions = [{"code": c} for c, on in (("transaction", transaction), ("batch", batch)) if on]
        self.statement = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                          "rest": [{"mode": "server", "interaction": interactions, "resource": resources}]}

    def install(self) -> None:
        responses.get(f"{BASE}/metadata", json=self.statement)
        responses.add_callback(responses.POST, BASE, callback=self.bundle)

    def writes(self) -> list[dict]:
        return [b for b in self.bundles if any(e["request"]["method"] == "PUT" for e in b["entry"])]

    def bundle(self, request):
        body = json.loads(request.body)
        with self.lock:
            self.bundles.append(body)
            if self.down_after is not None and len(self.bundles) > self.down_after:
                raise requests.ConnectionError("Connection refused")
            if self.unavailable:
                self.unavailable -= 1
                return 503, {"Retry-After": "0"}, json.dumps(outcome("overloaded", "Bundle"))
            if body["type"] == "transaction":
                snapshot = dict(self.store)
                answers = []
                for i, entry in enumerate(body["entry"]):
                    status, payload = self.entry(entry)
                    if status >= 400:
                        self.store = snapshot
                        return status, {}, json.dumps(outcome(f"Entry {i}: {payload['issue'][0]['diagnostics']}",
                                                              payload["issue"][0]["expression"][0]))
                    answers.append(self.answer(status, payload))
            else:
                answers = [self.answer(*self.entry(entry)) for entry in body["entry"]]
        return 200, {}, json.dumps({"resourceType": "Bundle", "type": f"{body['type']}-response", "entry": answers})

    @staticmethod
    def answer(status: int, payload: dict | None) -> dict:
        text = {200: "200 OK", 201: "201 Created", 400: "400 Bad Request", 404: "404 Not Found"}[status]
        if status >= 400:
            return {"response": {"status": text, "outcome": payload}}
        if payload and payload.get("resourceType") != "Bundle" and "meta" in payload and status in (200, 201) \
                and payload.get("_written"):
            payload = dict(payload)
            payload.pop("_written")
            return {"response": {"status": text, "location": f"{payload['resourceType']}/{payload['id']}/_history/"
                                                             f"{payload['meta']['versionId']}"}}
        return {"response": {"status": text}, "resource": payload}

    def find(self, rtype: str, query: str) -> list[dict]:
        system, _, value = unquote(parse_qs(query)["identifier"][0]).partition("|")
        return [r for (t, _), r in self.store.items() if t == rtype and
                any(i.get("system") == system and i.get("value") == value for i in r.get("identifier", []))]

    def entry(self, entry: dict) -> tuple[int, dict | None]:
        method, url = entry["request"]["method"], entry["request"]["url"]
        path, _, query = url.partition("?")
        if method == "GET":
            if query:
                matches = self.find(path, query)
                return 200, {"resourceType": "Bundle", "type": "searchset",
                             "entry": [{"resource": r, "search": {"mode": "match"}} for r in matches]}
            found = self.store.get(tuple(path.split("/")))
            return (200, found) if found else (404, outcome("not found", path))
        resource = dict(entry["resource"])
        if resource.get("birthDate") == "bad":
            return 400, outcome("Date value string does not match spec regex", "Patient.birthDate")
        if query:
            matches = self.find(path, query)
            resource["id"] = matches[0]["id"] if matches else str(uuid.uuid4())
        else:
            resource["id"] = path.split("/")[1]
        key = (resource["resourceType"], resource["id"])
        old = self.store.get(key)
        resource["meta"] = {"versionId": str(int(old["meta"]["versionId"]) + 1 if old else 1), "lastUpdated": "now"}
        self.store[key] = resource
        return (200 if old else 201), {**resource, "_written": True}


def patient(n: int, **extra) -> dict:
    return {"resourceType": "Patient", "id": f"p{n}", "identifier": [{"system": "urn:mrn", "value": f"M{n}"}], **extra}


def observation(n: int, subject: str) -> dict:
    return {"resourceType": "Observation", "id": f"o{n}", "identifier": [{"system": "urn:row", "value": f"R{n}"}],
            "status": "final", "code": {"text": "EDSS"}, "subject": {"reference": f"Patient/{subject}"}}


def fast_client(retries: int = 2) -> FhirClient:
    return FhirClient(BASE, session=new_session(retry=RetryPolicy(retries=retries, jitter=0), sleep=lambda s: None))


def counts(result) -> tuple[int, ...]:
    return result.sent, result.created, result.updated, result.unchanged, result.failed


def assert_accounted(result) -> None:
    assert result.total == result.created + result.updated + result.unchanged + result.failed + result.duplicates


@responses.activate
def test_resources_go_in_chunks_several_in_flight():
    server = FakeServer()
    server.install()
    progress: list[tuple[int, int]] = []
    result = fast_client().push([patient(n) for n in range(450)], chunk_size=200, workers=3,
                                progress=lambda done, total: progress.append((done, total)))
    assert counts(result) == (450, 450, 0, 0, 0)
    assert sorted(len(b["entry"]) for b in server.writes()) == [50, 200, 200]
    assert all(b["type"] == "transaction" for b in server.writes())
    assert len(server.store) == 450
    assert progress[-1] == (450, 450) and [d for d, _ in progress] == sorted(d for d, _ in progress)


@responses.activate
def test_referenced_resources_are_written_before_those_referring_to_them():
    server = FakeServer()
    server.install()
    child = {"resourceType": "ResearchStudy", "id": "child", "status": "active",
             "partOf": [{"reference": "ResearchStudy/umbrella"}]}
    umbrella = {"resourceType": "ResearchStudy", "id": "umbrella", "status": "active"}
    items = [observation(n, f"p{n}") for n in range(6)] + [child] + [patient(n) for n in range(6)] + [umbrella]
    fast_client().push(items, chunk_size=4, workers=4)
    order = [e["request"]["url"] for b in server.writes() for e in b["entry"]]
    last_patient = max(i for i, url in enumerate(order) if url.startswith("Patient/"))
    first_observation = min(i for i, url in enumerate(order) if url.startswith("Observation/"))
    assert last_patient < first_observation
    assert order.index("ResearchStudy/umbrella") < order.index("ResearchStudy/child")


@responses.activate
def test_a_second_push_sends_nothing_and_a_change_is_one_update():
    server = FakeServer()
    server.install()
    items = [patient(n) for n in range(5)] + [observation(n, f"p{n}") for n in range(5)]
    fast_client().push(items)
    writes = len(server.writes())
    again = fast_client().push(items)
    assert counts(again) == (0, 0, 0, 10, 0)
    assert len(server.writes()) == writes  # only reads were made
    assert all(r["meta"]["versionId"] == "1" for r in server.store.values())
    items[0] = patient(0, gender="female")
    changed = fast_client().push(items)
    assert counts(changed) == (1, 0, 1, 9, 0)
    assert server.store[("Patient", "p0")]["meta"]["versionId"] == "2"


@responses.activate
def test_without_compare_nothing_is_read_first():
    server = FakeServer()
    server.install()
    result = fast_client().push([patient(n) for n in range(3)], compare=False)
    assert counts(result) == (3, 3, 0, 0, 0)
    assert all(b["type"] == "transaction" for b in server.bundles)


@responses.activate
def test_a_refused_transaction_is_resent_as_a_batch_and_each_bad_entry_reported():
    server = FakeServer()
    server.install()
    items = [(f"cohort/Patient.ndjson:{n + 1}", patient(n)) for n in range(5)]
    items[2] = ("cohort/Patient.ndjson:3", patient(2, birthDate="bad"))
    result = fast_client().push(items, chunk_size=5)
    assert counts(result) == (5, 4, 0, 0, 1)
    failure = result.failures[0]
    assert failure.reference == "Patient/p2" and failure.location == "cohort/Patient.ndjson:3"
    assert failure.status == "400 Bad Request"
    assert "Date value string does not match spec regex (at Patient.birthDate)" in failure.describe()
    assert [b["type"] for b in server.writes()] == ["transaction", "batch"]
    assert ("Patient", "p2") not in server.store and len(server.store) == 4


@responses.activate
def test_failed_entries_are_written_to_a_file_that_can_be_pushed_again(tmp_path):
    server = FakeServer()
    server.install()
    server.unavailable = 10 ** 6  # every bundle: 503, after the transport's retries too
    result = fast_client(retries=1).push([patient(n) for n in range(3)], chunk_size=2, compare=False)
    assert counts(result) == (3, 0, 0, 0, 3)
    assert all(f.status == "503" and "overloaded" in f.describe() for f in result.failures)
    failed = tmp_path / "failed.ndjson"
    assert result.write_failed(failed) == 3
    result.write_report(tmp_path / "failed.txt")
    assert "overloaded" in (tmp_path / "failed.txt").read_text()

    server.unavailable = 0
    again = fast_client().push(sources.resources([failed]))
    assert counts(again) == (3, 3, 0, 0, 0) and len(server.store) == 3


@responses.activate
def test_when_the_server_goes_away_the_rest_is_reported_not_sent():
    server = FakeServer()
    server.install()
    server.down_after = 2  # the batch read and the transaction of the first chunk, then nothing
    items = [patient(n) for n in range(6)] + [observation(n, f"p{n}") for n in range(6)]
    result = fast_client(retries=1).push(items, chunk_size=3, workers=1)
    assert result.created == 3 and result.failed == 9
    assert_accounted(result)
    assert any("push stopped" in n for n in result.notices)
    assert sum("not sent" in f.message for f in result.failures) >= 6  # the Observations' wave never started


@responses.activate
def test_conditional_writes_use_identifiers_fall_back_per_type_and_rewrite_references():
    server = FakeServer(conditional_types=("Patient", "Observation"))
    server.install()
    study = {"resourceType": "ResearchStudy", "id": "s1", "status": "active",
             "identifier": [{"system": "urn:nct", "value": "NCT1"}]}
    items = [patient(1), observation(1, "p1"), study]
    result = fast_client().push(items, id_strategy="conditional")
    assert counts(result) == (3, 3, 0, 0, 0)
    urls = sorted(e["request"]["url"] for b in server.writes() for e in b["entry"])
    assert urls == ["Observation?identifier=urn%3Arow%7CR1", "Patient?identifier=urn%3Amrn%7CM1", "ResearchStudy/s1"]
    assert any("ResearchStudy" in n and "PUT by id" in n for n in result.notices)
    stored_patient = next(r for (t, _), r in server.store.items() if t == "Patient")
    stored_obs = next(r for (t, _), r in server.store.items() if t == "Observation")
    assert stored_patient["id"] != "p1"  # the server chose it
    assert stored_obs["subject"]["reference"] == f"Patient/{stored_patient['id']}"
    again = fast_client().push(items, id_strategy="conditional")
    assert counts(again) == (0, 0, 0, 3, 0)


@responses.activate
def test_duplicates_are_merged_when_identical_and_refused_when_not():
    server = FakeServer()
    server.install()
    items = [("a.json#entry[0]", patient(1)), ("b.json#entry[0]", patient(1)),
             ("c.json#entry[0]", patient(1, gender="male"))]
    result = fast_client().push(items)
    assert (result.created, result.duplicates, result.failed) == (1, 1, 1)
    assert "conflicts with another Patient of the same id (a.json#entry[0])" in result.failures[0].message
    assert_accounted(result)


@responses.activate
def test_resources_that_cannot_be_pushed_idempotently_are_reported():
    server = FakeServer()
    server.install()
    result = fast_client().push([{"resourceType": "Patient"}, {"no": "type"}, patient(1)])
    assert result.created == 1 and [f.message.split(":")[0] for f in result.failures] == [
        "no id", "not a FHIR resource (no resourceType)"]
    result = fast_client().push([{"resourceType": "Patient"}], id_strategy="conditional")
    assert "neither an id nor an identifier" in result.failures[0].message


@responses.activate
def test_bundles_given_whole_are_unpacked():
    server = FakeServer()
    server.install()
    entries = [{"resource": patient(n), "request": {"method": "PUT", "url": f"Patient/p{n}"}} for n in range(3)]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    result = fast_client().push([("trial.bundle.json", bundle)])
    assert result.total == 3 and result.created == 3


@responses.activate
def test_without_transaction_support_batches_are_used_and_said_so():
    server = FakeServer(transaction=False)
    server.install()
    result = fast_client().push([patient(n) for n in range(3)])
    assert result.created == 3 and "no transaction support" in result.notices[0]
    assert {b["type"] for b in server.writes()} == {"batch"}


@responses.activate
def test_a_refused_id_strategy_is_a_value_error():
    with pytest.raises(ValueError, match="id_strategy"):
        fast_client().push([], id_strategy="post")


def test_the_progress_bar_draws_counts_and_ends_its_line():
    import io

    from fhir_adapter.cli.push import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar("push", stream=stream, enabled=True, width=10)
    bar(0, 40)
    bar(40, 40)
    bar.close()
    text = stream.getvalue()
    assert "\rpush [..........]   0% 0/40 resources" in text
    assert "\rpush [##########] 100% 40/40 resources" in text and text.endswith("\n")
    quiet = io.StringIO()
    off = ProgressBar("push", stream=quiet)  # not a terminal: nothing drawn
    off(1, 2)
    off.close()
    assert quiet.getvalue() == ""


@responses.activate
def test_input_of_the_other_fhir_version_is_refused_before_the_server_is_asked(tmp_path, capsys):
    """R5 files pushed as R4 (the default): one error per file naming an element only R5 has, exit 2, no
    request at all (responses would refuse any)."""
    from fhir_adapter.cli import main

    r5 = tmp_path / "r5"
    assert main(["trials", "map", "NCT04749667", "--fhir-version", "R5", "--out", str(r5)]) == 0
    medication = {"resourceType": "MedicationStatement", "id": "m1", "status": "recorded",
                  "medication": {"concept": {"text": "natalizumab"}}, "subject": {"reference": "Patient/p1"}}
    (r5 / "patients.ndjson").write_text(json.dumps(patient(1)) + "\n" + json.dumps(medication) + "\n")
    capsys.readouterr()
    assert main(["push", str(r5), "--server", BASE, "--no-progress"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"fhir-adapter push: error: {r5 / 'NCT04749667.bundle.json'}#entry[0]: looks like FHIR R5 "
        "(ResearchStudy.name); use --fhir-version R5",
        f"fhir-adapter push: error: {r5 / 'patients.ndjson'}:2: looks like FHIR R5 (MedicationStatement.medication); "
        "use --fhir-version R5"]
    assert len(responses.calls) == 0


def test_the_version_check_knows_each_version_by_its_own_elements():
    from fhir_adapter.cli.push import other_version_files
    from fhir_adapter.paths import EXAMPLES

    cohort = list(sources.resources([EXAMPLES / "ehr" / "cohort-fhir"]))
    trials = list(sources.resources([EXAMPLES / "trials" / "NCT01854957.bundle.json"]))
    assert other_version_files(cohort, "R4") == [] and other_version_files(trials, "R4") == []
    assert other_version_files(cohort, "R5") == [
        f"{EXAMPLES / 'ehr' / 'cohort-fhir' / 'MedicationStatement.ndjson'}:1: looks like FHIR R4 "
        "(MedicationStatement.medicationCodeableConcept); use --fhir-version R4"]
    assert other_version_files(trials, "R5") == [
        f"{EXAMPLES / 'trials' / 'NCT01854957.bundle.json'}#entry[0]: looks like FHIR R4 "
        "(ResearchStudy.category); use --fhir-version R4"]
