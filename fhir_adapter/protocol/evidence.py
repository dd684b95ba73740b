"""A trial's eligibility criteria as an EvidenceVariable (R4B-valid R4, or R5), and back without loss.

One characteristic per criterion line: the verbatim text in `description`, `exclude` for exclusions, and a
computable definition where the line has a rule (`fhir_adapter.criteria`); a line without one is typed
`ms#manual-review`. Facts are typed with the local CodeSystem `https://w3id.org/fhir-adapter/CodeSystem/ms`
(data: `mappings/codesystems/ms.yaml`, shipped by `code_system`).

R5 says it natively: `linkId`; `definitionByTypeAndValue` (type = the fact's code; value[x] = Range, Quantity
with a comparator for open-ended bounds, CodeableConcept or boolean); relapse counts as `instancesQuantity` /
`instancesRange`; look-back windows as `timeFromEvent` before the screening date; sub-items and rule parts in
`definitionByCombination` (sub-items carry a linkId, rule parts do not); a rule that the subject is present
(`therapy` of corticosteroids) has the subject as its CodeableConcept value. Two things have no R5 element and
travel as extensions: the rule's subject by name (a concept or value set of `mappings/terminology.yaml`, e.g.
`corticosteroids`) and an exclusive bound of a two-sided range or of a look-back window (`< 3 mo`).

R4B has no linkId, note or nesting on a characteristic: the linkId, the note and the exact rule (its YAML form
as JSON) travel as extensions, with a readable `definitionExpression` beside the rule and `timeFromStart` for a
rule's window; sub-items are a contained EvidenceVariable (`characteristicCombination` intersection or union)
that the line's `definitionReference` points to.

>>> from types import SimpleNamespace
>>> c = Criterion.from_dict({"linkId": "inc-4", "kind": "inclusion", "text": "EDSS 3.0 - 6.5",
...                          "rule": {"fact": "edss", "range": [3.0, 6.5]}})
>>> ev = evidence_variable(SimpleNamespace(nct_id="NCT00000001", acronym="X", title="X", criteria=(c,)), "R5")
>>> ev["characteristic"][0]["definitionByTypeAndValue"]["valueRange"]["high"]["value"]
6.5
>>> criteria_from_evidence_variable(ev, "R5") == [c]
True
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from functools import cache
from typing import Any

import yaml

from .. import ids, terminology
from ..criteria import (
    FACTS,
    WINDOW_UNITS,
    Combination,
    Criterion,
    CriterionError,
    Rule,
    Window,
    _number,
    definition_from_dict,
)
from ..paths import MAPPINGS
from ..render import check_version, quantity, render
from .model import CTGOV

CANONICAL = "https://w3id.org/fhir-adapter/EvidenceVariable/"
STRUCTURE = "https://w3id.org/fhir-adapter/StructureDefinition/"
LINK_ID = STRUCTURE + "criterion-link-id"        # R4B: the criterion's linkId (valueString)
NOTE = STRUCTURE + "criterion-note"              # R4B: why it needs review, or how the rule reads (valueString)
RULE = STRUCTURE + "criterion-rule"              # R4B: the rule, its YAML form as JSON (valueString)
SUBJECT = STRUCTURE + "criterion-subject"        # R5: the rule's subject (valueCode)
EXCLUSIVE = STRUCTURE + "exclusive-bound"        # R5: low, high or both bounds of a Range are exclusive
EXPRESSION_LANGUAGE = "text/x-fhir-adapter-criterion"
LOCAL_SOURCE = MAPPINGS / "codesystems" / "ms.yaml"
COMPARATORS = {(False, "low"): ">=", (True, "low"): ">", (False, "high"): "<=", (True, "high"): "<"}
R4B_COMBINATION = {"all-of": "intersection", "any-of": "union"}
LINK_ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")     # R5 linkId is an id; R4B contained ids reuse it


# ------------------------------------------------------------------------------------------ the local CodeSystem

@cache
def local() -> dict[str, Any]:
    """`mappings/codesystems/ms.yaml`: the CodeSystem's metadata, concepts, and how each fact is typed."""
    data = yaml.safe_load(LOCAL_SOURCE.read_text(encoding="utf-8"))
    codes = {c["code"] for c in data["concepts"]}
    for fact, spec in data["facts"].items():
        if fact not in FACTS or spec["code"] not in codes:
            raise ValueError(f"{LOCAL_SOURCE}: facts.{fact}: unknown fact or code {spec['code']!r}")
    missing = set(FACTS) - set(data["facts"])
    if missing:
        raise ValueError(f"{LOCAL_SOURCE}: facts: no type for {sorted(missing)}")
    return data


