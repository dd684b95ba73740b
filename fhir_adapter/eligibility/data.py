"""Patient data for screening: FHIR resources reduced, once, to what the MS facts need, indexed per patient.

Each relevant resource becomes one small tuple in its patient's `PatientData` (dates as day ordinals,
values as floats, a `Type/id` reference kept as evidence). Everything else in the resource is dropped here,
so the facts never walk FHIR JSON again. What real EHRs send is accepted:

- relapses as Observation or Condition (SNOMED 192929006), with severity from `Condition.severity`,
  `Observation.valueCodeableConcept` or a `severity` component (mild / moderate / severe; in words only when
  they name one, not negated: "not severe" or "mild-moderate" is an unknown severity); a relapse
  Observation whose value says no (`valueBoolean: false`, "No", negative) is a visit that found no relapse:
  not a relapse, but an MS follow-up record (`no_relapse`);
- MS course as SNOMED, ICD-10, FY2026 ICD-10-CM subcodes or ICD-10-GM, ICD-10 codes with or without their dot
  (the most specific coding wins);
- any code with its system named by an OID or older URL (`system-aliases` in terminology.yaml) or with a trailing
  slash, with spaces around the code, an ICD-10 or ATC code in lower case: normalised when the code as written
  is not known (`_missed`), so the common path does no extra work;
- therapies as MedicationStatement, MedicationRequest or MedicationAdministration, coded in RxNorm
  (ingredient or product) or ATC (old and new codes); R4 `medicationCodeableConcept` / `medicationReference`
  or R5 `medication` (a CodeableReference); a Medication referenced, contained or not (one not found is
  reported); the drug name in the text or display as a last resort, a reference's display too;
- MS onset as onsetDateTime, onsetPeriod or onsetAge (years or months); an active MedicationStatement without
  effective[x] counts from its dateAsserted; a MedicationRequest with several dosage instructions from the
  earliest start of their boundsPeriods to the latest end (`_bounds`); a therapy that ends before it starts is
  reported and used without its dates (taken, when not known: a washout or current treatment is then unknown,
  not decided by a wrong date);
- EDSS as valueQuantity, valueInteger, a numeric valueString or valueDecimal (which neither R4 nor R5
  Observation defines, but some exports write); lesion counts as valueInteger or valueQuantity; labs by any
  LOINC code `mappings/terminology.yaml` accepts for the concept.

A resource that is relevant but unusable (an EDSS without a date or with a score of 11, an eGFR of -5 or NaN)
is not silently dropped: it becomes a `Problem` naming where it came from. JSON `NaN` and `Infinity` reach
here as floats (Python's json reads them), and so do `"NaN"` strings: no range check lets them through.

>>> p = index_resources([{"resourceType": "Patient", "id": "p1", "birthDate": "1990-05-02", "gender": "female"},
...     {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
...      "code": {"coding": [{"system": "http://snomed.info/sct", "code": "273554001"}]},
...      "effectiveDateTime": "2024-03-02", "valueQuantity": {"value": 3.5}}]).patients["p1"]
>>> p.gender, p.edss
('female', [(738947, 3.5, 'Observation/o1')])
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from .. import terminology

INFINITY = float("inf")

#: Day ordinals (`datetime.date.toordinal`) stand for dates throughout screening.
Day = int

#: Exposure end for a therapy still going on; and for one that ended on a day nobody recorded.
ONGOING: Day = 10**7
END_UNKNOWN: Day = -1

#: Results that count under another subject too: an RNA test is a hepatitis C test (`hcv`: either kind), and
#: the antibody tests alone (`hcv-antibody`) are what `hcv-rna` weighs against the RNA tests.
_LAB_ALSO = {"hcv-rna": "hcv", "hcv": "hcv-antibody"}
LAB_CONCEPTS = frozenset({"egfr", "platelets", "white-cells", "hiv", "hbsag", "hcv", "hcv-rna", "syphilis", "htlv",
                          "pregnancy-test", "csf-oligoclonal-bands"})
SEVERITY_RANK = {"mild": 1, "moderate": 2, "severe": 3}
SUBTYPES = ("rrms", "spms", "ppms")

# Cell counts arrive as 10*9/L or its equals, or per microlitre; facts compare in 10*9/L.
_COUNT_FACTORS = {"10*9/l": 1.0, "10^9/l": 1.0, "10*3/ul": 1.0, "10^3/ul": 1.0, "k/ul": 1.0, "10*3/mm3": 1.0,
                  "/ul": 0.001, "/mm3": 0.001, "/nl": 1.0, "gpt/l": 1.0, "g/l": 1.0}
#: The values a numeric lab result can possibly have, in the unit the facts compare in: (unit, highest).
#: Below 0, above the highest, NaN or infinite, a result is reported as a problem and not used. The bounds are
#: wide on purpose, as a value reported here is lost to screening: only what no patient can have is out (a
#: count in /uL written as 10*9/L, a sign or decimal point lost). eGFR: the estimating equations stay below
#: about 230 even for the lowest creatinine a lab reports, and measured hyperfiltration below 200. Platelets
#: and white cells: the highest counts reported in thrombocythaemia and leukaemia are a few thousand and under
#: two thousand 10*9/L. (`range` in mappings/ehr/catalog/labs.yaml is narrower: what `patients map` accepts
#: as plausible from an extract it converts, and rejects otherwise.)
LAB_LIMITS = {"egfr": ("mL/min/1.73m2", 250.0), "platelets": ("10*9/L", 10_000.0), "white-cells": ("10*9/L", 2_000.0)}
#: Each lab concept in words, for reasons and problems.
LAB_NAMES = {"egfr": "eGFR", "platelets": "platelet count", "white-cells": "white cell count", "hiv": "HIV test",
             "hbsag": "hepatitis B surface antigen test", "hcv": "hepatitis C test",
             "hcv-rna": "hepatitis C RNA (PCR) test", "syphilis": "syphilis test",
             "htlv": "HTLV test", "pregnancy-test": "pregnancy test",
             "csf-oligoclonal-bands": "CSF oligoclonal band test"}
#: Years no one is older than: the longest verified human life is 122 years (Jeanne Calment, 1875-1997).
OLDEST = 122
#: Fewer days than OLDEST years: a birth date closer to the screening date needs no closer look.
OLDEST_DAYS = 365 * OLDEST
_QUALITATIVE_WORDS = {"positive": True, "pos": True, "detected": True, "reactive": True, "present": True,
                      "yes": True, "negative": False, "neg": False, "not detected": False, "non-reactive": False,
                      "nonreactive": False, "absent": False, "no": False, "undetected": False}
_UNCONFIRMED = {"provisional", "differential", "unconfirmed"}     # a Condition's verificationStatus
_SKIPPED_STATUS = {"entered-in-error", "cancelled", "not-done", "not-taken", "refuted", "preliminary-error",
                   "draft", "unknown-error"}


@dataclass(frozen=True, slots=True)
class Problem:
    """A relevant resource that could not be used, and why; `where` is `file:line` or `Type/id`."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(slots=True)
