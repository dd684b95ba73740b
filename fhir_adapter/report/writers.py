"""Screening reports: `screening.json`, `screening.csv` and `report.html` from a stream of verdicts.

Screening may run in several processes, each with its share of the patients. Each writes its own part
(`Part`), holding back only small things: the funnel counts, a limited list of candidates for the HTML
report, and (for write-back) each verdict's status. The parts go into hidden working files in the output
directory (`working`), which `finish` joins and renames into place, so a run that fails leaves the previous
run's reports as they were (`replacing` removes its working files). Where the file system can cut ranges out
of a file (`regions`), every part writes into its own region of screening.json and `finish` cuts the gaps
out, copying nothing (a part but the last then ends with up to a block of spaces before the `,` that follows
it); elsewhere, and for screening.csv, `finish` appends the other parts' files (so a run in one process
copies nothing). Verdicts come patient by patient (trials in order) in a fixed order
of the patient ids (`eligibility.load.order_key`), which does not depend on how many processes ran.

screening.json is a JSON list with one verdict object per line:
`{"patient": "Patient/<id>", "trial": "<NCT id>", "verdict": ..., "criteria": [{"linkId", "kind", "text",
"result", "reason", "evidence"}, ...]}`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..eligibility.engine import ELIGIBLE, NEEDS_REVIEW, UNKNOWN, Funnel, Trial, Verdict
from ..eligibility.load import order_key
from ..outdir import exclusive
from .regions import Regions

#: What a run writes to its output directory (and replaces only once all are made); problems.csv only when
#: some input could not be used (an earlier run's is removed otherwise).
REPORTS = ("screening.json", "screening.csv", "report.html", "problems.csv")
CSV_COLUMNS = ("patient", "trial", "verdict", "met", "not_met", "unknown", "ineligible_because", "missing",
               "manual_review", "evidence")
#: How many candidates per trial and verdict the HTML report shows in full (the rest are in JSON and CSV).
HTML_CANDIDATES = 200


def verdict_json(verdict: Verdict) -> str:
    """One verdict as a line of screening.json."""
    return verdict.to_json()


def verdict_row(verdict: Verdict) -> list[str]:
    """One verdict as a row of screening.csv."""
    row = [verdict.patient, *_outcome_cells(verdict), _missing(verdict), verdict.plan.manual_ids,
           " ".join(verdict.evidence)]
    return [_one_line(cell) for cell in row]


def _outcome_cells(verdict: Verdict) -> list[str]:
    """The cells from trial to ineligible_because: the same for every verdict with the same results."""
    plan, results = verdict.plan, verdict.results
    counts = {"met": 0, "not-met": 0, "unknown": 0}
    for i in plan.decisive:
        counts[results[i]] += 1
    return [verdict.trial, verdict.verdict, str(counts["met"]), str(counts["not-met"]), str(counts["unknown"]),
            "; ".join(verdict.deciding)]


def _missing(verdict: Verdict) -> str:
    return " | ".join(verdict.missing) if verdict.verdict == NEEDS_REVIEW else ""


def _one_line(cell: str) -> str:
    return cell.replace("\r", " ").replace("\n", " ") if "\r" in cell or "\n" in cell else cell


def csv_cell(cell: str) -> str:
    """A cell of screening.csv as the csv module writes it (quoted where it must be), on one line."""
    cell = _one_line(cell)
    return '"' + cell.replace('"', '""') + '"' if "," in cell or '"' in cell else cell


def csv_line(verdict: Verdict, outcome: tuple[str, str]) -> str:
    """`verdict_row` as a line of CSV; `outcome` is what the same results always give (`outcome_csv`), made
    by `Part` once per distinct results."""
    missing, evidence = csv_cell(_missing(verdict)), csv_cell(" ".join(verdict.evidence))
    return f"{csv_cell(verdict.patient)},{outcome[0]},{missing},{outcome[1]},{evidence}\n"


def outcome_csv(verdict: Verdict) -> tuple[str, str]:
    """The CSV of a verdict's cells from trial to ineligible_because, and of its manual_review cell."""
    return ",".join(map(csv_cell, _outcome_cells(verdict))), csv_cell(verdict.plan.manual_ids)


@dataclass
class PartSummary:
    """What a part holds back for the merge: funnels, candidates for the HTML report, statuses, file names."""

    funnels: dict[str, Funnel]
    candidates: dict[str, list[Verdict]]             # per trial: eligible first, then needs-review, by patient
    statuses: list[tuple[str, str, str]]              # (patient, trial, verdict), when asked for
    patients: int
    number: int                                       # which part
    regions: Regions                                  # where the parts of screening.json are
    lines: int = 0                                    # verdicts written
    json_end: int = 0                                 # where this part's JSON stops in its file
    csv_end: int = 0                                  # and its CSV rows