def local_coding(code: str) -> dict[str, str]:
    """A coding of the local CodeSystem, with its display."""
    for concept in local()["concepts"]:
        if concept["code"] == code:
            return {"system": local()["codesystem"]["url"], "code": code, "display": concept["display"]}
    raise KeyError(f"no concept {code!r} in {LOCAL_SOURCE}")


def code_system(fhir_version: str = "R4") -> dict[str, Any]:
    """The local CodeSystem as a FHIR resource (the same content in R4 and R5)."""
    data = local()
    meta = data["codesystem"]
    context = {**meta, "id": ids.resource_id("CodeSystem", "urn:ietf:rfc:3986", meta["url"]),
               "identifier": {"system": "urn:ietf:rfc:3986", "value": meta["url"]},
               "concepts": data["concepts"], "count": len(data["concepts"])}
    return render("CodeSystem.json.j2", check_version(fhir_version), cs=context)


# ------------------------------------------------------------------------------------------ rules as FHIR parts

def _fact_type(fact: str) -> dict[str, Any]:
    spec = local()["facts"][fact]
    coding = local_coding(spec["code"])
    also = terminology.codings(spec["also"])[:1] if spec.get("also") else []
    return {"coding": [coding, *also], "text": coding["display"]}


def _unit(rule: Rule) -> str | None:
    if rule.fact == "lab-value":
        return local()["lab_units"].get(rule.subject or "")
    return local()["facts"][rule.fact].get("unit")


def _quantity(value: Decimal | int, unit: str | None, comparator: str | None = None) -> dict[str, Any]:
    number = _number(value) if isinstance(value, Decimal) else value
    out = quantity(number, unit) if unit else {"value": number}
    return out if comparator is None else {"comparator": comparator, **out}


def _interval(rule: Rule) -> tuple[str, dict[str, Any], str | None]:
    """("Range" or "Quantity", the value, which bounds are exclusive) of a numeric rule."""
    unit = _unit(rule)
    if rule.low is not None and rule.high is not None:
        exclusive = {(True, True): "both", (True, False): "low", (False, True): "high"}.get(
            (rule.low_open, rule.high_open))
        return "Range", {"low": _quantity(rule.low, unit), "high": _quantity(rule.high, unit)}, exclusive
    if rule.low is not None:
        return "Quantity", _quantity(rule.low, unit, COMPARATORS[rule.low_open, "low"]), None
    assert rule.high is not None
    return "Quantity", _quantity(rule.high, unit, COMPARATORS[rule.high_open, "high"]), None


def _coded_value(rule: Rule) -> dict[str, Any]:
    source = local()["facts"][rule.fact].get("values", "terminology")
    codings = []
    for code in rule.codes:
        if source == "terminology":
            codings.append(terminology.codings(code)[0])
        else:
            codings.append({"system": source, "code": code})
    return {"coding": codings, "text": " or ".join(rule.codes)}


def _subject_value(subject: str) -> dict[str, Any]:
    """A rule's subject as a CodeableConcept: a concept's codings, or a value set's name and members in words."""
    data = terminology.load()
    if subject in data.valuesets:
        members = ", ".join(terminology.concept(m).display for m in data.valuesets[subject])
        return {"text": f"{terminology.label(subject)}: {members}"}
    return terminology.codeable_concept(subject)


def window_range(window: Window) -> dict[str, Any]:
    """A look-back window as a Range of time relative to the screening date (`18 mo`: -18 mo to 0 mo)."""
    unit = WINDOW_UNITS[window.unit]
    return {"low": quantity(-window.value, window.unit, unit), "high": quantity(0, window.unit, unit)}


