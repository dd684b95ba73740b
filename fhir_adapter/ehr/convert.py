"""One extract row (a list of cells) to one fact of the patient record, or a `RowError`.

A `RowConverter` is built once per table from the column map and the file's header; it then turns rows
into facts, checking each value (types, units, ranges, dates not after the extract date) and raising a
`RowError` that names the source column and the reason.

>>> from .columns import load_column_map
>>> conv = RowConverter("edss", load_column_map(), ["edss_id", "mrn", "date", "score"], extracted_on="2025-01-01")
>>> conv.convert(["E1", "M1", "2024-05-02", "3.5"])
EdssAssessment(row_id='E1', mrn='M1', date='2024-05-02', score=3.5, functional_systems=())
>>> conv.convert(["E2", "M1", "2024-05-02", "3.3"])
Traceback (most recent call last):
...
fhir_adapter.ehr.convert.RowError: column 'score': EDSS 3.3 is not on the scale (0, or 1.0 to 10.0 in steps of 0.5)
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from .. import terminology
from ..paths import MAPPINGS
from .columns import Column, ColumnMap, ColumnMapError, normalise
from .model import (
    EDSS_STEPS,
    FUNCTIONAL_SYSTEMS,
    TABLES,
    Diagnosis,
    EdssAssessment,
    Field,
    LabResult,
    Medication,
    MriExam,
    Patient,
    Relapse,
    StatusFact,
)

LAB_CATALOG = MAPPINGS / "ehr" / "catalog" / "labs.yaml"
EARLIEST = "1900-01-01"
YES = frozenset({"yes", "y", "true", "1", "ja", "j", "oui", "si", "sí"})
NO = frozenset({"no", "n", "false", "0", "nein", "non"})


class RowError(ValueError):
    """A row that cannot be converted: the source column (None for the whole row) and the reason."""

    def __init__(self, column: str | None, reason: str) -> None:
        super().__init__(f"column {column!r}: {reason}" if column else reason)
        self.column = column
        self.reason = reason


class _FieldError(ValueError):
    """A value error of one field; the converter adds the source column."""


# --- the lab catalogue -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabTest:
    concept: str
    result: str                                      # quantity / qualitative
    ucum: str | None = None
    unit: str | None = None
    accept: dict[str, float] | None = None           # normalised unit spelling -> factor to ucum
    low: float | None = None
    high: float | None = None


def unit_key(text: str) -> str:
    """Unit spellings compare without spaces and case, µ as u, ² as 2."""
    return "".join(text.split()).casefold().replace("µ", "u").replace("μ", "u").replace("²", "2")


@cache
def lab_catalog() -> tuple[dict[str, LabTest], dict[str, str]]:
    """The lab tests (`mappings/ehr/catalog/labs.yaml`) and the qualitative result spellings."""
    data = yaml.safe_load(LAB_CATALOG.read_text(encoding="utf-8"))
    results = {normalise(str(s)): name for name, spellings in data["results"].items() for s in spellings}
    tests = {}
    for name, spec in data["tests"].items():
        terminology.concept(name)  # every test is a concept with codes
        if spec["result"] == "quantity":
            accept = {unit_key(str(u)): float(f) for u, f in spec["accept"].items()}
            low, high = spec.get("range", [None, None])
            tests[name] = LabTest(name, "quantity", spec["unit"]["code"], spec["unit"]["display"], accept, low, high)
        else:
            tests[name] = LabTest(name, "qualitative")
    return tests, results


# --- values ------------------------------------------------------------------------------------------

def _iso_date(text: str) -> str | None:
    """`YYYY-MM-DD` checked as a calendar date, or None if the text is not in that form."""
    if len(text) == 10 and text[4] == "-" and text[7] == "-" and text[:4].isdigit() and text[5:7].isdigit() \
            and text[8:].isdigit():
        try:
            dt.date.fromisoformat(text)         # also refuses digits other than 0-9, which isdigit() takes
        except ValueError:
            raise _FieldError(f"{text!r} is not a calendar date") from None
        return text
    return None


def _partial(text: str) -> str | None:
    """`YYYY` or `YYYY-MM`, or None."""
    if not text.isascii():                  # isdigit() takes other scripts' digits; FHIR dates are 0-9
        return None
    if len(text) == 4 and text.isdigit():
        return text
    if len(text) == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit() and 1 <= int(text[5:]) <= 12:
        return text
    return None


def date_parser(formats: tuple[str, ...], partial: bool, latest: str) -> Callable[[str], str]:
    """A parser of dates in the map's formats to FHIR dates, refusing dates after `latest` or before 1900."""
    iso_only = formats == ("%Y-%m-%d",)
    shown = tuple(f.replace("%Y", "YYYY").replace("%m", "MM").replace("%d", "DD") for f in formats)
    wanted = " or ".join(shown + (("YYYY-MM", "YYYY") if partial else ()))

    def parse(text: str) -> str:
        value = _iso_date(text) if iso_only or text[:4].isdigit() else None
        if value is None and partial:
            value = _partial(text)
        if value is None and not iso_only:
            for fmt in formats:
                try:
                    value = dt.datetime.strptime(text, fmt).date().isoformat()
                    break
                except ValueError:
                    continue
        if value is None:
            raise _FieldError(f"{text!r} is not a date ({wanted})")
        if value > latest:
            raise _FieldError(f"{value} is in the future (after the extract date {latest})")
        if value < EARLIEST[:len(value)]:
            raise _FieldError(f"{value} is before {EARLIEST[:4]}")
        return value

    return _remembered(parse, limit=65_536)     # a table's dates repeat: a few thousand days a decade


