"""Screening reports: `screening.json`, `screening.csv` and `report.html` from a stream of verdicts.

Screening may run in several processes, each with its share of the patients. Each writes its own part
(`Part`), holding back only small things: the funnel counts, a limited list of candidates for the HTML
report, and (for write-back) each verdict's status. Part 0 writes straight into the final files. Where the file
system can cut ranges out of a file (`regions`), every part writes into its own region of screening.json
and `finish` cuts the gaps out, copying nothing (a part but the last then ends with up to a block of spaces
before the `,` that follows it); elsewhere, and for screening.csv, `finish` appends the other parts' files
(so a run in one process copies nothing). Verdicts come patient by patient (trials in order) in a fixed order
of the patient ids (`eligibility.load.order_key`), which does not depend on how many processes ran.

screening.json is a JSON list with one verdict object per line:
`{"patient": "Patient/<id>", "trial": "<NCT id>", "verdict": ..., "criteria": [{"linkId", "kind", "text",
"result", "reason", "evidence"}, ...]}`.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..eligibility.engine import ELIGIBLE, NEEDS_REVIEW, UNKNOWN, Funnel, Trial, Verdict
from ..eligibility.load import order_key
from .regions import Regions

CSV_COLUMNS = ("patient", "trial", "verdict", "met", "not_met", "unknown", "ineligible_because", "missing",
               "manual_review", "evidence")
#: How many candidates per trial and verdict the HTML report shows in full (the rest are in JSON and CSV).
HTML_CANDIDATES = 200


def verdict_json(verdict: Verdict) -> str:
    """One verdict as a line of screening.json."""
    return verdict.to_json()


def verdict_row(verdict: Verdict) -> list[str]:
    """One verdict as a row of screening.csv."""
    plan, results = verdict.plan, verdict.results
    counts = {"met": 0, "not-met": 0, "unknown": 0}
    for i in plan.decisive:
        counts[results[i]] += 1
    row = [verdict.patient, verdict.trial, verdict.verdict, str(counts["met"]), str(counts["not-met"]),
           str(counts["unknown"]),
           "; ".join(verdict.deciding),
           " | ".join(verdict.missing) if verdict.verdict == NEEDS_REVIEW else "",
           plan.manual_ids,
           " ".join(verdict.evidence)]
    return [cell.replace("\r", " ").replace("\n", " ") for cell in row]    # one line per row, always


@dataclass
class PartSummary:
    """What a part holds back for the merge: funnels, candidates for the HTML report, statuses, file names."""

    funnels: dict[str, Funnel]
    candidates: dict[str, list[Verdict]]             # per trial: eligible first, then needs-review, by patient
    statuses: list[tuple[str, str, str]]              # (patient, trial, verdict), when asked for
    patients: int
    json_path: Path
    csv_path: Path
    lines: int = 0                                    # verdicts written
    regions: Regions | None = None                    # the parts share screening.json (`regions.stride`)
    json_end: int = 0                                 # where this part's JSON stops in its file

    @property
    def final(self) -> bool:
        """Whether this part was written straight into screening.json / screening.csv (part 0)."""
        return self.json_path.name == "screening.json"


@dataclass
class Part:
    """One process's share of the reports: fed verdicts patient by patient in patient-id order.

    Lines are gathered and written in large binary blocks; funnel counts are gathered per distinct
    (trial, verdict, results) and counted at the end. Every part but part 0 starts its JSON with the `,`
    that separates it from the parts before (`finish` blanks it when those are empty). With `regions` laid
    out in place, the part writes its JSON into its region of screening.json.
    """

    out: Path
    number: int
    trials: list[Trial]
    html_candidates: int = HTML_CANDIDATES
    keep_statuses: bool = False
    regions: Regions | None = None
    _patients: int = 0
    _lines: int = 0
    _last: str | None = None
    funnels: dict[str, Funnel] = field(default_factory=dict)
    _candidates: dict[tuple[str, str], list[Verdict]] = field(default_factory=dict)
    _statuses: list[tuple[str, str, str]] = field(default_factory=list)

    BLOCK = 32                                         # verdicts gathered before a write (a few 100 KB)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        final = self.number == 0
        in_place = self.regions is not None and self.regions.stride > 0
        self.json_path = self.out / ("screening.json" if final or in_place else f".screening-{self.number}.part")
        self.csv_path = self.out / ("screening.csv" if final else f".screening-{self.number}.csv.part")
        if in_place:
            self._json = self.regions.open(self.number)  # type: ignore[union-attr]
            self._limit = self.regions.limit(self.number)  # type: ignore[union-attr]
        else:
            self._json = self.json_path.open("wb")
            self._limit = 1 << 62
        self._csv_buffer = io.StringIO()
        self._csv = csv.writer(self._csv_buffer, lineterminator="\n")
        self._csv_file = self.csv_path.open("wb")
        if final:
            self._json.write(b"[\n")
            self._csv_file.write((",".join(CSV_COLUMNS) + "\n").encode())
        self.funnels = {t.id: Funnel(t.id) for t in self.trials}
        self._pending_json: list[bytes] = []
        self._pending_rows: list[list[str]] = []
        self._counts: dict[tuple[str, str, tuple[str, ...]], list] = {}

    def add(self, verdict: Verdict) -> None:
        key = verdict.patient
        if key != self._last:
            self._patients += 1
            self._last = key
        self._pending_json.append(verdict.to_json_bytes())
        self._pending_rows.append(verdict_row(verdict))
        outcome = (verdict.trial, verdict.verdict, verdict.results)
        counted = self._counts.get(outcome)
        if counted is None:
            self._counts[outcome] = [verdict.plan, 1]
        else:
            counted[1] += 1
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
                raise OSError(f"{self.json_path}: part {self.number} outgrew its region of the file")
            self._json.write(block)
            self._lines += len(lines)
            self._csv.writerows(self._pending_rows)
            self._csv_file.write(self._csv_buffer.getvalue().encode())
            self._csv_buffer.seek(0)
            self._csv_buffer.truncate()
        self._pending_json = []
        self._pending_rows = []

    def add_all(self, verdicts: Iterable[Verdict]) -> PartSummary:
        for verdict in verdicts:
            self.add(verdict)
        return self.close()

    def close(self) -> PartSummary:
        self._flush()
        end = self._json.tell()
        self._json.close()
        self._csv_file.close()
        for (trial_id, verdict, results), (plan, n) in self._counts.items():
            self.funnels[trial_id].add_results(plan, verdict, results, n)
        self._counts = {}
        candidates = {t.id: self._candidates.get((t.id, ELIGIBLE), []) + self._candidates.get((t.id, NEEDS_REVIEW), [])
                      for t in self.trials}
        return PartSummary(self.funnels, candidates, self._statuses, self._patients, self.json_path, self.csv_path,
                           self._lines, self.regions, end)


def _end_of(path: Path) -> BinaryIO:
    """A file opened for writing at its end; not in append mode, which the kernel's copy refuses (EBADF)."""
    stream = path.open("r+b")
    stream.seek(0, os.SEEK_END)
    return stream