class Condition:
    """A recorded condition: its concepts, onset (earliest, latest possible day), recorded day (its earliest, for a
    month or year: `recorded_until` its latest), status."""

    concepts: frozenset[str]
    onset: tuple[Day, Day] | None
    recorded: Day | None
    abated: Day | None
    active: bool
    ref: str
    onset_age: tuple[int, int] | None = None    # onsetAge as (months, precision in months), until the birth
                                                # date resolves it: 25 years is (300, 12), 30 months (30, 1)
    unconfirmed: str = ""                       # "provisional", "differential" or "unconfirmed": not confirmed
    recorded_until: Day | None = None           # the latest day a recordedDate `2019` or `2019-03` may mean

    @property
    def latest_recorded(self) -> Day | None:
        return self.recorded if self.recorded_until is None else self.recorded_until

    @property
    def noted(self) -> Day:
        """The day the condition is known from: recorded, else its earliest onset (0 when neither is given)."""
        return self.recorded or (self.onset[0] if self.onset else 0)


@dataclass(slots=True)
class Exposure:
    """A therapy taken from `start` to `end` (ONGOING, END_UNKNOWN or a day). A date without its day (`2019`,
    `2025-05`) starts at its earliest day (`start_until` its latest) and ends at its latest (`end_from` its
    earliest)."""

    concepts: frozenset[str]
    start: Day | None
    end: Day
    ref: str
    end_from: Day | None = None                 # the earliest day an end recorded as a month or year may mean
    start_until: Day | None = None              # the latest day a start recorded as a month or year may mean

    @property
    def latest_start(self) -> Day | None:
        return self.start if self.start_until is None else self.start_until

    @property
    def earliest_end(self) -> Day:
        return self.end if self.end_from is None else self.end_from


@dataclass(slots=True)
class PatientData:
    """One patient's facts-ready data; lists of (day, value, reference) are kept sorted by day."""

    id: str
    birth: tuple[Day, Day] | None = None        # earliest and latest possible birth day
    birth_text: str | None = None
    gender: str | None = None
    deceased: tuple[Day, Day] | bool = False    # the days death may be on (`2025-06`), True when only known to
    deceased_text: str | None = None            # have died; and a deceasedDateTime that is not a date
    where: str = ""                             # where the Patient resource was read (`file:line`, `Type/id`)
    conditions: list[Condition] = field(default_factory=list)
    relapses: list[tuple[Day, int | None, str]] = field(default_factory=list)   # (onset, severity rank, ref)
    no_relapse: list[tuple[Day, bool, str]] = field(default_factory=list)      # relapse Observations saying no
    edss: list[tuple[Day, float, str]] = field(default_factory=list)
    gd_lesions: list[tuple[Day, float, str]] = field(default_factory=list)
    t2_lesions: list[tuple[Day, float, str]] = field(default_factory=list)
    labs: dict[str, list[tuple[Day, Any, str]]] = field(default_factory=dict)  # value: float, bool or None
    pregnancy: list[tuple[Day, bool, str]] = field(default_factory=list)
    lactation: list[tuple[Day, bool, str]] = field(default_factory=list)
    exposures: list[Exposure] = field(default_factory=list)
    procedures: list[tuple[Day | None, frozenset[str], str]] = field(default_factory=list)  # recognised ones
    procedure_records: int = 0                  # Procedures read (not cancelled or in error), recognised or not
    allergies: list[tuple[frozenset[str], str, str, Day | None]] = field(default_factory=list)
    #                                             (concepts, ref, "unconfirmed" or "", day recorded or of onset)
    allergy_records: int = 0                    # AllergyIntolerances read (not refuted), recognised or not
    medication_records: int = 0                 # therapy resources read, recognised or not
    unrecognised_medications: int = 0           # of these, drugs known by no code or name in terminology.yaml
    observations: int = 0
    #: facts' memo for every relapse window: (screening day, relapses merged into episodes, latest follow-up)
    relapse_history: tuple[Day, list[list[tuple]], tuple[Day, str] | None] | None = None

    @property
    def reference(self) -> str:
        return f"Patient/{self.id}"

    @property
    def seen(self) -> bool:
        """Whether a Patient resource was read (not only references to it)."""
        return bool(self.where)

    def deceased_by(self, as_of: dt.date) -> str | None:
        """Why the patient is not screened at `as_of`: "deceased (on <date>)"; None while alive then. A death
        recorded as a month or year that may be either side of `as_of` counts (no invitation for the dead).

        >>> [PatientData("p1", deceased=day_range(d)).deceased_by(dt.date(2025, 6, 1)) for d in ("2025-05", "2025-06",
        ...                                                                                      "2030", "2025-06-02")]
        ['deceased in 2025-05', 'deceased in 2025-06, perhaps after 2025-06-01', None, None]
        """
        died = self.deceased
        if died is True:
            text = self.deceased_text
            return "deceased" if text is None else f"deceased (deceasedDateTime {text!r} is not a FHIR date)"
        if not died:
            return None
        first, last = died
        today = as_of.toordinal()
        if last <= today:
            return f"deceased {'on' if first == last else 'in'} {days_text(first, last)}"
        if first <= today:
            return f"deceased in {days_text(first, last)}, perhaps after {as_of.isoformat()}"
        return None

    def impossible_birth(self, as_of: dt.date) -> str | None:
        """Why the birth date cannot be right at the screening date `as_of`, which leaves the age unknown: after
        it, or more than OLDEST years before it; None when it can be (or is not recorded).

        >>> p = PatientData("p1", birth=(day("1870-01-01"),) * 2, birth_text="1870-01-01")
        >>> p.impossible_birth(dt.date(1990, 1, 1)), p.impossible_birth(dt.date(2000, 1, 1))
        (None, 'birthDate 1870-01-01 makes the patient 130 years old on 2000-01-01, older than anyone has lived')
        >>> p.impossible_birth(dt.date(1869, 12, 31))
        'birthDate 1870-01-01 is after the screening date 1869-12-31'
        """
        birth = self.birth
        if birth is None:
            return None
        today = as_of.toordinal()
        if birth[0] > today:                    # even its earliest day: `2026` is possible on 2026-06-01
            return f"birthDate {self.birth_text} is after the screening date {as_of.isoformat()}"
        if today - birth[1] > OLDEST_DAYS:
            years = whole_years(birth[1], today)
            if years > OLDEST:
                return (f"birthDate {self.birth_text} makes the patient {years} years old on {as_of.isoformat()}, "
                        "older than anyone has lived")
        return None

    def _dated(self) -> tuple[list[tuple[Day, Any, str]], ...]:
        """The lists of (day, value, reference) items."""
        return (self.relapses, self.no_relapse, self.edss, self.gd_lesions, self.t2_lesions, self.pregnancy,
                self.lactation,
                *self.labs.values())

    def drop_before_birth(self) -> list[tuple[str, str]]:
        """Remove the observations, relapses and therapies dated before the earliest possible birth day (a wrong
        date, or another patient's record) and return them as (reference, date as recorded): reported, not used.
        The dated lists must be sorted (`sort`)."""
        if self.birth is None:
            return []
        born = self.birth[0]
        dropped = []
        for items in self._dated():
            if items and items[0][0] < born:
                early = bisect_left(items, born, key=day_of)
                dropped += [(item[2], days_text(item[0])) for item in items[:early]]
                del items[:early]
        therapies = {e.ref: days_text(e.start, e.start_until) for e in self.exposures
                     if e.start is not None and e.latest_start < born}
        if therapies:
            dropped += therapies.items()
            self.exposures = [e for e in self.exposures if e.ref not in therapies]
            self.medication_records -= len(therapies)
        return dropped

    def sort(self) -> None:
        """Order every dated list by day (facts rely on it) and reference, the therapies by start, end and
        reference, the conditions by reference: the same facts, reasons and evidence whatever order the input
        came in (files, workers, or a server's pages), also when two records share a day."""
        for items in self._dated():
            if len(items) > 1:
                items.sort(key=_DAY_AND_REFERENCE)
        if len(self.exposures) > 1:
            self.exposures.sort(key=_exposure_order)
        if len(self.conditions) > 1:
            self.conditions.sort(key=_reference)
        if len(self.procedures) > 1:
            self.procedures.sort(key=_procedure_order)
        if len(self.allergies) > 1:
            self.allergies.sort(key=itemgetter(1))             # by reference


