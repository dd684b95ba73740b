"""The eligibility engine: criteria x patient data -> a `Verdict` per patient and trial, three-valued.

Each criterion is `met`, `not-met` or `unknown`. A rule compares one fact (from `facts`) with its
expectation; `all-of` / `any-of` combine three-valued (Kleene logic). A patient is

- `ineligible` when an inclusion is not met or an exclusion is met;
- `eligible` when every inclusion is met and every exclusion is not met;
- `needs-review` otherwise, listing what is missing to decide.

Criteria that no data can decide (informed consent, "severely limited life expectancy": lines without a
rule) are listed with the result `unknown` and the reason "manual review", and do not change the verdict:
they are checked at the screening visit whatever the data say. A sub-item without a rule inside a computable
line is unknown and counts through its line's combination.

Facts are computed once per patient and screening (the four trials share most of them), and each distinct
rule is judged once per patient.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..criteria import FACTS, Combination, Criterion, Rule
from .data import PatientData
from .facts import Clock, Fact, fact

MET, NOT_MET, UNKNOWN = "met", "not-met", "unknown"
ELIGIBLE, INELIGIBLE, NEEDS_REVIEW = "eligible", "ineligible", "needs-review"
VERDICTS = (ELIGIBLE, NEEDS_REVIEW, INELIGIBLE)
MANUAL = "manual review: not computable from EHR data, to check at the screening visit"


@dataclass(frozen=True)
class Trial:
    """A trial to screen for: its NCT id, a title for people, and its criteria in protocol order."""

    id: str
    title: str
    criteria: tuple[Criterion, ...]
    study: str | None = None            # `ResearchStudy/<id>` for write-back, when known


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule judged for one patient."""

    result: str
    reason: str
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """One criterion for one patient; `children` are the results of its sub-items."""

    criterion: Criterion
    result: str
    reason: str
    evidence: tuple[str, ...]
    children: tuple[CriterionResult, ...] = ()
    manual: bool = False                # no data can decide it: it does not change the verdict

    def walk(self) -> Iterator[CriterionResult]:
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict[str, Any]:
        c = self.criterion
        return {"linkId": c.link_id, "kind": c.kind, "text": c.text, "result": self.result,
                "reason": self.reason, "evidence": list(self.evidence)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """A patient against a trial: the verdict and every criterion (top level; sub-items inside)."""

    patient: str
    trial: str
    verdict: str
    criteria: tuple[CriterionResult, ...]

    @property
    def missing(self) -> list[str]:
        """What is missing to decide (for needs-review): `linkId: reason` of each open criterion."""
        return [f"{r.criterion.link_id}: {r.reason}" for r in self.criteria if r.result == UNKNOWN and not r.manual]

    @property
    def deciding(self) -> list[CriterionResult]:
        """The criteria that make the patient ineligible."""
        return [r for r in self.criteria if not r.manual and _excludes(r)]

    @property
    def evidence(self) -> list[str]:
        """Every resource the verdict cites, once, in order of first use."""
        return list(dict.fromkeys(e for r in self.criteria for x in r.walk() for e in x.evidence))

    def to_dict(self) -> dict[str, Any]:
        """The screening.json shape: patient, trial, verdict, and each criterion line (sub-items flattened)."""
        return {"patient": self.patient, "trial": self.trial, "verdict": self.verdict,
                "criteria": [x.to_dict() for r in self.criteria for x in r.walk()]}


def _excludes(r: CriterionResult) -> bool:
    return (r.criterion.kind == "inclusion" and r.result == NOT_MET) or (
        r.criterion.kind == "exclusion" and r.result == MET)


# ------------------------------------------------------------------------------------------ rules

_BOUNDS: dict[Rule, tuple[float, float, bool, bool]] = {}


def _bounds(rule: Rule) -> tuple[float, float, bool, bool]:
    found = _BOUNDS.get(rule)
    if found is None:
        low = float(rule.low) if rule.low is not None else float("-inf")
        high = float(rule.high) if rule.high is not None else float("inf")
        found = _BOUNDS[rule] = (low, high, rule.low_open, rule.high_open)
    return found


def _inside(value: float, bounds: tuple[float, float, bool, bool]) -> bool:
    low, high, low_open, high_open = bounds
    return (value > low or (value == low and not low_open)) and (value < high or (value == high and not high_open))


def judge(rule: Rule, found: Fact) -> str:
    """met / not-met / unknown for a rule given the fact's value (number bounds decide only if both agree).

    >>> r = Rule.from_dict({"fact": "relapse-count", "window": "60 d", "at-least": 1})
    >>> judge(r, Fact(1.0)), judge(r, Fact(0.0)), judge(r, Fact(0.0, upper=float("inf"))), judge(r, Fact(None))
    ('met', 'not-met', 'unknown', 'unknown')
    """
    value = found.value
    if value is None:
        return UNKNOWN
    if rule.present is not None:
        return MET if bool(value) is rule.present else NOT_MET
    if rule.codes:
        return MET if value in rule.codes else NOT_MET
    bounds = _bounds(rule)
    low_in = _inside(value, bounds)
    if found.upper is None:
        return MET if low_in else NOT_MET
    high_in = _inside(found.upper, bounds)
    if low_in and high_in:
        return MET
    low, high, low_open, high_open = bounds
    if found.upper < low or (found.upper == low and low_open) or value > high or (value == high and high_open):
        return NOT_MET
    return UNKNOWN


_RULE_TEXT: dict[Rule, str] = {}


def describe(rule: Rule) -> str:
    """The expectation of a rule in words.

    >>> describe(Rule.from_dict({"fact": "edss", "range": [3, 6.5]}))
    'EDSS 3 to 6.5'
    >>> describe(Rule.from_dict({"fact": "lab-value", "subject": "egfr", "below": 60}))
    'egfr below 60'
    """
    found = _RULE_TEXT.get(rule)
    if found is not None:
        return found
    name = {"edss": "EDSS", "age": "age", "disease-duration": "disease duration (years)",
            "relapse-count": "relapses", "gd-lesion-count": "Gd-enhancing lesions",
            "new-t2-lesion-count": "new T2 lesions", "ms-subtype": "MS course", "sex": "sex"}.get(rule.fact)
    name = rule.subject if rule.fact in ("lab-value",) else name or rule.fact
    if rule.present is not None:
        text = f"{rule.fact}{' ' + rule.subject if rule.subject else ''} {'present' if rule.present else 'absent'}"
    elif rule.codes:
        text = f"{name} one of {', '.join(rule.codes)}"
    else:
        def n(d: Any) -> str:
            return f"{float(d):g}"
        if rule.low is not None and rule.high is not None and not (rule.low_open or rule.high_open):
            text = f"{name} {n(rule.low)} to {n(rule.high)}"
        else:
            parts = []
            if rule.low is not None:
                parts.append(f"{'above' if rule.low_open else 'at least'} {n(rule.low)}")
            if rule.high is not None:
                parts.append(f"{'below' if rule.high_open else 'at most'} {n(rule.high)}")
            text = f"{name} {' and '.join(parts)}"
    if rule.window is not None and rule.present is None:
        text += f" (window {rule.window})"
    _RULE_TEXT[rule] = text
    return text


def combine(operator: str, results: Iterable[str]) -> str:
    """Three-valued all-of / any-of.

    >>> combine("all-of", ["met", "unknown"]), combine("all-of", ["unknown", "not-met"])
    ('unknown', 'not-met')
    >>> combine("any-of", ["unknown", "met"]), combine("any-of", ["not-met", "not-met"])
    ('met', 'not-met')
    """
    results = list(results)
    decisive, other = (NOT_MET, MET) if operator == "all-of" else (MET, NOT_MET)
    if decisive in results:
        return decisive
    if all(r == other for r in results):
        return other
    return UNKNOWN


# ------------------------------------------------------------------------------------------ per patient

class PatientScreening:
    """One patient at one screening date: facts and findings computed once, shared by every trial."""

    __slots__ = ("patient", "clock", "_facts", "_findings")

    def __init__(self, patient: PatientData, clock: Clock) -> None:
        self.patient = patient
        self.clock = clock
        self._facts: dict[tuple, Fact] = {}
        self._findings: dict[Rule | Combination, Finding] = {}

    def fact(self, name: str, subject: str | None, window: Any) -> Fact:
        key = (name, subject, window)
        found = self._facts.get(key)
        if found is None:
            found = self._facts[key] = fact(name, self.patient, subject, window, self.clock)
        return found

    def finding(self, definition: Rule | Combination) -> Finding:
        found = self._findings.get(definition)
        if found is not None:
            return found
        if isinstance(definition, Rule):
            value = self.fact(definition.fact, definition.subject, definition.window)
            result = judge(definition, value)
            if value.value is None:
                reason = f"unknown: {value.detail}"
            elif FACTS[definition.fact]["value"] == "boolean":
                reason = value.detail
            else:
                reason = f"{value.detail}; wanted {describe(definition)}"
            found = Finding(result, reason, value.evidence)
        else:
            parts = [self.finding(p) for p in definition.parts]
            result = combine(definition.operator, (p.result for p in parts))
            joiner = " and " if definition.operator == "all-of" else " or "
            reasons = list(dict.fromkeys(p.reason for p in parts))
            text = reasons[0] if len(reasons) == 1 else joiner.join(f"({r})" for r in reasons)
            found = Finding(result, text,
                            tuple(dict.fromkeys(e for p in parts for e in p.evidence)))
        self._findings[definition] = found
        return found

    def criterion(self, c: Criterion) -> CriterionResult:
        if c.children:
            children = tuple(self.criterion(child) for child in c.children)
            result = combine(c.combine or "all-of", (r.result for r in children))
            manual = all(r.manual for r in children)
            deciding = [r for r in children if r.result == result] or list(children)
            reason = MANUAL if manual else "; ".join(f"{r.criterion.link_id} {r.result}" for r in children)
            if not manual and result != UNKNOWN:
                reason = f"{'any' if c.combine == 'any-of' else 'all'} of the sub-items: {reason}"
            evidence = tuple(dict.fromkeys(e for r in deciding for e in r.evidence))
            return CriterionResult(c, result, reason, evidence, children, manual)
        if c.rule is None:
            note = f" ({c.note})" if c.note else ""
            return CriterionResult(c, UNKNOWN, MANUAL + note, (), (), True)
        found = self.finding(c.rule)
        return CriterionResult(c, found.result, found.reason, found.evidence)

    def verdict(self, trial: Trial) -> Verdict:
        results = tuple(self.criterion(c) for c in trial.criteria)
        return Verdict(self.patient.reference, trial.id, decide(results), results)


def decide(results: Iterable[CriterionResult]) -> str:
    """The verdict from top-level criterion results (manual ones aside)."""
    open_ = False
    for r in results:
        if r.manual:
            continue
        if _excludes(r):
            return INELIGIBLE
        if r.result == UNKNOWN:
            open_ = True
    return NEEDS_REVIEW if open_ else ELIGIBLE


def screen(patients: Iterable[PatientData], trials: Iterable[Trial], as_of: dt.date | None = None,
           ) -> Iterator[Verdict]:
    """Verdicts for every patient against every trial, patient by patient, trials in the order given.

    `as_of` is the screening date every window counts back from (default today).
    """
    clock = Clock(as_of or dt.date.today())
    trials = list(trials)
    for patient in patients:
        screening = PatientScreening(patient, clock)
        for trial in trials:
            yield screening.verdict(trial)


@dataclass
class Funnel:
    """Per trial: verdict counts, and per top-level criterion how many it keeps, loses or leaves unknown."""

    trial: str
    verdicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    criteria: dict[str, dict[str, int]] = field(default_factory=dict)   # linkId -> keeps / loses / unknown

    def add(self, verdict: Verdict) -> None:
        self.verdicts[verdict.verdict] += 1
        for r in verdict.criteria:
            counts = self.criteria.get(r.criterion.link_id)
            if counts is None:
                counts = self.criteria[r.criterion.link_id] = {"keeps": 0, "loses": 0, "unknown": 0}
            key = "unknown" if r.result == UNKNOWN else "loses" if _excludes(r) else "keeps"
            counts[key] += 1

    def merge(self, other: Funnel) -> None:
        for key, n in other.verdicts.items():
            self.verdicts[key] += n
        for link_id, counts in other.criteria.items():
            mine = self.criteria.setdefault(link_id, {"keeps": 0, "loses": 0, "unknown": 0})
            for key, n in counts.items():
                mine[key] += n

    @property
    def total(self) -> int:
        return sum(self.verdicts.values())