def window_text(window: Window) -> str:
    if window.value == 0:
        return "at the screening date"
    unit = WINDOW_UNITS[window.unit]
    span = f"{window.value} {unit[:-1] if window.value == 1 else unit} before the screening date"
    return f"less than {span}" if window.strict else f"in the {span}"


def expression(definition: Rule | Combination) -> str:
    """A rule in one line: `relapse-count[moderate] in 18 mo >= 1`, `(a) or (b)`.

    >>> expression(Rule.from_dict({"fact": "lab-value", "subject": "egfr", "below": 60}))
    'lab-value[egfr] < 60'
    """
    if isinstance(definition, Combination):
        joiner = " and " if definition.operator == "all-of" else " or "
        return joiner.join(f"({expression(p)})" for p in definition.parts)
    rule = definition
    text = rule.fact + (f"[{rule.subject}]" if rule.subject else "") + (f" in {rule.window}" if rule.window else "")
    if rule.present is not None:
        return f"{text} = {str(rule.present).lower()}"
    if rule.codes:
        return f"{text} in ({', '.join(rule.codes)})"
    if rule.low is not None and rule.high is not None:
        return (f"{text} in {'(' if rule.low_open else '['}{_number(rule.low)}, "
                f"{_number(rule.high)}{')' if rule.high_open else ']'}")
    if rule.low is not None:
        return f"{text} {COMPARATORS[rule.low_open, 'low']} {_number(rule.low)}"
    assert rule.high is not None
    return f"{text} {COMPARATORS[rule.high_open, 'high']} {_number(rule.high)}"


def evidence_variable_id(nct_id: str) -> str:
    """The deterministic id of a trial's EvidenceVariable (where screening `--from-server` reads it)."""
    return ids.resource_id("EvidenceVariable", CTGOV, nct_id)


def _manual_review() -> dict[str, Any]:
    """The type of a line without a rule: screening leaves it to a person."""
    return {"coding": [local_coding("manual-review")], "text": "manual review"}


# ------------------------------------------------------------------------------------------ writing: R5

def _empty_r5() -> dict[str, Any]:
    return {"link_id": None, "description": None, "note": None, "exclude": None, "manual": None,
            "typed": {"extension": None, "type": None, "value_key": "valueBoolean", "value": None},
            "combination": {"code": None, "parts": ()},
            "instances_key": "instancesQuantity", "instances": None, "time_from_event": None}


def _r5_definition(definition: Rule | Combination, out: dict[str, Any]) -> dict[str, Any]:
    """Fill a characteristic context with a rule (definitionByTypeAndValue) or a combination of rule parts."""
    if isinstance(definition, Combination):
        parts = [_r5_definition(p, {**_empty_r5(), "description": expression(p)}) for p in definition.parts]
        out["combination"] = {"code": definition.operator, "parts": parts}
        return out
    rule = definition
    extension = [{"url": SUBJECT, "valueCode": rule.subject}] if rule.subject else []
    kind = FACTS[rule.fact]["value"]
    if rule.fact == "relapse-count":
        key, out["instances"], exclusive = _interval(rule)
        out["instances_key"] = f"instances{key}"
        value_key, value = (("valueCodeableConcept", _subject_value(rule.subject)) if rule.subject
                            else ("valueBoolean", True))
    elif kind == "number":
        key, value, exclusive = _interval(rule)
        value_key = f"value{key}"
    elif kind == "code":
        value_key, value, exclusive = "valueCodeableConcept", _coded_value(rule), None
    elif rule.subject and rule.present:             # "exposed to corticosteroids": the subject as the value
        value_key, value, exclusive = "valueCodeableConcept", _subject_value(rule.subject), None
    else:
        value_key, value, exclusive = "valueBoolean", rule.present, None
    if exclusive:
        extension.append({"url": EXCLUSIVE, "valueCode": exclusive})
    out["typed"] = {"extension": extension, "type": _fact_type(rule.fact), "value_key": value_key, "value": value}
    if rule.window is not None:
        out["time_from_event"] = {"description": window_text(rule.window),
                                  "eventCodeableConcept": {"coding": [local_coding("screening-date")]},
                                  "range": window_range(rule.window)}
        if rule.window.strict:          # the day exactly one period back is outside the window
            out["time_from_event"] = {"extension": [{"url": EXCLUSIVE, "valueCode": "low"}],
                                      **out["time_from_event"]}
    return out


