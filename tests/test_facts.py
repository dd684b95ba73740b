"""MS derived facts at their boundaries, from FHIR resources shaped as real EHRs send them.

`Chart` builds one patient's resources relative to the screening date; the screening tests reuse it.
"""

from __future__ import annotations

import datetime as dt

import pytest

from fhir_adapter import terminology
from fhir_adapter.criteria import FACTS, Rule, Window
from fhir_adapter.eligibility import facts
from fhir_adapter.eligibility.data import index_resources
from fhir_adapter.eligibility.engine import MET, NOT_MET, UNKNOWN, judge
from fhir_adapter.eligibility.facts import Clock

AS_OF = dt.date(2025, 6, 1)
SNOMED, LOINC, ATC = "http://snomed.info/sct", "http://loinc.org", "http://www.whocc.no/atc"
ICD10CM, ICD10GM = "http://hl7.org/fhir/sid/icd-10-cm", "http://fhir.de/CodeSystem/bfarm/icd-10-gm"


def years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


class Chart:
    """One patient's FHIR resources, written relative to the screening date (`days` = days before it)."""

    def __init__(self, pid: str = "p1", age: int = 35, gender: str | None = "male", as_of: dt.date = AS_OF,
                 born: str | None = None) -> None:
        self.pid, self.as_of, self.n = pid, as_of, 0
        birth = born if born is not None else (years_before(as_of, age) - dt.timedelta(days=100)).isoformat()
        patient = {"resourceType": "Patient", "id": pid, "birthDate": birth}
        if gender:
            patient["gender"] = gender
        self.resources: list[dict] = [patient]

    def ago(self, days: int) -> str:
        return (self.as_of - dt.timedelta(days=days)).isoformat()

    def _add(self, kind: str, **fields) -> dict:
        self.n += 1
        resource = {"resourceType": kind, "id": f"{self.pid}-{kind.lower()}-{self.n}",
                    "subject": {"reference": f"Patient/{self.pid}"}, **fields}
        self.resources.append(resource)
        return resource

    @staticmethod
    def code(concept: str | None = None, system: str | None = None, code: str | None = None) -> dict:
        if concept:
            return {"coding": terminology.codings(concept)}
        return {"coding": [{"system": system, "code": code}]}

    def condition(self, concept: str | None = None, system: str | None = None, code: str | None = None,
                  onset: str | None = None, recorded: str | None = None, **extra) -> dict:
        fields = {"code": self.code(concept, system, code), **extra}
        if onset:
            fields["onsetDateTime"] = onset
        if recorded:
            fields["recordedDate"] = recorded
        return self._add("Condition", **fields)

    def observation(self, code: dict, days: int, **value) -> dict:
        return self._add("Observation", status="final", code=code, effectiveDateTime=self.ago(days), **value)

    def edss(self, score: float, days: int, element: str = "valueQuantity") -> dict:
        value = {"value": score, "system": "http://unitsofmeasure.org", "code": "{score}"} \
            if element == "valueQuantity" else score
        return self.observation(self.code("edss"), days, **{element: value})

    def relapse(self, days: int, severity: str | None = None, as_condition: bool = False) -> dict:
        if as_condition:
            extra = {"severity": self.code(severity)} if severity else {}
            return self.condition("relapse", onset=self.ago(days), **extra)
        value = {"valueCodeableConcept": self.code(severity)} if severity else {}
        return self.observation(self.code("relapse"), days, **value)

    def mri(self, days: int, gd: int | None = None, t2: int | None = None, quantity: bool = False) -> None:
        for concept, count in (("gd-enhancing-lesion-count", gd), ("new-or-enlarging-t2-lesion-count", t2)):
            if count is not None:
                value = {"valueQuantity": {"value": count}} if quantity else {"valueInteger": count}
                self.observation(self.code(concept), days, **value)

    def lab(self, concept: str, days: int, value: float | None = None, unit: str | None = None,
            positive: bool | None = None, loinc: str | None = None) -> dict:
        code = self.code(system=LOINC, code=loinc) if loinc else self.code(concept)
        if value is not None:
            return self.observation(code, days, valueQuantity={"value": value, "code": unit, "unit": unit})
        return self.observation(code, days, valueCodeableConcept=self.code("positive" if positive else "negative"))

    def med(self, concept: str | None = None, start: int = 400, end: int | None = None, *, system: str | None = None,
            code: str | None = None, kind: str = "MedicationStatement", status: str | None = None) -> dict:
        medication = self.code(concept, system, code)
        if kind == "MedicationStatement":
            period = {"start": self.ago(start), **({"end": self.ago(end)} if end is not None else {})}
            return self._add(kind, status=status or ("completed" if end is not None else "active"),
                             medicationCodeableConcept=medication, effectivePeriod=period)
        if kind == "MedicationRequest":
            bounds = {"start": self.ago(start), **({"end": self.ago(end)} if end is not None else {})}
            return self._add(kind, status=status or ("completed" if end is not None else "active"), intent="order",
                             medicationCodeableConcept=medication, authoredOn=self.ago(start),
                             dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": bounds}}}])
        return self._add(kind, status=status or "completed", medicationCodeableConcept=medication,
                         effectiveDateTime=self.ago(start))

    def pregnancy(self, days: int, pregnant: bool) -> dict:
        return self.observation(self.code("pregnancy-status"), days,
                                valueCodeableConcept=self.code("pregnant" if pregnant else "not-pregnant"))

    def lactation(self, days: int, breastfeeding: bool) -> dict:
        return self.observation(self.code("breastfeeding-status"), days, valueBoolean=breastfeeding)

    def procedure(self, concept: str | None = None, days: int = 300, *, system: str | None = None,
                  code: str | None = None, status: str = "completed", **extra) -> dict:
        return self._add("Procedure", status=status, code=self.code(concept, system, code),
                         **({"performedDateTime": self.ago(days)} if days is not None else {}), **extra)

    def allergy(self, concept: str | None = None, *, text: str | None = None, status: str | None = "active",
                verification: str | None = None, system: str | None = None, code: str | None = None) -> dict:
        """An AllergyIntolerance (its patient in `patient`, as R4 and R5 have it)."""
        resource = self._add("AllergyIntolerance", code={"text": text} if text else self.code(concept, system, code))
        resource["patient"] = resource.pop("subject")
        if status:
            resource["clinicalStatus"] = {"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": status}]}
        if verification:
            resource["verificationStatus"] = {"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                 "code": verification}]}
        return resource

    def data(self):
        return index_resources(self.resources).patients[self.pid]

    def fact(self, name: str, subject: str | None = None, window: str | None = None) -> facts.Fact:
        return facts.fact(name, self.data(), subject, Window.parse(window) if window else None, Clock(self.as_of))


def test_every_fact_of_the_catalogue_has_an_evaluator():
    missing = set(FACTS) - set(facts.EVALUATORS)
    assert not missing, f"facts without an evaluator in eligibility/facts.py: {sorted(missing)}"
    with pytest.raises(KeyError, match="no evaluator for fact 'lucky'"):
        facts.fact("lucky", Chart().data(), None, None, Clock(AS_OF))


# ------------------------------------------------------------------------------------------ age, sex

@pytest.mark.parametrize(("born", "age"), [
    (years_before(AS_OF, 18), 18),                                  # 18th birthday today
    (years_before(AS_OF, 18) + dt.timedelta(days=1), 17),           # 18 tomorrow
    (years_before(AS_OF, 51) + dt.timedelta(days=1), 50),           # 51 tomorrow: still 50
    (years_before(AS_OF, 51), 51),
])
def test_age_in_whole_years_at_the_screening_date(born, age):
    found = Chart(born=born.isoformat()).fact("age")
    assert found.value == age and found.upper is None and found.evidence == ("Patient/p1",)


def test_partial_birth_date_gives_bounds_and_no_birth_date_is_unknown():
    found = Chart(born="1990").fact("age")           # 2025-06-01: 34 if born after June 1st, else 35
    assert (found.value, found.upper) == (34, 35)
    chart = Chart()
    del chart.resources[0]["birthDate"]
    assert chart.fact("age").value is None and "no birth date" in chart.fact("age").detail
    assert Chart(gender=None).fact("sex").value is None and Chart(gender="female").fact("sex").value == "female"


# ------------------------------------------------------------------------------------------ MS course, duration

COURSE_CODES = sorted((system, code, subtype) for subtype in ("rrms", "spms", "ppms")
                      for system, code in terminology.concept(subtype).recognised
                      if terminology.concept_of(system, code) == subtype)


def test_the_course_value_sets_hold_snomed_and_every_fy2026_icd10cm_subcode():
    codes = {(system, code) for system, code, _ in COURSE_CODES}
    fy2026 = {"G35.A", "G35.B0", "G35.B1", "G35.B2", "G35.C0", "G35.C1", "G35.C2"}
    assert {(ICD10CM, code) for code in fy2026} <= codes
    assert {(SNOMED, "426373005"), (SNOMED, "425500002"), (SNOMED, "428700003")} <= codes


@pytest.mark.parametrize(("system", "code", "subtype"), COURSE_CODES, ids=[c for _, c, _ in COURSE_CODES])
def test_ms_course_from_snomed_icd10cm_fy2026_and_icd10gm(system, code, subtype):
    chart = Chart()
    chart.condition(system=system, code=code, onset="2018-01-01")
    assert chart.fact("ms-subtype").value == subtype


@pytest.mark.parametrize(("code", "subtype"), [("G35A", "rrms"), ("G35B1", "ppms"), ("G35C2", "spms")])
def test_icd10cm_codes_without_their_dot(code, subtype):
    chart = Chart()
    chart.condition(system=ICD10CM, code=code, onset="2018-01-01")
    assert chart.fact("ms-subtype").value == subtype


@pytest.mark.parametrize(("system", "code"), [
    ("urn:oid:2.16.840.1.113883.6.96", "426373005"),            # SNOMED's OID
    ("http://snomed.info/sct/", "426373005"),                   # a trailing slash
    ("http://fhir.de/CodeSystem/dimdi/icd-10-gm", "G35.1"),     # the older German URL
    ("urn:oid:2.16.840.1.113883.6.90", "G35.A"),                # ICD-10-CM's OID
    (ICD10CM, "g35.a"), (ICD10CM, "G35.A "), (ICD10CM, " g35a"),
])
def test_ms_course_from_other_names_of_a_system_and_untidy_codes(system, code):
    chart = Chart()                       # another Condition closes the world: a code not read would be "no MS"
    chart.condition(system=system, code=code, onset="2018-01-01")
    chart.condition("major-depression", onset="2020-01-01")
    assert chart.fact("ms-subtype").value == "rrms"


@pytest.mark.parametrize(("system", "code"), [
    ("http://fhir.de/CodeSystem/bfarm/atc", "L04AE01"), ("urn:oid:2.16.840.1.113883.6.73", "L04AE01"),
    ("http://www.whocc.no/atc", "l04ae01"), ("http://www.whocc.no/atc", "L04AE01 "),
])
def test_a_drug_from_other_names_of_its_system_and_untidy_codes(system, code):
    chart = Chart()
    chart.med(system=system, code=code, start=200)
    found = chart.fact("therapy", "fingolimod")      # not only the L04A group (other immunosuppressants)
    assert found.value is True and "fingolimod" in found.detail


def test_an_untidy_code_is_found_in_its_group():
    chart = Chart()
    chart.condition("rrms", onset="2018-01-01")
    chart.condition(system="urn:oid:2.16.840.1.113883.6.90", code="c50.911 ", onset="2020-01-01")
    assert chart.fact("condition", "malignancy").value is True


@pytest.mark.parametrize("code", [("http://hl7.org/fhir/sid/icd-10", "G35"), (ICD10CM, "G35"), (ICD10CM, "G35.D"),
                                  (ICD10GM, "G35.9")])
def test_ms_without_its_course_is_unknown(code):
    chart = Chart()
    chart.condition(system=code[0], code=code[1], onset="2018-01-01")
    found = chart.fact("ms-subtype")
    assert found.value is None and "without its course" in found.detail and found.evidence


def test_latest_course_wins_and_no_ms_at_all_is_none():
    chart = Chart()
    chart.condition("rrms", onset="2012-01-01", recorded="2012-03-01", clinicalStatus=Chart.code("condition-resolved"))
    spms = chart.condition("spms", recorded="2023-05-01")
    found = chart.fact("ms-subtype")
    assert found.value == "spms" and found.evidence == (f"Condition/{spms['id']}",)
    other = Chart()
    other.condition("major-depression", onset="2020-01-01")
    assert other.fact("ms-subtype").value == "none"
    assert Chart().fact("ms-subtype").value is None


def test_results_of_one_day_that_differ_decide_only_where_they_agree():
    chart = Chart()
    chart.edss(6.0, 100)
    chart.edss(3.0, 40)
    chart.edss(6.5, 40)
    chart.edss(3.0, 40)
    found = chart.fact("edss")
    assert (found.value, found.upper) == (3.0, 6.5) and len(found.evidence) == 3
    assert found.detail == "latest EDSS 3 and 6.5, all on 2025-04-22"
    assert judge(Rule.from_dict({"fact": "edss", "range": [3.0, 6.5]}), found) == MET
    assert judge(Rule.from_dict({"fact": "edss", "range": [4, 7]}), found) == UNKNOWN
    assert judge(Rule.from_dict({"fact": "edss", "at-least": 7}), found) == NOT_MET
    chart.lab("egfr", 30, value=55, unit="mL/min/{1.73_m2}")
    chart.lab("egfr", 30, value=75, unit="mL/min/{1.73_m2}")
    egfr = chart.fact("lab-value", "egfr")
    assert (egfr.value, egfr.upper) == (55.0, 75.0)
    assert judge(Rule.from_dict({"fact": "lab-value", "subject": "egfr", "below": 60}), egfr) == UNKNOWN
    chart.lab("hiv", 30, positive=True)
    chart.lab("hiv", 30, positive=False)
    hiv = chart.fact("lab-positive", "hiv")
    assert hiv.value is None and "both positive and negative" in hiv.detail and len(hiv.evidence) == 2
    same = Chart()
    same.edss(4.0, 40)
    kept = same.edss(4.0, 40)
    assert same.fact("edss") == facts.Fact(4.0, (f"Observation/{kept['id']}",), "latest EDSS 4 on 2025-04-22")


def _verified(code: str) -> dict:
    return {"verificationStatus": {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": code}]}}


def test_a_course_recorded_only_as_provisional_or_differential_is_unknown():
    suspected = Chart()
    suspected.condition("rrms", recorded="2023-05-01")
    spms = suspected.condition("spms", recorded="2024-09-01", **_verified("provisional"))    # a suspected transition
    found = suspected.fact("ms-subtype")
    assert found == facts.Fact(None, (f"Condition/{spms['id']}",),
                               "secondary progressive MS recorded only as a provisional diagnosis")
    suspected.condition("spms", recorded="2025-01-10", **_verified("confirmed"))
    assert suspected.fact("ms-subtype").value == "spms"
    differential = Chart()
    differential.condition("rrms", recorded="2023-05-01", **_verified("differential"))
    assert "only as a differential diagnosis" in differential.fact("ms-subtype").detail


def test_an_unconfirmed_comorbidity_counts_for_an_exclusion_and_says_so():
    chart = Chart()
    chart.condition("malignancy", onset="2020-01-01", **_verified("differential"))
    found = chart.fact("condition", "malignancy")
    assert found.value is True and found.detail.endswith("recorded (only as a differential diagnosis)")
    chart.condition("malignancy", onset="2021-01-01")
    found = chart.fact("condition", "malignancy")
    assert found.value is True and "only as" not in found.detail and len(found.evidence) == 2


ICD10 = "http://hl7.org/fhir/sid/icd-10"


def _diagnosed(*codings: tuple[str, str]) -> Chart:
    """A patient with RRMS (a problem list exists) and one more Condition coded with the given codings."""
    chart = Chart()
    chart.condition("rrms", onset="2018-01-01")
    chart._add("Condition", code={"coding": [{"system": s, "code": c} for s, c in codings]},
               onsetDateTime="2020-01-01")
    return chart


@pytest.mark.parametrize("codings, malignancy, cancer", [
    ([(ICD10CM, "C44.91")], False, True),                   # basal cell carcinoma of the skin
    ([(ICD10CM, "C44.1121")], False, True),                 # BCC of the right upper eyelid (a 7-character code)
    ([(SNOMED, "254701007")], False, True),
    ([(ICD10CM, "C44.92")], True, True),                    # squamous cell carcinoma of the skin
    ([(ICD10, "C44.3")], None, True),                       # a skin cancer of the face, type not coded
    ([(ICD10GM, "C44.3")], None, True),
    ([(ICD10CM, "C44.90")], None, True),
    ([(ICD10, "C44.3"), (SNOMED, "254701007")], False, True),   # its other coding says it is a BCC
    ([(ICD10CM, "C50.911")], True, True),
])
def test_a_basal_cell_carcinoma_is_no_malignancy_for_the_exception_and_an_untyped_skin_cancer_may_be(
        codings, malignancy, cancer):
    """"a malignancy other than basal cell carcinoma of the skin": BCC is not one, a C44 code that does not
    tell the type may be one (unknown); for "history of cancer" (CMM-EM, `cancers`) all of them are cancer."""
    chart = _diagnosed(*codings)
    found = chart.fact("condition", "malignancy")
    assert found.value is malignancy, found
    if malignancy is None:
        assert "may or may not be" in found.detail and len(found.evidence) == 1
    assert chart.fact("condition", "cancers").value is cancer


@pytest.mark.parametrize("codings, failure", [
    ([(ICD10CM, "N18.2")], False),      # CKD stage 2: eGFR 60-89, no renal failure
    ([(ICD10CM, "N18.9")], False),      # CKD, stage not coded: the eGFR decides
    ([(SNOMED, "709044004")], False),
    ([(ICD10CM, "N17.9")], False),      # acute kidney failure: a current one shows in the eGFR
    ([(ICD10CM, "N18.32")], True),      # CKD stage 3b: eGFR below 60 by definition
    ([(ICD10, "N18.5")], True),
    ([(ICD10GM, "N18.4")], True),
    ([(ICD10CM, "N18.6")], True),       # end-stage renal disease
    ([(SNOMED, "46177005")], True),
    ([(ICD10CM, "N19")], True),
])
def test_known_renal_failure_is_kidney_failure_or_ckd_from_stage_3(codings, failure):
    assert _diagnosed(*codings).fact("condition", "renal-failure").value is failure


@pytest.mark.parametrize("codings, major", [
    ([(ICD10CM, "F32.9")], True),       # major depressive disorder, single episode, unspecified
    ([(ICD10CM, "F33.1")], True),
    ([(ICD10, "F32.0")], True),         # WHO: a (mild) depressive episode
    ([(ICD10CM, "F32.A")], None),       # "Depression, unspecified": may or may not be major
    ([(ICD10CM, "F32.81")], None),      # other depressive episodes (premenstrual dysphoric disorder)
    ([(SNOMED, "35489007")], None),     # depressive disorder
])
def test_major_depression_and_depression_that_may_not_be_major(codings, major):
    assert _diagnosed(*codings).fact("condition", "major-depression").value is major


def test_immunoglobulins_are_immunomodulatory_treatment():
    """SMART-MS "current immunomodulatory/immunosuppressive treatment": IVIG every 4 weeks is current 20 days
    after an infusion; it is no immunosuppressant (MESEMS)."""
    chart = Chart()
    chart.med(system=ATC, code="J06BA02", start=20, kind="MedicationAdministration")
    assert chart.fact("therapy", "immunomodulators-or-immunosuppressants", "0 d").value is True
    assert chart.fact("therapy", "immunosuppressants", "3 mo").value is False


def test_two_courses_recorded_the_same_day_are_unknown_and_the_same_course_twice_is_not():
    chart = Chart()
    rrms = chart.condition("rrms", recorded="2023-05-01")
    spms = chart.condition("spms", recorded="2023-05-01T15:00:00Z")
    found = chart.fact("ms-subtype")
    assert found.value is None and set(found.evidence) == {f"Condition/{rrms['id']}", f"Condition/{spms['id']}"}
    assert "recorded the same day" in found.detail and "relapsing-remitting" in found.detail
    chart.condition("spms", recorded="2023-05-02")          # a later record settles it
    assert chart.fact("ms-subtype").value == "spms"
    twice = Chart()
    twice.condition("rrms", recorded="2023-05-01")
    twice.condition("rrms", recorded="2023-05-01")
    assert twice.fact("ms-subtype").value == "rrms"


@pytest.mark.parametrize(("years", "days_later", "duration"), [
    (2, 0, 2), (2, 1, 1), (10, 0, 10), (11, 1, 10), (11, 0, 11),
])
def test_disease_duration_in_whole_years_from_onset(years, days_later, duration):
    chart = Chart()
    chart.condition("rrms", onset=(years_before(AS_OF, years) + dt.timedelta(days=days_later)).isoformat())
    assert chart.fact("disease-duration").value == duration


def test_disease_duration_from_an_onset_age():
    chart = Chart(born="1990-05-02")
    chart.condition("rrms", onsetAge={"value": 25, "unit": "years", "system": "http://unitsofmeasure.org",
                                      "code": "a"})
    found = chart.fact("disease-duration")                  # onset 2015-05-02 .. 2016-05-01: 9 to 10 years
    assert (found.value, found.upper) == (9, 10) and "2015-05-02 and 2016-05-01" in found.detail
    months = Chart(born="1990-05-02")
    months.condition("rrms", onsetAge={"value": 301, "code": "mo"})     # onset 2015-06-02 .. 2015-07-01
    found = months.fact("disease-duration")
    assert found.value == 9 and found.upper is None and "MS onset 2015-06-02" in found.detail
    days = Chart(born="1990-05-02")
    days.condition("rrms", onsetAge={"value": 9000, "code": "d"})       # not read, and said so
    assert days.fact("disease-duration").value is None
    assert [p.message for p in index_resources(days.resources).problems] == [
        'onsetAge {"value": 9000, "code": "d"} is not an age in years or months: the onset is taken as unknown']


def test_disease_duration_falls_back_to_the_diagnosis_date_and_handles_partial_onsets():
    chart = Chart()
    chart.condition("rrms", recorded=years_before(AS_OF, 4).isoformat())
    found = chart.fact("disease-duration")
    assert (found.value, found.upper) == (4, float("inf")) and "no onset date" in found.detail   # at least 4
    rule = Rule.from_dict({"fact": "disease-duration", "range": [2, 10]})
    assert judge(rule, found) == UNKNOWN                    # recorded 4 years ago: the disease may be 12 years old
    old = Chart()
    old.condition("rrms", recorded=years_before(AS_OF, 11).isoformat())
    assert judge(rule, old.fact("disease-duration")) == NOT_MET      # at least 11 years: over 10 whatever the onset
    young = Chart()
    young.condition("rrms", recorded=years_before(AS_OF, 1).isoformat())
    assert judge(Rule.from_dict({"fact": "disease-duration", "at-least": 1}), young.fact("disease-duration")) == MET
    partial = Chart()
    partial.condition("rrms", onset="2015")                  # 2015-01-01 .. 2015-12-31: 9 to 10 years
    assert (partial.fact("disease-duration").value, partial.fact("disease-duration").upper) == (9, 10)
    assert Chart().fact("disease-duration").value is None


@pytest.mark.parametrize(("recorded", "years"), [("2019", 5), ("2019-03", 6), ("2019-03-04T10:00:00+01:00", 6)])
def test_a_diagnosis_recorded_as_a_year_or_month_counts_from_its_latest_day(recorded, years):
    chart = Chart()                                         # screened 2025-06-01: 2019-12-31 is 5 years before
    chart.condition("rrms", recorded=recorded)
    found = chart.fact("disease-duration")
    assert (found.value, found.upper) == (years, float("inf")) and f"recorded {recorded[:10]} " in found.detail
    assert chart.fact("ms-subtype").value == "rrms"


# ------------------------------------------------------------------------------------------ EDSS

def test_edss_lesion_and_relapse_codes_of_the_value_sets():
    for concept, add in (("edss", lambda c, code: c.observation(code, 10, valueQuantity={"value": 4.0})),
                         ("gd-enhancing-lesion-count", lambda c, code: c.observation(code, 10, valueInteger=2)),
                         ("relapse", lambda c, code: c.observation(code, 10))):
        for system, code in terminology.concept(concept).recognised:
            chart = Chart()
            add(chart, Chart.code(system=system, code=code))
            data = chart.data()
            found = {"edss": data.edss, "gd-enhancing-lesion-count": data.gd_lesions, "relapse": data.relapses}
            assert len(found[concept]) == 1, (concept, code)


@pytest.mark.parametrize("element", ["valueQuantity", "valueDecimal", "valueInteger", "valueString"])
def test_edss_value_elements(element):
    chart = Chart()
    chart.edss(4 if element == "valueInteger" else "4.0" if element == "valueString" else 4.0, 10, element)
    assert chart.fact("edss").value == 4.0


def test_edss_latest_within_window_ignoring_later_data_and_bad_scores():
    chart = Chart()
    chart.edss(3.0, 400)
    chart.edss(4.5, 30)
    chart.edss(7.0, -5)                                    # after the screening date: does not count
    bad = chart.edss(3.3, 1)                               # not a 0.5 step: reported, not used
    index = index_resources(chart.resources)
    assert [p.where for p in index.problems] == [f"Observation/{bad['id']}"]
    assert chart.fact("edss").value == 4.5
    assert chart.fact("edss", window="12 mo").value == 4.5
    old = Chart()
    old.edss(3.0, 400)
    assert old.fact("edss", window="12 mo").value is None and "no EDSS in the 12 months" in old.fact(
        "edss", window="12 mo").detail


@pytest.mark.parametrize(("first", "latest", "progressed"), [
    (3.0, 4.0, True),        # +1.0 from a latest EDSS <= 5.0
    (3.0, 3.5, False),
    (4.5, 5.0, False),       # +0.5 is not enough while the latest is 5.0
    (4.0, 5.0, True),
    (5.0, 5.5, True),        # +0.5 counts from a latest EDSS >= 5.5
    (5.5, 6.0, True),
    (6.0, 6.0, False),
])
def test_edss_progression_rule(first, latest, progressed):
    chart = Chart()
    a = chart.edss(first, 300)
    b = chart.edss(latest, 20)
    found = chart.fact("edss-progression", window="12 mo")
    assert found.value is progressed and found.evidence == (f"Observation/{a['id']}", f"Observation/{b['id']}")


def test_edss_progression_needs_two_scores_in_the_window():
    chart = Chart()
    chart.edss(3.0, 400)                                   # before the 12-month window
    chart.edss(4.5, 20)
    found = chart.fact("edss-progression", window="12 mo")
    assert found.value is None and "only one EDSS" in found.detail


def test_edss_progression_with_several_scores_on_one_day_decides_only_where_every_pairing_agrees():
    def progression(first: list[float], latest: list[float]) -> facts.Fact:
        chart = Chart()
        for score in first:
            chart.edss(score, 300)
        for score in latest:
            chart.edss(score, 20)
        return chart.fact("edss-progression", window="12 mo")

    both = progression([3.0, 4.0], [5.0])                 # +2.0 and +1.0 from 5.0: progression either way
    assert both.value is True and len(both.evidence) == 3
    assert both.detail == ("EDSS 3 and 4 on 2024-08-05 to 5 on 2025-05-12: progression whichever score of one "
                           "day holds")
    assert progression([4.0, 4.5], [4.5]).value is False     # +0.5 and 0.0
    split = progression([3.0, 4.5], [5.0])                   # +2.0 progression, +0.5 not
    assert split.value is None and "depends on which score" in split.detail and len(split.evidence) == 3
    assert progression([4.5], [5.0, 5.5]).value is None       # +0.5 from 5.0 is not, from 5.5 is


def test_pregnancy_or_breastfeeding_both_recorded_on_the_latest_day_is_unknown():
    chart = Chart(gender="female")
    chart.pregnancy(40, True)
    chart.pregnancy(10, True)
    chart.pregnancy(10, False)
    chart.lactation(10, True)
    chart.lactation(10, False)
    for name, state in (("pregnant", "pregnant"), ("lactating", "breastfeeding")):
        found = chart.fact(name)
        assert found.value is None and len(found.evidence) == 2, name
        assert found.detail == f"both {state} and not {state} recorded on 2025-05-22"
    chart.pregnancy(5, False)                                # a later record settles it
    assert chart.fact("pregnant").value is False


# ------------------------------------------------------------------------------------------ relapses

@pytest.mark.parametrize(("days", "count"), [(59, 1), (60, 1), (61, 0)])
def test_relapse_window_boundary(days, count):
    chart = Chart()
    chart.edss(3.0, 10)                                    # seen at the MS clinic inside the window
    chart.relapse(days)
    found = chart.fact("relapse-count", window="60 d")
    assert (found.value, found.upper) == (count, None)


def test_relapses_as_observation_or_condition_and_one_event_recorded_twice():
    chart = Chart()
    chart.edss(3.0, 10)
    chart.relapse(100, as_condition=True)
    chart.relapse(95)                                      # the same relapse, also as an Observation
    chart.relapse(300, as_condition=True)
    found = chart.fact("relapse-count", window="12 mo")
    assert found.value == 2 and len(found.evidence) == 3


def test_a_relapse_that_began_before_the_window_and_was_recorded_again_inside_it_is_not_in_the_window():
    """One relapse, a Condition with its onset 70 days ago and an Observation at the visit 45 days ago: it did
    not occur in the last 60 days (records less than 30 days after its first are the same relapse)."""
    chart = Chart()
    chart.edss(3.0, 10)
    onset = chart.relapse(70, as_condition=True)
    visit = chart.relapse(45)
    found = chart.fact("relapse-count", window="60 d")
    assert (found.value, found.upper) == (0, None)
    assert "of the relapse with onset 2025-03-23, before the window" in found.detail
    assert {f"Condition/{onset['id']}", f"Observation/{visit['id']}"} <= set(found.evidence)
    assert chart.fact("relapse-count", window="12 mo").value == 1
    chart.relapse(20)                   # 50 days after the first record: a new relapse, in the window
    found = chart.fact("relapse-count", window="60 d")
    assert found.value == 1 and "onset 2025-05-12" in found.detail


def test_relapse_severity_minimum_and_unknown_severity():
    chart = Chart()
    chart.edss(3.0, 10)
    chart.relapse(100, "mild")
    chart.relapse(200, "severe", as_condition=True)
    chart.relapse(300)                                     # no severity recorded: maybe moderate
    found = chart.fact("relapse-count", "moderate", "18 mo")
    assert (found.value, found.upper) == (1, 2)
    assert chart.fact("relapse-count", "severe", "6 mo").value == 0


@pytest.mark.parametrize(("text", "sure", "upper"), [
    ("Severe relapse", 1, None), ("not severe", 0, 1), ("non-severe", 0, 1), ("mild-moderate", 0, 1),
    ("mild to moderate", 0, 1), ("moderately severe", 0, 1), ("mild", 0, None),
])
def test_relapse_severity_in_words_names_one_severity_not_negated(text, sure, upper):
    chart = Chart()
    chart.edss(3.0, 10)
    chart.relapse(100, as_condition=True)["severity"] = {"text": text}
    found = chart.fact("relapse-count", "moderate", "12 mo")     # a negation or a range: maybe moderate
    assert (found.value, found.upper) == (sure, upper)


def test_without_follow_up_in_the_window_relapses_cannot_be_ruled_out():
    chart = Chart()
    chart.edss(3.0, 200)                                   # last seen before the 60-day window
    found = chart.fact("relapse-count", window="60 d")
    assert (found.value, found.upper) == (0, float("inf")) and "may be missing" in found.detail
    never = Chart()
    assert never.fact("relapse-count", window="60 d").upper == float("inf")
    recent = Chart()
    recent.relapse(20)                                     # a relapse seen is a relapse, follow-up or not
    assert recent.fact("relapse-count", window="60 d").value == 1


@pytest.mark.parametrize("value", [
    {"valueBoolean": False},
    {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "373067005"}]}},            # No
    {"valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA32-8"}]}},                # No
])
def test_a_relapse_observation_saying_no_is_no_relapse_but_a_follow_up(value):
    chart = Chart()
    chart.edss(3.0, 200)                                   # last EDSS before the 60-day window
    chart.relapse(20).update(value)                        # a visit inside it: "relapse? no"
    found = chart.fact("relapse-count", window="60 d")
    assert (found.value, found.upper) == (0, None) and found.evidence == ("Observation/p1-observation-2",)
    chart.relapse(10, "moderate")                          # a relapse that was one still counts
    assert chart.fact("relapse-count", window="60 d").value == 1


