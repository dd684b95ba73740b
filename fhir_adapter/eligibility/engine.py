"""The eligibility engine: criteria x patient data -> a `Verdict` per patient and trial, three-valued.

Each criterion is `met`, `not-met` or `unknown`. A rule compares one fact (from `facts`) with its
expectation; `all-of` / `any-of` combine three-valued (Kleene logic). A patient is

- `ineligible` when an inclusion is not met or an exclusion is met;
- `eligible` when every inclusion is met and every exclusion is not met;
- `needs-review` otherwise, listing what is missing to decide.

Criteria that no data can decide (informed consent, "severely limited life expectancy": lines without a
rule) are listed with the result `unknown` and the reason "manual review", and do not change the verdict:
they are checked at the screening visit whatever the data say. A sub-item without a rule inside a computable
line is unknown and counts through its line's combination. A line on procedures or allergies, which many
extracts do not hold, decides when the patient has such records, and is left to that review (unknown, not
holding the verdict) when it is unknown only because the patient has none; unknown from a record (a
transplant without a date), it holds the verdict like any other line.

Facts are computed once per patient and screening (the four trials share most of them), and each distinct
rule is judged once per patient.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from ..criteria import FACTS, Combination, Criterion, Rule
from .data import PatientData
from .facts import EVALUATORS, Clock, Evaluator, Fact

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

    @property
    def excludes(self) -> bool:
        """Whether this result makes the patient ineligible (an inclusion not met, an exclusion met)."""
        return not self.manual and self.result == (NOT_MET if self.criterion.kind == "inclusion" else MET)

    def to_dict(self) -> dict[str, Any]:
        c = self.criterion
        return {"linkId": c.link_id, "kind": c.kind, "text": c.text, "result": self.result,
                "reason": self.reason, "evidence": list(self.evidence)}


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


_PRESENT, _CODES, _INTERVAL = 0, 1, 2


def _test(rule: Rule) -> int:
    """How `judge` decides a rule: by presence, by codes, or by an interval."""
    return _PRESENT if rule.present is not None else _CODES if rule.codes else _INTERVAL


def judge(rule: Rule, found: Fact, bounds: tuple[float, float, bool, bool] | None = None) -> str:
    """met / not-met / unknown for a rule given the fact's value (number bounds decide only if both agree).

    >>> r = Rule.from_dict({"fact": "relapse-count", "window": "60 d", "at-least": 1})
    >>> judge(r, Fact(1.0)), judge(r, Fact(0.0)), judge(r, Fact(0.0, upper=float("inf"))), judge(r, Fact(None))
    ('met', 'not-met', 'unknown', 'unknown')

    `bounds`: the rule's interval as `_bounds` gives it, when the caller has it at hand.
    """
    value = found.value
    if value is None:
        return UNKNOWN
    if rule.present is not None:
        return MET if bool(value) is rule.present else NOT_MET
    if rule.codes:
        return MET if value in rule.codes else NOT_MET
    if bounds is None:
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


_DECIDES = {"all-of": (NOT_MET, MET), "any-of": (MET, NOT_MET)}   # the result that decides, and the other


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


# ------------------------------------------------------------------------------------------ plans

_encode = encode_basestring            # a str as a JSON string literal (C speed)


def _evidence_json(evidence: tuple[str, ...]) -> str:
    return "[" + ", ".join(map(_encode, evidence)) + "]"


@dataclass(frozen=True, slots=True)
class Node:
    """One criterion line of a trial, compiled: its place, its rule's slot, its sub-items' places."""

    index: int
    criterion: Criterion
    slot: int | None                    # the rule's place in `Plan.rules` (a line with a rule)
    children: tuple[int, ...]
    combine: str | None
    manual: bool
    top: bool
    loses: str                          # the result that makes the patient ineligible
    head: str                           # this line's JSON up to its result
    fixed: str | None = None            # the whole line's JSON when it never changes (manual review)

    @property
    def manual_reason(self) -> str:
        note = self.criterion.note
        if note and not self.children:
            return f"{MANUAL} ({note.removeprefix('manual review: ')})"
        return MANUAL


_NONE: frozenset[int] = frozenset()

_CACHED = 50_000          # distinct sub-item results remembered per trial (more are computed each time)


_BYTES = {v: v.encode() for v in VERDICTS}


def _percent(text: str) -> str:
    """Text as a constant of a %-format."""
    return text.replace("%", "%%")


class _Pick:
    """Picks some places of a list, as a tuple (for fewer than two places; `operator.itemgetter` otherwise)."""

    def __init__(self, places: tuple[int, ...]) -> None:
        self.places = places

    def __call__(self, values: list[str]) -> tuple[str, ...]:
        return tuple(values[p] for p in self.places)


def _getter(slots: tuple[int, ...]) -> Callable[[list[str]], tuple[str, ...]]:
    """A function picking the given places of a list, as a tuple (picklable, for worker processes)."""
    if len(slots) >= 2:
        return operator.itemgetter(*slots)  # type: ignore[return-value]
    return _Pick(slots)


class TrialPlan:
    """A trial's criteria flattened in reading order (parents before sub-items), evaluated sub-items first."""

    def __init__(self, trial: Trial, slot_of: Callable[[Rule | Combination], int]) -> None:
        self.trial = trial
        self.trial_json = _encode(trial.id)
        nodes: list[Node] = []

        def add(c: Criterion, top: bool) -> int:
            index = len(nodes)
            nodes.append(None)  # type: ignore[arg-type]  # placeholder: children come after their parent
            children = tuple(add(child, False) for child in c.children)
            slot = None
            if c.rule is not None:
                slot = slot_of(c.rule)
            manual = (not c.children and c.rule is None) or (bool(children) and all(nodes[i].manual for i in children))
            head = (f'{{"linkId": {_encode(c.link_id)}, "kind": {_encode(c.kind)}, "text": {_encode(c.text)}, '
                    f'"result": ')
            node = Node(index, c, slot, children, c.combine, manual, top, NOT_MET if c.kind == "inclusion" else MET,
                        head)
            if manual:
                node = replace(node, fixed=f'{head}"{UNKNOWN}", "reason": {_encode(node.manual_reason)}, '
                                           '"evidence": []}')
            nodes[index] = node
            return index

        self.top = tuple(add(c, True) for c in trial.criteria)
        self.nodes = tuple(nodes)
        self.order = tuple(sorted(range(len(nodes)), key=lambda i: -i))   # sub-items (later) before parents
        self.decisive = tuple(i for i in self.top if not nodes[i].manual)
        #: lines testing facts often not in an extract (criteria.FACTS `unrecorded`): unknown only for lack of
        #: such records (`PatientScreening.waived`), they do not hold the verdict, like a line for manual review
        self.unrecorded = frozenset(i for i in self.decisive if _unrecorded_review(nodes[i].criterion))
        self.slots = tuple(dict.fromkeys(n.slot for n in nodes if n.slot is not None))   # each rule once
        #: what the site checks by hand: lines no data decides, lines decided only in part ("exc-2 (in part)"),
        #: and lines on records an extract may lack, for patients without them ("exc-22 (unless recorded)")
        self.manual_ids = "; ".join(n.criterion.link_id + mark for n in nodes
                                    if (mark := self._review_mark(n)) is not None)
        self._parent_reasons: dict[tuple[int, tuple[str, ...]], str] = {}
        self._compile()

    def _review_mark(self, node: Node) -> str | None:
        """How a line is listed for manual review: "" (a whole top-level line), " (unless recorded)" or
        " (in part)"; None: not listed."""
        if node.manual:
            return "" if node.top else None
        if node.index in self.unrecorded:
            return " (unless recorded)"
        return " (in part)" if node.criterion.reviewed_in_part else None

    def _compile(self) -> None:
        """What every patient's verdict and JSON line reuse: which rule result each line takes, the lines
        combined from sub-items, and the JSON line as a %-format with a place per patient-specific piece."""
        nodes = self.nodes
        # a line's result: its rule's (a place in the patient's rule results), or -1 (the UNKNOWN at their end)
        self._pick_results = _getter(tuple(-1 if n.slot is None else n.slot for n in nodes))
        self._combined = tuple((i, _DECIDES["all-of" if nodes[i].combine in (None, "all-of") else "any-of"],
                                nodes[i].children)
                               for i in self.order if nodes[i].slot is None and nodes[i].children)
        # top-level lines deciding the verdict: (line, the result that loses, its rule's slot if an unknown of it
        # may be waived, else -1)
        self._decisive = tuple((i, nodes[i].loses, nodes[i].slot if i in self.unrecorded else -1)
                               for i in self.decisive)
        lines = [i for i in range(len(nodes)) if nodes[i].fixed is None and nodes[i].slot is None]
        self.json_slots = frozenset(n.slot for n in nodes if n.fixed is None and n.slot is not None)
        below: dict[int, tuple[int, ...]] = {}     # a line and every line under it, parents first
        self._below = below
        for i in self.order:
            below[i] = (i,) + tuple(d for c in nodes[i].children for d in below[c])
        # combined lines, sub-items first: (line, its place among the combined lines, its subtree's places)
        self._lines = tuple((i, lines.index(i), _getter(below[i])) for i in self.order if i in lines)
        self._line_pieces: dict[tuple[int, tuple[str, ...]], tuple[str, tuple[int, ...]]] = {}
        # values of a JSON line: the patient's rule JSON, then [patient, verdict, combined line, ...]
        tail = 2 + len(lines)
        places = [-tail]
        text = ['%s, "trial": ' + _percent(self.trial_json) + ', "verdict": "%s", "criteria": [']
        places.append(-tail + 1)
        for i, node in enumerate(nodes):
            if i:
                text.append(", ")
            if node.fixed is not None:
                text.append(_percent(node.fixed))
            else:
                text.append(_percent(node.head) + "%s")
                places.append(node.slot if node.slot is not None else -tail + 2 + lines.index(i))
        text.append("]}")
        self._format = "".join(text).encode()                  # bytes: most of a line is fixed non-ASCII text
        self._pick_values = operator.itemgetter(*places)

    def outcome(self, rule_results: list[str], waived: frozenset[int] = _NONE) -> tuple[tuple[str, ...], str]:
        """Every line's result and the verdict, from the results of the plan's rules (with UNKNOWN at the end);
        `waived`: the rules unknown only for lack of records (`PatientScreening.waived`)."""
        results = list(self._pick_results(rule_results))
        for i, (decisive, other), children in self._combined:
            mine = [results[c] for c in children]
            results[i] = decisive if decisive in mine else other if mine.count(other) == len(mine) else UNKNOWN
        verdict = ELIGIBLE
        for i, loses, waiver in self._decisive:
            r = results[i]
            if r == loses:
                verdict = INELIGIBLE
                break
            if r == UNKNOWN and waiver not in waived:
                verdict = NEEDS_REVIEW
        return tuple(results), verdict

    def _line_piece(self, i: int, key: tuple[str, ...], results: tuple[str, ...],
                    ) -> tuple[str, tuple[int, ...]]:
        """A combined line's JSON from its result to its evidence, and the rules whose evidence it cites."""
        found = self._line_pieces.get((i, key))
        if found is None:
            node = self.nodes[i]
            mine = results[i]
            deciding = [c for c in node.children if results[c] == mine] or list(node.children)
            slots = tuple(dict.fromkeys(slot for c in deciding for slot in self._cited(c, results)))
            reason = self.parent_reason(node, results)
            found = (f'"{mine}", "reason": {_encode(reason)}, "evidence": '.encode(), slots)
            if len(self._line_pieces) < _CACHED:
                self._line_pieces[(i, key)] = found
        return found

    def _cited(self, i: int, results: tuple[str, ...]) -> tuple[int, ...]:
        node = self.nodes[i]
        if node.fixed is not None:
            return ()
        if node.slot is not None:
            return (node.slot,)
        return self._line_piece(i, tuple(results[d] for d in self._below[i]), results)[1]

    def to_json(self, screening: PatientScreening, results: tuple[str, ...], verdict: str) -> bytes:
        """One verdict's line of screening.json, UTF-8."""
        lines = [b""] * (len(self._lines))
        for i, place, key in self._lines:
            text, slots = self._line_piece(i, key(results), results)
            lines[place] = text + screening.cited_json(slots).encode() + b"}"
        values = screening.rule_json + [screening.head(), _BYTES[verdict]] + lines
        return self._format % self._pick_values(values)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (candidates sent back from worker processes) without the cache of combined lines."""
        return {**self.__dict__, "_line_pieces": {}}

    def holding(self, results: tuple[str, ...], waived: frozenset[int]) -> Iterator[int]:
        """The top-level lines whose unknown holds the verdict (every unknown one but the waived)."""
        for i, _, waiver in self._decisive:
            if results[i] == UNKNOWN and waiver not in waived:
                yield i

    def parent_reason(self, node: Node, results: tuple[str, ...]) -> str:
        key = (node.index, tuple(results[i] for i in node.children))
        found = self._parent_reasons.get(key)
        if found is None:
            if node.manual:
                found = MANUAL
            else:
                items = "; ".join(f"{self.nodes[i].criterion.link_id} {results[i]}" for i in node.children)
                mine = results[node.index]
                found = items if mine == UNKNOWN else \
                    f"{'any' if node.combine == 'any-of' else 'all'} of the sub-items: {items}"
            self._parent_reasons[key] = found
        return found


def _unrecorded_review(criterion: Criterion) -> bool:
    """Whether a line tests only facts whose records an extract often lacks (criteria.FACTS `unrecorded`)."""
    def unrecorded(rule: Rule | Combination) -> bool:
        if isinstance(rule, Combination):
            return all(unrecorded(part) for part in rule.parts)
        return FACTS[rule.fact].get("unrecorded") == "manual review"
    return not criterion.children and criterion.rule is not None and unrecorded(criterion.rule)


class Plan:
    """Trials compiled together: every distinct rule or combination, nested ones included, gets one slot,
    judged once per patient for all trials; every distinct (fact, subject, window) gets one place."""

    def __init__(self, trials: Iterable[Trial]) -> None:
        slot_of: dict[Rule | Combination, int] = {}
        fact_of: dict[tuple[str, str | None, Any], int] = {}        # (fact, subject, window) -> its place
        parts: list[tuple[int, ...]] = []                           # per slot: its parts' slots (combinations)
        fact_at: list[int] = []                                     # per slot: its fact's place, -1: combination

        def slot(definition: Rule | Combination) -> int:
            found = slot_of.get(definition)
            if found is not None:
                return found
            if isinstance(definition, Combination):
                inner = tuple(slot(part) for part in definition.parts)
                fact_index = -1
            else:
                inner = ()
                fact_index = fact_of.setdefault((definition.fact, definition.subject, definition.window), len(fact_of))
            found = slot_of[definition] = len(parts)
            parts.append(inner)
            fact_at.append(fact_index)
            return found

        self.trials = [TrialPlan(t, slot) for t in trials]
        self.rules: tuple[Rule | Combination, ...] = tuple(slot_of)          # in slot order
        self.parts = tuple(parts)
        self.fact_at = tuple(fact_at)
        #: the rules of lines whose unknown may be waived (TrialPlan.unrecorded)
        self.waivable = tuple(dict.fromkeys(t.nodes[i].slot for t in self.trials for i in sorted(t.unrecorded)))
        rules = self.rules
        #: per fact: its evaluator, subject and window; per slot, in order: what judging it needs
        self.calls = tuple((_evaluator(name), subject, window) for name, subject, window in fact_of)
        written = frozenset().union(*(t.json_slots for t in self.trials))     # rules whose JSON a line shows
        # rules (facts compared with expectations), then combinations (each after its parts), in slot order
        self.compared = tuple((slot, fact_at[slot], rule, _test(rule), _bounds(rule),  # type: ignore[arg-type]
                               "" if FACTS[rule.fact]["value"] == "boolean" else f"; wanted {describe(rule)}",
                               slot in written)
                              for slot, rule in enumerate(rules) if fact_at[slot] >= 0)
        self.combined = tuple((slot, parts[slot], _DECIDES[rule.operator],  # type: ignore[union-attr]
                               " and " if rule.operator == "all-of" else " or ", slot in written)  # type: ignore[union-attr]
                              for slot, rule in enumerate(rules) if fact_at[slot] < 0)

    def waives(self, slot: int, facts: list[Fact], results: list[str]) -> bool:
        """Whether rule `slot`, unknown, is unknown only for lack of records: every innermost unknown under
        it is a fact the patient has no records of at all (`Fact.unrecorded`)."""
        parts = self.parts[slot]
        if not parts:
            return facts[self.fact_at[slot]].unrecorded
        return all(self.waives(p, facts, results) for p in parts if results[p] == UNKNOWN)


def _evaluator(name: str) -> Evaluator:
    try:
        return EVALUATORS[name]
    except KeyError:
        raise KeyError(f"no evaluator for fact {name!r}: add one to fhir_adapter.eligibility.facts") from None


# ------------------------------------------------------------------------------------------ per patient

def _finding_json(result: str, reason: str, evidence: tuple[str, ...]) -> bytes:
    """A finding's JSON from its result on: `"met", "reason": ..., "evidence": [...]}`, UTF-8."""
    listed = ", ".join(map(_encode, evidence))
    return f'"{result}", "reason": {_encode(reason)}, "evidence": [{listed}]}}'.encode()


