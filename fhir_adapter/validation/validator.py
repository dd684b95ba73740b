"""Validate resources from files, directories, NDJSON, Bundles or stdin, on several processes.

Each resource is checked alone, so one bad resource does not hide the others: structure with fhir.resources
(through `ehr.checking.ShapeCheck`, which validates each shape of resource once with its model and later
resources of that shape value by value), the specification's invariants, required bindings, codes, the
project's rules. A Bundle is also checked as a whole (`bundles.bundle_issues`). Every finding carries where
it came from (`file:line` for NDJSON, `file:12#entry[3]` for a Bundle entry). A line or file that is not JSON
is a finding too, with line and column.

>>> v = Validator("R4")
>>> [str(i) for i in v.document("x.json", {"resourceType": "Patient", "gender": "other", "text": {
...     "status": "generated", "div": "<div xmlns='http://www.w3.org/1999/xhtml'>p</div>"}})[0].issues]
[]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sys
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from pathlib import Path
from typing import Any

from ..ehr.checking import ShapeCheck
from ..render import check_version
from ..sources import (
    InputError,
    decode,
    decode_text,
    gzip_errors,
    is_ndjson,
    is_resource,
    open_bytes,
    read_bytes,
    skip_bom,
    stdin_text,
    walk,
)
from .bundles import bundle_issues
from .elements import ElementCheck
from .rules import rule_issues
from .spec import invariants
from .structure import Issue

SEVERITIES = ("error", "warning", "information")
CHUNK = 2000          # NDJSON lines per task (stdin)
CHUNK_BYTES = 1 << 20  # NDJSON bytes per task (files): about a thousand resources
STDIN = "<stdin>"
_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")


@dataclass(frozen=True)
class Result:
    """One resource (or unreadable record) and its findings."""

    source: str                   # file:line, file#entry[i], file
    label: str                    # Observation/<id>, or what could be read
    issues: tuple[Issue, ...] = ()


@dataclass
class Summary:
    """Counts over a run, and the invariants that could not be evaluated."""

    resources: int = 0
    severities: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)     # invariant key -> elements not checked
    reasons: dict[str, str] = field(default_factory=dict)      # invariant key -> why
    best_practice: Counter[str] = field(default_factory=Counter)  # best-practice invariant -> elements failing

    def add(self, result: Result) -> None:
        self.resources += 1
        self.severities.update(i.severity for i in result.issues)

    def merge(self, counts: Counts) -> None:
        self.resources += counts.clean
        self.skipped.update(counts.skipped)
        self.reasons.update(counts.reasons)
        self.best_practice.update(counts.best_practice)

    def failed(self, fail_on: str = "error") -> bool:
        return any(self.severities[s] for s in failing(fail_on))


def failing(fail_on: str = "error") -> tuple[str, ...]:
    """The severities that fail a run with `--fail-on` at `fail_on`."""
    return SEVERITIES[: SEVERITIES.index(fail_on) + 1]


@dataclass
class Counts:
    """What a worker counted besides its results: resources left out as clean, invariants not evaluated,
    best-practice invariants failing (when they are not reported)."""

    clean: int
    skipped: Counter[str]
    reasons: dict[str, str]
    best_practice: Counter[str]


def _label(resource: Any) -> str:
    if not isinstance(resource, dict):
        return "(not a resource)"
    rtype = resource.get("resourceType", "(no resourceType)")
    return f"{rtype}/{resource['id']}" if isinstance(resource.get("id"), str) else str(rtype)


def _entry_lines(text: str, entries: list[Any]) -> dict[int, int]:
    """Entry index -> line of its fullUrl in the document's text (entries with a fullUrl, in order)."""
    lines: dict[int, int] = {}
    position = line = 0
    for i, item in enumerate(entries):
        full_url = item.get("fullUrl") if isinstance(item, dict) else None
        if not isinstance(full_url, str):
            continue
        found = text.find(json.dumps(full_url, ensure_ascii=False), position)
        if found < 0:
            found = text.find(json.dumps(full_url), position)
        if found < 0:
            continue
        line += text.count("\n", position, found)
        position = found
        lines[i] = line + 1
    return lines


def _is_bundle(resource: Any) -> bool:
    return isinstance(resource, dict) and resource.get("resourceType") == "Bundle" and \
        isinstance(resource.get("entry"), list)


def _within(issues: list[Issue], prefix: str, source: str) -> tuple[Issue, ...]:
    if not issues:
        return ()
    return tuple(replace(i, location=prefix + i.location, source=source) for i in issues)