# ------------------------------------------------------------------------------------------ MRI

def test_lesion_counts_most_on_one_mri_in_window_integer_or_quantity():
    chart = Chart()
    chart.mri(100, gd=2, t2=0)
    chart.mri(200, gd=0, t2=3, quantity=True)
    chart.mri(500, gd=9, t2=9)                             # outside 12 months
    assert chart.fact("gd-lesion-count", window="12 mo").value == 2
    assert chart.fact("new-t2-lesion-count", window="12 mo").value == 3
    assert chart.fact("gd-lesion-count").value == 2        # no window: the latest MRI


def test_missing_mri_is_unknown():
    chart = Chart()
    chart.mri(500, gd=1)
    found = chart.fact("gd-lesion-count", window="12 mo")
    assert found.value is None and "no MRI" in found.detail
    assert Chart().fact("new-t2-lesion-count", window="12 mo").value is None


# ------------------------------------------------------------------------------------------ therapy

@pytest.mark.parametrize(("ended", "exposed"), [(29, True), (30, True), (31, False)])
def test_washout_boundary(ended, exposed):
    chart = Chart()
    chart.med("methylprednisolone", start=35, end=ended)
    assert chart.fact("therapy", "corticosteroids", "30 d").value is exposed


@pytest.mark.parametrize(("kind", "coding"), [
    ("MedicationStatement", {"system": ATC, "code": "L04AA27"}),        # fingolimod, ATC before 2023
    ("MedicationStatement", {"system": ATC, "code": "L04AE01"}),        # fingolimod, ATC 2026
    ("MedicationRequest", {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1876366"}),
    ("MedicationAdministration", {"system": ATC, "code": "L04AA23"}),   # natalizumab, old ATC
])
def test_therapy_from_statements_requests_administrations_rxnorm_and_atc(kind, coding):
    chart = Chart()
    chart.med(system=coding["system"], code=coding["code"], start=40, end=10, kind=kind)
    assert chart.fact("therapy", "immunosuppressants", "3 mo").value is True
    assert chart.fact("therapy", "immunosuppressants", "1 wk").value is False      # ended 10 days ago


DRUG_CODES = sorted((system, code, terminology.concept_of(system, code))
                    for group in ("disease-modifying-therapies", "corticosteroids", "fampridine")
                    for system, code in terminology.recognised_codes(group))


@pytest.mark.parametrize(("system", "code", "drug"), DRUG_CODES, ids=[f"{d}-{c}" for _, c, d in DRUG_CODES])
def test_every_code_of_the_therapy_value_sets_is_recognised(system, code, drug):
    """Each RxNorm (ingredient or product) and ATC (old or new) code of mappings/terminology.yaml."""
    chart = Chart()
    chart.med(system=system, code=code, start=40, end=10)
    groups = ("interferon-or-glatiramer", "immunosuppressants", "corticosteroids")
    subject = next((g for g in groups if drug in terminology.members(g)), drug)
    assert chart.fact("therapy", subject, "30 d").value is True
    assert chart.fact("therapy", subject, "1 wk").value is False


@pytest.mark.parametrize("kind", ["MedicationStatement", "MedicationRequest", "MedicationAdministration"])
def test_r5_medication_as_codeable_reference(kind):
    """R5 replaces medicationCodeableConcept / medicationReference by `medication` (a CodeableReference)."""
    chart = Chart()
    resource = chart.med("natalizumab", start=40, end=10, kind=kind)
    resource["medication"] = {"concept": resource.pop("medicationCodeableConcept")}
    if kind == "MedicationStatement":
        resource["status"] = "recorded"
    if kind == "MedicationAdministration":                  # R5 spells occurrence with one r
        resource["occurencePeriod"] = {"start": chart.ago(40), "end": chart.ago(10)}
        del resource["effectiveDateTime"]
    assert chart.fact("therapy", "immunosuppressants", "3 mo").value is True
    assert chart.fact("therapy", "immunosuppressants", "1 wk").value is False
    referenced = Chart()
    referenced.resources.append({"resourceType": "Medication", "id": "m1", "code": Chart.code("prednisone")})
    referenced._add("MedicationStatement", status="recorded", medication={"reference": {"reference": "Medication/m1"}},
                    effectivePeriod={"start": referenced.ago(20), "end": referenced.ago(10)})
    assert referenced.fact("therapy", "corticosteroids", "30 d").value is True
    ongoing = Chart()                                       # R5 has no `active`: an open period is ongoing
    ongoing._add("MedicationStatement", status="recorded", medication={"concept": Chart.code("fampridine")},
                 effectivePeriod={"start": ongoing.ago(100)})
    assert ongoing.fact("therapy", "fampridine", "0 d").value is True


def test_active_statement_without_effective_date_counts_from_its_assertion():
    chart = Chart()
    chart._add("MedicationStatement", status="active", medicationCodeableConcept=Chart.code("fampridine"),
               dateAsserted=chart.ago(30))
    assert chart.fact("therapy", "fampridine", "0 d").value is True
    undated = Chart()
    undated._add("MedicationStatement", status="completed", medicationCodeableConcept=Chart.code("fampridine"))
    assert [p.message for p in index_resources(undated.resources).problems] == [
        "MedicationStatement of fampridine without any date"]


def test_therapy_by_reference_by_name_ongoing_and_unknown_end():
    chart = Chart()
    chart.resources.append({"resourceType": "Medication", "id": "med1",
                            "code": {"coding": [{"system": ATC, "code": "L03AB07"}]}})
    chart._add("MedicationStatement", status="completed", medicationReference={"reference": "Medication/med1"},
               effectivePeriod={"start": chart.ago(100), "end": chart.ago(20)})
    assert chart.fact("therapy", "interferon-or-glatiramer", "1 mo").value is True
    by_name = Chart()
    product = {"system": "urn:oid:1.2.3.4.5", "code": "GIL05",
               "display": "Fingolimod 0.5 MG Oral Capsule [Gilenya]"}   # a local code: found by name
    by_name._add("MedicationStatement", status="active", effectivePeriod={"start": by_name.ago(100)},
                 medicationCodeableConcept={"coding": [product]})
    assert by_name.fact("therapy", "immunosuppressants", "0 d").value is True      # ongoing today
    unsure = Chart()
    unsure._add("MedicationStatement", status="completed", medicationCodeableConcept=Chart.code("natalizumab"),
                effectivePeriod={"start": unsure.ago(400)})
    found = unsure.fact("therapy", "immunosuppressants", "3 mo")
    assert found.value is None and "end not recorded" in found.detail


def test_a_therapy_ending_before_it_starts_is_reported_and_taken_without_its_dates():
    chart = Chart()
    chart.med("fingolimod", start=30, end=800)            # from 2025-05-02 to 2023-03-24
    problems = [str(p) for p in index_resources(chart.resources).problems]
    assert problems == ["MedicationStatement/p1-medicationstatement-1: MedicationStatement of fingolimod ends "
                        "(2023-03-24) before it starts (2025-05-02): its dates are not used"]
    for window in ("6 mo", "0 d"):                         # neither a recent start nor an old end decides
        found = chart.fact("therapy", "fingolimod", window)
        assert found.value is None and found.evidence == ("MedicationStatement/p1-medicationstatement-1",)


def test_a_request_with_several_dosage_instructions_spans_the_earliest_start_to_the_latest_end():
    chart = Chart()
    request = chart.med("fingolimod", start=900, end=100, kind="MedicationRequest")
    request["dosageInstruction"].append({"timing": {"repeat": {"boundsPeriod": {"start": chart.ago(300),
                                                                                "end": chart.ago(200)}}}})
    found = chart.fact("therapy", "fingolimod", "4 mo")    # the first instruction's end, 100 days ago, counts
    assert found.value is True and f"from {chart.ago(900)} to {chart.ago(100)}" in found.detail
    request["status"] = "active"
    request["dosageInstruction"][1]["timing"]["repeat"]["boundsPeriod"] = {"start": chart.ago(50)}   # open
    found = chart.fact("therapy-duration", "fingolimod")
    assert found.value == 900 and f"fingolimod {chart.ago(900)} to {chart.ago(0)}" in found.detail


def test_a_medication_reference_not_resolved_is_reported_and_a_display_names_the_drug():
    chart = Chart()
    for reference in ({"reference": "#gone"}, {"reference": "med1"}, {"display": "Gilenya 0.5 mg"}):
        record = chart.med("fingolimod", start=200)
        del record["medicationCodeableConcept"]
        record["medicationReference"] = reference
    chart.resources[-2]["contained"] = [{"resourceType": "Medication", "id": "med1", "code": Chart.code("fingolimod")}]
    assert [str(p) for p in index_resources(chart.resources).problems] == [
        "MedicationStatement/p1-medicationstatement-1: its medication #gone is not among its contained resources: "
        "the drug is not known",
        "MedicationStatement/p1-medicationstatement-2: its medicationReference 'med1' is neither '#<contained id>' "
        "nor Medication/<id>: the drug is not known"]
    found = chart.fact("therapy", "fingolimod", "0 d")
    assert found.value is True and found.evidence == ("MedicationStatement/p1-medicationstatement-3",)


def test_no_medication_records_is_unknown_but_other_drugs_close_the_world():
    assert Chart().fact("therapy", "corticosteroids", "30 d").value is None
    chart = Chart()
    chart.med("glatiramer", start=800, end=500)
    found = chart.fact("therapy", "corticosteroids", "30 d")
    assert found.value is False and "among 1 medication record" in found.detail
    erroneous = Chart()
    erroneous.med("prednisone", start=10, end=5, status="entered-in-error")
    assert erroneous.fact("therapy", "corticosteroids", "30 d").value is None


DMT = "disease-modifying-therapies"


def test_therapy_duration_courses_overlaps_and_bounds():
    def days(chart: Chart) -> tuple:
        found = chart.fact("therapy-duration", DMT)
        return found.value, found.upper
    a_year = Chart()
    a_year.med("interferon-beta-1a", start=565, end=200)
    assert days(a_year) == (365.0, None)
    overlap = Chart()                                   # 300 + 300 days, 100 of them on both drugs
    overlap.med("interferon-beta-1a", start=800, end=500)
    overlap.med("fingolimod", start=600, end=300)
    assert days(overlap) == (500.0, None)
    ongoing = Chart()
    ongoing.med("natalizumab", start=100)               # still taken: up to the screening date
    ongoing.med("natalizumab", start=10, end=None, status="active")
    assert days(ongoing) == (100.0, None)
    # records of one drug less than 400 days apart are one course (an infusion every 6 months, yearly courses),
    # and a dose counts the days of its dosing interval (ocrelizumab 182, cladribine 365), up to the screening date
    infusions, yearly, apart = Chart(), Chart(), Chart()
    for when in (900, 720, 540, 360, 180):
        infusions.med("ocrelizumab", start=when, kind="MedicationAdministration")
    assert days(infusions) == (900.0, None)
    yearly.med("cladribine", start=900, kind="MedicationAdministration")
    yearly.med("cladribine", start=501, kind="MedicationAdministration")
    assert days(yearly) == (900.0 - (501 - 365), None)
    apart.med("cladribine", start=900, kind="MedicationAdministration")
    apart.med("cladribine", start=500, kind="MedicationAdministration")      # 400 days apart: two courses
    assert days(apart) == (2 * 365.0, None)
    # an end not recorded: between its start and the screening date; a start not recorded: at least
    unsure = Chart()
    unsure.med("glatiramer", start=400, status="completed")
    found = unsure.fact("therapy-duration", DMT)
    assert (found.value, found.upper) == (0.0, 400.0) and "end not recorded" in found.detail
    no_start = Chart()
    no_start._add("MedicationStatement", status="completed", medicationCodeableConcept=Chart.code("fingolimod"),
                  effectivePeriod={"end": no_start.ago(50)})
    assert days(no_start) == (0.0, float("inf"))
    later = Chart()
    later.med("fingolimod", start=-30)                  # prescribed to start after the screening date
    later.med("prednisone", start=40, end=35)
    assert days(later) == (0.0, None)
    assert Chart().fact("therapy-duration", DMT).value is None     # no medication list at all


def test_a_dose_of_a_drug_given_at_intervals_counts_its_interval_as_time_on_it():
    """One cladribine course (tablets in weeks 1 and 5) 14 months ago is over a year of therapy: its effect
    covers the year until the next course; an ocrelizumab infusion 100 days ago counts up to the screening date.
    A period recorded as such gets nothing added, a drug taken continuously nothing either, and a washout still
    counts from the dose itself (`therapy`)."""
    def duration(chart: Chart) -> facts.Fact:
        return chart.fact("therapy-duration", DMT)
    course = Chart()
    course.med("cladribine", start=425, kind="MedicationAdministration")
    course.med("cladribine", start=397, kind="MedicationAdministration")
    found = duration(course)
    assert (found.value, found.upper) == (425.0 - (397 - 365), None)
    assert found.detail.endswith(f"(cladribine {course.ago(425)} to {course.ago(397 - 365)}, each dose counting "
                                 "365 days)"), found.detail
    infusion = Chart()
    infusion.med("ocrelizumab", start=100, kind="MedicationAdministration")
    assert duration(infusion).value == 100.0                                      # not past the screening date
    one_day = Chart()
    one_day._add("MedicationStatement", status="completed", medicationCodeableConcept=Chart.code("natalizumab"),
                 effectiveDateTime=one_day.ago(300))                             # a statement of one dose
    assert duration(one_day).value == 28.0
    period = Chart()
    period.med("ocrelizumab", start=900, end=300)                               # a period, its end recorded
    assert duration(period).value == 600.0 and "dose" not in duration(period).detail
    daily = Chart()
    daily.med("teriflunomide", start=300, kind="MedicationAdministration")       # no dosing interval
    assert duration(daily).value == 0.0
    washout = Chart()
    washout.med("natalizumab", start=40, kind="MedicationAdministration")
    assert washout.fact("therapy", "natalizumab", "30 d").value is False
    assert duration(washout).value == 28.0


def test_current_treatment_with_a_drug_given_at_intervals_lasts_its_dosing_interval():
    """"Current immunosuppressive treatment" (a 0-day window): an ocrelizumab infusion 90 days ago is current
    (its interval is 182 days), 182 days ago not (the trials' own washouts decide after the interval: SMART-MS
    excludes ocrelizumab within 12 months); a drug taken continuously is current only while its record says so."""
    SUBJECT = "immunomodulators-or-immunosuppressants"
    def current(days: int, drug: str = "ocrelizumab") -> facts.Fact:
        chart = Chart()
        chart.med(drug, start=days, kind="MedicationAdministration")
        return chart.fact("therapy", SUBJECT, "0 d")
    found = current(90)
    assert found.value is True, found
    assert found.detail.startswith(f"ocrelizumab dose on {Chart().ago(90)}, within its 182-day dosing interval"), \
        found.detail
    assert current(181).value is True and current(182).value is False and current(400).value is False
    assert current(364, drug="cladribine").value is True and current(365, drug="cladribine").value is False
    assert current(1, drug="teriflunomide").value is False                   # a daily drug, dosed yesterday
    assert current(0, drug="teriflunomide").value is True
    assert current(2, drug="glatiramer").value is True                       # 40 mg three times a week
    # a course of several days recorded as one period; a dose recorded by its month, current whichever its day
    course = Chart()
    course.med("cladribine", start=300, end=296)
    assert course.fact("therapy", SUBJECT, "0 d").value is True
    assert course.fact("therapy-duration", DMT).value == 300.0
    def in_month(month: str) -> facts.Fact:
        chart = Chart()
        chart._add("MedicationStatement", status="completed", medicationCodeableConcept=chart.code("ocrelizumab"),
                   effectiveDateTime=month)
        return chart.fact("therapy", SUBJECT, "0 d")
    march = in_month("2025-03")
    assert march.value is True and march.detail.startswith("ocrelizumab dose in 2025-03, within its 182-day"), march
    assert in_month("2024-11").value is False                               # up to 2024-11-30 + 182 days: 2025-05-31
    december = in_month("2024-12")                                          # 2024-12-01 + 182 days is 2025-06-01
    assert december.value is None and "its 182-day dosing interval perhaps over" in december.detail, december
    washout = Chart()
    washout.med("ocrelizumab", start=90, kind="MedicationAdministration")
    assert washout.fact("therapy", SUBJECT, "30 d").value is False            # a washout counts from the dose


def test_time_on_therapy_keeps_its_bounds_whatever_the_dates():
    """Random therapy records (statements, administrations, requests; full, month and year dates; open ends; no
    start): time on therapy is never negative, never above its upper bound, never longer than since the earliest
    record began, and every therapy fact is three-valued. A fixed seed: a failure is reproducible."""
    import random
    rng = random.Random(7)
    def when() -> str:
        day = (AS_OF - dt.timedelta(days=rng.randint(-40, 1500))).isoformat()
        return rng.choice([day, day[:7], day[:4]])
    drugs = ["cladribine", "ocrelizumab", "natalizumab", "fingolimod", "glatiramer", "alemtuzumab"]
    for _ in range(400):
        chart = Chart()
        for _ in range(rng.randint(1, 4)):
            first, second = sorted([when(), when()])
            drug, kind = chart.code(rng.choice(drugs)), rng.choice(["statement", "administration", "request"])
            if kind == "administration":
                chart._add("MedicationAdministration", status="completed", medicationCodeableConcept=drug,
                           effectiveDateTime=first)
            elif kind == "statement":
                dates = rng.choice([{"effectivePeriod": {"start": first}}, {"effectiveDateTime": first},
                                    {"effectivePeriod": {"start": first, "end": second}},
                                    {"effectivePeriod": {"end": second}}])
                chart._add("MedicationStatement", status=rng.choice(["active", "completed", "stopped"]),
                           medicationCodeableConcept=drug, **dates)
            else:
                bounds = rng.choice([{"start": first}, {"start": first, "end": second}])
                chart._add("MedicationRequest", status=rng.choice(["active", "completed"]), intent="order",
                           medicationCodeableConcept=drug, authoredOn=first,
                           dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": bounds}}}])
        found = chart.fact("therapy-duration", DMT)
        exposures = chart.data().exposures
        began = min(e.start if e.start is not None else (e.end if e.end_from is None else e.end_from)
                    for e in exposures) if exposures else AS_OF.toordinal()
        assert found.value is not None and found.value >= 0, found
        assert found.upper is None or found.value <= found.upper, found
        assert found.value <= max(0, AS_OF.toordinal() - began), (found, exposures)
        for window in ("0 d", "3 mo", None):
            assert chart.fact("therapy", "immunosuppressants", window).value in (True, False, None)


def test_an_end_recorded_as_a_year_is_told_as_that_year():
    chart = Chart()
    chart._add("MedicationStatement", status="completed", medicationCodeableConcept=chart.code("fingolimod"),
               effectivePeriod={"start": "2023-01-15", "end": "2024"})
    found = chart.fact("therapy-duration", DMT)
    assert found.detail == "351 to 716 days on disease modifying therapies (fingolimod 2023-01-15 to 2024)"


def test_therapy_facts_do_not_depend_on_the_order_records_come_in():
    """A server pages resources in its own order: the same records give the same reasons and evidence."""
    chart = Chart()
    chart.med("fingolimod", start=565, end=365)
    chart.med("interferon-beta-1a", start=400, end=200)
    chart.med("natalizumab", start=100)
    patient, reversed_ = chart.data(), index_resources(chart.resources[:1] + chart.resources[:0:-1]).patients["p1"]
    clock = Clock(AS_OF)
    for name, window in (("therapy-duration", None), ("therapy", None), ("therapy", Window(12, "mo"))):
        assert facts.fact(name, patient, DMT, window, clock) == facts.fact(name, reversed_, DMT, window, clock)


def test_records_of_the_same_day_give_the_same_facts_whatever_order_they_come_in():
    """Two EDSS, relapses, lesion counts or labs of one day, two MS courses recorded the same day: which one a
    fact reads (and cites) does not depend on input order (files, workers, a server's pages)."""
    chart = Chart(gender="female")
    chart.condition("rrms", onset=chart.ago(3000), recorded=chart.ago(900))
    chart.condition("spms", onset=chart.ago(2000), recorded=chart.ago(900))
    chart.condition("multiple-sclerosis", onset=chart.ago(3000))
    chart.condition("polyneuropathy", onset=chart.ago(300))
    chart.edss(3.0, 40)
    chart.edss(6.5, 40)
    chart.relapse(100, "mild")
    chart.relapse(100, "severe", as_condition=True)
    chart.mri(60, gd=0, t2=1)
    chart.mri(60, gd=2, t2=0)
    chart.lab("egfr", 30, value=55, unit="mL/min/{1.73_m2}")
    chart.lab("egfr", 30, value=75, unit="mL/min/{1.73_m2}")
    chart.lab("hiv", 30, positive=False)
    chart.lab("hiv", 30, positive=True)
    chart.pregnancy(10, False)
    chart.pregnancy(10, True)
    shuffled = chart.resources[:1] + chart.resources[:0:-1]
    patient, reversed_ = chart.data(), index_resources(shuffled).patients["p1"]
    clock = Clock(AS_OF)
    asked = [("ms-subtype", None, None), ("disease-duration", None, None), ("edss", None, None),
             ("edss-progression", None, Window(24, "mo")), ("relapse-count", None, Window(12, "mo")),
             ("gd-lesion-count", None, Window(12, "mo")), ("new-t2-lesion-count", None, Window(12, "mo")),
             ("lab-value", "egfr", None), ("lab-positive", "hiv", None), ("condition", "polyneuropathy", None),
             ("pregnant", None, None)]
    assert {name for name, _, _ in asked} <= set(FACTS)
    for name, subject, window in asked:
        assert facts.fact(name, patient, subject, window, clock) == facts.fact(name, reversed_, subject, window,
                                                                             clock), name


def test_procedure_inside_the_window_by_its_day_and_by_status():
    """12 months before 2025-06-01 start on 2024-06-01 (365 days back); planned, cancelled or erroneous
    procedures are not done; R5 writes occurrence[x], and a period counts by its last day."""
    HSCT = "stem-cell-transplants"
    def chart_with(**procedure) -> Chart:
        chart = Chart()
        chart.procedure("haematopoietic-stem-cell-transplant", **procedure)
        return chart
    assert chart_with(days=365).fact("procedure", HSCT, "12 mo").value is True
    assert chart_with(days=366).fact("procedure", HSCT, "12 mo").value is False
    assert chart_with(days=366).fact("procedure", HSCT).value is True                   # ever
    assert chart_with(days=-5).fact("procedure", HSCT).value is False                    # after the screening date
    for status in ("preparation", "not-done", "entered-in-error", "on-hold"):
        found = chart_with(days=10, status=status).fact("procedure", HSCT)
        assert found.value is None and "no Procedure recorded" in found.detail, status
    r5 = chart_with(days=None, occurrencePeriod={"start": Chart().ago(400), "end": Chart().ago(360)})
    assert r5.fact("procedure", HSCT, "12 mo").value is True
    other = Chart()
    other.procedure(system="http://snomed.info/sct", code="277762005")
    found = other.fact("procedure", HSCT, "12 mo")
    assert found.value is False and "among 1 recorded procedure(s)" in found.detail
    assert Chart().fact("procedure", HSCT).value is None


def test_a_transplant_on_the_problem_list_counts_as_done_by_its_onset_else_by_its_record():
    """A stem cell transplant recorded as a history or status Condition (SNOMED situation, ICD-10-CM Z94.84 and
    Z94.81, ICD-10-GM Z94.80 and Z94.81) is done by its onset; without one, some time before it was recorded."""
    HSCT = "stem-cell-transplants"
    CM, GM = "http://hl7.org/fhir/sid/icd-10-cm", "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
    def chart_with(system: str, code: str, **dates) -> tuple[Chart, str]:
        chart = Chart()
        return chart, "Condition/" + chart.condition(system=system, code=code, **dates)["id"]

    recent, ref = chart_with(CM, "Z94.84", onset=Chart().ago(300))
    found = recent.fact("procedure", HSCT, "12 mo")
    assert found == facts.Fact(True, (ref,), "2024-08-05 (haematopoietic stem cell transplants in the 12 months "
                                              "before 2025-06-01)")
    old, _ = chart_with("http://snomed.info/sct", "153351000119102", onset="2015-03-01")
    assert old.fact("procedure", HSCT).value is True                                     # ever
    assert old.fact("procedure", HSCT, "12 mo").value is None          # no Procedure records: another is possible
    old.procedure(system="http://snomed.info/sct", code="277762005")
    assert old.fact("procedure", HSCT, "12 mo").value is False
    status, ref = chart_with(GM, "Z94.80", recorded=Chart().ago(100))                   # done before 100 days ago
    assert status.fact("procedure", HSCT).value is True
    found = status.fact("procedure", HSCT, "12 mo")
    assert found.value is None and found.evidence == (ref,) and "cannot tell whether" in found.detail
    long_ago, _ = chart_with(CM, "Z94.81", recorded="2019-01-10")
    long_ago.procedure(system="http://snomed.info/sct", code="277762005")
    assert long_ago.fact("procedure", HSCT, "12 mo").value is False                  # done before the window
    assert long_ago.fact("procedure", HSCT).value is True
    later, _ = chart_with(GM, "Z94.81", recorded=Chart().ago(-10))                        # after the screening date
    assert later.fact("procedure", HSCT).value is None


def test_allergy_active_and_recorded_by_the_screening_date():
    SUBSTANCES = "paracetamol-codeine-or-lidocaine"
    chart = Chart()
    tylenol = chart.allergy(text="Tylenol with Codeine #3")
    found = chart.fact("allergy", SUBSTANCES)
    assert found.value is True and found.evidence == (f"AllergyIntolerance/{tylenol['id']}",)
    assert "codeine, paracetamol" in found.detail
    later = Chart()
    later.allergy("lidocaine")["recordedDate"] = later.ago(-3)                          # recorded after as-of
    found = later.fact("allergy", SUBSTANCES)
    assert found.value is False
    assert found.detail == "no active allergy to paracetamol, codeine or lidocaine among 1 allergy record(s)"
    inactive = Chart()
    inactive.allergy("lidocaine", status="inactive")
    assert inactive.fact("allergy", SUBSTANCES).value is False
    unconfirmed = Chart()
    unconfirmed.allergy(system="http://snomed.info/sct", code="387480006", verification="unconfirmed", status=None)
    found = unconfirmed.fact("allergy", "lidocaine")
    assert found.value is True and "(unconfirmed)" in found.detail
    refuted = Chart()
    refuted.allergy("codeine", verification="refuted")
    assert refuted.fact("allergy", "codeine").value is None                             # the only record, refuted
    assert Chart().fact("allergy", SUBSTANCES).value is None


def test_a_therapy_dated_by_month_or_year_decides_only_where_every_day_it_may_mean_agrees():
    """An end recorded as `2025-05` may be any day of May: inside a window that starts on 2025-03-01 (3 months
    before 2025-06-01) whichever day, across the start of one that begins 2025-05-02 (30 days) unknown; a month
    wholly before the window is not exposure. Time on therapy becomes a range. Such records used to be dropped."""
    def ended(end: str, start: str = "2023-01-15") -> Chart:
        chart = Chart()
        chart._add("MedicationStatement", status="completed", medicationCodeableConcept=chart.code("natalizumab"),
                   effectivePeriod={"start": start, "end": end})
        return chart

    may = ended("2025-05")
    assert may.fact("therapy", "natalizumab", "3 mo").value is True
    found = may.fact("therapy", "natalizumab", "30 d")
    assert found.value is None and "ended between 2025-05-01 and 2025-05-31" in found.detail
    assert ended("2025-02").fact("therapy", "natalizumab", "3 mo").value is False
    duration = ended("2024").fact("therapy-duration", DMT)                 # 2023-01-15 to some day of 2024
    assert (duration.value, duration.upper) == (351.0, 716.0)
    whole_years = ended("2020", start="2019").data().exposures[0]         # both partial: still read
    assert (whole_years.start, whole_years.end_from, whole_years.end) == (
        dt.date(2019, 1, 1).toordinal(), dt.date(2020, 1, 1).toordinal(), dt.date(2020, 12, 31).toordinal())


def test_a_therapy_started_in_a_month_or_year_is_every_day_of_it():
    """A start recorded as `2019` may be any day of 2019: the reason says "from 2019", time on therapy is counted
    from its last day at least and its first day at most, a start in the screening month may be after the
    screening date, and only a start wholly before the birth date is a wrong one."""
    def started(start: str, status: str = "active", end: str | None = None, born: str | None = None) -> Chart:
        chart = Chart(born=born)
        period = {"start": start, **({"end": end} if end else {})}
        chart._add("MedicationStatement", status=status, medicationCodeableConcept=chart.code("natalizumab"),
                   effectivePeriod=period)
        return chart

    def days(*ymd: int) -> int:
        return AS_OF.toordinal() - dt.date(*ymd).toordinal()

    ongoing = started("2019")
    found = ongoing.fact("therapy", "natalizumab", "0 d")
    assert found.value is True and found.detail.startswith("natalizumab from 2019, ongoing"), found.detail
    duration = ongoing.fact("therapy-duration", DMT)
    assert (duration.value, duration.upper) == (days(2019, 12, 31), days(2019, 1, 1))
    assert "(natalizumab 2019 to 2025-06-01)" in duration.detail, duration.detail
    ended = started("2024-03", status="completed", end="2024-05-10").fact("therapy-duration", DMT)
    assert (ended.value, ended.upper) == (40.0, 70.0) and "natalizumab 2024-03 to 2024-05-10" in ended.detail
    this_month = started("2025-06").fact("therapy", "natalizumab", "3 mo")      # 2025-06-01 to 2025-06-30
    assert this_month.value is None
    assert this_month.detail.startswith("natalizumab from 2025-06, perhaps after 2025-06-01"), this_month.detail
    assert started("2025-05").fact("therapy", "natalizumab", "3 mo").value is True
    assert started("2025-07").fact("therapy", "natalizumab", "3 mo").value is False       # not yet taken
    same_year = started("1990", born="1990-06-01").data()                               # may be after the birth
    assert [e.start_until for e in same_year.exposures] == [dt.date(1990, 12, 31).toordinal()]
    assert same_year.drop_before_birth() == [] and same_year.exposures
    year_before = started("1989", born="1990-06-01").data()
    dropped = year_before.drop_before_birth()
    assert dropped == [("MedicationStatement/p1-medicationstatement-1", "1989")]      # reported as recorded
    assert not year_before.exposures
    # a recorded day of the other end narrows the month or year: started in 2025 and ended 2025-01-15 is over
    # before a 3-month window, ended 2025-03-10 inside a 12-month one (not "perhaps after the screening date")
    assert started("2025", status="completed", end="2025-01-15").fact("therapy", "natalizumab", "3 mo").value is False
    assert started("2025", status="completed", end="2025-03-10").fact("therapy", "natalizumab", "12 mo").value is True
    narrowed = started("2025", status="completed", end="2025-03-10").data().exposures[0]
    assert (narrowed.start, narrowed.start_until) == (dt.date(2025, 1, 1).toordinal(), dt.date(2025, 3, 10).toordinal())
    # an end not recorded after a start in the screening year: no day after the screening date counted
    course = started("2024-06-01", status="completed", end="2024-12-31")
    course._add("MedicationStatement", status="completed", medicationCodeableConcept=course.code("natalizumab"),
                effectivePeriod={"start": "2025"})
    found = course.fact("therapy-duration", DMT)                    # one course: at least up to 2025-01-01
    assert (found.value, found.upper) == (days(2024, 6, 1) - days(2025, 1, 1), days(2024, 6, 1)), found
    assert "natalizumab from 2024-06-01 to 2025-01-01 or later, end not recorded" in found.detail, found.detail


def test_drugs_not_recognised_are_counted_in_the_reason():
    """A drug known by no code or name of terminology.yaml is not one of the subject's, but the reviewer is told
    how many of the records were not recognised (one may be a DMT under a name screening does not know)."""
    chart = Chart()
    chart.med("glatiramer", start=800, end=500)
    chart._add("MedicationStatement", status="active", effectivePeriod={"start": chart.ago(100)},
               medicationCodeableConcept={"text": "Vitamin D3 1000 IU"})
    chart.resources.append({"resourceType": "Medication", "id": "m9", "code": {"text": "Baclofen 10 mg"}})
    chart._add("MedicationStatement", status="active", effectivePeriod={"start": chart.ago(100)},
               medicationReference={"reference": "Medication/m9"})
    found = chart.fact("therapy", "corticosteroids", "30 d")
    assert found.value is False
    assert found.detail.endswith("among 3 medication record(s), 2 of them a drug not recognised"), found.detail
    named = Chart()
    named._add("MedicationStatement", status="active", effectivePeriod={"start": named.ago(100)},
               medicationCodeableConcept={"text": "Tysabri 300 mg every 4 weeks"})
    assert named.fact("therapy", "immunosuppressants", "0 d").value is True
    assert named.data().unrecognised_medications == 0


# ------------------------------------------------------------------------------------------ conditions, labs

def test_conditions_closed_world_when_a_problem_list_exists():
    chart = Chart()
    chart.condition("rrms", onset="2018-01-01")
    assert chart.fact("condition", "malignancy").value is False
    cancer = chart.condition(system=ICD10CM, code="C80.1", onset="2020-01-01")
    assert chart.fact("condition", "malignancy").evidence == (f"Condition/{cancer['id']}",)
    refuted = Chart()
    refuted.condition("malignancy", verificationStatus={"coding": [{"code": "refuted"}]})
    assert refuted.fact("condition", "malignancy").value is None     # nothing usable recorded
    assert Chart().fact("condition", "malignancy").value is None


@pytest.mark.parametrize("loinc", sorted(code for _, code in terminology.recognised_codes("egfr")))
def test_egfr_from_every_loinc_code_of_the_value_set(loinc):
    chart = Chart()
    chart.lab("egfr", 20, value=59.9, unit="mL/min/{1.73_m2}", loinc=loinc)
    assert chart.fact("lab-value", "egfr").value == 59.9


def test_lab_values_units_and_qualitative_results():
    chart = Chart()
    chart.lab("platelets", 20, value=95000, unit="/uL")
    assert chart.fact("lab-value", "platelets").value == 95
    per_second = Chart()                                # Swedish labs: mL/s/1.73 m2, 1.5 is 90 per minute
    per_second.lab("egfr", 20, value=1.5, unit="mL/s/1.73m2")
    assert per_second.fact("lab-value", "egfr").value == 90
    per_second.lab("egfr", 10, value=58, unit="mL/min/1,73 m2")
    assert per_second.fact("lab-value", "egfr").value == 58
    per_second.lab("egfr", 5, value=1.1, unit="mg/dL")  # a creatinine filed as eGFR: reported, not used
    assert per_second.fact("lab-value", "egfr").value == 58
    assert [p.message for p in index_resources(per_second.resources).problems] == [
        "egfr in unit 'mg/dL', which screening cannot convert"]
    chart.observation(Chart.code("hiv"), 30, valueQuantity={"value": 0.1},
                      interpretation=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                   "v3-ObservationInterpretation", "code": "POS"}]}])
    chart.observation(Chart.code("hcv"), 30, valueString="Negative")
    assert chart.fact("lab-positive", "hiv").value is True
    assert chart.fact("lab-positive", "hcv").value is False
    found = chart.fact("lab-positive", "hbsag")
    assert found.value is None and "no hepatitis B surface antigen test" in found.detail
    assert chart.fact("lab-value", "platelets", "1 wk").value is None


