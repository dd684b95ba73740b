"""A synthetic MS cohort, written as an extract in the default format: deterministic for a seed.

Each patient gets a plausible history up to a reference date (default today): an MS course (RRMS, SPMS,
PPMS, or type not documented) with onset and diagnosis dates; EDSS assessments following a trajectory
that worsens with the course and after relapses; relapses at rates that depend on the course and the
therapy; MRI exams whose lesion activity follows the same; disease-modifying therapies in sequence
(first line, escalation, switches), corticosteroid pulses after relapses, fampridine; laboratory results
(eGFR, platelets, white cells, infection serologies, CSF oligoclonal bands, pregnancy tests);
pregnancy and lactation status; comorbidities (malignancy, myelodysplasia, renal failure, depression ...).

Histories have the gaps real extracts have (no EDSS or MRI in the last year, tests never done, onset
known only to the month), and some therapies stop close to the washout limits of the trials (30 days,
3, 6 and 12 months before the reference date), so that screening on the reference date finds eligible,
ineligible and needs-review patients for every trial.

Each patient's history comes from its own random stream (`seed`, patient number), so a cohort of N is
the first N patients of any larger cohort with the same seed and reference date.

>>> a = list(cohort_records(3, seed=7, reference_date=dt.date(2025, 6, 30)))
>>> b = list(cohort_records(3, seed=7, reference_date=dt.date(2025, 6, 30)))
>>> a == b, a[0].patient.mrn
(True, 'MS000001')
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from .columns import load_column_map
from .model import (
    EDSS_STEPS,
    FUNCTIONAL_SYSTEMS,
    TABLES,
    Diagnosis,
    EdssAssessment,
    LabResult,
    Medication,
    MriExam,
    Patient,
    PatientRecord,
    Relapse,
    StatusFact,
)

DAY = dt.timedelta(days=1)
YEAR = 365.25

#: Course mix of an MS clinic population.
COURSES = (("rrms", 0.60), ("spms", 0.22), ("ppms", 0.13), ("multiple-sclerosis", 0.05))
FIRST_LINE = ("interferon-beta-1a", "interferon-beta-1b", "glatiramer", "teriflunomide", "dimethyl-fumarate")
HIGH_EFFICACY = ("fingolimod", "natalizumab", "ocrelizumab", "cladribine", "alemtuzumab", "ofatumumab", "rituximab")
ROUTES = {
    "interferon-beta-1a": ("intramuscular", "subcutaneous"), "interferon-beta-1b": ("subcutaneous",),
    "glatiramer": ("subcutaneous",), "teriflunomide": ("oral",), "dimethyl-fumarate": ("oral",),
    "fingolimod": ("oral",), "siponimod": ("oral",), "cladribine": ("oral",), "fampridine": ("oral",),
    "natalizumab": ("intravenous",), "ocrelizumab": ("intravenous",), "rituximab": ("intravenous",),
    "alemtuzumab": ("intravenous",), "mitoxantrone": ("intravenous",), "ofatumumab": ("subcutaneous",),
    "methylprednisolone": ("intravenous", "oral"), "prednisone": ("oral",),
}
#: Relapse-rate factor on a therapy (1 = untreated).
EFFICACY = {**dict.fromkeys(FIRST_LINE, 0.6), **dict.fromkeys(HIGH_EFFICACY, 0.25), "siponimod": 0.5,
            "mitoxantrone": 0.4}
#: Days before the reference date at which trials' washouts end (30 days, 3, 6 and 12 months).
WASHOUT_LIMITS = (30, 91, 182, 365)
#: Comorbidities: (concept, share of patients).
COMORBIDITY_RATES = (("malignancy", 0.03), ("myelodysplasia", 0.004), ("renal-failure", 0.01),
                     ("major-depression", 0.08), ("polyneuropathy", 0.01), ("alcohol-dependence", 0.01),
                     ("drug-dependence", 0.005), ("bleeding-diathesis", 0.005))
#: How the extract writes some values (exercising the column map's aliases and lookups).
BRANDS = {"interferon-beta-1a": "Avonex", "interferon-beta-1b": "Betaferon", "glatiramer": "Copaxone",
          "natalizumab": "Tysabri", "fingolimod": "Gilenya", "ocrelizumab": "Ocrevus", "teriflunomide": "Aubagio",
          "dimethyl-fumarate": "Tecfidera", "cladribine": "Mavenclad", "alemtuzumab": "Lemtrada",
          "methylprednisolone": "Solu-Medrol", "fampridine": "Fampyra"}
LAB_NAMES = {"egfr": ("eGFR", "egfr", "98979-8"), "platelets": ("Platelets", "PLT", "777-3"),
             "white-cells": ("WBC", "Leukocytes", "6690-2"), "hiv": ("HIV 1/2", "56888-1"),
             "hbsag": ("HBs Ag", "5196-1"), "hcv": ("HCV Ab", "13955-0"), "syphilis": ("RPR", "TPHA"),
             "htlv": ("HTLV I/II",), "pregnancy-test": ("hCG", "beta-hCG", "2106-3"),
             "csf-oligoclonal-bands": ("CSF OCB", "OCB")}
LAB_UNITS = {"egfr": ("mL/min/1.73m2", "mL/min/{1.73_m2}"), "platelets": ("10^9/L", "/nL", "10^3/uL"),
             "white-cells": ("10^9/L", "G/L", "10^3/uL")}
DIAGNOSIS_NAMES = {"rrms": "RRMS", "spms": "SPMS", "ppms": "PPMS", "multiple-sclerosis": "MS"}
#: ICD-10-CM codes used for diagnoses recorded from 2025-10-01 (FY2026 subcodes; terminology.md note 1).
ICD10CM_FY2026 = {"rrms": "G35.A", "spms": "G35.C0", "ppms": "G35.B0", "multiple-sclerosis": "G35.D"}


def edss_step(value: float) -> float:
    """The nearest point of the EDSS scale (0, 1.0, 1.5, ... 9.5); 10 (death) is never generated.

    >>> edss_step(0.6), edss_step(0.8), edss_step(3.26), edss_step(12)
    (0.0, 1.0, 3.5, 9.5)
    """
    if value < 0.75:
        return 0.0
    return min(max(round(value * 2) / 2, 1.0), 9.5)


class _History:
    """One patient's history, drawn from its own random stream."""

    def __init__(self, rng: random.Random, number: int, today: dt.date) -> None:
        self.rng, self.today = rng, today
        self.mrn = f"MS{number:06d}"
        self.rows = dict.fromkeys(("D", "E", "R", "I", "L", "M", "S"), 0)
        r = rng
        self.course = r.choices([c for c, _ in COURSES], [w for _, w in COURSES])[0]
        self.sex = "female" if r.random() < (0.72 if self.course != "ppms" else 0.5) else "male"
        if r.random() < 0.002:
            self.sex = "unknown"
        mean_age = {"rrms": 38, "spms": 51, "ppms": 50, "multiple-sclerosis": 42}[self.course]
        self.age = min(65.9, max(16.0, r.gauss(mean_age, 10)))
        self.birth = today - dt.timedelta(days=int(self.age * YEAR))
        longest = max(0.3, self.age - 12)
        duration = {"rrms": r.uniform(0.3, min(longest, 22)), "spms": r.uniform(min(6, longest), min(longest, 35)),
                    "ppms": r.uniform(0.5, min(longest, 18)),
                    "multiple-sclerosis": r.uniform(0.3, min(longest, 25))}[self.course]
        self.onset = today - dt.timedelta(days=int(duration * YEAR))
        self.diagnosed = min(today, self.onset + dt.timedelta(days=int(r.expovariate(1 / 400))))
        self.conversion = (self.onset + dt.timedelta(days=int(r.uniform(0.35, 0.8) * duration * YEAR))
                           if self.course == "spms" else None)
        self.active = r.random() < {"rrms": 0.5, "spms": 0.3, "ppms": 0.25, "multiple-sclerosis": 0.4}[self.course]
        self.rate = r.lognormvariate(0, 0.45)          # the patient's own pace of worsening
        self.window = max(self.diagnosed, today - dt.timedelta(days=int(r.uniform(2, 5) * YEAR)))  # the extract's span
        self.therapies: list[Medication] = []
        self.relapses: list[Relapse] = []

    def row(self, kind: str) -> str:
        self.rows[kind] += 1
        return f"{self.mrn}-{kind}{self.rows[kind]:02d}"

    def days(self, low: float, high: float) -> dt.timedelta:
        return dt.timedelta(days=int(self.rng.uniform(low, high)))

    # --- the disease ----------------------------------------------------------------------------

    def edss_at(self, day: dt.date) -> float:
        years = max(0.0, (day - self.onset).days / YEAR)
        if self.course == "ppms":
            value = 2.0 + 0.33 * self.rate * years
        elif self.course == "spms" and day >= self.conversion:
            before = (self.conversion - self.onset).days / YEAR
            value = 1.5 + 0.14 * self.rate * before + 0.3 * self.rate * (day - self.conversion).days / YEAR
        else:
            value = 1.0 + 0.13 * self.rate * years
        value += 0.5 * sum(1 for r in self.relapses if r.onset <= day.isoformat() and r.severity == "severe")
        return value

    def therapy_on(self, day: dt.date) -> Medication | None:
        iso = day.isoformat()
        for m in self.therapies:
            if m.drug not in ("methylprednisolone", "prednisone", "fampridine") and m.start <= iso and (
                    m.end is None or m.end >= iso):
                return m
        return None

    def _add_therapy(self, drug: str, start: dt.date, end: dt.date | None) -> None:
        route = self.rng.choice(ROUTES[drug])
        self.therapies.append(Medication(self.row("M"), self.mrn, drug, start.isoformat(),
                                         end.isoformat() if end else None, route))

    def plan_therapies(self) -> None:
        r, today = self.rng, self.today
        treated = r.random() < {"rrms": 0.85, "spms": 0.55, "ppms": 0.4, "multiple-sclerosis": 0.6}[self.course]
        if not treated:
            return
        if self.course == "ppms":
            start = max(self.diagnosed, dt.date(2017, 6, 1)) + self.days(30, 500)
            if start < today:
                self._add_therapy("ocrelizumab", start, self._maybe_stopped(start, 0.2))
            return
        sequence = [r.choice(FIRST_LINE)]
        if r.random() < 0.55:
            sequence.append(r.choice(HIGH_EFFICACY))
            if sequence[-1] == "natalizumab" and r.random() < 0.4:   # JCV: switch to an anti-CD20
                sequence.append(r.choice(("ocrelizumab", "ofatumumab", "rituximab")))
        if self.course == "spms" and r.random() < 0.5:
            sequence.append(r.choice(("siponimod", "mitoxantrone", "ocrelizumab")))
        start = self.diagnosed + self.days(20, 700)
        for position, drug in enumerate(sequence):
            if start >= today - 20 * DAY:
                break
            last = position == len(sequence) - 1
            length = {"cladribine": 1.1, "alemtuzumab": 1.05, "mitoxantrone": 1.8}.get(drug, r.uniform(0.8, 6))
            end: dt.date | None = start + dt.timedelta(days=int(length * YEAR))
            if last:
                end = self._maybe_stopped(start, 0.35) if drug not in ("cladribine", "alemtuzumab") else end
            if end is not None and end >= today:
                end = None if drug not in ("cladribine", "alemtuzumab", "mitoxantrone") else today - DAY
            self._add_therapy(drug, start, end)
            if end is None:
                break
            start = end + self.days(14, 240)

    def _maybe_stopped(self, start: dt.date, share: float) -> dt.date | None:
        """Ongoing, or stopped; a stop is often close to a trial's washout limit."""
        r = self.rng
        if r.random() >= share:
            return None
        if r.random() < 0.7:
            end = self.today - dt.timedelta(days=r.choice(WASHOUT_LIMITS) + r.randint(-12, 12))
        else:
            end = self.today - self.days(20, 900)
        return end if end > start else None

    def plan_relapses(self) -> None:
        r = self.rng
        base = {"rrms": 0.45, "spms": 0.08, "ppms": 0.02, "multiple-sclerosis": 0.25}[self.course]
        if self.active:
            base *= 2.2
        day = self.window
        while True:
            therapy = self.therapy_on(day)
            years = (day - self.onset).days / YEAR
            rate = base * EFFICACY.get(therapy.drug, 1.0) if therapy else base
            rate *= max(0.35, 1 - years / 30)
            if self.course == "spms" and day < self.conversion:
                rate = 0.35
            day = day + dt.timedelta(days=int(r.expovariate(rate) * YEAR) + 1)
            if day > self.today:
                break
            severity = r.choices(("mild", "moderate", "severe", None), (0.28, 0.42, 0.15, 0.15))[0]
            relapse = Relapse(self.row("R"), self.mrn, day.isoformat(), severity)
            self.relapses.append(relapse)
            if severity in ("moderate", "severe") and r.random() < 0.75:
                pulse = day + self.days(0, 12)
                if pulse <= self.today:
                    drug = "methylprednisolone" if r.random() < 0.9 else "prednisone"
                    self._add_therapy(drug, pulse, min(self.today, pulse + self.days(2, 5 if drug != "prednisone"
                                                                                     else 21)))

    # --- what the extract holds -----------------------------------------------------------------

    def diagnoses(self) -> list[Diagnosis]:
        r, out = self.rng, []
        onset = self._fuzzy(self.onset)
        if self.course == "spms" and r.random() < 0.6:
            out.append(Diagnosis(self.row("D"), self.mrn, "rrms", onset, self.diagnosed.isoformat(), "inactive",
                                 self.conversion.isoformat()))
            out.append(Diagnosis(self.row("D"), self.mrn, "spms", onset, self.conversion.isoformat(), "active"))
        else:
            course = "multiple-sclerosis" if r.random() < 0.03 else self.course
            out.append(Diagnosis(self.row("D"), self.mrn, course, onset, self.diagnosed.isoformat(), "active"))
        for concept, share in COMORBIDITY_RATES:
            if r.random() < share:
                start = self.today - self.days(60, min(25 * YEAR, max(90, (self.today - self.birth).days - 5000)))
                status, end = "active", None
                if concept in ("malignancy", "major-depression", "alcohol-dependence", "drug-dependence"):
                    status = r.choice(("active", "remission", "remission", "resolved"))
                    if status != "active":
                        end = min(self.today, start + self.days(90, 3 * YEAR))
                out.append(Diagnosis(self.row("D"), self.mrn, concept, start.isoformat(), start.isoformat(), status,
                                     end.isoformat() if end else None))
        return out

    def _fuzzy(self, day: dt.date) -> str:
        """Onsets are often known only to the month or the year."""
        x = self.rng.random()
        return day.isoformat()[:4] if x < 0.05 else day.isoformat()[:7] if x < 0.3 else day.isoformat()

    def visits(self, every: tuple[float, float], gap_share: float, none_share: float) -> list[dt.date]:
        r = self.rng
        if r.random() < none_share:
            return []
        last = self.today - (self.days(400, 900) if r.random() < gap_share else self.days(0, 200))
        out, day = [], last
        while day >= self.window:
            out.append(day)
            day -= self.days(every[0] * YEAR, every[1] * YEAR)
        if not out and last >= self.diagnosed:
            out.append(last)
        return sorted(out)

    def edss(self) -> list[EdssAssessment]:
        r, out = self.rng, []
        days = self.visits((0.7, 1.8), 0.15, 0.03)
        worsening = r.random() < 0.2
        for day in days:
            value = self.edss_at(day) + r.gauss(0, 0.3)
            if worsening and (self.today - day).days < 200:
                value += 1.0
            score = edss_step(value)
            systems: tuple[tuple[str, int], ...] = ()
            if r.random() < 0.2:
                systems = tuple((concept, min(top, max(0, int(round(score / 1.6 + r.gauss(0, 0.7))))))
                                for _, concept, top in FUNCTIONAL_SYSTEMS)
            out.append(EdssAssessment(self.row("E"), self.mrn, day.isoformat(), score, systems))
        return out

    def mri(self) -> list[MriExam]:
        r, out = self.rng, []
        volume = r.uniform(1.5, 12) * (1.6 if self.course != "rrms" else 1.0)
        for day in self.visits((1.5, 3.0), 0.22, 0.05):
            therapy = self.therapy_on(day)
            activity = (1.0 if self.active else 0.25) * (EFFICACY.get(therapy.drug, 1.0) if therapy else 1.0)
            if self.course in ("ppms", "spms") and day >= (self.conversion or self.onset):
                activity *= 0.5
            near = sum(1 for rel in self.relapses if abs((dt.date.fromisoformat(rel.onset) - day).days) < 90)
            gd = _poisson(r, activity * (0.6 + 1.2 * near)) if r.random() > 0.1 else None
            new_t2 = _poisson(r, activity * (1.0 + 1.0 * near)) if r.random() > 0.15 else None
            volume += r.uniform(0, 0.8) + 0.5 * (new_t2 or 0)
            t2 = round(volume, 1) if r.random() < 0.3 else None
            if gd is None and new_t2 is None and t2 is None:
                gd = 0
            out.append(MriExam(self.row("I"), self.mrn, day.isoformat(), gd, new_t2, t2))
        return out

    def labs(self, pregnant: bool) -> list[LabResult]:
        r, today, out = self.rng, self.today, []

        def add(day: dt.date, test: str, value: float | None = None, result: str | None = None) -> None:
            ucum, unit = {"egfr": ("mL/min/{1.73_m2}", "mL/min/1.73 m2"), "platelets": ("10*9/L", "10^9/L"),
                          "white-cells": ("10*9/L", "10^9/L")}.get(test, (None, None))
            out.append(LabResult(self.row("L"), self.mrn, day.isoformat(), test, value, ucum if value is not None
                                 else None, unit if value is not None else None, result))

        recent = today - self.days(7, 700)
        ckd = r.random() < 0.04
        if r.random() < 0.55:
            add(recent, "egfr", round(r.gauss(52, 6) if ckd else min(150.0, r.gauss(96, 14)), 0))
        if r.random() < 0.5:
            low = r.random() < 0.03
            add(recent, "platelets", round(r.uniform(55, 99) if low else max(100.0, r.gauss(255, 55)), 0))
        if r.random() < 0.55:
            odd = r.random() < 0.04
            add(recent, "white-cells", round(r.choice((r.uniform(1.2, 2.9), r.uniform(12, 19))) if odd
                                             else max(3.2, r.gauss(6.6, 1.6)), 1))
        if r.random() < 0.2:
            day = today - self.days(20, 900)
            for test, positive in (("hiv", 0.006), ("hbsag", 0.012), ("hcv", 0.012), ("syphilis", 0.006)):
                if r.random() < 0.9:
                    add(day, test, result="positive" if r.random() < positive else "negative")
            if r.random() < 0.4:
                add(day, "htlv", result="positive" if r.random() < 0.006 else "negative")
        if r.random() < 0.45:
            ocb = r.random() < (0.85 if self.course == "ppms" else 0.9)
            add(self.diagnosed, "csf-oligoclonal-bands", result="positive" if ocb else "negative")
        if self.sex == "female" and self.age < 46 and (pregnant or r.random() < 0.15):
            add(today - self.days(2, 200), "pregnancy-test", result="positive" if pregnant else "negative")
        if ckd and r.random() < 0.5:
            self.extra_diagnoses.append(Diagnosis(self.row("D"), self.mrn, "renal-failure", recent.isoformat(),
                                                  recent.isoformat(), "active"))
        return out

    def status(self) -> tuple[list[StatusFact], bool]:
        r, today, out = self.rng, self.today, []
        if self.sex != "female" or not 18 <= self.age < 46:
            return out, False
        x = r.random()
        pregnant = x < 0.035
        if pregnant:
            out.append(StatusFact(self.row("S"), self.mrn, (today - self.days(1, 150)).isoformat(), "pregnancy", True))
        elif x < 0.06:
            out.append(StatusFact(self.row("S"), self.mrn, (today - self.days(1, 120)).isoformat(), "lactation", True))
        elif x < 0.16:
            out.append(StatusFact(self.row("S"), self.mrn, (today - self.days(10, 500)).isoformat(), "pregnancy",
                                  False))
        if r.random() < 0.04:   # an earlier pregnancy, then breastfeeding
            day = today - self.days(2 * YEAR, 6 * YEAR)
            out.append(StatusFact(self.row("S"), self.mrn, day.isoformat(), "pregnancy", True))
            out.append(StatusFact(self.row("S"), self.mrn, (day + self.days(200, 300)).isoformat(), "lactation", True))
        return sorted(out, key=lambda s: s.date), pregnant

    def record(self) -> PatientRecord:
        self.extra_diagnoses: list[Diagnosis] = []
        self.plan_therapies()
        self.plan_relapses()
        edss = self.edss()
        if edss and edss[-1].score >= 4.0 and self.rng.random() < 0.15:
            start = self.today - self.days(30, 1500)
            self._add_therapy("fampridine", start, None if self.rng.random() < 0.7 else
                              min(self.today - DAY, start + self.days(60, 700)))
        status, pregnant = self.status()
        diagnoses = self.diagnoses()
        labs = self.labs(pregnant)
        return PatientRecord(
            patient=Patient(self.mrn, self.birth.isoformat(), self.sex),
            diagnoses=diagnoses + self.extra_diagnoses, edss=edss, relapses=self.relapses, mri=self.mri(), labs=labs,
            medications=sorted(self.therapies, key=lambda m: m.start), status=status)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def cohort_records(patients: int, seed: int, reference_date: dt.date | None = None) -> Iterator[PatientRecord]:
    """The patient records of a synthetic cohort, one at a time."""
    if patients < 0:
        raise ValueError(f"the number of patients cannot be negative, got {patients}")
    today = reference_date or dt.date.today()
    for number in range(1, patients + 1):
        yield _History(random.Random(f"fhir-adapter cohort {seed} {number}"), number, today).record()


