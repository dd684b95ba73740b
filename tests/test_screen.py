"""The eligibility engine: three-valued criteria, verdicts, evidence; patients on each boundary of CMM-EM.

CMM-EM (NCT02035514, seed 000) boundaries, worked out by hand from the registry text:
inclusion 2 "Age 18-50 years", 3 "Disease duration 2 to 10 years", 4 "EDSS 3.0 - 6.5", 5 activity
(progression, >= 1 moderate-severe relapse in 18 months, >= 1 Gd-enhancing lesion, >= 1 new T2 lesion);
exclusions 5 "Corticosteroid treatment <= 30 days", 6 "Relapse <= 60 days", 9 "Pregnancy or lactation".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import pickle
import re

import pytest
from test_facts import AS_OF, Chart, years_before

from fhir_adapter.criteria import Criterion
from fhir_adapter.eligibility import ELIGIBLE, INELIGIBLE, NEEDS_REVIEW, Trial, index_resources, screen
from fhir_adapter.eligibility.trials import load_trials


def _after_a_year(rule: dict) -> dict:
    """Inclusion 5's evidence "after at least a year of attempted therapy" (365 days on an MS DMT)."""
    return {"all-of": [rule, {"fact": "therapy-duration", "subject": "disease-modifying-therapies", "at-least": 365}]}


# CMM-EM criteria as the seed words them, in computable form (the mapping in mappings/trials is checked
# against the same expectations once it exists: see `cmm_em` below).
CMM_EM = Trial("NCT02035514", "CMM-EM", tuple(Criterion.from_dict(c) for c in [
    {"linkId": "inc-1", "kind": "inclusion", "text": "Inflammatory forms of MS", "combine": "any-of", "children": [
        {"linkId": "inc-1.1", "text": "Relapsing-remitting MS (RRMS) patients",
         "rule": {"fact": "ms-subtype", "any-of": ["rrms"]}},
        {"linkId": "inc-1.2", "text": "Secondary progressive MS (SPMS) patients with continued relapses",
         "rule": {"all-of": [{"fact": "ms-subtype", "any-of": ["spms"]},
                             {"fact": "relapse-count", "window": "18 mo", "at-least": 1}]}},
        {"linkId": "inc-1.3", "text": "Primary progressive MS (PPMS) patients with enhancing MRI lesions and "
                                      "positive CSF (oligoclonal banding)",
         "rule": {"all-of": [{"fact": "ms-subtype", "any-of": ["ppms"]},
                             {"fact": "gd-lesion-count", "window": "12 mo", "at-least": 1},
                             {"fact": "csf-oligoclonal-bands", "present": True}]}}]},
    {"linkId": "inc-2", "kind": "inclusion", "text": "Age 18-50 years", "rule": {"fact": "age", "range": [18, 50]}},
    {"linkId": "inc-3", "kind": "inclusion", "text": "Disease duration >= 2 and <= 10 years",
     "rule": {"fact": "disease-duration", "range": [2, 10]}},
    {"linkId": "inc-4", "kind": "inclusion", "text": "EDSS 3.0 - 6.5", "rule": {"fact": "edss", "range": [3.0, 6.5]}},
    {"linkId": "inc-5", "kind": "inclusion", "text": "Progression, continued relapses or worsening MRI after at "
                                                     "least a year of attempted therapy evidenced by:",
     "combine": "any-of", "children": [
         {"linkId": "inc-5.1", "text": "Increase of >= 1 EDSS point (<= 5.0) or 0.5 (>= 5.5)",
          "rule": _after_a_year({"fact": "edss-progression", "window": "12 mo", "present": True})},
         {"linkId": "inc-5.2", "text": ">= 1 moderate-severe relapses in past 18 months",
          "rule": _after_a_year({"fact": "relapse-count", "subject": "moderate", "window": "18 mo", "at-least": 1})},
         {"linkId": "inc-5.3", "text": ">= 1 Gadolinium enhancing lesions",
          "rule": _after_a_year({"fact": "gd-lesion-count", "window": "12 mo", "at-least": 1})},
         {"linkId": "inc-5.4", "text": ">= 1 new T2 lesion",
          "rule": _after_a_year({"fact": "new-t2-lesion-count", "window": "12 mo", "at-least": 1})}]},
    {"linkId": "inc-6", "kind": "inclusion", "text": "Has given informed consent to participate in the study."},
    {"linkId": "exc-3", "kind": "exclusion", "text": "<= 3 months since treatment with any immunosuppressive therapy",
     "rule": {"fact": "therapy", "subject": "immunosuppressants", "window": "3 mo", "present": True}},
    {"linkId": "exc-4", "kind": "exclusion", "text": "<=1 month since last treatment with interferon-B or glatiramer",
     "rule": {"fact": "therapy", "subject": "interferon-or-glatiramer", "window": "1 mo", "present": True}},
    {"linkId": "exc-5", "kind": "exclusion", "text": "Corticosteroid treatment <= 30 days",
     "rule": {"fact": "therapy", "subject": "corticosteroids", "window": "30 d", "present": True}},
    {"linkId": "exc-6", "kind": "exclusion", "text": "Relapse <= 60 days",
     "rule": {"fact": "relapse-count", "window": "60 d", "at-least": 1}},
    {"linkId": "exc-7", "kind": "exclusion", "text": "History of cancer or infection for HIV, Hepatitis B or C",
     "rule": {"any-of": [{"fact": "condition", "subject": "cancers", "present": True},
                         {"fact": "lab-positive", "subject": "hiv", "present": True},
                         {"fact": "lab-positive", "subject": "hbsag", "present": True},
                         {"fact": "lab-positive", "subject": "hcv-rna", "present": True}]}},
    {"linkId": "exc-8", "kind": "exclusion", "text": "Any metallic or electronic device that precludes MRI"},
    {"linkId": "exc-9", "kind": "exclusion", "text": "Pregnancy or lactation",
     "rule": {"any-of": [{"fact": "pregnant", "present": True}, {"fact": "lactating", "present": True}]}},
]), "ResearchStudy/cmm-em")