def test_results_and_severities_written_as_text_only():
    """What `patients map` writes where no reviewed code exists: valueCodeableConcept with a text only."""
    chart = Chart()
    chart.edss(3.0, 10)
    chart.observation(Chart.code("hiv"), 20, valueCodeableConcept={"text": "Negative"})
    chart.observation(Chart.code("hbsag"), 20, valueCodeableConcept={"text": "Positive"})
    chart.observation(Chart.code("relapse"), 100, valueCodeableConcept={"text": "Moderate"})
    chart.observation(Chart.code("relapse"), 200, valueCodeableConcept={"text": "Mild"})
    assert chart.fact("lab-positive", "hiv").value is False and chart.fact("lab-positive", "hbsag").value is True
    found = chart.fact("relapse-count", "moderate", "12 mo")
    assert (found.value, found.upper) == (1, None)


def test_csf_oligoclonal_bands():
    chart = Chart()
    chart.lab("csf-oligoclonal-bands", 900, positive=True)
    assert chart.fact("csf-oligoclonal-bands").value is True
    assert Chart().fact("csf-oligoclonal-bands").value is None


# ------------------------------------------------------------------------------------------ pregnancy, lactation

def test_pregnancy_and_lactation():
    assert Chart(gender="male").fact("pregnant").value is False
    woman = Chart(gender="female")
    assert woman.fact("pregnant").value is None and woman.fact("lactating").value is None
    woman.lab("pregnancy-test", 20, positive=False)
    assert woman.fact("pregnant").value is False
    late = Chart(gender="female")
    late.lab("pregnancy-test", 40, positive=False)        # a negative test counts for 30 days
    assert late.fact("pregnant").value is None and "too old" in late.fact("pregnant").detail
    pregnant = Chart(gender="female")
    pregnant.pregnancy(100, True)
    assert pregnant.fact("pregnant").value is True
    pregnant.lactation(10, False)
    assert pregnant.fact("lactating").value is False
    nursing = Chart(gender="female")
    nursing.lactation(100, True)
    assert nursing.fact("lactating").value is True


