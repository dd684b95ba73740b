"""The trials to screen for, with their computable criteria: from the protocol model or from EvidenceVariables.

`load_trials` reads the curated protocols (`fhir_adapter.protocol` when present, else the `criteria:` list of
`mappings/trials/<NCT id>.yaml`); `trials_from_evidence` reads EvidenceVariables back (as `--from-server`
does), so both sources go through the same engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .. import ids
from ..criteria import Criterion, CriterionError
from ..protocol.curated import TRIALS_DIR
from ..protocol.model import CTGOV
from .engine import Trial


def study_reference(nct_id: str) -> str:
    """The deterministic `ResearchStudy/<id>` of a trial (the id the trial mapping PUTs it at)."""
    return ids.reference("ResearchStudy", CTGOV, nct_id)


def _protocol_module() -> Any | None:
    try:
        return importlib.import_module("fhir_adapter.protocol")
    except ImportError:
        return None


def _trial_from_protocol(protocol: Any) -> Trial:
    nct = getattr(protocol, "nct_id", None) or getattr(protocol, "id", None)
    title = getattr(protocol, "acronym", None) or getattr(protocol, "title", None) or nct
    criteria = tuple(getattr(protocol, "criteria", None) or ())
    return Trial(str(nct), str(title), criteria, study_reference(str(nct)))


def _trial_from_yaml(path: Path) -> Trial:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    nct = str(data.get("nct_id") or data.get("id") or path.stem)
    title = data.get("acronym") or data.get("title") or data.get("brief_title") or nct
    try:
        criteria = tuple(Criterion.from_dict(c) for c in data.get("criteria") or ())
    except CriterionError as exc:
        raise CriterionError(f"{path}: {exc}") from None
    return Trial(nct, str(title), criteria, study_reference(nct))


def load_trials(only: Sequence[str] = ()) -> list[Trial]:
    """The trials with computable criteria, in NCT-id order; `only` picks some by NCT id (each once)."""
    module = _protocol_module()
    if module is not None and hasattr(module, "load_protocols"):
        trials = [_trial_from_protocol(p) for p in module.load_protocols()]
    else:
        trials = [_trial_from_yaml(p) for p in sorted(TRIALS_DIR.glob("NCT*.yaml"))]
    trials = [t for t in trials if t.criteria]
    trials.sort(key=lambda t: t.id)
    if only:
        known = {t.id: t for t in trials}
        missing = [i for i in only if i not in known]
        if missing:
            raise KeyError(f"no criteria for {', '.join(missing)}: known trials are {', '.join(known) or 'none'}")
        trials = [known[i] for i in dict.fromkeys(only)]
    return trials


def trials_from_evidence(resources: Iterable[dict[str, Any]], fhir_version: str = "R4",
                         titles: dict[str, str] | None = None, nct_id: str | None = None) -> list[Trial]:
    """Trials from EvidenceVariable resources (as read back from a server), one per NCT id.

    `nct_id` names the trial when the caller knows it (read by the trial's id); otherwise it is taken from
    the resource's identifiers, name, title or url.
    """
    module = importlib.import_module("fhir_adapter.protocol.evidence")
    trials = []
    for resource in resources:
        criteria = tuple(module.criteria_from_evidence_variable(resource, fhir_version))
        nct = nct_id or _nct_of(resource)
        trials.append(Trial(nct, (titles or {}).get(nct, nct), criteria, study_reference(nct)))
    return sorted(trials, key=lambda t: t.id)


def _nct_of(resource: dict[str, Any]) -> str:
    for identifier in resource.get("identifier") or ():
        value = str(identifier.get("value") or "")
        if value.upper().startswith("NCT"):
            return value
    for text in (resource.get("name"), resource.get("title"), resource.get("url")):
        if isinstance(text, str) and "NCT" in text:
            start = text.index("NCT")
            return text[start:start + 11]
    raise ValueError(f"EvidenceVariable/{resource.get('id')}: no NCT id in its identifiers, name or url")
