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
3, 6 and 12 months before the reference date).

As in a tertiary MS centre that runs MSC trials, a small share of patients (`REFERRED_SHARE`) were referred
for trial screening: they have the profile the trials recruit (active relapsing or progressive MS, EDSS 3.0
to 7.0, 2 to 15 years of disease, aged 21 to 55, a recent MRI, EDSS progression or relapses as the trials
ask, disease-modifying therapy stopped beyond the washouts) and the pre-screening work-up of the last
months (infection serologies, blood count, eGFR, pregnancy test and breastfeeding status for women). Some
of them still fail one criterion or miss one test, so screening on the reference date finds eligible,
ineligible and needs-review patients for every trial.

Each patient's history comes from its own random streams (`seed`, patient number), so a cohort of N is
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
#: Share of patients referred for MSC-trial screening (drawn from a stream of its own, so the other
#: patients' histories do not depend on it).
REFERRED_SHARE = 0.06
#: Drugs whose effect lasts: SMART-MS asks 12 months since them (6 months since the other DMTs).
LONG_ACTING = ("ocrelizumab", "rituximab", "ofatumumab", "cladribine", "alemtuzumab", "mitoxantrone")
#: What may keep a referred patient out, one at most (`_Referral.defect`), with its share among them.
DEFECTS = (("none", 0.58), ("no-serology", 0.06), ("no-egfr", 0.04), ("no-platelets", 0.03),
           ("no-pregnancy-test", 0.04), ("old-mri", 0.04), ("one-edss", 0.03), ("no-csf", 0.02),
           ("edss-high", 0.03), ("edss-low", 0.02), ("too-old", 0.03), ("too-long", 0.02), ("recent-steroids", 0.02),
           ("recent-relapse", 0.02), ("recent-dmt", 0.03), ("positive-serology", 0.01), ("low-platelets", 0.01),
           ("low-egfr", 0.01))
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

    #: Comorbidities as a share of the clinic's rates.
    comorbidity = 1.0

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
            self._relapse(day, r.choices(("mild", "moderate", "severe", None), (0.28, 0.42, 0.15, 0.15))[0])

    def _relapse(self, day: dt.date, severity: str | None) -> None:
        """A relapse, often treated by a corticosteroid pulse."""
        r = self.rng
        self.relapses.append(Relapse(self.row("R"), self.mrn, day.isoformat(), severity))
        if severity in ("moderate", "severe") and r.random() < 0.75:
            pulse = day + self.days(0, 12)
            if pulse <= self.today:
                self._pulse(pulse)

    def _pulse(self, day: dt.date) -> None:
        drug = "methylprednisolone" if self.rng.random() < 0.9 else "prednisone"
        self._add_therapy(drug, day, min(self.today, day + self.days(2, 5 if drug != "prednisone" else 21)))

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
            if r.random() < share * self.comorbidity:
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
            out.append(self._assessment(day, edss_step(value)))
        return out

    def _assessment(self, day: dt.date, score: float) -> EdssAssessment:
        """An EDSS assessment, with functional-system grades for some."""
        r = self.rng
        systems: tuple[tuple[str, int], ...] = ()
        if r.random() < 0.2:
            systems = tuple((concept, min(top, max(0, int(round(score / 1.6 + r.gauss(0, 0.7))))))
                            for _, concept, top in FUNCTIONAL_SYSTEMS)
        return EdssAssessment(self.row("E"), self.mrn, day.isoformat(), score, systems)

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
            out.append(self._lab(day, test, value, result))

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

    def _lab(self, day: dt.date, test: str, value: float | None = None, result: str | None = None) -> LabResult:
        ucum, unit = {"egfr": ("mL/min/{1.73_m2}", "mL/min/1.73 m2"), "platelets": ("10*9/L", "10^9/L"),
                      "white-cells": ("10*9/L", "10^9/L")}.get(test, (None, None))
        return LabResult(self.row("L"), self.mrn, day.isoformat(), test, value, ucum if value is not None else None,
                         unit if value is not None else None, result)

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