class PatientScreening:
    """One patient at one screening date: every fact and every rule judged once, shared by every trial.

    Facts are compared with their rules first, then combinations in slot order (their parts come before
    them), into flat lists of results, reasons and evidence, with the JSON of each finding a trial shows.
    """

    __slots__ = ("patient", "clock", "plan", "results", "reasons", "evidence", "rule_json", "waived", "_head")

    def __init__(self, patient: PatientData, clock: Clock, plan: Plan) -> None:
        self.patient = patient
        self.clock = clock
        self.plan = plan
        facts = [function(patient, subject, window, clock) for function, subject, window in plan.calls]
        n = len(plan.rules)
        results: list[str] = [UNKNOWN] * (n + 1)            # and UNKNOWN at the end, for lines without a rule
        reasons: list[str] = [""] * n
        evidence: list[tuple[str, ...]] = [()] * n
        rule_json: list[bytes] = [b""] * n
        for slot, index, rule, test, bounds, wanted, written in plan.compared:
            found = facts[index]
            value = found.value
            if value is None:
                result = UNKNOWN
                reason = "unknown: " + found.detail
            else:
                if test == _INTERVAL and found.upper is None:
                    low, high, low_open, high_open = bounds
                    result = MET if ((value > low or (value == low and not low_open))
                                     and (value < high or (value == high and not high_open))) else NOT_MET
                elif test == _PRESENT:
                    result = MET if bool(value) is rule.present else NOT_MET
                else:
                    result = judge(rule, found, bounds)
                reason = found.detail + wanted
            cited = found.evidence
            results[slot] = result
            reasons[slot] = reason
            evidence[slot] = cited
            if written:
                rule_json[slot] = _finding_json(result, reason, cited)
        for slot, parts, (decisive, other), joiner, written in plan.combined:
            if len(parts) == 2:             # most combinations: the general case below, unrolled
                a, b = parts
                ra, rb = results[a], results[b]
                result = decisive if decisive in (ra, rb) else other if ra == other == rb else UNKNOWN
                x, y = reasons[a], reasons[b]
                reason = x if x == y else "(" + x + ")" + joiner + "(" + y + ")"
                cited = tuple(dict.fromkeys(evidence[a] + evidence[b]))
            else:
                mine = [results[p] for p in parts]
                result = decisive if decisive in mine else other if mine.count(other) == len(mine) else UNKNOWN
                texts = list(dict.fromkeys([reasons[p] for p in parts]))
                reason = texts[0] if len(texts) == 1 else joiner.join(["(" + r + ")" for r in texts])
                cited = tuple(dict.fromkeys([e for p in parts for e in evidence[p]]))
            results[slot] = result
            reasons[slot] = reason
            evidence[slot] = cited
            if written:
                rule_json[slot] = _finding_json(result, reason, cited)
        self.results = results
        self.reasons = reasons
        self.evidence = evidence
        self.rule_json = rule_json
        #: the rules unknown only because the patient has no records of their kind (they do not hold a verdict)
        waived = _NONE
        for slot in plan.waivable:
            if results[slot] == UNKNOWN and plan.waives(slot, facts, results):
                waived = waived | {slot}
        self.waived = waived
        self._head: bytes | None = None

    def finding(self, slot: int) -> Finding:
        """The rule or combination in `plan.rules[slot]` judged for this patient."""
        return Finding(self.results[slot], self.reasons[slot], self.evidence[slot])

    def head(self) -> bytes:
        """The start of this patient's JSON lines: `{"patient": "Patient/<id>"`, UTF-8."""
        found = self._head
        if found is None:
            found = self._head = ('{"patient": ' + _encode(self.patient.reference)).encode()
        return found

    def cited_json(self, slots: tuple[int, ...]) -> str:
        """The evidence of some rules, each resource once, as a JSON list."""
        if len(slots) == 1:
            evidence = self.evidence[slots[0]]
            if not evidence:
                return "[]"
            if len(evidence) == 1:
                return "[" + _encode(evidence[0]) + "]"
        else:
            evidence = tuple(e for slot in slots for e in self.evidence[slot])
        return _evidence_json(tuple(dict.fromkeys(evidence)))

    def verdict(self, plan: TrialPlan) -> Verdict:
        waived = self.waived
        found = plan.outcome(self.results, waived)
        return Verdict(self.patient.reference, plan.trial.id, found[1], found[0], plan, self, waived)


