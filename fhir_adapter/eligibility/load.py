"""Loading patient data from files, on every core: NDJSON per resource type, Bundles, single resources.

Parsing JSON is most of the cost of screening a large cohort, so the work is split by patient: each of N
worker processes reads every file but parses only the lines of its own patients (a patient's share is the
CRC-32 of its id, found in the raw line before any parsing), indexes them and then screens them.
So each line is parsed once, each worker holds only its patients, and the patients' data never travel
between processes.

The raw-line guess of a line's patient is checked after parsing. A line whose real patient belongs to
another worker (a `Patient/` reference before the subject, say) is handed over through the parent process
before screening starts, so nothing is lost whatever the JSON looks like. Lines with no patient at all
(Medication resources) are parsed by every worker.

`Inputs.of` finds the files once, in the parent (each file once; stdin read there, so every worker has it),
and JSON documents (Bundles, single resources) are read whole by every worker; a Bundle's entries that cannot be
used are reported by worker 0 only. So is a Bundle written as one NDJSON line: every worker parses the lines that
hold `"Bundle"`, and keeps its share of the entries.

A resource read twice (the same Type/id about the same patient: an NDJSON export and a Bundle of the same data,
a line repeated) is used once, from its first copy in input order; each later copy is a problem (see `Copies`).

>>> partition(b"p1", 2) == partition("p1", 2)
True
"""

from __future__ import annotations

import gc
import io
import json
import json.scanner
import multiprocessing
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..sources import (
    BOM,
    InputError,
    decode_document,
    gzip_errors,
    is_ndjson,
    is_resource,
    not_utf8,
    open_bytes,
    read_bytes,
    skip_bom,
    walk,
)
from .data import READ_TYPES, PatientIndex, Problem, drug_concepts, subject_of

_PATIENT_TYPE = re.compile(rb'"resourceType"\s*:\s*"Patient"')
_ID = re.compile(rb'"id"\s*:\s*"([^"]+)"')


def order_key(pid: str) -> tuple[int, str]:
    """Where a patient comes in the output: by a fixed hash of its id, then the id (any number of workers)."""
    return zlib.crc32(pid.encode()), pid


def partition(key: str | bytes, parts: int) -> int:
    """Which of `parts` workers owns a patient id: a range of the id's CRC-32, so that the workers' outputs,
    each in `order_key` order, joined in worker order, are in `order_key` order too."""
    if isinstance(key, str):
        key = key.encode()
    return (zlib.crc32(key) * parts) >> 32


def line_key(line: bytes) -> bytes | None:
    """A fast guess of the patient id a raw NDJSON line is about (None: no patient seen).

    >>> line_key(b'{"resourceType":"Observation","subject":{"reference":"Patient/42"}}')
    b'42'
    >>> line_key(b'{"resourceType": "Patient", "id": "42"}')
    b'42'
    """
    i = line.find(b"Patient/")
    if i >= 0:
        i += 8
        j = line.find(b'"', i)
        key = line[i:j]
        slash = key.find(b"/")
        return key[:slash] if slash >= 0 else key
    if _PATIENT_TYPE.search(line):
        found = _ID.search(line)
        return found.group(1) if found else None
    return None


_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]
_BLANK = object()                               # what `_parse` gives for a blank line
#: Resources other entries of a Bundle refer to that get their id from their `urn:uuid:` fullUrl if they have none.
_NAMED_BY_URL = ("Patient", "Medication")
#: In a raw NDJSON line: it may be a Bundle, which every worker parses (its entries are about many patients).
_BUNDLE = b'"Bundle"'
#: A record's position in the input, the same in every worker, as one int: the file (its index in `Inputs.files`),
#: the line (0 in a JSON document) and the entry (the n-th resource of a Bundle, 0 otherwise), shifted by these;
#: the low 32 bits are free for the CRC-32 of the record's patient (see `Copies`).
_FILE, _LINE, _ENTRY = 104, 64, 32
_CRC = 0xFFFFFFFF
_LINES = (1 << (_FILE - _LINE)) - 1


