"""The demo: every stage on the embedded examples, against a local FHIR server, in one call.

`run_demo(out_dir, patients=500, seed=1)` starts sekmet on 127.0.0.1 (in memory), maps the four trials and the
MESEMS umbrella study to transaction Bundles, generates a synthetic MS cohort extract and maps it to NDJSON,
pushes everything with the client (trials first, so that patients' data can later refer to the studies),
counts what the server holds, screens the patients read back from the server against the criteria read back
from the trials' EvidenceVariables on the server (the round trip) and writes the report. It stops the server
unless `keep_server` (then `fhir-adapter server stop` ends it).

The output directory is the demo's own: it is created, or re-used if an earlier demo wrote it (it holds the
marker file `MARKER`); a directory holding anything else is refused, so nothing of the user's is overwritten.

    DIR/trials/<NCT id>.bundle.json    the trial bundles (`trials map`)
    DIR/extract/*.csv                  the synthetic EHR extract (`patients generate`)
    DIR/patients/<Type>.ndjson         the cohort in FHIR (`patients map`; rejects.csv, summary.json)
    DIR/screening/                     screening.json, screening.csv, report.html (`screen --server`)
    DIR/push-failed.ndjson             only if the server refused something (with push-failed.txt)
    DIR/demo.json                      the summary below, as JSON
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import sources
from .client import FhirClient, PushResult

MARKER = ".fhir-adapter-demo"
PARTS = ("trials", "extract", "patients", "screening", "push-failed.ndjson", "push-failed.txt", "demo.json")

Say = Callable[[str], None]


class DemoError(Exception):
    """The demo cannot run as asked (output directory not the demo's, server already running, ...)."""


@dataclass
class DemoResult:
    """What the demo did and where its outputs are."""

    out_dir: Path
    base_url: str
    as_of: str
    patients: int
    seed: int
    trial_bundles: list[Path] = field(default_factory=list)
    patient_files: list[Path] = field(default_factory=list)
    rejected_rows: int = 0
    pushes: dict[str, dict[str, Any]] = field(default_factory=dict)
    server_counts: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, dict[str, int]] = field(default_factory=dict)
    trial_titles: dict[str, str] = field(default_factory=dict)
    screening_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    server_kept: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(p["failed"] for p in self.pushes.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("out_dir", "screening_dir"):
            data[key] = str(data[key]) if data[key] else None
        data["trial_bundles"] = [str(p) for p in self.trial_bundles]
        data["patient_files"] = [str(p) for p in self.patient_files]
        return data


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output directory, or clear an earlier demo's outputs; refuse a directory holding anything
    that is not the demo's."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DemoError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise DemoError(f"{out_dir} is not empty and was not written by the demo; give another --out "
                        "(nothing was changed)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by `fhir-adapter demo`; its outputs here are replaced on each run\n",
                                  encoding="utf-8")
    for name in PARTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def map_trial_bundles(out_dir: Path, fhir_version: str = "R4") -> list[Path]:
    """The four trials and the MESEMS umbrella as transaction Bundles in `out_dir` (the trials mapping)."""
    from .protocol import map_trials

    out_dir.mkdir(parents=True, exist_ok=True)
    return sorted(Path(p) for p in map_trials([], out_dir, fhir_version))


def server_counts(client: FhirClient, types: list[str]) -> dict[str, int]:
    """How many resources of each type the server holds (`_summary=count`)."""
    counts = {}
    for rtype in types:
        bundle = client.get_json(rtype, params={"_summary": "count"})
        counts[rtype] = int(bundle.get("total") or 0)
    return counts


