"""Pushing resources idempotently: dependency waves, transaction chunks in parallel, per-entry failures.

How a push runs:

1. Each resource gets its write: `PUT Type/id` (the deterministic id; `id_strategy="put"`), or
   `PUT Type?identifier=system|value` (`id_strategy="conditional"`, for servers that refuse client ids).
   A type the server cannot search by identifier (its CapabilityStatement declares no `conditionalUpdate`
   or no `identifier` search parameter) falls back to PUT by id, and the result says so.
2. Resources are ordered in waves so that a resource goes after those it references (Patient before its
   Observations, a parent ResearchStudy before its `partOf` children). Waves run one after the other; the
   chunks of a wave run `workers` at a time. With conditional writes, references to resources pushed in
   an earlier wave are rewritten to the ids the server gave them.
3. "Unchanged" is decided by the client, not the server, because servers differ: some store a new version
   for an identical PUT. Before writing a chunk the client reads the current version of each resource
   (one batch of reads; single reads when the server has no batch) and compares it with what would be sent,
   ignoring the server-managed `meta.versionId`, `meta.lastUpdated` and `meta.source`. Identical resources
   are not sent and count as unchanged, so a second push of the same data writes nothing and makes no new
   versions. `compare=False` skips the read (a first load into an empty server): then every resource is
   sent and counted created or updated from the server's answer (201 or 200).
4. A chunk goes as one transaction. If the server refuses the transaction, the chunk is sent again as a
   batch (or entry by entry without batch support) so that each entry gets its own answer: good entries are
   written, each bad one is reported with the server's OperationOutcome and where it came from.
5. Nothing is dropped: `total = created + updated + unchanged + failed + duplicates` (identical copies of one
   resource, as when two bundles hold the same CodeSystem, are merged and counted as duplicates). `sent` is
   how many resources went out in write requests. Failed resources can be written to NDJSON and pushed again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import bundle as bundles
from .capabilities import Capabilities
from .exceptions import AccessDenied, FhirClientError, FhirHttpError, ServerUnreachable, describe_outcome

log = logging.getLogger(__name__)

ID_STRATEGIES = ("put", "conditional")
DEFAULT_CHUNK = 200
DEFAULT_WORKERS = 2
SERVER_META = ("versionId", "lastUpdated", "source")
#: Statuses meaning "busy or down" (already retried by the transport): resending entry by entry would not help.
UNAVAILABLE = frozenset({429, 502, 503, 504})

Progress = Callable[[int, int], None]


@dataclass
class FailedEntry:
    """A resource the server did not take, with its answer."""

    resource: dict[str, Any]
    location: str | None
    message: str
    status: str | None = None
    outcome: dict[str, Any] | None = None

    @property
    def reference(self) -> str:
        if not isinstance(self.resource, dict):
            return "(not a resource)"
        return f"{self.resource.get('resourceType', '?')}/{self.resource.get('id') or '(no id)'}"

    def describe(self) -> str:
        head = f"{self.reference}" + (f" ({self.location})" if self.location else "")
        head += f": {self.status}" if self.status else ""
        lines = [f"{head}: {self.message}" if self.message else head]
        lines += [f"    {line}" for line in describe_outcome(self.outcome).splitlines()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "location": self.location, "status": self.status,
                "message": self.message, "outcome": self.outcome}


@dataclass
class PushResult:
    """Counts of one push; `total = created + updated + unchanged + failed + duplicates`."""

    total: int = 0
    sent: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    failures: list[FailedEntry] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    server_ids: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """One line with every count.

        >>> PushResult(total=5, sent=3, created=2, updated=1, unchanged=2, seconds=0.5).summary()
        'sent 3, created 2, updated 1, unchanged 2, failed 0 (5 resources in 0.5 s, 10 resources/s)'
        """
        text = (f"sent {self.sent}, created {self.created}, updated {self.updated}, unchanged {self.unchanged}, "
                f"failed {self.failed}")
        if self.duplicates:
            text += f", identical duplicates merged {self.duplicates}"
        rate = f", {self.total / self.seconds:,.0f} resources/s" if self.seconds > 0 else ""
        return f"{text} ({self.total} resources in {self.seconds:.1f} s{rate})"

    def write_failed(self, path: str | Path) -> int:
        """The failed resources as NDJSON, ready to push again once fixed; returns how many."""
        from ..sources import write_ndjson

        return write_ndjson(path, (f.resource for f in self.failures if isinstance(f.resource, dict)))

    def write_report(self, path: str | Path) -> None:
        """Every failure with its location, status and OperationOutcome, as text for people."""
        lines = [self.summary(), *(f"note: {n}" for n in self.notices), ""]
        lines += [f.describe() for f in self.failures]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "sent": self.sent, "created": self.created, "updated": self.updated,
                "unchanged": self.unchanged, "failed": self.failed, "duplicates": self.duplicates,
                "requests": self.requests, "seconds": round(self.seconds, 3), "notices": self.notices,
                "failures": [f.to_dict() for f in self.failures]}


@dataclass
class _Item:
    resource: dict[str, Any]
    location: str | None
    key: tuple[str, str]          # (type, our id), or (type, "identifier=system|value") without an id
    condition: str | None = None  # "identifier=system|value" (quoted) for a conditional write
    wave: int = 0

    @property
    def rtype(self) -> str:
        return self.resource["resourceType"]


@dataclass
class _ChunkResult:
    sent: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    requests: int = 0
    failures: list[FailedEntry] = field(default_factory=list)
    server_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    fatal: str | None = None
    settled: set[int] = field(default_factory=set)   # id() of the items counted or failed

    def count(self, item: _Item, kind: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.settled.add(id(item))

    def fail(self, item: _Item, message: str, status: str | None = None,
             outcome: dict[str, Any] | None = None) -> None:
        self.failures.append(FailedEntry(item.resource, item.location, message, status, outcome))
        self.settled.add(id(item))


def push(client: Any, resources: Iterable[Any], *, chunk_size: int = DEFAULT_CHUNK, workers: int = DEFAULT_WORKERS,
         id_strategy: str = "put", compare: bool = True, fhir_release: str | None = None,
         progress: Progress | None = None) -> PushResult:
    """Push `resources` (dicts, or `(location, dict)` pairs as `sources.resources` yields) to the client's server.

    Raises `CapabilityError` if the server cannot take them (FHIR version, no CapabilityStatement) and
    `ServerUnreachable`/`AuthError` if it cannot be reached at all; every other problem is a `FailedEntry`.
    """
    if id_strategy not in ID_STRATEGIES:
        raise ValueError(f"id_strategy must be one of {ID_STRATEGIES}, got {id_strategy!r}")
    if chunk_size < 1 or workers < 1:
        raise ValueError("chunk_size and workers must be at least 1")
    started = time.perf_counter()
    caps = client.require(fhir_release) if fhir_release else client.capabilities()
    result = PushResult()
    mode = "transaction" if caps.transaction else "batch" if caps.batch else "single"
    if mode != "transaction":
        result.notices.append(f"the server declares no transaction support: resources are sent "
                              f"{'in batches' if mode == 'batch' else 'one request each'}")
    items = _prepare(resources, id_strategy, caps, client.base_url, result)
    pusher = _Pusher(client, caps, mode, compare)
    done = result.total - len(items)  # failures and duplicates found while preparing
    if progress:
        progress(done, result.total)
    waves: dict[int, list[_Item]] = {}
    for item in items:
        waves.setdefault(item.wave, []).append(item)
    stop: str | None = None
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push") as pool:
        for number in sorted(waves):
            pending: set[Future[_ChunkResult]] = set()
            queue = iter(bundles.chunks(waves[number], chunk_size))
            server_ids = dict(result.server_ids)  # read-only during the wave
            while True:
                while stop is None and len(pending) < workers * 2 and (chunk := next(queue, None)) is not None:
                    pending.add(pool.submit(pusher.run, chunk, server_ids))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    part = future.result()
                    _merge(result, part)
                    done += part.unchanged + part.created + part.updated + len(part.failures)
                    stop = stop or part.fatal
                if progress:
                    progress(done, result.total)
            if stop is not None:
                for chunk in queue:
                    result.failures += [FailedEntry(i.resource, i.location, f"not sent: {stop}") for i in chunk]
                for later in sorted(waves):
                    if later > number:
                        result.failures += [FailedEntry(i.resource, i.location, f"not sent: {stop}")
                                            for i in waves[later]]
                result.notices.append(f"push stopped: {stop}")
                break
    if progress:
        progress(result.total, result.total)
    result.seconds = time.perf_counter() - started
    return result



def _merge(result: PushResult, part: _ChunkResult) -> None:
    result.sent += part.sent
    result.created += part.created
    result.updated += part.updated
    result.unchanged += part.unchanged
    result.requests += part.requests
    result.failures += part.failures
    result.server_ids.update(part.server_ids)


# -- preparing: strategy, identity, duplicates, waves -------------------------------------------------------

def _each(resources: Iterable[Any]) -> Iterator[tuple[str | None, Any]]:
    for item in resources:
        location, resource = item if isinstance(item, tuple) else (None, item)
        if isinstance(resource, dict) and resource.get("resourceType") == "Bundle" and \
                resource.get("type") in ("transaction", "batch", "collection"):
            for i, entry in enumerate(resource.get("entry") or []):
                yield f"{location or 'Bundle'}#entry[{i}]", (entry or {}).get("resource")
        else:
            yield location, resource


def _identifier(resource: dict[str, Any]) -> tuple[str, str] | None:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
            return identifier["system"], identifier["value"]
    return None


def _prepare(resources: Iterable[Any], id_strategy: str, caps: Capabilities, base_url: str,
             result: PushResult) -> list[_Item]:
    by_key: dict[tuple[str, str], _Item] = {}
    strategy: dict[str, str] = {}
    no_identifier: dict[str, int] = {}
    for location, resource in _each(resources):
        result.total += 1
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            result.failures.append(FailedEntry(resource, location, "not a FHIR resource (no resourceType)"))
            continue
        rtype, rid = resource["resourceType"], resource.get("id")
        if rtype not in strategy:
            strategy[rtype] = _strategy(rtype, id_strategy, caps, result)
        condition = None
        if strategy[rtype] == "conditional":
            identifier = _identifier(resource)
            if identifier:
                condition = "identifier=" + quote(f"{identifier[0]}|{identifier[1]}", safe="")
            elif rid:
                no_identifier[rtype] = no_identifier.get(rtype, 0) + 1
            else:
                result.failures.append(FailedEntry(
                    resource, location, "neither an id nor an identifier with system and value: "
                                        "cannot be pushed idempotently"))
                continue
        elif not rid:
            result.failures.append(FailedEntry(resource, location, "no id: with --id-strategy put every resource "
                                                                   "needs its deterministic id"))
            continue
        key = (rtype, rid) if rid else (rtype, condition or "")
        if key in by_key:
            first = by_key[key]
            if _comparable(first.resource) == _comparable(resource):
                result.duplicates += 1
            else:
                result.failures.append(FailedEntry(resource, location, f"conflicts with another {rtype} of the "
                                                   f"same id ({first.location or 'earlier input'}); not sent"))
            continue
        by_key[key] = _Item(resource, location, key, condition)
    for rtype, count in sorted(no_identifier.items()):
        result.notices.append(f"{count} {rtype} without an identifier (system and value): PUT by id instead")
    items = list(by_key.values())
    _assign_waves(items, base_url)
    return items


def _strategy(rtype: str, wanted: str, caps: Capabilities, result: PushResult) -> str:
    if wanted == "conditional" and not caps.conditional_update(rtype):
        result.notices.append(f"{rtype}: the server declares no conditional update by identifier "
                              f"(CapabilityStatement), so {rtype} is PUT by id")
        return "put"
    if wanted == "put" and not caps.client_ids(rtype):
        result.notices.append(f"{rtype}: the server declares updateCreate false (it may refuse client ids); "
                              f"try --id-strategy conditional if these fail")
    return wanted


def _references(value: Any) -> Iterator[dict[str, Any]]:
    """Every Reference-like dict (one with a string `reference`) inside a resource."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                yield node
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))


