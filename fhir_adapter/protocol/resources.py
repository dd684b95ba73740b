"""The protocol model as FHIR resources: ResearchStudy, PlanDefinition and the enrolment Group.

This module turns registry values into ready template values (codings from `mappings/ctgov.yaml`, references
from deterministic ids); the templates in `templates/r4/` and `templates/r5/` give the shape.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from .. import terminology
from ..criteria import WINDOW_UNITS, Window
from ..render import quantity, render
from .ctgov import tables
from .model import Age, Arm, Intervention, Protocol

UCUM_DURATIONS = {**WINDOW_UNITS, "h": "hours", "min": "minutes"}
ACTIVITY_CANONICAL = "https://w3id.org/fhir-adapter/ActivityDefinition/"


def narrative(*paragraphs: str | None, items: list[str] | None = None) -> dict[str, str]:
    """A generated Narrative: the paragraphs and an ordered list, every text HTML-escaped."""
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs if p)
    if items:
        body += "<ol>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ol>"
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def machine_name(text: str) -> str:
    """A name for machine processing: the words of `text` joined, each capitalised (`SMART-MS` -> `SMARTMS`).

    >>> machine_name("MESEMS Genova"), machine_name("CMM-EM")
    ('MESEMSGenova', 'CMMEM')
    """
    return "".join(word[:1].upper() + word[1:] for word in re.split(r"[^A-Za-z0-9]+", text))


def coding(row: list[str]) -> dict[str, str]:
    """A Coding from a `[system alias, code, display]` row of mappings/ctgov.yaml."""
    system, code, display = row
    return {"system": terminology.system(system), "code": str(code), "display": str(display)}


def codeable(row: list[str] | None, text: str | None = None) -> dict[str, Any] | None:
    if row is None:
        return {"text": text} if text else None
    return {"coding": [coding(row)], "text": text or row[2]}


def duration(window: Window) -> dict[str, Any]:
    """A UCUM Duration for a schedule offset (`24 wk`)."""
    return quantity(window.value, window.unit, UCUM_DURATIONS[window.unit])


def _status(protocol: Protocol, fhir_version: str) -> tuple[dict[str, Any], list[str]]:
    """The status table row for the protocol, with the warnings choosing it caused (`file: field: ...`)."""
    statuses = tables()["statuses"]
    where = protocol.status_field or f"{protocol.nct_id}: status"
    code = protocol.status
    if code == "UNKNOWN" and protocol.last_known_status in statuses:
        code = protocol.last_known_status
    r4 = fhir_version == "R4"
    if code not in statuses:
        what = repr(protocol.status) if protocol.status else "no status"
        written = "'active'" if r4 else "'unknown' with no progressStatus"
        return statuses["UNKNOWN"], [f"{where}: {what} has no ResearchStudy.status code; written as {written}"]
    if code == "UNKNOWN":
        if r4:
            message = ("UNKNOWN (with no last known status) has no R4 ResearchStudy.status code; written as "
                       "'active'")
        else:
            message = ("UNKNOWN (with no last known status) is written as status 'unknown' with no progressStatus "
                       "(research-study-status has no code for it)")
        return statuses[code], [f"{where}: {message}"]
    return statuses[code], []


def _phase(protocol: Protocol) -> dict[str, Any] | None:
    if not protocol.phases:
        return None
    key = "/".join(protocol.phases)
    row = tables()["phases"].get(key)
    return codeable(row, None if row else key)


def _purpose(protocol: Protocol) -> dict[str, Any] | None:
    row = tables()["purposes"].get(protocol.purpose or "")
    return codeable(row, None if row else protocol.purpose)


def _design(protocol: Protocol) -> list[dict[str, Any]]:
    """SEVCO study-design concepts: allocation, model, one per blinded party."""
    t = tables()
    concepts = []
    if row := t["allocation"].get(protocol.allocation or ""):
        concepts.append(codeable(row))
    if row := t["models"].get(protocol.model or ""):
        concepts.append(codeable(row))
    blinded = protocol.who_masked or tuple(t["masking"].get(protocol.masking or "", ()))
    for row in dict.fromkeys(tuple(t["blinding"][w]) for w in blinded if w in t["blinding"]):
        concepts.append(codeable(list(row)))
    return concepts


def _design_text(protocol: Protocol) -> str | None:
    parts = [protocol.study_type, protocol.allocation, protocol.model,
             f"{protocol.masking} masking" if protocol.masking else None]
    words = [p.replace("_", " ").lower() for p in parts if p]
    return ", ".join(words).capitalize() if words else None


def _conditions(protocol: Protocol) -> list[dict[str, Any]]:
    coded = [terminology.codeable_concept(name) for name in protocol.condition_concepts]
    mapped = {c.lower() for c, name in tables()["conditions"].items() if name in protocol.condition_concepts}
    return coded + [{"text": c} for c in protocol.conditions if c.lower() not in mapped]


def _identifiers(protocol: Protocol) -> list[dict[str, Any]]:
    found = [{"use": "official", "system": protocol.id_system, "value": protocol.nct_id}]
    for ident in protocol.identifiers:
        kind = {"org": "Organization study id", "eudract": "EudraCT number"}.get(ident.kind, ident.kind)
        found.append({"use": "secondary", "type": {"text": kind}, "system": ident.system, "value": ident.value,
                      "assigner": {"display": ident.assigner} if ident.assigner else None})
    return found


def _arms(protocol: Protocol) -> list[dict[str, Any]]:
    arm_types = tables()["arm_types"]
    return [{"link_id": f"arm-{i}", "name": arm.label,
             "type": {"text": arm_types.get(arm.type or "", arm.type)} if arm.type else None,
             "description": arm.description} for i, arm in enumerate(protocol.arms, 1)]


def _contained(protocol: Protocol, fhir_version: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Contained Organization, Practitioner and Location resources for parties and sites, and references to them.
    R4 can refer to the lead sponsor and one principal investigator only (collaborators go to a note)."""
    contained: list[dict[str, Any]] = []
    refs: dict[str, Any] = {"parties": [], "sites": []}
    parties = protocol.parties
    if fhir_version == "R4":
        roles = ("lead-sponsor", "primary-investigator")
        first = (next((p for p in parties if p.role == role), None) for role in roles)
        parties = tuple(p for p in first if p)
    for i, party in enumerate(parties, 1):
        local = f"party-{i}"
        if party.role in ("lead-sponsor", "collaborator"):
            contained.append({"resourceType": "Organization", "id": local, "name": party.name})
        else:
            contained.append({"resourceType": "Practitioner", "id": local, "name": [{"text": party.name}]})
        refs["parties"].append({"party": party, "reference": f"#{local}"})
    for i, site in enumerate(protocol.sites, 1):
        local = f"site-{i}"
        contained.append({"resourceType": "Location", "id": local, "name": site.facility,
                          "address": {"city": site.city, "state": site.state, "country": site.country}})
        refs["sites"].append({"reference": f"#{local}", "display": site.facility})
    return contained, refs


