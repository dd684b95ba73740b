"""Facts of the patient record to FHIR resources, through the templates in `templates/r4|r5/`.

`resources` renders a row's fact with Jinja2, parsing and pruning the JSON as `fhir_adapter.render.render`
does; `texts` gives the same resources as compact JSON text through the compiled templates (`compiled`,
the hot path of `patients map`), validated per variant when given a `FilledCheck`.

>>> from .model import EdssAssessment
>>> mapper = FhirMapper("R4", "urn:mrn", "urn:rows")
>>> obs = mapper.resources("edss", EdssAssessment("E1", "M1", "2024-05-02", 4.5))[0]
>>> obs["code"]["coding"][0]["code"], obs["valueQuantity"]["value"], obs["subject"]["reference"][:8]
('273554001', 4.5, 'Patient/')
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .. import render
from ..validation.structure import Issue
from .checking import FilledCheck
from .columns import ColumnMap
from .compiled import CompiledTemplate, compact_json
from .model import Fact, MriExam, PatientRecord, StatusFact

Resource = dict[str, Any]

#: MRI measures: (attribute of MriExam, lesion concept, value slot).
MRI_MEASURES = (
    ("gd_lesions", "gd-enhancing-lesion-count", "count"),
    ("new_t2_lesions", "new-or-enlarging-t2-lesion-count", "count"),
    ("t2_volume_ml", "t2-lesion-volume", "volume_ml"),
)
#: The resource types a table's rows become (the NDJSON files `patients map` writes).
RESOURCE_TYPES = ("Patient", "Condition", "Observation", "MedicationStatement")
#: Context names and fact attributes that vary row by row (identifiers, dates, measurements; the grades among
#: the functional systems): left open in the compiled templates. Concepts, units and flags are closed: they
#: pick the compiled variant (see `compiled`).
OPEN_VALUES = frozenset({"row_id", "mrn", "identifier", "birth_date", "date", "onset", "recorded", "abated",
                         "start", "end", "score", "gd_lesions", "new_t2_lesions", "t2_volume_ml", "count",
                         "volume_ml", "value", "functional_systems"})
TEMPLATES = ("Patient", "Condition", "Observation-edss", "Observation-relapse", "Observation-mri", "Observation-lab",
             "Observation-pregnancy", "Observation-lactation", "MedicationStatement")
#: The resource type each template makes.
TEMPLATE_TYPES = {name: name.split("-")[0] for name in TEMPLATES}

Rendering = tuple[str, dict[str, Any]]   # (template, context)


class FhirMapper:
    """Renders facts of one extract (its identifier systems) as FHIR resources of one version."""

    def __init__(self, fhir_version: str, mrn_system: str, rows_base: str) -> None:
        self.fhir_version = render.check_version(fhir_version)
        self.mrn_system = mrn_system
        self.rows_base = rows_base.rstrip("/")
        env = render.environment(self.fhir_version)
        self._templates = {name: env.get_template(f"{name}.json.j2") for name in TEMPLATES}
        self._compiled = {name: CompiledTemplate(env, f"{name}.json.j2", OPEN_VALUES) for name in TEMPLATES}
        self._map: dict[str, Callable[[Any], list[Rendering]]] = {
            "patients": self._one("Patient", "patient"),
            "diagnoses": self._one("Condition", "diagnosis"),
            "edss": self._one("Observation-edss", "edss"),
            "relapses": self._one("Observation-relapse", "relapse"),
            "mri": self._mri,
            "labs": self._one("Observation-lab", "lab"),
            "medications": self._one("MedicationStatement", "medication"),
            "status": self._status,
        }
        self._systems = {table: f"{self.rows_base}/{table}" for table in self._map}

    @classmethod
    def for_map(cls, fhir_version: str, cmap: ColumnMap) -> FhirMapper:
        return cls(fhir_version, cmap.mrn_system, cmap.rows_base)

    def resources(self, table: str, fact: Fact) -> list[Resource]:
        """The resources one row's fact becomes (rendered by Jinja2, parsed and pruned)."""
        return [self._render(template, context) for template, context in self._map[table](fact)]

    def texts(self, table: str, fact: Fact, check: FilledCheck | None = None) -> list[tuple[str, str, list[Issue]]]:
        """(resource type, compact JSON, validation issues) of the resources one row's fact becomes: the same
        text as serialising `resources`, made by the compiled templates (the hot path of `patients map`).
        Issues come from `check` (none when it is None)."""
        out = []
        for template, context in self._map[table](fact):
            filled = self._compiled[template].fill(context)
            if filled is not None:
                variant, slots = filled
                text = variant.join(slots)
                issues = check.issues(variant, slots, text) if check else []
            else:
                resource = self._render(template, context)
                text = compact_json(resource)
                issues = check.full.issues(resource) if check else []
            out.append((TEMPLATE_TYPES[template], text, issues))
        return out

    def record(self, record: PatientRecord) -> list[Resource]:
        """Every resource of one patient record, the Patient first."""
        out = self.resources("patients", record.patient)
        for table in ("diagnoses", "edss", "relapses", "mri", "labs", "medications", "status"):
            for fact in getattr(record, table):
                out.extend(self.resources(table, fact))
        return out

    def _render(self, template: str, context: dict[str, Any]) -> Resource:
        compiled = self._templates[template]
        text = "".join(compiled.root_render_func(compiled.new_context(context, shared=True)))
        try:
            return render.prune(json.loads(text))
        except json.JSONDecodeError as exc:  # a template bug, not bad input
            raise ValueError(f"template {template} ({self.fhir_version}) rendered invalid JSON at line "
                             f"{exc.lineno}: {exc.msg}") from exc

    def _one(self, template: str, name: str) -> Callable[[Any], list[Rendering]]:
        table = {"Patient": "patients", "Condition": "diagnoses", "Observation-edss": "edss",
                 "Observation-relapse": "relapses", "Observation-lab": "labs",
                 "MedicationStatement": "medications"}[template]

        def one(fact: Any) -> list[Rendering]:
            return [(template, {"system": self._systems[table], name: fact, "mrn_system": self.mrn_system})]

        return one

    def _mri(self, exam: MriExam) -> list[Rendering]:
        out = []
        for attribute, concept, slot in MRI_MEASURES:
            value = getattr(exam, attribute)
            if value is not None:
                values = {"count": None, "volume_ml": None, slot: value}
                out.append(("Observation-mri", {"system": self._systems["mri"], "exam": exam, "measure": concept,
                                                "identifier": f"{exam.row_id}/{concept}", **values,
                                                "mrn_system": self.mrn_system}))
        return out

    def _status(self, status: StatusFact) -> list[Rendering]:
        return [(f"Observation-{status.fact}", {"system": self._systems["status"], "status": status,
                                                "mrn_system": self.mrn_system})]
