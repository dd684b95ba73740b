"""`fhir-adapter trials map` end to end, and one trial bundle pushed to the real (sekmet) server."""

from __future__ import annotations

import json
from pathlib import Path

from fhir_adapter import ids
from fhir_adapter.cli import main
from fhir_adapter.paths import EXAMPLES
from fhir_adapter.protocol import load_protocol, load_protocols
from fhir_adapter.protocol.bundle import trial_bundle

CTGOV = "https://clinicaltrials.gov"


def test_no_input_maps_the_bundled_examples_and_the_umbrella(tmp_path, capsys):
    assert main(["trials", "map", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "MESEMS.bundle.json", "NCT01854957.bundle.json", "NCT02035514.bundle.json", "NCT02403947.bundle.json",
        "NCT04749667.bundle.json"]
    assert f"{tmp_path / 'NCT04749667.bundle.json'}: SMART-MS (NCT04749667): 1 ResearchStudy, 1 PlanDefinition, " \
           f"1 EvidenceVariable, 2 ActivityDefinition, 1 Group, 1 CodeSystem" in out
    assert "5 bundle(s), FHIR R4" in out


def test_r5_for_one_registry_file_and_one_id(tmp_path, capsys):
    registry = Path(__file__).parent.parent / "examples" / "ctgov" / "NCT04749667.json"
    assert main(["trials", "map", str(registry), "MESEMS", "--fhir-version", "r5", "--out", str(tmp_path)]) == 0
    assert "2 bundle(s), FHIR R5" in capsys.readouterr().out
    bundle = json.loads((tmp_path / "NCT04749667.bundle.json").read_text(encoding="utf-8"))
    study = bundle["entry"][0]["resource"]
    assert study["resourceType"] == "ResearchStudy" and "comparisonGroup" in study and "arm" not in study
    assert study["id"] == ids.resource_id("ResearchStudy", CTGOV, "NCT04749667")


def test_an_odd_record_maps_with_warnings_on_stderr(tmp_path, capsys):
    record = {"protocolSection": {
        "identificationModule": {"nctId": "NCT00000009", "briefTitle": "Infants"},
        "statusModule": {"overallStatus": "UNKNOWN"},
        "designModule": {"studyType": "INTERVENTIONAL", "designInfo": {"interventionModel": "CROSSOVER"}},
        "eligibilityModule": {"minimumAge": "6 Weeks", "maximumAge": "120 Years"}}}
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    assert main(["trials", "map", str(path), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}: protocolSection.eligibilityModule.maximumAge: 120 Years read as no upper limit" in err
    assert "crossover design without arm groups" in err
    assert (f"warning: {path}: protocolSection.statusModule.overallStatus: UNKNOWN (with no last known status) "
            "has no R4 ResearchStudy.status code; written as 'active'\n") in err
    assert main(["trials", "map", str(path), "--fhir-version", "R5", "--out", str(tmp_path / "r5")]) == 0
    err = capsys.readouterr().err
    assert "R4" not in err
    assert (f"warning: {path}: protocolSection.statusModule.overallStatus: UNKNOWN (with no last known status) "
            "is written as status 'unknown' with no progressStatus") in err
    bundle = json.loads((tmp_path / "out" / "NCT00000009.bundle.json").read_text(encoding="utf-8"))
    group = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Group")
    assert group["characteristic"][0]["valueRange"] == {
        "low": {"value": 6, "unit": "weeks", "system": "http://unitsofmeasure.org", "code": "wk"}}


def test_every_warning_names_its_file_and_field(tmp_path, capsys, caplog):
    """On the command line (stderr) and through `map_trials` (the log, as `demo` maps), each warning is
    `file: field: message`; the MESEMS umbrella's status comes from its curated YAML."""
    from fhir_adapter.protocol import map_trials
    from fhir_adapter.protocol.curated import curated_path

    assert main(["trials", "map", "--out", str(tmp_path / "cli")]) == 0
    err = capsys.readouterr().err.splitlines()
    registry = EXAMPLES / "ctgov" / "NCT04749667.json"
    assert err and all(line.startswith("warning: ") and line.count(": ") >= 3 for line in err)
    assert f"warning: {curated_path('MESEMS')}: status: UNKNOWN (with no last known status) has no R4 " \
           "ResearchStudy.status code; written as 'active'" in err
    assert any(line.startswith(f"warning: {registry}: protocolSection.statusModule.overallStatus: ") for line in err)
    with caplog.at_level("WARNING", logger="fhir_adapter.protocol.bundle"):
        map_trials([], tmp_path / "api")
    assert [f"warning: {r.getMessage()}" for r in caplog.records] == err


def test_bad_inputs_are_clear_errors_naming_file_and_field(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"protocolSection": {', encoding="utf-8")
    no_id = tmp_path / "no-id.json"
    no_id.write_text('{"protocolSection": {"identificationModule": {"briefTitle": "x"}}}', encoding="utf-8")
    curated = tmp_path / "NCT04749667.yaml"
    curated.write_text("nct_id: NCT04749667\nsite: Bergen\n", encoding="utf-8")
    cases = [
        ([str(broken)], f"{broken}:1:22: malformed JSON"),
        ([str(no_id)], f"{no_id}: protocolSection.identificationModule.nctId: missing"),
        ([str(curated)], f"{curated}: unknown key(s) site"),
        (["NCT99999999"], "NCT99999999: neither a file nor a bundled trial id; bundled: MESEMS, NCT01854957"),
    ]
    for args, message in cases:
        assert main(["trials", "map", *args, "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_trial_bundle_is_accepted_by_the_server(fhir_client):
    """The Genova bundle as written (a transaction of PUTs, umbrella included) goes in; what comes back is what
    was sent, the references resolve on the server, and pushing it again changes nothing."""
    protocols = {p.nct_id: p for p in load_protocols()}
    bundle, _ = trial_bundle(load_protocol("NCT01854957"), "R4", protocols["MESEMS"])
    response = fhir_client.bundle(bundle)
    assert response["type"] == "transaction-response"
    assert [e["response"]["status"][:3] in ("200", "201") for e in response["entry"]] == [True] * len(bundle["entry"])
    sent = [entry["resource"] for entry in bundle["entry"]]
    for resource in sent:
        stored = fhir_client.read(resource["resourceType"], resource["id"])
        assert {k: v for k, v in stored.items() if k != "meta"} == resource
    study = fhir_client.read("ResearchStudy", ids.resource_id("ResearchStudy", CTGOV, "NCT01854957"))
    umbrella = fhir_client.read(*study["partOf"][0]["reference"].split("/"))
    assert umbrella["identifier"][0]["value"] == "MESEMS"
    plan = fhir_client.read(*study["protocol"][0]["reference"].split("/"))
    assert plan["resourceType"] == "PlanDefinition"
    again = fhir_client.push(sent)
    assert (again.failed, again.unchanged) == (0, len(sent))
