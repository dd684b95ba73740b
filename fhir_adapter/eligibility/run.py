"""A whole screening run: patient data in, verdicts through the engine, reports out; on every core for files.

`screen_files` gives each worker process its share of the patients (see `load`): it parses, indexes,
screens and writes its part of the reports; the parent merges the parts. `screen_index` does the same in
this process for data already in memory. `screen_server` is the whole run against a FHIR server (patients
and, optionally, criteria read from it; ResearchSubjects written back): the call `fhir-adapter demo` makes.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client import FhirClient, PushResult
from ..report.regions import Regions
from ..report.writers import HTML_CANDIDATES, Part, PartSummary, Screening, finish, plan, replacing
from .data import PatientIndex, Problem, screenable
from .engine import Trial, screen
from .load import Inputs, map_shares, order_key, worker_count


@dataclass
class RunResult:
    """A finished run: the merged screening, counts, problems, how long each stage took, and the files in
    the input directories that were not read, with why."""

    screening: Screening
    read: int
    used: int
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _screen_share(index: PatientIndex, part: int, trials: list[Trial], as_of: dt.date,
                  html_candidates: int, keep_statuses: bool, regions: Regions,
                  ) -> tuple[PartSummary, list[Problem], int, int]:
    alive, problems = screenable(sorted(index.patients.values(), key=lambda p: order_key(p.id)), as_of)
    writer = Part(part, trials, regions, html_candidates, keep_statuses)
    summary = writer.add_all(screen(alive, trials, as_of))
    return summary, index.problems + problems, index.read, index.used


def _natural(text: str) -> list[Any]:
    """A sort key that puts `f.ndjson:9` before `f.ndjson:10` (and `#entry[9]` before `#entry[10]`)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def _problems(problems: Iterable[Problem]) -> list[Problem]:
    """The problems once each, by where they are (file, then line or entry): the same for any number of workers."""
    return sorted(dict.fromkeys(problems), key=lambda p: _natural(p.where))


def screen_files(paths: Iterable[str | Path], trials: list[Trial], out: Path, as_of: dt.date | None = None,
                 workers: int | None = None, html_candidates: int = HTML_CANDIDATES,
                 keep_statuses: bool = False) -> RunResult:
    """Screen the patients in NDJSON / Bundle files against the trials and write the reports to `out`."""
    as_of = as_of or dt.date.today()
    paths = [str(p) for p in paths]
    inputs = Inputs.of(paths)                # a missing path fails here, before anything is written; stdin read
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    parts = worker_count(workers)
    with replacing(out):
        regions = plan(out, parts)          # before the workers fork: they write into the regions laid out

        def task(index: PatientIndex, part: int) -> Any:
            return _screen_share(index, part, trials, as_of, html_candidates, keep_statuses, regions)

        shares = list(map_shares(inputs, task, parts))
        screened = time.perf_counter()
        problems = _problems(p for share in shares for p in share[1])
        screening = finish(out, [s[0] for s in shares], trials, as_of.isoformat(), html_candidates, problems,
                           source=", ".join(paths))
    done = time.perf_counter()
    return RunResult(screening, sum(s[2] for s in shares), sum(s[3] for s in shares), problems,
                     {"load and screen": screened - started, "merge and report": done - screened}, inputs.skipped)


def screen_index(index: PatientIndex, trials: list[Trial], out: Path, as_of: dt.date | None = None,
                 html_candidates: int = HTML_CANDIDATES, keep_statuses: bool = False, source: str = "") -> RunResult:
    """Screen patients already indexed in this process and write the reports to `out`."""
    as_of = as_of or dt.date.today()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with replacing(out):
        summary, problems, read, used = _screen_share(index, 0, trials, as_of, html_candidates, keep_statuses,
                                                      plan(out, 1))
        screened = time.perf_counter()
        problems = _problems(problems)
        screening = finish(out, [summary], trials, as_of.isoformat(), html_candidates, problems, source=source)
    return RunResult(screening, read, used, problems,
                     {"screen": screened - started, "report": time.perf_counter() - screened})


@dataclass
class ServerScreening:
    """What `screen_server` did: the run, the trials, verdict counts per trial, the reports, the write-back and
    the ResearchSubjects it kept (`remote.Kept`: a status set on the server)."""

    run: RunResult
    trials: list[Trial]
    out: Path
    written: PushResult | None = None
    kept: list[Any] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Per NCT id: how many patients are `eligible`, `needs-review` and `ineligible`."""
        return {t.id: dict(self.run.screening.funnels[t.id].verdicts) for t in self.trials}

    @property
    def patients(self) -> int:
        return self.run.screening.patients

    @property
    def report(self) -> Path:
        """The HTML report (self-contained; open it in a browser)."""
        return self.out / "report.html"

    @property
    def files(self) -> list[Path]:
        """screening.json, screening.csv, report.html (and problems.csv when some input was unusable)."""
        return [self.out / name for name in self.run.screening.reports]


def screen_server(client: FhirClient, trials: Sequence[str | Trial] | None = None, out: Path | str = "screening",
                  as_of: dt.date | None = None, *, from_server: bool = False, write_back: bool = False,
                  per_patient: bool = False, html_candidates: int = HTML_CANDIDATES) -> ServerScreening:
    """Screen every patient on a FHIR server for the trials and write the reports to `out`.

    - `trials`: NCT ids, `Trial`s, or None for every trial with criteria in `mappings/`;
    - `from_server`: read the criteria back from the trials' EvidenceVariables on the server (by id) instead;
    - `as_of`: the screening date (default today); `write_back`: PUT an R4 ResearchSubject per patient and
      trial (candidate / potential-candidate / ineligible), idempotently; one whose status on the server is
      another (on-study, withdrawn, ...) is kept (`.kept`);
    - `per_patient`: read the data patient by patient (`$everything` or searches by patient) instead of by type.

    Returns a `ServerScreening`: `.counts` (per NCT id: eligible / needs-review / ineligible), `.patients`,
    `.report` (the path of report.html), `.files`, `.written` (the write-back's `PushResult`, or None).
    Raises `KeyError` for a trial without criteria (locally or on the server) or, with `write_back`, without its
    ResearchStudy on the server (checked before anything is read), and the client's errors.

    For example (needs a server; tests/test_screen_server.py runs it against sekmet)::

        result = screen_server(client, ["NCT02035514"], "out/screening", dt.date(2025, 6, 1))
        result.counts["NCT02035514"]    # {'eligible': 12, 'needs-review': 300, 'ineligible': 188}
        result.report                   # PosixPath('out/screening/report.html')
    """
    from . import remote
    from .trials import load_trials

    as_of = as_of or dt.date.today()
    out = Path(out)
    given = [t for t in trials or () if isinstance(t, Trial)]
    names = [t for t in trials or () if not isinstance(t, Trial)]
    if from_server:
        chosen = remote.trials_from_server(client, names or [t.id for t in given])
    else:
        chosen = given + (load_trials(names) if names or not given else [])
    if not chosen:
        raise KeyError("no trial with computable criteria found (mappings/trials/<NCT id>.yaml)")
    if write_back:
        remote.require_studies(client, chosen)
    index = remote.load_patients(client, per_patient=per_patient)
    run = screen_index(index, chosen, out, as_of, html_candidates, keep_statuses=write_back, source=client.base_url)
    if not write_back:
        return ServerScreening(run, chosen, out)
    written, kept = remote.write_back(client, run.screening.statuses, chosen, as_of.isoformat())
    return ServerScreening(run, chosen, out, written, kept)