class Validator:
    """Validates resources of one FHIR version (R4: fhir.resources.R4B models; R5: fhir.resources)."""

    def __init__(self, fhir_version: str = "R4", *, allow_external: bool = False,
                 best_practice: str = "ignore") -> None:
        self.fhir_version = check_version(fhir_version)
        self.allow_external = allow_external
        self.structure = ShapeCheck(self.fhir_version)
        self.elements = ElementCheck(self.fhir_version, best_practice)

    def resource_issues(self, resource: dict[str, Any]) -> list[Issue]:
        """Every finding on one resource (for a Bundle: its own elements and the bundle-level rules, not its
        entries' resources)."""
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return [Issue("error", "(root)", "not a FHIR resource: no resourceType", rule="structure")]
        bundle = _is_bundle(resource)
        if bundle:
            shallow = {**resource, "entry": [{k: v for k, v in e.items() if k != "resource"}
                                             if isinstance(e, dict) else e for e in resource["entry"]]}
            found = self.structure.issues(shallow)
        else:
            found = self.structure.issues(resource)
        found += self.elements.issues(resource)
        found += rule_issues(resource)
        if bundle:
            found += bundle_issues(resource, allow_external=self.allow_external)
        return found

    def document(self, source: str, document: Any, text: str | None = None) -> list[Result]:
        """The results of one top-level JSON document: a resource, or a Bundle and each of its entries.

        With the document's `text`, an entry's source names the line of its fullUrl (`file:12#entry[3]`). A
        finding about an entry (its request or fullUrl, a reference that does not resolve) has the entry's source
        and goes with its resource's result (with the Bundle's when the entry has no resource).
        """
        if not _is_bundle(document):
            return [Result(source, _label(document), _within(self.resource_issues(document), "", source))]
        entries = document["entry"]
        lines = _entry_lines(text, entries) if text else {}
        by_entry: dict[int, list[Issue]] = {}
        own: list[Issue] = []
        for issue in self.resource_issues(document):     # a finding located in an entry is the entry's
            match = _ENTRY.match(issue.location)
            if match and int(match.group(1)) < len(entries):
                by_entry.setdefault(int(match.group(1)), []).append(issue)
            else:
                own.append(replace(issue, source=source))
        results = []
        for i, item in enumerate(entries):
            where = f"{source}:{lines[i]}#entry[{i}]" if i in lines else f"{source}#entry[{i}]"
            found = _within(by_entry.get(i, []), "", where)
            resource = item.get("resource") if isinstance(item, dict) else None
            if isinstance(resource, dict):
                issues = _within(self.resource_issues(resource), f"Bundle.entry[{i}].resource.", where)
                results.append(Result(where, _label(resource), found + issues))
            else:
                own.extend(found)
        return [Result(source, _label(document), tuple(own)), *results]

    def lines(self, source: str, first: int, lines: list[str] | list[str | bytes]) -> list[Result]:
        """The results of NDJSON lines, the first numbered `first`; blank lines are skipped (a line left as
        bytes is one that is not UTF-8)."""
        results: list[Result] = []
        for number, line in enumerate(lines, first):
            if not line.strip():
                continue
            where = f"{source}:{number}"
            if isinstance(line, bytes):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    results.append(Result(where, "(not UTF-8)", (Issue(
                        "error", "(line)", f"not UTF-8 text at line {number}, byte {exc.start + 1}: {exc.reason}",
                        rule="json", source=where),)))
                continue
            try:
                document = json.loads(line)
            except json.JSONDecodeError as exc:
                results.append(Result(where, "(malformed JSON)", (Issue(
                    "error", "(line)", f"malformed JSON at line {number}, column {exc.colno}: {exc.msg}",
                    rule="json", source=f"{where}:{exc.colno}"),)))
                continue
            results.extend(self.document(where, document))
        return results

    def counts(self, clean: int = 0) -> Counts:
        """The counts kept since the last call (then reset)."""
        evaluator = self.elements.evaluator
        reasons = {k: invariants(self.fhir_version)[k].skip or evaluator.failed.get(k, "")
                   for k in evaluator.skipped}
        counts = Counts(clean, Counter(evaluator.skipped), reasons, Counter(self.elements.best_practice_failed))
        evaluator.skipped.clear()
        self.elements.best_practice_failed.clear()
        return counts


# --- running over inputs ------------------------------------------------------------------------------------

_worker: Validator | None = None
_every_resource = True


def _init(fhir_version: str, allow_external: bool, best_practice: str, every_resource: bool) -> None:
    global _worker, _every_resource
    _worker = Validator(fhir_version, allow_external=allow_external, best_practice=best_practice)
    _every_resource = every_resource


