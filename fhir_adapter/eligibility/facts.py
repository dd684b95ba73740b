"""MS derived facts: the one module that says what each fact of `criteria.FACTS` is for one patient.

Every evaluator takes a patient's `PatientData`, the rule's `subject` and `window`, and the screening
`Clock`, and returns a `Fact`: a value (a number or the bounds it lies between, a code, true or false), the
FHIR resources it rests on, and words for people. A value of None means unknown, and then `detail` says what
is missing. Only data dated on or before the screening date counts, so a screening is reproducible.

Closed or open world, fact by fact (what absence of data means):

- age, sex: from the Patient; unknown without a birth date / gender. A partial birth date (`1990`) gives
  bounds, and the rule decides only if both ends agree. Unknown also when the birth date is after the screening
  date or more than 122 years before it (`PatientData.impossible_birth`; the run reports it in problems.csv).
- ms-subtype: the MS course of the most recent (active first) Condition coded with a course (SNOMED, FY2026
  ICD-10-CM G35.A-C2, ICD-10-GM G35.1-3). Unknown when MS is recorded without its course (ICD-10 G35,
  G35.D, G35.9), or when the latest records, of one day, give different courses. `none` (so any-of rules
  fail) when the patient has Conditions but no MS at all.
- disease-duration: whole years (like age) from the earliest MS onset (onsetDateTime, onsetPeriod, or onsetAge
  in years with the birth date), else at least the years since the diagnosis was first recorded (a record can
  be younger than the disease: "2 to 10 years" is then not-met above 10, unknown below; a record dated by its
  month or year counts from its latest day); unknown without either.
- edss: the latest EDSS (inside the window when given); unknown without one.
- edss-progression: the latest EDSS in the window against the earliest one before it in the window; met
  when it rose by 1.0 (latest <= 5.0) or 0.5 (latest >= 5.5). Unknown with fewer than two EDSS in the window.
- relapse-count: relapses with onset in the window, as Observation or Condition, records less than 30 days
  after a relapse's first record counting as that relapse (one that began before the window and was recorded
  again inside it is not in the window); `subject` is a minimum severity (mild, moderate, severe), and a relapse
  without severity then counts as maybe. Relapses are recorded at MS visits, so the count is closed only when
  the patient has an MS follow-up record (EDSS, MRI lesion count, relapse, or a relapse Observation saying no:
  not a relapse) on or after the window start; otherwise it is a lower bound ("at least n").
- gd-lesion-count, new-t2-lesion-count: the most lesions on one MRI inside the window (the latest MRI
  without a window); unknown without an MRI there: the MRI may simply not have been done.
- csf-oligoclonal-bands: the latest CSF result; unknown without one.
- therapy: any exposure overlapping the window (a window of 0 d: on the therapy at the screening date, where a dose
  of a drug given at intervals counts until its dosing interval is over; no window: ever). Washout windows count
  from the dose itself. Closed world when the patient has any therapy record (a medication list exists); unknown
  when there is none at all, when an exposure started before the window and its end was not recorded, and when a
  start or end recorded as a month or year may fall either side of the window's start or the screening date.
- therapy-duration: days on drugs of the value set up to the screening date. A drug's records less than 400 days
  apart are one course (an infusion every 6 months, a yearly course), a record of a drug given at intervals shorter
  than its interval (an infusion, a cladribine course of a few days) is one dose and counts its dosing interval from
  its start (`dose-covers` in terminology.yaml; washouts count from the dose itself), a day on two drugs counts
  once; an end not recorded gives a range (to the latest day it may have started, or up to the screening date), so
  does a start or end recorded as a month or year (any of its days), a start not recorded makes it a lower bound.
  Closed world like therapy: 0 days with a medication list without the drugs, unknown without one.
- condition: any Condition of the value set or concept, active or past (refuted ones excluded). Closed world
  when the patient has any Condition (a problem list exists); unknown without one, and unknown when only a
  Condition that may or may not be of it is recorded (terminology `may-be`: a skin cancer of a type the code
  does not tell, for "malignancy other than basal cell carcinoma").
- procedure: a Procedure of the value set done (completed, in progress or stopped) inside the window (its day, a
  period's last day), or ever without a window; one without a date counts for "ever" and is unknown under a
  window. Closed world when the patient has any Procedure; unknown without one (`Fact.unrecorded`), and then,
  since extracts often hold none, its line is left to manual review instead of holding the verdict
  (criteria.FACTS `unrecorded`); an unknown from a record (a transplant without a date) holds it as any does.
- allergy: an active (or status-less) AllergyIntolerance to a substance of the value set, not refuted, recorded
  by the screening date; unconfirmed ones count and say so. Closed world and manual review like procedure.
- lab-positive, lab-value: the latest result of the test (inside the window when given). Open world:
  unknown when the test was not done (no HIV test is not a negative HIV test).
- pregnant: not-met for men; otherwise the latest pregnancy status, test or pregnancy Condition (from its
  onset or record; not pregnant from its abatement) decides: pregnant if positive within 40 weeks, not pregnant
  if negative within 30 days; unknown otherwise (and for an active pregnancy Condition without any date).
- lactating: not-met for men; otherwise the latest breastfeeding status within 6 months; unknown otherwise.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .. import terminology
from ..criteria import FACTS, Window
from .data import (
    END_UNKNOWN,
    INFINITY,
    LAB_NAMES,
    OLDEST_DAYS,
    ONGOING,
    SEVERITY_RANK,
    SUBTYPES,
    Condition,
    Day,
    Exposure,
    PatientData,
    day_of,
    days_text,
    months_after,
    whole_years,
)

SUBTYPE_NAMES = {"rrms": "relapsing-remitting MS", "spms": "secondary progressive MS",
                 "ppms": "primary progressive MS", "none": "no MS diagnosis"}
LAB_UNITS = {"egfr": " mL/min/1.73m2", "platelets": " x10^9/L", "white-cells": " x10^9/L"}
PREGNANT_FOR = 280          # days a positive pregnancy status or test still counts
NOT_PREGNANT_FOR = 30       # days a negative one still counts
LACTATION_FOR = 183
SAME_RELAPSE = 30           # relapse records closer than this are one relapse


class Fact(NamedTuple):
    """One fact for one patient. `value` None: unknown, and `detail` says what is missing.

    For numbers, `value` is the lowest and `upper` the highest the fact may be (None: exactly `value`).
    `unrecorded`: unknown only because the patient has no records of the kind at all (criteria.FACTS
    `unrecorded`), which the engine leaves to manual review.
    """

    value: Any
    evidence: tuple[str, ...] = ()
    detail: str = ""
    upper: float | None = None
    unrecorded: bool = False

    @property
    def known(self) -> bool:
        return self.value is not None


class Clock:
    """The screening date and the start of each look-back window (computed once per window).

    >>> c = Clock(dt.date(2024, 3, 31))
    >>> c.date(c.since(Window(1, "mo"))), c.date(c.since(Window(60, "d")))
    ('2024-02-29', '2024-01-31')
    """

    def __init__(self, as_of: dt.date) -> None:
        self.as_of_date = as_of
        self.as_of: Day = as_of.toordinal()
        self._since: dict[Window | None, Day] = {}
        self._texts: dict[Window | None, str] = {}
        self._dates: dict[Day, str] = {}

    def since(self, window: Window | None) -> Day:
        """First day inside the window (inclusive); day 1 without a window."""
        found = self._since.get(window)
        if found is None:
            found = self._since[window] = _window_start(self.as_of_date, window) if window else 1
        return found

    def date(self, d: Day) -> str:
        found = self._dates.get(d)
        if found is None:
            found = dt.date.fromordinal(d).isoformat()
            if len(self._dates) < 100_000:
                self._dates[d] = found
        return found

    def span(self, first: Day, last: Day | None) -> str:
        """A day, or a month or year recorded without its day (`data.days_text`)."""
        return self.date(first) if last is None or last == first else days_text(first, last)

    def window_text(self, window: Window | None) -> str:
        found = self._texts.get(window)
        if found is None:
            found = self._texts[window] = self._window_text(window)
        return found

    def _window_text(self, window: Window | None) -> str:
        if window is None:
            return f"up to {self.as_of_date.isoformat()}"
        if window.value == 0:
            return f"on {self.as_of_date.isoformat()}"
        unit = {"d": "day", "wk": "week", "mo": "month", "a": "year"}[window.unit]
        plural = "" if window.value == 1 else "s"
        span = f"{window.value} {unit}{plural} before {self.as_of_date.isoformat()}"
        return f"less than {span}" if window.strict else f"in the {span}"


def _window_start(as_of: dt.date, window: Window) -> Day:
    if window.unit == "d":
        start = as_of.toordinal() - window.value
    elif window.unit == "wk":
        start = as_of.toordinal() - 7 * window.value
    else:
        start = months_after(as_of.toordinal(), -window.value * (12 if window.unit == "a" else 1))
    return start + window.strict




def _number(value: float) -> str:
    return f"{value:g}"


# ------------------------------------------------------------------------------------------ registry

Evaluator = Callable[[PatientData, "str | None", "Window | None", Clock], Fact]
EVALUATORS: dict[str, Evaluator] = {}


def evaluator(name: str) -> Callable[[Evaluator], Evaluator]:
    if name not in FACTS:
        raise KeyError(f"no fact {name!r} in criteria.FACTS")

    def register(function: Evaluator) -> Evaluator:
        EVALUATORS[name] = function
        return function
    return register


def fact(name: str, patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    """The value of one fact for one patient at the clock's screening date."""
    try:
        function = EVALUATORS[name]
    except KeyError:
        raise KeyError(f"no evaluator for fact {name!r}: add one to {__name__}") from None
    return function(patient, subject, window, clock)


