"""Deterministic resource ids: the same business identifier always gives the same id.

>>> resource_id("Patient", "urn:oid:1.2.3", "MRN001")
'ec2d56d1-6589-519d-afb5-1a34cc9d636d'
"""

from __future__ import annotations

import hashlib
import uuid

#: Namespace of every id this project makes (uuid5 of the project's canonical base URL).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://w3id.org/fhir-adapter")


def resource_id(resource_type: str, system: str, value: str) -> str:
    """UUID v5 of (resource type, identifier system, identifier value).

    Computed as `uuid.uuid5` does (SHA-1 of namespace + name, version and variant bits set), without
    building UUID objects: ids are made for every resource of large extracts.
    """
    if not (resource_type and system and value):
        raise ValueError(f"resource_id needs a type, a system and a value, got {resource_type!r}, "
                         f"{system!r}, {value!r}")
    h = _sha1(_NAMESPACE_BYTES + f"{resource_type}|{system}|{value}".encode()).hexdigest()
    # the first 16 bytes, with the version (5) in the 13th hex digit and the RFC 4122 variant in the 17th
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_NAMESPACE_BYTES = NAMESPACE.bytes
_sha1 = hashlib.sha1
_VARIANT = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}   # 10xx in binary


def reference(resource_type: str, system: str, value: str) -> str:
    """A relative reference (`Type/id`) to the resource with that business identifier."""
    return f"{resource_type}/{resource_id(resource_type, system, value)}"
