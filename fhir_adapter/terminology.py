"""Concept bindings from `mappings/terminology.yaml`: concept name <-> codes.

>>> codings("edss")[0]["code"]
'273554001'
>>> concept_of("http://hl7.org/fhir/sid/icd-10-cm", "G35.A")
'rrms'
>>> "natalizumab" in members("immunosuppressants")
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from .paths import MAPPINGS

SOURCE = MAPPINGS / "terminology.yaml"


@dataclass(frozen=True)
class Concept:
    """A concept with the codings written for it and every (system, code) that stands for it."""

    name: str
    codings: tuple[dict[str, str], ...]
    recognised: frozenset[tuple[str, str]]

    @property
    def display(self) -> str:
        return self.codings[0]["display"]


@dataclass(frozen=True)
class Terminology:
    systems: dict[str, str]
    concepts: dict[str, Concept]
    valuesets: dict[str, tuple[str, ...]]
    index: dict[tuple[str, str], str]


def _coding(systems: dict[str, str], row: list[Any], where: str) -> dict[str, str]:
    if len(row) != 3 or row[0] not in systems:
        raise ValueError(f"{SOURCE}: {where}: a code must be [system alias, code, display] "
                         f"with a system from 'systems', got {row!r}")
    return {"system": systems[row[0]], "code": str(row[1]), "display": str(row[2])}


@lru_cache(maxsize=1)
def load() -> Terminology:
    """Read and index `mappings/terminology.yaml` (once per process)."""
    data = yaml.safe_load(SOURCE.read_text(encoding="utf-8"))
    systems = data["systems"]
    concepts: dict[str, Concept] = {}
    index: dict[tuple[str, str], str] = {}
    for name, spec in data["concepts"].items():
        emitted = tuple(_coding(systems, row, f"concept {name}") for row in spec["codes"])
        accepted = [_coding(systems, row, f"concept {name}") for row in spec.get("accept", [])]
        recognised = frozenset((c["system"], c["code"]) for c in (*emitted, *accepted))
        concepts[name] = Concept(name, emitted, recognised)
        for key in recognised:
            # A shared code (ICD-10 G35 for every subtype) indexes the first, most general concept.
            index.setdefault(key, name)
    valuesets = {}
    for name, members_ in data.get("valuesets", {}).items():
        unknown = [m for m in members_ if m not in concepts]
        if unknown:
            raise ValueError(f"{SOURCE}: value set {name} names unknown concepts {unknown}")
        valuesets[name] = tuple(members_)
    return Terminology(systems, concepts, valuesets, index)


def system(alias: str) -> str:
    """The canonical URL of a code system alias (`snomed`, `loinc`, `ms`, ...)."""
    return load().systems[alias]


def concept(name: str) -> Concept:
    try:
        return load().concepts[name]
    except KeyError:
        raise KeyError(f"unknown concept {name!r}: add it to {SOURCE}") from None


def codings(name: str) -> list[dict[str, str]]:
    """The codings written for a concept, primary first."""
    return [dict(c) for c in concept(name).codings]


def codeable_concept(name: str, text: str | None = None) -> dict[str, Any]:
    """A CodeableConcept for a concept: its codings and a text (the primary display by default)."""
    found = concept(name)
    return {"coding": codings(name), "text": text or found.display}


def concept_of(system_url: str, code: str) -> str | None:
    """The concept a (system, code) stands for, or None."""
    return load().index.get((system_url, code))


def members(valueset: str) -> tuple[str, ...]:
    """The concept names of a value set (`valuesets:` in terminology.yaml)."""
    try:
        return load().valuesets[valueset]
    except KeyError:
        raise KeyError(f"unknown value set {valueset!r}: add it to {SOURCE}") from None


def recognised_codes(valueset_or_concept: str) -> frozenset[tuple[str, str]]:
    """Every (system, code) standing for a concept, or for any concept of a value set."""
    data = load()
    names = data.valuesets.get(valueset_or_concept, (valueset_or_concept,))
    return frozenset().union(*(concept(n).recognised for n in names))