def _upto(items: list[tuple], clock: Clock, window: Window | None = None) -> list[tuple]:
    """The items (sorted by day) dated inside the window and not after the screening date."""
    hi = bisect_right(items, clock.as_of, key=day_of)
    lo = bisect_left(items, clock.since(window), 0, hi, key=day_of) if window is not None else 0
    return items[lo:hi]


def _members(subject: str) -> frozenset[str]:
    data = terminology.load()
    names = data.valuesets.get(subject)
    if names is None:
        terminology.concept(subject)            # a clear error for an unknown name
        names = (subject,)
    return frozenset(names)


_MEMBERS: dict[str, frozenset[str]] = {}


def members(subject: str) -> frozenset[str]:
    """Concept names of a value set, or the concept itself (cached)."""
    found = _MEMBERS.get(subject)
    if found is None:
        found = _MEMBERS[subject] = _members(subject)
    return found


_POSSIBLY: dict[str, frozenset[str]] = {}


def _possibly(subject: str) -> frozenset[str]:
    """Concepts that may or may not be of a value set or concept (cached)."""
    found = _POSSIBLY.get(subject)
    if found is None:
        found = _POSSIBLY[subject] = terminology.possibly(subject)
    return found


_LABELS: dict[str, str] = {}


def _label(subject: str) -> str:
    found = _LABELS.get(subject)
    if found is None:
        found = _LABELS[subject] = _label_of(subject)
    return found


