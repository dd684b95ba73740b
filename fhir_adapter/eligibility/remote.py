"""Screening against a FHIR server: patients and criteria read from it, ResearchSubjects written back.

- `load_patients(client)`: every Patient and their Condition, Observation and Medication* resources, read
  by type with paging (a few requests per type instead of one per patient), or with `per_patient` patient by
  patient (`$everything` where the server has it, else a search per type by patient), plus the Medication
  resources they reference. Either way the patients are those with a Patient resource on the server: records
  of a patient without one (deleted) are reported, by type, and not screened;
- `trials_from_server(client)`: the criteria from the EvidenceVariables on the server (`--from-server`), each
  read by its deterministic id (`ids.resource_id("EvidenceVariable", "https://clinicaltrials.gov", nct)`), since
  servers need not search EvidenceVariable (sekmet does not);
- `research_subjects(...)` / `write_back(...)`: an R4 ResearchSubject per patient and trial, with status
  `candidate` (eligible), `potential-candidate` (needs review) or `ineligible`, PUT at a deterministic id
  so that a re-run changes nothing, once `require_studies` found the trials' ResearchStudy resources on the
  server. Screening owns only these statuses: a subject the staff moved on
  (`on-study`, `withdrawn`, ...) is kept as it is, and updating one keeps the elements screening does not write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from .. import render
from ..client import SCREENING_TYPES, FhirClient, PushResult, ResourceGone, ResourceNotFound
from ..criteria import CriterionError
from ..protocol.evidence import evidence_variable_id
from .data import PatientIndex, Problem, subject_of
from .engine import ELIGIBLE, INELIGIBLE, NEEDS_REVIEW, Trial
from .trials import load_trials, study_reference, trials_from_evidence

#: Identifier system of the ResearchSubjects that screening writes (value: `<NCT id>|<patient id>`).
SCREENING_SYSTEM = "https://w3id.org/fhir-adapter/screening"
STATUS = {ELIGIBLE: "candidate", NEEDS_REVIEW: "potential-candidate", INELIGIBLE: "ineligible"}
#: The ResearchSubject statuses screening sets, and may change; any other was set by people and is kept.
SCREENING_STATUSES = frozenset(STATUS.values())
PAGE = 500


def connect(base_url: str, **options: Any) -> FhirClient:
    """A client for a server (TLS verification on; see `fhir_adapter.client` for auth options)."""
    return FhirClient(base_url, **options)


def load_patients(client: FhirClient, types: Sequence[str] = SCREENING_TYPES, per_patient: bool = False,
                  ) -> PatientIndex:
    """Every patient's screening data from the server, read type by type with paging, or patient by patient."""
    index = PatientIndex()
    if per_patient:
        for patient in client.search("Patient", {"_count": PAGE}):
            for resource in client.patient_data(str(patient.get("id")), types, patient):
                index.add(resource, f"{resource.get('resourceType')}/{resource.get('id')}")
    else:
        for resource in client.search("Patient", {"_count": PAGE}):
            index.add(resource, f"Patient/{resource.get('id')}")
        caps = client.capabilities()
        used: Counter[str | None] = Counter()
        for rtype in types:
            if caps.resources and rtype not in caps.resources:
                continue                                # the server holds no such type
            for resource in client.search(rtype, {"_count": PAGE}):
                before = index.used
                index.add(resource, f"{rtype}/{resource.get('id')}")
                used[subject_of(resource)] += index.used - before
        _leave_out_patients_not_on_server(index, used)
    wanted = {e.concepts and next(iter(e.concepts)) for p in index.patients.values() for e in p.exposures}
    for reference in sorted(w for w in wanted if isinstance(w, str) and w.startswith("Medication/")):
        with suppress(ResourceNotFound, ResourceGone):   # not there: `finish` reports the records that refer
            index.add(client.read("Medication", reference.split("/", 1)[1]), reference)   # to it, as for files
    return index.finish()


def _leave_out_patients_not_on_server(index: PatientIndex, used: Counter[str | None]) -> None:
    """Leave out, and report, the patients whose records are on the server but whose Patient resource is not
    (deleted, or never pushed): not screened, as patient by patient, so no ResearchSubject points at them."""
    for patient in [p for p in index.patients.values() if not p.seen]:
        del index.patients[patient.id]
        index.used -= used[patient.id]
        index.problems.append(Problem(patient.reference, f"no Patient resource on the server, though "
                                                         f"{used[patient.id]} record(s) refer to it: not screened"))


