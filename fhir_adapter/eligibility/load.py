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

>>> partition(b"p1", 2) == partition("p1", 2)
True
"""

from __future__ import annotations

import gc
import json
import json.scanner
import multiprocessing
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..sources import InputError, file_documents, unpack, walk
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


def _parse(line: bytes, name: str, number: int) -> Any:
    """One NDJSON line parsed (None for a blank line); malformed JSON names file, line and column."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}:{number}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    start = 0
    if text[:1] != "{":
        start = len(text) - len(text.lstrip())
        if start == len(text):
            return None
    try:
        value, end = _SCAN(text, start)
        if end == len(text) or not text[end:].strip():
            return value
    except (json.JSONDecodeError, StopIteration):
        pass
    try:                                        # slow path, for the exact message
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}:{number}:{exc.colno}: malformed JSON: {exc.msg}") from None
    raise InputError(f"{name}:{number}: malformed JSON")  # pragma: no cover - loads accepted what scan refused


def _ndjson_share(path: Path, part: int, parts: int, index: PatientIndex,
                  strays: list[tuple[str, dict[str, Any]]]) -> None:
    name = str(path)
    with path.open("rb") as stream:
        for number, line in enumerate(stream, 1):
            key = line_key(line)
            if key is not None and (zlib.crc32(key) * parts) >> 32 != part:
                continue
            resource = _parse(line, name, number)
            if resource is None:
                continue
            if not isinstance(resource, dict) or "resourceType" not in resource:
                raise InputError(f"{name}:{number}: not a FHIR resource (no resourceType)")
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


def load_share(paths: Iterable[str | Path], part: int = 0, parts: int = 1,
               ) -> tuple[PatientIndex, list[tuple[str, dict[str, Any]]]]:
    """One worker's share of the input: its patients indexed, and lines it parsed that belong to another."""
    index = PatientIndex()
    strays: list[tuple[str, dict[str, Any]]] = []
    skipped: list[Path] = []
    for path, found in walk(paths):
        if path.suffix == ".ndjson":
            _ndjson_share(path, part, parts, index, strays)
            continue
        for where, document in file_documents(path, found, skipped):   # Bundles and single resources:
            for location, resource in unpack(document, where):         # every worker reads them
                _keep(resource, location, True, part, parts, index, strays)
    if part == 0:
        index.problems += (Problem(str(path), "not a FHIR resource (no resourceType): not read") for path in skipped)
    return index, strays


def load(paths: Iterable[str | Path]) -> PatientIndex:
    """Every patient's data from files, in this process."""
    index, _ = load_share(paths)
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


def _worker(paths: list[str], part: int, parts: int, task: Task, conn: Any) -> None:
    gc.disable()        # a short-lived process building many small objects: reference counting frees them
    try:
        index, strays = load_share(paths, part, parts)
        by_part: dict[int, list] = {}
        for where, resource in strays:
            by_part.setdefault(partition(subject_of(resource) or "", parts), []).append((where, resource))
        conn.send(("strays", by_part))
        for where, resource in conn.recv():
            index.add(resource, where)
        conn.send(("done", task(index.finish(), part)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        conn.send(("error", exc if isinstance(exc, InputError) else RuntimeError(f"worker {part}: {exc!r}")))
    finally:
        conn.close()


def workers_available() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def map_shares(paths: Iterable[str | Path], task: Task, workers: int | None = None,
               start: Callable[[int], None] | None = None) -> Iterator[Any]:
    """Run `task(index, part)` on each worker's share of the patients; yields the results in part order.

    With one worker (or where processes cannot fork) it all runs in this process. `start(parts)`, when given,
    is called once the paths are found to exist and before any work, with the number of parts.
    """
    paths = [str(p) for p in paths]
    list(walk(paths))                                   # a missing path fails here, with its name
    workers = workers or workers_available()
    if "fork" not in multiprocessing.get_all_start_methods():
        workers = 1
    if start is not None:
        start(workers)
    if workers == 1:
        with no_gc():
            index, _ = load_share(paths)
            result = task(index.finish(), 0)
        yield result
        return
    context = multiprocessing.get_context("fork")
    pipes, processes = [], []
    for part in range(workers):
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(paths, part, workers, task, child), daemon=True)
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
        for conn in pipes:
            kind, payload = conn.recv()
            if kind == "error":
                raise payload
            results.append(payload)
        yield from results
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
