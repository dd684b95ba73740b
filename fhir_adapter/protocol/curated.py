"""Curated protocol facts (`mappings/trials/<id>.yaml`) merged over a registry record.

The YAML holds what a registry record does not: the crossover schedule, route and dose, bone-marrow
aspiration, arm sequences, EudraCT numbers, the umbrella study (`part_of`), and the computable `criteria:`.
A curated value replaces the registry's; a curated protocol with no registry record (the MESEMS umbrella)
is complete on its own. A key the loader does not know, or a value of the wrong shape, is an `InputError`
naming the file and the key.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from ..criteria import Criterion, CriterionError, Window
from ..paths import MAPPINGS
from ..sources import InputError
from .model import (
    CTGOV,
    PROTOCOL_SYSTEM,
    Arm,
    Aspiration,
    Citation,
    Identifier,
    Intervention,
    Party,
    Protocol,
    Schedule,
    Site,
    eudract_identifier,
    fhir_date,
)

TRIALS_DIR = MAPPINGS / "trials"

#: Keys of a curated file: the study-level facts (this module) and the criteria (fhir_adapter.criteria).
KEYS = {"nct_id", "acronym", "title", "official_title", "registry", "part_of", "eudract", "identifiers", "status",
        "start", "end", "study_type", "phases", "design", "conditions", "summary", "parties", "sites",
        "enrollment", "citations", "members", "intervention", "schedule", "arms", "criteria"}
SEQUENCE_STEPS = ("msc", "placebo")


def curated_path(nct_id: str) -> Path:
    return TRIALS_DIR / f"{nct_id}.yaml"


def read_curated(path: str | Path) -> dict[str, Any]:
    """The curated YAML of one protocol as a mapping, with clear errors for bad YAML or unknown keys."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise InputError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of protocol facts, got {type(data).__name__}")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys are {', '.join(sorted(KEYS))}")
    return data