def test_a_pregnancy_condition_counts_from_its_date_and_ends_at_its_abatement():
    def woman(**condition) -> Chart:
        chart = Chart(gender="female")
        chart.condition("pregnant", **condition)
        return chart

    assert woman(onset=Chart().ago(100)).fact("pregnant").value is True
    old = woman(onset="2012-03-01")                     # still "active": nobody closed it
    assert old.fact("pregnant").value is None and "too old" in old.fact("pregnant").detail
    assert woman(onset=Chart().ago(-30)).fact("pregnant").value is None         # recorded after the screening date
    newer_test = woman(onset=Chart().ago(100))
    newer_test.lab("pregnancy-test", 5, positive=False)
    assert newer_test.fact("pregnant").value is False
    delivered = woman(onset=Chart().ago(250), abatementDateTime=Chart().ago(10))
    assert delivered.fact("pregnant").value is False
    undated = woman()
    assert undated.fact("pregnant").value is None and "without a date" in undated.fact("pregnant").detail


def test_window_start_by_calendar():
    clock = Clock(dt.date(2025, 3, 31))
    assert clock.date(clock.since(Window(1, "mo"))) == "2025-02-28"
    assert clock.date(clock.since(Window(18, "mo"))) == "2023-09-30"
    assert clock.date(clock.since(Window(2, "a"))) == "2023-03-31"
    assert clock.date(clock.since(Window(2, "wk"))) == "2025-03-17"
    # a strict window ("less than 3 months since") leaves out the day exactly one period back
    assert clock.date(clock.since(Window(3, "mo", strict=True))) == "2025-01-01"
    assert clock.window_text(Window(3, "mo", strict=True)) == "less than 3 months before 2025-03-31"