def _artifacts(protocol: Protocol, evidence_url: str | None, fhir_version: str) -> list[dict[str, Any]]:
    """Citations (R4 `url`; R5 has none: `document.url`), member registrations, the eligibility criteria."""
    artifacts = []
    for citation in protocol.citations:
        url = citation.url or (f"https://doi.org/{citation.doi}" if citation.doi else None) or (
            f"https://pubmed.ncbi.nlm.nih.gov/{citation.pmid}/" if citation.pmid else None)
        kind = "composed-of" if citation.type == "composed-of" else "citation"
        artifacts.append({"type": kind, "label": f"PMID {citation.pmid}" if citation.pmid else None,
                          "citation": citation.text if kind == "citation" else None,
                          "display": citation.text if kind == "composed-of" else None,
                          **({"url": url} if fhir_version == "R4" else {"document": {"url": url} if url else None})})
    if evidence_url:
        artifacts.append({"type": "depends-on", "label": "eligibility", "display": "Eligibility criteria",
                          "resource": evidence_url})
    return artifacts


def study_context(protocol: Protocol, fhir_version: str, *, plan: bool, group: bool, evidence: dict[str, Any] | None,
                  parent: Protocol | None) -> tuple[dict[str, Any], list[str]]:
    """Template values for the ResearchStudy, and warnings about values with no FHIR code."""
    status, warnings = _status(protocol, fhir_version)
    contained, refs = _contained(protocol, fhir_version)
    countries = list(dict.fromkeys(site.country for site in protocol.sites if site.country))
    collaborators = [p.name for p in protocol.parties if p.role == "collaborator"]
    sponsor = next((r for r in refs["parties"] if r["party"].role == "lead-sponsor"), None)
    investigator = next((r for r in refs["parties"] if r["party"].role == "primary-investigator"), None)
    phase = _phase(protocol)
    design_text = _design_text(protocol)
    context = {
        "narrative": narrative(
            f"{protocol.label} ({protocol.nct_id}): {protocol.title}",
            ", ".join(p for p in (f"status {protocol.status}" if protocol.status else None,
                                  phase["text"] if phase else None, design_text) if p),
            f"Part of {parent.label}." if parent else None,
            items=[f"{arm.label}: {arm.description}" if arm.description else arm.label for arm in protocol.arms]),
        "system": protocol.id_system,
        "key": protocol.nct_id,
        "name": machine_name(protocol.label),
        "identifiers": _identifiers(protocol),
        "title": protocol.title,
        "label": protocol.acronym,
        "status": status,
        "progress": {"coding": [{"system": "http://hl7.org/fhir/research-study-status", "code": status["progress"][0],
                                 "display": status["progress"][1]}]} if status.get("progress") else None,
        "why_stopped": {"text": protocol.why_stopped} if protocol.why_stopped else None,
        "purpose": _purpose(protocol),
        "phase": phase,
        "design": _design(protocol),
        "design_text": design_text,
        "conditions": _conditions(protocol),
        "keywords": [{"text": k} for k in protocol.keywords],
        "description": protocol.summary,
        "countries": [{"text": c} for c in countries],
        "period": {"start": protocol.start, "end": protocol.end},
        "contained": contained,
        "sponsor": {"reference": sponsor["reference"], "display": sponsor["party"].name} if sponsor else None,
        "investigator": {"reference": investigator["reference"], "display": investigator["party"].name}
        if investigator else None,
        "parties": [{"name": r["party"].name, "role": r["party"].role, "reference": r["reference"]}
                    for r in refs["parties"]],
        "collaborators_note": f"Collaborators: {'; '.join(collaborators)}" if collaborators else None,
        "sites": refs["sites"],
        "arms": _arms(protocol),
        "enrollment": protocol.enrollment,
        "enrollment_actual": protocol.enrollment_type == "ACTUAL",
        "has_plan": plan,
        "has_group": group,
        "parent": {"system": parent.id_system, "key": parent.nct_id, "label": parent.label} if parent else None,
        "evidence_ref": f"EvidenceVariable/{evidence['id']}" if evidence else None,
        "related": _artifacts(protocol, evidence.get("url") if evidence else None, fhir_version),
    }
    return context, warnings