def cmm_em_sources() -> list[Trial]:
    """The hand-written criteria above and, once it exists, the curated mapping of the same trial."""
    sources = [CMM_EM]
    with contextlib.suppress(KeyError):
        sources += load_trials(["NCT02035514"])
    return sources


@pytest.fixture(params=cmm_em_sources(), ids=lambda t: "tests" if t is CMM_EM else "mappings")
def cmm_em(request) -> Trial:
    return request.param


def candidate(pid: str = "p1", age: int = 35, onset_years: int = 5, edss: float = 4.0, gender: str = "male",
              mri: bool = True, treated: int = 700) -> Chart:
    """A CMM-EM candidate who meets every computable criterion: male, 35, RRMS for 5 years, EDSS 4.0
    (20 days ago), one Gd-enhancing lesion 100 days ago, interferon stopped 200 days ago after `treated` days,
    negative HIV, HBsAg and HCV tests, no relapse."""
    chart = Chart(pid, age=age, gender=gender)
    chart.condition("rrms", onset=years_before(AS_OF, onset_years).isoformat())
    chart.edss(edss, 20)
    if mri:
        chart.mri(100, gd=1, t2=0)
    chart.med("interferon-beta-1a", start=200 + treated, end=200)
    for lab in ("hiv", "hbsag", "hcv"):
        chart.lab(lab, 100, positive=False)
    return chart


def verdict_of(chart: Chart, trial: Trial):
    (verdict,) = screen(index_resources(chart.resources).patients.values(), [trial], AS_OF)
    return verdict


def deciding_texts(verdict) -> list[str]:
    return [r.criterion.text for r in verdict.criteria if r.excludes]


# ------------------------------------------------------------------------------------------ boundaries

