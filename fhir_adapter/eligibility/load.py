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
used are reported by worker 0 only.

>>> partition(b"p1", 2) == partition("p1", 2)
True
"""

from __future__ import annotations

import gc
import gzip
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

from ..sources import InputError, decode, is_resource
from .data import PatientIndex, Problem, drug_concepts, subject_of

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
BOM = b"\xef\xbb\xbf"
NDJSON_SUFFIXES = (".ndjson", ".jsonl")
#: Resources other entries of a Bundle refer to that get their id from their `urn:uuid:` fullUrl if they have none.
_NAMED_BY_URL = ("Patient", "Medication")


def _parse(line: bytes, name: str, number: int) -> Any:
    """One NDJSON line parsed (`_BLANK` for a blank line); malformed JSON names file, line and column."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}:{number}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None
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


def _ndjson_share(stream: IO[bytes], name: str, part: int, parts: int, index: PatientIndex,
                  strays: list[tuple[str, dict[str, Any]]]) -> None:
    if stream.read(3) != BOM:                   # a byte order mark is allowed before the first line only
        stream.seek(0)
    for number, line in enumerate(stream, 1):
        key = line_key(line)
        if key is not None and (zlib.crc32(key) * parts) >> 32 != part:
            continue
        resource = _parse(line, name, number)
        if resource is _BLANK:
            continue
        if not isinstance(resource, dict) or "resourceType" not in resource:
            raise InputError(f"{name}:{number}: {_not_a_resource(resource)}")
        _keep(resource, f"{name}:{number}", key is None, part, parts, index, strays)


def _keep(resource: dict[str, Any], where: str, everyone: bool, part: int, parts: int, index: PatientIndex,
          strays: list[tuple[str, dict[str, Any]]]) -> None:
    """Index a parsed resource if it is this worker's; `everyone`: every worker parsed it."""
    pid = subject_of(resource)
    if pid is None:
        if part == 0 or not everyone:
            index.add(resource, where)          # counted, and reported if unusable, once
        elif resource.get("resourceType") == "Medication" and resource.get("id"):
            index.medications[resource["id"]] = drug_concepts(resource.get("code"))   # every worker needs them
    elif partition(pid, parts) == part:
        index.add(resource, where, pid)
    elif not everyone:
        strays.append((where, resource))        # guessed wrong from the raw line: hand it to its owner


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


def _decode_document(data: bytes, name: str) -> Any:
    """One JSON document from bytes, a leading byte order mark allowed."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    return decode(text, name)


def _is_ndjson(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(NDJSON_SUFFIXES)


def _readable(path: Path) -> bool:
    """Whether a file found in a directory is read: .json, .ndjson or .jsonl (any case), gzipped or not."""
    return path.name.lower().removesuffix(".gz").endswith((".json", *NDJSON_SUFFIXES))


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


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
        for given in paths:
            path = Path(given)
            if str(given) == "-":
                if inputs.stdin is None:
                    stream = getattr(sys.stdin, "buffer", None)
                    inputs.stdin = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
                    inputs.files.append((path, False))
                continue
            if path.is_dir():
                found = [(f, True) for f in sorted(path.rglob("*")) if f.is_file()]
            elif path.exists():
                found = [(path, False)]
            else:
                raise InputError(f"{path}: no such file or directory")
            for file, in_directory in found:
                if in_directory and not _readable(file):
                    inputs.skipped.append((file, "not .json, .ndjson or .jsonl (or one of them gzipped)"))
                    continue
                key = file.resolve()
                if key not in seen:                 # a file named twice, or also in a directory named, is read once
                    seen.add(key)
                    inputs.files.append((file, in_directory))
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
               ) -> tuple[PatientIndex, list[tuple[str, dict[str, Any]]]]:
    """One worker's share of the input: its patients indexed, and lines it parsed that belong to another.

    JSON files found in a directory that are not FHIR (the `summary.json` of `patients map`) are added to
    `skipped`; a file named explicitly must be FHIR.
    """
    index = PatientIndex()
    strays: list[tuple[str, dict[str, Any]]] = []
    problems: list[Problem] = []                # Bundles' unusable entries: every worker meets them, part 0 tells
    for path, found in inputs.files:
        if inputs.stdin is not None and str(path) == "-":
            name, data = "<stdin>", inputs.stdin
            if not _stdin_is_document(data):
                _ndjson_share(io.BytesIO(data), name, part, parts, index, strays)
                continue
        elif _is_ndjson(path):
            with _open(path) as stream, _gzip_errors(path):
                _ndjson_share(stream, str(path), part, parts, index, strays)
            continue
        else:
            with _open(path) as stream, _gzip_errors(path):
                name, data = str(path), stream.read()
        document = _decode_document(data, name)
        if found and not is_resource(document):
            if skipped is not None:
                skipped.append((path, "not a FHIR resource (no resourceType)"))
            continue
        for location, resource in document_resources(document, name, problems):     # every worker reads them
            _keep(resource, location, True, part, parts, index, strays)
    if part == 0:
        index.problems += problems
    return index, strays


@contextmanager
def _gzip_errors(path: Path) -> Iterator[None]:
    """A damaged gzip file as an `InputError` naming it."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: not a readable gzip file: {exc}") from None


def load(paths: Iterable[str | Path]) -> PatientIndex:
    """Every patient's data from files, in this process; files skipped in a directory are listed as problems."""
    skipped: list[tuple[Path, str]] = []
    inputs = Inputs.of(paths)
    index, _ = load_share(inputs, skipped=skipped)
    index.problems += (Problem(str(path), f"{why}: not read") for path, why in inputs.skipped + skipped)
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
        index, strays = load_share(inputs, part, parts, skipped)
        by_part: dict[int, list] = {}
        for where, resource in strays:
            by_part.setdefault(partition(subject_of(resource) or "", parts), []).append((where, resource))
        conn.send(("strays", by_part))
        for where, resource in conn.recv():
            index.add(resource, where)
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


def map_shares(inputs: Inputs, task: Task, workers: int | None = None,
               start: Callable[[int], None] | None = None) -> Iterator[Any]:
    """Run `task(index, part)` on each worker's share of the patients; yields the results in part order.

    With one worker (or where processes cannot fork) it all runs in this process. `start(parts)`, when given,
    is called before any work, with the number of parts. JSON files found not to be FHIR are added to
    `inputs.skipped`.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    workers = workers or workers_available()
    if "fork" not in multiprocessing.get_all_start_methods():
        workers = 1
    if start is not None:
        start(workers)
    if workers == 1:
        with no_gc():
            index, _ = load_share(inputs, 0, 1, inputs.skipped)
            result = task(index.finish(), 0)
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
