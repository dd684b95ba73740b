"""Bundle rules: references resolve inside the bundle, fullUrl and id agree, transaction entries have a
request method and url, no resource or fullUrl appears twice. A finding about an entry has a location
starting with the entry's (`Bundle.entry[3].request`), by which a report puts it with the entry.

>>> b = {"resourceType": "Bundle", "type": "collection", "entry": [
...     {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Observation", "id": "1",
...      "subject": {"reference": "Patient/2"}}}]}
>>> [str(i) for i in bundle_issues(b)]
['error: Bundle.entry[0].resource.Observation.subject.reference: Patient/2 does not resolve inside the bundle \
[bundle-reference]']
>>> bundle_issues(b, allow_external=True)
[]
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .structure import Issue

_RESTFUL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
TRANSACTIONS = ("transaction", "batch")


def _references(value: Any, location: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            yield f"{location}.reference", reference
        for name, child in value.items():
            if isinstance(child, (dict, list)) and name != "contained":
                yield from _references(child, f"{location}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _references(item, f"{location}[{i}]")


def bundle_issues(bundle: dict[str, Any], *, allow_external: bool = False) -> list[Issue]:
    """The bundle-level findings of a Bundle (each entry's resource is validated on its own)."""
    out: list[Issue] = []
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return out
    kind = bundle.get("type")
    full_urls: dict[str, int] = {}
    typed_ids: dict[tuple[str, str], int] = {}
    for i, item in enumerate(entries):
        if not isinstance(item, dict):
            continue
        where = f"Bundle.entry[{i}]"
        resource = item.get("resource") if isinstance(item.get("resource"), dict) else None
        full_url = item.get("fullUrl")
        rtype = resource.get("resourceType") if resource else None
        rid = resource.get("id") if resource else None
        if isinstance(full_url, str):
            if full_url in full_urls:
                out.append(Issue("error", f"{where}.fullUrl", f"fullUrl {full_url} is also entry "
                                 f"{full_urls[full_url]}'s", rule="bundle-duplicate"))
            full_urls.setdefault(full_url, i)
            if resource is not None:
                out.extend(_full_url_agrees(full_url, rtype, rid, where))
        if rtype and isinstance(rid, str):
            if (rtype, rid) in typed_ids:
                out.append(Issue("error", f"{where}.resource.{rtype}.id", f"{rtype}/{rid} is also entry "
                                 f"{typed_ids[(rtype, rid)]}", rule="bundle-duplicate"))
            typed_ids.setdefault((rtype, rid), i)
        if kind in TRANSACTIONS:
            request = item.get("request") if isinstance(item.get("request"), dict) else {}
            for part in ("method", "url"):
                if not request.get(part):
                    out.append(Issue("error", f"{where}.request", f"a {kind} entry needs request.{part}",
                                     rule="bundle-request"))
            url = request.get("url")
            if request.get("method") == "PUT" and rtype and isinstance(url, str) and "?" not in url and \
                    isinstance(rid, str) and url.rstrip("/") != f"{rtype}/{rid}":
                out.append(Issue("error", f"{where}.request.url", f"PUT {url} does not match the resource "
                                 f"{rtype}/{rid}", rule="bundle-request"))
    out.extend(_unresolved(entries, full_urls, typed_ids, kind, allow_external))
    return out


def _full_url_agrees(full_url: str, rtype: Any, rid: Any, where: str) -> list[Issue]:
    if full_url.startswith("urn:uuid:"):
        if isinstance(rid, str) and full_url[9:] != rid:
            return [Issue("warning", f"{where}.fullUrl", f"fullUrl {full_url} and id {rid} differ",
                          rule="bundle-fullurl")]
        return []
    match = _RESTFUL.search(full_url)
    if match and not isinstance(rid, str):
        return [Issue("error", f"{where}.fullUrl", f"fullUrl {full_url} names {match.group(1)}/{match.group(2)} "
                      "but the resource has no id", rule="bundle-fullurl")]
    if match and (match.group(1) != rtype or match.group(2) != rid):
        return [Issue("error", f"{where}.fullUrl", f"fullUrl {full_url} does not end with the resource's "
                      f"{rtype}/{rid}", rule="bundle-fullurl")]
    return []


def _unresolved(entries: list[Any], full_urls: dict[str, int], typed_ids: dict[tuple[str, str], int],
                kind: Any, allow_external: bool) -> Iterator[Issue]:
    for i, item in enumerate(entries):
        resource = item.get("resource") if isinstance(item, dict) else None
        if not isinstance(resource, dict):
            continue
        base = f"Bundle.entry[{i}].resource.{resource.get('resourceType')}"
        for location, reference in _references(resource, base):
            if reference.startswith("#") or reference in full_urls:
                continue
            if "?" in reference and kind in TRANSACTIONS:
                continue  # a conditional reference: the server resolves it
            match = _RESTFUL.search(reference)
            if match and (match.group(1), match.group(2)) in typed_ids and not reference.startswith("urn:"):
                continue
            if allow_external and not reference.startswith("urn:"):
                continue
            yield Issue("error", location, f"{reference} does not resolve inside the bundle",
                        rule="bundle-reference")