class _Referral(_History):
    """A patient referred for MSC-trial screening: the profile the trials recruit and the pre-screening work-up,
    with at most one `defect` (a criterion failed or a test missing; `DEFECTS`).

    Two profiles: `active`, relapsing MS with a relapse in the last year, or SPMS / PPMS with enhancing lesions
    and EDSS progression (the MESEMS trials); `progressive`, SPMS or PPMS without relapses for two years, EDSS
    4 to 7, therapy stopped long ago (SMART-MS, and the MESEMS trials too when the MRI enhances and the patient
    is young enough). Courses, EDSS, durations and ages vary inside and, for a few, just outside the ranges.
    """

    comorbidity = 0.5                           # the referring neurologist knew of some exclusions

    def __init__(self, rng: random.Random, number: int, today: dt.date) -> None:
        self.rng, self.today = rng, today
        self.mrn = f"MS{number:06d}"
        self.rows = dict.fromkeys(("D", "E", "R", "I", "L", "M", "S"), 0)
        r = rng
        self.profile = "active" if r.random() < 0.55 else "progressive"
        self.defect = r.choices([d for d, _ in DEFECTS], [w for _, w in DEFECTS])[0]
        active = self.profile == "active"
        self.course = (r.choices(("rrms", "spms", "ppms"), (0.55, 0.3, 0.15)) if active
                       else r.choices(("spms", "ppms"), (0.55, 0.45)))[0]
        self.sex = "female" if r.random() < (0.68 if self.course != "ppms" else 0.5) else "male"
        youngest = 21 if self.course == "rrms" else 30     # progressive MS starts later
        self.age = r.uniform(youngest, 50.9) if active else r.uniform(youngest + 2, 55.9)
        if self.defect == "too-old":
            self.age = r.uniform(51.1, 54.9) if active else r.uniform(56.1, 58.9)
        duration = r.uniform(2.3, 9.7) if active else r.uniform(2.5, 14.5)
        if self.defect == "too-long":
            duration = r.uniform(10.3, 13.5) if active else r.uniform(15.3, 18)
        self.age = max(self.age, duration + 16)
        self.birth = today - dt.timedelta(days=int(self.age * YEAR))
        self.onset = today - dt.timedelta(days=int(duration * YEAR))
        self.diagnosed = self.onset + dt.timedelta(days=int(min(r.expovariate(1 / 300), duration * YEAR / 2)))
        self.conversion = (self.onset + dt.timedelta(days=int(r.uniform(0.35, 0.7) * duration * YEAR))
                           if self.course == "spms" else None)
        self.active, self.rate = True, r.lognormvariate(0, 0.3)
        self.window = max(self.diagnosed, today - dt.timedelta(days=int(r.uniform(2.5, 5) * YEAR)))
        self.therapies, self.relapses = [], []
        steps = (3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5)
        self.target = (r.choices(steps, (2, 3, 3, 3, 2, 2, 2, 1)) if active
                       else r.choices(steps[2:] + (7.0,), (2, 2, 3, 3, 3, 2, 1)))[0]
        if self.defect == "edss-high":
            self.target = 7.0 if active else 7.5
        elif self.defect == "edss-low":
            self.target = 2.5 if active else 3.5
        # what the trials look for: a relapse in the last year, or enhancing lesions on the last MRI
        self.recent_relapse = active and (self.course == "rrms" or self.course == "spms" and r.random() < 0.5)
        self.enhancing = (not self.recent_relapse or r.random() < 0.6) if active else r.random() < 0.7

    def plan_therapies(self) -> None:
        r, today = self.rng, self.today
        if r.random() < 0.04:                   # never treated: no medication list at all
            return
        if self.course == "ppms":
            drugs = ["ocrelizumab"] if r.random() < 0.85 else ["rituximab"] if r.random() < 0.6 else []
        else:
            drugs = [r.choice(FIRST_LINE)] + ([r.choice(FIRST_LINE)] if r.random() < 0.3 else [])
            if r.random() < 0.75:
                drugs.append(r.choice(HIGH_EFFICACY))
            if self.course == "spms" and r.random() < 0.3:
                drugs.append("siponimod")
        if not drugs:
            return
        if self.defect == "recent-dmt":
            gap = r.uniform(35, 85)
        elif self.profile == "active":
            gap = r.uniform(100, 600)
        else:
            gap = r.uniform(380, 800) if drugs[-1] in LONG_ACTING else r.uniform(190, 700)
        gap = min(gap, max(35.0, (today - self.diagnosed).days - 200 - r.uniform(0, 100)))  # treated soon after
        end, planned = today - dt.timedelta(days=int(gap)), []
        for drug in reversed(drugs):            # the last stopped `gap` days ago, the others before it
            length = {"cladribine": 1.1, "alemtuzumab": 1.05, "mitoxantrone": 1.8}.get(drug, r.uniform(0.8, 3.5))
            start = max(end - dt.timedelta(days=int(length * YEAR)), self.diagnosed + 20 * DAY)
            if (end - start).days < 90:
                break
            planned.append((drug, start, end))
            end = start - self.days(14, 150)
        for drug, start, end in reversed(planned):
            self._add_therapy(drug, start, end)

    def plan_relapses(self) -> None:
        r, today = self.rng, self.today
        if self.course != "ppms":               # the earlier history: none in the last 14 months or 2 years
            quiet = today - dt.timedelta(days=420 if self.profile == "active" else 740 + int(r.uniform(0, 200)))
            day = self.window
            while True:
                day += dt.timedelta(days=int(r.expovariate(0.6 if self.course == "rrms" else 0.35) * YEAR) + 1)
                if day > quiet:
                    break
                self._relapse(day, r.choices(("mild", "moderate", "severe", None), (0.25, 0.45, 0.2, 0.1))[0])
        if self.recent_relapse:
            self._relapse(today - self.days(62, 330), r.choices(("moderate", "severe", None), (0.6, 0.3, 0.1))[0])
        if self.defect == "recent-relapse":
            self._relapse(today - self.days(12, 55), r.choice(("mild", "moderate", "severe")))
        if self.defect == "recent-steroids":    # a pulse for a suspected relapse, or another illness
            self._pulse(today - self.days(5, 25))
        self.relapses.sort(key=lambda rel: rel.onset)

    def edss(self) -> list[EdssAssessment]:
        """The latest EDSS is the target; progressing patients rose by a step over the last year."""
        r, today, target = self.rng, self.today, self.target
        step = 1.0 if target <= 5.0 else 0.5
        progressing = self.course in ("spms", "ppms") or r.random() < 0.3
        latest = today - self.days(3, 60)
        before = today - (self.days(400, 520) if self.defect == "one-edss" else self.days(240, 340))
        start = target - (step + (0.5 if r.random() < 0.3 else 0.0)) if progressing else target + r.choice(
            (-0.5, 0.0, 0.0, 0.5))
        visits = [(latest, target), (before, start)]
        if r.random() < 0.5 and self.defect != "one-edss":
            visits.append((today - self.days(120, 200), edss_step((start + target) / 2 + 0.01)))
        day, value = before, start
        while True:
            day -= self.days(0.5 * YEAR, 1.2 * YEAR)
            if day < self.window:
                break
            value = min(value, value - 0.35 * self.rate + r.gauss(0, 0.3))
            visits.append((day, value))
        return [self._assessment(day, edss_step(max(1.0, value))) for day, value in sorted(visits)]

    def mri(self) -> list[MriExam]:
        r, today, out = self.rng, self.today, []
        volume = r.uniform(4, 18)
        recent = today - (self.days(400, 560) if self.defect == "old-mri" else self.days(10, 200))
        days, day = [recent], recent
        while True:
            day -= self.days(1.0 * YEAR, 1.8 * YEAR)
            if day < self.window:
                break
            days.append(day)
        for day in sorted(days):
            if day == recent:
                gd = 1 + _poisson(r, 1.0) if self.enhancing else 0
                new_t2 = 1 + _poisson(r, 1.5) if self.profile == "active" else _poisson(r, 0.8)
            else:
                gd, new_t2 = _poisson(r, 0.8), _poisson(r, 1.2)
            volume += r.uniform(0, 0.8) + 0.5 * new_t2
            out.append(MriExam(self.row("I"), self.mrn, day.isoformat(), gd, new_t2,
                               round(volume, 1) if r.random() < 0.5 else None))
        return out

    def labs(self, pregnant: bool) -> list[LabResult]:
        """The pre-screening work-up of the last months, and the CSF of the diagnosis."""
        r, today, defect, tests = self.rng, self.today, self.defect, []
        day = today - self.days(7, 120)
        if defect != "no-egfr":
            tests.append((day, "egfr", round(r.uniform(44, 58) if defect == "low-egfr"
                                             else min(150.0, max(62.0, r.gauss(98, 13))), 0), None))
        if defect != "no-platelets":
            tests.append((day, "platelets", round(r.uniform(70, 95) if defect == "low-platelets"
                                                  else max(140.0, r.gauss(250, 50)), 0), None))
        tests.append((day, "white-cells", round(max(3.5, r.gauss(6.5, 1.4)), 1), None))
        serology = ["hiv", "hbsag", "hcv", "syphilis", "htlv"]
        missing = r.choice(serology) if defect == "no-serology" else None
        positive = r.choice(("hbsag", "hcv")) if defect == "positive-serology" else None
        tests.extend((day, test, None, "positive" if test == positive else "negative")
                     for test in serology if test != missing)
        if defect != "no-csf" and (self.course == "ppms" or r.random() < 0.6):
            tests.append((self.diagnosed, "csf-oligoclonal-bands", None,
                          "positive" if r.random() < 0.93 else "negative"))
        if self.sex == "female":
            when = today - (self.days(45, 150) if defect == "no-pregnancy-test" else self.days(1, 25))
            tests.append((when, "pregnancy-test", None, "negative"))
        return [self._lab(*test) for test in sorted(tests, key=lambda t: t[0])]

    def status(self) -> tuple[list[StatusFact], bool]:
        """Women are asked whether they breastfeed."""
        if self.sex != "female":
            return [], False
        return [StatusFact(self.row("S"), self.mrn, (self.today - self.days(1, 120)).isoformat(), "lactation",
                           False)], False


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
        referred = random.Random(f"fhir-adapter referral {seed} {number}").random() < REFERRED_SHARE
        history = _Referral if referred else _History
        yield history(random.Random(f"fhir-adapter cohort {seed} {number}"), number, today).record()


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
