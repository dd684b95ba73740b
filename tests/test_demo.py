"""The demo end to end against a real sekmet: trials and a small cohort mapped, pushed, read back, screened,
reported; the output directory rules; the printed summary."""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections import Counter
from pathlib import Path

import pytest

from fhir_adapter import server
from fhir_adapter.cli import main
from fhir_adapter.client import FhirClient, RetryPolicy, ServerUnreachable
from fhir_adapter.demo import MARKER, DemoError, prepare_out_dir, run_demo
from fhir_adapter.eligibility.trials import load_trials

PATIENTS = 30
AS_OF = dt.date(2025, 6, 1)
FOUR_TRIALS = {"NCT02035514", "NCT02403947", "NCT01854957", "NCT04749667"}
PATIENT_TYPES = ("Patient", "Condition", "Observation", "MedicationStatement")


def ndjson_counts(directory: Path) -> Counter:
    counts: Counter = Counter()
    for path in directory.glob("*.ndjson"):
        counts.update(json.loads(line)["resourceType"] for line in path.read_text().splitlines() if line.strip())
    return counts


def bundle_counts(paths: list[Path]) -> Counter:
    ids: set[tuple[str, str]] = set()
    for path in paths:
        ids.update((e["resource"]["resourceType"], e["resource"]["id"]) for e in json.loads(path.read_text())["entry"])
    return Counter(rtype for rtype, _ in ids)


def test_demo_maps_pushes_reads_back_screens_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FHIR_ADAPTER_STATE", str(tmp_path / "state"))
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--patients", str(PATIENTS), "--seed", "7", "--as-of", AS_OF.isoformat(),
            "--keep-server", "--no-progress"]
    try:
        assert main(args) == 0
        printed = capsys.readouterr().out
        base_url = server.detached()["base_url"]  # kept running: still answers
        assert base_url.startswith("http://127.0.0.1:")
        result = json.loads((out / "demo.json").read_text())

        # what was written: the trial bundles and the cohort as NDJSON
        bundles = sorted((out / "trials").glob("*.json"))
        assert {f"{nct}.bundle.json" for nct in FOUR_TRIALS} <= {p.name for p in bundles}
        local = ndjson_counts(out / "patients")
        assert local["Patient"] == PATIENTS and all(local[t] > 0 for t in PATIENT_TYPES)

        # what the server holds: everything pushed, nothing failed, and the counts the demo reports
        assert result["pushes"]["trials"]["failed"] == 0 and result["pushes"]["patients"]["failed"] == 0
        with FhirClient(base_url) as client:
            held = {t: client.get_json(t, params={"_summary": "count"})["total"]
                    for t in (*PATIENT_TYPES, "ResearchStudy", "EvidenceVariable", "PlanDefinition")}
        assert {t: held[t] for t in PATIENT_TYPES} == {t: local[t] for t in PATIENT_TYPES}
        in_bundles = bundle_counts(bundles)
        assert held["ResearchStudy"] == in_bundles["ResearchStudy"] >= 5  # four trials and the MESEMS umbrella
        assert held["EvidenceVariable"] == in_bundles["EvidenceVariable"] >= 4
        assert held["PlanDefinition"] == in_bundles["PlanDefinition"] >= 1
        assert {k: v for k, v in result["server_counts"].items() if k in held} == held
        assert result["server_counts"] == {**in_bundles, **{t: local[t] for t in PATIENT_TYPES}}  # every type

        # screening: every patient read back from the server gets a verdict for every trial
        screened = json.loads((out / "screening" / "screening.json").read_text())
        trials = {t.id for t in load_trials()}
        assert trials >= FOUR_TRIALS
        pairs = Counter((v["patient"], v["trial"]) for v in screened)
        assert {trial for _, trial in pairs} == trials
        assert len({patient for patient, _ in pairs}) == PATIENTS and set(pairs.values()) == {1}
        assert {v["verdict"] for v in screened} <= {"eligible", "ineligible", "needs-review"}
        for trial in trials:
            verdicts = Counter(v["verdict"] for v in screened if v["trial"] == trial)
            assert sum(result["verdicts"][trial].values()) == PATIENTS
            assert {k: n for k, n in result["verdicts"][trial].items() if n} == dict(verdicts)
            assert trial in printed
        report = (out / "screening" / "report.html").read_text()
        assert all(trial in report for trial in trials)

        # the summary says where everything is
        assert f"{out / 'trials'}/" in printed and f"{out / 'patients'}/" in printed
        assert f"{out / 'screening' / 'report.html'}" in printed
        assert f"server still running at {base_url}" in printed
    finally:
        assert main(["server", "stop"]) == 0
    assert server.detached() is None


def test_the_output_directory_must_be_new_empty_or_the_demos(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    with pytest.raises(DemoError, match="not empty and was not written by the demo"):
        prepare_out_dir(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]  # untouched
    with pytest.raises(DemoError, match="not empty"):
        run_demo(mine, patients=1)

    earlier = tmp_path / "earlier"
    prepare_out_dir(earlier)
    (earlier / "patients").mkdir()
    (earlier / "patients" / "Patient.ndjson").write_text("{}\n")
    (earlier / "demo.json").write_text("{}")
    prepare_out_dir(earlier)  # an earlier demo's outputs are replaced
    assert [p.name for p in earlier.iterdir()] == [MARKER]

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(DemoError, match="not a directory"):
        prepare_out_dir(afile)


def test_cli_refuses_bad_arguments_before_doing_anything(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--patients", "0"]) == 2
    assert "--patients must be at least 1" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--port", "70000"]) == 2
    assert not (tmp_path / "d").exists()


def test_cli_refuses_a_port_in_use_before_doing_anything(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--out", str(tmp_path / "d"), "--port", str(port), "--patients", "2"]) == 2
    assert f"fhir-adapter demo: error: port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_the_demo_does_not_push_into_another_server_on_its_port(fhir_server, fhir_client, tmp_path, capsys):
    port = int(fhir_server.rsplit(":", 1)[1].split("/")[0])
    before = fhir_client.get_json("Patient", params={"_summary": "count"})["total"]
    with pytest.raises(server.PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
        run_demo(tmp_path / "d", patients=2, port=port, as_of=AS_OF)
    assert main(["demo", "--out", str(tmp_path / "d"), "--port", str(port), "--patients", "2"]) == 2
    assert "already in use" in capsys.readouterr().err and not (tmp_path / "d").exists()
    # nothing was pushed there, and the other server was not stopped
    assert fhir_client.get_json("Patient", params={"_summary": "count"})["total"] == before


def test_the_server_is_stopped_afterwards_and_a_rerun_replaces_the_outputs(tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out, patients=3, seed=1, as_of=AS_OF)
    with pytest.raises(ServerUnreachable):  # stopped: nothing listens there any more
        FhirClient(first.base_url, retry=RetryPolicy(retries=0)).capabilities()
    assert first.server_counts["Patient"] == 3 and not first.server_kept

    second = run_demo(out, patients=2, seed=2, as_of=AS_OF)  # an earlier demo's directory is re-used
    assert second.server_counts["Patient"] == 2
    assert ndjson_counts(out / "patients")["Patient"] == 2
    assert json.loads((out / "demo.json").read_text())["seed"] == 2