def _label_of(subject: str) -> str:
    data = terminology.load()
    return terminology.label(subject) if subject in data.valuesets or subject in data.concepts else subject


# ------------------------------------------------------------------------------------------ demographics

@evaluator("age")
def age(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    if patient.birth is None:
        missing = "no birth date recorded" if patient.seen else "no Patient resource"
        return Fact(None, (), missing)
    evidence = (patient.reference,)
    if patient.birth[0] > clock.as_of or clock.as_of - patient.birth[1] > OLDEST_DAYS:     # rare: ask why
        wrong = patient.impossible_birth(clock.as_of_date)
        if wrong:
            return Fact(None, evidence, f"{wrong}: the age is unknown")
    oldest = whole_years(patient.birth[0], clock.as_of)
    youngest = whole_years(min(patient.birth[1], clock.as_of), clock.as_of)    # `2025` on 2025-06-01: 0 at most
    if oldest == youngest:
        return Fact(float(oldest), evidence, f"born {patient.birth_text}: {oldest} years on {clock.as_of_date}")
    return Fact(float(youngest), evidence, f"born {patient.birth_text}: {youngest} to {oldest} years on "
                f"{clock.as_of_date}", upper=float(oldest))


@evaluator("sex")
def sex(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    if not patient.gender:
        return Fact(None, (), "gender not recorded" if patient.seen else "no Patient resource")
    return Fact(patient.gender, (patient.reference,), f"gender {patient.gender}")


# ------------------------------------------------------------------------------------------ MS course

@evaluator("ms-subtype")
def ms_subtype(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    best: tuple[bool, Day] | None = None        # (active, day) of the latest records of a course
    latest: list[Condition] = []                # those records
    course: frozenset[str] = frozenset()        # and the courses they give
    general = None
    for c in patient.conditions:
        when = c.noted
        if when > clock.as_of:
            continue
        mine = c.concepts.intersection(SUBTYPES)
        if mine:
            key = (c.active, when)
            if best is None or key > best:
                best, latest, course = key, [c], mine
            elif key == best:
                latest.append(c)
                course |= mine
        elif "multiple-sclerosis" in c.concepts:
            general = c
    if best is not None:
        if len(course) > 1:
            refs = tuple(c.ref for c in latest)
            if len(latest) == 1:
                return Fact(None, refs, f"{refs[0]} is coded with more than one MS course: {', '.join(sorted(course))}")
            return Fact(None, refs, "different MS courses recorded the same day: "
                        + ", ".join(f"{SUBTYPE_NAMES[n]} ({c.ref})" for c in latest for n in sorted(
                            c.concepts & course)))
        name = next(iter(course))
        if all(c.unconfirmed for c in latest):      # a suspected course (a transition to SPMS): not yet known
            return Fact(None, tuple(c.ref for c in latest), f"{SUBTYPE_NAMES[name]} recorded only as a "
                        f"{' or '.join(sorted({c.unconfirmed for c in latest}))} diagnosis")
        return Fact(name, (latest[0].ref,), SUBTYPE_NAMES[name])
    if general is not None:
        return Fact(None, (general.ref,), "MS is recorded without its course (relapsing-remitting, secondary or "
                                          "primary progressive)")
    if patient.conditions:
        return Fact("none", (), f"no MS diagnosis among {len(patient.conditions)} recorded conditions")
    return Fact(None, (), "no Condition recorded (no MS diagnosis to read the course from)")


@evaluator("disease-duration")
def disease_duration(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    onset = recorded = None
    for c in patient.conditions:
        if "relapse" in c.concepts or not c.concepts & _MS_ANY:
            continue
        if c.onset and c.onset[0] <= clock.as_of and (onset is None or c.onset[0] < onset[0][0]):
            onset = (c.onset, c.ref)
        if c.recorded and c.recorded <= clock.as_of and (recorded is None or c.recorded < recorded[0]):
            recorded = (c.recorded, c.latest_recorded, c.ref)
    if onset is not None:
        (first, last), ref = onset
        shortest = whole_years(min(last, clock.as_of), clock.as_of)
        longest = whole_years(first, clock.as_of)
        if shortest == longest:
            return Fact(float(longest), (ref,), f"MS onset {clock.date(first)}: {longest} years")
        return Fact(float(shortest), (ref,), f"MS onset between {clock.date(first)} and {clock.date(last)}: "
                    f"{shortest} to {longest} years", upper=float(longest))
    if recorded is not None:
        when, latest, ref = recorded                  # the diagnosis may be older than its record: a lower bound,
        years = whole_years(min(latest, clock.as_of), clock.as_of)     # from the latest day a `2019` may mean
        return Fact(float(years), (ref,), f"MS diagnosis recorded {clock.span(when, latest)} (no onset date): at least "
                    f"{years} years", upper=INFINITY)
    return Fact(None, (), "no MS onset or diagnosis date recorded")


_MS_ANY = frozenset(terminology.members("ms-any"))


# ------------------------------------------------------------------------------------------ EDSS

@evaluator("edss")
def edss(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    found = _upto(patient.edss, clock, window)
    if not found:
        return Fact(None, (), f"no EDSS {clock.window_text(window)}")
    when, value, ref = found[-1]
    if len(found) > 1 and found[-2][0] == when:
        return _one_day(_last_day(found), "latest EDSS", "", clock)
    return Fact(value, (ref,), f"latest EDSS {_number(value)} on {clock.date(when)}")


def _last_day(items: list[tuple]) -> list[tuple]:
    """The items (sorted by day, not empty) of the last day among them."""
    when = items[-1][0]
    i = len(items) - 1
    while i and items[i - 1][0] == when:
        i -= 1
    return items[i:]


def _one_day(same: list[tuple], name: str, unit: str, clock: Clock) -> Fact:
    """The values of (day, value, ref) items of one day: where they differ, a range from the lowest to the
    highest, so a rule decides only when all of them agree; else the last of them."""
    when = same[-1][0]
    values = sorted({item[1] for item in same})
    if len(values) == 1:
        return Fact(float(values[0]), (same[-1][2],), f"{name} {_number(values[0])}{unit} on {clock.date(when)}")
    return Fact(float(values[0]), tuple(item[2] for item in same),
                f"{name} {' and '.join(map(_number, values))}{unit}, all on {clock.date(when)}",
                upper=float(values[-1]))


def progression_step(latest: float) -> float:
    """The rise that counts as progression: +1.0 from a latest EDSS <= 5.0, +0.5 from >= 5.5.

    >>> progression_step(5.0), progression_step(5.5)
    (1.0, 0.5)
    """
    return 1.0 if latest <= 5.0 else 0.5


@evaluator("edss-progression")
def edss_progression(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    found = _upto(patient.edss, clock, window)
    if len(found) < 2:
        had = f"only one EDSS ({_number(found[0][1])} on {clock.date(found[0][0])})" if found else "no EDSS"
        return Fact(None, tuple(f[2] for f in found),
                    f"{had} {clock.window_text(window)}; progression needs two")
    (d0, first, r0), (d1, latest, r1) = found[0], found[-1]
    if d0 == d1:
        return Fact(None, (r0, r1), f"the EDSS {clock.window_text(window)} are all from {clock.date(d1)}")
    if found[1][0] == d0 or found[-2][0] == d1:
        return _progression_of_days(_first_day(found), _last_day(found), clock)
    step = progression_step(latest)
    rise = latest - first
    return Fact(rise >= step, (r0, r1), f"EDSS {_number(first)} on {clock.date(d0)} to {_number(latest)} on "
                f"{clock.date(d1)}: {rise:+g} (progression is {step:+g} from {_number(latest)})")


def _first_day(items: list[tuple]) -> list[tuple]:
    """The items (sorted by day, not empty) of the first day among them."""
    when = items[0][0]
    i = 1
    while i < len(items) and items[i][0] == when:
        i += 1
    return items[:i]


def _progression_of_days(first: list[tuple], last: list[tuple], clock: Clock) -> Fact:
    """Progression from the first day's EDSS to the last day's where one of them holds several: decided only
    when every pairing of a first and a last score gives the same answer."""
    firsts, lasts = sorted({f[1] for f in first}), sorted({f[1] for f in last})
    outcomes = {b - a >= progression_step(b) for a in firsts for b in lasts}
    said = (f"EDSS {' and '.join(map(_number, firsts))} on {clock.date(first[0][0])} to "
            f"{' and '.join(map(_number, lasts))} on {clock.date(last[0][0])}")
    evidence = tuple(f[2] for f in first) + tuple(f[2] for f in last)
    if len(outcomes) > 1:
        return Fact(None, evidence, f"{said}: progression or not depends on which score of one day holds")
    progressed = outcomes.pop()
    return Fact(progressed, evidence, f"{said}: {'progression' if progressed else 'no progression'} "
                "whichever score of one day holds")


# ------------------------------------------------------------------------------------------ relapses, MRI

def _last_follow_up(patient: PatientData, clock: Clock) -> tuple[Day, str] | None:
    """The latest MS follow-up record (EDSS, MRI lesion count, relapse, a visit's "no relapse") up to the screening
    date: (day, ref)."""
    latest = None
    for items in (patient.edss, patient.gd_lesions, patient.t2_lesions, patient.relapses, patient.no_relapse):
        found = _upto(items, clock)
        if found and (latest is None or found[-1][0] > latest[0]):
            latest = (found[-1][0], found[-1][-1])
    return latest


def _relapse_history(patient: PatientData, clock: Clock) -> tuple[list[list[tuple]], tuple[Day, str] | None]:
    """The patient's relapses up to the screening date merged into episodes (a record less than 30 days after an
    episode's first is of it), and the latest MS follow-up: worked out once for every relapse window."""
    memo = patient.relapse_history
    if memo is None or memo[0] != clock.as_of:
        episodes: list[list[tuple]] = []
        for item in _upto(patient.relapses, clock):
            if episodes and item[0] - episodes[-1][0][0] < SAME_RELAPSE:
                episodes[-1].append(item)
            else:
                episodes.append([item])
        memo = patient.relapse_history = (clock.as_of, episodes, _last_follow_up(patient, clock))
    return memo[1], memo[2]


@evaluator("relapse-count")
def relapse_count(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    minimum = SEVERITY_RANK.get(subject or "", 0)
    if subject and not minimum:
        raise KeyError(f"relapse-count subject {subject!r}: use a minimum severity ({', '.join(SEVERITY_RANK)})")
    episodes, follow_up = _relapse_history(patient, clock)
    start = clock.since(window)
    counted = [e for e in episodes if e[0][0] >= start]        # a relapse is in the window by its onset
    begun = [e for e in episodes if e[0][0] < start <= e[-1][0]] if window is not None else []
    sure = maybe = 0
    evidence = []
    for records in counted:
        ranks = [r[1] for r in records if r[1] is not None]
        if not minimum or (ranks and max(ranks) >= minimum):
            sure += 1
        elif not ranks:
            maybe += 1
        evidence.extend(r[2] for r in records)
    kind = f"{subject} or worse relapse" if minimum else "relapse"
    where = clock.window_text(window)
    latest = follow_up[0] if follow_up else None
    if latest is None:
        return Fact(float(sure), tuple(evidence), f"{sure} {kind}(s) recorded {where}, but no MS follow-up "
                    "(EDSS, MRI, relapse) is recorded, so relapses cannot be ruled out", upper=INFINITY)
    if latest < start:
        return Fact(float(sure), tuple(evidence), f"{sure} {kind}(s) recorded {where}; the last MS follow-up was on "
                    f"{clock.date(latest)}, before the window, so later relapses may be missing", upper=INFINITY)
    upper = float(sure + maybe) if maybe else None
    text = f"{sure} {kind}(s) {where}"
    if maybe:
        text += f" and {maybe} more without a recorded severity"
    if counted:
        text += f" (onset {', '.join(clock.date(r[0][0]) for r in counted)})"
    else:                               # none: the latest follow-up record is what says so
        evidence.append(follow_up[1])
        text += f" (MS follow-up recorded up to {clock.date(latest)})"
    if begun:                           # recorded again inside the window, of a relapse that began before it
        evidence.extend(r[2] for e in begun for r in e)
        text += (f"; the record(s) inside it from {', '.join(clock.date(e[-1][0]) for e in begun)} are of the "
                 f"relapse with onset {', '.join(clock.date(e[0][0]) for e in begun)}, before the window")
    return Fact(float(sure), tuple(dict.fromkeys(evidence)), text, upper=upper)


def _lesions(items: list[tuple], name: str, patient: PatientData, window: Window | None, clock: Clock) -> Fact:
    found = _upto(items, clock, window)
    if not found:
        return Fact(None, (), f"no MRI with a {name} count {clock.window_text(window)}")
    if window is None:
        found = found[-1:]
    when, value, ref = max(found, key=lambda f: (f[1], f[0]))
    scans = f" (most of {len(found)} MRIs)" if len(found) > 1 else ""
    return Fact(value, (ref,), f"{_number(value)} {name} lesion(s) on the MRI of {clock.date(when)}{scans}")


@evaluator("gd-lesion-count")
def gd_lesion_count(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    return _lesions(patient.gd_lesions, "Gd-enhancing", patient, window, clock)


@evaluator("new-t2-lesion-count")
def new_t2_lesion_count(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    return _lesions(patient.t2_lesions, "new or enlarging T2", patient, window, clock)


# ------------------------------------------------------------------------------------------ labs

def _latest_results(patient: PatientData, lab: str, window: Window | None, clock: Clock) -> list[tuple]:
    """The results with a value (inside the window) of the latest day that has one; none: []."""
    items = _upto(patient.labs.get(lab, ()), clock, window)
    end = len(items)
    while end and items[end - 1][1] is None:    # results without a value after the latest valued one
        end -= 1
    return [item for item in _last_day(items[:end]) if item[1] is not None] if end else []


def _latest_result(patient: PatientData, lab: str, window: Window | None, clock: Clock) -> tuple | None:
    found = _latest_results(patient, lab, window, clock)
    return found[-1] if found else None


@evaluator("csf-oligoclonal-bands")
def csf_oligoclonal_bands(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    return lab_positive(patient, "csf-oligoclonal-bands", window, clock)


@evaluator("lab-positive")
def lab_positive(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    lab = subject or ""
    name = LAB_NAMES.get(lab, lab)
    same = _latest_results(patient, lab, window, clock)
    found = same[-1] if same else None
    if lab == "hcv-rna":
        antibody = _latest_result(patient, "hcv-antibody", window, clock)
        if antibody is not None and (found is None or antibody[0] > found[0]):
            when, positive, ref = antibody      # newer than any RNA test: rules it out, or asks for one
            if not positive:
                return Fact(False, (ref,), f"hepatitis C antibody test negative on {clock.date(when)}")
            return Fact(None, (ref,), f"hepatitis C antibody test positive on {clock.date(when)}, no RNA (PCR) "
                                      "test since")
    if found is None:
        unclear = _upto(patient.labs.get(lab, ()), clock, window)
        if unclear:
            return Fact(None, tuple(u[2] for u in unclear), f"{name} results {clock.window_text(window)} say neither "
                        "positive nor negative")
        return Fact(None, (), f"no {name} result {clock.window_text(window)}")
    when, value, ref = found
    if len(same) > 1 and len({bool(item[1]) for item in same}) > 1:
        return Fact(None, tuple(item[2] for item in same), f"{name} both positive and negative on {clock.date(when)}")
    return Fact(bool(value), (ref,), f"{name} {'positive' if value else 'negative'} on {clock.date(when)}")


@evaluator("lab-value")
def lab_value(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    lab = subject or ""
    name = LAB_NAMES.get(lab, lab)
    same = _latest_results(patient, lab, window, clock)
    if not same:
        return Fact(None, (), f"no {name} result {clock.window_text(window)}")
    when, value, ref = same[-1]
    if len(same) > 1:
        return _one_day(same, f"latest {name}", LAB_UNITS.get(lab, ""), clock)
    return Fact(float(value), (ref,), f"latest {name} {_number(value)}{LAB_UNITS.get(lab, '')} on {clock.date(when)}")


# ------------------------------------------------------------------------------------------ therapy, conditions

@evaluator("therapy")
def therapy(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    wanted = members(subject or "")
    label = _label(subject or "")
    where = clock.window_text(window)
    if not patient.medication_records:
        return Fact(None, (), f"no medication records at all, so {label} {where} cannot be ruled out")
    start_of_window = clock.since(window)
    current = window is not None and window.value == 0      # on the therapy at the screening date
    exposed: list[str] = []
    unsure: list[str] = []
    texts: list[str] = []
    for e in patient.exposures:
        drugs = e.concepts & wanted
        if not drugs:
            continue
        if e.start is not None and e.start > clock.as_of:
            continue                                        # prescribed for later: not yet taken
        drug = ", ".join(sorted(drugs))
        since = clock.span(e.start, e.start_until) if e.start is not None else ""
        started = f"from {since}" if since else "start not recorded"
        covers = _dose(e, max(_COVERS[d] for d in drugs)) if current else 0
        if e.start_until is not None and e.start_until > clock.as_of:     # a month or year across the as-of day
            unsure.append(e.ref)
            texts.append(f"{drug} {started}, perhaps after {clock.date(clock.as_of)}")
        elif covers and clock.as_of < e.latest_start + covers:             # a dose still working, perhaps
            surely = clock.as_of < e.start + covers                         # whichever day of its month or year
            (exposed if surely else unsure).append(e.ref)
            ended = e.earliest_end
            when = (f"dose {'on' if e.start_until is None else 'in'} {since}" if (e.start, e.latest_start) ==
                    (ended, e.end) else f"{started} to {clock.span(ended, e.end)}")
            texts.append(f"{drug} {when}, " + (f"within its {covers}-day dosing interval" if surely else
                                                f"its {covers}-day dosing interval perhaps over"))
        elif e.end == ONGOING:
            exposed.append(e.ref)
            texts.append(f"{drug} {started}, ongoing")
        elif e.end == END_UNKNOWN:
            if e.start is not None and e.start >= start_of_window:
                exposed.append(e.ref)
                texts.append(f"{drug} started {since}")
            else:
                unsure.append(e.ref)
                texts.append(f"{drug} {started}, end not recorded")
        elif e.end >= start_of_window:
            if e.end_from is not None and e.end_from < start_of_window:      # a month or year across its start
                unsure.append(e.ref)
                texts.append(f"{drug} {started}, ended between {clock.date(e.end_from)} and {clock.date(e.end)}")
            else:
                exposed.append(e.ref)
                texts.append(f"{drug} {started} to {clock.date(e.end)}")
    if exposed:
        return Fact(True, tuple(exposed), f"{'; '.join(texts)} ({label} {where})")
    if unsure:
        return Fact(None, tuple(unsure), f"{'; '.join(texts)}: cannot tell whether it reached the window ({where})")
    unknown = patient.unrecognised_medications
    among = f"{patient.medication_records} medication record(s)" + (f", {unknown} of them a drug not recognised"
                                                                    if unknown else "")
    return Fact(False, (), f"no {label} {where} among {among}")


#: Per concept: the days one dose of a drug given at intervals counts for (`dose-covers`), 0 for others.
_COVERS = {name: concept.covers for name, concept in terminology.load().concepts.items()}


def _dose(e: Exposure, covers: int) -> int:
    """`covers`, the dosing interval of the record's drug, when the record is one dose or course (dated, and
    shorter than the interval: an infusion, a cladribine course of a few days); 0 otherwise (a period on the
    drug, a drug taken continuously)."""
    if covers and e.start is not None and e.end not in (ONGOING, END_UNKNOWN) and e.end - e.start < covers:
        return covers
    return 0


#: Records of one drug less than this many days apart are one course, the time between them time on the therapy:
#: infusions every 6 months, and the yearly courses of cladribine or alemtuzumab given a few weeks late. A dose of
#: a drug given at intervals also counts the days of its interval (`dose-covers` in terminology.yaml).
SAME_COURSE = 400


@evaluator("therapy-duration")
def therapy_duration(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    wanted = members(subject or "")
    label = _label(subject or "")
    if not patient.medication_records:
        return Fact(None, (), f"no medication records at all, so the time on {label} is not known")
    as_of = clock.as_of
    spans: dict[str, list[Course]] = {}                           # drug -> its records as one-record courses
    open_start = 0                                                # records without a start
    cited: dict[str, None] = {}                                   # evidence, in the exposures' order
    for e in patient.exposures:
        drugs = e.concepts & wanted
        if not drugs or (e.start is not None and e.start > as_of):
            continue
        cited[e.ref] = None
        if e.start is None:                     # the start is not known: it may have begun at any time before
            open_start += 1
            if e.end in (ONGOING, END_UNKNOWN) or e.end > as_of:
                continue
            early = late = e.earliest_end       # counted from its end: no time on it is known
        else:
            early, late = e.start, e.latest_start
        if e.end == ONGOING:
            shortest = longest = as_of
        elif e.end == END_UNKNOWN:                  # taken for no time at all, or up to the screening date
            shortest, longest = early, as_of
        else:
            shortest, longest = min(e.earliest_end, as_of), min(e.end, as_of)
        for drug in drugs:
            covers = _dose(e, _COVERS[drug])
            if covers:                          # one dose or course: its interval from its start
                course = Course(early, late, min(early + covers, as_of), min(late + covers, as_of), drug, late,
                                covers, False, shortest)
            else:
                course = Course(early, late, shortest, longest, drug, late, 0, e.end == END_UNKNOWN, shortest)
            spans.setdefault(drug, []).append(course)
    courses: list[Course] = []
    for items in spans.values():
        items.sort()
        course = items[0]
        for item in items[1:]:
            if item.early - course.recorded < SAME_COURSE:
                course = course._replace(late=min(course.late, item.late), shortest=max(course.shortest,
                                         item.shortest), longest=max(course.longest, item.longest),
                                         covers=max(course.covers, item.covers),
                                         open_end=course.open_end or item.open_end,
                                         recorded=max(course.recorded, item.recorded))
            else:
                courses.append(course)
                course = item
        courses.append(course)
    least = _covered((c.late, c.shortest) for c in courses)
    most = _covered((c.early, c.longest) for c in courses)
    evidence = tuple(cited)
    courses.sort()
    told = "; ".join(_course_text(c, clock) for c in courses)
    if not courses and not open_start:
        return Fact(0.0, (), f"no {label} {clock.window_text(None)} among {patient.medication_records} "
                             "medication record(s)")
    if open_start:
        told = "; ".join(filter(None, (told, f"{open_start} record(s) without a start")))
        return Fact(float(least), evidence, f"at least {least} days on {label} ({told})", upper=INFINITY)
    if least == most:
        return Fact(float(least), evidence, f"{least} days on {label} ({told})")
    return Fact(float(least), evidence, f"{least} to {most} days on {label} ({told})", upper=float(most))


class Course(NamedTuple):
    """Time on one drug: from a start between `early` and `late` to an end between `shortest` and `longest`;
    `first_until`: the latest day the first record's start may mean, for its text; `covers`: the days each of its
    doses counted (0: none did); `open_end`: a record's end was not recorded; `recorded`: the shortest end
    without the days doses cover (records less than SAME_COURSE days after it are of this course)."""

    early: Day
    late: Day
    shortest: Day
    longest: Day
    drug: str
    first_until: Day
    covers: int
    open_end: bool
    recorded: Day


def _course_text(c: Course, clock: Clock) -> str:
    """`natalizumab 2019 to 2024-05-10`, `... from 2019-03-01 to 2020-01-01 or later, end not recorded`."""
    began = clock.span(c.early, c.first_until)
    if c.shortest == c.longest:
        text = f"{c.drug} {began} to {clock.date(c.shortest)}"
    elif c.open_end:
        text = f"{c.drug} from {began}" + (f" to {clock.date(c.shortest)} or later" if c.shortest > c.late else "") \
            + ", end not recorded"
    else:
        text = f"{c.drug} {began} to {clock.span(c.shortest, c.longest)}"
    return text + (f", each dose counting {c.covers} days" if c.covers else "")


def _covered(spans: Iterable[tuple[Day, Day]]) -> int:
    """Days from the starts to the ends of the (start, end) spans, a day on two drugs counted once."""
    total, reach = 0, 0
    for first, last in sorted(spans):
        begin = max(first, reach)
        if last > begin:
            total += last - begin
            reach = last
    return total


@evaluator("condition")
def condition(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    wanted = members(subject or "")
    label = _label(subject or "")
    if not patient.conditions:
        return Fact(None, (), f"no Condition recorded, so {label} cannot be ruled out")
    found = [c for c in patient.conditions if c.concepts & wanted
             and c.noted <= clock.as_of]
    if found:                               # a provisional or differential diagnosis counts, and says so
        names = sorted({n for c in found for n in c.concepts & wanted})
        doubt = sorted({c.unconfirmed for c in found}) if all(c.unconfirmed for c in found) else ()
        return Fact(True, tuple(c.ref for c in found), f"{', '.join(names)} recorded" +
                    (f" (only as a {' or '.join(doubt)} diagnosis)" if doubt else ""))
    maybe = _possibly(subject or "")
    if maybe:                               # a code that may or may not be of the subject (terminology `may-be`)
        found = [c for c in patient.conditions if c.concepts <= maybe and c.noted <= clock.as_of]
        if found:                           # (another coding of the same Condition may tell what it is)
            names = sorted({terminology.concept(n).display for c in found for n in c.concepts})
            return Fact(None, tuple(c.ref for c in found), f"{', '.join(names)} recorded: it may or may not be "
                                                          f"{label}")
    return Fact(False, (), f"no {label} among {len(patient.conditions)} recorded condition(s)")


# ------------------------------------------------------------------------------------------ procedures, allergies
# An EHR extract often holds no procedures or allergies at all: a patient with none leaves these facts unknown
# (`Fact.unrecorded`), and their lines stay with the site's manual review (criteria.FACTS `unrecorded`).

@evaluator("procedure")
def procedure(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    wanted = members(subject or "")
    label = _label(subject or "")
    where = clock.window_text(window)
    start_of_window = clock.since(window)
    done: list[tuple[Day, str]] = []
    undated: list[str] = []
    for when, concepts, ref in patient.procedures:
        if concepts & wanted:
            if when is None:
                undated.append(ref)
            elif start_of_window <= when <= clock.as_of:
                done.append((when, ref))
    # a history or status Condition (problem list): the procedure was done by its onset, else by its record
    for c in patient.conditions:
        if not c.concepts & wanted or c.noted > clock.as_of:
            continue
        if c.onset and c.onset[0] >= start_of_window:
            done.append((c.onset[0], c.ref))
        elif (c.onset[1] if c.onset else c.latest_recorded or start_of_window) >= start_of_window:
            undated.append(c.ref)       # may be either side of the window's start
    if not done and not undated and not patient.procedure_records:
        return Fact(None, (), f"no Procedure recorded for the patient (the extract may hold none), so {label} "
                              f"{where} cannot be ruled out: manual review", unrecorded=True)
    if done:
        done.sort()
        return Fact(True, tuple(ref for _, ref in done),
                    f"{', '.join(clock.date(when) for when, _ in done)} ({label} {where})")
    if undated:
        if window is None:
            return Fact(True, tuple(undated), f"recorded without a date ({label} {where})")
        return Fact(None, tuple(undated), f"{label} recorded without a date: cannot tell whether {where}")
    return Fact(False, (), f"no {label} {where} among {patient.procedure_records} recorded procedure(s)")


@evaluator("allergy")
def allergy(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    wanted = members(subject or "")
    label = _label(subject or "")
    if not patient.allergy_records:
        return Fact(None, (), f"no AllergyIntolerance recorded for the patient (the extract may hold none), so an "
                              f"allergy to {label} cannot be ruled out: manual review", unrecorded=True)
    found = [(mine, ref, verification) for concepts, ref, verification, when in patient.allergies
             if (mine := concepts & wanted) and (when is None or when <= clock.as_of)]
    if found:
        texts = [", ".join(sorted(names)) + (f" ({verification})" if verification else "")
                 for names, _, verification in found]
        return Fact(True, tuple(ref for _, ref, _ in found), f"allergy or intolerance to {'; '.join(texts)} recorded")
    return Fact(False, (), f"no active allergy to {label} among {patient.allergy_records} allergy record(s)")


# ------------------------------------------------------------------------------------------ pregnancy, lactation

def _male(patient: PatientData) -> bool:
    return patient.gender == "male"


def _disagree(found: list[tuple[Day, bool, str]]) -> bool:
    """Whether the latest day of (day, state, ref) items holds both states."""
    return len(found) > 1 and found[-2][0] == found[-1][0] and len({item[1] for item in _last_day(found)}) > 1


def _both_recorded(found: list[tuple[Day, bool, str]], state: str, clock: Clock) -> Fact:
    same = _last_day(found)
    return Fact(None, tuple(item[2] for item in same),
                f"both {state} and not {state} recorded on {clock.date(same[0][0])}")


@evaluator("pregnant")
def pregnant(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    if _male(patient):
        return Fact(False, (patient.reference,), "male")
    found = _upto(patient.pregnancy, clock)
    undated = None
    recorded = []
    for c in patient.conditions:        # a pregnancy recorded as a Condition: pregnant from its onset (or record)
        if "pregnant" not in c.concepts:
            continue
        began = c.onset[0] if c.onset else c.recorded
        if began is None:
            undated = undated or (c.ref if c.active and c.abated is None else None)
        elif began <= clock.as_of:      # ended (abatement): not pregnant since then
            ended = c.abated is not None and c.abated <= clock.as_of
            if ended or c.active:
                recorded.append((c.abated, False, c.ref) if ended else (began, True, c.ref))
    if recorded:
        found = sorted([*found, *recorded], key=day_of)
    if undated and not found:
        return Fact(None, (undated,), "pregnancy recorded as an active condition without a date")
    if found:
        when, state, ref = found[-1]
        if _disagree(found):
            return _both_recorded(found, "pregnant", clock)
        age = clock.as_of - when
        if state and age <= PREGNANT_FOR:
            return Fact(True, (ref,), f"pregnant on {clock.date(when)}")
        if not state and age <= NOT_PREGNANT_FOR:
            return Fact(False, (ref,), f"not pregnant on {clock.date(when)}")
        said = "pregnant" if state else "not pregnant"
        return Fact(None, (ref,), f"the latest pregnancy status or test ({said} on {clock.date(when)}) is too old; "
                    f"a negative one counts for {NOT_PREGNANT_FOR} days")
    return Fact(None, (), f"no pregnancy status or test in the {NOT_PREGNANT_FOR} days before {clock.as_of_date}")


@evaluator("lactating")
def lactating(patient: PatientData, subject: str | None, window: Window | None, clock: Clock) -> Fact:
    if _male(patient):
        return Fact(False, (patient.reference,), "male")
    found = _upto(patient.lactation, clock)
    if found and clock.as_of - found[-1][0] <= LACTATION_FOR:
        if _disagree(found):
            return _both_recorded(found, "breastfeeding", clock)
        when, state, ref = found[-1]
        return Fact(state, (ref,), f"{'breastfeeding' if state else 'not breastfeeding'} on {clock.date(when)}")
    return Fact(None, tuple(f[2] for f in found[-1:]),
                f"no breastfeeding status in the {LACTATION_FOR} days before {clock.as_of_date}")
