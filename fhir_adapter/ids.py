"""Deterministic resource ids: the same business identifier always gives the same id.

>>> resource_id("Patient", "urn:oid:1.2.3", "MRN001")
'ec2d56d1-6589-519d-afb5-1a34cc9d636d'
"""

from __future__ import annotations

import uuid

#: Namespace of every id this project makes (uuid5 of the project's canonical base URL).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://w3id.org/fhir-adapter")


def resource_id(resource_type: str, system: str, value: str) -> str:
    """UUID v5 of (resource type, identifier system, identifier value)."""
    if not (resource_type and system and value):
        raise ValueError(f"resource_id needs a type, a system and a value, got {resource_type!r}, "
                         f"{system!r}, {value!r}")
    return str(uuid.uuid5(NAMESPACE, f"{resource_type}|{system}|{value}"))


def reference(resource_type: str, system: str, value: str) -> str:
    """A relative reference (`Type/id`) to the resource with that business identifier."""
    return f"{resource_type}/{resource_id(resource_type, system, value)}"
