"""Reading ClinicalTrials.gov API v2 study JSON into the protocol model.

Only a study without `protocolSection.identificationModule.nctId` is an error; everything else the reader
cannot use (odd ages, unknown codes, missing modules, control characters) becomes a warning naming the field,
and the study is still read.

>>> p = parse_study({"protocolSection": {"identificationModule": {"nctId": "NCT00000001", "briefTitle": "T"},
...     "eligibilityModule": {"minimumAge": "6 Weeks", "maximumAge": "120 Years"}}}, "x.json")
>>> p.minimum_age, p.maximum_age
(Age(value=Decimal('6'), unit='wk'), None)
>>> [w for w in p.warnings if "maximumAge" in w]
['x.json: protocolSection.eligibilityModule.maximumAge: 120 Years read as no upper limit']
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ..paths import MAPPINGS
from ..sources import InputError, read_json
from .model import Age, Arm, Citation, Identifier, Party, Protocol, Site, eudract_identifier, fhir_date

TABLES = MAPPINGS / "ctgov.yaml"
NCT_PATTERN = re.compile(r"^NCT\d{8}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s+([A-Za-z]+?)s?\s*$")

OFFICIAL_ROLES = {"PRINCIPAL_INVESTIGATOR": "primary-investigator", "STUDY_CHAIR": "study-chair",
                  "STUDY_DIRECTOR": "study-director", "SUB_INVESTIGATOR": "sub-investigator"}


@cache
def tables() -> dict[str, Any]:
    """The registry-code tables of `mappings/ctgov.yaml`."""
    return yaml.safe_load(TABLES.read_text(encoding="utf-8"))


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """An optional sub-object of the record; {} when it is missing or not an object."""
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


class _Reader:
    """Walks one study object, collecting warnings as `file: field: message`."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.warnings: list[str] = []

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.where}: {path}: {message}")

    def module(self, section: dict[str, Any], name: str) -> dict[str, Any]:
        value = section.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.warn(f"protocolSection.{name}", f"expected an object, got {type(value).__name__}; ignored")
            return {}
        return value

    def text(self, value: Any, path: str) -> str | None:
        """A FHIR string: control characters removed (warned), outer whitespace stripped; None when empty."""
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.warn(path, f"expected text, got {type(value).__name__}; ignored")
            return None
        if _CONTROL.search(value):
            self.warn(path, "control characters removed")
            value = _CONTROL.sub("", value)
        return value.strip() or None

    def required(self, item: dict[str, Any], key: str, path: str, what: str) -> str | None:
        """A text the element cannot go without; when missing, warned and None (the caller skips the element)."""
        text = self.text(item.get(key), f"{path}.{key}")
        if not text:
            self.warn(f"{path}.{key}", f"missing; {what} skipped")
        return text

    def items(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.warn(path, f"expected a list, got {type(value).__name__}; ignored")
            return []
        return value

    def objects(self, value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for i, item in enumerate(self.items(value, path)):
            if isinstance(item, dict):
                yield f"{path}[{i}]", item
            else:
                self.warn(f"{path}[{i}]", f"expected an object, got {type(item).__name__}; ignored")

    def texts(self, value: Any, path: str) -> tuple[str, ...]:
        return tuple(t for i, v in enumerate(self.items(value, path)) if (t := self.text(v, f"{path}[{i}]")))

    def code(self, value: Any, table: str, path: str) -> str | None:
        """A registry enumeration value; one the tables do not know is kept and warned about."""
        code = self.text(value, path)
        if code is not None and code not in tables()[table]:
            self.warn(path, f"{code!r} has no mapping in {TABLES.name} ({table}); kept as text")
        return code

    def age(self, value: Any, path: str, upper: bool) -> Age | None:
        text = self.text(value, path)
        if text is None or text.upper() in ("N/A", "NA", "NONE"):
            return None
        match = _AGE.match(text)
        unit = tables()["age_units"].get(match.group(2).lower()) if match else None
        if not match or unit is None:
            self.warn(path, f"age {text!r} is not '<number> <Years|Months|Weeks|Days|Hours|Minutes>'; not used")
            return None
        number = Decimal(match.group(1))
        if upper and unit == "a" and number >= tables()["no_upper_age_from"]:
            self.warn(path, f"{text} read as no upper limit")
            return None
        return Age(number, unit)


def parse_study(study: Any, where: str) -> Protocol:
    """One API v2 study object as a Protocol; `where` names it in errors and warnings."""
    if not isinstance(study, dict) or not isinstance(study.get("protocolSection"), dict):
        raise InputError(f"{where}: protocolSection: missing; not a ClinicalTrials.gov API v2 study")
    section = study["protocolSection"]
    r = _Reader(where)
    ident = r.module(section, "identificationModule")
    nct = r.text(ident.get("nctId"), "protocolSection.identificationModule.nctId")
    if not nct:
        raise InputError(f"{where}: protocolSection.identificationModule.nctId: missing; every study needs its NCT id")
    if not NCT_PATTERN.match(nct):
        r.warn("protocolSection.identificationModule.nctId", f"{nct!r} is not NCT followed by 8 digits")
    path = "protocolSection.identificationModule"
    title = r.text(ident.get("briefTitle"), f"{path}.briefTitle")
    official = r.text(ident.get("officialTitle"), f"{path}.officialTitle")
    if not (title or official):
        r.warn(f"{path}.briefTitle", "no title; the NCT id is used")
    status = r.module(section, "statusModule")
    design = r.module(section, "designModule")
    info = _object(design, "designInfo")
    masking_info = _object(info, "maskingInfo")
    eligibility = r.module(section, "eligibilityModule")
    topics = r.module(section, "conditionsModule")
    contacts = r.module(section, "contactsLocationsModule")
    enrollment = _object(design, "enrollmentInfo")
    count = enrollment.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        r.warn("protocolSection.designModule.enrollmentInfo.count", f"{count!r} is not a whole number; not used")
        count = None
    conditions = r.texts(topics.get("conditions"),
                         "protocolSection.conditionsModule.conditions")
    study_type = r.text(design.get("studyType"), "protocolSection.designModule.studyType")
    model = info.get("interventionModel") or info.get("observationalModel")
    masking = r.code(masking_info.get("masking"), "masking",
                     "protocolSection.designModule.designInfo.maskingInfo.masking")
    protocol = Protocol(
        nct_id=nct,
        title=title or official or nct,
        acronym=r.text(ident.get("acronym"), f"{path}.acronym"),
        official_title=official,
        identifiers=_identifiers(r, ident),
        status=r.code(status.get("overallStatus"), "statuses", "protocolSection.statusModule.overallStatus"),
        status_field=f"{where}: protocolSection.statusModule.overallStatus",
        last_known_status=r.code(status.get("lastKnownStatus"), "statuses",
                                 "protocolSection.statusModule.lastKnownStatus"),
        why_stopped=r.text(status.get("whyStopped"), "protocolSection.statusModule.whyStopped"),
        start=_date(r, status, "startDateStruct"),
        end=_date(r, status, "completionDateStruct") or _date(r, status, "primaryCompletionDateStruct"),
        study_type=study_type,
        phases=_phases(r, design.get("phases")),
        purpose=r.code(info.get("primaryPurpose"), "purposes",
                       "protocolSection.designModule.designInfo.primaryPurpose"),
        allocation=r.text(info.get("allocation"), "protocolSection.designModule.designInfo.allocation"),
        model=r.text(model, "protocolSection.designModule.designInfo"),
        masking=masking,
        who_masked=tuple(r.code(w, "blinding", f"protocolSection.designModule.designInfo.maskingInfo.whoMasked[{i}]")
                         for i, w in enumerate(r.items(masking_info.get("whoMasked"),
                                                          "protocolSection.designModule.designInfo.maskingInfo.whoMasked"))
                         if isinstance(w, str)),
        conditions=conditions,
        condition_concepts=_condition_concepts(r, conditions),
        keywords=r.texts(topics.get("keywords"),
                         "protocolSection.conditionsModule.keywords"),
        summary=r.text(r.module(section, "descriptionModule").get("briefSummary"),
                       "protocolSection.descriptionModule.briefSummary"),
        arms=_arms(r, r.module(section, "armsInterventionsModule")),
        parties=_parties(r, r.module(section, "sponsorCollaboratorsModule"), contacts),
        sites=_sites(r, contacts),
        enrollment=count,
        enrollment_type=r.text(enrollment.get("type"), "protocolSection.designModule.enrollmentInfo.type"),
        sex=r.text(eligibility.get("sex"), "protocolSection.eligibilityModule.sex"),
        minimum_age=r.age(eligibility.get("minimumAge"), "protocolSection.eligibilityModule.minimumAge", upper=False),
        maximum_age=r.age(eligibility.get("maximumAge"), "protocolSection.eligibilityModule.maximumAge", upper=True),
        citations=_citations(r, r.module(section, "referencesModule")),
        sources=(where,),
    )
    _check_design(r, protocol)
    return replace(protocol, warnings=tuple(r.warnings))


def _identifiers(r: _Reader, ident: dict[str, Any]) -> tuple[Identifier, ...]:
    found = []
    org = _object(ident, "organization")
    assigner = r.text(org.get("fullName"), "protocolSection.identificationModule.organization.fullName")
    org_info = _object(ident, "orgStudyIdInfo")
    if value := r.text(org_info.get("id"), "protocolSection.identificationModule.orgStudyIdInfo.id"):
        found.append(Identifier(value, "org", None, assigner))
    for path, item in r.objects(ident.get("secondaryIdInfos"), "protocolSection.identificationModule.secondaryIdInfos"):
        if not (value := r.required(item, "id", path, "identifier")):
            continue
        kind = str(item.get("type") or "other").lower()
        if kind == "eudract_number":
            found.append(eudract_identifier(value))
        else:
            found.append(Identifier(value, kind, None, r.text(item.get("domain"), f"{path}.domain")))
    return tuple(found)


def _date(r: _Reader, status: dict[str, Any], name: str) -> str | None:
    struct = status.get(name)
    if not isinstance(struct, dict):
        return None
    text = r.text(struct.get("date"), f"protocolSection.statusModule.{name}.date")
    if text and not fhir_date(text):
        r.warn(f"protocolSection.statusModule.{name}.date", f"{text!r} is not a date (YYYY[-MM[-DD]]); not used")
        return None
    return text


def _phases(r: _Reader, value: Any) -> tuple[str, ...]:
    phases = r.texts(value, "protocolSection.designModule.phases")
    if phases and "/".join(phases) not in tables()["phases"]:
        r.warn("protocolSection.designModule.phases",
               f"{'/'.join(phases)} has no research-study-phase code; kept as text")
    return phases


def _condition_concepts(r: _Reader, conditions: tuple[str, ...]) -> tuple[str, ...]:
    known = tables()["conditions"]
    concepts = []
    for i, condition in enumerate(conditions):
        name = known.get(condition.lower())
        if name is None:
            r.warn(f"protocolSection.conditionsModule.conditions[{i}]",
                   f"{condition!r} has no code binding; kept as text")
        elif name not in concepts:
            concepts.append(name)
    return tuple(concepts)


def _arms(r: _Reader, module: dict[str, Any]) -> tuple[Arm, ...]:
    arms = []
    for path, item in r.objects(module.get("armGroups"), "protocolSection.armsInterventionsModule.armGroups"):
        if not (label := r.required(item, "label", path, "arm")):
            continue
        arms.append(Arm(label=label, type=r.code(item.get("type"), "arm_types", f"{path}.type"),
                        description=r.text(item.get("description"), f"{path}.description"),
                        interventions=r.texts(item.get("interventionNames"), f"{path}.interventionNames")))
    return tuple(arms)


def _parties(r: _Reader, sponsors: dict[str, Any], contacts: dict[str, Any]) -> tuple[Party, ...]:
    parties = []
    lead = _object(sponsors, "leadSponsor")
    if name := r.text(lead.get("name"), "protocolSection.sponsorCollaboratorsModule.leadSponsor.name"):
        parties.append(Party(name, "lead-sponsor"))
    collaborators = "protocolSection.sponsorCollaboratorsModule.collaborators"
    for path, item in r.objects(sponsors.get("collaborators"), collaborators):
        if name := r.text(item.get("name"), f"{path}.name"):
            parties.append(Party(name, "collaborator"))
    officials = "protocolSection.contactsLocationsModule.overallOfficials"
    for path, item in r.objects(contacts.get("overallOfficials"), officials):
        name = r.text(item.get("name"), f"{path}.name")
        role = OFFICIAL_ROLES.get(str(item.get("role")))
        if not name or not role:
            r.warn(path, f"official without a name or with an unknown role {item.get('role')!r}; skipped")
            continue
        parties.append(Party(name, role, r.text(item.get("affiliation"), f"{path}.affiliation")))
    return tuple(parties)


def _sites(r: _Reader, module: dict[str, Any]) -> tuple[Site, ...]:
    sites, unnamed = [], []
    for path, item in r.objects(module.get("locations"), "protocolSection.contactsLocationsModule.locations"):
        city, country = r.text(item.get("city"), f"{path}.city"), r.text(item.get("country"), f"{path}.country")
        facility = r.text(item.get("facility"), f"{path}.facility")
        if not facility:
            facility = ", ".join(p for p in (city, country) if p)
            if not facility:
                r.warn(path, "location without facility, city or country; skipped")
                continue
            unnamed.append(path.rsplit("[", 1)[1].rstrip("]"))
        sites.append(Site(facility, city, r.text(item.get("state"), f"{path}.state"), country,
                          r.text(item.get("status"), f"{path}.status")))
    if unnamed:
        shown = ", ".join(unnamed[:5]) + (f" and {len(unnamed) - 5} more" if len(unnamed) > 5 else "")
        r.warn("protocolSection.contactsLocationsModule.locations",
               f"{len(unnamed)} without a facility name (index {shown}); named by city and country")
    return tuple(sites)


def _citations(r: _Reader, module: dict[str, Any]) -> tuple[Citation, ...]:
    found = []
    for path, item in r.objects(module.get("references"), "protocolSection.referencesModule.references"):
        if not (text := r.required(item, "citation", path, "reference")):
            continue
        doi = re.search(r"doi:\s*(10\.\S+?)\.?(?:\s|$)", text)
        found.append(Citation(text, r.text(item.get("pmid"), f"{path}.pmid"), doi.group(1) if doi else None,
                              r.text(item.get("type"), f"{path}.type")))
    return tuple(found)


def _check_design(r: _Reader, protocol: Protocol) -> None:
    design = "protocolSection.designModule.designInfo"
    if protocol.model and protocol.model not in tables()["models"]:
        field = "interventionModel" if protocol.study_type == "INTERVENTIONAL" else "observationalModel"
        r.warn(f"{design}.{field}", f"{protocol.model!r} has no study-design code; kept as text")
    if protocol.allocation and protocol.allocation not in tables()["allocation"] and protocol.allocation != "NA":
        r.warn(f"{design}.allocation", f"{protocol.allocation!r} has no study-design code; kept as text")
    if protocol.model == "CROSSOVER" and not protocol.arms:
        r.warn("protocolSection.armsInterventionsModule.armGroups",
               "crossover design without arm groups: the sequences are not in the record (curate them)")
    if protocol.status is None:
        r.warn("protocolSection.statusModule.overallStatus", "missing; the study status is unknown")
    if protocol.study_type is None:
        r.warn("protocolSection.designModule.studyType", "missing")


def read_studies(path: str | Path) -> list[Protocol]:
    """The studies of one file: a single API v2 study, or a search page (`{"studies": [...]}`)."""
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("studies"), list):
        return [parse_study(study, f"{path}#studies[{i}]") for i, study in enumerate(data["studies"])]
    return [parse_study(data, str(path))]
