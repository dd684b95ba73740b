"""Content of the other FHIR version: an element that version defines and the one expected does not.

A push of R5 resources to an R4 server (or the reverse) otherwise fails entry by entry with a wall of
structure errors; one such element is enough to name the mistake. The element names come from the
fhir.resources models (R4B for R4, R5). An element neither version defines is not this module's business
(validation reports it).

>>> other_version_element({"resourceType": "ResearchStudy", "progressStatus": []}, "R4")
('R5', 'ResearchStudy.progressStatus')
>>> other_version_element({"resourceType": "Patient", "gender": "other"}, "R4") is None
True
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ..ehr.checking import model_elements
from ..render import check_version
from .structure import model_class

RESOURCE = "Resource"
#: Not entered: an extension's value may be of any type, and what an extension holds is not a version marker.
EXTENSIONS = frozenset({"extension", "modifierExtension"})


def other_version(fhir_version: str) -> str:
    """R5 for R4, R4 for R5."""
    return "R5" if check_version(fhir_version) == "R4" else "R4"


@cache
def _fields(type_name: str, fhir_version: str) -> dict[str, str | None] | None:
    """JSON name -> the complex type of its value (None for a primitive) of a type; None for an unknown type."""
    try:
        model = model_class(type_name, fhir_version)
    except KeyError:
        return None
    return {name: klass.__name__ if klass is not None else None
            for name, (_, _, klass) in model_elements(model).items()
            if not name.startswith("_") and name != "fhir_comments"}


_differs_memo: dict[tuple[str, str, str], bool] = {}


def _differs(type_name: str, mine: str, theirs: str, visiting: frozenset[str] = frozenset()) -> bool:
    """Whether a type, or a type inside it, has elements one version defines and the other does not (a type
    alike in both, such as Coding or Reference, need not be entered)."""
    key = (type_name, mine, theirs)
    if key in _differs_memo:
        return _differs_memo[key]
    if type_name in visiting:  # a cycle (Extension in Extension): decided where it started
        return False
    ours, other = _fields(type_name, mine), _fields(type_name, theirs)
    differs = ours is None or other is None or ours.keys() != other.keys() or any(
        child is not None and (child != other[name] or child == RESOURCE
                               or _differs(child, mine, theirs, visiting | {type_name}))
        for name, child in ours.items() if name not in EXTENSIONS)
    if not visiting:
        _differs_memo[key] = differs
    return differs


def other_version_element(resource: Any, fhir_version: str) -> tuple[str, str] | None:
    """(the other version, the path of the first element of `resource` only that version defines), or None."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return None
    version = check_version(fhir_version)
    rtype, theirs = resource["resourceType"], other_version(version)
    path = _first(resource, rtype, version, theirs, rtype)
    return (theirs, path) if path else None


def _first(data: dict[str, Any], type_name: str, mine: str, theirs: str, location: str) -> str | None:
    ours, other = _fields(type_name, mine), _fields(type_name, theirs)
    if ours is None or other is None:
        return None
    for name, value in data.items():
        key = name[1:] if name.startswith("_") else name
        if key == "resourceType":
            continue
        if key not in ours:
            if key in other:
                return f"{location}.{key}"
            continue
        child = ours[key]
        if child is None or name.startswith("_") or key in EXTENSIONS or other.get(key) is None or \
                not _differs(child, mine, theirs):
            continue
        for item in value if isinstance(value, list) else (value,):
            if not isinstance(item, dict):
                continue
            if child == RESOURCE:
                found = other_version_element(item, mine)
                if found:
                    return found[1]
            elif found_path := _first(item, child, mine, theirs, f"{location}.{key}"):
                return found_path
    return None