def _r5_characteristic(criterion: Criterion, top: bool) -> dict[str, Any]:
    out = {**_empty_r5(), "link_id": criterion.link_id, "description": criterion.text, "note": criterion.note,
           "exclude": criterion.kind == "exclusion" if top else None}
    if criterion.children:
        out["combination"] = {"code": criterion.combine,
                              "parts": [_r5_characteristic(c, False) for c in criterion.children]}
    elif criterion.rule is not None:
        _r5_definition(criterion.rule, out)
    else:
        out["manual"] = _manual_review()
    return out


# ------------------------------------------------------------------------------------------ writing: R4B

def _r4_characteristic(criterion: Criterion, top: bool, groups: list[dict[str, Any]]) -> dict[str, Any]:
    extension = [{"url": LINK_ID, "valueString": criterion.link_id}]
    if criterion.note:
        extension.append({"url": NOTE, "valueString": criterion.note})
    out: dict[str, Any] = {"extension": extension, "description": criterion.text, "reference": None,
                           "expression": None, "manual": None, "time_from_start": None,
                           "exclude": criterion.kind == "exclusion" if top else None}
    if criterion.children:
        group_id = criterion.link_id                # a FHIR id (checked by evidence_variable)
        group = {"id": group_id, "description": criterion.text, "combination": R4B_COMBINATION[criterion.combine or ""],
                 "characteristics": []}
        groups.append(group)
        group["characteristics"] = [_r4_characteristic(c, False, groups) for c in criterion.children]
        out["reference"] = {"reference": f"#{group_id}"}
    elif criterion.rule is not None:
        rule = criterion.rule
        extension.append({"url": RULE, "valueString": json.dumps(rule.to_dict(), ensure_ascii=False,
                                                                  separators=(",", ":"))})
        out["expression"] = {"description": "computable reading of the criterion (the rule travels in the "
                                            f"{RULE} extension)",
                             "language": EXPRESSION_LANGUAGE, "expression": expression(rule)}
        if isinstance(rule, Rule) and rule.window is not None:
            out["time_from_start"] = {"description": window_text(rule.window), "range": window_range(rule.window)}
    else:
        out["manual"] = _manual_review()
    return out


# ------------------------------------------------------------------------------------------ the resource

def evidence_variable(protocol: Any, fhir_version: str = "R4") -> dict[str, Any]:
    """The EvidenceVariable of a protocol's criteria (`nct_id`, `acronym`, `title`, `criteria`)."""
    version = check_version(fhir_version)
    nct = str(protocol.nct_id)
    criteria = tuple(getattr(protocol, "criteria", None) or ())
    if not criteria:
        raise CriterionError(f"{nct}: no criteria to write as an EvidenceVariable")
    seen: set[str] = set()
    for criterion in (c for top in criteria for c in top.walk()):
        if criterion.link_id in seen:
            raise CriterionError(f"{nct}: linkId {criterion.link_id} is used twice")
        if not LINK_ID_PATTERN.fullmatch(criterion.link_id):
            raise CriterionError(f"{nct}: linkId {criterion.link_id!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)")
        seen.add(criterion.link_id)
    label = getattr(protocol, "acronym", None) or nct
    context: dict[str, Any] = {
        "id": evidence_variable_id(nct),
        "url": CANONICAL + nct,
        "identifier": [{"system": CTGOV, "value": nct}],
        "name": "Eligibility" + re.sub(r"[^A-Za-z0-9_]", "_", nct),
        "title": f"Eligibility criteria of {label} ({nct})" if label != nct else f"Eligibility criteria of {nct}",
        "status": "active",
        "description": (f"Inclusion and exclusion criteria of {getattr(protocol, 'title', None) or label}, each "
                        "line verbatim; computable where measurable, typed 'manual review' where not."),
    }
    if version == "R5":
        context["characteristics"] = [_r5_characteristic(c, True) for c in criteria]
    else:
        groups: list[dict[str, Any]] = []
        context["characteristics"] = [_r4_characteristic(c, True, groups) for c in criteria]
        context["groups"] = groups
    return render("EvidenceVariable.json.j2", version, ev=context)