def test_resources_of_unexpected_shape_are_problems_not_failures():
    chart = Chart()
    chart.condition("rrms", onset="2015-01-01")
    odd = [
        chart.condition("rrms", onsetPeriod="2020"),                                 # a string for a Period
        chart.condition("rrms", onsetAge={"value": 9999, "unit": "a"}),                # year 11984
        chart.observation(Chart.code("gd-enhancing-lesion-count"), 5, valueQuantity={"value": float("1e308") * 10}),
        chart.med("fingolimod", start=100, end=10) | {"effectivePeriod": "2025"},
    ]
    chart.resources[-1] = odd[-1]
    chart._add("MedicationStatement", status="active", medicationReference={"reference": "Medication/nope"},
               effectivePeriod={"start": chart.ago(50)})
    index = index_resources(chart.resources)
    problems = [str(p) for p in index.problems]
    assert len(problems) == 5, problems
    assert sum("unexpected shape" in p for p in problems) == 2
    assert any("gd-enhancing-lesion-count Infinity is not a whole number of lesions" in p for p in problems)
    assert any("onsetAge past any possible date" in p for p in problems)
    assert any("Medication/nope is not in the input" in p for p in problems)
    assert index.patients["p1"].conditions[0].onset is not None          # the good Condition is still read


# ------------------------------------------------------------------------------------------ impossible values

