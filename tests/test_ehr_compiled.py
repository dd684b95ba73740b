"""Compiled templates and per-variant validation: the fast path of `patients map` gives exactly what the plain
Jinja2 render and the plain fhir.resources validation give."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import jinja2
import pytest

from fhir_adapter import render
from fhir_adapter.ehr.checking import FilledCheck
from fhir_adapter.ehr.cohort import cohort_records
from fhir_adapter.ehr.compiled import CompiledTemplate
from fhir_adapter.ehr.mapping import FhirMapper
from fhir_adapter.ehr.model import TABLES, EdssAssessment, LabResult, MriExam
from fhir_adapter.validation.structure import structure_issues

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def all_facts(patients: int, seed: int):
    for record in cohort_records(patients, seed=seed, reference_date=dt.date(2026, 6, 30)):
        for table in TABLES:
            yield from ((table, fact) for fact in ([record.patient] if table == "patients" else getattr(record, table)))


EDGES = [  # values a trace must not take for open ones: zeros, empty functional systems, odd numbers
    ("edss", EdssAssessment("E0", "M1", "2024-01-01", 0.0)),
    ("edss", EdssAssessment("E1", "M1", "2024-01-02", 1.0, (("kfss-visual", 0), ("kfss-pyramidal", 3)))),
    ("mri", MriExam("I0", "M1", "2024-01-01", 0, 0, 0.0)),
    ("mri", MriExam("I1", "M1", "2024-01-01", 1, None, 1e-7)),
    ("labs", LabResult("L0", "M1", "2024-01-01", "hiv", result="negative")),
    ("labs", LabResult("L1", "M1", "2024-01-01", "egfr", 0.0, "mL/min/{1.73_m2}", "mL/min/1.73m2")),
]


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_compiled_text_is_the_plain_render_serialised(version):
    mapper = FhirMapper(version, "urn:mrn", "https://example.org/rows")
    made = 0
    for table, fact in [*all_facts(300, 4), *EDGES]:
        compiled = [(rtype, text) for rtype, text, _ in mapper.texts(table, fact)]
        plain = [(r["resourceType"], _dumps(r)) for r in mapper.resources(table, fact)]
        assert compiled == plain, (table, fact)
        made += len(compiled)
    traced = {name: len(c.variants) for name, c in mapper._compiled.items()}
    assert made > 3000 and sum(traced.values()) < made / 10, traced   # a few variants serve many rows
    assert all(v is not None for c in mapper._compiled.values() for v in c.variants.values())


@dataclasses.dataclass
class Row:
    code: str
    note: str | None = None


def test_a_template_that_does_more_than_pass_open_values_falls_back_to_the_plain_render():
    env = jinja2.Environment(loader=jinja2.DictLoader({
        "concat": '{"a": {{ ("x-" ~ row.code) | json }}}',
        "compare": '{"a": {{ ("yes" if row.code == "ab" else "no") | json }}}',
        "slice": '{"a": {{ row.code[:1] | json }}}',
        "inside": '{"a": "pre-{{ row.code }}"}',
        "method": '{"a": {{ row.code.strip() | json }}}',
        "nested": '{"a": {{ [row.code] | first | json }}}',
        "empty": '{"a": {{ row.code | trim | json }}, "b": 1}',
    }))
    env.filters.update(json=render.to_json)
    for name in ("concat", "compare", "slice", "inside", "method", "nested"):
        compiled = CompiledTemplate(env, name, frozenset({"code"}))
        assert compiled.text({"row": Row("ab")}) is None, name
        assert list(compiled.variants.values()) == [None], name
    empty = CompiledTemplate(env, "empty", frozenset({"code"}))
    assert empty.text({"row": Row("ab")}) == '{"a":"ab","b":1}'
    assert empty.text({"row": Row("  ")}) is None      # would be pruned: the plain render decides


BAD_SLOTS = ['"2024-13-01"', '"2024-02-30"', '"2024"', '"2024-05-01T10:00:00"', '""', '" "', '"a b"', '" x"',
             '"' + "a" * 65 + '"', '"Patient/1"', '1', '0', '-3', '1.5', '1e3', 'true', 'null', '"4.5"',
             '{"value":"abc"}', '{"value":1}', '{}', '["x"]', '"line\\nx"', '99999999999999999999', '"ok-id.1"']


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_per_variant_validation_agrees_with_plain_validation(version):
    """Every slot of every variant, given values of every kind, valid or not: same issues as fhir.resources
    validating the whole resource."""
    mapper = FhirMapper(version, "urn:mrn", "https://example.org/rows")
    variants = {}
    for table, fact in [*all_facts(60, 5), *EDGES]:
        for template, context in mapper._map[table](fact):
            variant, slots = mapper._compiled[template].fill(context)
            variants.setdefault((template, len(slots)), (variant, slots))   # each template, each set of slots
    fast = 0
    for variant, slots in variants.values():
        check = FilledCheck(version)
        assert check.issues(variant, slots, variant.join(slots)) == []
        assert check._variants[variant] is not None        # the slots were found: later checks are per slot
        for i in range(len(slots)):
            for bad in BAD_SLOTS:
                changed = [*slots[:i], bad, *slots[i + 1:]]
                text = variant.join(changed)
                assert check.issues(variant, changed, text) == structure_issues(json.loads(text), version), (i, bad)
                fast += 1
    assert len(variants) >= 12 and fast > 1000
