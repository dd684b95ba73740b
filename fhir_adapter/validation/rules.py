"""The project's own rules, and codes from the code systems the project uses.

- Codes: a Coding whose system is one the project defines (the `ms` CodeSystem, from
  `mappings/codesystems/`: a CodeSystem JSON, or the YAML data `protocol.evidence` renders, when it is
  there, else the `ms` codes of `mappings/terminology.yaml`) or a
  terminology.hl7.org / hl7.org code system the core packages hold complete must name a code it defines.
- Observation: has a subject and an effective time.
- EDSS (SNOMED 273554001, or ms `edss`): a value from 0 to 10 in steps of 0.5.
- Lesion counts (ms `gd-enhancing-lesion-count`, `new-or-enlarging-t2-lesion-count`): a non-negative integer.

>>> [i.rule for i in rule_issues({"resourceType": "Observation", "code": {"coding": [
...     {"system": "http://snomed.info/sct", "code": "273554001"}]}, "valueQuantity": {"value": 10.5}})]
['observation-subject', 'observation-effective', 'edss-value']
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from .. import terminology
from ..paths import MAPPINGS
from ..sources import read_json
from .spec import spec
from .structure import Issue

CODESYSTEMS = MAPPINGS / "codesystems"
LESION_COUNTS = ("gd-enhancing-lesion-count", "new-or-enlarging-t2-lesion-count")


def _defined(concepts: list[dict[str, Any]]) -> set[str]:
    codes = set()
    for concept in concepts:
        codes.add(concept["code"])
        codes |= _defined(concept.get("concept", []))
    return codes


@cache
def known_codes() -> dict[str, frozenset[str]]:
    """Code system URL -> its codes, for the systems whose codes can be checked offline."""
    known: dict[str, set[str]] = {}
    for version in ("R4", "R5"):
        for url, codes in spec(version).get("codesystems", {}).items():
            known.setdefault(url, set()).update(codes)
    project = terminology.system("ms")
    for path in sorted(CODESYSTEMS.glob("*.json")):
        resource = read_json(path)
        if resource.get("resourceType") == "CodeSystem" and resource.get("url"):
            known[resource["url"]] = _defined(resource.get("concept", []))
    for path in sorted(CODESYSTEMS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}   # CodeSystem data (protocol.evidence)
        if (data.get("codesystem") or {}).get("url"):
            known[data["codesystem"]["url"]] = _defined(data.get("concepts", []))
    if project not in known:
        known[project] = {code for concept in terminology.load().concepts.values()
                          for system, code in concept.recognised if system == project}
    return {url: frozenset(codes) for url, codes in known.items()}


def codings_defined(codings: list[dict[str, Any]]) -> bool:
    """Whether every Coding whose system can be checked names a code the system defines."""
    known = known_codes()
    for coding in codings:
        codes = known.get(coding.get("system"))  # type: ignore[arg-type]
        if codes is not None and coding.get("code") not in codes:
            return False
    return True


def coding_issues(codings: list[tuple[str, dict[str, Any]]]) -> list[Issue]:
    """Codings (location, Coding) that name a code their (checkable) system does not define."""
    out = []
    known = known_codes()
    for location, coding in codings:
        codes = known.get(coding.get("system"))  # type: ignore[arg-type]
        if codes is not None and coding.get("code") not in codes:
            out.append(Issue("error", f"{location}.code", f"code {coding.get('code')!r} is not defined in "
                             f"{coding.get('system')}", rule="code-exists"))
    return out


@cache
def _concept_codes() -> tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]]:
    edss = terminology.recognised_codes("edss")
    lesions = frozenset().union(*(terminology.recognised_codes(name) for name in LESION_COUNTS))
    return edss, lesions


def _number(resource: dict[str, Any]) -> tuple[str, Any] | None:
    for name in ("valueQuantity", "valueInteger", "valueDecimal"):
        if name in resource:
            value = resource[name]
            return (f"{name}.value", value.get("value")) if name == "valueQuantity" and isinstance(value, dict) \
                else (name, value)
    return None


def rule_issues(resource: dict[str, Any]) -> list[Issue]:
    """The project's rules for one resource."""
    if resource.get("resourceType") != "Observation":
        return []
    out = []
    if "subject" not in resource:
        out.append(Issue("error", "Observation", "an Observation must have a subject", rule="observation-subject"))
    if not any(name.startswith("effective") for name in resource):
        out.append(Issue("error", "Observation", "an Observation must have an effective time",
                         rule="observation-effective"))
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    if not isinstance(codings, list):
        return out
    keys = {(c.get("system"), c.get("code")) for c in codings if isinstance(c, dict)}
    edss, lesions = _concept_codes()
    number = _number(resource)
    if keys & edss and number is not None:
        where, value = number
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 10
                and float(value * 2).is_integer()):
            out.append(Issue("error", f"Observation.{where}", f"an EDSS score lies in 0-10 in steps of 0.5, "
                             f"got {value!r}", rule="edss-value"))
    if keys & lesions and number is not None:
        where, value = number
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
                and float(value).is_integer()):
            out.append(Issue("error", f"Observation.{where}", f"a lesion count is a non-negative integer, "
                             f"got {value!r}", rule="lesion-count"))
    return out