EGFR_BELOW_60 = Rule.from_dict({"fact": "lab-value", "subject": "egfr", "below": 60})
GOOD = {"egfr": (80.0, "mL/min/{1.73_m2}"), "platelets": (150.0, "10*9/L"), "white-cells": (6.0, "10*9/L")}


@pytest.mark.parametrize(("lab", "value", "unit", "message"), [
    ("egfr", float("nan"), "mL/min/{1.73_m2}", "eGFR NaN mL/min/1.73m2 is not a possible value (0 to 250)"),
    ("egfr", float("inf"), "mL/min/{1.73_m2}", "eGFR Infinity mL/min/1.73m2 is not a possible value (0 to 250)"),
    ("egfr", -5, "mL/min/{1.73_m2}", "eGFR -5 mL/min/1.73m2 is not a possible value (0 to 250)"),
    ("egfr", 600, "mL/min/{1.73_m2}", "eGFR 600 mL/min/1.73m2 is not a possible value (0 to 250)"),
    ("platelets", 250000, "10*9/L", "platelet count 250000 10*9/L is not a possible value (0 to 10000)"),  # per uL
    ("platelets", -150, "10*9/L", "platelet count -150 10*9/L is not a possible value (0 to 10000)"),
    ("platelets", 2.5e7, "/uL", "platelet count 25000000 /uL (25000 10*9/L) is not a possible value (0 to 10000)"),
    ("platelets", "NaN", "10*9/L", "platelet count NaN 10*9/L is not a possible value (0 to 10000)"),   # a string
    ("white-cells", float("-inf"), "10*9/L",
     "white cell count -Infinity 10*9/L is not a possible value (0 to 2000)"),
])
def test_impossible_lab_values_are_reported_and_the_previous_result_is_used(lab, value, unit, message):
    """An impossible result is as if it were not there: the latest possible one before it counts, else unknown."""
    chart = Chart()
    good = chart.lab(lab, 200, value=GOOD[lab][0], unit=GOOD[lab][1])
    bad = chart.lab(lab, 10, value=value, unit=unit)
    index = index_resources(chart.resources)
    assert [str(p) for p in index.problems] == [f"Observation/{bad['id']}: {message}: not used"]
    assert index.used == len(chart.resources) - 1
    found = chart.fact("lab-value", lab)
    assert (found.value, found.evidence) == (GOOD[lab][0], (f"Observation/{good['id']}",))
    alone = Chart()
    alone.lab(lab, 10, value=value, unit=unit)
    found = alone.fact("lab-value", lab)
    assert found.value is None and f"no {facts.LAB_NAMES[lab]} result" in found.detail


