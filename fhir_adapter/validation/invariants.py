"""The specification's invariants, evaluated with fhirpathpy on each element they constrain.

Each expression is compiled once. Evaluating FHIRPath is slow (tens of microseconds), and the resources a
pipeline writes repeat the same elements, so results are memoized by what the expression can see: the
element's JSON restricted to the names the expression mentions, with names it only tests for presence
(`value.empty()`) reduced to "present". An expression that looks at everything (`descendants()`, `$this`,
`%rootResource`, or `%resource` away from the root) is keyed by the whole element, or not memoized.

An empty result counts as satisfied. Invariants using functions fhirpathpy lacks are not evaluated; they are
counted in `Evaluator.skipped` so a report can say so.

>>> from .spec import invariants
>>> ev = Evaluator("R4")
>>> ev.holds(invariants("R4")["obs-6"], {"resourceType": "Observation", "valueBoolean": True,
...          "dataAbsentReason": {"text": "x"}}, "Observation", None)
False
"""

from __future__ import annotations

import marshal
import re
from collections import Counter
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from ..render import check_version
from .spec import Invariant

MEMO_SIZE = 8192
# A name read on the element itself starts a path: it does not follow a `.` (nor `%`, `$`, a quote).
_WORD = re.compile(r"(?<![\w%$'.`])(?:`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*)(?![\w(`]))")
_KEYWORDS = frozenset({"and", "or", "xor", "implies", "in", "contains", "is", "as", "div", "mod", "true", "false"})
# Looks at the element as a whole: $this, %context, a function applied to the element itself (`exists()`,
# `ofType(X)`, `children()` at the start of a path; `iif`, `today`, `now` take nothing from it).
_LOOKS_AT_ALL = re.compile(r"\$this|%context|(?<![\w%$'.`])(?!iif\(|today\(|now\()[A-Za-z_]\w*\(")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_LOOKS_OUTSIDE = re.compile(r"%resource|%rootResource")


def _no_contained(data: dict[str, Any]) -> bool:
    return "contained" not in data


def _no_local_reference(data: dict[str, Any]) -> bool:
    reference = data.get("reference")
    return not (isinstance(reference, str) and reference.startswith("#"))


def _open_period(data: dict[str, Any]) -> bool:
    return "start" not in data or "end" not in data


def _no_components(data: dict[str, Any]) -> bool:
    return "component" not in data


#: Conditions under which an invariant holds whatever else the element holds, read off its expression:
#: dom-2..5 constrain `contained` only; ref-1 is `reference.startsWith('#').not() or ...`; per-1 (R4B)
#: `start.hasValue().not() or end.hasValue().not() or ...`; obs-7 `... or component.code.where(...).empty()`.
#: Where the condition is false, FHIRPath decides.
HOLDS_WHEN = {"dom-2": _no_contained, "dom-3": _no_contained, "dom-4": _no_contained, "dom-5": _no_contained,
              "ref-1": _no_local_reference, "per-1": _open_period, "obs-7": _no_components}


def _has_value(inputs: list[Any]) -> list[bool]:
    """FHIRPath `hasValue()`: a single primitive with a value (fhirpathpy lacks it)."""
    return [len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], (dict, list))]


def _typed(resource: Any) -> Any:
    """A resource as fhirpathpy's typed node: given as plain JSON, `%resource is EvidenceVariable` is false
    whatever the resource (dom-r4b would fail on every contained EvidenceVariable)."""
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
        return ResourceNode.create_node(resource, resource["resourceType"])
    return resource


def _quiet(label: str, value: Any) -> None:
    """`trace()` in an invariant (dom-3) would print to stdout otherwise."""


#: Functions this module gives fhirpathpy; `tools/extract_fhir_spec.py` treats them as available.
SUPPLIED = {"hasValue": {"fn": _has_value, "arity": {0: []}}}