_DAY_AND_REFERENCE = itemgetter(0, 2)        # of a (day, value, reference) item
day_of = itemgetter(0)                      # the day of such an item (facts bisect the lists by it)


def _reference(item: Condition) -> str:
    return item.ref


def _procedure_order(item: tuple[Day | None, frozenset[str], str]) -> tuple[Day, str]:
    return (-1 if item[0] is None else item[0]), item[2]


def _exposure_order(e: Exposure) -> tuple[Day, Day, str]:
    return (-1 if e.start is None else e.start), e.end, e.ref


def screenable(patients: Iterable[PatientData], as_of: dt.date) -> tuple[list[PatientData], list[Problem]]:
    """The patients to screen at `as_of`, in the order given, and what is reported about them: the dead are left
    out (candidates for nothing), an impossible birth date is told (the age is then unknown), records dated
    before the birth date are dropped (`drop_before_birth`) and told."""
    alive: list[PatientData] = []
    problems: list[Problem] = []
    for patient in patients:
        died = patient.deceased_by(as_of)
        if died:
            where = patient.where or patient.reference              # the file and line, where there is one
            who = "" if where == patient.reference else f"{patient.reference} "
            problems.append(Problem(where, f"{who}{died}: not screened"))
            continue
        wrong = patient.impossible_birth(as_of)
        if wrong:
            problems.append(Problem(patient.where or patient.reference, f"{wrong}: the age is unknown"))
        else:
            problems += [Problem(ref, f"dated {when}, before the birth date {patient.birth_text} of "
                                      f"{patient.reference}: not used")
                         for ref, when in patient.drop_before_birth()]
        alive.append(patient)
    return alive, problems


# --------------------------------------------------------------------------------------------- dates

_DAYS: dict[str, Day | None] = {}


def day(text: Any) -> Day | None:
    """The day of a FHIR date or dateTime (`2024-03-02`, `2024-03-02T10:00:00+01:00`); None if not a full date.

    >>> day("2024-03-02T23:30:00Z") - day("2024-03-01")
    1
    """
    if not isinstance(text, str) or len(text) < 10:
        return None
    key = text[:10]
    found = _DAYS.get(key, False)
    if found is False:
        try:
            found = dt.date(int(key[0:4]), int(key[5:7]), int(key[8:10])).toordinal() if key[4] == key[7] == "-" \
                else None
        except ValueError:
            found = None
        if len(_DAYS) < 1_000_000:
            _DAYS[key] = found
    return found  # type: ignore[return-value]


def day_range(text: Any) -> tuple[Day, Day] | None:
    """Earliest and latest day a FHIR date may mean: `2015` spans the whole year.

    >>> [dt.date.fromordinal(d).isoformat() for d in day_range("2015-02")]
    ['2015-02-01', '2015-02-28']
    """
    if not isinstance(text, str):
        return None
    exact = day(text)
    if exact is not None:
        return exact, exact
    try:
        if len(text) == 7 and text[4] == "-":
            year, month = int(text[:4]), int(text[5:7])
            first = dt.date(year, month, 1)
            last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
            return first.toordinal(), last.toordinal()
        if len(text) == 4:
            year = int(text)
            return dt.date(year, 1, 1).toordinal(), dt.date(year, 12, 31).toordinal()
    except ValueError:
        return None
    return None


