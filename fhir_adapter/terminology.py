"""Concept bindings from `mappings/terminology.yaml`: concept name <-> codes.

>>> codings("edss")[0]["code"]
'273554001'
>>> concept_of("http://hl7.org/fhir/sid/icd-10-cm", "G35.A")
'rrms'
>>> "natalizumab" in members("immunosuppressants")
True
>>> concept_of("http://hl7.org/fhir/sid/icd-10-cm", "C50.911")          # in the group C (malignant neoplasms)
'malignancy'
>>> concept_of("urn:oid:2.16.840.1.113883.6.90", "g35.a ")              # its OID, lower case, a space
'rrms'
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
    """A concept with the codings written for it and every (system, code) that stands for it.

    Its groups of a hierarchical code system (`under:`) are indexed in `Terminology.groups`. `names`: other
    names (a drug's brands), for reading free text. `covers`: the days one dose of a drug given at intervals
    counts as time on it (0: a drug taken continuously, or not a drug). `may_be`: concepts a code of this one
    may or may not stand for (`may-be:`).
    """

    name: str
    codings: tuple[dict[str, str], ...]
    recognised: frozenset[tuple[str, str]]
    label: str = ""                             # `display:` of a concept known by its groups only
    names: tuple[str, ...] = ()
    covers: int = 0
    may_be: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        return self.codings[0]["display"] if self.codings else self.label


@dataclass(frozen=True)
class Terminology:
    systems: dict[str, str]
    concepts: dict[str, Concept]
    valuesets: dict[str, tuple[str, ...]]
    index: dict[tuple[str, str], str]
    groups: dict[str, dict[str, str]]           # system -> group code (no dots) -> concept
    labels: dict[str, str]                      # value set -> its words in reasons and texts
    aliases: dict[str, str]                     # another name of a system (`system-aliases`) -> its URL
    upper_case: frozenset[str]                  # the systems whose codes are upper case

    def normalised(self, system_url: Any, code: Any) -> tuple[Any, Any]:
        """A coding as `systems` and the concepts write it: the system's URL for another name of it or with a
        trailing slash, the code without spaces around it, in upper case in a system of upper-case codes."""
        if isinstance(system_url, str):
            system_url = system_url.strip().rstrip("/")
            system_url = self.aliases.get(system_url, system_url)
        if isinstance(code, str):
            code = code.strip()
            if system_url in self.upper_case:
                code = code.upper()
        return system_url, code

    def group_of(self, system_url: str, code: str) -> str | None:
        """The concept of the narrowest group a code belongs to (`C50.911` is under `C`), or None."""
        groups = self.groups.get(system_url)
        if not groups or not isinstance(code, str):
            return None
        code = code.replace(".", "")
        for end in range(len(code), 0, -1):
            found = groups.get(code[:end])
            if found is not None:
                return found
        return None


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
    groups: dict[str, dict[str, str]] = {}
    named: dict[str, str] = {}                  # other name (lower case) -> concept
    for name, spec in data["concepts"].items():
        where = f"concept {name}"
        emitted = tuple(_coding(systems, row, where) for row in spec.get("codes", []))
        accepted = [_coding(systems, row, where) for row in spec.get("accept", [])]
        under = tuple(_group(systems, row, where) for row in spec.get("under", []))
        if not emitted and not (under and spec.get("display")):
            raise ValueError(f"{SOURCE}: {where}: give its codes, or the groups ('under') its codes belong to "
                             f"and a display")
        recognised = frozenset((c["system"], c["code"]) for c in (*emitted, *accepted))
        names = spec.get("names", [])
        if not (isinstance(names, list) and all(isinstance(n, str) and n.strip() for n in names)):
            raise ValueError(f"{SOURCE}: {where}: names must be a list of words, got {names!r}")
        for other in names:
            owner = named.setdefault(other.lower(), name)
            if owner != name:
                raise ValueError(f"{SOURCE}: {where}: the name {other!r} already names concept {owner}")
        covers = spec.get("dose-covers", 0)
        if not (type(covers) is int and covers >= 0):
            raise ValueError(f"{SOURCE}: {where}: dose-covers must be a number of days, got {covers!r}")
        may_be = spec.get("may-be", [])
        if not (isinstance(may_be, list) and all(isinstance(m, str) for m in may_be)):
            raise ValueError(f"{SOURCE}: {where}: may-be must be a list of concept names, got {may_be!r}")
        concepts[name] = Concept(name, emitted, recognised, str(spec.get("display", "")), tuple(names), covers,
                                 tuple(may_be))
        for key in recognised:
            # A shared code (ICD-10 G35 for every subtype) indexes the first, most general concept.
            index.setdefault(key, name)
        for system_url, code in under:
            owner = groups.setdefault(system_url, {}).setdefault(code, name)
            if owner != name:
                raise ValueError(f"{SOURCE}: {where}: group {code} already belongs to concept {owner}")
    for name, found in concepts.items():
        unknown = [m for m in found.may_be if m not in concepts]
        if unknown:
            raise ValueError(f"{SOURCE}: concept {name}: may-be names unknown concepts {unknown}")
    valuesets, labels = {}, {}
    for name, spec in data.get("valuesets", {}).items():
        members_ = spec.get("members", []) if isinstance(spec, dict) else spec
        if not members_:
            raise ValueError(f"{SOURCE}: value set {name} has no members (a list, or `members:` with a `display:`)")
        unknown = [m for m in members_ if m not in concepts]
        if unknown:
            raise ValueError(f"{SOURCE}: value set {name} names unknown concepts {unknown}")
        valuesets[name] = tuple(members_)
        display = spec.get("display") if isinstance(spec, dict) else None
        labels[name] = str(display) if display else name.replace("-", " ")
    aliases = {}
    for alias, others in (data.get("system-aliases") or {}).items():
        if alias not in systems or not isinstance(others, list):
            raise ValueError(f"{SOURCE}: system-aliases: {alias!r} must be a system alias with a list of its other "
                             f"names, got {others!r}")
        aliases.update(dict.fromkeys(others, systems[alias]))
    upper = data.get("upper-case-codes") or []
    if not all(alias in systems for alias in upper):
        raise ValueError(f"{SOURCE}: upper-case-codes must list system aliases, got {upper!r}")
    return Terminology(systems, concepts, valuesets, index, groups, labels, aliases,
                       frozenset(systems[alias] for alias in upper))


_HIERARCHICAL = ("icd10", "icd10cm", "icd10gm", "atc")


def _group(systems: dict[str, str], row: list[Any], where: str) -> tuple[str, str]:
    """A group row as (system URL, code without dots); its display is for the reader of the YAML."""
    if not (len(row) == 3 and row[0] in _HIERARCHICAL):
        raise ValueError(f"{SOURCE}: {where}: a group must be [system alias, code, display] with a hierarchical "
                         f"system ({', '.join(_HIERARCHICAL)}), got {row!r}")
    return systems[row[0]], str(row[1]).replace(".", "")


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
    """The concept a (system, code) stands for, or None: its own code first, else the narrowest group; an
    unknown one as `Terminology.normalised` writes it (`urn:oid:2.16.840.1.113883.6.90`, `g35.a `)."""
    data = load()
    found = data.index.get((system_url, code))
    if found is None:
        system_url, code = data.normalised(system_url, code)
        found = data.index.get((system_url, code))
    return found if found is not None else data.group_of(system_url, code)


def members(valueset: str) -> tuple[str, ...]:
    """The concept names of a value set (`valuesets:` in terminology.yaml)."""
    try:
        return load().valuesets[valueset]
    except KeyError:
        raise KeyError(f"unknown value set {valueset!r}: add it to {SOURCE}") from None


def label(valueset_or_concept: str) -> str:
    """A value set's or concept's words: the set's `display` (else its name with spaces), the concept's display."""
    data = load()
    found = data.labels.get(valueset_or_concept)
    return found if found is not None else concept(valueset_or_concept).display


def possibly(valueset_or_concept: str) -> frozenset[str]:
    """The concepts, outside a value set (or concept), that may or may not stand for one of its concepts."""
    data = load()
    names = set(data.valuesets.get(valueset_or_concept, (valueset_or_concept,)))
    return frozenset(c.name for c in data.concepts.values() if names.intersection(c.may_be) and c.name not in names)


def recognised_codes(valueset_or_concept: str) -> frozenset[tuple[str, str]]:
    """Every (system, code) standing for a concept, or for any concept of a value set."""
    data = load()
    names = data.valuesets.get(valueset_or_concept, (valueset_or_concept,))
    return frozenset().union(*(concept(n).recognised for n in names))