class Compiled:
    """One invariant, compiled, with what its memo key is made of."""

    __slots__ = ("invariant", "run", "names", "presence", "whole", "outside", "memo", "_keys")

    def __init__(self, invariant: Invariant, model: dict[str, Any]) -> None:
        self.invariant = invariant
        self.run = fhirpathpy.compile(invariant.expression, model,
                                      {"userInvocationTable": SUPPLIED, "traceFn": _quiet})
        expression = _STRING.sub("''", invariant.expression)  # names inside string literals read nothing
        self.whole = bool(_LOOKS_AT_ALL.search(expression))
        self.outside = bool(_LOOKS_OUTSIDE.search(expression))
        names: set[str] = set()
        full: set[str] = set()
        # At the root %resource is the element itself: `%resource.code` reads the element's `code`.
        text = re.sub(r"%(resource|rootResource)\.", "", expression)
        for match in _WORD.finditer(text):
            name = match.group(1) or match.group(2)
            if match.group(2) and name in _KEYWORDS:
                continue
            names.add(name)
            if not re.match(r"\.(empty|exists)\(\)", text[match.end():]):
                full.add(name)
        self.names = frozenset(names)
        self.presence = frozenset(names - full)
        self.memo: dict[bytes, bool] = {}
        self._keys: dict[int, tuple[tuple[str, bool], ...]] = {}

    def _names(self, elements: dict[str, Any]) -> tuple[tuple[str, bool], ...]:
        """The JSON names the expression can read on an element of this type, each with "presence only"."""
        found = self._keys.get(id(elements))
        if found is None:
            names = set()
            for name in self.names:
                names |= {name, f"_{name}"}
            names |= {json_name for json_name, element in elements.items() if element.name in self.names}
            found = self._keys[id(elements)] = tuple(
                (n, (elements[n].name if n in elements else n.lstrip("_")) in self.presence) for n in sorted(names))
        return found

    def key(self, data: Any, elements: dict[str, Any] | None) -> bytes:
        """The memo key: what the expression can see of the element."""
        if self.whole or elements is None or not isinstance(data, dict):
            return marshal.dumps(data, 2)
        return marshal.dumps(tuple((name in data) if presence else data.get(name)
                                   for name, presence in self._names(elements)), 2)


class Evaluator:
    """Evaluates invariants of one FHIR version; keeps counts of those it could not evaluate."""

    def __init__(self, fhir_version: str = "R4") -> None:
        self.fhir_version = check_version(fhir_version)
        self.model = models["r4" if self.fhir_version == "R4" else "r5"]
        self._compiled: dict[str, Compiled] = {}
        self.skipped: Counter[str] = Counter()       # invariant key -> elements not checked
        self.failed: dict[str, str] = {}             # invariant key -> error fhirpathpy raised

    def compiled(self, invariant: Invariant) -> Compiled:
        found = self._compiled.get(invariant.key)
        if found is None:
            found = self._compiled[invariant.key] = Compiled(invariant, self.model)
        return found

    def holds(self, invariant: Invariant, data: Any, path: str, resource: dict[str, Any] | None,
              elements: dict[str, Any] | None = None, root: dict[str, Any] | None = None) -> bool | None:
        """Whether the element satisfies the invariant; None when it cannot be evaluated.

        `resource` is the resource holding the element (%resource), `root` the top resource (%rootResource,
        the container of a contained resource; default `resource`).
        """
        guard = HOLDS_WHEN.get(invariant.key)
        if guard is not None and isinstance(data, dict) and guard(data):
            return True
        if invariant.skip:
            self.skipped[invariant.key] += 1
            return None
        compiled = self.compiled(invariant)
        resource = resource if resource is not None else data
        root = root if root is not None else resource
        memoize = not compiled.outside or (data is resource and resource is root)
        key = compiled.key(data, elements) if memoize else b""
        if memoize:
            known = compiled.memo.get(key)
            if known is not None:
                return known
        variables = {"resource": _typed(resource), "rootResource": _typed(root)}
        try:
            result = compiled.run(ResourceNode.create_node(data, path), variables)
        except Exception as exc:  # noqa: BLE001 - an engine failure is reported as not evaluated
            self.skipped[invariant.key] += 1
            message = re.sub(r"\[<.*", "[...]", str(exc))[:100]
            self.failed.setdefault(invariant.key, f"fhirpathpy raised {type(exc).__name__}: {message}")
            return None
        ok = not (result and all(r is False for r in result))
        if memoize:
            if len(compiled.memo) >= MEMO_SIZE:
                compiled.memo.clear()
            compiled.memo[key] = ok
        return ok