@pytest.mark.parametrize(("make", "expected", "why"), [
    # the candidate as built: every computable criterion decided in favour
    (lambda: candidate(), ELIGIBLE, None),
    # inclusion 2, "Age 18-50 years": 18 and 50 are inside, 17 and 51 outside
    (lambda: _born(18, 0), ELIGIBLE, None),
    (lambda: _born(18, 1), INELIGIBLE, r"(?i)age"),                   # 18 tomorrow: 17 today
    (lambda: _born(51, 1), ELIGIBLE, None),                           # 51 tomorrow: still 50
    (lambda: _born(51, 0), INELIGIBLE, r"(?i)age"),
    # inclusion 4, "EDSS 3.0 - 6.5"
    (lambda: candidate(edss=3.0), ELIGIBLE, None),
    (lambda: candidate(edss=6.5), ELIGIBLE, None),
    (lambda: candidate(edss=2.5), INELIGIBLE, r"EDSS 3\.0"),
    (lambda: candidate(edss=7.0), INELIGIBLE, r"EDSS 3\.0"),
    # inclusion 3, disease duration 2 to 10 years (whole years from onset, like age)
    (lambda: candidate(onset_years=2), ELIGIBLE, None),
    (lambda: candidate(onset_years=10), ELIGIBLE, None),
    (lambda: _onset_days_after(2, 1), INELIGIBLE, r"(?i)duration"),   # one day short of 2 years
    (lambda: candidate(onset_years=11), INELIGIBLE, r"(?i)duration"),
    # exclusion 6, "Relapse <= 60 days": a relapse 59 days ago excludes, 61 days ago does not (and it is
    # a moderate relapse within 18 months, which the activity criterion accepts anyway)
    (lambda: _with(candidate(), "relapse", 59, "moderate"), INELIGIBLE, r"Relapse <= 60"),
    (lambda: _with(candidate(), "relapse", 61, "moderate"), ELIGIBLE, None),
    # exclusion 5, "Corticosteroid treatment <= 30 days": the last dose 29 days ago excludes, 31 does not
    (lambda: _steroids(29), INELIGIBLE, r"Corticosteroid"),
    (lambda: _steroids(31), ELIGIBLE, None),
    # exclusion 3, immunosuppressants within 3 months: natalizumab (old ATC code) stopped 40 days ago
    (lambda: _natalizumab(40), INELIGIBLE, r"immunosuppressive"),
    (lambda: _natalizumab(120), ELIGIBLE, None),
    # inclusion 5, "... after at least a year of attempted therapy": 365 days of interferon are a year, 364 not
    (lambda: candidate(treated=365), ELIGIBLE, None),
    (lambda: candidate(treated=364), INELIGIBLE, r"Progression, continued relapses"),
    # exclusion 7: a positive HIV test excludes whatever else is unknown
    (lambda: _with(candidate(mri=False), "lab", "hiv", 10), INELIGIBLE, r"HIV"),
    # "History of cancer": no exception, a basal cell carcinoma of the skin is one
    (lambda: _diagnosis(candidate(), "http://hl7.org/fhir/sid/icd-10-cm", "C44.91"), INELIGIBLE, r"History of cancer"),
    # "infection for ... Hepatitis B or C": the RNA test shows it; a positive antibody test alone asks for one
    (lambda: _with(candidate(), "lab", "hcv-rna", 10), INELIGIBLE, r"Hepatitis B or C"),
    (lambda: _with(candidate(), "lab", "hcv", 10), NEEDS_REVIEW, None),
    # inclusion 1.2 / exclusion 1: SPMS only "with continued relapses" (a moderate one 100 days ago counts)
    (lambda: _course("spms", relapse=100), ELIGIBLE, None),
    (lambda: _course("spms"), INELIGIBLE, r"Inflammatory forms|SPMS without"),
    # inclusion 1.3 / exclusion 2: PPMS "with enhancing MRI lesions and positive CSF"
    (lambda: _course("ppms", csf=True), ELIGIBLE, None),
    (lambda: _course("ppms", csf=False), INELIGIBLE, r"Inflammatory forms|PPMS without"),
    (lambda: _course("ppms", csf=True, gd=0), INELIGIBLE, r"Inflammatory forms|PPMS without"),
    (lambda: _course("ppms"), NEEDS_REVIEW, None),                   # no CSF result: unknown
])
def test_cmm_em_boundaries(cmm_em, make, expected, why):
    verdict = verdict_of(make(), cmm_em)
    assert verdict.verdict == expected, verdict.to_dict()
    if why:
        assert any(re.search(why, text) for text in deciding_texts(verdict)), deciding_texts(verdict)
    else:
        assert not verdict.deciding


def _course(course: str, relapse: int | None = None, csf: bool | None = None, gd: int = 1) -> Chart:
    """The candidate with another MS course, a Gd-enhancing count, and optionally a relapse and a CSF result."""
    chart = candidate(mri=False)
    chart.resources[1]["code"] = Chart.code(course)
    chart.mri(100, gd=gd, t2=0)
    if relapse is not None:
        chart.relapse(relapse, "moderate")
    if csf is not None:
        chart.lab("csf-oligoclonal-bands", 400, positive=csf)
    return chart


