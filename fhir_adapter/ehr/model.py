"""The patient record an EHR extract holds: one fact class per extract table, and `PatientRecord`.

Dates are FHIR date strings (`YYYY-MM-DD`; `YYYY` or `YYYY-MM` where a field allows partial dates),
so they sort as text and go into templates as they are. Coded values are concept names of
`mappings/terminology.yaml` (`rrms`, `natalizumab`, `egfr`, ...).

`TABLES` describes the extract format field by field (the README's extract section is built from it):

>>> TABLES["edss"].field("score").kind, TABLES["edss"].key
('edss-score', 'edss_id')
>>> [t.name for t in TABLES.values()][:3]
['patients', 'diagnoses', 'edss']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import terminology

FhirDate = str  # "2024-03-01", or "2024-03" / "2024" where partial dates are allowed

SEXES = ("female", "male", "other", "unknown")
MS_COURSES = terminology.members("ms-any")  # multiple-sclerosis (type not documented), rrms, spms, ppms
COMORBIDITIES = ("malignancy", "myelodysplasia", "renal-failure", "bleeding-diathesis", "major-depression",
                 "polyneuropathy", "alcohol-dependence", "drug-dependence")
DIAGNOSES = (*MS_COURSES, *COMORBIDITIES)
CLINICAL_STATUSES = ("active", "remission", "resolved", "inactive")
SEVERITIES = ("mild", "moderate", "severe")
DRUGS = (*terminology.members("disease-modifying-therapies"), *terminology.members("corticosteroids"), "fampridine")
ROUTES = ("oral", "subcutaneous", "intramuscular", "intravenous", "intrathecal")
STATUS_FACTS = ("pregnancy", "lactation")
#: Kurtzke functional systems: (field, concept, highest grade).
FUNCTIONAL_SYSTEMS = (
    ("fs_visual", "kfss-visual", 6), ("fs_brainstem", "kfss-brainstem", 5), ("fs_pyramidal", "kfss-pyramidal", 6),
    ("fs_cerebellar", "kfss-cerebellar", 5), ("fs_sensory", "kfss-sensory", 6),
    ("fs_bowel_bladder", "kfss-bowel-bladder", 6), ("fs_cerebral", "kfss-cerebral", 5),
)
#: EDSS steps: 0, then 1.0 to 10.0 by 0.5 (the Kurtzke scale has no 0.5).
EDSS_STEPS = (0.0, *(n / 2 for n in range(2, 21)))

# The facts are values (compared and hashed by their fields) that nothing changes once a row is converted.
# They are not frozen dataclasses only for speed: a frozen one takes five times longer to build, and
# `patients map` builds one per row (over a million for a 100,000-patient extract).


@dataclass(slots=True, unsafe_hash=True)
class Patient:
    mrn: str
    birth_date: FhirDate
    sex: str


@dataclass(slots=True, unsafe_hash=True)
class Diagnosis:
    row_id: str
    mrn: str
    diagnosis: str                  # concept: an MS course or a comorbidity
    onset: FhirDate | None = None
    recorded: FhirDate | None = None
    status: str = "active"          # clinical status
    abated: FhirDate | None = None


@dataclass(slots=True, unsafe_hash=True)
class EdssAssessment:
    row_id: str
    mrn: str
    date: FhirDate
    score: float
    functional_systems: tuple[tuple[str, int], ...] = ()   # (concept, grade)


@dataclass(slots=True, unsafe_hash=True)
class Relapse:
    row_id: str
    mrn: str
    onset: FhirDate
    severity: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class MriExam:
    row_id: str
    mrn: str
    date: FhirDate
    gd_lesions: int | None = None
    new_t2_lesions: int | None = None
    t2_volume_ml: float | None = None


@dataclass(slots=True, unsafe_hash=True)
class LabResult:
    row_id: str
    mrn: str
    date: FhirDate
    test: str                       # concept (egfr, platelets, hiv, ...)
    value: float | None = None      # numeric results, in `ucum`
    ucum: str | None = None
    unit: str | None = None         # human-readable unit
    result: str | None = None       # qualitative results: positive / negative


@dataclass(slots=True, unsafe_hash=True)
class Medication:
    row_id: str
    mrn: str
    drug: str                       # concept
    start: FhirDate
    end: FhirDate | None = None
    route: str | None = None        # concept

    @property
    def status(self) -> str:
        """R4 MedicationStatement.status: taken and stopped (`completed`) or still taken (`active`)."""
        return "completed" if self.end else "active"


@dataclass(slots=True, unsafe_hash=True)
class StatusFact:
    row_id: str
    mrn: str
    date: FhirDate
    fact: str                       # pregnancy / lactation
    value: bool


Fact = Patient | Diagnosis | EdssAssessment | Relapse | MriExam | LabResult | Medication | StatusFact


@dataclass
class PatientRecord:
    """Everything an extract says about one patient."""

    patient: Patient
    diagnoses: list[Diagnosis] = field(default_factory=list)
    edss: list[EdssAssessment] = field(default_factory=list)
    relapses: list[Relapse] = field(default_factory=list)
    mri: list[MriExam] = field(default_factory=list)
    labs: list[LabResult] = field(default_factory=list)
    medications: list[Medication] = field(default_factory=list)
    status: list[StatusFact] = field(default_factory=list)

    def facts(self) -> list[Fact]:
        """The patient first, then the rows of each table in the extract's table order."""
        return [self.patient, *self.diagnoses, *self.edss, *self.relapses, *self.mri, *self.labs,
                *self.medications, *self.status]


