"""The protocol model: what one trial says about itself, from the registry and the curated YAML.

Values are kept as the registry writes them (`TERMINATED`, `PHASE1`, `CROSSOVER`); the mapping to FHIR codes
happens once, in `fhir_adapter.protocol.resources`. Every fact the reader could not use is in `warnings`.

>>> Protocol(nct_id="NCT00000001", title="A trial").label
'NCT00000001'
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from ..criteria import Criterion, Window

CTGOV = "https://clinicaltrials.gov"
#: Identifier system of protocols with no registry number (the MESEMS umbrella).
PROTOCOL_SYSTEM = "https://w3id.org/fhir-adapter/sid/protocol"
EUDRACT = "https://eudract.ema.europa.eu"


@dataclass(frozen=True)
class Identifier:
    """A business identifier: `system` URL (None: the sponsor's own number), value, kind (org, eudract, ...)."""

    value: str
    kind: str
    system: str | None = None
    assigner: str | None = None


def eudract_identifier(number: str) -> Identifier:
    """A EudraCT number, as the European Medicines Agency assigns it."""
    return Identifier(number, "eudract", EUDRACT, "European Medicines Agency")


@dataclass(frozen=True)
class Arm:
    """An arm (comparison group). `sequence` names what it gets in each period (`msc`, `placebo`) when curated."""

    label: str
    type: str | None = None
    description: str | None = None
    interventions: tuple[str, ...] = ()
    sequence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Site:
    facility: str
    city: str | None = None
    state: str | None = None
    country: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class Party:
    """A person or organisation with a role: sponsor, collaborator, principal investigator, study chair."""

    name: str
    role: str
    affiliation: str | None = None


@dataclass(frozen=True)
class Citation:
    text: str
    pmid: str | None = None
    doi: str | None = None
    type: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Age:
    """An age limit: value and UCUM unit (`a`, `mo`, `wk`, `d`, `h`)."""

    value: Decimal
    unit: str


@dataclass(frozen=True)
class Aspiration:
    """A bone-marrow aspiration: before the first administration, or at an offset from baseline."""

    text: str
    at: Window | None = None          # None: before baseline


@dataclass(frozen=True)
class Schedule:
    """The curated crossover schedule: periods (offsets from baseline), aspirations, follow-up, assessments."""

    periods: tuple[Window, ...] = ()
    aspirations: tuple[Aspiration, ...] = ()
    follow_up: tuple[Window, ...] = ()
    assessments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Intervention:
    """What is given: product, placebo, route (a concept of terminology.yaml) and dose, as curated."""

    product: str | None = None
    placebo: str | None = None
    route: str | None = None
    dose: str | None = None


@dataclass(frozen=True)
class Protocol:
    """One trial protocol (or the MESEMS umbrella) in registry terms, ready for the FHIR templates."""

    nct_id: str
    title: str
    acronym: str | None = None
    official_title: str | None = None
    id_system: str = CTGOV
    identifiers: tuple[Identifier, ...] = ()
    part_of: str | None = None
    status: str | None = None
    status_field: str | None = None    # where the status was read: `file: field`, for warnings
    last_known_status: str | None = None
    why_stopped: str | None = None
    start: str | None = None
    end: str | None = None
    study_type: str | None = None
    phases: tuple[str, ...] = ()
    purpose: str | None = None
    allocation: str | None = None
    model: str | None = None
    masking: str | None = None
    who_masked: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    condition_concepts: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    summary: str | None = None
    arms: tuple[Arm, ...] = ()
    parties: tuple[Party, ...] = ()
    sites: tuple[Site, ...] = ()
    enrollment: int | None = None
    enrollment_type: str | None = None
    sex: str | None = None
    minimum_age: Age | None = None
    maximum_age: Age | None = None
    citations: tuple[Citation, ...] = ()
    intervention: Intervention = field(default_factory=Intervention)
    schedule: Schedule = field(default_factory=Schedule)
    criteria: tuple[Criterion, ...] = ()
    sources: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How people name the trial: acronym, else the registry id."""
        return self.acronym or self.nct_id

    @property
    def sponsor(self) -> Party | None:
        return next((p for p in self.parties if p.role == "lead-sponsor"), None)


def fhir_date(text: str | None) -> str | None:
    """A registry date (`2015-02`, `2015-02-28`) as a FHIR date, or None when it is not one.

    >>> fhir_date("2015-02"), fhir_date("2015-02-28"), fhir_date("Feb 2015")
    ('2015-02', '2015-02-28', None)
    """
    if not text:
        return None
    for fmt in ("%Y-%m-%d", "%Y-%m", "%Y"):
        try:
            dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return text
    return None
