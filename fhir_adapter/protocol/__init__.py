"""Trial protocols: ClinicalTrials.gov records and curated YAML -> the protocol model -> FHIR bundles.

- `load_protocol(path_or_id)`: one protocol from a registry JSON file, a curated YAML file, or an id of a
  bundled trial (`NCT01854957`, `MESEMS`); the curated YAML of the same id is merged over the registry record.
- `load_protocols()`: every bundled protocol (the four trials in `examples/ctgov/` and the MESEMS umbrella).
- `map_trials(inputs, out_dir, fhir_version)`: one transaction Bundle per protocol, `<id>.bundle.json`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..paths import EXAMPLES
from ..sources import InputError
from .ctgov import read_studies
from .curated import TRIALS_DIR, curated_path, merge, read_curated
from .model import Protocol

EXAMPLES_CTGOV = EXAMPLES / "ctgov"

__all__ = ["Protocol", "load_protocol", "load_protocols", "map_trials", "protocols_for", "protocols_from"]


def _with_curated(protocol: Protocol) -> Protocol:
    path = curated_path(protocol.nct_id)
    return merge(protocol, read_curated(path), str(path)) if path.exists() else protocol


def protocols_from(path: str | Path) -> list[Protocol]:
    """The protocols of one input file: registry JSON (one study or a search page) or curated YAML."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".xml":
        raise InputError(f"{path}: the classic ClinicalTrials.gov XML export is not read; use the API v2 JSON "
                         f"(https://clinicaltrials.gov/api/v2/studies/<NCT id>)")
    if path.suffix in (".yaml", ".yml"):
        data = read_curated(path)
        nct = str(data.get("nct_id") or "")
        registry = EXAMPLES_CTGOV / f"{nct}.json"
        base = read_studies(registry)[0] if nct and registry.exists() else None
        return [merge(base, data, str(path))]
    return [_with_curated(p) for p in read_studies(path)]


def load_protocol(path_or_id: str | Path) -> Protocol:
    """One protocol from a file path, or from the id of a bundled trial (`NCT...`, `MESEMS`)."""
    text = str(path_or_id)
    if Path(text).is_file():
        found = protocols_from(text)
        if len(found) != 1:
            raise InputError(f"{text}: holds {len(found)} studies; load_protocol reads one")
        return found[0]
    for candidate in (EXAMPLES_CTGOV / f"{text}.json", curated_path(text)):
        if candidate.exists():
            return protocols_from(candidate)[0]
    known = sorted({p.stem for p in (*EXAMPLES_CTGOV.glob("*.json"), *TRIALS_DIR.glob("*.yaml"))})
    raise InputError(f"{text}: neither a file nor a bundled trial id; bundled: {', '.join(known)}")


def load_protocols() -> list[Protocol]:
    """Every bundled protocol, by id: the example registry records (with their curated facts) and the curated
    protocols that have no registry record (the MESEMS umbrella)."""
    protocols = {p.nct_id: p for path in sorted(EXAMPLES_CTGOV.glob("*.json")) for p in protocols_from(path)}
    for path in sorted(TRIALS_DIR.glob("*.yaml")):
        if path.stem not in protocols:
            for protocol in protocols_from(path):
                protocols.setdefault(protocol.nct_id, protocol)
    return [protocols[key] for key in sorted(protocols)]


def protocols_for(inputs: Iterable[str | Path]) -> list[Protocol]:
    """The protocols of the inputs (files or bundled ids), or every bundled protocol when there are none."""
    found = [p for item in inputs
             for p in (protocols_from(item) if Path(item).is_file() else [load_protocol(item)])]
    return found or load_protocols()


def map_trials(inputs: Iterable[str | Path], out_dir: str | Path, fhir_version: str = "R4") -> list[Path]:
    """Write `<id>.bundle.json` per protocol of the inputs (all bundled protocols when none); the paths."""
    from .bundle import write_bundles
    return write_bundles(protocols_for(inputs), Path(out_dir), fhir_version)
