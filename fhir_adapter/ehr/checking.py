"""Structure validation of many similar resources with fhir.resources, memoizing repeated elements.

Validating a FHIR model is a pure function of its input, and a complex element (a CodeableConcept,
a Reference, a Quantity, ...) validates the same wherever it appears. Mapped EHR rows repeat the same
elements over and over (the EDSS code, the category, the patient reference of a patient's rows), so
`StructureCheck` keeps the validated model instances of recently seen top-level elements and hands them
to fhir.resources in place of the raw JSON the next time the same element comes (pydantic takes a model
instance of the right class as already valid). Every resource is still validated by its fhir.resources
model (R4B for R4, R5 for R5); a resource that fails is validated again from its raw JSON by
`fhir_adapter.validation.structure_issues`, so the issues reported are exactly the plain ones.

>>> check = StructureCheck("R4")
>>> edss = {"resourceType": "Observation", "status": "final", "code": {"text": "EDSS"}}
>>> check.issues(edss)
[]
>>> check.issues({**edss, "valueBoolean": "x"})[0].location
'Observation.valueBoolean'
"""

from __future__ import annotations

import marshal
from typing import Any

from ..render import check_version
from ..validation.structure import Issue, model_class, structure_issues

#: Top-level elements worth memoizing: they repeat across the resources `patients map` writes. The items
#: of a list element are memoized one by one. An element whose values rarely repeat (lab values) stops
#: being memoized after a while: computing its key would cost more than it saves.
MEMO_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Patient": (),
    "Condition": ("clinicalStatus", "verificationStatus", "category", "code", "subject"),
    "Observation": ("category", "code", "subject", "valueQuantity", "valueCodeableConcept", "component"),
    "MedicationStatement": ("medicationCodeableConcept", "medication", "subject", "dosage"),
}
TRIAL = 500            # lookups before an element's hit rate is judged
WORTHWHILE = 0.3       # the hit rate below which an element is no longer memoized


def _key(value: Any) -> bytes:
    """A key equal for equal JSON values: marshal format 2 (no back-references, so equal in, equal out)."""
    return marshal.dumps(value, 2)



class _Memo:
    """Validated instances of one element of one resource type, by the element's JSON."""

    __slots__ = ("attribute", "known", "lookups", "hits", "active")

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute
        self.known: dict[bytes, Any] = {}
        self.lookups = self.hits = 0
        self.active = True


class StructureCheck:
    """Validates resources of one FHIR version; keeps at most `size` memoized values per element."""

    def __init__(self, fhir_version: str = "R4", size: int = 4096) -> None:
        self.fhir_version = check_version(fhir_version)
        self.size = size
        self._memos: dict[str, list[tuple[str, _Memo]]] = {}

    def _elements(self, resource_type: str, model: type[Any]) -> list[tuple[str, _Memo]]:
        memos = self._memos.get(resource_type)
        if memos is None:
            names = {(f.alias or name): name for name, f in model.model_fields.items()}
            memos = [(element, _Memo(names[element])) for element in MEMO_ELEMENTS.get(resource_type, ())
                     if element in names]
            self._memos[resource_type] = memos
        return memos

    def issues(self, resource: dict[str, Any]) -> list[Issue]:
        """Structure and type errors of one resource (empty when it validates)."""
        resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
        try:
            model = model_class(resource_type, self.fhir_version) if isinstance(resource_type, str) else None
        except KeyError:
            model = None
        if model is None:
            return structure_issues(resource, self.fhir_version)
        given = dict(resource)
        missed: list[tuple[_Memo, bytes, int]] = []   # (memo, key, item index or -1)
        for element, memo in self._elements(resource_type, model):
            value = resource.get(element)
            if value is None or not memo.active:
                continue
            if isinstance(value, list):
                items = list(value)
                for i, item in enumerate(value):
                    key = _key(item)
                    known = memo.known.get(key)
                    if known is None:
                        missed.append((memo, key, i))
                    else:
                        items[i] = known
                        memo.hits += 1
                    memo.lookups += 1
                given[element] = items
            else:
                key = _key(value)
                known = memo.known.get(key)
                if known is None:
                    missed.append((memo, key, -1))
                else:
                    given[element] = known
                    memo.hits += 1
                memo.lookups += 1
            if memo.lookups >= TRIAL and memo.hits < WORTHWHILE * memo.lookups:
                memo.active = False
                memo.known.clear()
        try:
            instance = model.model_validate(given)
        except ValueError:  # pydantic.ValidationError and fhir.resources' own ValueErrors
            return structure_issues(resource, self.fhir_version)
        for memo, key, index in missed:
            if not memo.active:
                continue
            if len(memo.known) >= self.size:
                memo.known.clear()
            value = getattr(instance, memo.attribute)
            memo.known[key] = value[index] if index >= 0 else value
        return []
