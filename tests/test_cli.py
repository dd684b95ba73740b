"""The command-line entry point: a reader of stdout that goes away early (`| head`) ends the run quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_adapter import cli
from fhir_adapter.cli import main

ROOT = Path(__file__).resolve().parents[1]
COHORT = ROOT / "examples" / "ehr" / "cohort-fhir"
#: What the `fhir-adapter` console script runs.
ENTRY = "import sys; from fhir_adapter.cli import main; sys.exit(main())"
PIPE_STATUS = 128 + signal.SIGPIPE


def _run_into_closed_pipe(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with stdout a pipe whose reader closed before anything was written."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-c", ENTRY, *args], stdout=write, stderr=subprocess.PIPE,
                              cwd=cwd, timeout=120, check=False)
    finally:
        os.close(write)


def _quiet(stderr: bytes) -> bool:
    return not any(word in stderr for word in (b"Traceback", b"BrokenPipeError", b"Exception ignored"))


@pytest.mark.parametrize("args", [
    ["validate", "--format", "json", str(COHORT)],
    ["screen", "--input", *map(str, sorted(COHORT.glob("*.ndjson"))), "--as-of", "2026-10-01", "--out", "screening"],
    ["patients", "generate", "--patients", "3", "--out", "extract", "--reference-date", "2026-10-01"],
])
def test_a_closed_stdout_ends_quietly_with_the_sigpipe_status(args, tmp_path):
    done = _run_into_closed_pipe(args, tmp_path)
    assert _quiet(done.stderr), done.stderr.decode()
    assert done.returncode == PIPE_STATUS, done.stderr.decode()


def test_a_reader_that_stops_after_one_line_like_head(tmp_path):
    """More output than a pipe holds (junit, one testcase per resource): the writer is still writing when the
    reader leaves, as with `fhir-adapter validate --format junit DIR | head -1`."""
    with subprocess.Popen([sys.executable, "-c", ENTRY, "validate", "--format", "junit", str(COHORT)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path) as process:
        assert process.stdout.readline().startswith(b"<?xml")
        process.stdout.close()
        stderr = process.stderr.read()
        assert process.wait(timeout=120) == PIPE_STATUS
    assert _quiet(stderr), stderr.decode()


def test_a_broken_pipe_that_is_not_stdout_is_not_hidden(monkeypatch, capsys):
    """Only the reader of stdout going away is quiet; another broken pipe is a fault and propagates."""
    def broken(args):  # noqa: ANN001, ANN202
        raise BrokenPipeError("a worker's pipe")

    monkeypatch.setattr("fhir_adapter.cli.server.run", broken)
    with pytest.raises(BrokenPipeError, match="a worker's pipe"):
        main(["server", "status"])


def test_stdout_gone_tells_a_pipe_without_reader(monkeypatch):
    read, write = os.pipe()
    with open(write, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert not cli._stdout_gone()  # the reader is still there
        os.close(read)
        assert cli._stdout_gone()


@pytest.mark.parametrize("verb", [["demo", "--out", "o"], ["screen", "--input", "i", "--out", "o"],
                                  ["patients", "generate", "--patients", "2", "--out", "o"],
                                  ["patients", "map", "extract", "--out", "o"]])
@pytest.mark.parametrize("given, told", [("0001-01-01", "is not a date from 1900-01-01 to 2999-12-31"),
                                         ("9999-12-31", "is not a date from 1900-01-01 to 2999-12-31"),
                                         ("2025-02-30", "is not a date: write YYYY-MM-DD")])
def test_every_date_option_takes_the_same_dates(verb, given, told, capsys, tmp_path, monkeypatch):
    """--as-of, --reference-date and --extracted-on: a date the calendar arithmetic behind them can use, or a
    usage error before anything runs (a year 1 or 9999 used to end in an OverflowError traceback)."""
    monkeypatch.chdir(tmp_path)
    option = {"demo": "--as-of", "screen": "--as-of", "generate": "--reference-date", "map": "--extracted-on"}
    with pytest.raises(SystemExit) as stop:
        main([*verb, option[verb[1] if verb[0] == "patients" else verb[0]], given])
    assert stop.value.code == 2 and told in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert cli.date_option("2999-12-31").year == 2999 and cli.date_option("1900-01-01").year == 1900


def test_an_output_directory_in_use_is_a_usage_error_for_every_verb(monkeypatch, capsys, tmp_path):
    """`main` turns OutputInUse into one line and exit 2 for every verb (demo met it as a traceback when a
    second demo wrote into the same --out)."""
    from fhir_adapter import demo
    from fhir_adapter.outdir import OutputInUse

    def busy(*args, **kwargs):
        raise OutputInUse(f"{tmp_path}: another run is writing mapped resources there")
    monkeypatch.setattr(demo, "run_demo", busy)
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (f"fhir-adapter demo: error: {tmp_path}: another run is writing mapped "
                                               "resources there")