def days_text(first: Day, last: Day | None = None) -> str:
    """A day, or the days a month or a year recorded without its day may mean as that month or year.

    >>> [days_text(*(dt.date(*d).toordinal() for d in days)) for days in (((2019, 1, 1), (2019, 12, 31)),
    ...     ((2024, 2, 1), (2024, 2, 29)), ((2024, 2, 2), (2024, 2, 29)), ((2024, 2, 2),))]
    ['2019', '2024-02', 'between 2024-02-02 and 2024-02-29', '2024-02-02']
    """
    a = dt.date.fromordinal(first)
    if last is None or last == first:
        return a.isoformat()
    b = dt.date.fromordinal(last)
    if a.day == 1 and (b + dt.timedelta(days=1)).day == 1 and a.year == b.year:
        if a.month == b.month:
            return a.isoformat()[:7]
        if (a.month, b.month) == (1, 12):
            return str(a.year)
    return f"between {a.isoformat()} and {b.isoformat()}"


def whole_years(start: Day, end: Day) -> int:
    """Completed years from one day to another, counted like an age.

    >>> whole_years(dt.date(2004, 2, 29).toordinal(), dt.date(2022, 2, 28).toordinal())
    17
    """
    a, b = dt.date.fromordinal(start), dt.date.fromordinal(end)
    return b.year - a.year - ((b.month, b.day) < (a.month, a.day))


def _span(*texts: Any) -> tuple[Day, Day] | None:
    """The first full date among the texts as (day, day), else the days the first month or year may mean."""
    for text in texts:
        exact = day(text)
        if exact is not None:
            return exact, exact
    for text in texts:
        found = day_range(text)
        if found is not None:
            return found
    return None


def _effective(resource: dict[str, Any], *names: str) -> Day | None:
    for name in names:
        value = resource.get(name)
        found = day(value.get("start")) or day(value.get("end")) if isinstance(value, dict) else day(value)
        if found is not None:
            return found
    return None


def _undated(resource: dict[str, Any], names: tuple[str, ...]) -> str:
    """Why `_effective` found no day: the first date element given that is not a full date, or none given."""
    for name in names:
        value = resource.get(name)
        if isinstance(value, dict):
            value = value.get("start") or value.get("end")
        if value is not None:
            return f"with {name} {value!r}, not a full, valid date"
    return "without an effective date"


_OBSERVED = ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")


# --------------------------------------------------------------------------------------------- codes

_ICD10 = frozenset(terminology.system(alias) for alias in ("icd10", "icd10cm", "icd10gm"))


def _reading_index() -> dict[tuple[str, str], str]:
    """(system, code) -> concept, with each ICD-10 code also without its dot (`G35A`, as claims data write it)."""
    index = dict(terminology.load().index)
    for (system, code), name in list(index.items()):
        if system in _ICD10 and "." in code:
            index.setdefault((system, code.replace(".", "")), name)
    return index


_INDEX = _reading_index()
_TERMINOLOGY = terminology.load()
_MISSES: dict[tuple[Any, Any], str | None] = {}     # (system, code) not in _INDEX -> its concept, found once


def _missed(key: tuple[Any, Any]) -> str | None:
    """The concept of a coding not in `_INDEX` as written: as `Terminology.normalised` writes it (an OID or older
    URL of the system, `g35.a`, `"L04AE01 "`), else by its narrowest group; remembered."""
    system_url, code = _TERMINOLOGY.normalised(*key)
    name = _INDEX.get((system_url, code))
    if name is None:
        name = _TERMINOLOGY.group_of(system_url, code)
    if len(_MISSES) < 100_000:
        _MISSES[key] = name
    return name


_NONE: frozenset[str] = frozenset()
_SINGLE: dict[str, frozenset[str]] = {}


def concepts_of(codeable: Any) -> frozenset[str]:
    """The concepts the codings of a CodeableConcept stand for (empty if none is recognised)."""
    if not isinstance(codeable, dict):
        return _NONE
    found: set[str] | None = None
    first = None
    for coding in codeable.get("coding") or ():
        if isinstance(coding, dict):
            key = (coding.get("system"), coding.get("code"))
            name = _INDEX.get(key)
            if name is None:
                name = _MISSES.get(key, False)
                if name is False:
                    name = _missed(key)
            if name is not None:
                if first is None:
                    first = name
                elif name != first:
                    found = found or {first}
                    found.add(name)
    if found:
        return frozenset(found)
    if first is None:
        return _NONE
    single = _SINGLE.get(first)
    if single is None:
        single = _SINGLE[first] = frozenset((first,))
    return single


def _drug_names() -> tuple[re.Pattern[str], dict[str, str]]:
    """The words that name a drug in free text: its displays, its other names (brands) and its own name."""
    concepts = _TERMINOLOGY.concepts
    drugs = {name for vs in ("disease-modifying-therapies", "corticosteroids") for name in terminology.members(vs)}
    drugs |= {name for name, c in concepts.items() if c.names}
    names = {}
    for name in drugs:
        for coding in concepts[name].codings:
            names[coding["display"].lower()] = name
        for other in concepts[name].names:
            names[other.lower()] = name
        names[name.replace("-", " ")] = name
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"\b({alternatives})\b"), names


_DRUG_NAMES, _DRUG_BY_NAME = _drug_names()


def drug_concepts(codeable: Any) -> frozenset[str]:
    """Drug concepts from codes, else from the drug's name in the text or a display (RxNorm products).

    >>> sorted(drug_concepts({"coding": [{"system": "http://www.whocc.no/atc", "code": "L04AA27"}]}))
    ['fingolimod']
    >>> sorted(drug_concepts({"text": "Fingolimod 0.5 MG Oral Capsule [Gilenya]"}))
    ['fingolimod']
    >>> sorted(drug_concepts({"text": "Ocrevus 300 mg i.v."}))
    ['ocrelizumab']
    """
    found = concepts_of(codeable)
    if found or not isinstance(codeable, dict):
        return found
    texts = [codeable.get("text")] + [c.get("display") for c in codeable.get("coding") or () if isinstance(c, dict)]
    return frozenset(_DRUG_BY_NAME[m.group(1)]
                     for t in texts if isinstance(t, str) for m in _DRUG_NAMES.finditer(t.lower()))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _quantity(resource: dict[str, Any]) -> tuple[float | None, str | None]:
    q = resource.get("valueQuantity")
    if isinstance(q, dict):
        return _number(q.get("value")), (q.get("code") or q.get("unit"))
    for name in ("valueDecimal", "valueInteger", "valueString"):
        if name in resource:
            return _number(resource[name]), None
    return None, None


