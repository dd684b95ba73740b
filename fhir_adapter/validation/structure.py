"""Structure and type checks with fhir.resources: R4B models for R4 output, R5 models for R5.

>>> structure_issues({"resourceType": "Patient", "birthDate": "1980-13-45"}, "R4")[0].location
'Patient.birthDate'
>>> structure_issues({"resourceType": "Patient", "birthDate": "1980-12-31"}, "R4")
[]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import pydantic

from ..render import check_version


@dataclass(frozen=True)
class Issue:
    """One finding: severity (`error`, `warning`, `information`), a FHIRPath-style location, a message.

    `rule` names the check (an invariant key such as `obs-6`, or `structure`, `binding`, ...); `source` is
    where the resource came from (`file:line`, `file#entry[3]`), filled in by whoever read it.
    """

    severity: str
    location: str
    message: str
    rule: str = ""
    source: str = ""

    def __str__(self) -> str:
        return f"{self.severity}: {self.location}: {self.message}" + (f" [{self.rule}]" if self.rule else "")


@cache
def model_class(resource_type: str, fhir_version: str = "R4") -> type[Any]:
    """The fhir.resources model for a resource type: `fhir.resources.R4B` for R4, `fhir.resources` for R5."""
    if check_version(fhir_version) == "R4":
        from fhir.resources.R4B import get_fhir_model_class
    else:
        from fhir.resources import get_fhir_model_class
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError):
        raise KeyError(f"{resource_type!r} is not a FHIR {fhir_version} resource type") from None


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "__root__":
            path += f".{part}"
    return path


def structure_issues(resource: dict[str, Any], fhir_version: str = "R4") -> list[Issue]:
    """Structure and type errors of one resource (empty when it validates)."""
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str):
        return [Issue("error", "(root)", "not a FHIR resource: no resourceType", rule="structure")]
    try:
        model = model_class(resource_type, fhir_version)
    except KeyError as exc:
        return [Issue("error", resource_type, str(exc.args[0]), rule="structure")]
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        return [Issue("error", _path(resource_type, tuple(err["loc"])), err["msg"], rule="structure")
                for err in exc.errors()]
    except ValueError as exc:  # fhir.resources raises plain ValueErrors for some element checks
        return [Issue("error", resource_type, str(exc), rule="structure")]
    return []