# --- writing the extract ------------------------------------------------------------------------------

def _rows(record: PatientRecord, rng: random.Random) -> Iterator[tuple[str, list[str]]]:
    """The CSV rows of one record, in the default format, with the variety real extracts have."""
    p = record.patient
    yield "patients", [p.mrn, p.birth_date, {"female": "F", "male": "M"}.get(p.sex, p.sex) if rng.random() < 0.5
                       else p.sex]
    for d in record.diagnoses:
        name = DIAGNOSIS_NAMES.get(d.diagnosis, d.diagnosis)
        if d.diagnosis in ICD10CM_FY2026 and d.recorded and d.recorded >= "2025-10-01" and rng.random() < 0.5:
            name = ICD10CM_FY2026[d.diagnosis]
        yield "diagnoses", [d.row_id, d.mrn, name, d.onset or "", d.recorded or "", d.status, d.abated or ""]
    for e in record.edss:
        grades = dict(e.functional_systems)
        yield "edss", [e.row_id, e.mrn, e.date, f"{e.score:.1f}",
                       *(str(grades[c]) if c in grades else "" for _, c, _ in FUNCTIONAL_SYSTEMS)]
    for r in record.relapses:
        yield "relapses", [r.row_id, r.mrn, r.onset, r.severity or ""]
    for m in record.mri:
        yield "mri", [m.row_id, m.mrn, m.date, _text(m.gd_lesions), _text(m.new_t2_lesions), _text(m.t2_volume_ml)]
    for lab in record.labs:
        name = rng.choice(LAB_NAMES[lab.test])
        if lab.value is not None:
            value, unit = f"{lab.value:g}", rng.choice(LAB_UNITS[lab.test])
        else:
            value, unit = rng.choice((lab.result, lab.result, lab.result[:3])), ""
        yield "labs", [lab.row_id, lab.mrn, lab.date, name, value, unit]
    for m in record.medications:
        drug = BRANDS[m.drug] if m.drug in BRANDS and rng.random() < 0.25 else m.drug
        yield "medications", [m.row_id, m.mrn, drug, m.start, m.end or "", m.route or ""]
    for s in record.status:
        yield "status", [s.row_id, s.mrn, s.date, s.fact, "yes" if s.value else "no"]