def group_context(protocol: Protocol, evidence: dict[str, Any] | None) -> dict[str, Any] | None:
    """The enrolment Group (R4): target size, age and sex limits, and the link to the eligibility criteria."""
    low, high = protocol.minimum_age, protocol.maximum_age
    sex = (protocol.sex or "ALL").upper()
    if not (evidence or low or high or protocol.enrollment is not None or sex in ("FEMALE", "MALE")):
        return None
    characteristics: list[dict[str, Any]] = []
    if low or high:
        characteristics.append({"text": "Age", "range": {"low": _age(low), "high": _age(high)}})
    if sex in ("FEMALE", "MALE"):
        characteristics.append({"text": "Sex", "concept": {"coding": [{
            "system": "http://hl7.org/fhir/administrative-gender", "code": sex.lower(), "display": sex.capitalize()}]}})
    if evidence:
        characteristics.append({"text": "Meets the trial's eligibility criteria", "reference": {
            "reference": f"EvidenceVariable/{evidence['id']}",
            "display": evidence.get("title") or evidence.get("name")}})
    return {
        "narrative": narrative(f"Enrolment of {protocol.label} ({protocol.nct_id})",
                               f"Target size {protocol.enrollment}" if protocol.enrollment is not None else None,
                               items=[c["text"] for c in characteristics]),
        "system": protocol.id_system,
        "key": protocol.nct_id,
        "identifier": {"system": protocol.id_system, "value": protocol.nct_id},
        "name": f"Enrolment of {protocol.label}",
        "quantity": protocol.enrollment,
        "characteristics": [{"range": None, "concept": None, "reference": None, **c} for c in characteristics],
    }