def number_parser(decimal: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        if decimal == ",":
            text = text.replace(".", "").replace(",", ".") if "," in text else text
        try:
            value = float(text)
        except ValueError:
            raise _FieldError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise _FieldError(f"{text!r} is not a finite number")
        return value

    return parse


def _integer(number: Callable[[str], float]) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = number(text)
        if value != int(value):
            raise _FieldError(f"{text!r} is not a whole number")
        if value < 0:
            raise _FieldError(f"{text!r} is negative")
        return int(value)

    return parse


def _remembered(parse: Callable[[str], str], limit: int = 4096) -> Callable[[str], str]:
    """`parse` with its answers remembered by exact text, up to `limit` of them: codes and dates repeat."""
    known: dict[str, str] = {}

    def remembered(text: str) -> str:
        found = known.get(text)
        if found is None:
            found = parse(text)                 # an unknown value raises, and is not remembered
            if len(known) < limit:
                known[text] = found
        return found

    return remembered


def _choice(column: Column, choices: tuple[str, ...], what: str) -> Callable[[str], str]:
    table = {normalise(c): c for c in choices}
    for alias, target in column.values.items():
        if target not in choices:
            raise ColumnMapError(f"values of column {column.column!r}: {target!r} is not one of {', '.join(choices)}")
        table[alias] = target

    def parse(text: str) -> str:
        found = table.get(normalise(text))
        if found is None:
            raise _FieldError(f"unknown {what} {text!r}; expected one of {', '.join(choices)} "
                              f"(or add an alias to the column map)")
        return found

    return _remembered(parse)


def _concept(column: Column, choices: tuple[str, ...], what: str) -> Callable[[str], str]:
    """Concept names, aliases, concept displays, or codes of the looked-up systems."""
    table = {normalise(c): c for c in choices}
    for name in choices:
        table.setdefault(normalise(terminology.concept(name).display), name)
    for alias, target in column.values.items():
        if target not in choices:
            raise ColumnMapError(f"values of column {column.column!r}: {target!r} is not a known {what}")
        table[alias] = target
    systems = column.lookup
    allowed = frozenset(choices)

    def parse(text: str) -> str:
        found = table.get(normalise(text))
        if found is None:
            code = text.strip()
            for system in systems:
                concept = terminology.concept_of(system, code)
                if concept is None and code.upper() != code:
                    concept = terminology.concept_of(system, code.upper())
                if concept in allowed:
                    found = concept
                    break
        if found is None:
            raise _FieldError(f"unknown {what} {text!r}: not a known name, alias"
                              + (" or code" if systems else "") + " (add an alias to the column map)")
        return found

    return _remembered(parse)


# --- rows --------------------------------------------------------------------------------------------

class RowConverter:
    """Rows of one table (cells in the file's column order) to facts."""

    def __init__(self, table: str, cmap: ColumnMap, header: list[str], extracted_on: str) -> None:
        self.table = TABLES[table]
        self.cmap = cmap
        tmap = cmap.table(table)
        index = {name.strip(): i for i, name in enumerate(header)}
        self.width = len(header)
        self.tests, self.results = lab_catalog()
        number = number_parser(cmap.decimal)
        self._number = number
        self.parsers: list[tuple[str, int, str, Callable[[str], Any] | None, str | None, bool]] = []
        missing = []
        for spec in self.table.fields:
            col = tmap.column(spec.name)
            where = index.get(col.column)
            if where is None:
                if spec.required and col.default is None:
                    missing.append(f"{col.column!r} (field {spec.name})")
                continue
            try:
                parser = self._parser(spec, col, number, extracted_on)
            except ColumnMapError as exc:
                raise ColumnMapError(f"{cmap.source}: tables.{table}: {exc}") from None
            self.parsers.append((spec.name, where, col.column, parser, col.default, spec.required))
        if missing:
            raise ColumnMapError(f"{tmap.file}: no column {', '.join(missing)} in the header; the column map "
                                 f"{cmap.source} (tables.{table}.columns) says where each field is")
        self.columns = {spec.name: tmap.column(spec.name).column for spec in self.table.fields}
        self.build = getattr(self, f"_build_{table}")

    def _parser(self, spec: Field, col: Column, number: Callable[[str], float],
                extracted_on: str) -> Callable[[str], Any] | None:
        kind = spec.kind
        if kind == "text":
            return None
        if kind in ("date", "partial-date"):
            return date_parser(self.cmap.dates, kind == "partial-date", extracted_on)
        if kind == "integer":
            return _integer(number)
        if kind in ("decimal", "edss-score"):
            scale = col.scale
            if scale is None:
                return number
            return lambda text: round(number(text) * scale, 9)
        if kind == "choice":
            return _choice(col, spec.choices, spec.name.replace("_", " "))
        if kind == "concept":
            choices = spec.choices or tuple(self.tests)
            return _concept(col, choices, {"test": "lab test", "drug": "drug"}.get(spec.name, spec.name))
        if kind == "yes-no":
            return _yes_no
        raise AssertionError(f"field kind {kind}")

    def convert(self, cells: list[str]) -> Any:
        """The fact of one row, or a RowError."""
        if len(cells) != self.width:
            raise RowError(None, f"the row has {len(cells)} cells, the header {self.width}")
        values: dict[str, Any] = {}
        for name, at, column, parser, default, required in self.parsers:
            text = cells[at].strip()
            if not text:
                if default is None:
                    if required:
                        raise RowError(column, f"missing {name.replace('_', ' ')}")
                    continue
                text = default
            if parser is None:
                values[name] = text
            else:
                try:
                    values[name] = parser(text)
                except _FieldError as exc:
                    raise RowError(column, str(exc)) from None
        return self.build(values)

    def _error(self, name: str, reason: str) -> RowError:
        return RowError(self.columns[name], reason)

    # one builder per table: cross-field rules, then the fact

    def _build_patients(self, v: dict[str, Any]) -> Patient:
        return Patient(v["mrn"], v["birth_date"], v["sex"])

    def _build_diagnoses(self, v: dict[str, Any]) -> Diagnosis:
        status, onset, recorded, end = v.get("status", "active"), v.get("onset_date"), v.get("diagnosis_date"), \
            v.get("end_date")
        if onset and recorded and onset[:len(recorded)] > recorded[:len(onset)]:
            raise self._error("onset_date", f"onset {onset} is after the diagnosis date {recorded}")
        if end and status == "active":
            raise self._error("end_date", "an end date needs status remission, resolved or inactive")
        if end and onset and end[:len(onset)] < onset[:len(end)]:
            raise self._error("end_date", f"end {end} is before the onset {onset}")
        return Diagnosis(v["diagnosis_id"], v["mrn"], v["diagnosis"], onset, recorded, status, end)

    def _build_edss(self, v: dict[str, Any]) -> EdssAssessment:
        score = v["score"]
        if score not in EDSS_STEPS:
            raise self._error("score", f"EDSS {score:g} is not on the scale (0, or 1.0 to 10.0 in steps of 0.5)")
        systems = []
        for name, concept, top in FUNCTIONAL_SYSTEMS:
            grade = v.get(name)
            if grade is not None:
                if grade > top:
                    raise self._error(name, f"functional system grade {grade} is above {top}")
                systems.append((concept, grade))
        return EdssAssessment(v["edss_id"], v["mrn"], v["date"], float(score), tuple(systems))

    def _build_relapses(self, v: dict[str, Any]) -> Relapse:
        return Relapse(v["relapse_id"], v["mrn"], v["onset_date"], v.get("severity"))

    def _build_mri(self, v: dict[str, Any]) -> MriExam:
        gd, t2, volume = v.get("gd_lesions"), v.get("new_t2_lesions"), v.get("t2_volume_ml")
        if gd is None and t2 is None and volume is None:
            raise RowError(None, "no measure: give gd_lesions, new_t2_lesions or t2_volume_ml")
        if volume is not None and volume < 0:
            raise self._error("t2_volume_ml", f"T2 lesion volume {volume:g} is negative")
        return MriExam(v["mri_id"], v["mrn"], v["date"], gd, t2, volume)

    def _build_labs(self, v: dict[str, Any]) -> LabResult:
        test = self.tests[v["test"]]
        text = v["value"]
        if test.result == "qualitative":
            result = self.results.get(normalise(text))
            if result is None:
                raise self._error("value", f"{test.concept} result {text!r} is not positive or negative")
            return LabResult(v["lab_id"], v["mrn"], v["date"], test.concept, result=result)
        try:
            value = self._number(text)
        except _FieldError as exc:
            raise self._error("value", f"{test.concept}: {exc}") from None
        unit_text = v.get("unit")
        if not unit_text:
            raise self._error("unit", f"missing unit of the {test.concept} value (expected {test.unit})")
        key = unit_key(unit_text)
        key = unit_key(self.cmap.units.get(normalise(unit_text), unit_text)) if key not in test.accept else key
        factor = test.accept.get(key)
        if factor is None:
            raise self._error("unit", f"unit {unit_text!r} is not known for {test.concept} (expected {test.unit} "
                              f"or one of the spellings in {LAB_CATALOG.name})")
        value = round(value * factor, 9) if factor != 1 else value
        if (test.low is not None and value < test.low) or (test.high is not None and value > test.high):
            raise self._error("value", f"{test.concept} {value:g} {test.unit} is outside the plausible "
                              f"range {test.low:g}-{test.high:g}")
        return LabResult(v["lab_id"], v["mrn"], v["date"], test.concept, value, test.ucum, test.unit)

    def _build_medications(self, v: dict[str, Any]) -> Medication:
        start, end = v["start_date"], v.get("end_date")
        if end and end < start:
            raise self._error("end_date", f"end {end} is before the start {start}")
        return Medication(v["medication_id"], v["mrn"], v["drug"], start, end, v.get("route"))

    def _build_status(self, v: dict[str, Any]) -> StatusFact:
        return StatusFact(v["status_id"], v["mrn"], v["date"], v["fact"], v["value"])


def _yes_no(text: str) -> bool:
    key = normalise(text)
    if key in YES:
        return True
    if key in NO:
        return False
    raise _FieldError(f"{text!r} is not yes or no")
