"""Element checks of one resource, walking its JSON along the specification's element tree.

On each element: the specification's invariants (`invariants.Evaluator`), its required binding (codes from
the value set where the core package enumerates it), UCUM syntax for a Quantity with system
http://unitsofmeasure.org, ele-1 (no empty objects, arrays or nulls) for every JSON value, and each
Coding's code against the code systems the project can check offline (`rules.coding_issues`).

>>> check = ElementCheck("R4", best_practice="information")
>>> for issue in check.issues({"resourceType": "Patient", "gender": "f", "name": [{}]}):
...     print(issue.severity, issue.location, issue.rule)
error Patient.name[0] ele-1
information Patient dom-6
error Patient.gender binding
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..render import check_version
from .invariants import Evaluator
from .rules import coding_issues, codings_defined
from .spec import Element, Invariant, Tree, ValueSet, element_tree
from .structure import Issue
from .ucum import is_ucum

UCUM = "http://unitsofmeasure.org"
EXTENSIONS = frozenset({"extension", "modifierExtension"})
#: What becomes of a best-practice invariant that fails (dom-6: a resource should have narrative): counted
#: only (`ignore`, the default), or reported at a severity.
BEST_PRACTICE = ("ignore", "information", "warning", "error")


def _scan(value: Any, location: str, out: list[Issue], codings: list[tuple[str, dict[str, Any]]]) -> bool:
    """ele-1 on every JSON value: objects have a value or children (other than `id`), arrays are not empty,
    no member is null (a null inside an array is allowed: JSON FHIR aligns `given` with `_given` so).
    Collects every object with a `system` and a `code` (Codings) on the way; returns whether any element
    has extensions.
    """
    extensions = False
    if isinstance(value, dict):
        if not value or value.keys() == {"id"}:
            out.append(Issue("error", location, "an element must have a value or children", rule="ele-1"))
        elif "code" in value and "system" in value:
            codings.append((location, value))
        for name, child in value.items():
            if child is None:
                out.append(Issue("error", f"{location}.{name}", "null is not a value in FHIR JSON", rule="ele-1"))
            elif isinstance(child, (dict, list)) and name != "resource":
                if name in EXTENSIONS:
                    extensions = True
                extensions = _scan(child, f"{location}.{name}", out, codings) or extensions
    elif isinstance(value, list):
        if not value:
            out.append(Issue("error", location, "an array must not be empty", rule="ele-1"))
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)):
                extensions = _scan(item, f"{location}[{i}]", out, codings) or extensions
    return extensions


def _quick_scan(value: Any, codings: list[dict[str, Any]]) -> int:
    """`_scan` without locations, for the usual clean resource: bit 1 an ele-1 problem, bit 2 extensions."""
    flags = 0
    if type(value) is dict:
        if not value or (len(value) == 1 and "id" in value):
            flags = 1
        elif "code" in value and "system" in value:
            codings.append(value)
        for name, child in value.items():
            kind = type(child)
            if kind is dict or kind is list:
                if name == "extension" or name == "modifierExtension":
                    flags |= 2
                if name != "resource":
                    flags |= _quick_scan(child, codings)
            elif child is None:
                flags |= 1
    else:
        if not value:
            flags = 1
        for item in value:
            kind = type(item)
            if kind is dict or kind is list:
                flags |= _quick_scan(item, codings)
    return flags


class ElementCheck:
    """Invariants, required bindings, UCUM syntax and ele-1 for resources of one FHIR version."""

    def __init__(self, fhir_version: str = "R4", best_practice: str = "ignore") -> None:
        if best_practice not in BEST_PRACTICE:
            raise ValueError(f"best practice: one of {', '.join(BEST_PRACTICE)}, not {best_practice!r}")
        self.fhir_version = check_version(fhir_version)
        self.best_practice = best_practice
        self.best_practice_failed: Counter[str] = Counter()   # invariant key -> elements, when ignored
        self.evaluator = Evaluator(self.fhir_version)
        self._children: dict[tuple[int, bool], dict[str, Element]] = {}
        self._relevance: dict[tuple[int, bool], bool] = {}
        self._root: dict[str, Any] = {}

    def issues(self, resource: dict[str, Any]) -> list[Issue]:
        """Findings on a resource's elements (a Bundle's entry resources are not entered: check them alone)."""
        out: list[Issue] = []
        rtype = resource.get("resourceType")
        found: list[dict[str, Any]] = []
        flags = _quick_scan(resource, found)
        extensions = bool(flags & 2)
        codings: list[tuple[str, dict[str, Any]]] = []
        if flags & 1 or not codings_defined(found):  # something to report: again, with locations
            extensions = _scan(resource, str(rtype), out, codings)
        tree = element_tree(rtype, self.fhir_version) if isinstance(rtype, str) else None
        if tree is not None:
            self._root = resource
            self._walk(tree, resource, str(rtype), resource, out, extensions)
        out.extend(coding_issues(codings))
        return out

    def _failed(self, invariant: Invariant, location: str, out: list[Issue]) -> None:
        if not invariant.best_practice:
            out.append(Issue(invariant.severity, location, invariant.human, rule=invariant.key))
        elif self.best_practice == "ignore":
            self.best_practice_failed[invariant.key] += 1
        else:
            out.append(Issue(self.best_practice, location, invariant.human + " (best practice)", rule=invariant.key))

    def _checked(self, tree: Tree, extensions: bool) -> dict[str, Element]:
        """A tree's children that have something to check in them (the walk does not enter the others).

        Every element may hold extensions, and ext-1 makes an Extension worth checking; a resource without
        any extension (`extensions` false, the usual case) is walked without entering the elements that
        could only matter through one.
        """
        key = (id(tree), extensions)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = {name: e for name, e in tree.children.items()
                                           if self._element_relevant(e, extensions, set())}
        return found

    def _element_relevant(self, element: Element, extensions: bool, visiting: set[int]) -> bool:
        if element.type == "Extension":
            return extensions
        if element.binding is not None or element.invariants or element.type == "Resource":
            return True
        sub = element.tree()
        return sub is not None and self._relevant(sub, extensions, visiting)

    def _relevant(self, tree: Tree, extensions: bool, visiting: set[int]) -> bool:
        """Whether a tree, or one it contains, has invariants, bindings or UCUM codes (a cycle counts as yes)."""
        key = (id(tree), extensions)
        known = self._relevance.get(key)
        if known is not None:
            return known
        if id(tree) in visiting:
            return True
        visiting.add(id(tree))
        relevant = bool(tree.invariants) or tree.quantity or any(
            self._element_relevant(e, extensions, visiting) for e in tree.children.values())
        visiting.discard(id(tree))
        if not visiting:  # decided from the top: final
            self._relevance[key] = relevant
        return relevant

    def _walk(self, tree: Tree, data: Any, location: str, resource: dict[str, Any], out: list[Issue],
              extensions: bool) -> None:
        if not isinstance(data, dict):
            return
        for invariant in tree.invariants:
            if self.evaluator.holds(invariant, data, tree.path, resource, tree.children, self._root) is False:
                self._failed(invariant, location, out)
        if tree.quantity:
            code = data.get("code")
            if data.get("system") == UCUM and isinstance(code, str) and not is_ucum(code):
                out.append(Issue("error", f"{location}.code", f"{code!r} is not UCUM syntax", rule="ucum"))
        children = self._checked(tree, extensions)
        for name, value in data.items():
            element = children.get(name)
            if element is None:
                continue
            values = value if isinstance(value, list) else (value,)
            many = isinstance(value, list)
            sub = element.tree()
            for invariant in element.invariants:
                for i, item in enumerate(values):
                    if self.evaluator.holds(invariant, item, element.path, resource,
                                            sub.children if sub is not None else None, self._root) is False:
                        self._failed(invariant, f"{location}.{name}[{i}]" if many else f"{location}.{name}", out)
            if element.binding is not None and element.binding.codes is not None:
                for i, item in enumerate(values):
                    self._binding(element.binding, element.type, item,
                                  f"{location}.{name}[{i}]" if many else f"{location}.{name}", out)
            if element.type == "Resource":
                if tree.path != "Bundle.entry":  # contained resources; Bundle entries are checked on their own
                    for i, item in enumerate(values):
                        if isinstance(item, dict) and isinstance(item.get("resourceType"), str):
                            sub = element_tree(item["resourceType"], self.fhir_version)
                            if sub is not None:
                                where = f"{location}.{name}[{i}]" if many else f"{location}.{name}"
                                self._walk(sub, item, where, item, out, extensions)
                continue
            if sub is None:
                continue
            for i, item in enumerate(values):
                self._walk(sub, item, f"{location}.{name}[{i}]" if many else f"{location}.{name}", resource, out,
                           extensions)

    @staticmethod
    def _binding(valueset: ValueSet, type_: str, value: Any, location: str, out: list[Issue]) -> None:
        codes = valueset.codes or {}
        if isinstance(value, str):  # a code
            if value not in valueset.all_codes:
                out.append(Issue("error", location, f"code {value!r} is not in the required value set "
                                 f"{valueset.url}", rule="binding"))
            return
        if not isinstance(value, dict):
            return
        codings = [value] if type_ == "Coding" else value.get("coding") or []
        if not codings:
            return
        if not any(isinstance(c, dict) and c.get("code") in codes.get(c.get("system"), ()) for c in codings):
            shown = ", ".join(f"{c.get('system')}|{c.get('code')}" for c in codings if isinstance(c, dict))
            out.append(Issue("error", location, f"no coding from the required value set {valueset.url} "
                             f"(has {shown})", rule="binding"))
