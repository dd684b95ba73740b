"""Transaction bundles: each resource a PUT to its deterministic id, so a re-run changes nothing.

>>> b = transaction([{"resourceType": "Patient", "id": "p1"}])
>>> b["type"], b["entry"][0]["request"]
('transaction', {'method': 'PUT', 'url': 'Patient/p1'})
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any


def entry(resource: dict[str, Any]) -> dict[str, Any]:
    """A transaction entry that PUTs the resource at its id."""
    rtype, rid = resource["resourceType"], resource.get("id")
    if not rid:
        raise ValueError(f"a {rtype} without an id cannot be PUT: ids are made from business identifiers")
    return {"fullUrl": f"urn:uuid:{rid}", "resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}


def transaction(resources: Iterable[dict[str, Any]], bundle_id: str | None = None) -> dict[str, Any]:
    """A transaction Bundle of PUT entries."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction"}
    if bundle_id:
        bundle["id"] = bundle_id
    bundle["entry"] = [entry(r) for r in resources]
    return bundle


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Successive lists of at most `size` items."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