def _target(reference: str, base_url: str) -> tuple[str, str] | None:
    """(type, id) of a relative or same-server reference; None for others (urn:, contained, external)."""
    if reference.startswith(base_url + "/"):
        reference = reference[len(base_url) + 1:]
    elif reference.startswith(("http://", "https://", "urn:", "#")):
        return None
    parts = reference.split("/")
    if len(parts) in (2, 4) and parts[0][:1].isupper() and parts[1]:
        return parts[0], parts[1]
    return None


def _assign_waves(items: list[_Item], base_url: str) -> None:
    """Wave = 1 + the highest wave among the resources it references (0 without any); cycles are cut."""
    index = {item.key: item for item in items if not item.key[1].startswith("identifier=")}
    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for item in items:
        targets = {_target(r["reference"], base_url) for r in _references(item.resource)}
        edges[item.key] = [t for t in targets if t in index and t != item.key]
    depth: dict[tuple[str, str], int] = {}
    for item in items:
        if item.key in depth:
            continue
        stack: list[tuple[tuple[str, str], int]] = [(item.key, 0)]
        on_path: set[tuple[str, str]] = set()
        while stack:
            key, state = stack.pop()
            if state == 0:
                if key in depth or key in on_path:
                    continue
                on_path.add(key)
                stack.append((key, 1))
                stack.extend((t, 0) for t in edges.get(key, ()) if t not in depth and t not in on_path)
            else:
                on_path.discard(key)
                depth[key] = 1 + max((depth[t] for t in edges.get(key, ()) if t in depth), default=-1)
    for item in items:
        item.wave = depth.get(item.key, 0)


