"""Screening patients for trials from EHR data: patient data, MS facts, the eligibility engine.

- `data`: FHIR resources reduced to facts-ready `PatientData`, indexed per patient;
- `facts`: the one module computing MS derived facts;
- `engine`: `screen(patients, trials, as_of)` giving `Verdict`s.
"""

from .data import PatientData, PatientIndex, index_resources
from .engine import ELIGIBLE, INELIGIBLE, MET, NEEDS_REVIEW, NOT_MET, UNKNOWN, Trial, Verdict, screen

__all__ = ["ELIGIBLE", "INELIGIBLE", "MET", "NEEDS_REVIEW", "NOT_MET", "UNKNOWN", "PatientData", "PatientIndex",
           "Trial", "Verdict", "index_resources", "screen"]