def _born(years: int, days_later: int) -> Chart:
    chart = candidate()
    chart.resources[0]["birthDate"] = (years_before(AS_OF, years) + dt.timedelta(days=days_later)).isoformat()
    return chart


def _onset_days_after(years: int, days: int) -> Chart:
    chart = candidate()
    chart.resources[1]["onsetDateTime"] = (years_before(AS_OF, years) + dt.timedelta(days=days)).isoformat()
    return chart


def _with(chart: Chart, what: str, *args) -> Chart:
    if what == "relapse":
        chart.relapse(args[0], args[1])
    elif what == "lab":
        chart.lab(args[0], args[1], positive=True)
    return chart


def _diagnosis(chart: Chart, system: str, code: str) -> Chart:
    chart.condition(system=system, code=code, onset="2019-01-01")
    return chart


def _steroids(ended: int) -> Chart:
    chart = candidate()
    chart.med("methylprednisolone", start=ended + 5, end=ended)
    return chart


def _natalizumab(ended: int) -> Chart:
    chart = candidate()
    chart.med(system="http://www.whocc.no/atc", code="L04AA23", start=ended + 300, end=ended)
    return chart


def test_missing_mri_leaves_activity_unknown_and_says_what_is_missing(cmm_em):
    verdict = verdict_of(candidate(mri=False), cmm_em)
    assert verdict.verdict == NEEDS_REVIEW
    missing = " ".join(verdict.missing)
    assert "no MRI with a Gd-enhancing" in missing and "no MRI with a new or enlarging T2" in missing
    assert "only one EDSS" in missing            # progression needs two EDSS in the 12 months


def test_a_woman_needs_a_recent_pregnancy_test_and_breastfeeding_status(cmm_em):
    woman = candidate(gender="female")
    verdict = verdict_of(woman, cmm_em)
    assert verdict.verdict == NEEDS_REVIEW and any("pregnan" in m for m in verdict.missing)
    woman.lab("pregnancy-test", 10, positive=False)
    woman.lactation(10, False)
    assert verdict_of(woman, cmm_em).verdict == ELIGIBLE
    woman.pregnancy(5, True)
    assert verdict_of(woman, cmm_em).verdict == INELIGIBLE


# ------------------------------------------------------------------------------------------ semantics

def test_manual_criteria_are_listed_but_do_not_decide():
    verdict = verdict_of(candidate(), CMM_EM)
    manual = [r for r in verdict.criteria if r.manual]
    assert [r.criterion.link_id for r in manual] == ["inc-6", "exc-8"]
    assert all(r.result == "unknown" and r.reason.startswith("manual review") for r in manual)
    assert verdict.verdict == ELIGIBLE and verdict.missing == []


def test_lines_on_records_an_extract_may_lack_are_reviewed_when_the_patient_has_none():
    """A procedure or allergy line: with no Procedure (AllergyIntolerance) at all it is unknown, left to manual
    review without holding the verdict; a record found decides it, and so do records without the one sought.
    A transplant without a date under a window is unknown from a record the patient has: it holds the verdict."""
    trial = Trial("T", "T", tuple(Criterion.from_dict(c) for c in [
        {"linkId": "inc-1", "kind": "inclusion", "text": "adult", "rule": {"fact": "age", "at-least": 18}},
        {"linkId": "exc-1", "kind": "exclusion", "text": "transplant in a year",
         "rule": {"fact": "procedure", "subject": "stem-cell-transplants", "window": "12 mo", "present": True}},
        {"linkId": "exc-2", "kind": "exclusion", "text": "allergy",
         "rule": {"any-of": [{"fact": "allergy", "subject": "codeine", "present": True},
                             {"fact": "allergy", "subject": "lidocaine", "present": True}]}},
        {"linkId": "exc-3", "kind": "exclusion", "text": "by hand"}]))
    plain = verdict_of(Chart(), trial)
    assert plain.verdict == ELIGIBLE and plain.missing == []
    by_id = {r.criterion.link_id: r for r in plain.criteria}
    assert by_id["exc-1"].result == by_id["exc-2"].result == "unknown"
    assert "no Procedure recorded" in by_id["exc-1"].reason and "manual review" in by_id["exc-1"].reason
    assert plain.plan.manual_ids == "exc-1 (unless recorded); exc-2 (unless recorded); exc-3"
    recorded = Chart()
    recorded.procedure(system="http://snomed.info/sct", code="277762005", days=100)     # not a transplant
    recorded.allergy(text="no known allergies")
    verdict = verdict_of(recorded, trial)
    assert [r.result for r in verdict.criteria] == ["met", "not-met", "not-met", "unknown"]
    assert verdict.verdict == ELIGIBLE
    undated = Chart()
    undated.procedure("haematopoietic-stem-cell-transplant", None)
    verdict = verdict_of(undated, trial)
    assert verdict.criteria[1].result == "unknown" and verdict.verdict == NEEDS_REVIEW
    assert "without a date" in verdict.criteria[1].reason and verdict.criteria[1].evidence
    assert [m.split(":")[0] for m in verdict.missing] == ["exc-1"]      # exc-2: no allergy records, still waived
    assert pickle.loads(pickle.dumps(verdict)).missing == verdict.missing
    history = Chart()                       # a transplant known only from a problem-list entry without a date
    history.condition("haematopoietic-stem-cell-transplant")
    verdict = verdict_of(history, trial)
    assert verdict.criteria[1].result == "unknown" and verdict.verdict == NEEDS_REVIEW
    transplanted = Chart()
    transplanted.procedure("haematopoietic-stem-cell-transplant", 365)                 # 2024-06-01: in the window
    verdict = verdict_of(transplanted, trial)
    assert verdict.verdict == INELIGIBLE and verdict.deciding == ["exc-1"]
    assert verdict.criteria[1].evidence == (f"Procedure/{transplanted.resources[-1]['id']}",)