class Verdict:
    """A patient against a trial: the verdict and every criterion's result (`criteria`: top-level lines)."""

    __slots__ = ("patient", "trial", "verdict", "results", "waived", "_plan", "_screening", "_criteria", "_done")

    def __init__(self, patient: str, trial: str, verdict: str, results: tuple[str, ...], plan: TrialPlan,
                 screening: PatientScreening | None, waived: frozenset[int] = _NONE) -> None:
        self.patient = patient
        self.trial = trial
        self.verdict = verdict
        self.results = results
        self.waived = waived                # rules unknown only for lack of records (PatientScreening.waived)
        self._plan = plan
        self._screening = screening
        self._criteria: tuple[CriterionResult, ...] | None = None
        self._done: list[tuple[str, tuple[str, ...]]] | None = None    # every line's reason and evidence

    def __repr__(self) -> str:
        return f"Verdict({self.patient!r}, {self.trial!r}, {self.verdict!r})"

    @property
    def plan(self) -> TrialPlan:
        return self._plan

    def _line(self, i: int, evidence: dict[int, tuple[str, ...]]) -> tuple[str, tuple[str, ...]]:
        """Reason and evidence of line i (sub-items' evidence must be in `evidence` already)."""
        node = self._plan.nodes[i]
        if node.slot is not None:
            f = self._screening.finding(node.slot)  # type: ignore[union-attr]
            return f.reason, f.evidence
        if node.manual:
            return node.manual_reason, ()
        mine = self.results[i]
        deciding = [c for c in node.children if self.results[c] == mine] or list(node.children)
        return (self._plan.parent_reason(node, self.results),
                tuple(dict.fromkeys(e for c in deciding for e in evidence[c])))

    def _lines(self) -> list[tuple[str, tuple[str, ...]]]:
        if self._done is not None:
            return self._done
        out: list[tuple[str, tuple[str, ...]] | None] = [None] * len(self.results)
        evidence: dict[int, tuple[str, ...]] = {}
        for i in self._plan.order:
            out[i] = line = self._line(i, evidence)
            evidence[i] = line[1]
        return out  # type: ignore[return-value]

    @property
    def criteria(self) -> tuple[CriterionResult, ...]:
        """Top-level criterion results, each with its sub-items' results."""
        if self._criteria is None:
            lines = self._lines()
            nodes = self._plan.nodes

            def build(i: int) -> CriterionResult:
                node = nodes[i]
                reason, evidence = lines[i]
                return CriterionResult(node.criterion, self.results[i], reason, evidence,
                                       tuple(build(c) for c in node.children), node.manual)
            self._criteria = tuple(build(i) for i in self._plan.top)
        return self._criteria

    def _reason(self, i: int) -> str:
        node = self._plan.nodes[i]
        if self._done is not None:
            return self._done[i][0]
        if node.slot is not None:
            return self._screening.reasons[node.slot]  # type: ignore[union-attr]
        if node.children and not node.manual:
            return self._plan.parent_reason(node, self.results)
        return self._lines()[i][0]

    def _open(self, i: int) -> Iterator[int]:
        """The innermost unknown lines under line i."""
        node = self._plan.nodes[i]
        if node.children and not node.manual:
            for c in node.children:
                if self.results[c] == UNKNOWN and not self._plan.nodes[c].manual:
                    yield from self._open(c)
        else:
            yield i

    @property
    def missing(self) -> list[str]:
        """What is missing to decide: `linkId: reason` of each unknown line (the innermost ones)."""
        nodes, results = self._plan.nodes, self.results
        return [f"{nodes[j].criterion.link_id}: {self._reason(j)}"
                for i in self._plan.holding(results, self.waived) for j in self._open(i)]

    @property
    def deciding(self) -> list[str]:
        """The linkIds of the criteria that make the patient ineligible."""
        nodes, results = self._plan.nodes, self.results
        return [nodes[i].criterion.link_id for i in self._plan.decisive if results[i] == nodes[i].loses]

    @property
    def evidence(self) -> list[str]:
        """Every resource the verdict cites, once, in order of first use."""
        if self._screening is not None:
            s = self._screening
            evidence = s.evidence
            return list(dict.fromkeys([e for slot in self._plan.slots for e in evidence[slot]]))
        return list(dict.fromkeys(e for r in self.criteria for x in r.walk() for e in x.evidence))

    def to_dict(self) -> dict[str, Any]:
        """The screening.json shape: patient, trial, verdict, and each criterion line (sub-items flattened)."""
        return {"patient": self.patient, "trial": self.trial, "verdict": self.verdict,
                "criteria": [x.to_dict() for r in self.criteria for x in r.walk()]}

    def to_json(self) -> str:
        """`to_dict` as one line of JSON, built from fragments cached per trial and per finding."""
        return self.to_json_bytes().decode()

    def to_json_bytes(self) -> bytes:
        """`to_json` encoded in UTF-8 (made as bytes: what screening.json is written from)."""
        if self._screening is None:
            return json.dumps(self.to_dict(), ensure_ascii=False).encode()
        return self._plan.to_json(self._screening, self.results, self.verdict)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (between processes) with its criteria worked out, without the patient's data."""
        return {"patient": self.patient, "trial": self.trial, "verdict": self.verdict, "results": self.results,
                "waived": self.waived, "_plan": self._plan, "_screening": None, "_criteria": self.criteria,
                "_done": self._lines()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def screen(patients: Iterable[PatientData], trials: Iterable[Trial], as_of: dt.date | None = None,
           ) -> Iterator[Verdict]:
    """Verdicts for every patient against every trial, patient by patient, trials in the order given.

    `as_of` is the screening date every window counts back from (default today). The patients are screened as
    given: pass them through `data.screenable` first to leave out the dead and the records dated before the
    birth date, and to be told about them (as `fhir-adapter screen` does).
    """
    clock = Clock(as_of or dt.date.today())
    plan = Plan(trials)
    for patient in patients:
        screening = PatientScreening(patient, clock, plan)
        for trial_plan in plan.trials:
            yield screening.verdict(trial_plan)


@dataclass
class Funnel:
    """Per trial: verdict counts, and per top-level criterion how many it keeps, loses or leaves unknown."""

    trial: str
    verdicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    criteria: dict[str, dict[str, int]] = field(default_factory=dict)   # linkId -> keeps / loses / unknown

    def add(self, verdict: Verdict) -> None:
        self.add_results(verdict.plan, verdict.verdict, verdict.results)

    def add_results(self, plan: TrialPlan, verdict: str, results: tuple[str, ...], n: int = 1) -> None:
        """Count `n` verdicts of the same verdict and criterion results at once."""
        self.verdicts[verdict] += n
        for i in plan.top:
            node = plan.nodes[i]
            counts = self.criteria.get(node.criterion.link_id)
            if counts is None:
                counts = self.criteria[node.criterion.link_id] = {"keeps": 0, "loses": 0, "unknown": 0}
            r = results[i]
            counts["unknown" if r == UNKNOWN else "loses" if r == node.loses else "keeps"] += n

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
