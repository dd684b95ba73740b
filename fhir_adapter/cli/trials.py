"""`fhir-adapter trials`: trial protocols (ClinicalTrials.gov JSON, curated YAML) to FHIR transaction bundles."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from . import add_fhir_version


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("trials", help="trial protocols to FHIR ResearchStudy, PlanDefinition, EvidenceVariable",
                            description="Map trial protocols to FHIR.")
    verbs = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    mapping = verbs.add_parser(
        "map", help="map protocols to one transaction bundle per trial",
        description="Map ClinicalTrials.gov API v2 study JSON files (merged with mappings/trials/<NCT id>.yaml) "
                    "or curated protocol YAML files to DIR/<id>.bundle.json: a transaction Bundle of PUT entries "
                    "holding the trial's ResearchStudy, PlanDefinition, EvidenceVariable, enrolment Group (R4), "
                    "the local CodeSystem and the umbrella study it is part of. With no INPUT, the bundled "
                    "examples: the four MS stem-cell trials and the MESEMS umbrella.")
    mapping.add_argument("inputs", nargs="*", metavar="INPUT",
                         help="a registry .json file (one study or a search page), a curated .yaml file, "
                              "or the id of a bundled trial (NCT01854957, MESEMS)")
    mapping.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    add_fhir_version(mapping)
    mapping.set_defaults(run=run_map)


def run_map(args: argparse.Namespace) -> int:
    from ..protocol import protocols_for
    from ..protocol.bundle import MappingError, map_protocols

    try:
        mapped = map_protocols(protocols_for(args.inputs), args.out, args.fhir_version)
    except MappingError as exc:
        print(f"fhir-adapter trials map: error: {exc}", file=sys.stderr)
        return 1
    for trial in mapped:
        for warning in trial.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        counts = ", ".join(f"{n} {t}" for t, n in Counter(trial.resources).items())
        print(f"{trial.path}: {trial.protocol.label} ({trial.protocol.nct_id}): {counts}")
    print(f"{len(mapped)} bundle(s), FHIR {args.fhir_version}, in {args.out}")
    return 0
