"""Screening patients for trials from EHR data: patient data, MS facts, the eligibility engine.

- `data`: FHIR resources reduced to facts-ready `PatientData`, indexed per patient; `screenable` the ones to
  screen at a date (not the dead; records before the birth date dropped), with what is reported about them;
- `facts`: the one module computing MS derived facts;
- `engine`: `screen(patients, trials, as_of)` giving `Verdict`s;
- `run`: whole runs writing the reports: `screen_files(paths, trials, out, as_of)` and
  `screen_server(client, trials, out, as_of, from_server=False, write_back=False)` (what `demo` calls).
"""

from .data import PatientData, PatientIndex, index_resources, screenable
from .engine import ELIGIBLE, INELIGIBLE, MET, NEEDS_REVIEW, NOT_MET, UNKNOWN, Trial, Verdict, screen

_RUN = ("RunResult", "ServerScreening", "screen_files", "screen_server")


def __getattr__(name: str) -> object:
    """`run`'s names, imported on first use (`run` needs the reports, which need the engine)."""
    if name in _RUN:
        from . import run
        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ELIGIBLE", "INELIGIBLE", "MET", "NEEDS_REVIEW", "NOT_MET", "UNKNOWN", "PatientData", "PatientIndex",
           "RunResult", "ServerScreening", "Trial", "Verdict", "index_resources", "screen", "screen_files",
           "screen_server", "screenable"]