def test_a_line_mixing_records_the_patient_has_and_lacks_holds_only_for_what_the_records_leave_open():
    """A line is waived only when every innermost unknown under it is a fact the patient has no records of."""
    trial = Trial("T", "T", (Criterion.from_dict(
        {"linkId": "exc-1", "kind": "exclusion", "text": "transplant in a year while allergic to codeine",
         "rule": {"all-of": [{"fact": "procedure", "subject": "stem-cell-transplants", "window": "12 mo",
                              "present": True},
                             {"fact": "allergy", "subject": "codeine", "present": True}]}}),))

    def outcome(days: int | None = None) -> tuple[str, list[str]]:
        chart = Chart()
        if days != 0:
            chart.procedure("haematopoietic-stem-cell-transplant", days)
        verdict = verdict_of(chart, trial)
        assert verdict.criteria[0].result == "unknown"
        return verdict.verdict, [m.split(":")[0] for m in verdict.missing]

    assert outcome(0) == (ELIGIBLE, [])                 # no procedures, no allergies: both left to the site
    assert outcome(100) == (ELIGIBLE, [])               # transplant in the window: only the allergy is open
    assert outcome(None) == (NEEDS_REVIEW, ["exc-1"])   # undated transplant: open from a record the patient has
    chart = Chart()
    chart.procedure("haematopoietic-stem-cell-transplant", 700)                       # before the window
    verdict = verdict_of(chart, trial)
    assert verdict.criteria[0].result == "not-met" and verdict.verdict == ELIGIBLE


def test_verdict_cites_the_resources_it_used():
    chart = candidate()
    verdict = verdict_of(chart, CMM_EM)
    by_id = {x.criterion.link_id: x for r in verdict.criteria for x in r.walk()}
    edss_obs = next(r for r in chart.resources if r.get("code") == Chart.code("edss"))
    assert by_id["inc-4"].evidence == (f"Observation/{edss_obs['id']}",)
    assert by_id["inc-2"].evidence == ("Patient/p1",)
    assert by_id["inc-1"].evidence == by_id["inc-1.1"].evidence        # the line cites its deciding sub-item
    assert all(e.split("/")[0] in {"Patient", "Condition", "Observation", "MedicationStatement"}
               for e in verdict.evidence)
    assert by_id["inc-4"].reason == "latest EDSS 4 on 2025-05-12; wanted EDSS 3 to 6.5"


def test_json_is_the_shape_of_the_issue_and_fragments_equal_the_plain_encoding():
    verdicts = list(screen(index_resources(candidate(mri=False).resources + candidate("p2", age=60).resources)
                           .patients.values(), [CMM_EM], AS_OF))
    for verdict in verdicts:
        data = verdict.to_dict()
        assert list(data) == ["patient", "trial", "verdict", "criteria"]
        assert all(list(c) == ["linkId", "kind", "text", "result", "reason", "evidence"] for c in data["criteria"])
        assert [c["linkId"] for c in data["criteria"]][:4] == ["inc-1", "inc-1.1", "inc-1.2", "inc-1.3"]
        assert json.loads(verdict.to_json()) == data
    # a verdict sent between processes keeps its criteria without the patient's data
    copy = pickle.loads(pickle.dumps(verdicts[0]))
    assert copy.to_dict() == verdicts[0].to_dict() and copy.missing == verdicts[0].missing