def trials_from_server(client: FhirClient, only: Sequence[str] = (), fhir_version: str = "R4") -> list[Trial]:
    """Trials whose criteria are read back from the EvidenceVariables on the server, one read by id per trial.

    `only`: the NCT ids to read; by default the trials known in `mappings/` (whose criteria the server's
    EvidenceVariables were mapped from). A trial with no EvidenceVariable on the server is a `KeyError`, one
    whose criteria cannot be read a `CriterionError` naming the trial, the server and the element.
    """
    local = {t.id: t.title for t in load_trials()} if not only else {}
    wanted = list(dict.fromkeys(only)) or sorted(local)
    if not wanted:
        raise KeyError("no trial to read from the server: name them with --trial NCT...")
    titles = local or {t.id: t.title for t in _local_trials()}
    trials, missing = [], []
    for nct in wanted:
        rid = evidence_variable_id(nct)
        try:
            resource = client.read("EvidenceVariable", rid)
        except (ResourceNotFound, ResourceGone):
            missing.append(f"{nct} (EvidenceVariable/{rid})")
            continue
        try:
            trials.extend(trials_from_evidence([resource], fhir_version, titles, nct_id=nct))
        except CriterionError as exc:
            raise CriterionError(f"{nct}: the criteria on {client.base_url} cannot be read: {exc}") from None
    if missing:
        raise KeyError(f"no EvidenceVariable on {client.base_url} for {', '.join(missing)}: push the trials "
                       f"first (fhir-adapter trials map, then push)")
    return [t for t in trials if t.criteria]


def _local_trials() -> list[Trial]:
    try:
        return load_trials()
    except Exception:  # noqa: BLE001 - titles are a nicety; the criteria come from the server
        return []


def research_subjects(statuses: Iterable[tuple[str, str, str]], trials: Iterable[Trial], as_of: str,
                      ) -> list[dict[str, Any]]:
    """R4 ResearchSubjects for (patient reference, trial id, verdict) triples."""
    studies = {t.id: t.study or study_reference(t.id) for t in trials}
    subjects = []
    for patient, trial_id, verdict in statuses:
        subjects.append(render.render("ResearchSubject.json.j2", "R4", nct_id=trial_id,
                                      patient_id=patient.split("/", 1)[1], study=studies[trial_id],
                                      status=STATUS[verdict], system=SCREENING_SYSTEM, as_of=as_of))
    return subjects


@dataclass
class Kept:
    """A ResearchSubject left as it is because its status on the server is not one screening sets."""

    subject: str            # `<NCT id>|<patient id>`, the subject's screening identifier
    status: str             # its status on the server

    def __str__(self) -> str:
        return f"kept: {self.subject}: status {self.status} set on the server"


def require_studies(client: FhirClient, trials: Iterable[Trial]) -> None:
    """Check that each trial's ResearchStudy, which the ResearchSubjects will point at, is on the server (read by
    its deterministic id); a `KeyError` naming those that are not."""
    studies = {(t.study or study_reference(t.id)): t.id for t in trials}
    found = client.read_many("ResearchStudy", [ref.split("/", 1)[1] for ref in studies])
    missing = [f"{nct} ({ref})" for ref, nct in studies.items() if found.get(ref.split("/", 1)[1]) is None]
    if missing:
        raise KeyError(f"no ResearchStudy on {client.base_url} for {', '.join(missing)}: the ResearchSubjects "
                       f"would point at nothing; push the trials first (fhir-adapter trials map, then push)")


def write_back(client: FhirClient, statuses: Iterable[tuple[str, str, str]], trials: Iterable[Trial],
               as_of: str) -> tuple[PushResult, list[Kept]]:
    """Write the ResearchSubjects (PUT by deterministic id) after reading those on the server: a subject with a
    status screening does not set is kept (returned); one whose status is the same is left untouched (its
    `period.start` stays the day it got that status: counted unchanged); an update keeps the elements screening
    does not write."""
    wanted = research_subjects(statuses, trials, as_of)
    current = client.read_many("ResearchSubject", [s["id"] for s in wanted])
    outgoing, kept, unchanged = [], [], 0
    for subject in wanted:
        now = current.get(subject["id"])
        if now is None:
            outgoing.append(subject)
        elif now.get("status") not in SCREENING_STATUSES:
            kept.append(Kept(subject["identifier"][0]["value"], str(now.get("status"))))
        elif now.get("status") == subject["status"]:
            unchanged += 1
        else:
            outgoing.append(_updated(now, subject))
    result = client.push(outgoing, compare=False)       # just read: what goes is new or changed
    result.unchanged += unchanged
    result.total += unchanged
    return result, kept


def _updated(current: dict[str, Any], subject: dict[str, Any]) -> dict[str, Any]:
    """The subject on the server with what screening writes (status, period.start) taken from `subject`."""
    updated = {**current, "status": subject["status"]}
    updated["period"] = {**(current.get("period") or {}), "start": subject["period"]["start"]}
    return updated