# ------------------------------------------------------------------------------------------ reading back

def _fact_of(type_: dict[str, Any] | None, where: str) -> str:
    system = local()["codesystem"]["url"]
    by_code = {spec["code"]: fact for fact, spec in local()["facts"].items()}
    for coding in (type_ or {}).get("coding") or ():
        if coding.get("system") == system and coding.get("code") in by_code:
            return by_code[coding["code"]]
    raise CriterionError(f"{where}.type: no fact code of {system}")


def _decimal(quantity: dict[str, Any] | None, where: str) -> Decimal:
    if not isinstance(quantity, dict) or quantity.get("value") is None:
        raise CriterionError(f"{where}: a quantity with a value is expected")
    return Decimal(str(quantity["value"]))


def _read_interval(value_key: str, value: dict[str, Any], exclusive: str | None, where: str) -> dict[str, Any]:
    """The interval keys of a rule's YAML form (`range`, `at-least`, ...) from a Range or Quantity."""
    if value_key.endswith("Range"):
        low, high = _decimal(value.get("low"), f"{where}.low"), _decimal(value.get("high"), f"{where}.high")
        if exclusive is None:
            return {"range": [low, high]}
        return {"above" if exclusive in ("low", "both") else "at-least": low,
                "below" if exclusive in ("high", "both") else "at-most": high}
    number = _decimal(value, where)
    key = {">=": "at-least", ">": "above", "<=": "at-most", "<": "below"}.get(value.get("comparator"))
    return {key: number} if key else {"range": [number, number]}


def _read_codes(fact: str, value: dict[str, Any], where: str) -> list[str]:
    source = local()["facts"][fact].get("values", "terminology")
    codes = []
    for coding in value.get("coding") or ():
        if source == "terminology":
            name = terminology.concept_of(coding.get("system", ""), coding.get("code", ""))
            if name is None:
                raise CriterionError(f"{where}: {coding.get('system')}|{coding.get('code')} is no concept of "
                                     f"{terminology.SOURCE}")
            codes.append(name)
        else:
            codes.append(coding.get("code"))
    if not codes:
        raise CriterionError(f"{where}: no coding")
    return codes


def _read_window(characteristic: dict[str, Any], where: str) -> Window | None:
    events = characteristic.get("timeFromEvent") or ()
    if not events:
        return None
    low = (events[0].get("range") or {}).get("low") or {}
    if low.get("value") is None or low.get("code") not in WINDOW_UNITS:
        raise CriterionError(f"{where}.timeFromEvent[0].range.low: a value and a unit of {', '.join(WINDOW_UNITS)}")
    strict = any(e.get("url") == EXCLUSIVE and e.get("valueCode") == "low" for e in events[0].get("extension") or ())
    return Window(abs(int(Decimal(str(low["value"])))), low["code"], strict)


def _r5_rule(characteristic: dict[str, Any], where: str) -> Rule | Combination | None:
    combination = characteristic.get("definitionByCombination")
    if combination:
        parts = combination.get("characteristic") or ()
        return Combination(combination.get("code"), tuple(
            _r5_rule(p, f"{where}.definitionByCombination.characteristic[{i}]") for i, p in enumerate(parts)))
    typed = characteristic.get("definitionByTypeAndValue")
    if not typed:
        return None
    here = f"{where}.definitionByTypeAndValue"
    fact = _fact_of(typed.get("type"), here)
    extensions = {e.get("url"): e.get("valueCode") for e in typed.get("extension") or ()}
    data: dict[str, Any] = {"fact": fact, "window": _read_window(characteristic, where)}
    if extensions.get(SUBJECT):
        data["subject"] = extensions[SUBJECT]
    kind = FACTS[fact]["value"]
    value_key = next((k for k in typed if k.startswith("value")), None)
    if fact == "relapse-count":
        instances = next((k for k in characteristic if k.startswith("instances")), None)
        if instances is None:
            raise CriterionError(f"{where}: a relapse count needs instancesQuantity or instancesRange")
        data.update(_read_interval(instances, characteristic[instances], extensions.get(EXCLUSIVE), where))
    elif value_key is None:
        raise CriterionError(f"{here}: no value[x]")
    elif kind == "number":
        data.update(_read_interval(value_key, typed[value_key], extensions.get(EXCLUSIVE), f"{here}.{value_key}"))
    elif kind == "code":
        data["any-of"] = _read_codes(fact, typed[value_key], f"{here}.{value_key}")
    else:
        data["present"] = typed[value_key] if value_key == "valueBoolean" else True   # or the subject itself
    return Rule.from_dict({k: v for k, v in data.items() if v is not None}, where)