def _append(target: BinaryIO, path: Path) -> None:
    """Copy a whole file to the end of `target` (in the kernel where it can)."""
    with path.open("rb") as source:
        size = os.fstat(source.fileno()).st_size
        target.flush()
        copied = 0
        if hasattr(os, "copy_file_range"):
            try:
                while copied < size:
                    n = os.copy_file_range(source.fileno(), target.fileno(), size - copied)
                    if n == 0:
                        break
                    copied += n
            except OSError:         # the rest through this process, after what the kernel copied
                target.seek(0, os.SEEK_END)
        if copied < size:
            source.seek(copied)
            shutil.copyfileobj(source, target, 1 << 20)
        target.seek(0, os.SEEK_END)


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


def finish(out: Path, parts: list[PartSummary], trials: list[Trial], as_of: str, html_candidates: int = HTML_CANDIDATES,
           problems: list[Any] | None = None, source: str = "") -> Screening:
    """Merge the parts into screening.json and screening.csv, and write report.html."""
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
    if not parts or not parts[0].final or parts[0].json_path.parent != out:
        raise ValueError(f"the parts to join must start with part 0, written into {out}")
    _join_json(out / "screening.json", parts)
    with _end_of(out / "screening.csv") as stream:
        for part in parts[1:]:
            _append(stream, part.csv_path)
    for part in parts[1:]:
        if part.json_path != parts[0].json_path:
            part.json_path.unlink(missing_ok=True)
        part.csv_path.unlink(missing_ok=True)
    screening = Screening(trials, funnels, candidates, statuses, sum(p.patients for p in parts), as_of,
                          list(problems or ()), source)
    from .html import write_html
    write_html(out / "report.html", screening, html_candidates)
    return screening


def _join_json(path: Path, parts: list[PartSummary]) -> None:
    """screening.json made whole: the parts joined (in place or appended), then the list closed."""
    regions = parts[0].regions
    in_place = regions is not None and regions.stride > 0
    first = next((part for part in parts if part.lines), None)
    if first is not None and first is not parts[0]:     # its leading "," follows nothing: a blank instead
        with first.json_path.open("r+b") as stream:
            stream.seek(regions.start(parts.index(first)) if in_place else 0)  # type: ignore[union-attr]
            stream.write(b" ")
    if in_place:
        size = regions.join([part.json_end for part in parts])  # type: ignore[union-attr]
        stream = path.open("r+b")
        stream.seek(size)
    else:
        stream = _end_of(path)
        for part in parts[1:]:
            if part.lines:
                _append(stream, part.json_path)
    with stream:
        stream.write(b"\n]\n" if first is not None else b"]\n")
        stream.truncate()


def unknown_count(verdict: Verdict) -> int:
    return sum(1 for r in verdict.criteria if r.result == UNKNOWN and not r.manual)
