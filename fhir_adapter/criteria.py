"""Computable eligibility criteria: the model shared by protocols (mapping) and screening (evaluation).

A `Criterion` keeps the verbatim text of one inclusion or exclusion line and, where the line is
measurable, a `Rule` (one derived fact compared with an expectation) or a `Combination` of rules.
A criterion without a rule is kept for manual review. Facts are named in `FACTS`; their meaning
(how each is derived from patient data) lives in one module, `fhir_adapter.eligibility.facts`.

The YAML form (in `mappings/trials/<NCT id>.yaml`) reads like the protocol:

>>> c = Criterion.from_dict({"linkId": "inc-4", "kind": "inclusion", "text": "EDSS 3.0 - 6.5",
...                          "rule": {"fact": "edss", "range": [3.0, 6.5]}})
>>> c.rule.accepts(Decimal("6.5")), c.rule.accepts(Decimal("7.0"))
(True, False)
>>> Criterion.from_dict(c.to_dict()) == c
True
>>> Rule.from_dict({"fact": "therapy", "subject": "corticosteroids", "present": True, "window": "30 d"}).window
Window(value=30, unit='d', strict=False)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

Kind = Literal["inclusion", "exclusion"]
KINDS: tuple[str, ...] = ("inclusion", "exclusion")

#: The facts a rule can test, with the kind of value each gives and what its `subject` names.
#: number: compared with an interval; code: one concept name from mappings/terminology.yaml;
#: boolean: present or absent. `window` (a look-back before the screening date) applies where noted.
#: `unrecorded: manual review`: records of this kind are often not in an EHR extract at all (procedures,
#: allergies); a line testing only such facts, unknown only because the patient has none (read as absent they
#: would decide it), does not hold the verdict (like a line for manual review). A record found, or records
#: without the subject, decide it; a record that cannot (a transplant without a date under a window) leaves it
#: unknown and holding the verdict like any other line.
FACTS: dict[str, dict[str, str]] = {
    "age": {"value": "number", "unit": "a", "about": "age in whole years at the screening date"},
    "sex": {"value": "code", "about": "administrative gender (male, female, other, unknown)"},
    "ms-subtype": {"value": "code", "about": "MS course: rrms, spms, ppms"},
    "disease-duration": {"value": "number", "unit": "a", "about": "years from MS onset (else diagnosis)"},
    "edss": {"value": "number", "unit": "{score}", "window": "yes",
             "about": "latest EDSS (within the window if one is given; without one, however old)"},
    "edss-progression": {"value": "boolean", "window": "yes",
                         "about": "EDSS rose over the window: +1.0 if the latest EDSS <= 5.0, +0.5 if >= 5.5"},
    "relapse-count": {"value": "number", "window": "yes", "subject": "optional: minimum severity",
                      "about": "relapses with onset inside the window"},
    "gd-lesion-count": {"value": "number", "window": "yes",
                        "about": "most Gd-enhancing lesions on one MRI inside the window"},
    "new-t2-lesion-count": {"value": "number", "window": "yes",
                            "about": "most new or enlarging T2 lesions on one MRI inside the window"},
    "csf-oligoclonal-bands": {"value": "boolean", "about": "CSF-specific oligoclonal bands found"},
    "therapy": {"value": "boolean", "window": "yes", "subject": "value set or concept of drugs",
                "about": "exposed inside the window (a window of 0 d: on it at the screening date)"},
    "therapy-duration": {"value": "number", "unit": "d", "subject": "value set or concept of drugs",
                         "about": "days on the therapy up to the screening date (a drug's records less than 400 "
                                  "days apart make one course; overlapping drugs count once)"},
    "condition": {"value": "boolean", "subject": "value set or concept of conditions",
                  "about": "the condition is or was recorded"},
    "procedure": {"value": "boolean", "window": "yes", "subject": "value set or concept of procedures",
                  "about": "a procedure of the subject was done (in progress or completed) inside the window, or ever",
                  "unrecorded": "manual review"},
    "allergy": {"value": "boolean", "subject": "value set or concept of substances",
                "about": "an active allergy or intolerance to the subject is recorded", "unrecorded": "manual review"},
    "lab-positive": {"value": "boolean", "window": "yes", "subject": "lab concept (hiv, hbsag, ...)",
                     "about": "the latest result of the test is positive"},
    "lab-value": {"value": "number", "window": "yes", "subject": "lab concept (egfr, platelets, ...)",
                  "about": "the latest numeric result of the test"},
    "pregnant": {"value": "boolean", "about": "pregnant at the screening date"},
    "lactating": {"value": "boolean", "about": "breastfeeding at the screening date"},
}

WINDOW_UNITS = {"d": "days", "wk": "weeks", "mo": "months", "a": "years"}


class CriterionError(ValueError):
    """A criterion definition that cannot be understood; the message names the linkId and field."""


@dataclass(frozen=True)
class Window:
    """A look-back period before the screening date, as a UCUM duration (`18 mo`, `60 d`).

    The day exactly one period back is inside the window ("within 3 months"); a strict window, written
    `< 3 mo`, leaves it out ("less than 3 months since").

    >>> Window.parse("< 3 mo"), str(Window.parse("< 3 mo"))
    (Window(value=3, unit='mo', strict=True), '< 3 mo')
    """

    value: int
    unit: str
    strict: bool = False

    @classmethod
    def parse(cls, text: str | Window) -> Window:
        if isinstance(text, Window):
            return text
        parts = str(text).split()
        strict = bool(parts) and parts[0] == "<"
        if strict:
            parts = parts[1:]
        if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in WINDOW_UNITS:
            raise CriterionError(f"window {text!r}: write a whole number and one of {', '.join(WINDOW_UNITS)}, "
                                 f"e.g. '18 mo' (or '< 18 mo' to leave out the day exactly 18 months back)")
        return cls(int(parts[0]), parts[1], strict)

    def __str__(self) -> str:
        return f"{'< ' if self.strict else ''}{self.value} {self.unit}"


def _decimal(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        raise CriterionError(f"{where}: {value!r} is not a number") from None


@dataclass(frozen=True)
class Rule:
    """One fact compared with one expectation: an interval, a set of codes, or presence."""

    fact: str
    subject: str | None = None
    window: Window | None = None
    low: Decimal | None = None          # interval bounds; open ends say "<" / ">"
    high: Decimal | None = None
    low_open: bool = False
    high_open: bool = False
    codes: tuple[str, ...] = ()
    present: bool | None = None

    def __post_init__(self) -> None:
        spec = FACTS.get(self.fact)
        if spec is None:
            raise CriterionError(f"unknown fact {self.fact!r}: use one of {', '.join(FACTS)}")
        kind = spec["value"]
        has_interval = self.low is not None or self.high is not None
        if kind == "number" and (not has_interval or self.codes or self.present is not None):
            raise CriterionError(f"fact {self.fact!r} is a number: give range, at-least, at-most, below or above")
        if kind == "code" and (not self.codes or has_interval or self.present is not None):
            raise CriterionError(f"fact {self.fact!r} is coded: give any-of")
        if kind == "boolean" and (self.present is None or has_interval or self.codes):
            raise CriterionError(f"fact {self.fact!r} is true or false: give present")
        if self.window is not None and spec.get("window") != "yes":
            raise CriterionError(f"fact {self.fact!r} takes no window")
        if spec.get("subject", "").startswith(("value set", "lab")) and not self.subject:
            raise CriterionError(f"fact {self.fact!r} needs a subject ({spec['subject']})")

    def accepts(self, value: Decimal | str | bool) -> bool:
        """Whether a known fact value satisfies the expectation."""
        if self.present is not None:
            return bool(value) is self.present
        if self.codes:
            return value in self.codes
        number = Decimal(str(value))
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return False
        return not (self.high is not None and (number > self.high or (self.high_open and number == self.high)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "rule") -> Rule:
        known = {"fact", "subject", "window", "range", "at-least", "at-most", "above", "below", "any-of", "present"}
        extra = set(data) - known
        if extra:
            raise CriterionError(f"{where}: unknown keys {sorted(extra)}; a rule takes {sorted(known)}")
        if "fact" not in data:
            raise CriterionError(f"{where}: a rule needs a fact")
        low = high = None
        low_open = high_open = False
        if "range" in data:
            bounds = data["range"]
            if not isinstance(bounds, list) or len(bounds) != 2:
                raise CriterionError(f"{where}: range is [low, high] (inclusive; either may be null)")
            low, high = (_decimal(b, f"{where}.range") for b in bounds)
        if "at-least" in data:
            low = _decimal(data["at-least"], f"{where}.at-least")
        if "above" in data:
            low, low_open = _decimal(data["above"], f"{where}.above"), True
        if "at-most" in data:
            high = _decimal(data["at-most"], f"{where}.at-most")
        if "below" in data:
            high, high_open = _decimal(data["below"], f"{where}.below"), True
        try:
            return cls(
                fact=data["fact"],
                subject=data.get("subject"),
                window=Window.parse(data["window"]) if data.get("window") is not None else None,
                low=low, high=high, low_open=low_open, high_open=high_open,
                codes=tuple(data.get("any-of") or ()),
                present=data.get("present"),
            )
        except CriterionError as exc:
            raise CriterionError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fact": self.fact}
        if self.subject:
            out["subject"] = self.subject
        if self.window:
            out["window"] = str(self.window)
        if self.low is not None and self.high is not None and not (self.low_open or self.high_open):
            out["range"] = [_number(self.low), _number(self.high)]
        else:
            if self.low is not None:
                out["above" if self.low_open else "at-least"] = _number(self.low)
            if self.high is not None:
                out["below" if self.high_open else "at-most"] = _number(self.high)
        if self.codes:
            out["any-of"] = list(self.codes)
        if self.present is not None:
            out["present"] = self.present
        return out


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)


@dataclass(frozen=True)
class Combination:
    """Rules joined by `all-of` or `any-of`; a part may itself be a combination."""

    operator: Literal["all-of", "any-of"]
    parts: tuple[Rule | Combination, ...]

    def __post_init__(self) -> None:
        if self.operator not in ("all-of", "any-of") or len(self.parts) < 2:
            raise CriterionError(f"a combination is all-of or any-of over two or more parts, got {self.operator!r} "
                                 f"with {len(self.parts)}")

    def to_dict(self) -> dict[str, Any]:
        return {self.operator: [part.to_dict() for part in self.parts]}


def definition_from_dict(data: dict[str, Any], where: str = "rule") -> Rule | Combination:
    """A rule or a combination from its YAML form (`{"all-of": [...]}`, `{"any-of": [...]}` or a rule)."""
    if not isinstance(data, dict):
        raise CriterionError(f"{where}: expected a mapping, got {data!r}")
    for operator in ("all-of", "any-of"):
        if operator in data and "fact" not in data:
            if len(data) != 1:
                raise CriterionError(f"{where}: {operator} stands alone in its mapping")
            parts = data[operator]
            return Combination(operator, tuple(definition_from_dict(p, f"{where}.{operator}[{i}]")
                                               for i, p in enumerate(parts)))
    return Rule.from_dict(data, where)


@dataclass(frozen=True)
class Criterion:
    """One inclusion or exclusion line: verbatim text, stable linkId, and its rule (None: manual review)."""

    link_id: str
    kind: Kind
    text: str
    rule: Rule | Combination | None = None
    note: str | None = None                       # why it needs review, or how the rule reads the text
    children: tuple[Criterion, ...] = field(default=())  # sub-items listed under this line in the source
    combine: Literal["all-of", "any-of"] | None = None   # how the children's results make this one's

    def __post_init__(self) -> None:
        where = f"criterion {self.link_id}"
        if self.kind not in KINDS:
            raise CriterionError(f"{where}: kind must be inclusion or exclusion, got {self.kind!r}")
        if not self.text.strip():
            raise CriterionError(f"{where}: the verbatim text is empty")
        if self.children and (self.rule is not None or self.combine not in ("all-of", "any-of")):
            raise CriterionError(f"{where}: a line with sub-items takes combine (all-of or any-of), not a rule")
        if self.combine and not self.children:
            raise CriterionError(f"{where}: combine needs children")
        if any(child.kind != self.kind for child in self.children):
            raise CriterionError(f"{where}: sub-items must be of the same kind ({self.kind})")

    @property
    def computable(self) -> bool:
        """Whether screening can decide it from data (a rule, or sub-items that all are)."""
        if self.children:
            return all(child.computable for child in self.children)
        return self.rule is not None

    @property
    def reviewed_in_part(self) -> bool:
        """A line screening decides only in part: it has a rule or sub-items, and its note says what of it
        "needs review" (other infections, the exception to an exclusion). It is listed for manual review too.
        """
        note = self.note or ""
        return (self.rule is not None or bool(self.children)) and ("needs review" in note or "need review" in note)

    def walk(self) -> Iterator[Criterion]:
        """This criterion and all its sub-items, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Criterion:
        link_id = str(data.get("linkId") or "")
        if not link_id:
            raise CriterionError(f"criterion without a linkId: {data.get('text', data)!r}")
        rule = data.get("rule")
        return cls(
            link_id=link_id,
            kind=data.get("kind", ""),
            text=str(data.get("text", "")),
            rule=definition_from_dict(rule, f"criterion {link_id}.rule") if rule is not None else None,
            note=data.get("note"),
            children=tuple(cls.from_dict({"kind": data.get("kind", ""), **c}) for c in data.get("children", ())),
            combine=data.get("combine"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"linkId": self.link_id, "kind": self.kind, "text": self.text}
        if self.rule is not None:
            out["rule"] = self.rule.to_dict()
        if self.note:
            out["note"] = self.note
        if self.children:
            out["combine"] = self.combine
            out["children"] = [c.to_dict() for c in self.children]
        return out