def _r5_criterion(characteristic: dict[str, Any], kind: str | None, where: str) -> Criterion:
    link_id = characteristic.get("linkId")
    if not link_id:
        raise CriterionError(f"{where}: no linkId")
    if kind is None:
        kind = "exclusion" if characteristic.get("exclude") else "inclusion"
    notes = [n.get("text") for n in characteristic.get("note") or () if n.get("text")]
    combination = characteristic.get("definitionByCombination") or {}
    parts = combination.get("characteristic") or ()
    children: tuple[Criterion, ...] = ()
    rule = None
    if parts and all(p.get("linkId") for p in parts):
        children = tuple(_r5_criterion(p, kind, f"{where}.definitionByCombination.characteristic[{i}]")
                         for i, p in enumerate(parts))
    elif any(p.get("linkId") for p in parts):
        raise CriterionError(f"{where}.definitionByCombination: sub-items (with a linkId) and rule parts mixed")
    else:
        rule = _r5_rule(characteristic, where)
    return Criterion(link_id, kind, characteristic.get("description") or "", rule, "\n".join(notes) or None,
                     children, combination.get("code") if children else None)


def _r4_criterion(characteristic: dict[str, Any], kind: str | None, contained: dict[str, dict[str, Any]],
                  where: str) -> Criterion:
    extensions = {e.get("url"): e.get("valueString") for e in characteristic.get("extension") or ()}
    link_id = extensions.get(LINK_ID)
    if not link_id:
        raise CriterionError(f"{where}: no {LINK_ID} extension")
    if kind is None:
        kind = "exclusion" if characteristic.get("exclude") else "inclusion"
    rule = None
    if extensions.get(RULE):
        try:
            rule = definition_from_dict(json.loads(extensions[RULE]), f"{where} ({link_id}) rule")
        except json.JSONDecodeError as exc:
            raise CriterionError(f"{where}: the {RULE} extension is not JSON: {exc}") from None
    children: tuple[Criterion, ...] = ()
    combine = None
    reference = (characteristic.get("definitionReference") or {}).get("reference") or ""
    if reference.startswith("#"):
        group = contained.get(reference[1:])
        if group is None:
            raise CriterionError(f"{where}.definitionReference: no contained resource {reference}")
        combine = {v: k for k, v in R4B_COMBINATION.items()}.get(group.get("characteristicCombination"))
        children = tuple(_r4_criterion(c, kind, contained, f"{where} {reference}.characteristic[{i}]")
                         for i, c in enumerate(group.get("characteristic") or ()))
    return Criterion(str(link_id), kind, characteristic.get("description") or "", rule, extensions.get(NOTE),
                     children, combine)


def criteria_from_evidence_variable(resource: dict[str, Any], fhir_version: str = "R4") -> list[Criterion]:
    """The criteria of an EvidenceVariable written by `evidence_variable` (or read back from a server)."""
    version = check_version(fhir_version)
    where = f"EvidenceVariable/{resource.get('id')}"
    if resource.get("resourceType") != "EvidenceVariable":
        raise CriterionError(f"{where}: not an EvidenceVariable (resourceType {resource.get('resourceType')!r})")
    characteristics = resource.get("characteristic") or ()
    if version == "R5":
        return [_r5_criterion(c, None, f"{where}.characteristic[{i}]") for i, c in enumerate(characteristics)]
    contained = {r.get("id"): r for r in resource.get("contained") or () if r.get("resourceType") == "EvidenceVariable"}
    return [_r4_criterion(c, None, contained, f"{where}.characteristic[{i}]") for i, c in enumerate(characteristics)]