def _qualitative(resource: dict[str, Any]) -> bool | None:
    """Positive / negative from the value, the interpretation or a word; None when neither is said."""
    if isinstance(resource.get("valueBoolean"), bool):
        return resource["valueBoolean"]
    for source in (resource.get("valueCodeableConcept"), *(resource.get("interpretation") or ())):
        found = concepts_of(source)
        if "positive" in found or "yes" in found:
            return True
        if "negative" in found or "no" in found:
            return False
        if isinstance(source, dict):
            words = [source.get("text")] + [c.get("display") or c.get("code") for c in source.get("coding") or ()
                                            if isinstance(c, dict)]
            for word in words:
                if isinstance(word, str) and word.strip().lower() in _QUALITATIVE_WORDS:
                    return _QUALITATIVE_WORDS[word.strip().lower()]
    text = resource.get("valueString")
    if isinstance(text, str):
        return _QUALITATIVE_WORDS.get(text.strip().lower())
    return None


_SEVERITY_WORDS = re.compile(r"\b(?:(not?|non)[\s-]+)?(mild|moderate|severe)")


def _severity(*sources: Any) -> int | None:
    """The severity rank of a relapse from the first source that gives one, by code or in words. Words name one
    severity or none: a negated one ("not severe", "non-severe") or a range ("mild-moderate", "moderately
    severe") leaves it unknown, which a minimum severity counts as maybe.

    >>> [_severity({"text": t}) for t in ("Severe", "not severe", "non-severe", "mild-moderate", "mild relapse")]
    [3, None, None, None, 1]
    """
    for source in sources:
        found = concepts_of(source) & SEVERITY_RANK.keys()
        if found:
            return max(SEVERITY_RANK[s] for s in found)
        if isinstance(source, dict):
            for word in [source.get("text")] + [c.get("display") for c in source.get("coding") or ()
                                                if isinstance(c, dict)]:
                said = _SEVERITY_WORDS.findall(word.lower()) if isinstance(word, str) else None
                if said:
                    names = {name for _, name in said}
                    if len(names) == 1 and not any(negated for negated, _ in said):
                        return SEVERITY_RANK[names.pop()]
                    return None
    return None


# --------------------------------------------------------------------------------------------- references

def patient_id(reference: Any) -> str | None:
    """The Patient id of a reference (`Patient/1`, `https://x/fhir/Patient/1/_history/2`), else None.

    >>> patient_id({"reference": "https://ehr.example/fhir/Patient/42/_history/3"})
    '42'
    """
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if not isinstance(text, str):
        return None
    parts = text.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "Patient":
            return parts[i + 1] or None
    return None