# -- one chunk ---------------------------------------------------------------------------------------------

def _comparable(resource: dict[str, Any], drop_id: bool = False) -> dict[str, Any]:
    """The resource without server-managed meta (and without `id` if asked), for comparison."""
    out = dict(resource)
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in SERVER_META}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    if drop_id:
        out.pop("id", None)
    return out


def _status_code(status: str | None) -> int:
    try:
        return int(str(status).split()[0])
    except (ValueError, IndexError):
        return 0


def _id_from_location(location: str | None, rtype: str) -> str | None:
    if not location:
        return None
    parts = location.split("?")[0].split("/")
    for i in range(len(parts) - 1):
        if parts[i] == rtype:
            return parts[i + 1]
    return None


class _Pusher:
    """Writes chunks; shared by the worker threads (holds no per-chunk state)."""

    def __init__(self, client: Any, caps: Capabilities, mode: str, compare: bool) -> None:
        self.client, self.caps, self.mode, self.compare = client, caps, mode, compare
        self._warned = threading.Event()

    def run(self, chunk: list[_Item], server_ids: dict[tuple[str, str], str]) -> _ChunkResult:
        out = _ChunkResult()
        try:
            self._run(chunk, server_ids, out)
        except (ServerUnreachable, AccessDenied) as exc:
            out.fatal = str(exc)
            for item in chunk:  # what was counted before the failure stays counted; the rest fails
                if id(item) not in out.settled:
                    out.fail(item, str(exc))
        return out

    def _run(self, chunk: list[_Item], server_ids: dict[tuple[str, str], str], out: _ChunkResult) -> None:
        bodies = [self._body(item, server_ids) for item in chunk]
        current = self._current(chunk, out) if self.compare else [None] * len(chunk)
        outgoing: list[tuple[_Item, dict[str, Any]]] = []
        for item, body, now in zip(chunk, bodies, current, strict=True):
            if now is False:          # already failed while reading
                continue
            if item.condition:
                if now is not None:   # the server knows it under its own id
                    body["id"] = now["id"]
                    out.server_ids[item.key] = now["id"]
                else:
                    body.pop("id", None)
            if now is not None and _comparable(body) == _comparable(now):
                out.count(item, "unchanged")
                continue
            outgoing.append((item, body))
        if outgoing:
            self._write(outgoing, out)

    def _body(self, item: _Item, server_ids: dict[tuple[str, str], str]) -> dict[str, Any]:
        """What is sent: with conditional writes, references carry the ids the server gave."""
        if not server_ids:
            return dict(item.resource)
        body = json.loads(json.dumps(item.resource))
        for ref in _references(body):
            target = _target(ref["reference"], self.client.base_url)
            if target in server_ids:
                ref["reference"] = f"{target[0]}/{server_ids[target]}"
        return body

    # -- reading what the server holds ----------------------------------------------------------------

    def _read_url(self, item: _Item) -> str:
        if item.condition:
            return f"{item.rtype}?{item.condition}"
        return f"{item.rtype}/{quote(item.key[1], safe='')}"

    def _current(self, chunk: list[_Item], out: _ChunkResult) -> list[Any]:
        """Per item: the server's current resource, None if it has none, False if the item failed here."""
        answers: list[tuple[int, dict[str, Any] | None]]
        if self.caps.batch:
            request = {"resourceType": "Bundle", "type": "batch",
                       "entry": [{"request": {"method": "GET", "url": self._read_url(i)}} for i in chunk]}
            out.requests += 1
            try:
                reply = self.client.bundle(request)
                entries = reply.get("entry") or []
                if len(entries) != len(chunk):
                    raise FhirClientError(f"batch read answered {len(entries)} entries for {len(chunk)}")
                answers = [(_status_code((e.get("response") or {}).get("status")), e.get("resource")) for e in entries]
            except (FhirHttpError, FhirClientError) as exc:
                if isinstance(exc, ServerUnreachable | AccessDenied):
                    raise
                if not self._warned.is_set():
                    self._warned.set()
                    log.warning("reading current versions in a batch failed (%s); reading one by one", exc)
                answers = [self._read_one(i, out) for i in chunk]
        else:
            answers = [self._read_one(i, out) for i in chunk]
        current: list[Any] = []
        for item, (status, body) in zip(chunk, answers, strict=True):
            if status == 200 and body and body.get("resourceType") == "Bundle":  # a conditional lookup
                matches = [e["resource"] for e in body.get("entry") or []
                           if e.get("resource") and (e.get("search") or {}).get("mode", "match") == "match"]
                if len(matches) > 1:
                    out.fail(item, f"{len(matches)} resources on the server match {self._read_url(item)}; "
                                   "conditional update would be refused")
                    current.append(False)
                else:
                    current.append(matches[0] if matches else None)
            elif status == 200 and body:
                current.append(body)
            else:                     # 404/410: not there; anything else: unknown, so send it
                current.append(None)
        return current

    def _read_one(self, item: _Item, out: _ChunkResult) -> tuple[int, dict[str, Any] | None]:
        out.requests += 1
        try:
            return 200, self.client.get_json(self._read_url(item))
        except (ServerUnreachable, AccessDenied):
            raise
        except FhirHttpError as exc:
            return exc.status, None

    # -- writing --------------------------------------------------------------------------------------

    def _entry(self, item: _Item, body: dict[str, Any]) -> dict[str, Any]:
        url = self._read_url(item)
        if item.condition:
            return {"resource": body, "request": {"method": "PUT", "url": url}}
        return {"fullUrl": f"{self.client.base_url}/{url}", "resource": body, "request": {"method": "PUT", "url": url}}

    def _write(self, outgoing: list[tuple[_Item, dict[str, Any]]], out: _ChunkResult) -> None:
        out.sent += len(outgoing)
        entries = [self._entry(item, body) for item, body in outgoing]
        mode = self.mode
        if mode == "transaction":
            out.requests += 1
            try:
                reply = self.client.bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries},
                                           minimal=True)
                self._count(outgoing, reply, out, atomic=True)
                return
            except (ServerUnreachable, AccessDenied):
                raise
            except FhirHttpError as exc:
                if exc.status in UNAVAILABLE or exc.status == 0:
                    self._fail_all(outgoing, out, exc)
                    return
                log.info("transaction of %d refused (%s); resending as %s to find the entries at fault",
                         len(entries), exc.status, "a batch" if self.caps.batch else "single requests")
                mode = "batch" if self.caps.batch else "single"
        if mode == "batch":
            out.requests += 1
            try:
                reply = self.client.bundle({"resourceType": "Bundle", "type": "batch", "entry": entries}, minimal=True)
            except (ServerUnreachable, AccessDenied):
                raise
            except FhirHttpError as exc:
                self._fail_all(outgoing, out, exc)
                return
            self._count(outgoing, reply, out, atomic=False)
            return
        for (item, body), entry in zip(outgoing, entries, strict=True):
            out.requests += 1
            try:
                response = self.client.request("PUT", entry["request"]["url"], json=body, idempotent=True,
                                               headers={"Prefer": "return=minimal"})
            except (ServerUnreachable, AccessDenied):
                raise
            except FhirHttpError as exc:
                out.fail(item, "refused by the server" if exc.outcome else str(exc), str(exc.status), exc.outcome)
                continue
            self._settle(item, response.status_code, response.headers.get("Location"), out)

    def _count(self, outgoing: list[tuple[_Item, dict[str, Any]]], reply: dict[str, Any], out: _ChunkResult,
               atomic: bool) -> None:
        answers = reply.get("entry") or []
        if len(answers) != len(outgoing):
            error = FhirHttpError("POST", "(bundle)", 0, text=f"the server answered {len(answers)} entries for "
                                                              f"{len(outgoing)} sent")
            self._fail_all(outgoing, out, error)
            return
        for (item, _), answer in zip(outgoing, answers, strict=True):
            response = answer.get("response") or {}
            code = _status_code(response.get("status"))
            if 200 <= code < 300:
                self._settle(item, code, response.get("location"), out)
            else:
                out.fail(item, "refused by the server", response.get("status"), response.get("outcome"))

    def _settle(self, item: _Item, code: int, location: str | None, out: _ChunkResult) -> None:
        out.count(item, "created" if code == 201 else "updated")
        if item.condition:
            server_id = _id_from_location(location, item.rtype)
            if server_id:
                out.server_ids[item.key] = server_id

    def _fail_all(self, outgoing: list[tuple[_Item, dict[str, Any]]], out: _ChunkResult, exc: FhirHttpError) -> None:
        message = str(exc) if exc.outcome is None else "the server refused the whole bundle"
        for item, _ in outgoing:
            out.fail(item, message, str(exc.status) if exc.status else None, exc.outcome)