def _age(age: Age | None) -> dict[str, Any] | None:
    if age is None:
        return None
    value = int(age.value) if age.value == age.value.to_integral_value() else float(age.value)
    return quantity(value, age.unit, UCUM_DURATIONS[age.unit])


def _arm_condition(arm: Arm, link_id: str, fhir_version: str) -> dict[str, Any]:
    label = arm.label.replace("\\", "\\\\").replace("'", "\\'")
    expression = (f"%subject.assignedArm = '{label}'" if fhir_version == "R4"
                  else f"%subject.assignedComparisonGroup = '{link_id}'")
    return {"kind": "applicability", "expression": {"language": "text/fhirpath",
                                                    "description": f"Participant is in arm '{arm.label}'",
                                                    "expression": expression}}


def _procedure(name: str) -> dict[str, Any]:
    return codeable(tables()["procedures"][name])


def _step_code(step: str) -> dict[str, Any]:
    return _procedure("msc-administration" if step == "msc" else "placebo-administration")


def _activity_key(protocol: Protocol, step: str) -> str:
    """The business key of a step's ActivityDefinition; its canonical URL is ACTIVITY_CANONICAL + key."""
    return f"{protocol.nct_id}-{step}"


def _route(iv: Intervention) -> str | None:
    """The route in words (lower case), for titles and descriptions."""
    return terminology.concept(iv.route).display.lower() if iv.route else None


def _product(iv: Intervention, step: str) -> str:
    return (iv.product or "Mesenchymal stem cells") if step == "msc" else (iv.placebo or "Placebo")


def _step_text(step: str, protocol: Protocol) -> tuple[str, str]:
    iv = protocol.intervention
    what, route = _product(iv, step), _route(iv)
    if step == "msc":
        return what, ", ".join(p for p in (what, iv.dose, route) if p)
    return f"Placebo ({what.lower()})", ", ".join(p for p in (what, route) if p)


def activity_context(protocol: Protocol, step: str) -> dict[str, Any]:
    """An ActivityDefinition for a step of the arm sequences (`msc` or `placebo`): product, route, dose."""
    iv = protocol.intervention
    title, description = _step_text(step, protocol)
    key = _activity_key(protocol, step)
    return {
        "narrative": narrative(f"{protocol.label} ({protocol.nct_id}): {title}", description),
        "system": protocol.id_system,
        "key": key,
        "url": ACTIVITY_CANONICAL + key,
        "identifier": {"system": protocol.id_system, "value": protocol.nct_id},
        "name": machine_name(f"{protocol.label} {step}"),
        "title": f"{protocol.label}: {title}",
        "description": description,
        "code": _step_code(step),
        "product": _product(iv, step),
        "dose": iv.dose if step == "msc" else None,
        "route": terminology.codeable_concept(iv.route) if iv.route else None,
    }


def _action(id: str, title: str, description: str | None = None, code: dict[str, Any] | None = None,
            condition: dict[str, Any] | None = None, offset: Window | None = None, before: bool = False,
            actions: list[dict[str, Any]] | None = None, sort: float = 0, definition: str | None = None,
            ) -> dict[str, Any]:
    """One plan action's template values: offset from baseline (or before it), arm condition, sub-actions, and
    the ActivityDefinition it performs."""
    relationship = "before-start" if before else "after-start" if offset else None
    return {"id": id, "title": title, "description": description, "code": code, "condition": condition,
            "relationship": relationship, "offset": duration(offset) if offset else None, "actions": actions or [],
            "sort": sort, "definition": definition}