def subject_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource is about (the Patient's own id for a Patient)."""
    if resource.get("resourceType") == "Patient":
        found = resource.get("id")
        return found if isinstance(found, str) and found else None
    return patient_id(resource.get("subject")) or patient_id(resource.get("patient"))


# --------------------------------------------------------------------------------------------- the index

@dataclass
class PatientIndex:
    """Patients by id, the problems met while reading, and counts of what was read."""

    patients: dict[str, PatientData] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    read: int = 0
    used: int = 0
    medications: dict[str, frozenset[str]] = field(default_factory=dict)   # Medication id -> drug concepts

    def add(self, resource: dict[str, Any], where: str = "", pid: str | None = None, ref: str | None = None) -> None:
        """Reduce one resource into its patient's data (or record a problem); `pid` and `ref` (its `Type/id`)
        if already known.

        An element of an unexpected JSON shape (a string where FHIR has an object, a number out of range)
        makes the resource a problem naming where it is, never a failed run.
        """
        self.read += 1
        try:
            self._add(resource, where, pid, ref)
        except (TypeError, AttributeError, ValueError, KeyError, OverflowError, RecursionError) as exc:
            rtype = resource.get("resourceType")
            self.problems.append(Problem(where or f"{rtype}/{resource.get('id')}",
                                         f"{rtype if isinstance(rtype, str) else 'resource'} not understood: an "
                                         f"element has an unexpected shape or value ({exc.__class__.__name__}: "
                                         f"{str(exc)[:200]})"))

    def _add(self, resource: dict[str, Any], where: str, pid: str | None, ref: str | None) -> None:
        """A resource about a patient not met before whose id has spaces around it (`Patient/p1 `) is reported,
        as one with a leading space is: a FHIR id has none, and it would be a second patient."""
        rtype = resource.get("resourceType")
        rid = resource.get("id")
        if rtype == "Medication":
            if rid:
                self.medications[rid] = drug_concepts(resource.get("code"))
                self.used += 1
            return
        handler = _HANDLERS.get(rtype)
        if handler is None:
            return
        ref = ref or (f"{rtype}/{rid}" if rid else (where or f"{rtype}/?"))
        pid = pid or subject_of(resource)
        if not pid:
            self.problems.append(Problem(where or ref, _why_no_patient(resource)))
            return
        patient = self.patients.get(pid)
        if patient is None:
            if pid != pid.strip():              # `Patient/p1 `: not Patient/p1, and no id (FHIR ids have no spaces)
                self.problems.append(Problem(where or ref, _why_no_patient(resource)))
                return
            patient = self.patients[pid] = PatientData(pid)
        if handler(self, patient, resource, ref, where or ref):
            self.used += 1

    def finish(self) -> PatientIndex:
        """Resolve medication references and sort each patient's lists; returns self."""
        for patient in self.patients.values():
            for c in patient.conditions:
                if c.onset_age is not None and patient.birth is not None:
                    try:
                        c.onset = _onset_from_age(patient.birth, c.onset_age)
                    except (ValueError, OverflowError):
                        self.problems.append(Problem(c.ref, "onsetAge past any possible date: the onset is taken "
                                                            "as unknown"))
            for exposure in patient.exposures:
                if exposure.concepts and next(iter(exposure.concepts)).startswith("Medication/"):
                    target = next(iter(exposure.concepts))
                    found = self.medications.get(target[len("Medication/"):])
                    if found is None:
                        self.problems.append(Problem(exposure.ref, f"its medication {target} is not in the input: "
                                                                   "the drug is not known"))
                    exposure.concepts = found or frozenset()
                    if not found:
                        patient.unrecognised_medications += 1
            patient.sort()
        return self

    def merge(self, other: PatientIndex) -> None:
        self.patients.update(other.patients)
        self.problems.extend(other.problems)
        self.read += other.read
        self.used += other.used
        self.medications.update(other.medications)


def _patient(index: PatientIndex, p: PatientData, r: dict[str, Any], ref: str, where: str) -> bool:
    p.where = where
    p.gender = r.get("gender") if isinstance(r.get("gender"), str) else None
    p.birth_text = r.get("birthDate") if isinstance(r.get("birthDate"), str) else None
    p.birth = day_range(p.birth_text)
    if p.birth_text and p.birth is None:
        index.problems.append(Problem(where, f"birthDate {p.birth_text!r} is not a FHIR date"))
    died = r.get("deceasedDateTime")
    days = day_range(died)
    if days is not None:
        p.deceased = days
    elif died is not None:                  # dead, when not known: not screened, and the text reported
        p.deceased, p.deceased_text = True, str(died)
    else:
        p.deceased = r.get("deceasedBoolean") is True
    return True


def months_after(d: Day, months: int) -> Day:
    """The same day `months` later (earlier if negative), or the month's last day where it has fewer
    (29 February + 12 months is the 28th)."""
    when = dt.date.fromordinal(d)
    year, month = divmod(when.month - 1 + months, 12)
    year, month = when.year + year, month + 1
    return dt.date(year, month, min(when.day, calendar.monthrange(year, month)[1])).toordinal()


def _onset_from_age(birth: tuple[Day, Day], age: tuple[int, int]) -> tuple[Day, Day]:
    """The days an onset at an age (months, precision) may mean: from the day that age is reached to the day
    before the next one (the next birthday for an age in years).

    >>> [dt.date.fromordinal(d).isoformat() for d in _onset_from_age((day("1990-05-02"),) * 2, (300, 12))]
    ['2015-05-02', '2016-05-01']
    >>> [dt.date.fromordinal(d).isoformat() for d in _onset_from_age((day("1990-01-31"),) * 2, (1, 1))]
    ['1990-02-28', '1990-03-30']
    """
    months, precision = age
    return months_after(birth[0], months), months_after(birth[1], months + precision) - 1



#: onsetAge units (UCUM code or unit text) in months: years and months; other units are not read.
_AGE_UNITS = {"a": 12, "yr": 12, "year": 12, "years": 12, "mo": 1, "month": 1, "months": 1}


def _onset_age(r: dict[str, Any]) -> tuple[int, int] | str | None:
    """An onsetAge as (months, precision in months); None without one; a text saying why it is not usable."""
    age = r.get("onsetAge")
    if age is None:
        return None
    unit = (age.get("code") or age.get("unit")) if isinstance(age, dict) else None
    value = _number(age.get("value")) if isinstance(age, dict) else None
    if unit not in _AGE_UNITS or value is None or not 0 <= value < INFINITY:     # NaN fails both
        return f"onsetAge {json.dumps(age)} is not an age in years or months"
    per = _AGE_UNITS[unit]
    return int(value) * per, per


def _skipped(r: dict[str, Any]) -> bool:
    """Resources recorded in error, refuted, cancelled or not done."""
    if r.get("status") in _SKIPPED_STATUS:
        return True
    verification = r.get("verificationStatus")
    if not isinstance(verification, dict):
        return False
    return bool(_codes(verification) & {"refuted", "entered-in-error"})


def _codes(concept: Any) -> set[Any]:
    """The codes of a CodeableConcept's codings (none for an absent element)."""
    return {c.get("code") for c in (concept or {}).get("coding") or () if isinstance(c, dict)}


def _condition(index: PatientIndex, p: PatientData, r: dict[str, Any], ref: str, where: str) -> bool:
    concepts = concepts_of(r.get("code"))
    if not concepts or _skipped(r):
        return False
    onset = day_range(r.get("onsetDateTime")) or day_range((r.get("onsetPeriod") or {}).get("start"))
    recorded, recorded_until = day_range(r.get("recordedDate")) or (None, None)
    if "relapse" in concepts:
        when = (onset or (recorded, recorded))[0]
        if when is None:
            index.problems.append(Problem(where, "MS relapse (Condition) without onset or recorded date"))
            return False
        p.relapses.append((when, _severity(r.get("severity")), ref))
    clinical = _codes(r.get("clinicalStatus"))
    active = not clinical or bool(clinical & {"active", "recurrence", "relapse"})
    abated = day(r.get("abatementDateTime")) or day((r.get("abatementPeriod") or {}).get("end"))
    age = _onset_age(r) if onset is None else None
    if isinstance(age, str):
        index.problems.append(Problem(where, f"{age}: the onset is taken as unknown"))
        age = None
    doubt = _codes(r.get("verificationStatus")) & _UNCONFIRMED
    p.conditions.append(Condition(concepts, onset, recorded, abated, active, ref, age, min(doubt) if doubt else "",
                                  recorded_until if recorded_until != recorded else None))
    return True


def _observation(index: PatientIndex, p: PatientData, r: dict[str, Any], ref: str, where: str) -> bool:
    concepts = concepts_of(r.get("code"))
    if not concepts or _skipped(r):
        return False
    when = _effective(r, *_OBSERVED)
    name = next(iter(concepts)) if len(concepts) == 1 else sorted(concepts)[0]
    if when is None:
        index.problems.append(Problem(where, f"{name} Observation {_undated(r, _OBSERVED)}"))
        return False
    p.observations += 1
    if name == "relapse":
        if _qualitative(r) is False:                    # "relapse: no", asked at a visit
            p.no_relapse.append((when, False, ref))
            return True
        components = [c.get("valueCodeableConcept") for c in r.get("component") or () if isinstance(c, dict)]
        p.relapses.append((when, _severity(r.get("valueCodeableConcept"), *components), ref))
        return True
    if name in ("edss", "gd-enhancing-lesion-count", "new-or-enlarging-t2-lesion-count"):
        value, _unit = _quantity(r)
        if value is None:
            index.problems.append(Problem(where, f"{name} Observation without a numeric value"))
            return False
        if name == "edss":
            if not (0 <= value <= 10 and value * 2 == int(value * 2)):
                index.problems.append(Problem(where, f"EDSS {_shown(value)} is not a score from 0 to 10 in 0.5 steps"))
                return False
            p.edss.append((when, value, ref))
        else:
            if not (value >= 0 and value.is_integer()):             # NaN and infinities are not integers
                index.problems.append(Problem(where, f"{name} {_shown(value)} is not a whole number of lesions"))
                return False
            (p.gd_lesions if name.startswith("gd") else p.t2_lesions).append((when, value, ref))
        return True
    if name in ("pregnancy-status", "breastfeeding-status"):
        value_concepts = concepts_of(r.get("valueCodeableConcept"))
        if value_concepts & {"pregnant", "breastfeeding"}:
            state: bool | None = True
        elif value_concepts & {"not-pregnant", "negative"}:
            state = False
        else:
            state = _qualitative(r)
        if state is None:
            index.problems.append(Problem(where, f"{name} Observation with a value that is not understood"))
            return False
        (p.pregnancy if name == "pregnancy-status" else p.lactation).append((when, state, ref))
        return True
    if name in LAB_CONCEPTS:
        limits = LAB_LIMITS.get(name)
        if limits is not None:
            given, unit = _quantity(r)
            value = given
            if value is not None and unit:
                factor = _unit_factor(name, unit)
                value = value * factor if factor is not None else None
                if value is None:
                    index.problems.append(Problem(where, f"{name} in unit {unit!r}, which screening cannot convert"))
                    return False
            if value is None:
                index.problems.append(Problem(where, f"{name} Observation without a numeric value"))
                return False
            if not 0.0 <= value <= limits[1]:                     # NaN fails both comparisons
                index.problems.append(Problem(where, _impossible(name, value, given, unit)))
                return False
            result: Any = value
        else:
            result = _qualitative(r)   # None: a result that says neither positive nor negative
        p.labs.setdefault(name, []).append((when, result, ref))
        also = _LAB_ALSO.get(name)
        if also:
            p.labs.setdefault(also, []).append((when, result, ref))
        if name == "pregnancy-test" and result is not None:
            p.pregnancy.append((when, result, ref))
        return True
    return False


def _unit_factor(name: str, unit: str) -> float | None:
    """What a lab value in `unit` is multiplied by to be in the unit facts compare in; None: not convertible.

    >>> _unit_factor("egfr", "mL/s/1.73m2"), _unit_factor("egfr", "mL/min/{1.73_m2}"), _unit_factor("egfr", "mg/dL")
    (60.0, 1.0, None)
    """
    unit = unit.replace(" ", "").lower()
    if name == "egfr":                  # per minute (UCUM and its spellings) or per second (Swedish labs: x 60)
        return 1.0 if unit.startswith("ml/min") else 60.0 if unit.startswith("ml/s") else None
    return _COUNT_FACTORS.get(unit)


def _shown(value: float) -> str:
    """A number as JSON writes it (`NaN`, `Infinity`), in full up to ten digits."""
    if value != value:
        return "NaN"
    if value in (INFINITY, -INFINITY):
        return "Infinity" if value > 0 else "-Infinity"
    return f"{value:.10g}"


def _impossible(name: str, value: float, given: float | None, unit: str | None) -> str:
    """Why a lab value is not used: `eGFR -5 mL/min/1.73m2 is not a possible value (0 to 250): not used`."""
    canonical, highest = LAB_LIMITS[name]
    shown = f"{_shown(value)} {canonical}"
    if given is not None and value != given and value == value:   # converted: what was written too
        shown = f"{_shown(given)} {unit} ({shown})"
    return f"{LAB_NAMES[name]} {shown} is not a possible value (0 to {highest:g}): not used"


def _medication(index: PatientIndex, p: PatientData, r: dict[str, Any], ref: str, where: str) -> bool:
    if _skipped(r):
        return False
    p.medication_records += 1
    concepts = drug_concepts(r.get("medicationCodeableConcept"))
    reference = r.get("medicationReference")
    codeable_reference = r.get("medication")                # R5: a CodeableReference (concept or reference)
    if isinstance(codeable_reference, dict):
        concepts = concepts or drug_concepts(codeable_reference.get("concept"))
        reference = reference or codeable_reference.get("reference")
    if not concepts and isinstance(reference, dict):
        target = reference.get("reference")
        if isinstance(target, str) and target.startswith("#"):
            found = [c for c in r.get("contained") or () if isinstance(c, dict) and c.get("id") == target[1:]]
            if not found:
                index.problems.append(Problem(where, f"its medication {target} is not among its contained resources: "
                                                     "the drug is not known"))
            concepts = drug_concepts(found[-1].get("code")) if found else _NONE
        elif isinstance(target, str) and "Medication/" in target:
            concepts = frozenset({"Medication/" + target.rsplit("Medication/", 1)[1].split("/")[0]})
        elif target is not None:
            index.problems.append(Problem(where, f"its medicationReference {target!r} is neither '#<contained id>' "
                                                 "nor Medication/<id>: the drug is not known"))
        elif isinstance(reference.get("display"), str):         # only a display: the drug by its name
            concepts = drug_concepts({"text": reference["display"]})
    if not concepts:
        p.unrecognised_medications += 1
        return False
    rtype = r["resourceType"]
    status = r.get("status")
    if rtype == "MedicationRequest":
        first, last = _bounds(r.get("dosageInstruction") or ())
        validity = (r.get("dispenseRequest") or {}).get("validityPeriod") or {}
        starts = _span(first, validity.get("start"), r.get("authoredOn"))
        ends = _span(last, validity.get("end"))
    elif rtype == "MedicationAdministration":
        given = _effective(r, "effectiveDateTime", "effectivePeriod", "occurenceDateTime", "occurencePeriod",
                           "occurrenceDateTime")
        starts = (given, given) if given is not None else None
        period = r.get("effectivePeriod") or r.get("occurencePeriod") or {}     # R5 spells it "occurence"
        ends = day_range(period.get("end")) or starts
    else:
        period = r.get("effectivePeriod") or {}
        starts = _span(period.get("start"), r.get("effectiveDateTime"))
        ends = day_range(period.get("end"))
        if ends is None and "effectiveDateTime" in r and status not in ("active", "intended", "on-hold"):
            ends = day_range(r.get("effectiveDateTime"))
        if starts is None and ends is None and status == "active":
            asserted = day(r.get("dateAsserted"))      # no effective[x]: taken on the day it was asserted
            starts = (asserted, asserted) if asserted is not None else None
    if starts and ends and ends[1] < starts[0]:     # a wrong date, which one unknown: taken, but not known when
        index.problems.append(Problem(where, f"{rtype} of {', '.join(sorted(concepts))} ends "
                                             f"({days_text(*ends)}) before it starts ({days_text(*starts)}): "
                                             "its dates are not used"))
        p.exposures.append(Exposure(concepts, None, END_UNKNOWN, ref))
        return True
    if starts and ends:                 # a month or year of one that the other's day narrows: not after the end,
        starts = (starts[0], min(starts[1], max(ends[1], starts[0])))           # not before the start
        ends = (min(max(ends[0], starts[0]), ends[1]), ends[1])
    start, start_until = (starts[0], starts[1] if starts[1] != starts[0] else None) if starts else (None, None)
    end, end_from = (ends[1], ends[0] if ends[0] != ends[1] else None) if ends else (None, None)
    if start is None and end is None:
        index.problems.append(Problem(where, f"{rtype} of {', '.join(sorted(concepts))} without any date"))
        return False
    if end is None:
        # R5 statements are all `recorded`: an open period is an ongoing therapy there, as `active` is in R4
        end = ONGOING if status in ("active", "intended", "on-hold", "recorded", None) else END_UNKNOWN
    p.exposures.append(Exposure(concepts, start, end, ref, end_from, start_until))
    return True


def _bounds(dosages: Iterable[Any]) -> tuple[Any, Any]:
    """The start and end of the boundsPeriods of a MedicationRequest's dosage instructions (a dose changed, a
    course split in steps): the earliest start and the latest end, no end while one of them is open.

    >>> _bounds([{"timing": {"repeat": {"boundsPeriod": {"start": "2023-01-05", "end": "2024-02"}}}},
    ...          {"timing": {"repeat": {"boundsPeriod": {"start": "2022", "end": "2023-06-30"}}}}])
    ('2022', '2024-02')
    """
    periods = [((d.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {} for d in dosages]
    periods = [b for b in periods if b]
    if len(periods) < 2:
        return (periods[0].get("start"), periods[0].get("end")) if periods else (None, None)
    starts = [(found[0], text) for text in (b.get("start") for b in periods) if (found := day_range(text))]
    ends = [(found[1], text) for text in (b.get("end") for b in periods) if (found := day_range(text))]
    return min(starts)[1] if starts else None, max(ends)[1] if len(ends) == len(periods) else None


def _procedure(index: PatientIndex, p: PatientData, r: dict[str, Any], ref: str, where: str) -> bool:
    """A Procedure done or under way: its day (R4 performed[x], R5 occurrence[x]: a period's last day; None if
    not recorded)."""
    if _skipped(r) or r.get("status") in ("preparation", "on-hold"):     # planned, not (yet) done
        return False
    p.procedure_records += 1
    concepts = concepts_of(r.get("code"))
    if not concepts:
        return False
    period = r.get("performedPeriod") or r.get("occurrencePeriod")
    when = _effective(r, "performedDateTime", "occurrenceDateTime") or (
        (day(period.get("end")) or day(period.get("start"))) if isinstance(period, dict) else None)
    p.procedures.append((when, concepts, ref))
    return True


def _allergy(index: PatientIndex, p: PatientData, r: dict[str, Any], ref: str, where: str) -> bool:
    """An AllergyIntolerance, active (no clinicalStatus, or `active`); the substance by code or by name."""
    if _skipped(r):
        return False
    p.allergy_records += 1
    clinical = _codes(r.get("clinicalStatus"))
    concepts = drug_concepts(r.get("code"))
    if not concepts or (clinical and "active" not in clinical):
        return False
    verification = _codes(r.get("verificationStatus"))
    recorded = _effective(r, "recordedDate", "onsetDateTime", "onsetPeriod")
    p.allergies.append((concepts, ref, "unconfirmed" if "unconfirmed" in verification else "", recorded))
    return True


def _why_no_patient(resource: dict[str, Any]) -> str:
    """Why a resource names no patient: no id (a Patient), or what its subject / patient names instead."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        found = resource.get("id")
        if found in (None, ""):
            return "Patient without an id"
        return f"Patient id {found!r} has spaces around it" if isinstance(found, str) else \
            f"Patient id {found!r} is not a string"
    for name in ("subject", "patient"):
        ref = resource.get(name)
        target = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(target, str):
            found = "a Patient's fullUrl in its Bundle" if target.startswith("urn:") else "a Patient/<id> reference"
            spaces = " (spaces around it)" if target != target.strip() else ""
            return f"{rtype} {name} {target!r} is not {found}{spaces}"
    return f"{rtype} without a subject or patient reference"


_HANDLERS = {
    "Patient": _patient,
    "Condition": _condition,
    "Observation": _observation,
    "MedicationStatement": _medication,
    "MedicationRequest": _medication,
    "MedicationAdministration": _medication,
    "Procedure": _procedure,
    "AllergyIntolerance": _allergy,
}
#: The resource types screening reads (a Medication for the drug a therapy refers to); others are counted only.
READ_TYPES = frozenset({*_HANDLERS, "Medication"})


def index_resources(resources: Iterable[dict[str, Any] | tuple[str, dict[str, Any]]]) -> PatientIndex:
    """Index resources (or `(where, resource)` pairs from `fhir_adapter.sources`) per patient."""
    index = PatientIndex()
    for item in resources:
        if isinstance(item, tuple):
            index.add(item[1], item[0])
        else:
            index.add(item)
    return index.finish()
