"""The curated criteria of the four trials against the registry text: every line present, verbatim, and computable
wherever it is measurable.

The lines are extracted here from the registry text itself: the bundled ClinicalTrials.gov records
(`examples/ctgov/`, the seeds' facts in the registry's schema) and, where this checkout sits beside them, the seed
pages in ../shared/seeds/ (a local check). What each measurable line must compute is written below by hand from
the seed wording (fact, subject, window and bounds, as `fhir_adapter.protocol.evidence.expression` spells them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fhir_adapter import terminology
from fhir_adapter.criteria import Combination, Criterion, Rule
from fhir_adapter.eligibility.data import SEVERITY_RANK
from fhir_adapter.paths import EXAMPLES
from fhir_adapter.protocol import load_protocols
from fhir_adapter.protocol.evidence import expression

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
SEED_FILES = {"NCT02035514": "000_", "NCT02403947": "001_", "NCT01854957": "002_", "NCT04749667": "003_"}
TRIALS = tuple(SEED_FILES)
PROTOCOLS = {p.nct_id: p for p in load_protocols() if p.nct_id in SEED_FILES}

HEADING = re.compile(r"^(inclusion|exclusion) criteria:?$", re.IGNORECASE)
ENUMERATOR = re.compile(r"^(?:[-*]\s+)?(?:(?:\d+|[a-z]|[ivx]+)\.\s+)?")
INLINE_ITEM = re.compile(r"\s+(?=(?:i|ii|iii|iv|v)\.\s)")     # "... as follows: i. >=1 relapse" on one line
END_OF_CRITERIA = re.compile(r"^(\d+ Years|Trial design|Sites / Locations)$")


def normal(text: str) -> str:
    """Markdown escapes removed (`\\<60` -> `<60`), whitespace collapsed."""
    return " ".join(re.sub(r"\\(.)", r"\1", text).split())


def registry_lines(text: str) -> list[tuple[str | None, str]]:
    """(kind, line) of each criterion line of a registry text, enumerators stripped; kind None when the text
    has no exclusion heading (the Toulouse page lists its exclusions under the inclusion heading)."""
    lines: list[tuple[str | None, str]] = []
    kind = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        heading = HEADING.match(line)
        if heading:
            kind = heading.group(1).lower()
            continue
        if kind is None:
            continue
        if END_OF_CRITERIA.match(line):
            break
        for piece in INLINE_ITEM.split(line):
            piece = normal(ENUMERATOR.sub("", piece.strip(), count=1))
            if piece:
                lines.append((kind, piece))
    if not any(k == "exclusion" for k, _ in lines):
        lines = [(None, line) for _, line in lines]
    return lines


def _ctgov(nct: str) -> dict:
    return json.loads((EXAMPLES / "ctgov" / f"{nct}.json").read_text(encoding="utf-8"))["protocolSection"]


def _seed(nct: str) -> str:
    if not SEEDS.is_dir():
        pytest.skip(f"no seed pages at {SEEDS} (a local check)")
    (path,) = SEEDS.glob(f"{SEED_FILES[nct]}*.txt")
    return path.read_text(encoding="utf-8")


SOURCES = {
    "ctgov": lambda nct: _ctgov(nct)["eligibilityModule"]["eligibilityCriteria"],
    "seed": _seed,
}


def _texts(protocol) -> dict[str, Criterion]:
    return {normal(c.text): c for top in protocol.criteria for c in top.walk()}


# ------------------------------------------------------------------------------------------ every line, verbatim

def test_the_four_trials_have_criteria():
    assert sorted(PROTOCOLS) == sorted(TRIALS)
    for protocol in PROTOCOLS.values():
        kinds = {c.kind for c in protocol.criteria}
        assert kinds == {"inclusion", "exclusion"}, protocol.nct_id


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("nct", TRIALS)
def test_every_registry_line_is_a_criterion_with_its_text(nct, source):
    lines = registry_lines(SOURCES[source](nct))
    assert len(lines) >= 10, lines                            # the extraction found the criteria
    criteria = _texts(PROTOCOLS[nct])
    missing = [line for _, line in lines if line not in criteria]
    assert not missing, missing
    wrong_kind = [line for kind, line in lines if kind and criteria[line].kind != kind]
    assert not wrong_kind, wrong_kind


@pytest.mark.parametrize("nct", TRIALS)
def test_every_criterion_is_a_registry_line_or_the_registry_ages(nct):
    """Nothing invented: each criterion's text is a line of the registry text, except `inc-age` (the registry's
    minimum and maximum age, for trials with no age line), which says those ages."""
    module = _ctgov(nct)["eligibilityModule"]
    lines = {line for _, line in registry_lines(module["eligibilityCriteria"])}
    for text, criterion in _texts(PROTOCOLS[nct]).items():
        if criterion.link_id == "inc-age":
            assert text == f"Ages {module['minimumAge']} to {module['maximumAge']}"
            assert not any(re.match(r"(?i)age\b", line) for line in lines)   # no age line of its own
        else:
            assert text in lines, text


def test_the_extraction_splits_what_the_registry_runs_together():
    text = ("Inclusion Criteria:\n- 1. Diagnosis of MS\na. RRMS as evidenced by: i. \u22651 relapse\n"
            "ii. \u22652 relapses\nExclusion Criteria:\n* Platelet count \\<100 x 10\\*9/L\n18 Years\n")
    assert registry_lines(text) == [("inclusion", "Diagnosis of MS"), ("inclusion", "RRMS as evidenced by:"),
                                    ("inclusion", "\u22651 relapse"), ("inclusion", "\u22652 relapses"),
                                    ("exclusion", "Platelet count <100 x 10*9/L")]


@pytest.mark.parametrize("nct", TRIALS)
def test_link_ids_are_unique_fhir_ids(nct):
    link_ids = [c.link_id for top in PROTOCOLS[nct].criteria for c in top.walk()]
    assert len(link_ids) == len(set(link_ids))
    assert all(re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", i) for i in link_ids), link_ids


# ------------------------------------------------------------------------------------------ computable

# linkId -> what its rule must test (leaves, as `expression` writes them), from the seed wording.
RRMS, SPMS, PPMS = "ms-subtype in (rrms)", "ms-subtype in (spms)", "ms-subtype in (ppms)"
GEL_12, PROGRESSION_12, CSF = "gd-lesion-count in 12 mo >= 1", "edss-progression in 12 mo = true", \
    "csf-oligoclonal-bands = true"
MESEMS_WASHOUTS = {"immunosuppressants": "therapy[immunosuppressants] in 3 mo = true",
                   "corticosteroids": "therapy[corticosteroids] in 30 d = true",
                   "relapse": "relapse-count in 60 d >= 1"}
EGFR_RENAL = ["lab-value[egfr] < 60", "condition[renal-failure] = true"]

COMPUTES: dict[str, dict[str, list[str]]] = {
    "NCT02035514": {                                                     # seed 000
        "inc-1.1": [RRMS],
        "inc-1.2": [SPMS, "relapse-count in 18 mo >= 1"],
        "inc-1.3": [PPMS, GEL_12, CSF],
        "inc-2": ["age in [18, 50]"],
        "inc-3": ["disease-duration in [2, 10]"],
        "inc-4": ["edss in [3.0, 6.5]"],
        "inc-5.1": [PROGRESSION_12],
        "inc-5.2": ["relapse-count[moderate] in 18 mo >= 1"],
        "inc-5.3": [GEL_12],
        "inc-5.4": ["new-t2-lesion-count in 12 mo >= 1"],
        "inc-5.5": [PPMS, GEL_12],
        "exc-1": [SPMS, "relapse-count in 18 mo <= 0"],
        "exc-2": [PPMS, "csf-oligoclonal-bands = false", "gd-lesion-count in 12 mo <= 0"],
        "exc-3": [MESEMS_WASHOUTS["immunosuppressants"]],
        "exc-4": ["therapy[interferon-or-glatiramer] in 1 mo = true"],
        "exc-5": [MESEMS_WASHOUTS["corticosteroids"]],
        "exc-6": [MESEMS_WASHOUTS["relapse"]],
        "exc-7": ["condition[cancers] = true", "lab-positive[hiv] = true", "lab-positive[hbsag] = true",
                  "lab-positive[hcv-rna] = true"],
        "exc-9": ["pregnant = true", "lactating = true"],
    },
    "NCT02403947": {                                                     # seed 001
        "inc-1": ["disease-duration in [2, 10]"],
        "inc-2.1.1": [RRMS, "relapse-count in 12 mo >= 1"],
        "inc-2.1.2": [RRMS, "relapse-count in 24 mo >= 2"],
        "inc-2.1.3": [RRMS, GEL_12],
        "inc-2.2.1": [SPMS, "relapse-count in 12 mo >= 1"],
        "inc-2.2.2": [SPMS, GEL_12],
        "inc-2.3.1": [PPMS, PROGRESSION_12],
        "inc-2.3.2": [PPMS, GEL_12],
        "inc-2.3.3": [PPMS, CSF],
        "inc-3": ["edss in [3.0, 6.5]"],
        "inc-age": ["age in [18, 50]"],
        "exc-1": ["therapy[immunosuppressants] in < 3 mo = true"],        # "inferior to 3 months": strict
        "exc-2": ["therapy[interferon-or-glatiramer] in 1 mo = true"],
        "exc-3": [MESEMS_WASHOUTS["corticosteroids"]],
        "exc-4": [MESEMS_WASHOUTS["relapse"]],
        "exc-5": [f"lab-positive[{lab}] = true" for lab in ("hiv", "htlv", "syphilis", "hbsag", "hcv-rna")],
        "exc-6": ["condition[malignancy] = true"],
        "exc-8": ["condition[myelodysplasia] = true"],
        "exc-9": ["pregnant = true"],
        "exc-10": EGFR_RENAL,
    },
    "NCT01854957": {                                                     # seed 002
        "inc-1.a.i": [RRMS, "relapse-count in 12 mo >= 1"],
        "inc-1.a.ii": [RRMS, "relapse-count in 24 mo >= 2"],
        "inc-1.a.iii": [RRMS, GEL_12],
        "inc-1.b.i": [SPMS, PROGRESSION_12],
        "inc-1.b.ii": [SPMS, "relapse-count in 12 mo >= 1", GEL_12],
        "inc-1.c.i": [PPMS, PROGRESSION_12],
        "inc-1.c.ii": [PPMS, GEL_12],
        "inc-1.c.iii": [PPMS, CSF],
        "inc-2": ["age in [18, 50]"],
        "inc-3": ["disease-duration in [2, 10]"],
        "inc-4": ["edss in [3.0, 6.5]"],
        "exc-1": [RRMS, "relapse-count in 12 mo <= 0", "relapse-count in 24 mo <= 1", "gd-lesion-count in 12 mo <= 0"],
        "exc-2": [SPMS, "edss-progression in 12 mo = false"],
        "exc-3": [PPMS, "edss-progression in 12 mo = false", "csf-oligoclonal-bands = false"],
        "exc-4": [f"lab-positive[{lab}] = true" for lab in ("hiv", "hbsag", "hcv-rna")],
        "exc-5": [MESEMS_WASHOUTS["immunosuppressants"]],
        "exc-6": ["therapy[interferon-or-glatiramer] in 30 d = true"],
        "exc-7": [MESEMS_WASHOUTS["corticosteroids"]],
        "exc-8": [MESEMS_WASHOUTS["relapse"]],
        "exc-9": ["condition[malignancy] = true"],
        "exc-11": ["condition[myelodysplasia] = true"],
        "exc-12": ["pregnant = true"],
        "exc-13": EGFR_RENAL,
    },
    "NCT04749667": {                                                     # seed 003
        "inc-age": ["age in [18, 55]"],
        "inc-2": ["ms-subtype in (spms, ppms)"],
        "inc-3": ["edss in [4, 7]"],
        "inc-4": ["disease-duration in [2, 15]"],
        "exc-2": [f"lab-positive[{lab}] = true" for lab in ("hiv", "syphilis", "hbsag", "hcv-rna")],   # "PCR"
        "exc-3": ["therapy[immunomodulators-or-immunosuppressants] in 0 d = true"],
        "exc-4": ["therapy[immunomodulators-or-immunosuppressants] in 6 mo = true"],
        "exc-5": [f"therapy[{drug}] in 12 mo = true" for drug in ("cladribine", "ocrelizumab", "rituximab",
                                                                   "alemtuzumab")],
        "exc-6": ["procedure[stem-cell-transplants] in 12 mo = true"],
        "exc-7": ["therapy[glucocorticoids-or-acth] in 3 mo = true"],
        "exc-8": ["relapse-count in 2 a >= 1"],
        "exc-9": ["therapy[fampridine] in 0 d = true"],
        "exc-10": ["condition[malignancy] = true"],
        "exc-12": ["condition[myelodysplasia] = true"],
        "exc-14": EGFR_RENAL,
        "exc-15": ["condition[bleeding-diathesis] = true", "therapy[antithrombotics] in 0 d = true"],
        "exc-16": ["lab-value[platelets] < 100"],
        "exc-19": ["condition[major-depression] = true"],
        "exc-21": ["pregnant = true", "lactating = true"],
        "exc-22": ["procedure[stem-cell-transplants] = true"],
        "exc-23": ["allergy[paracetamol-codeine-or-lidocaine] = true"],
        "exc-24": ["condition[polyneuropathy] = true"],
        "exc-25": ["condition[alcohol-dependence] = true", "condition[drug-dependence] = true"],
    },
}

# The lines no EHR data can decide (consent, life expectancy, MRI safety, procedures and allergies the
# screening does not read): exactly these stay for manual review.
MANUAL = {
    "NCT02035514": {"inc-6", "exc-8", "exc-10"},
    "NCT02403947": {"inc-4", "exc-7", "exc-11"},
    "NCT01854957": {"exc-10", "exc-14"},
    "NCT04749667": {"inc-5", "exc-11", "exc-13", "exc-17", "exc-18", "exc-20", "exc-26"},
}

# Drugs a line names, which its therapy rule must cover.
NAMED_DRUGS = {
    ("NCT02403947", "exc-1"): {"natalizumab", "fingolimod"},
    ("NCT02403947", "exc-2"): {"interferon-beta-1a", "interferon-beta-1b", "glatiramer"},
    ("NCT01854957", "exc-5"): {"natalizumab", "fingolimod"},
    ("NCT01854957", "exc-6"): {"interferon-beta-1a", "interferon-beta-1b", "glatiramer"},
    ("NCT02035514", "exc-4"): {"interferon-beta-1a", "interferon-beta-1b", "glatiramer"},
    ("NCT04749667", "exc-4"): {"natalizumab", "fingolimod", "dimethyl-fumarate", "glatiramer", "interferon-beta-1a",
                               "interferon-beta-1b", "teriflunomide", "siponimod"},
    ("NCT04749667", "exc-5"): {"cladribine", "ocrelizumab", "rituximab", "alemtuzumab"},
    ("NCT04749667", "exc-7"): {"methylprednisolone", "prednisone", "systemic-corticosteroid", "acth"},
}


def _leaves(definition: Rule | Combination) -> list[Rule]:
    if isinstance(definition, Combination):
        return [leaf for part in definition.parts for leaf in _leaves(part)]
    return [definition]


def _by_link(nct: str) -> dict[str, Criterion]:
    return {c.link_id: c for top in PROTOCOLS[nct].criteria for c in top.walk()}


@pytest.mark.parametrize("nct", TRIALS)
def test_each_measurable_line_computes_what_the_seed_says(nct):
    criteria = _by_link(nct)
    for link_id, expected in COMPUTES[nct].items():
        rule = criteria[link_id].rule
        assert rule is not None, f"{nct} {link_id} has no rule"
        found = {expression(leaf) for leaf in _leaves(rule)}
        assert set(expected) <= found, (link_id, sorted(set(expected) - found), sorted(found))


@pytest.mark.parametrize("nct", TRIALS)
def test_only_the_lines_no_data_can_decide_stay_manual(nct):
    criteria = _by_link(nct)
    manual = {i for i, c in criteria.items() if c.rule is None and not c.children}
    assert manual == MANUAL[nct]
    for link_id in manual:
        assert criteria[link_id].note and "manual review" in criteria[link_id].note
    assert all(c.computable for c in criteria.values() if c.children)


@pytest.mark.parametrize("nct", TRIALS)
def test_every_subject_is_known(nct):
    data = terminology.load()
    for criterion in _by_link(nct).values():
        for leaf in _leaves(criterion.rule) if criterion.rule else ():
            if leaf.fact == "relapse-count":
                assert leaf.subject is None or leaf.subject in SEVERITY_RANK
            elif leaf.subject is not None:
                assert leaf.subject in data.valuesets or leaf.subject in data.concepts, (criterion.link_id, leaf)
            for code in leaf.codes:
                assert code in data.concepts, (criterion.link_id, code)


@pytest.mark.parametrize(("key", "drugs"), NAMED_DRUGS.items(), ids=lambda v: "-".join(v) if isinstance(v, tuple)
                         else "")
def test_the_drugs_a_line_names_are_covered_by_its_rule(key, drugs):
    nct, link_id = key
    rule = _by_link(nct)[link_id].rule
    covered = set()
    for leaf in _leaves(rule):
        if leaf.fact == "therapy":
            covered |= set(terminology.members(leaf.subject)) if leaf.subject in terminology.load().valuesets \
                else {leaf.subject}
    assert drugs <= covered, sorted(drugs - covered)
