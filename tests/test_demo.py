"""The demo end to end against a real sekmet: trials and a small cohort mapped, pushed, read back, screened,
reported; the output directory rules; the printed summary."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest

from fhir_adapter.cli import main
from fhir_adapter.demo import MARKER, DemoError, prepare_out_dir, run_demo

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
