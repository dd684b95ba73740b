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

import functools
import json
import marshal
import types
import typing
import weakref
from typing import Any

import pydantic

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


# --- resources of a shape already validated -----------------------------------------------------------

class _Verdicts:
    """Whether values are valid for their element types, remembered (at most `size`, then forgotten at once)."""

    def __init__(self, size: int) -> None:
        self.known: dict[tuple[int, type, Any], bool] = {}
        self.size = size

    def all_valid(self, validators: list[Any], values: list[Any],
                  validate: typing.Callable[[Any, Any], Any]) -> bool:
        known = self.known
        for validator, value in zip(validators, values, strict=True):
            key = (id(validator), type(value), value)   # validators are kept for good (cached), so ids stay theirs
            ok = known.get(key)
            if ok is None:
                try:
                    validate(validator, value)
                    ok = True
                except ValueError:   # pydantic.ValidationError is a ValueError
                    ok = False
                if len(known) >= self.size:
                    known.clear()
                known[key] = ok
            if not ok:
                return False
        return True


def _by_python(validator: Any, value: Any) -> Any:
    return validator.validate_python(value)


def _by_json(validator: Any, text: str) -> Any:
    return validator.validate_json(text)


class _Equals:
    """The validator of a `resourceType` inside a resource: the very value the shape was validated with."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def validate_python(self, value: Any) -> Any:
        if type(value) is not type(self.value) or value != self.value:
            raise ValueError(value)
        return value


@functools.cache
def _equals(kind: type, value: Any) -> _Equals:
    """One `_Equals` per value, kept: remembered verdicts are keyed by the validator's id."""
    return _Equals(value)


def _shape(value: Any, key: list[Any], leaves: list[Any]) -> None:
    """Append the JSON value's structure (keys, list lengths, leaf types) to `key` and its leaves to `leaves`."""
    kind = type(value)
    if kind is dict:
        key.append(dict)
        for name, item in value.items():
            key.append(name)
            _shape(item, key, leaves)
        key.append(None)
    elif kind is list:
        key.append(list)
        for item in value:
            _shape(item, key, leaves)
        key.append(None)
    else:
        key.append(kind)
        leaves.append(value)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the element type, whether the field is a list) of a fhir.resources field annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


@functools.cache
def model_elements(model: type[Any]) -> dict[str, tuple[Any, bool, Any]]:
    """Each element of a model by its JSON name: (element type, is a list, model class of a complex type)."""
    out = {}
    for name, f in model.model_fields.items():
        element, is_list = _unwrap(f.annotation)
        klass = getattr(element, "get_model_klass", None)
        out[f.alias or name] = (element, is_list, klass() if klass is not None else None)
    return out


@functools.cache
def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation)


def _leaf_validators(model: type[Any], value: dict[str, Any], out: list[Any]) -> bool:
    """The validators of a valid resource's leaves, in `_shape` order; False if a part cannot be followed."""
    elements = model_elements(model)
    for name, item in value.items():
        if name == "resourceType":
            out.append(_equals(type(item), item))
            continue
        if name not in elements:
            return False
        element, is_list, klass = elements[name]
        if is_list != (type(item) is list):
            return False
        for one in (item if is_list else [item]):
            if klass is not None:
                if type(one) is not dict or not _leaf_validators(klass, one, out):
                    return False
            elif type(one) in (dict, list) or one is None:
                return False
            else:
                out.append(_adapter(element))
    return True