def _parse(line: bytes, name: str, number: int) -> Any:
    """One NDJSON line parsed (`_BLANK` for a blank line); malformed JSON names file, line and column."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(f"{name}:{number}", exc) from None
    start = 0
    if text[:1] != "{":
        start = len(text) - len(text.lstrip())
        if start == len(text):
            return _BLANK
    try:
        value, end = _SCAN(text, start)
        if end == len(text) or not text[end:].strip():
            return value
    except (json.JSONDecodeError, StopIteration):
        pass
    text = text.rstrip("\r\n")                  # slow path, for the exact message: the column within the line
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if number == 1 and text.strip() in ("{", "["):
            hint = " (is this a pretty-printed JSON document? NDJSON needs one resource per line)"
        raise InputError(f"{name}:{number}:{exc.colno}: malformed JSON: {exc.msg}{hint}") from None
    raise InputError(f"{name}:{number}: malformed JSON")  # pragma: no cover - loads accepted what scan refused


def _not_a_resource(value: Any) -> str:
    return "null, not a FHIR resource" if value is None else "not a FHIR resource (no resourceType)"


Stray = tuple[str, int, dict[str, Any]]        # a resource parsed by a worker that does not own its patient:
                                                # (where, position, resource)


def _ndjson_share(stream: IO[bytes], name: str, file: int, part: int, parts: int, index: PatientIndex,
                  strays: list[Stray], copies: Copies, problems: list[Problem]) -> None:
    skip_bom(stream)                            # a byte order mark is allowed before the first line only
    base = file << _FILE
    for number, line in enumerate(stream, 1):
        key = line_key(line)
        if key is not None and (zlib.crc32(key) * parts) >> 32 != part:
            if _BUNDLE not in line:
                continue
            theirs = True                       # parsed only in case it is a Bundle: then every worker reads it
        else:
            theirs = False
        resource = _parse(line, name, number)
        if resource is _BLANK:
            continue
        if not isinstance(resource, dict) or "resourceType" not in resource:
            raise InputError(f"{name}:{number}: {_not_a_resource(resource)}")
        if resource["resourceType"] == "Bundle":
            everyone = key is None or _BUNDLE in line   # every worker parsed it, each keeps its share; else only
            where, at = f"{name}:{number}", base | number << _LINE     # this one did (an escaped name): strays
            entries = document_resources(resource, where, problems if everyone else index.problems)
            for seq, (location, entry) in enumerate(entries):
                _keep(entry, location, at | seq << _ENTRY, everyone, part, parts, index, strays, copies)
        elif not theirs:
            _keep(resource, f"{name}:{number}", base | number << _LINE, key is None, part, parts, index, strays,
                  copies)


def _keep(resource: dict[str, Any], where: str, position: int, everyone: bool, part: int, parts: int,
          index: PatientIndex, strays: list[Stray], copies: Copies) -> None:
    """Index a parsed resource if it is this worker's and not a later copy of one indexed (`Copies`);
    `position`: where it is in the input (see `_FILE`); `everyone`: every worker parsed it."""
    pid = subject_of(resource)
    if pid is None:
        tell = part == 0 or not everyone        # counted, and reported if unusable, once
        rid = resource.get("id")
        if resource.get("resourceType") == "Medication" and rid.__class__ is str and rid:
            ref = f"Medication/{rid}"
            first = copies.first.setdefault(ref, position)
            if first != position and not copies.used(ref, first, position, "", tell):
                index.read += tell
                return
            if not tell:
                index.medications[rid] = drug_concepts(resource.get("code"))   # every worker needs them
        if tell:
            index.add(resource, where)
        return
    crc = zlib.crc32(pid.encode())
    if (crc * parts) >> 32 == part:             # = partition(pid, parts)
        rtype, rid = resource["resourceType"], resource.get("id")
        if rid.__class__ is str and rid and rtype.__class__ is str and rtype in READ_TYPES:
            ref = f"{rtype}/{rid}"              # data.py's evidence reference too
            value = position | crc
            first = copies.first.setdefault(ref, value)
            if first != value and not copies.used(ref, first, value, pid):
                index.read += 1
                return
            index.add(resource, where, pid, ref)
        else:
            index.add(resource, where, pid)
    elif not everyone:
        strays.append((where, position, resource))      # guessed wrong from the raw line: hand it to its owner


class _Later(Exception):
    """A resource handed over by another worker comes before a copy of it indexed already: read the input again."""


class Copies:
    """The first copy of each resource a worker has read, and the later copies, which are not used.

    A resource is its Type/id about one patient (every patient's resources go to one worker, so no worker needs
    another's copies; a Medication, about no patient, is known to every worker and reported by worker 0). The
    first copy in input order is used: files in the order `Inputs.of` gives, lines in order, a Bundle's entries in
    order, whatever the number of workers. Each later copy is a problem at its own location naming the first's,
    saying whether it differs from the first, and in which elements (`report`). A resource without an id (allowed
    in a Bundle) is never a copy of another; resources of types screening does not read are not looked at.

    Why the first and not, say, the latest `meta.lastUpdated`: exports need not carry it, and "the file given
    first wins" is a rule a site can act on (give the better source first), where merging two differing copies
    would make up a record neither source holds.

    Reading costs one dict entry per resource of the types screening reads (`data.READ_TYPES`): its position
    and its patient's CRC-32 by `Type/id` (`first`; `others` for the rare id used again about another patient,
    which is that patient's own resource; two patients whose ids share a CRC-32 and a resource id would be taken
    for one, and the copy reported as differing in `subject`). Nothing of the content is kept: the copies and their
    firsts are read again, once all is read, only when there are copies.
    """

    def __init__(self, seeded: list[Stray] | None = None) -> None:
        self.first: dict[str, int] = {}                    # Type/id -> position | CRC-32 of its patient
        self.others: dict[tuple[str, str], int] = {}       # (Type/id, patient) -> the same
        self.later: dict[int, tuple[str, int]] = {}        # a later copy's position -> (Type/id, the first's)
        self.left: dict[int, int] = {}                     # a first copy's position -> how many later copies
        self.seeded = seeded is not None
        for _, position, resource in sorted(seeded or (), key=_position):    # their first copies, not yet used
            pid = subject_of(resource) or ""
            rtype, rid = resource["resourceType"], resource.get("id")
            if rid.__class__ is str and rid and rtype.__class__ is str and rtype in READ_TYPES:
                ref, value = f"{rtype}/{rid}", position | zlib.crc32(pid.encode())
                if (self.first.setdefault(ref, value) ^ value) & _CRC:
                    self.others.setdefault((ref, pid), value)

    def used(self, ref: str, first: int, value: int, pid: str, tell: bool = True) -> bool:
        """Whether the copy at `value` (position | patient CRC) of a resource met before at `first` is used;
        a later copy is recorded when this worker tells (`tell`)."""
        table: dict[Any, int] = self.first
        key: Any = ref
        if (first ^ value) & _CRC:              # the id again about another patient: that patient's resource
            table, key = self.others, (ref, pid)
            first = table.setdefault(key, value)
        if first == value:
            return True
        if first < value:
            if tell:
                first &= ~_CRC
                self.later[value & ~_CRC] = ref, first
                self.left[first] = self.left.get(first, 0) + 1
            return False
        if not self.seeded:                     # only a stray can come before the first copy met
            raise _Later
        table[key] = value                      # a stray seeded from further on: this copy is first after all
        return True

    def report(self, inputs: Inputs, index: PatientIndex) -> None:
        """Each later copy as a problem: where it is, where the first is, and whether it differs from it.

        The copies and their firsts are read again, in input order; a first copy's canonical JSON is kept only
        until its last later copy has been compared with it.
        """
        if not self.later:
            return
        left, later = self.left, self.later
        held: dict[int, tuple[str, str]] = {}
        for position, where, resource in _read_again(inputs, left.keys() | later.keys()):
            if position in left:
                held[position] = where, _canonical(resource)
                continue
            ref, first = later[position]
            found = held.get(first)             # None only if a file changed while it was read
            if found is None:
                index.problems.append(Problem(where, f"{ref} again: this copy not used"))
                continue
            left[first] -= 1
            if not left[first]:
                del held[first]
            first_where, text = found
            index.problems.append(Problem(where, f"{ref} again (first at {first_where}): {_compared(text, resource)}"))


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
_ABSENT = object()


def _compared(first: str, resource: dict[str, Any]) -> str:
    """What a later copy is to its first (`first`: the first's canonical JSON)."""
    if _canonical(resource) != first:
        was = json.loads(first)
        differ = [name for name in sorted(was.keys() | resource.keys())
                  if was.get(name, _ABSENT) != resource.get(name, _ABSENT)]
        if differ:                              # none: the same numbers written otherwise (3 and 3.0)
            return f"differs from the first in {', '.join(differ)}; first used"
    return "this copy not used"


def _position(stray: Stray) -> int:
    return stray[1]


def _take(strays: list[Stray], part: int, parts: int, index: PatientIndex, copies: Copies) -> bool:
    """Index the resources other workers parsed for this one, in input order; False when one of them comes before
    a copy of it indexed already (then this worker reads its share again, `load_share(..., seeded=strays)`)."""
    try:
        for where, position, resource in sorted(strays, key=_position):
            _keep(resource, where, position, True, part, parts, index, [], copies)
    except _Later:
        return False
    return True


# ------------------------------------------------------------------------------------------ documents

def _id_from_url(url: str, rtype: str) -> str | None:
    """The id a fullUrl gives a resource without one: `urn:uuid:<id>`, `urn:oid:<id>`, `.../<rtype>/<id>`."""
    for prefix in ("urn:uuid:", "urn:oid:"):
        if url.startswith(prefix):
            return url[len(prefix):] or None
    marker = f"{rtype}/"
    if marker in url:
        return url.rsplit(marker, 1)[1].split("/")[0] or None
    return None


def _resolve(resource: dict[str, Any], urls: Mapping[str, str]) -> None:
    """Rewrite the references screening follows (subject, patient, medication) that are fullUrls of the Bundle."""
    refs = [resource.get("subject"), resource.get("patient"), resource.get("medicationReference")]
    medication = resource.get("medication")
    if isinstance(medication, dict):
        refs.append(medication.get("reference"))
    for ref in refs:
        if isinstance(ref, dict):
            target = ref.get("reference")
            if isinstance(target, str) and target in urls:
                ref["reference"] = urls[target]


def _entries(bundle: dict[str, Any], where: str, problems: list[Problem], outer: Mapping[str, str],
             ) -> Iterator[tuple[str, dict[str, Any]]]:
    """A Bundle's resources with their locations, nested Bundles' too; unusable entries go to `problems`."""
    entries = bundle.get("entry")
    if entries is None:
        return
    if not isinstance(entries, list):
        problems.append(Problem(where, "Bundle entry is not a list: not read"))
        return
    sep = "#" if "#" not in where else ".resource."
    found: list[tuple[str, dict[str, Any]]] = []
    urls: dict[str, str] = {}
    for i, item in enumerate(entries):
        at = f"{where}{sep}entry[{i}]"
        resource = item.get("resource") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            problems.append(Problem(at, "Bundle entry is not an object: not read"))
        elif resource is None:
            problems.append(Problem(at, "Bundle entry without a resource: not read"))
        elif not is_resource(resource):
            problems.append(Problem(at, "Bundle entry's resource is not a FHIR resource (no resourceType): not read"))
        else:
            found.append((at, resource))
            url = item.get("fullUrl")
            if isinstance(url, str) and url:
                rtype, rid = resource["resourceType"], resource.get("id")
                if not rid and rtype in _NAMED_BY_URL:
                    rid = _id_from_url(url, rtype)
                    if rid:
                        resource["id"] = rid
                if isinstance(rid, str) and rid:
                    urls[url] = f"{rtype}/{rid}"
    scope = {**outer, **urls} if outer else urls
    for at, resource in found:
        if resource["resourceType"] == "Bundle":
            yield from _entries(resource, at, problems, scope)
        else:
            if scope:
                _resolve(resource, scope)
            yield at, resource


def document_resources(document: Any, where: str, problems: list[Problem],
                       ) -> Iterator[tuple[str, dict[str, Any]]]:
    """The resources of one JSON document with their locations: itself, or a Bundle's entries (nested Bundles'
    too, at `file#entry[i].resource.entry[j]`), their `urn:uuid:` references resolved through the entries'
    fullUrl (a Patient without id takes it from its own); entries that cannot be read go to `problems`."""
    if not is_resource(document):
        raise InputError(f"{where}: not a FHIR resource (no resourceType)")
    if document["resourceType"] == "Bundle":
        yield from _entries(document, where, problems, {})
    else:
        yield where, document


@dataclass
class Inputs:
    """What to read: each file once, in order, with whether a directory gave it (`found`), what stdin held
    (read before any worker starts), and the files skipped, with why."""

    files: list[tuple[Path, bool]] = field(default_factory=list)
    stdin: bytes | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @classmethod
    def of(cls, paths: Iterable[str | Path]) -> Inputs:
        """The inputs named by files, directories (their .json, .ndjson and .jsonl files, also gzipped) and `-`;
        a path that does not exist is an `InputError`."""
        inputs, seen = cls(), set()
        skipped: list[tuple[Path, str]] = []
        for given in paths:
            path = Path(given)
            if str(given) == "-":
                if inputs.stdin is None:
                    stream = getattr(sys.stdin, "buffer", None)
                    inputs.stdin = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
                    inputs.files.append((path, False))
                continue
            for file, in_directory in walk([path], skipped):
                key = file.resolve()
                if key not in seen:                 # a file named twice, or also in a directory named, is read once
                    seen.add(key)
                    inputs.files.append((file, in_directory))
        once: dict[Path, tuple[Path, str]] = {}   # a directory named twice: its skipped files told once
        for file, why in skipped:
            once.setdefault(file.resolve(), (file, why))
        inputs.skipped = list(once.values())
        return inputs


def _stdin_is_document(data: bytes) -> bool:
    """Whether stdin holds one JSON document (else NDJSON): its first line with text is not a whole JSON value
    (a document spread over lines), or the only line with text."""
    lines = iter(io.BytesIO(data.removeprefix(BOM)))
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        return False
    text = first.decode("utf-8", "replace").strip()
    try:
        complete = _SCAN(text, 0)[1] == len(text)
    except (json.JSONDecodeError, StopIteration):
        complete = False
    return not complete or not any(line.strip() for line in lines)


def load_share(inputs: Inputs, part: int = 0, parts: int = 1, skipped: list[tuple[Path, str]] | None = None,
               seeded: list[Stray] | None = None) -> tuple[PatientIndex, list[Stray], Copies]:
    """One worker's share of the input: its patients indexed, the lines it parsed that belong to another, and the
    copies of resources met (`Copies`; not yet reported: `Copies.report`, once the strays are in).

    JSON files found in a directory that are not FHIR (the `summary.json` of `patients map`) are added to
    `skipped`; a file named explicitly must be FHIR. `seeded`: the strays other workers handed over, read again
    because one comes before a copy of it in this worker's share (see `_take`).
    """
    index = PatientIndex()
    strays: list[Stray] = []
    copies = Copies(seeded)
    problems: list[Problem] = []                # Bundles' unusable entries: every worker meets them, part 0 tells
    for file, (path, found) in enumerate(inputs.files):
        if inputs.stdin is not None and str(path) == "-":
            name, data = "<stdin>", inputs.stdin
            if not _stdin_is_document(data):
                _ndjson_share(io.BytesIO(data), name, file, part, parts, index, strays, copies, problems)
                continue
        elif is_ndjson(path):
            with open_bytes(path) as stream, gzip_errors(path):
                _ndjson_share(stream, str(path), file, part, parts, index, strays, copies, problems)
            continue
        else:
            name, data = str(path), read_bytes(path)
        document = decode_document(data, name)
        if found and not is_resource(document):
            if skipped is not None:
                skipped.append((path, "not a FHIR resource (no resourceType)"))
            continue
        base = file << _FILE
        for seq, (location, resource) in enumerate(document_resources(document, name, problems)):   # every worker
            _keep(resource, location, base | seq << _ENTRY, True, part, parts, index, strays, copies)
    if part == 0:
        index.problems += problems
    return index, strays, copies


def _read_again(inputs: Inputs, positions: set[int]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The resources at these positions (see `_FILE`), with their locations, in input order, read again."""
    lines: dict[int, set[int]] = {}
    for position in positions:
        lines.setdefault(position >> _FILE, set()).add(position >> _LINE & _LINES)
    for file in sorted(lines):
        path, _ = inputs.files[file]
        base, wanted = file << _FILE, lines[file]
        if inputs.stdin is not None and str(path) == "-":
            name, data = "<stdin>", inputs.stdin
            stream: IO[bytes] | None = None if _stdin_is_document(data) else io.BytesIO(data)
        elif is_ndjson(path):
            name, data, stream = str(path), b"", open_bytes(path)
        else:
            name, data, stream = str(path), read_bytes(path), None
        if stream is None:
            yield from _resources_at(decode_document(data, name), name, base, positions)
            continue
        with stream, gzip_errors(path):
            skip_bom(stream)
            last = max(wanted)
            for number, line in enumerate(stream, 1):
                if number > last:
                    break
                if number in wanted:
                    yield from _resources_at(_parse(line, name, number), f"{name}:{number}", base | number << _LINE,
                                             positions)


def _resources_at(document: Any, where: str, position: int, positions: set[int],
                  ) -> Iterator[tuple[int, str, dict[str, Any]]]:
    if not is_resource(document):
        return
    for seq, (location, resource) in enumerate(document_resources(document, where, [])):
        if position | seq << _ENTRY in positions:
            yield position | seq << _ENTRY, location, resource


def _load_all(inputs: Inputs) -> PatientIndex:
    """Every patient, in this process (the one share of one), with the copies met reported; not yet finished."""
    index, _, copies = load_share(inputs, 0, 1, inputs.skipped)
    copies.report(inputs, index)
    return index


def load(paths: Iterable[str | Path]) -> PatientIndex:
    """Every patient's data from files, in this process; files skipped in a directory are listed as problems."""
    inputs = Inputs.of(paths)
    index = _load_all(inputs)
    index.problems += (Problem(str(path), f"{why}: not read") for path, why in inputs.skipped)
    return index.finish()


# ------------------------------------------------------------------------------------------ workers

@contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: indexing builds millions of small objects and no cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


Task = Callable[[PatientIndex, int], Any]


def _worker(inputs: Inputs, part: int, parts: int, task: Task, conn: Any) -> None:
    gc.disable()        # a short-lived process building many small objects: reference counting frees them
    try:
        skipped: list[tuple[Path, str]] = []
        index, strays, copies = load_share(inputs, part, parts, skipped)
        by_part: dict[int, list[Stray]] = {}
        for stray in strays:
            by_part.setdefault(partition(subject_of(stray[2]) or "", parts), []).append(stray)
        conn.send(("strays", by_part))
        incoming = conn.recv()
        if not _take(incoming, part, parts, index, copies):   # one comes before a copy of it: all in order again
            index, _, copies = load_share(inputs, part, parts, seeded=incoming)
            _take(incoming, part, parts, index, copies)
        copies.report(inputs, index)
        conn.send(("done", (task(index.finish(), part), skipped)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        passed = isinstance(exc, InputError | OSError)
        conn.send(("error", exc if passed else RuntimeError(f"worker {part}: {exc!r}")))
    finally:
        conn.close()


def workers_available() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(workers: int | None = None) -> int:
    """How many parts `map_shares` splits the patients into: `workers` (default: one per core), or 1 where
    processes cannot fork."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return workers or workers_available()


def map_shares(inputs: Inputs, task: Task, workers: int | None = None) -> Iterator[Any]:
    """Run `task(index, part)` on each of `worker_count(workers)` shares of the patients; yields the results in
    part order. With one worker it all runs in this process. JSON files found not to be FHIR are added to
    `inputs.skipped`.
    """
    workers = worker_count(workers)
    if workers == 1:
        with no_gc():
            result = task(_load_all(inputs).finish(), 0)
        yield result
        return
    context = multiprocessing.get_context("fork")
    pipes, processes = [], []
    for part in range(workers):
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(inputs, part, workers, task, child), daemon=True)
        process.start()
        child.close()
        pipes.append(parent)
        processes.append(process)
    try:
        incoming: list[list] = [[] for _ in range(workers)]
        for conn in pipes:
            kind, payload = conn.recv()
            if kind == "error":
                raise payload
            for target, items in payload.items():
                incoming[target].extend(items)
        for conn, items in zip(pipes, incoming, strict=True):
            conn.send(items)
        results = []
        for part, conn in enumerate(pipes):
            kind, payload = conn.recv()
            if kind == "error":
                raise payload
            result, skipped = payload
            if part == 0:                       # every worker reads the same files: one tells
                inputs.skipped += skipped
            results.append(result)
        yield from results
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
