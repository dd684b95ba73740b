"""One transaction Bundle per protocol: its ResearchStudy, PlanDefinition, EvidenceVariable, Group, the local
CodeSystem, and the umbrella study it is `partOf` (with the umbrella's own resources), so every reference
resolves inside the bundle. The umbrella's resources are the same in every bundle (same ids, same content):
PUTting them again changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import bundle as transactions
from .. import ids
from ..render import check_version
from ..sources import write_json
from ..validation.structure import structure_issues
from .evidence import code_system, evidence_variable
from .model import Protocol
from .resources import render_resources

log = logging.getLogger(__name__)


class MappingError(ValueError):
    """A protocol whose resources do not validate (a mapping bug or an input the templates cannot carry)."""


def protocol_resources(protocol: Protocol, fhir_version: str = "R4",
                       parent: Protocol | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The resources of one protocol (without the umbrella's), and warnings."""
    version = check_version(fhir_version)
    evidence = evidence_variable(protocol, version) if protocol.criteria else None
    resources, warnings = render_resources(protocol, version, evidence, parent)
    if evidence:
        resources.insert(2 if len(resources) > 1 else 1, evidence)
    return resources, warnings


def trial_bundle(protocol: Protocol, fhir_version: str = "R4",
                 parent: Protocol | None = None) -> tuple[dict[str, Any], list[str]]:
    """The transaction Bundle of one protocol, validated; warnings about what could not be coded."""
    version = check_version(fhir_version)
    if protocol.part_of and (parent is None or parent.nct_id != protocol.part_of):
        raise MappingError(f"{protocol.nct_id}: part_of {protocol.part_of} needs that protocol as parent")
    resources, warnings = protocol_resources(protocol, version, parent)
    if parent is not None:
        resources.extend(protocol_resources(parent, version)[0])  # its warnings come with its own bundle
    resources.append(code_system(version))
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in resources:
        unique.setdefault((resource["resourceType"], resource["id"]), resource)
    problems = [f"{rtype}/{rid}: {issue}" for (rtype, rid), resource in unique.items()
                for issue in structure_issues(resource, version)]
    if problems:
        raise MappingError(f"{protocol.nct_id}: the mapped resources do not validate as FHIR {version}:\n  "
                           + "\n  ".join(problems))
    bundle_id = ids.resource_id("Bundle", protocol.id_system, protocol.nct_id)
    return transactions.transaction(unique.values(), bundle_id), warnings


@dataclass(frozen=True)
class MappedTrial:
    """One written bundle: its path, the resource types in it, and the warnings of its protocol."""

    protocol: Protocol
    path: Path
    resources: tuple[str, ...]
    warnings: tuple[str, ...]


def map_protocols(protocols: Iterable[Protocol], out_dir: Path, fhir_version: str = "R4") -> list[MappedTrial]:
    """Write `<id>.bundle.json` per protocol into `out_dir`; the umbrella of a `part_of` child is found among
    the protocols given or the bundled ones."""
    from . import load_protocol
    protocols = list(protocols)
    by_id = {p.nct_id: p for p in protocols}
    out_dir.mkdir(parents=True, exist_ok=True)
    mapped = []
    for protocol in protocols:
        parent = None
        if protocol.part_of:
            parent = by_id.get(protocol.part_of) or load_protocol(protocol.part_of)
        bundle, warnings = trial_bundle(protocol, fhir_version, parent)
        path = out_dir / f"{protocol.nct_id}.bundle.json"
        write_json(path, bundle)
        types = tuple(e["resource"]["resourceType"] for e in bundle["entry"])
        mapped.append(MappedTrial(protocol, path, types, (*protocol.warnings, *warnings)))
    return mapped


def write_bundles(protocols: Iterable[Protocol], out_dir: Path, fhir_version: str = "R4") -> list[Path]:
    """`map_protocols`, with the warnings sent to the log; the paths written."""
    paths = []
    for trial in map_protocols(protocols, out_dir, fhir_version):
        for warning in trial.warnings:
            log.warning("%s", warning)
        paths.append(trial.path)
    return paths
