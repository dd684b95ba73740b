"""The FHIR specification data validation needs, from `mappings/fhir-spec/<version>.json`.

The data file is extracted from the official core package by `tools/extract_fhir_spec.py` (R4 from
`hl7.fhir.r4b.core` 4.3.0, R5 from `hl7.fhir.r5.core` 5.0.0). Here it becomes a tree of `Element`s to walk a
resource's JSON with: each JSON name maps to its element (choice names such as `valueQuantity` to `value[x]`
with type Quantity), with the invariants, required binding and data type of that element.

>>> observation = element_tree("Observation", "R4")
>>> observation.children["valueQuantity"].name, observation.children["valueQuantity"].tree().path
('value', 'Quantity')
>>> observation.children["status"].binding.codes["http://hl7.org/fhir/observation-status"][:2]
('amended', 'cancelled')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

from ..paths import MAPPINGS
from ..render import check_version

SPEC = MAPPINGS / "fhir-spec"
QUANTITIES = frozenset({"Quantity", "SimpleQuantity", "Age", "Duration", "Count", "Distance", "MoneyQuantity"})


@dataclass(frozen=True)
class Invariant:
    """A constraint of the specification: key, severity, human text, FHIRPath expression."""

    key: str
    severity: str
    human: str
    expression: str
    best_practice: bool = False
    skip: str | None = None  # why it is not evaluated


@dataclass(frozen=True)
class ValueSet:
    """A required value set: its codes by system, or None when the package does not enumerate it."""

    url: str
    codes: dict[str, tuple[str, ...]] | None
    not_enumerable: str = ""

    @cached_property
    def all_codes(self) -> frozenset[str]:
        return frozenset(c for codes in (self.codes or {}).values() for c in codes)


@dataclass
class Element:
    """One element of a type as it appears in JSON under a name."""

    name: str                     # element name (`value` for `valueQuantity`)
    type: str                     # data type code (`Quantity`, `code`, `BackboneElement`, `Resource`)
    many: bool
    binding: ValueSet | None
    path: str = ""                # FHIRPath type path (`Narrative.div`)
    invariants: tuple[Invariant, ...] = ()  # the element's own (a backbone element's are its tree's)
    _tree: Tree | None = None     # for a backbone element: its own children
    _version: str = "R4"

    def tree(self) -> Tree | None:
        """The element tree to walk this element's value with (None for primitives and resources)."""
        if self._tree is not None:
            return self._tree
        if self.type[:1].isupper() and self.type not in ("Resource", "BackboneElement", "Element"):
            return element_tree(self.type, self._version)
        return None


@dataclass
class Tree:
    """A type, or a backbone element: its FHIRPath type path, invariants, children by JSON name."""

    path: str
    invariants: tuple[Invariant, ...] = ()
    children: dict[str, Element] = field(default_factory=dict)
    quantity: bool = False


@cache
def spec(fhir_version: str = "R4") -> dict[str, Any]:
    """The extracted data file of a FHIR version."""
    version = check_version(fhir_version)
    return json.loads((SPEC / f"{version}.json").read_text(encoding="utf-8"))


@cache
def invariants(fhir_version: str = "R4") -> dict[str, Invariant]:
    return {key: Invariant(key, i["severity"], i["human"], i["expression"], i.get("best_practice", False),
                           i.get("skip"))
            for key, i in spec(fhir_version)["invariants"].items()}


@cache
def valueset(url: str, fhir_version: str = "R4") -> ValueSet:
    data = spec(fhir_version)["valuesets"][url]
    codes = data.get("codes")
    return ValueSet(url, {s: tuple(c) for s, c in codes.items()} if codes is not None else None,
                    data.get("not_enumerable", ""))


def _json_names(name: str, types: list[str]) -> list[tuple[str, str]]:
    if not name.endswith("[x]"):
        return [(name, types[0] if types else "Element")]
    base = name[:-3]
    return [(base + t[0].upper() + t[1:], t) for t in types]


@cache
def element_tree(type_name: str, fhir_version: str = "R4") -> Tree | None:
    """The element tree of a resource or data type in the extracted data (None when it is not there)."""
    version = check_version(fhir_version)
    data = spec(version)["types"].get(type_name)
    if data is None:
        return None
    known = invariants(version)
    elements: dict[str, dict[str, Any]] = data["elements"]
    trees: dict[str, Tree] = {}

    def tree_of(relative: str) -> Tree:
        if relative in trees:
            return trees[relative]
        path = f"{data['base']}.{relative}" if relative else type_name
        info = elements.get(relative, {})
        tree = Tree(path, tuple(known[k] for k in info.get("invariants", ())), quantity=type_name in QUANTITIES
                    and not relative)
        trees[relative] = tree
        prefix = f"{relative}." if relative else ""
        for child, child_info in elements.items():
            if not child.startswith(prefix) or not child or "." in child[len(prefix):]:
                continue
            name = child[len(prefix):]
            binding = valueset(child_info["binding"], version) if child_info.get("binding") else None
            own = () if child_info.get("backbone") else tuple(known[k] for k in child_info.get("invariants", ()))
            for json_name, type_ in _json_names(name, child_info.get("types", [])):
                element = Element(name.removesuffix("[x]"), type_, child_info.get("max", "1") != "1", binding,
                                  f"{data['base']}.{child}", own, _version=version)
                if child_info.get("backbone"):
                    element._tree = tree_of(child)
                elif "same_as" in child_info:
                    element._tree = tree_of(child_info["same_as"])
                tree.children[json_name] = element
        return tree

    return tree_of("")