@dataclass
class Part:
    """One process's share of the reports: fed verdicts patient by patient in patient-id order.

    Lines are gathered and written in large binary blocks; funnel counts are gathered per distinct
    (trial, verdict, results) and counted at the end. Every part but part 0 starts its JSON with the `,`
    that separates it from the parts before (`finish` blanks it when those are empty). `regions` says where
    the parts of screening.json go (`plan`); screening.csv's parts are files of their own.
    """

    number: int
    trials: list[Trial]
    regions: Regions
    html_candidates: int = HTML_CANDIDATES
    keep_statuses: bool = False
    _patients: int = 0
    _lines: int = 0
    _last: str | None = None
    funnels: dict[str, Funnel] = field(default_factory=dict)
    _candidates: dict[tuple[str, str], list[Verdict]] = field(default_factory=dict)
    _statuses: list[tuple[str, str, str]] = field(default_factory=list)

    BLOCK = 32                                         # verdicts gathered before a write (a few 100 KB)

    def __post_init__(self) -> None:
        final = self.number == 0
        self._json = self.regions.open(self.number)
        self._limit = self.regions.limit(self.number)
        self._csv_file = csv_regions(self.regions).open(self.number)
        if final:
            self._json.write(b"[\n")
            self._csv_file.write((",".join(CSV_COLUMNS) + "\n").encode())
        self.funnels = {t.id: Funnel(t.id) for t in self.trials}
        self._pending_json: list[bytes] = []
        self._pending_rows: list[str] = []
        self._counts: dict[tuple[str, str, tuple[str, ...]], list] = {}     # outcome -> [plan, count, outcome_csv]

    def add(self, verdict: Verdict) -> None:
        key = verdict.patient
        if key != self._last:
            self._patients += 1
            self._last = key
        self._pending_json.append(verdict.to_json_bytes())
        outcome = (verdict.trial, verdict.verdict, verdict.results)
        counted = self._counts.get(outcome)
        if counted is None:
            counted = self._counts[outcome] = [verdict.plan, 0, outcome_csv(verdict)]
        counted[1] += 1
        self._pending_rows.append(csv_line(verdict, counted[2]))
        if verdict.verdict in (ELIGIBLE, NEEDS_REVIEW):
            kept = self._candidates.setdefault((verdict.trial, verdict.verdict), [])
            if len(kept) < self.html_candidates:
                kept.append(verdict)
        if self.keep_statuses:
            self._statuses.append((verdict.patient, verdict.trial, verdict.verdict))
        if len(self._pending_json) >= self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        lines = self._pending_json
        if lines:
            block = b",\n".join(lines)
            if self._lines or self.number:
                block = b",\n" + block
            if self._json.tell() + len(block) > self._limit:
                raise OSError(f"{self.regions.path}: part {self.number} outgrew its region of the file")
            self._json.write(block)
            self._lines += len(lines)
            self._csv_file.write("".join(self._pending_rows).encode())
        self._pending_json = []
        self._pending_rows = []

    def add_all(self, verdicts: Iterable[Verdict]) -> PartSummary:
        for verdict in verdicts:
            self.add(verdict)
        return self.close()

    def close(self) -> PartSummary:
        self._flush()
        json_end, csv_end = self._json.tell(), self._csv_file.tell()
        self._json.close()
        self._csv_file.close()
        for (trial_id, verdict, results), (plan, n, _) in self._counts.items():
            self.funnels[trial_id].add_results(plan, verdict, results, n)
        self._counts = {}
        candidates = {t.id: self._candidates.get((t.id, ELIGIBLE), []) + self._candidates.get((t.id, NEEDS_REVIEW), [])
                      for t in self.trials}
        return PartSummary(self.funnels, candidates, self._statuses, self._patients, self.number,
                           self.regions, self._lines, json_end, csv_end)


def working(path: Path) -> Path:
    """The hidden file a report is written to before `finish` puts it in place."""
    return path.with_name(f".{path.name}.partial")


def plan(out: Path, parts: int) -> Regions:
    """Where `parts` processes write their parts of `out`/screening.json (see `Regions.plan`), after removing
    the working files a killed run left."""
    discard(out)
    return Regions.plan(working(out / "screening.json"), parts)


def csv_regions(regions: Regions) -> Regions:
    """Where the parts of screening.csv are, for those of screening.json: files of their own, appended at the
    end (a CSV file has no place for padding, so it is never joined in place)."""
    return Regions(working(regions.path.with_name("screening.csv")), regions.parts)