# --- the extract format ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One column of an extract table, by its canonical name."""

    name: str
    kind: str                      # see KINDS
    required: bool = False
    about: str = ""
    choices: tuple[str, ...] = ()


KINDS = {
    "text": "text",
    "date": "date YYYY-MM-DD",
    "partial-date": "date YYYY-MM-DD, YYYY-MM or YYYY",
    "integer": "whole number >= 0",
    "decimal": "decimal number",
    "edss-score": "0 or 1.0 to 10.0 in steps of 0.5",
    "choice": "one of the listed values",
    "concept": "a listed concept name, an alias from the column map, or a code of a system the map looks up",
    "yes-no": "yes or no",
}


@dataclass(frozen=True)
class Table:
    """One extract table: its canonical fields, its row id (`key`), and the fact it makes."""

    name: str
    fact: type
    key: str
    fields: tuple[Field, ...]
    about: str
    resources: str                 # what it becomes in FHIR

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"table {self.name} has no field {name!r}")


_MRN = Field("mrn", "text", True, "medical record number of a patient in the patients table")

TABLES: dict[str, Table] = {t.name: t for t in (
    Table("patients", Patient, "mrn", (
        Field("mrn", "text", True, "medical record number, unique"),
        Field("birth_date", "partial-date", True, "date of birth"),
        Field("sex", "choice", True, "administrative sex", SEXES),
    ), "one row per patient", "Patient"),
    Table("diagnoses", Diagnosis, "diagnosis_id", (
        Field("diagnosis_id", "text", True, "row id, unique"),
        _MRN,
        Field("diagnosis", "concept", True, "MS course or comorbidity", DIAGNOSES),
        Field("onset_date", "partial-date", False, "onset of the first symptoms"),
        Field("diagnosis_date", "partial-date", False, "date of diagnosis (Condition.recordedDate)"),
        Field("status", "choice", False, "clinical status (default active)", CLINICAL_STATUSES),
        Field("end_date", "partial-date", False, "resolution or remission date (status not active)"),
    ), "MS course and comorbidities", "Condition"),
    Table("edss", EdssAssessment, "edss_id", (
        Field("edss_id", "text", True, "row id, unique"),
        _MRN,
        Field("date", "date", True, "date of the assessment"),
        Field("score", "edss-score", True, "EDSS score"),
        *(Field(name, "integer", False, f"Kurtzke functional system grade, 0-{top}")
          for name, _, top in FUNCTIONAL_SYSTEMS),
    ), "EDSS assessments", "Observation (SNOMED 273554001, {score}; functional systems as components)"),
    Table("relapses", Relapse, "relapse_id", (
        Field("relapse_id", "text", True, "row id, unique"),
        _MRN,
        Field("onset_date", "date", True, "onset of the relapse"),
        Field("severity", "choice", False, "relapse severity", SEVERITIES),
    ), "clinical relapses", "Observation (SNOMED 192929006, value: severity)"),
    Table("mri", MriExam, "mri_id", (
        Field("mri_id", "text", True, "row id, unique"),
        _MRN,
        Field("date", "date", True, "date of the exam"),
        Field("gd_lesions", "integer", False, "Gd-enhancing lesion count"),
        Field("new_t2_lesions", "integer", False, "new or enlarging T2 lesion count (vs the previous exam)"),
        Field("t2_volume_ml", "decimal", False, "T2 lesion volume in mL (>= 0)"),
    ), "brain MRI exams (at least one measure per row)", "one Observation per measure given"),
    Table("labs", LabResult, "lab_id", (
        Field("lab_id", "text", True, "row id, unique"),
        _MRN,
        Field("date", "date", True, "date the sample was taken"),
        Field("test", "concept", True, "test (mappings/ehr/labs.yaml)", ()),
        Field("value", "text", True, "number, or positive / negative for qualitative tests"),
        Field("unit", "text", False, "unit of a numeric value (required for numeric tests)"),
    ), "laboratory results", "Observation (LOINC, UCUM)"),
    Table("medications", Medication, "medication_id", (
        Field("medication_id", "text", True, "row id, unique"),
        _MRN,
        Field("drug", "concept", True, "drug (ingredient)", DRUGS),
        Field("start_date", "date", True, "first day taken"),
        Field("end_date", "date", False, "last day taken (empty: still taken)"),
        Field("route", "choice", False, "route of administration", ROUTES),
    ), "medications (DMTs, corticosteroids, fampridine)", "MedicationStatement (ATC, RxNorm where listed)"),
    Table("status", StatusFact, "status_id", (
        Field("status_id", "text", True, "row id, unique"),
        _MRN,
        Field("date", "date", True, "date the status was recorded"),
        Field("fact", "choice", True, "what is recorded", STATUS_FACTS),
        Field("value", "yes-no", True, "whether it holds"),
    ), "pregnancy and lactation status", "Observation (LOINC 82810-3 pregnancy, 63895-7 breastfeeding)"),
)}