def test_an_impossible_egfr_leaves_the_criterion_unknown_or_to_the_previous_value():
    """eGFR -5 read as a number would meet "eGFR < 60" (an exclusion): not used, the line is unknown without an
    earlier result and decided by it with one."""
    alone = Chart()
    alone.lab("egfr", 10, value=-5, unit="mL/min/{1.73_m2}")
    assert judge(EGFR_BELOW_60, alone.fact("lab-value", "egfr")) == UNKNOWN
    earlier = Chart()
    earlier.lab("egfr", 300, value=85, unit="mL/min/{1.73_m2}")
    earlier.lab("egfr", 10, value=-5, unit="mL/min/{1.73_m2}")
    assert judge(EGFR_BELOW_60, earlier.fact("lab-value", "egfr")) == NOT_MET


@pytest.mark.parametrize(("lab", "value", "unit", "expected"), [
    ("egfr", 0, "mL/min/{1.73_m2}", 0.0),           # the bounds themselves are possible values
    ("egfr", 250, "mL/min/{1.73_m2}", 250.0),
    ("egfr", 59.9, "mL/min/{1.73_m2}", 59.9),
    ("platelets", 1500, "10*9/L", 1500.0),          # thrombocytosis
    ("platelets", 4000000, "/uL", 4000.0),
    ("white-cells", 0.2, "10*9/L", 0.2),            # agranulocytosis
    ("white-cells", "480", "10*9/L", 480.0),        # leukaemia, as a string
])
def test_possible_lab_values_are_used_as_they_are(lab, value, unit, expected):
    chart = Chart()
    ref = chart.lab(lab, 10, value=value, unit=unit)
    assert not index_resources(chart.resources).problems
    found = chart.fact("lab-value", lab)
    assert found.value == pytest.approx(expected) and found.evidence == (f"Observation/{ref['id']}",)