def discard(out: Path) -> None:
    """Remove the working files in `out` (every file `Regions` makes is named after its working file); the
    reports in place stay as they were."""
    for name in REPORTS:
        for left in out.glob(f"{working(out / name).name}*"):
            left.unlink(missing_ok=True)


@contextmanager
def replacing(out: Path) -> Iterator[None]:
    """A run writing the reports of `out`: if it fails before `finish` has put them in place, its working
    files go and the previous run's reports stay. A second run into the same directory meanwhile stops with
    `OutputInUse` instead of removing the first one's working files."""
    with exclusive(out, "writing screening reports"):
        try:
            yield
        except BaseException:
            discard(out)
            raise


@dataclass
class Screening:
    """The merged result: funnels and candidates per trial, verdict statuses, counts."""

    trials: list[Trial]
    funnels: dict[str, Funnel]
    candidates: dict[str, list[Verdict]]
    statuses: list[tuple[str, str, str]]
    patients: int
    as_of: str
    problems: list[Any] = field(default_factory=list)
    source: str = ""

    @property
    def reports(self) -> tuple[str, ...]:
        """The files a run writes: REPORTS, problems.csv only when some input could not be used."""
        return REPORTS if self.problems else REPORTS[:-1]


def finish(out: Path, parts: list[PartSummary], trials: list[Trial], as_of: str, html_candidates: int = HTML_CANDIDATES,
           problems: list[Any] | None = None, source: str = "") -> Screening:
    """Merge the parts into screening.json and screening.csv, write report.html and problems.csv, and put them
    in place together."""
    funnels = {t.id: Funnel(t.id) for t in trials}
    candidates: dict[str, list[Verdict]] = {t.id: [] for t in trials}
    statuses: list[tuple[str, str, str]] = []
    for part in parts:
        for trial_id, funnel in part.funnels.items():
            funnels[trial_id].merge(funnel)
        for trial_id, kept in part.candidates.items():
            candidates[trial_id].extend(kept)
        statuses.extend(part.statuses)
    rank = {ELIGIBLE: 0, NEEDS_REVIEW: 1}
    for trial_id, kept in candidates.items():
        # the first of each verdict in the output's order, as one part alone keeps them (whatever the number
        # of workers), then shown by patient id
        kept.sort(key=lambda v: (rank[v.verdict], order_key(v.patient.removeprefix("Patient/"))))
        by_verdict = {ELIGIBLE: 0, NEEDS_REVIEW: 0}
        trimmed = []
        for v in kept:
            by_verdict[v.verdict] += 1
            if by_verdict[v.verdict] <= html_candidates:
                trimmed.append(v)
        candidates[trial_id] = sorted(trimmed, key=lambda v: (rank[v.verdict], v.patient))
    statuses.sort()
    if not parts or parts[0].number != 0 or parts[0].regions.path != working(out / "screening.json"):
        raise ValueError(f"the parts to join must start with part 0, written into {out}")
    screening = Screening(trials, funnels, candidates, statuses, sum(p.patients for p in parts), as_of,
                          list(problems or ()), source)
    from .html import write_html
    _join_json(parts)
    csv_regions(parts[0].regions).join([part.csv_end for part in parts])
    write_html(working(out / "report.html"), screening, html_candidates)
    if screening.problems:
        _write_problems(working(out / "problems.csv"), screening.problems)
    for name in screening.reports:                                               # all made: put in place together
        os.replace(working(out / name), out / name)
    if not screening.problems:
        (out / "problems.csv").unlink(missing_ok=True)
    return screening


def _write_problems(path: Path, problems: list[Any]) -> None:
    """problems.csv: where (file and line, or entry) and what, per input record that could not be used."""
    with path.open("w", encoding="utf-8") as stream:
        stream.write("where,problem\n")
        stream.writelines(f"{csv_cell(p.where)},{csv_cell(p.message)}\n" for p in problems)


def _join_json(parts: list[PartSummary]) -> None:
    """screening.json made whole: the parts joined, then the list closed."""
    regions = parts[0].regions
    first = next((part for part in parts if part.lines), None)
    skip = {}
    if first is not None and first.number:              # its leading ",\n" follows nothing
        if regions.in_place:                            # a blank instead: bytes in place cannot be left out
            path, start = regions.location(first.number)
            with path.open("r+b") as stream:
                stream.seek(start)
                stream.write(b" ")
        else:
            skip[first.number] = len(b",\n")
    size = regions.join([part.json_end for part in parts], skip)
    with regions.path.open("r+b") as stream:
        stream.seek(size)
        stream.write(b"\n]\n" if first is not None else b"]\n")


def unknown_count(verdict: Verdict) -> int:
    return sum(1 for r in verdict.criteria if r.result == UNKNOWN and not r.manual)