def _run(task: tuple[str, str, int, Any]) -> tuple[list[Result], Counts]:
    """Validate one task; clean resources are only counted unless every resource is wanted."""
    assert _worker is not None
    kind, source, first, payload = task  # first: an NDJSON chunk's first line; for a file, found in a directory
    if kind == "lines":
        results = _worker.lines(source, first, payload)
    elif kind == "bytes":
        try:
            lines: list[str | bytes] = payload.decode("utf-8").split("\n")
        except UnicodeDecodeError:  # find the lines that are not UTF-8; they are reported, the others checked
            lines = [_utf8_or_bytes(line) for line in payload.split(b"\n")]
        results = _worker.lines(source, first, lines)
    elif kind == "file":
        data = read_bytes(Path(source))         # a damaged gzip file stops the run, as one of NDJSON does
        try:
            text = decode_text(data, source)
            document = decode(text, source)
        except InputError as exc:
            results = [Result(source, "(malformed JSON)", (Issue("error", "(file)", str(exc), rule="json",
                                                                 source=source),))]
        else:
            if first and not is_resource(document):
                # a JSON file beside the resources (a run's summary.json): said, not judged
                results = [Result(source, "(not a resource)", (Issue(
                    "information", "(file)", "not a FHIR resource (no resourceType): not validated",
                    rule="not-a-resource", source=source),))]
            else:
                results = _worker.document(source, document, text)    # the text gives entries their lines
    else:  # a parsed document
        results = _worker.document(source, payload)
    if _every_resource:
        return results, _worker.counts()
    kept = [r for r in results if r.issues]
    return kept, _worker.counts(len(results) - len(kept))


def _utf8_or_bytes(line: bytes) -> str | bytes:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line


def _ndjson_chunks(path: Path) -> Iterator[tuple[str, str, int, Any]]:
    """An NDJSON file in tasks of whole lines (about CHUNK_BYTES each), as bytes: the worker decodes them."""
    number = 1
    with open_bytes(path) as stream, gzip_errors(path):
        skip_bom(stream)                                    # a byte order mark is allowed before the first line
        rest = b""
        while block := stream.read(CHUNK_BYTES):
            block = rest + block
            end = block.rfind(b"\n") + 1
            if end == 0:
                rest = block
                continue
            rest = block[end:]
            yield "bytes", str(path), number, block[:end]
            number += block.count(b"\n", 0, end)
        if rest:
            yield "bytes", str(path), number, rest


def _tasks(paths: Iterable[str | Path], stdin: Any) -> Iterator[tuple[str, str, int, Any]]:
    for path, found in walk(paths):
        if str(path) == "-":
            text = stdin_text(stdin)
            try:  # one JSON document, or else NDJSON
                yield "document", STDIN, 0, json.loads(text)
            except json.JSONDecodeError:
                lines = text.splitlines()
                for start in range(0, len(lines), CHUNK):
                    yield "lines", STDIN, start + 1, lines[start:start + CHUNK]
        elif is_ndjson(path):
            yield from _ndjson_chunks(path)
        else:
            yield "file", str(path), int(found), None


def validate(paths: Iterable[str | Path], fhir_version: str = "R4", *, allow_external: bool = False,
             best_practice: str = "ignore", every_resource: bool = True, workers: int | None = None,
             stdin: Any = None) -> tuple[Iterator[Result], Summary]:
    """Results in input order (a lazy iterator) and the summary it fills as it is consumed.

    `every_resource`: a result for every resource (a JUnit report needs them); otherwise only the results
    with findings, the clean resources being counted in the summary.
    """
    summary = Summary()
    tasks = _tasks(list(paths), stdin or sys.stdin)
    workers = workers or os.cpu_count() or 1
    options = (fhir_version, allow_external, best_practice, every_resource)

    def collect(outcomes: Iterable[tuple[list[Result], Counts]]) -> Iterator[Result]:
        for results, counts in outcomes:
            summary.merge(counts)
            for result in results:
                summary.add(result)
                yield result

    def run() -> Iterator[Result]:
        first = list(islice(tasks, 2))
        if workers == 1 or len(first) < 2 or "fork" not in multiprocessing.get_all_start_methods():
            _init(*options)
            yield from collect(_run(t) for t in chain(first, tasks))
            return
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=_init, initargs=options) as pool:
            yield from collect(_ordered(pool, chain(first, tasks), 2 * workers + 2))

    return run(), summary


def _ordered(pool: Any, tasks: Iterable[Any], window: int) -> Iterator[Any]:
    """Outcomes in task order, with at most `window` tasks in flight (a large file is not read ahead)."""
    pending: deque[Any] = deque()
    for task in tasks:
        pending.append(pool.apply_async(_run, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()