def run_demo(out_dir: Path, patients: int = 500, seed: int = 1, *, port: int | None = None,
             keep_server: bool = False, as_of: dt.date | None = None, fhir_version: str = "R4",
             say: Say | None = None, progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
             ) -> DemoResult:
    """Run the whole demo; returns what it did. `say` receives one line per stage; `progress(label)` may give a
    progress callback for each push. A `port` already in use raises `server.PortInUseError` before any work."""
    from . import server as local
    from .ehr import generate_cohort, map_extract

    say = say or (lambda line: None)
    as_of = as_of or dt.date.today()
    out_dir = Path(out_dir)
    if patients < 1:
        raise DemoError("the demo needs at least one patient")
    if keep_server and local.detached() is not None:
        raise DemoError(f"a local FHIR server is already running at {local.detached()['base_url']}; stop it "
                        "first (fhir-adapter server stop) or run the demo without --keep-server")
    if port is not None and local.port_in_use(port):  # refused before any work (checked again at the start)
        raise local.PortInUseError(port)
    prepare_out_dir(out_dir)
    result = DemoResult(out_dir, "", as_of.isoformat(), patients, seed)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[stage] = round(now - clock, 2)
        clock = now

    result.trial_bundles = map_trial_bundles(out_dir / "trials", fhir_version)
    say(f"mapped the trials: {len(result.trial_bundles)} bundles in {out_dir / 'trials'}")
    lap("map trials")

    extract = generate_cohort(patients, seed, out_dir / "extract", reference_date=as_of)
    summary = map_extract(extract, out_dir / "patients", fhir_version, extracted_on=as_of)
    result.patient_files = sorted((out_dir / "patients").glob("*.ndjson"))
    result.rejected_rows = summary.rejected
    if summary.rejected:
        result.notes.append(f"{summary.rejected} extract rows rejected: see {summary.rejects_file}")
    say(f"generated {patients} patients (seed {seed}) and mapped them: {summary.resource_count} resources in "
        f"{out_dir / 'patients'}")
    lap("generate and map patients")

    server: local.LocalServer | None = None
    if keep_server:
        state = local.start_detached(port)
        result.base_url, result.server_kept = state["base_url"], True
    else:
        server = local.LocalServer(port=port)
        result.base_url = server.start()
    say(f"local FHIR server (sekmet, in memory) at {result.base_url}")
    lap("start server")
    try:
        with FhirClient(result.base_url) as client:
            pushed_types: dict[str, None] = {}
            for label, paths in (("trials", result.trial_bundles), ("patients", result.patient_files)):
                if not paths:
                    continue
                items = list(sources.resources(paths))
                pushed_types.update(dict.fromkeys(r.get("resourceType") for _, r in items))
                pushed = client.push(items, fhir_release=fhir_version, compare=False,
                                     progress=progress(f"push {label}") if progress else None)
                _keep_failures(pushed, out_dir, label)
                result.pushes[label] = pushed.to_dict()
                say(f"pushed the {label}: {pushed.summary()}")
                lap(f"push {label}")
            if result.failed:
                result.notes.append(f"{result.failed} resources refused by the server: see "
                                    f"{out_dir / 'push-failed.txt'}")
            result.server_counts = server_counts(client, [t for t in pushed_types if isinstance(t, str)])
            _screen(client, result, out_dir / "screening", as_of, say)
            lap("screen")
    finally:
        if server is not None:
            server.stop()
    (out_dir / "demo.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return result


def _keep_failures(pushed: PushResult, out_dir: Path, label: str) -> None:
    """Failed resources of every push, appended to one re-pushable file (and their outcomes beside it)."""
    if pushed.ok:
        return
    with (out_dir / "push-failed.ndjson").open("a", encoding="utf-8") as stream:
        for failure in pushed.failures:
            stream.write(json.dumps(failure.resource, ensure_ascii=False) + "\n")
    with (out_dir / "push-failed.txt").open("a", encoding="utf-8") as stream:
        stream.write(f"{label}: {pushed.summary()}\n" + "\n".join(f.describe() for f in pushed.failures) + "\n")


def _screen(client: FhirClient, result: DemoResult, out: Path, as_of: dt.date, say: Say) -> None:
    """Screen the patients read back from the server against every trial with computable criteria, the
    criteria too read back from the trials' EvidenceVariables on the server: the whole round trip."""
    from .eligibility.run import screen_server

    try:
        screening = screen_server(client, None, out, as_of, from_server=True)
    except KeyError as exc:
        result.notes.append(f"screening skipped: {exc.args[0]}")
        return
    result.screening_dir = out
    result.verdicts = screening.counts
    result.trial_titles = {t.id: t.title for t in screening.trials}
    if screening.run.problems:
        result.notes.append(f"{len(screening.run.problems)} record(s) read from the server could not be used: "
                            f"see {out / 'problems.csv'}")
    say(f"screened {screening.patients} patients against {len(screening.trials)} trials as of {as_of.isoformat()}, "
        "patients and criteria (EvidenceVariables) read back from the server")