def _text(value: float | int | None) -> str:
    return "" if value is None else f"{value:g}"


def write_extract(records: Iterable[PatientRecord], out_dir: Path, seed: int = 0) -> Path:
    """Write records as an extract in the default format (one CSV per table), streaming."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmap = load_column_map("default")
    streams, writers = {}, {}
    try:
        for name, table in TABLES.items():
            streams[name] = (out_dir / cmap.table(name).file).open("w", encoding="utf-8", newline="")
            writers[name] = csv.writer(streams[name], lineterminator="\n")
            writers[name].writerow([f.name for f in table.fields])
        for record in records:
            rng = random.Random(f"fhir-adapter rows {seed} {record.patient.mrn}")
            for table, row in _rows(record, rng):
                writers[table].writerow(row)
    finally:
        for stream in streams.values():
            stream.close()
    return out_dir


def generate_cohort(patients: int, seed: int, out_dir: Path, *, reference_date: dt.date | None = None) -> Path:
    """Write a synthetic MS cohort of `patients` patients (deterministic for `seed` and `reference_date`,
    default today) as an extract in the default format; returns the extract directory."""
    return write_extract(cohort_records(patients, seed, reference_date), out_dir, seed)


assert set(EDSS_STEPS) >= {edss_step(x / 10) for x in range(0, 120)}