class _Fields:
    """Typed access to one curated file's keys; every error names the file and the key."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, message: str) -> InputError:
        return InputError(f"{self.where}: {key}: {message}")

    def text(self, value: Any, key: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise self.fail(key, f"expected text, got {type(value).__name__}")
        return str(value).strip() or None

    def texts(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {type(value).__name__}")
        return tuple(t for i, v in enumerate(value) if (t := self.text(v, f"{key}[{i}]")))

    def mapping(self, value: Any, key: str, known: tuple[str, ...] | None = None) -> dict[str, Any]:
        """A mapping (None: empty); with `known`, any other key is an error."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - set(known)) if known is not None else []
        if unknown:
            raise self.fail(key, f"unknown key(s) {', '.join(unknown)}")
        return value

    def objects(self, value: Any, key: str, required: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {type(value).__name__}")
        out = []
        for i, item in enumerate(value):
            where = f"{key}[{i}]"
            item = self.mapping(item, where)
            missing = [name for name in required if not item.get(name)]
            if missing:
                raise self.fail(where, f"missing {', '.join(missing)}")
            out.append((where, item))
        return out

    def window(self, value: Any, key: str) -> Window:
        try:
            return Window.parse(str(value))
        except CriterionError as exc:
            raise self.fail(key, str(exc)) from None

    def date(self, value: Any, key: str) -> str | None:
        text = self.text(value, key)
        if text and not fhir_date(text):
            raise self.fail(key, f"{text!r} is not a date (YYYY, YYYY-MM or YYYY-MM-DD)")
        return text


def _schedule(f: _Fields, data: dict[str, Any]) -> Schedule:
    from .ctgov import tables
    periods = tuple(f.window(v, f"schedule.periods[{i}]") for i, v in enumerate(f.texts(data.get("periods"),
                                                                                         "schedule.periods")))
    aspirations = tuple(Aspiration(str(item["text"]), f.window(item["at"], f"{where}.at") if item.get("at") else None)
                        for where, item in f.objects(data.get("aspirations"), "schedule.aspirations", ("text",)))
    follow_up = tuple(f.window(v, f"schedule.follow_up[{i}]")
                      for i, v in enumerate(f.texts(data.get("follow_up"), "schedule.follow_up")))
    assessments = f.texts(data.get("assessments"), "schedule.assessments")
    unknown = [a for a in assessments if a not in tables()["procedures"]]
    if unknown:
        raise f.fail("schedule.assessments", f"unknown assessment(s) {unknown}: use names of 'procedures' in "
                                             f"mappings/ctgov.yaml")
    return Schedule(periods, aspirations, follow_up, assessments)


def _arms(f: _Fields, value: Any, registry: tuple[Arm, ...], periods: int) -> tuple[tuple[Arm, ...], list[str]]:
    """Curated arms (each may inherit a registry arm by `from_registry`) and warnings for registry arms left out."""
    by_label = {arm.label: arm for arm in registry}
    arms, used = [], set()
    for where, item in f.objects(value, "arms", ("label",)):
        base_label = f.text(item.get("from_registry"), f"{where}.from_registry") or str(item["label"])
        base = by_label.get(base_label)
        if item.get("from_registry") and base is None:
            raise f.fail(f"{where}.from_registry", f"no registry arm is labelled {base_label!r}; registry arms: "
                                                   f"{', '.join(by_label) or 'none'}")
        used.add(base_label)
        sequence = f.texts(item.get("sequence"), f"{where}.sequence")
        bad = [s for s in sequence if s not in SEQUENCE_STEPS]
        if bad or (sequence and periods and len(sequence) != periods):
            raise f.fail(f"{where}.sequence", f"expected one of {', '.join(SEQUENCE_STEPS)} per period "
                                              f"({periods} periods), got {list(sequence)}")
        arms.append(Arm(label=str(item["label"]),
                        type=f.text(item.get("type"), f"{where}.type") or (base.type if base else None),
                        description=f.text(item.get("description"), f"{where}.description")
                        or (base.description if base else None),
                        interventions=base.interventions if base else (), sequence=sequence))
    left_out = [f"{f.where}: arms: registry arm {arm.label!r} is not used by the curated arms"
                for arm in registry if arm.label not in used]
    return tuple(arms), left_out


def merge(protocol: Protocol | None, data: dict[str, Any], where: str) -> Protocol:
    """The registry protocol (or None) with the curated facts of `data` applied; criteria read last."""
    f = _Fields(where)
    nct = f.text(data.get("nct_id"), "nct_id")
    if protocol is None:
        if not nct or not f.text(data.get("title"), "title"):
            raise f.fail("nct_id" if not nct else "title", "a curated protocol without a registry record needs "
                                                           "nct_id and title")
        system = {"ctgov": CTGOV, "protocol": PROTOCOL_SYSTEM}.get(str(data.get("registry", "ctgov")))
        if system is None:
            raise f.fail("registry", f"expected ctgov or protocol, got {data.get('registry')!r}")
        protocol = Protocol(nct_id=nct, title=str(data["title"]), id_system=system)
    elif nct and nct != protocol.nct_id:
        raise f.fail("nct_id", f"{nct} does not match the registry record {protocol.nct_id}")
    changes: dict[str, Any] = {"sources": (*protocol.sources, where)}
    for key in ("acronym", "title", "official_title", "part_of", "status", "study_type", "summary"):
        if (value := f.text(data.get(key), key)) is not None:
            changes[key] = value
    if "status" in changes or protocol.status_field is None:
        changes["status_field"] = f"{where}: status"
    for key in ("start", "end"):
        if (value := f.date(data.get(key), key)) is not None:
            changes[key] = value
    if "phases" in data:
        changes["phases"] = f.texts(data["phases"], "phases")
    design = f.mapping(data.get("design"), "design")
    for key in ("allocation", "model", "masking", "purpose"):
        if (value := f.text(design.get(key), f"design.{key}")) is not None:
            changes[key] = value
    if "conditions" in data:
        from .. import terminology
        concepts = f.texts(data["conditions"], "conditions")
        for i, name in enumerate(concepts):
            try:
                terminology.concept(name)
            except KeyError as exc:
                raise f.fail(f"conditions[{i}]", str(exc.args[0])) from None
        changes["condition_concepts"] = concepts
    identifiers = list(protocol.identifiers)
    for value in f.texts(data.get("eudract"), "eudract"):
        if not any(x.value == value for x in identifiers):
            identifiers.append(eudract_identifier(value))
    for where_, item in f.objects(data.get("identifiers"), "identifiers", ("value", "kind")):
        identifiers.append(Identifier(str(item["value"]), str(item["kind"]),
                                      f.text(item.get("system"), f"{where_}.system"),
                                      f.text(item.get("assigner"), f"{where_}.assigner")))
    changes["identifiers"] = tuple(identifiers)
    if "parties" in data:
        changes["parties"] = tuple(Party(str(p["name"]), str(p["role"]), f.text(p.get("affiliation"), w))
                                   for w, p in f.objects(data["parties"], "parties", ("name", "role")))
    if "sites" in data:
        changes["sites"] = tuple(Site(str(s["facility"]), f.text(s.get("city"), w), f.text(s.get("state"), w),
                                      f.text(s.get("country"), w), f.text(s.get("status"), w))
                                 for w, s in f.objects(data["sites"], "sites", ("facility",)))
    if "citations" in data:
        changes["citations"] = tuple(Citation(str(c["text"]), f.text(c.get("pmid"), w), f.text(c.get("doi"), w),
                                              f.text(c.get("type"), w))
                                     for w, c in f.objects(data["citations"], "citations", ("text",)))
    if "enrollment" in data:
        count = data["enrollment"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise f.fail("enrollment", f"expected a whole number, got {count!r}")
        changes["enrollment"] = count
    intervention = f.mapping(data.get("intervention"), "intervention", ("product", "placebo", "route", "dose"))
    if intervention:
        changes["intervention"] = Intervention(**{k: f.text(v, f"intervention.{k}") for k, v in intervention.items()})
    schedule = f.mapping(data.get("schedule"), "schedule", ("periods", "aspirations", "follow_up", "assessments"))
    if schedule:
        changes["schedule"] = _schedule(f, schedule)
    warnings = list(protocol.warnings)
    if "arms" in data:
        periods = len(changes.get("schedule", protocol.schedule).periods)
        changes["arms"], left_out = _arms(f, data["arms"], protocol.arms, periods)
        warnings.extend(left_out)
    if "members" in data:
        members = tuple(Citation(str(m["text"]), type="composed-of", url=f.text(m.get("url"), w))
                        for w, m in f.objects(data["members"], "members", ("text",)))
        changes["citations"] = (*changes.get("citations", protocol.citations), *members)
    criteria = data.get("criteria")
    if criteria is not None:
        if not isinstance(criteria, list):
            raise f.fail("criteria", f"expected a list, got {type(criteria).__name__}")
        try:
            changes["criteria"] = tuple(Criterion.from_dict(c) for c in criteria)
        except (CriterionError, TypeError, AttributeError) as exc:
            raise f.fail("criteria", str(exc)) from None
    changes["warnings"] = tuple(warnings)
    return replace(protocol, **changes)