def test_facts_are_shared_between_trials_and_results_do_not_leak_between_patients():
    other = Trial("NCT-OTHER", "other", (Criterion.from_dict(
        {"linkId": "i", "kind": "inclusion", "text": "EDSS 4 to 7", "rule": {"fact": "edss", "range": [4, 7]}}),))
    index = index_resources(candidate("a", edss=3.0).resources + candidate("b", edss=6.5).resources)
    results = {(v.patient, v.trial): v.verdict for v in screen(index.patients.values(), [CMM_EM, other], AS_OF)}
    assert results == {("Patient/a", "NCT02035514"): ELIGIBLE, ("Patient/a", "NCT-OTHER"): INELIGIBLE,
                       ("Patient/b", "NCT02035514"): ELIGIBLE, ("Patient/b", "NCT-OTHER"): ELIGIBLE}


@pytest.mark.parametrize("operator", ["all-of", "any-of"])
def test_the_unrolled_two_part_combination_agrees_with_the_general_case(operator):
    """PatientScreening combines two parts in a branch of its own (most combinations, kept fast); the same two
    parts given as three, (a, b, a), go through the general case and must give the same result, reason, evidence
    and JSON for every pair of results, equal or different reasons, shared or separate evidence."""
    from types import SimpleNamespace

    from fhir_adapter.eligibility import engine, facts
    values = {"met": True, "not-met": False, "unknown": None}
    present = SimpleNamespace(present=True)
    joiner = " and " if operator == "all-of" else " or "
    seen = set()
    for ra, rb in [(a, b) for a in values for b in values]:
        for detail_b in ("same", "other"):
            for evidence_b in (("Observation/1",), ("Observation/1", "Observation/2"), ()):
                found = [facts.Fact(values[ra], ("Observation/1",), "same"),
                         facts.Fact(values[rb], evidence_b, detail_b)]
                plan = SimpleNamespace(
                    calls=tuple(((lambda p, s, w, c, f=f: f), None, None) for f in found),
                    rules=(None,) * 4,
                    compared=tuple((slot, slot, present, engine._PRESENT, None, "", True) for slot in (0, 1)),
                    combined=((2, (0, 1), engine._DECIDES[operator], joiner, True),
                              (3, (0, 1, 0), engine._DECIDES[operator], joiner, True)),
                    waivable=())
                s = engine.PatientScreening(Chart().data(), facts.Clock(AS_OF), plan)
                assert (s.results[2], s.reasons[2], s.evidence[2], s.rule_json[2]) == (
                    s.results[3], s.reasons[3], s.evidence[3], s.rule_json[3]), (ra, rb, detail_b, evidence_b)
                assert s.results[2] == engine.combine(operator, [ra, rb])
                seen.add(s.results[2])
    assert seen == {"met", "not-met", "unknown"}


def test_screenable_leaves_out_the_dead_and_records_before_birth_for_library_use():
    """What `fhir-adapter screen` does before the engine, for a caller of `screen` on an index of their own."""
    from fhir_adapter.eligibility import screenable
    dead, early, fine = Chart("dead"), Chart("early", born="1990-06-01"), Chart("fine")
    dead.resources[0]["deceasedDateTime"] = "2025-02-01"
    relapse = early.relapse(days=(AS_OF - dt.date(1985, 6, 10)).days)
    patients = index_resources([*dead.resources, *early.resources, *fine.resources]).patients
    alive, problems = screenable([patients["dead"], patients["early"], patients["fine"]], AS_OF)
    assert [p.id for p in alive] == ["early", "fine"]
    assert list(map(str, problems)) == [
        "Patient/dead: deceased on 2025-02-01: not screened",
        f"Observation/{relapse['id']}: dated 1985-06-10, before the birth date 1990-06-01 of Patient/early: not used"]
    assert patients["early"].relapses == []
    assert [v.patient for v in screen(alive, load_trials(["NCT02035514"]), AS_OF)] == ["Patient/early", "Patient/fine"]