@pytest.mark.parametrize(("score", "shown"), [(float("nan"), "NaN"), (float("inf"), "Infinity"), ("NaN", "NaN"),
                                              (-0.5, "-0.5"), (10.5, "10.5")])
def test_edss_nan_infinite_or_out_of_range_is_reported_not_used(score, shown):
    chart = Chart()
    chart.edss(4.0, 100)
    bad = chart.edss(score, 10, "valueDecimal" if isinstance(score, float) else "valueString")
    index = index_resources(chart.resources)
    assert [str(p) for p in index.problems] == [
        f"Observation/{bad['id']}: EDSS {shown} is not a score from 0 to 10 in 0.5 steps"]
    assert chart.fact("edss").value == 4.0


@pytest.mark.parametrize(("count", "shown"), [(float("nan"), "NaN"), (float("-inf"), "-Infinity"), (-1, "-1"),
                                              (2.5, "2.5")])
def test_lesion_counts_nan_negative_or_fractional_are_reported_not_used(count, shown):
    chart = Chart()
    chart.observation(Chart.code("gd-enhancing-lesion-count"), 10, valueQuantity={"value": count})
    index = index_resources(chart.resources)
    assert [p.message for p in index.problems] == [f"gd-enhancing-lesion-count {shown} is not a whole number of "
                                                   "lesions"]
    assert chart.fact("gd-lesion-count").value is None


def test_an_onset_age_that_is_not_a_number_is_reported():
    chart = Chart()
    chart.condition("rrms", onsetAge={"value": float("nan"), "unit": "a"})
    index = index_resources(chart.resources)
    assert [p.message for p in index.problems] == [
        'onsetAge {"value": NaN, "unit": "a"} is not an age in years or months: the onset is taken as unknown']
    assert chart.fact("disease-duration").value is None


@pytest.mark.parametrize(("born", "why"), [
    ((AS_OF + dt.timedelta(days=1)).isoformat(), "birthDate 2025-06-02 is after the screening date 2025-06-01"),
    ("2026", "birthDate 2026 is after the screening date 2025-06-01"),
    ("1850-01-01", "birthDate 1850-01-01 makes the patient 175 years old on 2025-06-01, older than anyone has lived"),
    ("1900-01-01", "birthDate 1900-01-01 makes the patient 125 years old on 2025-06-01, older than anyone has lived"),
    ("1902-05-31", "birthDate 1902-05-31 makes the patient 123 years old on 2025-06-01, older than anyone has lived"),
])
def test_a_birth_date_impossible_at_the_screening_date_leaves_the_age_unknown(born, why):
    found = Chart(born=born).fact("age")
    assert found.value is None and found.detail == f"{why}: the age is unknown"
    assert found.evidence == ("Patient/p1",)
    assert judge(Rule.from_dict({"fact": "age", "range": [18, 50]}), found) == UNKNOWN


@pytest.mark.parametrize(("born", "age", "upper"), [
    ("1903-06-01", 122, None),              # 122 today: as old as anyone has been
    ("1902", 122, 123),                     # 122 if born after 1 June 1902: possible
    (AS_OF.isoformat(), 0, None),           # born today
    ("2025", 0, None),                      # born this year, before the screening date or not yet
    ("2025-06", 0, None),
])
def test_birth_dates_at_the_edges_of_possible_give_an_age(born, age, upper):
    found = Chart(born=born).fact("age")
    assert (found.value, found.upper) == (age, upper), found.detail