class ShapeCheck(StructureCheck):
    """`StructureCheck` that validates each *shape* of resource once (its elements, their nesting, list
    lengths and the JSON types of its values) with the full fhir.resources model, and later resources of
    the same shape by validating each primitive value with its element's fhir.resources type (the same
    pydantic type the model applies to that element).

    fhir.resources models check structure (known elements, cardinality, required and choice elements,
    no nulls), which the shape fixes, and the type of each primitive value, which is checked per value
    (and remembered per type and value). A resource whose value fails is validated again in full, so the
    issues reported are the plain ones.

    >>> check = ShapeCheck("R4")
    >>> patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01"}
    >>> check.issues(patient), check.issues({**patient, "id": "p2"}), len(check.shapes)
    ([], [], 1)
    >>> check.issues({**patient, "birthDate": "1980-13-01"})[0].location
    'Patient.birthDate'
    """

    def __init__(self, fhir_version: str = "R4", size: int = 4096, values: int = 100_000) -> None:
        super().__init__(fhir_version, size)
        self.shapes: dict[tuple[Any, ...], list[Any] | None] = {}
        self._verdicts = _Verdicts(values)

    def issues(self, resource: dict[str, Any]) -> list[Issue]:
        if type(resource) is not dict:
            return super().issues(resource)
        key: list[Any] = []
        leaves: list[Any] = []
        _shape(resource, key, leaves)
        shape = tuple(key)
        validators = self.shapes.get(shape, _UNSEEN)
        if validators is _UNSEEN:
            found = super().issues(resource)
            if not found:
                if len(self.shapes) >= self.size:
                    self.shapes.clear()
                out: list[Any] = []
                model = model_class(resource["resourceType"], self.fhir_version)
                self.shapes[shape] = out if _leaf_validators(model, resource, out) and len(out) == len(leaves) \
                    else None
            return found
        if validators is None:
            return super().issues(resource)
        if not self._verdicts.all_valid(validators, leaves, _by_python):
            return structure_issues(resource, self.fhir_version)
        return []


_UNSEEN: Any = object()


# --- resources filled into a compiled template --------------------------------------------------------

def _slot_validators(model: type[Any], value: dict[str, Any], found: dict[int, Any]) -> bool:
    """Find where each slot marker (`_SLOT_MARK` n) sits in a resource and the type of that element."""
    elements = model_elements(model)
    for name, item in value.items():
        if name == "resourceType":
            continue
        if name not in elements:
            return False
        element, is_list, klass = elements[name]
        for one in (item if is_list and type(item) is list else [item]):
            if type(one) is str and one.startswith(_SLOT_MARK):
                found[int(one[len(_SLOT_MARK):])] = _adapter(element)
            elif type(one) is dict and (klass is None or not _slot_validators(klass, one, found)):
                return False
    return True


_SLOT_MARK = "@@fhir-adapter-check-"


class FilledCheck:
    """Validates resources made by compiled templates (`compiled.CompiledTemplate.fill`): the first valid
    resource of each variant in full (`ShapeCheck`), and later ones of the variant by validating only
    the slots' values, each with the fhir.resources type of the element it fills; a resource whose
    value fails is validated again in full, so the issues reported are the plain ones.

    A variant's literal text is the same in all its resources and slots are never empty, so the
    structure the full validation accepted stays, and what can differ is each slot's value, checked by
    the same pydantic type the model applies to that element.
    """

    def __init__(self, fhir_version: str = "R4", values: int = 100_000) -> None:
        self.full = ShapeCheck(fhir_version)
        self.fhir_version = self.full.fhir_version
        self._variants: weakref.WeakKeyDictionary[Any, list[Any] | None] = weakref.WeakKeyDictionary()
        self._verdicts = _Verdicts(values)

    def issues(self, variant: Any, slots: list[str], text: str) -> list[Issue]:
        """Issues of the resource `variant.join(slots)` (its text `text`)."""
        validators = self._variants.get(variant, _UNSEEN)
        if validators is None or validators is _UNSEEN:
            resource = json.loads(text)
            found = self.full.issues(resource)
            if validators is _UNSEEN and not found:
                self._variants[variant] = self._validators(variant, resource["resourceType"], len(slots))
            return found
        if not self._verdicts.all_valid(validators, slots, _by_json):
            return structure_issues(json.loads(text), self.fhir_version)
        return []

    def _validators(self, variant: Any, resource_type: str, count: int) -> list[Any] | None:
        marked = json.loads(variant.join([f'"{_SLOT_MARK}{n}"' for n in range(count)]))
        found: dict[int, Any] = {}
        model = model_class(resource_type, self.fhir_version)
        if not _slot_validators(model, marked, found) or len(found) != count:
            return None
        return [found[n] for n in range(count)]