def plan_actions(protocol: Protocol, fhir_version: str) -> list[dict[str, Any]]:
    """The protocol as actions: aspirations, one action per period with a sub-action per arm (its condition
    explicit), follow-up visits with their assessments. Offsets are from the start of period 1 (baseline)."""
    schedule = protocol.schedule
    arms = list(enumerate(protocol.arms, 1))
    actions: list[dict[str, Any]] = []
    periods = schedule.periods or ((Window(0, "wk"),) if arms else ())
    for number, offset in enumerate(periods, 1):
        steps = []
        for i, arm in arms:
            condition = _arm_condition(arm, f"arm-{i}", fhir_version)
            definition = None
            if arm.sequence:
                step = arm.sequence[number - 1]
                title, description = _step_text(step, protocol)
                code = _step_code(step)
                definition = ACTIVITY_CANONICAL + _activity_key(protocol, step)
            else:
                title = f"Interventions of arm '{arm.label}'"
                description = "; ".join(arm.interventions) or arm.description
                code = None
            steps.append(_action(f"period-{number}-arm-{i}", f"{arm.label}: {title}", description, code, condition,
                                 definition=definition))
        crossover = number > 1 and any(arm.sequence for _, arm in arms)
        when = "baseline" if number == 1 else f"{offset.value} {UCUM_DURATIONS[offset.unit]}"
        actions.append(_action(
            f"period-{number}", f"Period {number} ({when})" + (": crossover, treatments reversed" if crossover else ""),
            "Randomised, blinded administration" if protocol.allocation == "RANDOMIZED" else None,
            offset=None if number == 1 else offset, actions=steps, sort=_weeks(offset)))
    for i, aspiration in enumerate(schedule.aspirations, 1):
        actions.append(_action(f"aspiration-{i}", "Bone-marrow aspiration", aspiration.text,
                               _procedure("bone-marrow-aspiration"), offset=aspiration.at,
                               before=aspiration.at is None, sort=_weeks(aspiration.at) if aspiration.at else -1))
    for offset in schedule.follow_up:
        label = f"{offset.value} {UCUM_DURATIONS[offset.unit]}"
        key = f"follow-up-{offset.value}{offset.unit}"
        assessments = [_action(f"{key}-{name}", _procedure(name)["text"], code=_procedure(name))
                       for name in schedule.assessments]
        actions.append(_action(key, f"Follow-up visit at {label}", f"Assessments {label} after baseline",
                               offset=offset, actions=assessments, sort=_weeks(offset) + 0.5))
    actions.sort(key=lambda a: a["sort"])
    return actions


def _weeks(window: Window) -> float:
    per_week = {"d": 1 / 7, "wk": 1, "mo": 52 / 12, "a": 52, "h": 1 / 168, "min": 1 / 10080}
    return window.value * per_week[window.unit]


def plan_context(protocol: Protocol, fhir_version: str) -> dict[str, Any] | None:
    actions = plan_actions(protocol, fhir_version)
    if not actions:
        return None
    iv = protocol.intervention
    summary = "; ".join(p for p in (
        f"{len(protocol.schedule.periods)}-period crossover" if len(protocol.schedule.periods) > 1 else None,
        iv.product, iv.dose, _route(iv)) if p)
    return {
        "narrative": narrative(f"Protocol of {protocol.label} ({protocol.nct_id})", summary or None,
                               items=[a["title"] + (f": {a['description']}" if a["description"] else "")
                                      for a in actions]),
        "system": protocol.id_system,
        "key": protocol.nct_id,
        "identifier": {"system": protocol.id_system, "value": protocol.nct_id},
        "name": "Protocol" + machine_name(protocol.label),
        "title": f"Protocol of {protocol.label}: schedule of administrations and assessments",
        "description": summary or None,
        "baseline": "period-1",
        "actions": actions,
    }


def render_resources(protocol: Protocol, fhir_version: str, evidence: dict[str, Any] | None,
                     parent: Protocol | None) -> tuple[list[dict[str, Any]], list[str]]:
    """ResearchStudy, PlanDefinition (when the protocol has steps) and the R4 enrolment Group."""
    resources = []
    plan = plan_context(protocol, fhir_version)
    group = group_context(protocol, evidence) if fhir_version == "R4" else None
    study, warnings = study_context(protocol, fhir_version, plan=plan is not None, group=group is not None,
                                    evidence=evidence, parent=parent)
    resources.append(render("ResearchStudy.json.j2", fhir_version, study=study))
    if plan:
        resources.append(render("PlanDefinition.json.j2", fhir_version, plan=plan))
        steps = dict.fromkeys(step for arm in protocol.arms for step in arm.sequence)
        resources.extend(render("ActivityDefinition.json.j2", fhir_version, activity=activity_context(protocol, step))
                         for step in steps)
    if group:
        resources.append(render("Group.json.j2", fhir_version, group=group))
    return resources, warnings
